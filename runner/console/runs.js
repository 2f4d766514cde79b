// Runs: the history (per recipe), starting a run with its parameters, one run's live progress,
// cancelling it, its outputs as a chart; and schedules.

import { del, get, post, seg, withQuery } from "./api.js";
import { actionButton, badge, empty, errorNotice, field, fill, fmt, h, heading, loading, notice, pager, select, table, toast, when } from "./dom.js";

const PAGE_JOBS = 25;
const POLL_MS = 1000;
const FINISHED = ["succeeded", "failed", "cancelled"];

function hashQuery() {
  return new URLSearchParams(location.hash.split("?")[1] ?? "");
}

/** Inputs for a recipe's declared parameters; `read()` gives the values given. */
function paramInputs(params = []) {
  const inputs = params.map((p) => {
    const kind = { date: "date", number: "number" }[p.type] ?? "text";
    const input = h("input", { type: kind, step: kind === "number" ? "any" : null, value: p.default ?? "", required: p.default === undefined });
    return { param: p, input, field: field(`${p.name} (${p.type}${p.default !== undefined ? `, default ${p.default}` : ""})`, input) };
  });
  return {
    fields: inputs.map((i) => i.field),
    read: () =>
      Object.fromEntries(
        inputs.filter((i) => i.input.value !== "").map((i) => [i.param.name, i.param.type === "number" ? Number(i.input.value) : i.input.value]),
      ),
  };
}

export async function list(page, ctx) {
  const query = hashQuery();
  const recipeId = query.get("recipe") ?? "";
  const offset = Number(query.get("offset") ?? 0);
  const [recipes, jobs] = await Promise.all([
    get("/api/recipes"),
    get(withQuery("/api/jobs", { recipe: recipeId, limit: PAGE_JOBS, offset })),
  ]);
  const recipe = recipes.find((r) => r.id === recipeId);
  const names = new Map(recipes.map((r) => [r.id, r.name]));
  const chooser = select([["", "All recipes"], ...recipes.map((r) => [r.id, r.name])], recipeId, { id: "runs-recipe" });
  chooser.addEventListener("change", () => ctx.go(chooser.value ? `runs?recipe=${seg(chooser.value)}` : "runs"));
  fill(
    page,
    heading(recipe ? `Runs of ${recipe.name}` : "Runs"),
    field("Recipe", chooser),
    recipe && ctx.can("operator") ? startForm(recipe, ctx) : null,
    !recipe && ctx.can("operator") && recipes.length ? h("p", { class: "hint" }, "Choose a recipe to start a run of it.") : null,
    jobs.length === 0 && offset === 0
      ? empty(recipe ? "This recipe has not run yet." : "No runs yet.")
      : [
          table(
            ["Run", "Recipe", "Status", "Submitted", "Finished", "Rows matched", "Actions"],
            jobs.map((j) => [j.id, j.recipe_id ? names.get(j.recipe_id) ?? j.recipe_id : j.job_type, j.status, when(j.created_at), when(j.finished_at), counts(j)?.matched !== undefined ? fmt(counts(j).matched) : "—", j]),
            {
              caption: "Runs, newest first",
              cell: (td, value, column) => {
                if (column === 0) fill(td, h("a", { href: `#/runs/${seg(value)}` }, value));
                if (column === 2) fill(td, badge(value));
                if (column === 6) fill(td, cancelButton(value, ctx, () => list(page, ctx)));
              },
            },
          ),
          pager({ offset, limit: PAGE_JOBS, shown: jobs.length, total: null, go: (next) => ctx.go(withQuery("runs", { recipe: recipeId, offset: next })) }),
        ],
  );
  const timer = setInterval(async () => {
    if (!jobs.some((j) => !FINISHED.includes(j.status)) || document.hidden) return;
    clearInterval(timer);
    await list(page, ctx).catch(() => {});
  }, POLL_MS * 3);
  ctx.onLeave(() => clearInterval(timer));
}

/** Rows per output of a finished run. */
export function counts(job) {
  return job.summary?.outputs ?? null;
}

function cancelButton(job, ctx, after) {
  if (!ctx.can("operator") || FINISHED.includes(job.status)) return null;
  return actionButton(
    "Cancel",
    async () => {
      await del(`/api/jobs/${seg(job.id)}`);
      toast(`Run ${job.id} cancelled`);
      await after();
    },
    { kind: "danger", attributes: { "aria-label": `Cancel run ${job.id}` } },
  );
}

function startForm(recipe, ctx) {
  const params = paramInputs(recipe.recipe.params);
  const errors = h("div");
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "start-title" },
    h("h2", { id: "start-title" }, "Start a run"),
    params.fields.length ? params.fields : h("p", { class: "hint" }, "This recipe takes no parameters."),
    errors,
    h("button", { type: "submit", class: "primary" }, "Run now"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(errors);
    try {
      const job = await post("/api/jobs", { type: "recon", recipe_id: recipe.id, params: params.read() });
      toast(`Run ${job.id} started`);
      ctx.go(`runs/${seg(job.id)}`);
    } catch (error) {
      fill(errors, errorNotice(error));
    }
  });
  return form;
}

