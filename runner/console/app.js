// The console's shell: sign-in with a token, the navigation, and the hash routes that draw each
// page into <main>. Controls a token's role may not use are not drawn (the API refuses them too).

import { ApiError, get, setToken, token } from "./api.js";
import { errorNotice, field, fill, h, heading, loading } from "./dom.js";
import * as sources from "./sources.js";
import * as recipes from "./recipes.js";
import * as runs from "./runs.js";
import * as results from "./results.js";

const ROLES = ["viewer", "operator", "admin"];

const ROUTES = [
  [/^sources$/, sources.list],
  [/^sources\/([^/]+)$/, sources.preview],
  [/^connections\/([^/]+)$/, sources.connection],
  [/^recipes$/, recipes.list],
  [/^recipes\/new$/, recipes.edit],
  [/^recipes\/([^/]+)$/, recipes.edit],
  [/^runs$/, runs.list],
  [/^runs\/([^/]+)$/, runs.detail],
  [/^runs\/([^/]+)\/([^/]+)$/, results.output],
  [/^schedules$/, runs.schedules],
];

const NAV = [
  ["sources", "Sources"],
  ["recipes", "Recipes"],
  ["runs", "Runs"],
  ["schedules", "Schedules"],
];

let caller = null;
/** Stops the page drawn last (its timers) when another is drawn. */
let stopPage = () => {};

const context = {
  get role() {
    return caller?.role;
  },
  /** Whether the token's role is at least `role`. */
  can: (role) => caller !== null && ROLES.indexOf(caller.role) >= ROLES.indexOf(role),
  go: (path) => {
    location.hash = `#/${path}`;
  },
  onLeave: (stop) => {
    stopPage = stop;
  },
};

function main() {
  return document.getElementById("main");
}

function signIn(message) {
  fill(document.getElementById("nav"));
  fill(document.getElementById("who"));
  const input = h("input", { type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const tokenField = field("API token", input, "An admin, operator or viewer token. It is kept in this tab only, until you sign out or close it.");
  const form = h(
    "form",
    { class: "card narrow" },
    tokenField,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    try {
      await start();
    } catch (error) {
      setToken(null);
      tokenField.showError(error.status === 401 ? "The runner does not know this token (or it expired, or was revoked)." : error.message);
      input.focus();
    }
  });
  fill(main(), heading("Sign in to Kalla"), message ? errorNotice({ message }) : null, form);
  input.focus();
}

function drawShell() {
  fill(
    document.getElementById("nav"),
    h("ul", {}, NAV.map(([path, label]) => h("li", {}, h("a", { href: `#/${path}`, "data-nav": path }, label)))),
  );
  const signOut = h("button", { type: "button", class: "link" }, "Sign out");
  signOut.addEventListener("click", () => {
    setToken(null);
    caller = null;
    location.hash = "";
    signIn();
  });
  fill(document.getElementById("who"), h("span", {}, `${caller.name} · `, h("strong", {}, caller.role)), " ", signOut);
}

async function start() {
  caller = await get("/api/whoami");
  drawShell();
  if (!location.hash.startsWith("#/")) location.hash = "#/sources";
  else await route();
}

async function route() {
  if (!caller) return;
  stopPage();
  stopPage = () => {};
  const path = decodeURIComponent(location.hash.replace(/^#\/?/, "")).split("?")[0] || "sources";
  for (const link of document.querySelectorAll("[data-nav]")) {
    const current = path === link.dataset.nav || path.startsWith(`${link.dataset.nav}/`);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const page = main();
  const found = ROUTES.find(([pattern]) => pattern.test(path));
  if (!found) {
    fill(page, heading("Not found"), h("p", {}, "No page is at this address. ", h("a", { href: "#/sources" }, "Go to sources")));
    return;
  }
  const [pattern, view] = found;
  fill(page, loading());
  try {
    await view(page, context, ...path.match(pattern).slice(1));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      setToken(null);
      caller = null;
      signIn("Your token is no longer accepted: sign in again.");
      return;
    }
    fill(page, heading("Something went wrong"), errorNotice(error));
  }
  page.querySelector("h1")?.focus();
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  if (!token()) {
    signIn();
    return;
  }
  start().catch((error) => {
    setToken(null);
    signIn(error.status === 401 ? "Your token is no longer accepted: sign in again." : error.message);
  });
});
