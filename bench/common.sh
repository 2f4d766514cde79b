# Shared set-up of the benchmark scripts (sourced): paths, the bench database, a scratch dir,
# a release build, and small helpers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SERVER_URL=${KALLA_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=kalla_bench
DB_URL="${SERVER_URL%/*}/$DB"
# The one host the cluster may reach (`--allowed-hosts` of the runner and the executors): the bench
# database's, loopback included, which a cluster otherwise refuses.
PG_HOST=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlparse(sys.argv[1]).hostname)' "$SERVER_URL")
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

step() { printf '\n== %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Whether table $1 in the bench database carries the version comment $2 (else it must be (re)loaded).
table_is_current() {
  [ "$(psql "$DB_URL" -XqtAc "SELECT obj_description('$1'::regclass)" 2>/dev/null)" = "$2" ]
}

# The build the images ship (deploy/build-release.sh; the benches run its binaries before they are
# stripped). CI runs it too, so its kept target dir
# serves both: `CARGO_TARGET_DIR=~/.cache/kalla-ci/release-target bench/….sh`).
step "release build (deploy/build-release.sh)"
deploy/build-release.sh >/dev/null

# The load generators of bench/src/bin, built into the same target dir.
build_load_generators() {
  step "release build: load generators"
  cargo build --release --locked -q -p kalla-bench --bins
}

psql "$SERVER_URL" -Xqtc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1 \
  || psql "$SERVER_URL" -Xqc "CREATE DATABASE $DB"

# Creates table $1 in the bench database with the SQL on stdin, marks it with the version comment
# $2 and analyzes it, unless it already carries that comment.
ensure_table() {
  table_is_current "$1" "$2" && return
  psql "$DB_URL" -X -v ON_ERROR_STOP=1 -q
  psql "$DB_URL" -Xqc "COMMENT ON TABLE $1 IS '$2'"
  psql "$DB_URL" -Xqc "VACUUM ANALYZE $1"
}

# Loads the 10M-row TPC-H-shaped lineitem from ../shared/data (once) into the bench database.
load_lineitem() {
  local data_dir=${KALLA_BENCH_DATA:-$ROOT/../shared/data}
  step "data: lineitem (10M rows) in database $DB"
  table_is_current lineitem kalla-bench:lineitem:v1 && return
  [ -f "$data_dir/10_lineitem.sql" ] || { echo "generators not found in $data_dir (set KALLA_BENCH_DATA)" >&2; exit 1; }
  psql "$DB_URL" -X -v ON_ERROR_STOP=1 -q -f "$data_dir/00_helpers.sql" -f "$data_dir/10_lineitem.sql"
}

# Loads the 5M invoices × 5M payments pair of ../shared/data/20_recon.sql (once).
load_recon_tables() {
  step "data: invoices (5M) and payments (5M) in database $DB"
  table_is_current payments kalla-bench:payments:v1 && return
  local data_dir=${KALLA_BENCH_DATA:-$ROOT/../shared/data}
  psql "$DB_URL" -X -v ON_ERROR_STOP=1 -q -f "$data_dir/00_helpers.sql" -f "$data_dir/20_recon.sql"
}

# Starts a release kalla-runner on the cluster start_cluster started, results in $WORK/store; sets
# PORT, TOKEN and URL and the helpers `api` (an authenticated call), `field` (a JSON field of
# stdin) and `run_job`. It may reach the bench database's host and files under $WORK only. Extra
# runner flags: the arguments, and KALLA_BENCH_RUNNER_ARGS (`--shuffle-compression none`).
start_runner() {
  step "runner (release) on the cluster, results in $WORK/store"
  PORT=$(free_port)
  mkdir -p "$WORK/store"
  # The secrets key is the runner's alone: set for its command only, never exported to executors.
  # shellcheck disable=SC2086 # the TLS flags are words
  KALLA_SECRET_KEY=$(openssl rand -base64 32) "$BIN/kalla-runner" --bind "127.0.0.1:$PORT" --data-dir "$WORK/runner-$PORT" --scheduler "df://127.0.0.1:$SPORT" \
    $CLIENT_FLAGS --cache-dir "file://$WORK/store/" --allowed-hosts "$PG_HOST" --file-roots "$WORK" "$@" ${KALLA_BENCH_RUNNER_ARGS:-} >"$WORK/runner-$PORT.log" 2>&1 &
  for _ in $(seq 150); do curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.2; done
  TOKEN=$(cat "$WORK/runner-$PORT/api-token")
  URL=http://127.0.0.1:$PORT
}
# A GET of the scheduler's REST API at path $1: over the cluster plane's mutual TLS, as the runner.
scheduler_api() {
  # shellcheck disable=SC2086 # the TLS flags are words
  curl -fsS $SCHEDULER_CURL_FLAGS "$SCHEDULER_API$1"
}
api() { curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
field() { python3 -c 'import json,sys; v=json.load(sys.stdin); print(eval("v"+sys.argv[1]))' "$1"; }
# Submits a job and waits for it; prints the finished job. Polls every 20 ms and reads the status
# in bash, not by starting Python for each look, so the wait ends within ~30 ms of the job.
run_job() {
  local id job status_pattern='^\{"id":"[^"]*","type":"[a-z]*","status":"([a-z]*)"'
  id=$(api -d "$1" "$URL/api/jobs" | field '["id"]')
  while :; do
    job=$(api "$URL/api/jobs/$id")
    [[ $job =~ $status_pattern ]] || { echo "unexpected job JSON: $job" >&2; exit 1; }
    case ${BASH_REMATCH[1]} in
      succeeded) printf '%s\n' "$job"; return ;;
      failed|cancelled) printf '%s\n' "$job" >&2; exit 1 ;;
    esac
    sleep 0.02
  done
}