export async function detail(page, ctx, id) {
  let job = await get(`/api/jobs/${seg(id)}`);
  const recipe = job.recipe_id ? await get(`/api/recipes/${seg(job.recipe_id)}`).catch(() => null) : null;
  const status = h("div", { "aria-live": "polite" });
  const body = h("div");

  function drawStatus() {
    const p = job.progress ?? {};
    const stages = p.stages ?? [];
    fill(
      status,
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Status"),
        h("dd", {}, badge(job.status)),
        h("dt", {}, "Recipe"),
        h("dd", {}, recipe ? h("a", { href: `#/recipes/${seg(recipe.id)}` }, recipe.name) : job.job_type),
        h("dt", {}, "Submitted"),
        h("dd", {}, when(job.created_at)),
        h("dt", {}, "Started"),
        h("dd", {}, when(job.started_at)),
        h("dt", {}, "Finished"),
        h("dd", {}, when(job.finished_at)),
        job.inputs?.params && Object.keys(job.inputs.params).length ? [h("dt", {}, "Parameters"), h("dd", {}, Object.entries(job.inputs.params).map(([k, v]) => `${k} = ${v}`).join(", "))] : null,
      ),
      job.status === "running" || job.status === "queued"
        ? h(
            "div",
            { class: "progress-box" },
            h("p", {}, job.status === "queued" ? "Waiting for a free slot…" : `Phase: ${p.phase ?? "starting"}`),
            p.tasks ? h("progress", { max: p.tasks, value: p.tasks_finished ?? 0, "aria-label": "Tasks finished" }) : h("progress", { "aria-label": "Working" }),
            p.tasks ? h("p", {}, `${fmt(p.tasks_finished ?? 0)} of ${fmt(p.tasks)} tasks · stage ${fmt(p.completed_stages ?? 0)} of ${fmt(p.num_stages ?? stages.length)} done`) : null,
            stages.length ? table(["Stage", "Status", "Tasks done"], stages.map((s) => [s.stage_id, s.status, `${s.tasks_finished} / ${s.tasks}`]), { caption: "Stages on the cluster" }) : null,
          )
        : null,
      job.error ? notice(`The run failed: ${job.error}`, "error") : null,
      h("div", { class: "actions" }, cancelButton(job, ctx, refresh)),
    );
  }

  async function refresh() {
    job = await get(`/api/jobs/${seg(id)}`);
    drawStatus();
    if (FINISHED.includes(job.status)) await drawResults();
  }

  async function drawResults() {
    if (job.status !== "succeeded") return fill(body);
    const rows = counts(job) ?? {};
    const outputs = (job.results ?? []).map((r) => ({ name: r.output, rows: r.rows ?? rows[r.output] ?? 0 }));
    fill(
      body,
      h("h2", {}, "Outputs"),
      chart(outputs),
      table(["Output", "Rows", "Open"], outputs.map((o) => [o.name, fmt(o.rows), o.name]), {
        caption: "Rows per output",
        cell: (td, value, column) => {
          if (column === 0 || column === 2) fill(td, h("a", { href: `#/runs/${seg(id)}/${seg(value)}` }, column === 0 ? value : `Explore ${value}`));
        },
      }),
      job.summary?.open_items ? openItems(job, recipe) : null,
    );
  }

  fill(page, heading(`Run ${id}`), status, body);
  drawStatus();
  await drawResults();
  if (FINISHED.includes(job.status)) return;
  const timer = setInterval(async () => {
    try {
      await refresh();
      if (FINISHED.includes(job.status)) clearInterval(timer);
    } catch (error) {
      clearInterval(timer);
      fill(status, errorNotice(error));
    }
  }, POLL_MS);
  ctx.onLeave(() => clearInterval(timer));
}

/** Rows per output as horizontal bars: an inline SVG (no script, no library). */
function chart(outputs) {
  const most = Math.max(1, ...outputs.map((o) => o.rows));
  const bar = 22;
  const labelWidth = 110;
  const width = 520;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${outputs.length * (bar + 8)}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("class", "chart");
  svg.setAttribute("aria-label", `Rows per output: ${outputs.map((o) => `${o.name} ${o.rows}`).join(", ")}`);
  outputs.forEach((o, i) => {
    const y = i * (bar + 8);
    const length = Math.round(((width - labelWidth - 90) * o.rows) / most);
    const node = (tag, attributes, text) => {
      const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
      for (const [k, v] of Object.entries(attributes)) element.setAttribute(k, v);
      if (text !== undefined) element.textContent = text;
      svg.append(element);
    };
    node("text", { x: 0, y: y + bar * 0.7, class: "chart-label" }, o.name);
    node("rect", { x: labelWidth, y, width: Math.max(length, 1), height: bar, class: `chart-bar bar-${o.name}` });
    node("text", { x: labelWidth + length + 6, y: y + bar * 0.7, class: "chart-value" }, fmt(o.rows));
  });
  return h("figure", { class: "card" }, svg, h("figcaption", {}, "Rows per output"));
}

