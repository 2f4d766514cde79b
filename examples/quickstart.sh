#!/usr/bin/env bash
# Kalla quickstart: builds Kalla, seeds a small invoices/payments demo in Postgres and reconciles it
# on an embedded cluster, then starts an embedded runner, registers the example CSV and the demo's
# Postgres table, and previews each with a filter through the `kalla` CLI and curl; registers the
# demo database as a connection and queries it with SQL (cached as parquet on first use); finally
# reconciles invoices with payments from a recipe (examples/recipes/) and reads the job's results.
#
#   examples/quickstart.sh            # KALLA_DEMO_PG_URL picks the Postgres server
#   KEEP_RUNNING=1 examples/quickstart.sh   # leave the runner up afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PG_URL=${KALLA_DEMO_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PORT=${KALLA_QUICKSTART_PORT:-8080}
DATA_DIR=$ROOT/.kalla
step() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "build (debug)"
# All targets, so the binaries share one feature set (and one build) with the tests.
cargo build --workspace --all-targets --locked -q
BIN=$ROOT/target/debug
export PATH=$BIN:$PATH

step "reconcile the demo tables on an embedded cluster"
run kalla demo --postgres "$PG_URL"

step "start an embedded runner on 127.0.0.1:$PORT (data dir $DATA_DIR)"
mkdir -p "$DATA_DIR"
kalla-runner --bind "127.0.0.1:$PORT" --data-dir "$DATA_DIR" >"$DATA_DIR/runner.log" 2>&1 &
RUNNER=$!
[ -n "${KEEP_RUNNING:-}" ] || trap 'kill $RUNNER 2>/dev/null; wait $RUNNER 2>/dev/null || true' EXIT
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
  echo "runner left running (pid $RUNNER) at $RUNNER_URL; token in $DATA_DIR/api-token"
fi
