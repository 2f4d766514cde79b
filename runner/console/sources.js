// Sources and connections: the lists, registering them (a password goes into the request only,
// and the runner seals it into a secret), a connection's health, tables and cache, and the
// filtered preview of a source.

import { del, get, post, seg } from "./api.js";
import { actionButton, badge, empty, errorNotice, field, fill, fmt, h, heading, loading, notice, pager, select, table, toast, when } from "./dom.js";
import { filterBuilder } from "./filters.js";

export async function list(page, ctx) {
  const [sources, connections] = await Promise.all([get("/api/sources"), get("/api/connections")]);
  const admin = ctx.can("admin");
  fill(
    page,
    heading("Sources"),
    h("p", { class: "lead" }, "What Kalla reads: single sources (a Postgres table, a CSV or Parquet file) and database connections with their discovered tables."),
    h("section", { "aria-labelledby": "sources-title" }, h("h2", { id: "sources-title" }, "Sources"), sourceList(sources, ctx)),
    admin ? registerSource(ctx) : null,
    h("section", { "aria-labelledby": "connections-title" }, h("h2", { id: "connections-title" }, "Connections"), connectionList(connections, ctx)),
    admin ? registerConnection(ctx) : null,
  );
}

function sourceList(sources, ctx) {
  if (sources.length === 0) {
    return empty(ctx.can("admin") ? "No sources yet: register one below." : "No sources yet. An admin registers them.");
  }
  const rows = sources.map((s) => [s.alias, s.source_type, s.uri, when(s.created_at), s.alias]);
  return table(["Alias", "Type", "Location", "Registered", "Actions"], rows, {
    caption: "Registered sources",
    cell: (td, value, column) => {
      if (column === 0) fill(td, h("a", { href: `#/sources/${seg(value)}` }, value));
      if (column === 4) {
        fill(td, h("a", { href: `#/sources/${seg(value)}`, class: "button-link" }, "Preview"));
        if (ctx.can("admin")) {
          td.append(
            " ",
            actionButton(
              "Delete",
              async () => {
                if (!confirm(`Delete source ${value}? Recipes that read it will fail until it is registered again.`)) return;
                await del(`/api/sources/${seg(value)}`);
                toast(`Source ${value} deleted`);
                await list(document.getElementById("main"), ctx);
              },
              { kind: "danger", attributes: { "aria-label": `Delete source ${value}` } },
            ),
          );
        }
      }
    },
  });
}

/** `uri` with `password` as its user-info password (the runner moves it into a secret). */
function withPassword(uri, password) {
  if (!password) return uri;
  const url = new URL(uri);
  url.password = password;
  return url.toString();
}

function registerSource(ctx) {
  const alias = h("input", { name: "alias", required: true, pattern: "[A-Za-z_][A-Za-z0-9_]{0,62}", autocomplete: "off" });
  const uri = h("input", { name: "uri", required: true, autocomplete: "off", placeholder: "postgres://user@host:5432/db?table=schema.table" });
  const password = h("input", { name: "password", type: "password", autocomplete: "new-password" });
  const fields = {
    alias: field("Alias", alias, "A letter or _, then letters, digits or _ (at most 63)."),
    uri: field("Location (URI)", uri, "postgres://…?table=schema.table, mysql://…, a path or file:// URL to a .csv or .parquet file, or s3://bucket/key."),
    password: field("Password (optional)", password, "Sealed into a secret by the runner; never shown again."),
  };
  const errors = h("div");
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "register-source-title" },
    h("h2", { id: "register-source-title" }, "Register a source"),
    Object.values(fields),
    errors,
    h("button", { type: "submit", class: "primary" }, "Register source"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(errors);
    Object.values(fields).forEach((f) => f.showError(null));
    let location;
    try {
      location = withPassword(uri.value.trim(), password.value);
    } catch {
      fields.password.showError("A password can only go into a URI with a host (postgres://, mysql://).");
      return;
    }
    try {
      await post("/api/sources", { alias: alias.value.trim(), uri: location });
      toast(`Source ${alias.value} registered`);
      ctx.go(`sources/${seg(alias.value.trim())}`);
    } catch (error) {
      const target = { invalid_alias: fields.alias, conflict: fields.alias, invalid_source: fields.uri, not_allowed: fields.uri }[error.code];
      if (target) target.showError(error.message);
      else fill(errors, errorNotice(error));
    }
  });
  return form;
}