# The Python anchors (DuckDB with its postgres scanner, ConnectorX) in bench/.venv; sets PY.
python_anchors() {
  step "python anchors: duckdb 1.5.5 + postgres scanner, connectorx"
  local venv=$ROOT/bench/.venv
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q duckdb==1.5.5 duckdb-extension-postgres-scanner==1.5.5 connectorx pyarrow
  PY=$venv/bin/python
}

# Starts kalla-scheduler and two kalla-executors (2 vcores each) with a fresh cluster key; sets
# SPORT, KALLA_CLUSTER_KEY and CLIENT_FLAGS (what the runner and `kalla query` need to reach it), and
# SCHEDULER_API with SCHEDULER_CURL_FLAGS (the scheduler's REST API, as curl reaches it: see
# `scheduler_api`).
# The cluster plane is mutual TLS with a throwaway CA unless CLUSTER_TLS=off. Extra arguments go
# to each executor.
start_cluster() {
  local mode=${CLUSTER_TLS:-on} tls=$WORK/tls-$RANDOM scheduler_tls executor_tls
  step "cluster: kalla-scheduler + 2 kalla-executors (release), mutual TLS $mode"
  export KALLA_CLUSTER_KEY=${KALLA_CLUSTER_KEY:-$(openssl rand -base64 32)}
  SPORT=$(free_port)
  local hport=$(free_port)
  if [ "$mode" = on ]; then
    mkdir -p "$tls" && deploy/k8s/overlays/dev/cluster-tls/generate.sh "$tls" >/dev/null
    scheduler_tls="--tls-cert $tls/scheduler.crt --tls-key $tls/scheduler.key --tls-ca $tls/ca.crt"
    executor_tls="--tls-cert $tls/executor.crt --tls-key $tls/executor.key --tls-ca $tls/ca.crt"
    CLIENT_FLAGS="--cluster-tls-cert $tls/runner.crt --cluster-tls-key $tls/runner.key --cluster-tls-ca $tls/ca.crt"
    SCHEDULER_API=https://127.0.0.1:$SPORT
    SCHEDULER_CURL_FLAGS="--cacert $tls/ca.crt --cert $tls/runner.crt --key $tls/runner.key"
  else
    scheduler_tls=--plaintext executor_tls=--plaintext CLIENT_FLAGS=--cluster-plaintext
    SCHEDULER_API=http://127.0.0.1:$SPORT SCHEDULER_CURL_FLAGS=
  fi
  # shellcheck disable=SC2086 # the TLS flags are words
  "$BIN/kalla-scheduler" --bind-host 127.0.0.1 --external-host 127.0.0.1 --bind-port "$SPORT" \
    --bind-health-port "$hport" --min-ready-executors 2 --data-locations "file://$WORK/" $scheduler_tls \
    --task-distribution round-robin >"$WORK/scheduler-$SPORT.log" 2>&1 &
  for i in 1 2; do
    # shellcheck disable=SC2086
    "$BIN/kalla-executor" --bind-host 127.0.0.1 --external-host 127.0.0.1 --scheduler-port "$SPORT" \
      --bind-port "$(free_port)" --bind-grpc-port "$(free_port)" --bind-health-port "$(free_port)" \
      --data-locations "file://$WORK/" --allowed-hosts "$PG_HOST" $executor_tls \
      --vcores 2 --work-dir "$WORK" "$@" >"$WORK/executor-$SPORT-$i.log" 2>&1 &
  done
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$hport/readyz" >/dev/null && return
    sleep 0.2
  done
  echo "executors did not register; see $WORK/*.log" >&2
  exit 1
}

