#!/usr/bin/env bash
# Kalla quickstart: builds Kalla, seeds a small invoices/payments demo in Postgres and reconciles it
# on an embedded cluster, then starts an embedded runner, registers the example CSV and the demo's
# Postgres table, and previews each with a filter through the `kalla` CLI and curl; registers the
# demo database as a connection and queries it with SQL (cached as parquet on first use); finally
# reconciles invoices with payments from a recipe (examples/recipes/) and reads the job's results.
#
# Postgres: the server at KALLA_DEMO_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres).
# When nothing answers there, the script starts a throwaway cluster of its own with initdb and
# pg_ctl (on PATH) in a temp dir, on a free loopback port, and stops and removes it when it exits.
# It stops the runner it starts then too.
#
#   examples/quickstart.sh                     # KALLA_DEMO_PG_URL picks the Postgres server
#   KEEP_RUNNING=1 examples/quickstart.sh      # after a successful run, leave the runner (and a
#                                              # throwaway Postgres) up, and say how to stop them
#   KALLA_QUICKSTART_PORT=8080                 # the runner's loopback port (default 8080)
#   KALLA_QUICKSTART_DATA_DIR=.kalla           # the runner's data dir (default .kalla in the repository)
#   CARGO_TARGET_DIR=target                    # where cargo builds (default target in the repository)
#   KALLA_QUICKSTART_BIN_DIR=target/debug      # use the Kalla binaries already built there (no build)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# Relative paths in these variables are taken from the caller's directory, as cargo takes them.
absolute() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
DATA_DIR=$(absolute "${KALLA_QUICKSTART_DATA_DIR:-$ROOT/.kalla}")
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  CARGO_TARGET_DIR=$(absolute "$CARGO_TARGET_DIR")
  export CARGO_TARGET_DIR
