// One output of a run: a paged table filtered and sorted by the runner over the whole output,
// failing rules and their values highlighted, group members shaded together, and downloads of
// what is shown (as CSV or parquet).

import { download, get, seg, withQuery } from "./api.js";
import { empty, errorNotice, fill, fmt, h, heading, loading, pager } from "./dom.js";
import { filterBuilder } from "./filters.js";

const PAGE_ROWS = 50;
/** A sorted download reads at most this deep (the runner's limit for sorted reads). */
const MAX_SORTED_ROWS = 100_000;

export async function output(page, ctx, id, name) {
  const path = `/api/jobs/${seg(id)}/results/${seg(name)}`;
  const [job, first] = await Promise.all([get(`/api/jobs/${seg(id)}`), get(withQuery(path, { limit: 1 }))]);
  const recipe = job.recipe_id ? await get(`/api/recipes/${seg(job.recipe_id)}`).catch(() => null) : null;
  const columns = first.columns;
  const state = { filter: [], order: [], offset: 0, total: null };
  const builder = filterBuilder(columns, [], { label: "Filter rows" });
  const errors = h("div");
  const rowsBox = h("div", { class: "rows" });
  const form = h("form", { class: "card" }, builder, errors, h("button", { type: "submit", class: "primary" }, "Apply filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    try {
      state.filter = builder.conditions();
    } catch (error) {
      fill(errors, errorNotice(error));
      return;
    }
    fill(errors);
    state.offset = 0;
    state.total = null;
    load();
  });

  const query = (extra) =>
    withQuery(path, {
      filter: state.filter.length ? JSON.stringify(state.filter) : null,
      order_by: state.order.map(([column, direction]) => `${column}:${direction}`).join(","),
      ...extra,
    });

  async function load(focusSelector) {
    fill(rowsBox, loading("Reading rows"));
    let answer;
    try {
      answer = await get(query({ offset: state.offset, limit: PAGE_ROWS, count: state.total === null ? "true" : null }));
    } catch (error) {
      fill(rowsBox, errorNotice(error));
      return;
    }
    if (answer.total_rows !== undefined) state.total = answer.total_rows;
    drawRows(answer);
    if (focusSelector) rowsBox.querySelector(focusSelector)?.focus();
  }

  const failing = failingColumns(recipe);
  function drawRows(answer) {
    const names = answer.columns.map((c) => c.name);
    const failedAt = names.indexOf("failed_rules");
    const groupAt = names.indexOf("group_id");
    const shades = groupShades(answer.rows, groupAt);
    const header = names.map((column) => sortButton(column));
    fill(
      rowsBox,
      h("p", { class: "count", role: "status" }, `${fmt(state.total ?? 0)} rows match`, state.order.length ? `, sorted by ${state.order.map(([c, d]) => `${c} ${d === "desc" ? "descending" : "ascending"}`).join(", ")}` : ""),
      answer.rows.length === 0
        ? empty(state.filter.length ? "No row matches this filter." : "This output has no rows.")
        : dataTable(header, answer.rows, {
            rowClass: (row, index) => [shades[index], failedAt >= 0 && row[failedAt] ? "has-failure" : null].filter(Boolean).join(" "),
            cell: (td, value, column, index) => {
              const failed = failedAt >= 0 ? answer.rows[index][failedAt] : null;
              if (failed && failing(failed).has(names[column])) {
                td.classList.add("failed");
                td.title = `rule ${failed} fails`;
              }
            },
          }),
      pager({ offset: state.offset, limit: PAGE_ROWS, shown: answer.rows.length, total: state.total, go: (next) => ((state.offset = next), load()) }),
      downloads(),
    );
  }

  function sortButton(column) {
    const at = state.order.findIndex(([c]) => c === column);
    const direction = at >= 0 ? state.order[at][1] : null;
    const label = direction === "asc" ? "ascending" : direction === "desc" ? "descending" : "not sorted";
    const button = h("button", { type: "button", class: "sort", "data-column": column, "aria-label": `${column}, ${label}; sort by it` }, column, direction ? (direction === "asc" ? " ▲" : " ▼") : "");
    button.addEventListener("click", () => {
      // Unsorted, then ascending, then descending, then unsorted; the column clicked sorts first.
      const next = direction === null ? "asc" : direction === "asc" ? "desc" : null;
      state.order = state.order.filter(([c]) => c !== column);
      if (next) state.order.unshift([column, next]);
      state.offset = 0;
      load(`button[data-column="${CSS.escape(column)}"]`);
    });
    return { button, direction };
  }

  function downloads() {
    const deep = state.order.length ? Math.min(state.total ?? MAX_SORTED_ROWS, MAX_SORTED_ROWS) : null;
    const status = h("span", { role: "status" });
    const button = (format) =>
      h(
        "button",
        {
          type: "button",
          class: "secondary",
          id: `download-${format}`,
          onclick: async () => {
            status.textContent = `Preparing the ${format.toUpperCase()} download…`;
            try {
              const bytes = await download(query({ format, limit: deep }), `${id}-${name}.${format}`);
              status.textContent = `Downloaded ${fmt(bytes)} bytes as ${id}-${name}.${format}`;
            } catch (error) {
              status.textContent = `Download failed: ${error.message}`;
            }
          },
        },
        `Download ${format.toUpperCase()}`,
      );
    return h("div", { class: "actions" }, h("span", {}, state.filter.length || state.order.length ? "Download these rows (filtered and sorted as shown): " : "Download the whole output: "), button("csv"), " ", button("parquet"), " ", status);
  }

  fill(
    page,
    heading(`${name}`, h("p", { class: "lead" }, h("a", { href: `#/runs/${seg(id)}` }, `Run ${id}`), recipe ? ` · ${recipe.name}` : "")),
    form,
    rowsBox,
  );
  await load();
}

