// Recipes: the list, and the builder: two sides (source, keys, filters, carried columns), rules
// or passes with column pickers, a dry run on a sample, save, and the recipe as JSON. The
// runner's validation errors are shown beside the field their message names.

import { del, get, post, put, seg } from "./api.js";
import { actionButton, badge, empty, errorNotice, field, fill, fmt, h, heading, loading, select, table, toast, uid, when } from "./dom.js";
import { filterBuilder } from "./filters.js";

export async function list(page, ctx) {
  const recipes = await get("/api/recipes");
  const operator = ctx.can("operator");
  fill(
    page,
    heading("Recipes", operator ? h("a", { href: "#/recipes/new", class: "button-link primary" }, "New recipe") : null),
    h("p", { class: "lead" }, "A recipe pairs the rows of two sources by key and compares them by its rules."),
    recipes.length === 0
      ? empty(operator ? "No recipes yet." : "No recipes yet. An operator builds them.", operator ? h("a", { href: "#/recipes/new" }, "Build the first recipe") : null)
      : table(
          ["Name", "Left", "Right", "Updated", "Actions"],
          recipes.map((r) => [r.name, r.recipe.left.source, r.recipe.right.source, when(r.updated_at), r]),
          {
            caption: "Stored recipes",
            cell: (td, value, column, row) => {
              if (column === 0) fill(td, h("a", { href: `#/recipes/${seg(recipes[row].id)}` }, value));
              if (column !== 4) return;
              fill(td, h("a", { href: `#/runs?recipe=${seg(value.id)}`, class: "button-link" }, "Runs"));
              if (!operator) return;
              td.append(
                " ",
                actionButton(
                  "Delete",
                  async () => {
                    if (!confirm(`Delete recipe ${value.name}? Its runs and results stay.`)) return;
                    await del(`/api/recipes/${seg(value.id)}`);
                    toast(`Recipe ${value.name} deleted`);
                    await list(page, ctx);
                  },
                  { kind: "danger", attributes: { "aria-label": `Delete recipe ${value.name}` } },
                ),
              );
            },
          },
        ),
  );
}

const RULE_KINDS = [
  ["equal", "equal"],
  ["numeric", "numeric (tolerance)"],
  ["date_window", "date window (days)"],
  ["equal_or_both_null", "equal or both null"],
];

const blankSide = () => ({ source: "", key: [], filters: [], carry: [] });

/** Every table a side may read: source aliases and connection tables (`connection.schema.table`). */
async function readableTables() {
  const [sources, connections, tables] = await Promise.all([get("/api/sources"), get("/api/connections"), get("/api/information_schema")]);
  const names = new Map(connections.map((c) => [c.id, c.name]));
  const columns = new Map();
  const options = sources.map((s) => [s.alias, `${s.alias} (source)`]);
  for (const t of tables) {
    const connection = names.get(t.connection_id);
    if (!connection) continue;
    const name = `${connection}.${t.schema_name}.${t.table_name}`;
    options.push([name, name]);
    columns.set(name, t.columns);
  }
  return { options, columns };
}