fi
cd "$ROOT"
PG_URL=${KALLA_DEMO_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PORT=${KALLA_QUICKSTART_PORT:-8080}
step() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# Postgres refuses to run as root: as root, its server tools run as the postgres user (as the tests'
# PgCluster does in tests/src/postgres.rs).
if [ "$(id -u)" -eq 0 ]; then
  as_postgres() { runuser -u postgres -- "$@"; }
  AS_POSTGRES='runuser -u postgres -- '
else
  as_postgres() { "$@"; }
  AS_POSTGRES=
fi

# Whether a Postgres server answers at $1 (even one that would refuse us: `kalla demo` then says why).
pg_answers() {
  if command -v pg_isready >/dev/null; then
    local status=0
    pg_isready -q -t 5 -d "$1" || status=$?
    [ "$status" -ne 2 ] # 2: no response
  else
    python3 -c 'import socket, sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
socket.create_connection((url.hostname or "localhost", url.port or 5432), timeout=5).close()' "$1" 2>/dev/null
  fi
}

# What this script started, stopped when it exits, however it exits (KEEP_RUNNING disarms this
# after a successful run).
RUNNER=
PG_DIR=
cleanup() {
  if [ -n "$RUNNER" ]; then
    kill "$RUNNER" 2>/dev/null || true
    wait "$RUNNER" 2>/dev/null || true
  fi
  if [ -n "$PG_DIR" ]; then
    (cd "$PG_DIR" && as_postgres "$PG_CTL" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1) || true
    rm -rf "$PG_DIR"
  fi
}
trap cleanup EXIT

step "Postgres"
if pg_answers "$PG_URL"; then
  echo "using the Postgres server at $PG_URL"
else
  INITDB=$(command -v initdb || true)
  PG_CTL=$(command -v pg_ctl || true)
  if [ -z "$INITDB" ] || [ -z "$PG_CTL" ]; then
    echo "error: no Postgres answers at $PG_URL, and initdb and pg_ctl are not on PATH to start a throwaway one." >&2
    echo "Install the PostgreSQL server (e.g. \`apt-get install postgresql\`; Debian and Ubuntu put initdb and pg_ctl in /usr/lib/postgresql/<version>/bin: add that to PATH), or set KALLA_DEMO_PG_URL to a Postgres server that answers." >&2
    exit 1
  fi
  if [ -n "$AS_POSTGRES" ] && ! id -u postgres >/dev/null 2>&1; then
    echo "error: no Postgres answers at $PG_URL, and this script runs as root, which Postgres refuses, with no postgres user to run a throwaway server as: create one (useradd --system postgres), run as another user, or set KALLA_DEMO_PG_URL to a Postgres server that answers." >&2
    exit 1
  fi
  PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kalla-quickstart-pg.XXXXXX")
  [ -z "$AS_POSTGRES" ] || chown postgres: "$PG_DIR"
  PG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  (cd "$PG_DIR" && as_postgres "$INITDB" -D "$PG_DIR/data" -U postgres --auth=trust -E UTF8 --no-locale >"$PG_DIR/initdb.log" 2>&1) ||
    { cat "$PG_DIR/initdb.log" >&2; echo "error: initdb failed (above)" >&2; exit 1; }
  (cd "$PG_DIR" && as_postgres "$PG_CTL" -D "$PG_DIR/data" -o "-p $PG_PORT -k '$PG_DIR' -c listen_addresses=127.0.0.1" \
    -l "$PG_DIR/postgres.log" -w start >/dev/null) ||
    { cat "$PG_DIR/postgres.log" >&2; echo "error: the throwaway Postgres did not start (its log is above)" >&2; exit 1; }
  THROWAWAY_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
  if [ -n "${KEEP_RUNNING:-}" ]; then ENDS="left running at the end: KEEP_RUNNING is set"; else ENDS="stopped at the end"; fi
  echo "no Postgres answers at $PG_URL; started a throwaway one at $THROWAWAY_URL ($ENDS), data in $PG_DIR/data"
  PG_URL=$THROWAWAY_URL
fi

if [ -n "${KALLA_QUICKSTART_BIN_DIR:-}" ]; then
  BIN=$(absolute "$KALLA_QUICKSTART_BIN_DIR")
  step "using the Kalla binaries in $BIN"
else
  step "build (debug)"
  # All targets, so the binaries share one feature set (and one build) with the tests.
  cargo build --workspace --all-targets --locked -q
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
fi
export PATH=$BIN:$PATH

step "reconcile the demo tables on an embedded cluster"
run kalla demo --postgres "$PG_URL"

step "start an embedded runner on 127.0.0.1:$PORT (data dir $DATA_DIR)"
mkdir -p "$DATA_DIR"
kalla-runner --bind "127.0.0.1:$PORT" --data-dir "$DATA_DIR" >"$DATA_DIR/runner.log" 2>&1 &
RUNNER=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.2; done
curl -fs "http://127.0.0.1:$PORT/ready" || { cat "$DATA_DIR/runner.log"; exit 1; }
echo
export KALLA_API_TOKEN=$(cat "$DATA_DIR/api-token")
RUNNER_URL=http://127.0.0.1:$PORT

step "register sources with the CLI"
DEMO_DB_URL="${PG_URL%/*}/kalla_demo"
kalla sources remove invoices_csv --runner "$RUNNER_URL" >/dev/null 2>&1 || true
kalla sources remove invoices_pg --runner "$RUNNER_URL" >/dev/null 2>&1 || true
run kalla sources add invoices_csv "file://$ROOT/examples/invoices.csv" --runner "$RUNNER_URL"
run kalla sources add invoices_pg "$DEMO_DB_URL?table=public.invoices" --runner "$RUNNER_URL"
run kalla sources list --runner "$RUNNER_URL"

step "preview each with a filter"
run kalla sources preview invoices_csv --where "currency eq USD" --where "amount gte 2500" --limit 5 --runner "$RUNNER_URL"
run kalla sources preview invoices_pg --where "issued_on between 2024-01-10,2024-01-12" --limit 5 --runner "$RUNNER_URL"

step "the same through the HTTP API"
BODY='{"conditions":[{"column":"amount","op":"between","value":[100,101]}],"limit":3}'
echo "\$ curl -H \"Authorization: Bearer \$KALLA_API_TOKEN\" -H 'Content-Type: application/json' -d '$BODY' $RUNNER_URL/api/sources/invoices_pg/load-scoped"
curl -fsS -H "Authorization: Bearer $KALLA_API_TOKEN" -H 'Content-Type: application/json' -d "$BODY" \
  "$RUNNER_URL/api/sources/invoices_pg/load-scoped"
echo

step "a connection: the whole demo database, queried with SQL on the cluster"
api() { curl -fsS -H "Authorization: Bearer $KALLA_API_TOKEN" -H 'Content-Type: application/json' "$@"; }
OLD=$(api "$RUNNER_URL/api/connections" | python3 -c 'import json,sys; print(" ".join(c["id"] for c in json.load(sys.stdin) if c["name"] == "demo"))')
for id in $OLD; do api -X DELETE "$RUNNER_URL/api/connections/$id"; done
BODY="{\"name\":\"demo\",\"source_type\":\"postgres\",\"config\":{\"uri\":\"$DEMO_DB_URL\"}}"
echo "\$ curl … -d '$BODY' $RUNNER_URL/api/connections"
api -d "$BODY" "$RUNNER_URL/api/connections"
echo
BODY='{"sql":"SELECT date_trunc('"'"'month'"'"', i.issued_on) AS month, count(*) AS invoices, sum(i.amount) AS invoiced, sum(p.amount) AS paid FROM demo.public.invoices i JOIN demo.public.payments p ON p.invoice_ref = i.invoice_id GROUP BY 1 ORDER BY 1"}'
echo "\$ curl … -d '$BODY' $RUNNER_URL/api/query"
api -d "$BODY" "$RUNNER_URL/api/query"
echo
step "reconcile invoices with payments: a recipe, a job on the cluster, its results"
kalla sources remove payments_pg --runner "$RUNNER_URL" >/dev/null 2>&1 || true
run kalla sources add payments_pg "$DEMO_DB_URL?table=public.payments" --runner "$RUNNER_URL"
kalla recipes delete invoices-vs-payments --runner "$RUNNER_URL" >/dev/null 2>&1 || true
run kalla recipes create -f examples/recipes/invoices-vs-payments.json --runner "$RUNNER_URL"
run kalla run invoices-vs-payments --wait --runner "$RUNNER_URL"
JOB=$(api "$RUNNER_URL/api/jobs?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
run kalla jobs results "$JOB" mismatched --limit 5 --runner "$RUNNER_URL"
run kalla jobs results "$JOB" left_only --format csv -o "$DATA_DIR/left_only.csv" --runner "$RUNNER_URL"

if [ -n "${KEEP_RUNNING:-}" ]; then
  trap - EXIT
  echo
  echo "runner left running (pid $RUNNER) at $RUNNER_URL; token in $DATA_DIR/api-token; stop it with: kill $RUNNER"
  echo "web console: $RUNNER_URL/console/ (sign in with that token)"
  if [ -n "$PG_DIR" ]; then
    echo "throwaway Postgres left running at $PG_URL; stop it and remove its files with:"
    echo "  ${AS_POSTGRES}$PG_CTL -D '$PG_DIR/data' -m fast stop && rm -rf '$PG_DIR'"
  fi
fi
