// The filter builder shared by source previews, recipe sides and result tables: the API's
// conditions (`{column, op, value}`), each with an input that fits its column's type.

import { h, fill, select, uid } from "./dom.js";

export const OPERATORS = [
  ["eq", "="],
  ["neq", "≠"],
  ["gt", ">"],
  ["gte", "≥"],
  ["lt", "<"],
  ["lte", "≤"],
  ["between", "between"],
  ["in", "in (list)"],
  ["like", "like"],
  ["is_null", "is null"],
  ["is_not_null", "is not null"],
];

/** The kind of input a column of this Arrow type takes. */
export function inputKind(dataType) {
  if (/^(U?Int|Float|Decimal)/.test(dataType)) return "number";
  if (/^Date/.test(dataType)) return "date";
  if (/^Timestamp/.test(dataType)) return "datetime-local";
  if (dataType === "Boolean") return "boolean";
  return "text";
}

function valueInput(kind, label, value) {
  if (kind === "boolean") {
    return select([["true", "true"], ["false", "false"]], value ?? "true", { "aria-label": label });
  }
  const attributes = { type: kind, "aria-label": label, value: value ?? "" };
  if (kind === "number") attributes.step = "any";
  if (kind === "datetime-local") attributes.step = "1";
  return h("input", attributes);
}

/** A builder over `columns` (`[{name, data_type}]`), starting with `conditions`. Returns the
 * element; `element.conditions()` reads them back (throwing, with the row named, when one is
 * incomplete). */
export function filterBuilder(columns, conditions = [], { label = "Filters" } = {}) {
  const list = h("ol", { class: "conditions", "aria-label": label });
  const rows = [];

  function addRow(condition = {}) {
    const row = { id: uid("cond") };
    const column = select(
      columns.map((c) => [c.name, `${c.name} (${c.data_type})`]),
      condition.column ?? columns[0]?.name,
      { "aria-label": "Column" },
    );
    const op = select(OPERATORS, condition.op ?? "eq", { "aria-label": "Operator" });
    const values = h("span", { class: "values" });
    const remove = h("button", { type: "button", class: "link", "aria-label": "Remove this condition" }, "Remove");
    const item = h("li", { class: "condition" }, column, op, values, remove);

    const typeOf = () => columns.find((c) => c.name === column.value)?.data_type ?? "Utf8";
    function drawValues(initial) {
      const kind = op.value === "like" || op.value === "in" ? "text" : inputKind(typeOf());
      switch (op.value) {
        case "is_null":
        case "is_not_null":
          row.read = () => undefined;
          fill(values);
          return;
        case "between": {
          const [low, high] = Array.isArray(initial) ? initial : [];
          const from = valueInput(kind, "From", low);
          const to = valueInput(kind, "To", high);
          row.read = () => [need(from.value, "a low value"), need(to.value, "a high value")];
          fill(values, from, h("span", {}, " and "), to);
          return;
        }
        case "in": {
          const list = valueInput("text", "Values, separated by commas", Array.isArray(initial) ? initial.join(", ") : initial);
          row.read = () => {
            const items = list.value.split(",").map((v) => v.trim()).filter((v) => v !== "");
            if (items.length === 0) throw new Error("needs at least one value");
            return items;
          };
          fill(values, list);
          return;
        }
        default: {
          const input = valueInput(kind, "Value", typeof initial === "string" ? initial : undefined);
          row.read = () => need(input.value, "a value");
          fill(values, input);
        }
      }
    }
    column.addEventListener("change", () => drawValues());
    op.addEventListener("change", () => drawValues());
    remove.addEventListener("click", () => {
      rows.splice(rows.indexOf(row), 1);
      item.remove();
      addButton.focus();
    });
    drawValues(condition.value);
    row.column = column;
    row.op = op;
    rows.push(row);
    list.append(item);
    return column;
  }

  const addButton = h("button", { type: "button", class: "secondary", onclick: () => addRow().focus() }, "Add condition");
  if (columns.length === 0) addButton.disabled = true;
  conditions.forEach((c) => addRow(c));

  const element = h("fieldset", { class: "filters" }, h("legend", {}, label), list, addButton);
  element.conditions = () =>
    rows.map((row, index) => {
      try {
        const value = row.read();
        return value === undefined ? { column: row.column.value, op: row.op.value } : { column: row.column.value, op: row.op.value, value };
      } catch (error) {
        throw new Error(`condition ${index + 1} (${row.column.value}): ${error.message}`);
      }
    });
  return element;
}

function need(value, what) {
  if (value === "") throw new Error(`needs ${what}`);
  // datetime-local gives minutes only when the seconds are zero.
  return /^\d{4}-\d\d-\d\dT\d\d:\d\d$/.test(value) ? `${value}:00` : value;
}