# Prints a Markdown table of medians comparing two modes of the timed steps in $WORK/times:
#   median_table A B "header of A" "header of B" STEP="what the step is"...
# one row per STEP (from its runs STEP_A and STEP_B), with what A costs over B.
median_table() {
  python3 - "$WORK/times" "$@" <<'PY'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    name, secs = line.split(); times.setdefault(name, []).append(float(secs))
a, b, header_a, header_b = sys.argv[2:6]
runs = lambda ts: "%.2f (%s)" % (statistics.median(ts), ", ".join("%.2f" % t for t in ts))
print("| what | %s median s (runs) | %s median s (runs) | cost |" % (header_a, header_b))
print("|---|---|---|---|")
for step, label in (arg.split("=", 1) for arg in sys.argv[6:]):
    ta, tb = times[step + "_" + a], times[step + "_" + b]
    print("| %s | %s | %s | %+.1f%% |" % (label, runs(ta), runs(tb), 100 * (statistics.median(ta) / statistics.median(tb) - 1)))
PY
}

# Writes the machine and versions lines every result file ends with.
machine_lines() {
  echo "- machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores, $(free -h | awk '/Mem:/{print $2}') RAM, $(uname -srm)"
  echo "- versions: $(psql --version); kalla $(git rev-parse --short HEAD) (release); $(rustc --version)"
}

# An aggregate over every lineitem column, so that every value is decoded.
EVERY_COLUMN="SELECT count(*), sum(l_orderkey), sum(l_partkey), sum(l_suppkey), sum(l_linenumber),
  sum(l_quantity), sum(l_extendedprice), sum(l_discount), sum(l_tax), max(l_returnflag), max(l_linestatus),
  max(l_shipdate), max(l_commitdate), max(l_receiptdate), max(l_shipinstruct), max(l_shipmode), max(l_comment)
  FROM lineitem"

# The distributed scan of the live lineitem through the cluster started by start_cluster.
kalla_scan() {
  # shellcheck disable=SC2086 # the TLS flags are words
  "$BIN/kalla" query --scheduler "df://127.0.0.1:$SPORT" $CLIENT_FLAGS --table "lineitem=$DB_URL?table=public.lineitem" \
    --format csv "$EVERY_COLUMN" >"$WORK/kalla.out"
}

# Runs "$@", appending "NAME SECONDS" to $WORK/times.
time_it() {
  local name=$1; shift
  start=$(date +%s.%N); "$@"; end=$(date +%s.%N)
  echo "$name $(echo "$end - $start" | bc)" | tee -a "$WORK/times" >&2
}