function connectionList(connections, ctx) {
  if (connections.length === 0) {
    return empty(ctx.can("admin") ? "No connections yet: register one below." : "No connections yet.");
  }
  const rows = connections.map((c) => [c.name, c.source_type, `${c.config.host ?? ""}${c.config.port ? `:${c.config.port}` : ""}/${c.config.database ?? ""}`, c.table_count ?? "—", c.cached_table_count ?? "—", c.id]);
  return table(["Name", "Type", "Database", "Tables", "Cached", "Actions"], rows, {
    caption: "Registered connections",
    cell: (td, value, column, row) => {
      if (column === 0) fill(td, h("a", { href: `#/connections/${seg(connections[row].id)}` }, value));
      if (column === 5) fill(td, h("a", { href: `#/connections/${seg(value)}`, class: "button-link" }, "Tables and health"));
    },
  });
}

function registerConnection(ctx) {
  const inputs = {
    name: h("input", { required: true, autocomplete: "off" }),
    source_type: select([["postgres", "PostgreSQL"], ["mariadb", "MariaDB / MySQL"]], "postgres"),
    host: h("input", { required: true, autocomplete: "off" }),
    port: h("input", { type: "number", min: "1", max: "65535", placeholder: "5432" }),
    database: h("input", { required: true, autocomplete: "off" }),
    user: h("input", { required: true, autocomplete: "off" }),
    password: h("input", { type: "password", autocomplete: "new-password" }),
    sslmode: select(["prefer", "disable", "require", "verify-ca", "verify-full"], "prefer"),
  };
  const labels = { name: "Name", source_type: "Engine", host: "Host", port: "Port", database: "Database", user: "User", password: "Password (sealed into a secret)", sslmode: "TLS (sslmode)" };
  const fields = Object.fromEntries(Object.entries(inputs).map(([key, input]) => [key, field(labels[key], input)]));
  const errors = h("div");
  const form = h(
    "form",
    { class: "card", "aria-labelledby": "register-connection-title" },
    h("h2", { id: "register-connection-title" }, "Register a connection"),
    h("div", { class: "grid" }, Object.values(fields)),
    errors,
    h("button", { type: "submit", class: "primary" }, "Register connection"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(errors);
    const config = { host: inputs.host.value.trim(), database: inputs.database.value.trim(), user: inputs.user.value.trim(), sslmode: inputs.sslmode.value };
    if (inputs.port.value) config.port = Number(inputs.port.value);
    if (inputs.password.value) config.password = inputs.password.value;
    try {
      const made = await post("/api/connections", { name: inputs.name.value.trim(), source_type: inputs.source_type.value, config });
      toast(`Connection ${made.name} registered`);
      ctx.go(`connections/${seg(made.id)}`);
    } catch (error) {
      const target = { invalid_name: fields.name, conflict: fields.name, not_allowed: fields.host }[error.code];
      if (target) target.showError(error.message);
      else fill(errors, errorNotice(error));
    }
  });
  return form;
}