function openItems(job, recipe) {
  const summary = job.summary.open_items;
  const section = h(
    "section",
    { class: "card", "aria-labelledby": "open-title" },
    h("h2", { id: "open-title" }, "Open items"),
    h("p", {}, `${fmt(summary.open ?? 0)} open (${fmt(summary.opened ?? 0)} new, ${fmt(summary.still_open ?? 0)} still open), ${fmt(summary.matched ?? 0)} matched, ${fmt(summary.referred ?? 0)} referred.`),
    summary.aging ? table(["Age (run days)", "Items"], Object.entries(summary.aging).map(([age, n]) => [age, fmt(n)]), { caption: "Open items by age" }) : null,
  );
  if (recipe) {
    const items = h("div", {}, loading("Reading open items"));
    section.append(items);
    get(`/api/recipes/${seg(recipe.id)}/open-items?limit=50`)
      .then((answer) =>
        fill(
          items,
          answer.items.length === 0
            ? empty("No open items.")
            : table(
                ["Item", "Side", "Key", "Age (run days)", "First seen", "Last seen", "Runs seen"],
                answer.items.map((i) => [i.id, i.side, i.key.map((part) => part ?? "null").join(", "), fmt(i.age_days), i.first_seen, i.last_seen, fmt(i.runs_seen)]),
                { caption: "Open items (the first 50, in id order)" },
              ),
        ),
      )
      .catch((error) => fill(items, errorNotice(error)));
  }
  return section;
}

export async function schedules(page, ctx) {
  const [list, recipes] = await Promise.all([get("/api/schedules"), get("/api/recipes")]);
  const names = new Map(recipes.map((r) => [r.id, r.name]));
  const operator = ctx.can("operator");
  const errors = h("div");
  fill(
    page,
    heading("Schedules"),
    h("p", { class: "lead" }, "Recipes that run by themselves, on a cron timetable or every so often."),
    errors,
    list.length === 0
      ? empty("No schedules yet.")
      : table(
          ["Name", "Recipe", "When", "Next run", "State", "Actions"],
          list.map((s) => [s.name, names.get(s.recipe_id) ?? s.recipe_id, s.cron ?? `every ${fmt(s.every_secs)} s`, when(s.next_runs?.[0]), s.paused ? "paused" : "active", s]),
          {
            caption: "Schedules",
            cell: (td, value, column) => {
              if (column === 4) fill(td, badge(value, value === "active" ? "ok" : "muted"));
              if (column !== 5) return;
              fill(td);
              if (!operator) return;
              const again = () => schedules(page, ctx);
              td.append(
                actionButton(value.paused ? "Resume" : "Pause", async () => {
                  await post(`/api/schedules/${seg(value.id)}/${value.paused ? "resume" : "pause"}`);
                  await again();
                }, { errors, kind: "secondary", attributes: { "aria-label": `${value.paused ? "Resume" : "Pause"} schedule ${value.name}` } }),
                " ",
                actionButton("Delete", async () => {
                  if (!confirm(`Delete schedule ${value.name}? Its runs stay.`)) return;
                  await del(`/api/schedules/${seg(value.id)}`);
                  await again();
                }, { errors, kind: "danger", attributes: { "aria-label": `Delete schedule ${value.name}` } }),
              );
            },
          },
        ),
    operator && recipes.length ? scheduleForm(recipes, ctx, () => schedules(page, ctx)) : null,
  );
}

function scheduleForm(recipes, ctx, after) {
  const name = h("input", { required: true, autocomplete: "off" });
  const recipe = select(recipes.map((r) => [r.id, r.name]), recipes[0].id);
  const cron = h("input", { placeholder: "0 6 * * *", autocomplete: "off" });
  const timezone = h("input", { value: Intl.DateTimeFormat().resolvedOptions().timeZone ?? "UTC", autocomplete: "off" });
  const errors = h("div");
  const fields = { name: field("Name", name), recipe: field("Recipe", recipe), cron: field("Cron (minute hour day month weekday)", cron), timezone: field("Time zone", timezone) };
  const form = h("form", { class: "card", "aria-labelledby": "schedule-title" }, h("h2", { id: "schedule-title" }, "New schedule"), h("div", { class: "grid" }, Object.values(fields)), errors, h("button", { type: "submit", class: "primary" }, "Create schedule"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(errors);
    Object.values(fields).forEach((f) => f.showError(null));
    try {
      await post("/api/schedules", { name: name.value.trim(), recipe: recipe.value, cron: cron.value.trim(), timezone: timezone.value.trim() });
      toast(`Schedule ${name.value} created`);
      await after();
    } catch (error) {
      const target = error.code === "invalid_schedule" ? fields.cron : error.code === "conflict" ? fields.name : null;
      if (target) target.showError(error.message);
      else fill(errors, errorNotice(error));
    }
  });
  return form;
}