export async function edit(page, ctx, id) {
  const [stored, tables] = await Promise.all([id ? get(`/api/recipes/${seg(id)}`) : null, readableTables()]);
  const canSave = ctx.can("operator");
  const recipe = stored ? structuredClone(stored.recipe) : { name: "", left: blankSide(), right: blankSide(), rules: [] };
  for (const side of ["left", "right"]) recipe[side] = { ...blankSide(), ...recipe[side] };
  recipe.rules ??= [];
  const columns = { left: [], right: [] };

  /** A source's columns: from discovery for connection tables, from a one-row preview for sources. */
  async function loadColumns(side) {
    const name = recipe[side].source;
    if (!name) return (columns[side] = []);
    if (tables.columns.has(name)) return (columns[side] = tables.columns.get(name));
    const answer = await post(`/api/sources/${seg(name)}/load-scoped`, { conditions: [], limit: 1 });
    // Arrow keys pass over several tables: only the answer for the one chosen last counts.
    if (recipe[side].source === name) columns[side] = answer.columns;
  }
  await Promise.all(["left", "right"].map((side) => loadColumns(side).catch(() => (columns[side] = []))));

  const errors = h("div");
  const form = h("form", { class: "recipe", novalidate: true });
  const dryRunOutput = h("section", { "aria-live": "polite", "aria-label": "Dry run" });
  const jsonArea = h("textarea", { rows: "18", spellcheck: "false", class: "json" });
  const jsonPanel = h("details", { class: "card" }, h("summary", {}, "Recipe as JSON"), field("JSON (edit and apply, or copy)", jsonArea), h("button", { type: "button", class: "secondary", onclick: applyJson }, "Apply JSON to the form"));
  jsonPanel.addEventListener("toggle", () => {
    if (jsonPanel.open) jsonArea.value = JSON.stringify(current(), null, 2);
  });

  function applyJson() {
    try {
      const parsed = JSON.parse(jsonArea.value);
      Object.keys(recipe).forEach((key) => delete recipe[key]);
      Object.assign(recipe, parsed);
      for (const side of ["left", "right"]) recipe[side] = { ...blankSide(), ...recipe[side] };
      recipe.rules ??= [];
      Promise.all(["left", "right"].map((side) => loadColumns(side).catch(() => (columns[side] = [])))).then(draw);
    } catch (error) {
      fill(errors, errorNotice({ code: "invalid_json", message: error.message }));
    }
  }

  /** The recipe as the API takes it: empty parts left out. */
  function current() {
    const side = (s) => {
      const out = { source: s.source };
      if (!recipe.passes?.length && s.key.length) out.key = s.key;
      if (s.filters.length) out.filters = s.filters;
      if (s.carry.length) out.carry = s.carry;
      return out;
    };
    const out = { ...recipe, left: side(recipe.left), right: side(recipe.right) };
    for (const [key, value] of Object.entries(out)) if (Array.isArray(value) && value.length === 0) delete out[key];
    if (recipe.passes?.length) delete out.rules;
    return out;
  }

  const filterBuilders = {};
  /** The filters as the builders hold them; throws naming an incomplete condition. */
  function readFilters() {
    for (const side of ["left", "right"]) recipe[side].filters = filterBuilders[side].conditions();
  }

  function columnPicker(side, value, label, onChange) {
    const options = [["", "— column —"], ...columns[side].map((c) => [c.name, `${c.name} (${c.data_type})`])];
    if (value && !columns[side].some((c) => c.name === value)) options.push([value, `${value} (not in the source)`]);
    const picker = select(options, value ?? "", { "aria-label": label });
    picker.addEventListener("change", () => onChange(picker.value));
    return picker;
  }

  function keyList(side, keys, at, label) {
    const wrapper = h("div", { class: "keys", "data-path": at });
    keys.forEach((key, index) => {
      wrapper.append(
        h(
          "div",
          { class: "row" },
          columnPicker(side, key, `${label} ${index + 1}`, (value) => (keys[index] = value)),
          h("button", { type: "button", class: "link", "aria-label": `Remove ${label} ${index + 1}`, onclick: () => { keys.splice(index, 1); draw(); } }, "Remove"),
        ),
      );
    });
    const newest = () => [...form.querySelectorAll(`[data-path="${at}"] select`)].pop();
    wrapper.append(h("button", { type: "button", class: "secondary", onclick: () => { keys.push(""); draw(newest); } }, `Add ${label}`));
    return wrapper;
  }

  function sideCard(side) {
    const s = recipe[side];
    const title = side === "left" ? "Left side" : "Right side";
    const source = select([["", "— choose a table —"], ...tables.options], s.source, {});
    source.addEventListener("change", async () => {
      const chosen = source.value;
      Object.assign(s, { source: chosen, key: [], filters: [], carry: [] });
      columns[side] = [];
      // Drawn at once, so no control of the table chosen before is left to use meanwhile.
      draw(`#${side}-source`);
      await loadColumns(side).catch((error) => fill(errors, errorNotice(error)));
      if (s.source === chosen) draw();
    });
    source.id = `${side}-source`;
    const builder = filterBuilder(columns[side], s.filters, { label: `${title}: filters` });
    filterBuilders[side] = builder;
    builder.dataset.path = `${side}.filters`;
    const carry = h(
      "fieldset",
      { class: "carry", "data-path": `${side}.carry` },
      h("legend", {}, "Carried columns (shown on every output row)"),
      columns[side].length === 0 ? h("p", { class: "hint" }, "Choose a table first.") : null,
      columns[side].map((c) => {
        const box = h("input", { type: "checkbox", id: uid("carry"), checked: s.carry.includes(c.name) });
        box.addEventListener("change", () => {
          s.carry = box.checked ? [...s.carry, c.name] : s.carry.filter((n) => n !== c.name);
        });
        return h("label", { class: "check", for: box.id }, box, c.name);
      }),
    );
    return h(
      "section",
      { class: "card side", "aria-label": title },
      h("h2", {}, title),
      h("div", { "data-path": `${side}.source` }, field("Table", source)),
      recipe.passes?.length ? null : h("fieldset", {}, h("legend", {}, "Key columns"), keyList(side, s.key, `${side}.key`, "key column")),
      builder,
      carry,
    );
  }

  function ruleList(rules, at) {
    const wrapper = h("div", { class: "rules", "data-path": at });
    rules.forEach((rule, index) => {
      const path = `${at}[${index}]`;
      const kind = select(RULE_KINDS, rule.kind, { "aria-label": `Rule ${index + 1} kind` });
      kind.addEventListener("change", () => {
        // A kind's own settings start empty: the person gives them (the runner says which it needs).
        rules[index] = { kind: kind.value, left: rule.left, right: rule.right };
        draw(`[data-path="${path}"] select`);
      });
      const extra = [];
      const numberInput = (name, label, step) => {
        const input = h("input", { type: "number", step, value: rule[name] ?? "", "aria-label": `Rule ${index + 1} ${label}` });
        input.addEventListener("input", () => {
          if (input.value === "") delete rule[name];
          else rule[name] = Number(input.value);
        });
        return h("label", { class: "inline" }, `${label} `, input);
      };
      const checkbox = (name, label) => {
        const box = h("input", { type: "checkbox", checked: rule[name] === true, "aria-label": `Rule ${index + 1} ${label}` });
        box.addEventListener("change", () => {
          if (box.checked) rule[name] = true;
          else delete rule[name];
        });
        return h("label", { class: "inline" }, box, ` ${label}`);
      };
      if (rule.kind === "numeric") extra.push(numberInput("abs_tol", "absolute tolerance", "any"), numberInput("rel_tol", "relative tolerance", "any"));
      if (rule.kind === "date_window") extra.push(numberInput("min_days", "min days", "1"), numberInput("max_days", "max days", "1"));
      if (rule.kind === "equal") extra.push(checkbox("trim", "trim"), checkbox("case_insensitive", "ignore case"));
      wrapper.append(
        h(
          "div",
          { class: "rule row", "data-path": path },
          kind,
          columnPicker("left", rule.left, `Rule ${index + 1} left column`, (value) => (rule.left = value)),
          h("span", { "aria-hidden": "true" }, "↔"),
          columnPicker("right", rule.right, `Rule ${index + 1} right column`, (value) => (rule.right = value)),
          extra,
          h("button", { type: "button", class: "link", "aria-label": `Remove rule ${index + 1}`, onclick: () => { rules.splice(index, 1); draw(); } }, "Remove"),
          h("p", { class: "field-error", role: "alert", hidden: true }),
        ),
      );
    });
    wrapper.append(h("button", { type: "button", class: "secondary", onclick: () => { rules.push({ kind: "equal", left: "", right: "" }); draw(`[data-path="${at}[${rules.length - 1}]"] select`); } }, "Add rule"));
    return wrapper;
  }

  function passCard(pass, index) {
    const at = `passes[${index}]`;
    const name = h("input", { value: pass.name ?? "", "aria-label": `Pass ${index + 1} name`, placeholder: `pass_${index + 1}` });
    name.addEventListener("input", () => {
      if (name.value) pass.name = name.value;
      else delete pass.name;
    });
    pass.rules ??= [];
    return h(
      "fieldset",
      { class: "pass", "data-path": at },
      h("legend", {}, `Pass ${index + 1}`),
      h("label", { class: "inline" }, "Name ", name),
      h("div", { class: "pair" }, h("div", {}, h("h4", {}, "Left key"), keyList("left", pass.left_key, `${at}.left_key`, "left key column")), h("div", {}, h("h4", {}, "Right key"), keyList("right", pass.right_key, `${at}.right_key`, "right key column"))),
      h("h4", {}, "Rules"),
      ruleList(pass.rules, `${at}.rules`),
      h("button", { type: "button", class: "link", onclick: () => { recipe.passes.splice(index, 1); draw(); } }, `Remove pass ${index + 1}`),
      h("p", { class: "field-error", role: "alert", hidden: true }),
    );
  }

  function matching() {
    const usePasses = Boolean(recipe.passes?.length);
    const mode = select([["one", "One pass: the sides' keys and these rules"], ["passes", "Passes, in order (a waterfall)"]], usePasses ? "passes" : "one", { id: "matching-mode" });
    mode.addEventListener("change", () => {
      if (mode.value === "passes") {
        recipe.passes = [{ left_key: [...recipe.left.key], right_key: [...recipe.right.key], rules: recipe.rules ?? [] }];
        recipe.rules = [];
      } else {
        const first = recipe.passes?.[0];
        recipe.left.key = first?.left_key ?? [];
        recipe.right.key = first?.right_key ?? [];
        recipe.rules = first?.rules ?? [];
        delete recipe.passes;
      }
      draw("#matching-mode");
    });
    return h(
      "section",
      { class: "card", "aria-labelledby": "matching-title" },
      h("h2", { id: "matching-title" }, "Matching"),
      field("How rows pair", mode),
      usePasses
        ? [
            recipe.passes.map(passCard),
            h("button", { type: "button", class: "secondary", onclick: () => { recipe.passes.push({ left_key: [], right_key: [], rules: [] }); draw(); } }, "Add pass"),
          ]
        : h("div", {}, h("h3", {}, "Rules"), ruleList(recipe.rules, "rules")),
    );
  }

  /** Draws the form again from `recipe`, then focuses `focus` (a selector, or a function finding
   * the element) if given, else the control that had the focus (by its place in the form). */
  function draw(focus) {
    const controls = () => [...form.querySelectorAll("input, select, textarea, button, a[href], summary")];
    const focused = controls().indexOf(document.activeElement);
    for (const side of ["left", "right"]) {
      try {
        if (filterBuilders[side]) recipe[side].filters = filterBuilders[side].conditions();
      } catch {
        // An incomplete condition is dropped; the complete ones are kept.
      }
    }
    const name = h("input", { value: recipe.name, required: true, autocomplete: "off" });
    name.addEventListener("input", () => (recipe.name = name.value));
    const sample = h("input", { type: "number", min: "1", max: "1000", value: "100", id: "sample-rows" });
    fill(
      form,
      h("div", { "data-path": "name" }, field("Recipe name", name)),
      h("div", { class: "sides" }, sideCard("left"), sideCard("right")),
      matching(),
      errors,
      h(
        "div",
        { class: "actions" },
        // A dry run reads the sources on the cluster: an operator's, as saving is.
        canSave ? [h("label", { class: "inline", for: "sample-rows" }, "Sample rows "), sample] : null,
        canSave ? actionButton("Dry run", () => dryRun(Number(sample.value)), { kind: "secondary", attributes: { id: "dry-run" } }) : null,
        canSave ? actionButton(stored ? "Save changes" : "Save recipe", save, { kind: "primary", attributes: { id: "save-recipe" } }) : null,
        stored ? h("a", { href: `#/runs?recipe=${seg(stored.id)}`, class: "button-link" }, "Runs of this recipe") : null,
      ),
      dryRunOutput,
      jsonPanel,
    );
    if (jsonPanel.open) jsonArea.value = JSON.stringify(current(), null, 2);
    const target = typeof focus === "function" ? focus() : focus ? form.querySelector(focus) : controls()[focused];
    target?.focus();
  }

  function clearErrors() {
    fill(errors);
    for (const box of form.querySelectorAll(".field-error")) box.hidden = true;
    for (const marked of form.querySelectorAll("[aria-invalid=true]")) marked.setAttribute("aria-invalid", "false");
  }

  /** Shows an API error beside the part of the form its message names (`left.key: …`). */
  function showError(error) {
    const path = /^(?:invalid recipe: )?([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*)[: ]/.exec(error.message ?? "")?.[1];
    for (const at of pathAndParents(path)) {
      const place = form.querySelector(`[data-path="${CSS.escape(at)}"]`);
      if (!place) continue;
      let box = [...place.querySelectorAll(":scope > .field-error, :scope > .field > .field-error")].pop();
      if (!box) {
        box = h("p", { class: "field-error", role: "alert" });
        place.append(box);
      }
      box.textContent = error.message;
      box.hidden = false;
      place.querySelector("select, input, textarea")?.setAttribute("aria-invalid", "true");
      place.scrollIntoView({ block: "center" });
      place.querySelector("select, input, textarea, button")?.focus();
      return;
    }
    fill(errors, errorNotice(error));
  }

  /** The recipe to send, or null (with the reason shown) while a filter is incomplete. */
  function ready() {
    clearErrors();
    try {
      readFilters();
      return current();
    } catch (error) {
      fill(errors, errorNotice(error));
      return null;
    }
  }

  async function save() {
    const body = ready();
    if (!body) return;
    try {
      const saved = stored ? await put(`/api/recipes/${seg(stored.id)}`, body) : await post("/api/recipes", body);
      toast(`Recipe ${saved.name} saved`);
      if (!stored) ctx.go(`recipes/${seg(saved.id)}`);
      else Object.assign(stored, saved);
    } catch (error) {
      showError(error);
    }
  }

  async function dryRun(sampleRows) {
    const body = ready();
    if (!body) return;
    fill(dryRunOutput, loading("Running on a sample"));
    try {
      const result = await post("/api/dry-runs", { recipe: body, sample_rows: sampleRows });
      drawDryRun(result);
    } catch (error) {
      fill(dryRunOutput);
      showError(error);
    }
  }

  function drawDryRun(result) {
    fill(
      dryRunOutput,
      h("h2", {}, "Dry run"),
      h("p", { class: "lead" }, `On ${fmt(result.left_rows)} left rows and the ${fmt(result.right_rows)} right rows whose key equals one of theirs. Nothing was stored.`),
      table(["Output", "Rows"], result.outputs.map((o) => [o.name, fmt(o.total_rows)]), { caption: "Rows per output in the sample" }),
      result.outputs
        .filter((o) => o.total_rows > 0)
        .map((o) =>
          h(
            "details",
            { class: "card" },
            h("summary", {}, `${o.name}: ${fmt(o.total_rows)} rows`, o.rows.length < o.total_rows ? ` (first ${o.rows.length} shown)` : ""),
            table(o.columns.map((c) => c.name), o.rows, { caption: `Dry run: ${o.name}` }),
          ),
        ),
    );
  }

  fill(
    page,
    heading(stored ? `Recipe ${stored.name}` : "New recipe", stored ? h("p", { class: "lead" }, "Updated ", when(stored.updated_at), " ", badge(stored.id, "muted")) : null),
    canSave ? null : h("p", { class: "notice info" }, "Your token may look but not change: an operator saves recipes and tries them on samples."),
    form,
  );
  draw();
}

/** `passes[0].rules[1].left`, then `passes[0].rules[1]`, `passes[0].rules`, `passes[0]`, `passes`. */
function pathAndParents(path) {
  const all = [];
  for (let at = path; at; ) {
    all.push(at);
    const parent = at.replace(/(\.[a-z_]+|\[\d+\])$/, "");
    at = parent === at ? null : parent;
  }
  return all;
}