export async function connection(page, ctx, id) {
  const [conn, tables] = await Promise.all([get(`/api/connections/${seg(id)}`), get(`/api/information_schema?connection_id=${seg(id)}`)]);
  const healthBox = h("div", { class: "health" }, loading("Checking health"));
  const errors = h("div");
  const operator = ctx.can("operator");
  const actions = h(
    "div",
    { class: "actions" },
    operator ? actionButton("Rediscover tables", async () => {
      await post(`/api/connections/${seg(id)}/refresh`);
      toast("Tables rediscovered");
      await connection(page, ctx, id);
    }, { errors, kind: "secondary" }) : null,
    ctx.can("admin") ? actionButton("Delete connection", async () => {
      if (!confirm(`Delete connection ${conn.name}, its tables and its cache?`)) return;
      await del(`/api/connections/${seg(id)}`);
      toast(`Connection ${conn.name} deleted`);
      ctx.go("sources");
    }, { errors, kind: "danger" }) : null,
  );
  const rows = tables.map((t) => [`${t.schema_name}.${t.table_name}`, t.columns.length, t.cache_version ? "cached" : "not cached", t.row_count === null || t.row_count === undefined ? "—" : fmt(t.row_count), when(t.last_sync), t]);
  fill(
    page,
    heading(`Connection ${conn.name}`, h("p", { class: "lead" }, `${conn.source_type} · ${conn.config.host ?? ""}/${conn.config.database ?? ""}`)),
    healthBox,
    actions,
    errors,
    h("h2", {}, "Tables"),
    tables.length === 0
      ? empty("No tables discovered. Rediscover them once the database has some.")
      : table(["Table", "Columns", "Cache", "Rows cached", "Last refresh", "Actions"], rows, {
          caption: `Tables of ${conn.name}`,
          cell: (td, value, column) => {
            if (column === 2) fill(td, badge(value, value === "cached" ? "ok" : "muted"));
            if (column !== 5) return;
            fill(td);
            if (!operator) return;
            td.append(
              actionButton("Refresh cache", async () => {
                const done = await post(`/api/connections/${seg(id)}/tables/${seg(value.schema_name)}/${seg(value.table_name)}/refresh`);
                toast(`${value.table_name}: ${fmt(done.rows)} rows cached in ${fmt(done.duration_ms)} ms`);
                await connection(page, ctx, id);
              }, { errors, kind: "secondary", attributes: { "aria-label": `Refresh the cache of ${value.table_name}` } }),
            );
          },
        }),
  );
  get(`/api/connections/${seg(id)}/health`)
    .then((health) =>
      fill(
        healthBox,
        health.reachable
          ? notice(`Reachable in ${health.latency_ms} ms${health.encrypted === false ? " · not encrypted" : health.verified ? " · TLS, verified" : health.encrypted ? " · TLS" : ""}`, "ok")
          : notice(`Unreachable: ${health.error ?? "no answer"}`, "error"),
      ),
    )
    .catch((error) => fill(healthBox, errorNotice(error)));
}

const PREVIEW_LIMIT = 1000;
const PAGE_ROWS = 50;

export async function preview(page, ctx, alias) {
  const source = await get(`/api/sources/${seg(alias)}`);
  const output = h("div", { class: "preview-output" });
  // The builder needs the source's columns, which the first preview brings.
  let builder = filterBuilder([], [], { label: "Filters" });
  let columnsKnown = false;
  const holder = h("div", {}, builder);
  const errors = h("div");
  const form = h("form", { class: "card" }, holder, errors, h("button", { type: "submit", class: "primary" }, "Apply filters"));

  async function load(conditions) {
    fill(errors);
    fill(output, loading("Reading the source"));
    let answer;
    try {
      answer = await post(`/api/sources/${seg(alias)}/load-scoped`, { conditions, limit: PREVIEW_LIMIT });
    } catch (error) {
      fill(output);
      fill(errors, errorNotice(error));
      return;
    }
    if (!columnsKnown) {
      builder = filterBuilder(answer.columns, conditions, { label: "Filters" });
      columnsKnown = true;
      fill(holder, builder);
    }
    drawRows(answer, 0);
  }

  function drawRows(answer, offset) {
    const total = answer.total_rows_exact ? fmt(answer.total_rows) : `at least ${fmt(answer.total_rows)}`;
    const shown = answer.rows.slice(offset, offset + PAGE_ROWS);
    fill(
      output,
      h("p", { class: "count", role: "status" }, `${total} matching rows`, answer.rows.length < answer.total_rows ? ` · the first ${fmt(answer.rows.length)} can be paged here; narrow the filters to see others` : ""),
      answer.rows.length === 0
        ? empty("No row matches these filters.")
        : [
            table(answer.columns.map((c) => c.name), shown, { caption: `${alias}: rows ${offset + 1} to ${offset + shown.length}` }),
            pager({ offset, limit: PAGE_ROWS, shown: shown.length, total: answer.rows.length, go: (next) => drawRows(answer, next) }),
          ],
    );
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    let conditions;
    try {
      conditions = builder.conditions();
    } catch (error) {
      fill(errors, errorNotice(error));
      return;
    }
    load(conditions);
  });
  fill(page, heading(`Preview ${alias}`, h("p", { class: "lead" }, `${source.source_type} · ${source.uri}`)), form, output);
  await load([]);
}
