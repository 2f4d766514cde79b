// Small DOM helpers: elements built with text nodes only (never HTML from data), and the shared
// pieces every page uses (tables, pagers, notices, forms).

/** `h("button", {class: "primary", onclick: f}, "Save")`: attributes, `on…` listeners, children. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name === "value") element.value = value;
    else if (name === "checked" || name === "disabled" || name === "selected") element[name] = Boolean(value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces `element`'s children. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

let nextId = 0;
/** A fresh element id. */
export const uid = (prefix = "k") => `${prefix}-${++nextId}`;

/** A labelled control: the label names it for screen readers and clicks focus it. */
export function field(label, control, hint) {
  control.id ||= uid("field");
  const error = h("p", { class: "field-error", id: uid("error"), role: "alert", hidden: true });
  control.setAttribute("aria-describedby", error.id);
  const wrapper = h("div", { class: "field" }, h("label", { for: control.id }, label), control, hint ? h("p", { class: "hint" }, hint) : null, error);
  wrapper.showError = (message) => {
    error.textContent = message ?? "";
    error.hidden = !message;
    control.setAttribute("aria-invalid", message ? "true" : "false");
  };
  return wrapper;
}

export function select(options, value, attributes = {}) {
  return h(
    "select",
    attributes,
    options.map((option) => {
      const [optionValue, text] = Array.isArray(option) ? option : [option, option];
      return h("option", { value: optionValue, selected: optionValue === value }, text);
    }),
  );
}

export const loading = (what = "Loading") => h("p", { class: "state loading", role: "status" }, `${what}…`);
export const empty = (text, ...action) => h("div", { class: "state empty" }, h("p", {}, text), ...action);

/** An error notice, with the API's code where it gave one. */
export function errorNotice(error) {
  const code = error.code ? h("code", {}, error.code) : null;
  return h("div", { class: "notice error", role: "alert" }, h("strong", {}, "Error"), code ? [" ", code] : null, h("p", {}, error.message));
}

export function notice(text, kind = "info") {
  return h("div", { class: `notice ${kind}`, role: "status" }, text);
}

/** Tells the person what just happened, politely (screen readers read it out). */
export function toast(text) {
  const region = document.getElementById("toast");
  region.textContent = text;
  region.classList.add("shown");
  clearTimeout(region.timer);
  region.timer = setTimeout(() => region.classList.remove("shown"), 4000);
}

/** A data table in a scrolling frame: `columns` are names; `rows` arrays of values. `cell`
 * may decorate a cell (`(td, value, columnIndex, rowIndex) => …`). */
export function table(columns, rows, { caption, cell, rowClass } = {}) {
  const head = h("thead", {}, h("tr", {}, columns.map((name) => h("th", { scope: "col" }, name))));
  const body = h(
    "tbody",
    {},
    rows.map((row, rowIndex) =>
      h(
        "tr",
        { class: rowClass?.(row, rowIndex) },
        row.map((value, index) => {
          const td = h("td", {}, value === null ? h("span", { class: "null" }, "null") : value);
          cell?.(td, value, index, rowIndex);
          return td;
        }),
      ),
    ),
  );
  return h(
    "div",
    { class: "table-frame", tabindex: "0", role: "region", "aria-label": caption ?? "Table" },
    h("table", {}, caption ? h("caption", {}, caption) : null, head, body),
  );
}

/** "Rows 1–50 of 2,500" and previous/next buttons; `go(offset)` loads a page. */
export function pager({ offset, limit, shown, total, go }) {
  const last = offset + shown;
  const known = total !== null && total !== undefined;
  const summary = shown === 0 ? "No rows" : `Rows ${fmt(offset + 1)}–${fmt(last)}${known ? ` of ${fmt(total)}` : ""}`;
  const hasNext = known ? last < total : shown === limit;
  // The page is drawn anew: keyboard focus goes back to the button pressed, or its twin.
  const move = async (to, which) => {
    await go(to);
    const pressed = document.querySelector(`.pager [data-page="${which}"]:not(:disabled)`);
    (pressed ?? document.querySelector(".pager button:not(:disabled)"))?.focus();
  };
  return h(
    "div",
    { class: "pager" },
    h("button", { type: "button", "data-page": "previous", disabled: offset === 0, onclick: () => move(Math.max(0, offset - limit), "previous") }, "Previous page"),
    h("span", { role: "status" }, summary),
    h("button", { type: "button", "data-page": "next", disabled: !hasNext, onclick: () => move(offset + limit, "next") }, "Next page"),
  );
}

export const fmt = (n) => Number(n).toLocaleString("en-US");

/** A date-time as the person's clock shows it. */
export const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

/** A page heading; focus moves to it on navigation so keyboard and screen-reader users land there. */
export const heading = (text, ...extra) => h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, text), ...extra);

export function badge(text, kind = text) {
  return h("span", { class: `badge badge-${kind}` }, text);
}

/** A button that runs `action` while disabled, showing errors in `errors` (a container). */
export function actionButton(label, action, { errors, kind = "", attributes = {} } = {}) {
  const button = h("button", { type: "button", class: kind, ...attributes }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    errors && fill(errors);
    try {
      await action();
    } catch (error) {
      if (errors) fill(errors, errorNotice(error));
      else toast(error.message);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}