/** A table whose headers are sort buttons (`{button, direction}`), with `aria-sort` set. */
function dataTable(header, rows, { cell, rowClass }) {
  const sortName = { asc: "ascending", desc: "descending" };
  return h(
    "div",
    { class: "table-frame", tabindex: "0", role: "region", "aria-label": "Output rows" },
    h(
      "table",
      {},
      h("thead", {}, h("tr", {}, header.map(({ button, direction }) => h("th", { scope: "col", "aria-sort": sortName[direction] ?? "none" }, button)))),
      h(
        "tbody",
        {},
        rows.map((row, index) =>
          h(
            "tr",
            { class: rowClass(row, index) || null },
            row.map((value, column) => {
              const td = h("td", {}, value === null ? h("span", { class: "null" }, "null") : value);
              cell(td, value, column, index);
              return td;
            }),
          ),
        ),
      ),
    ),
  );
}

/** For a row's `failed_rules` text, the columns to highlight: each failing rule's left and
 * right columns and its difference. A rule is named by its `name` or its left column. */
function failingColumns(recipe) {
  const rules = new Map();
  const all = recipe ? [...(recipe.recipe.rules ?? []), ...(recipe.recipe.passes ?? []).flatMap((p) => p.rules ?? [])] : [];
  for (const rule of all) rules.set(rule.name ?? rule.left, rule);
  return (failed) => {
    const columns = new Set();
    for (const name of failed.split(",").map((n) => n.trim())) {
      const rule = rules.get(name) ?? { left: name, right: name };
      columns.add(`left_${rule.left}`).add(`right_${rule.right}`).add(`${name}_diff`).add(`${name}_days`);
    }
    return columns;
  };
}

/** Rows of one group (a shared `group_id`) shaded alike, alternating between groups. */
function groupShades(rows, groupAt) {
  if (groupAt < 0) return rows.map(() => null);
  let shade = 0;
  return rows.map((row, index) => {
    if (index > 0 && row[groupAt] !== rows[index - 1][groupAt]) shade ^= 1;
    const shared = row[groupAt] !== null && (rows[index - 1]?.[groupAt] === row[groupAt] || rows[index + 1]?.[groupAt] === row[groupAt]);
    return shared ? `group group-${shade}` : null;
  });
}
