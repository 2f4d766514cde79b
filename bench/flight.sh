#!/usr/bin/env bash
# Flight SQL benchmark: a 10M-row job output (the TPC-H-shaped lineitem, read through the cluster
# by a query job and written as parquet) read into pyarrow three ways, interleaved: through the
# runner's Flight SQL endpoint with ADBC, through the API's parquet download, and by DuckDB reading
# the output's parquet files directly (the anchor: no Kalla in between). The runner's resident
# memory is sampled during each transfer. Medians of RUNS runs go to bench/results/.
#
#   bench/flight.sh      # RUNS=3; KALLA_BENCH_PG_URL picks the server; needs ../shared/data
source "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}

load_lineitem
python_anchors
"$PY" -m pip install -q adbc-driver-flightsql==1.13.0 adbc-driver-manager==1.13.0
start_cluster
FLIGHT_PORT=$(free_port)
start_runner --flight-bind "127.0.0.1:$FLIGHT_PORT"
RUNNER_PID=$(pgrep -f -- "--bind 127.0.0.1:$PORT " | head -1)
api -d "{\"alias\":\"lineitem\",\"uri\":\"$DB_URL?table=public.lineitem\"}" "$URL/api/sources" >/dev/null

step "query job: SELECT * FROM lineitem, written as parquet"
JOB=$(run_job '{"type":"query","sql":"SELECT * FROM lineitem"}' | field '["id"]')
OUTPUT_DIR=$WORK/store/results/$JOB/result
echo "job $JOB: $(find "$OUTPUT_DIR" -name '*.parquet' | wc -l) files, $(du -sh "$OUTPUT_DIR" | cut -f1)" >&2

# Each reader loads the whole output into one pyarrow table and checks its row count.
flight_adbc() {
  "$PY" - "grpc://127.0.0.1:$FLIGHT_PORT" "$TOKEN" "$JOB" <<'PY'
import sys, adbc_driver_flightsql.dbapi as dbapi
url, token, job = sys.argv[1:4]
with dbapi.connect(url, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"}) as conn:
    with conn.cursor() as cursor:
        cursor.execute(f"SELECT * FROM results.{job}.result")
        table = cursor.fetch_arrow_table()
assert table.num_rows == 10_000_000, table.num_rows
PY
}
parquet_download() {
  curl -fsS -H "Authorization: Bearer $TOKEN" "$URL/api/jobs/$JOB/results/result?format=parquet" -o "$WORK/download.parquet"
  "$PY" - "$WORK/download.parquet" <<'PY'
import sys, pyarrow.parquet as pq
table = pq.read_table(sys.argv[1])
assert table.num_rows == 10_000_000, table.num_rows
PY
}
duckdb_parquet() {
  "$PY" - "$OUTPUT_DIR" <<'PY'
import sys, duckdb
table = duckdb.sql(f"SELECT * FROM read_parquet('{sys.argv[1]}/*.parquet')").fetch_arrow_table()
assert table.num_rows == 10_000_000, table.num_rows
PY
}

# Runs "$@" as `time_it` does while sampling the runner's RSS every 0.1 s; appends
# "NAME IDLE_KIB PEAK_KIB" to $WORK/rss.
with_rss() {
  local name=$1 idle peak rss
  shift
  idle=$(ps -o rss= -p "$RUNNER_PID" | tr -d ' ')
  time_it "$name" "$@" &
  local timed=$!
  peak=$idle
  while kill -0 "$timed" 2>/dev/null; do
    rss=$(ps -o rss= -p "$RUNNER_PID" | tr -d ' ')
    [ "$rss" -gt "$peak" ] && peak=$rss
    sleep 0.1
  done
  wait "$timed"
  echo "$name $idle $peak" >>"$WORK/rss"
}

ANCHORS=(flight_adbc parquet_download duckdb_parquet)
step "warm-up (one untimed pass each)"
for a in "${ANCHORS[@]}"; do $a; done
step "$RUNS timed runs, interleaved"
for run in $(seq "$RUNS"); do
  for a in "${ANCHORS[@]}"; do with_rss "$a" "$a"; done
done

step "results"
OUT=$ROOT/bench/results/flight-$(date -u +%Y-%m-%d).md
{
  echo "# Flight SQL benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "A query job's output (\`SELECT * FROM lineitem\`: 10,000,000 rows, 16 columns, $(du -sh "$OUTPUT_DIR" | cut -f1) of parquet"
  echo "on a \`file://\` store, written by two executors) read whole into a pyarrow table, median of $RUNS interleaved runs after"
  echo "one warm-up. The runner's RSS was sampled every 0.1 s during each read."
  echo
  python3 - "$WORK/times" "$WORK/rss" <<'PY'
import statistics, sys
times, rss = {}, {}
for line in open(sys.argv[1]):
    name, secs = line.split(); times.setdefault(name, []).append(float(secs))
for line in open(sys.argv[2]):
    name, idle, peak = line.split(); rss.setdefault(name, []).append((int(idle), int(peak)))
labels = {
    "flight_adbc": "Flight SQL: ADBC `SELECT * FROM results.<job>.result` → `fetch_arrow_table()`",
    "parquet_download": "`GET …/results/result?format=parquet` to a file, then `pyarrow.parquet.read_table`",
    "duckdb_parquet": "DuckDB 1.5.5 `read_parquet` of the output's files → Arrow (anchor)",
}
anchor = statistics.median(times["duckdb_parquet"])
print("| read | median s (runs) | × DuckDB | rows/s | runner RSS before → highest MiB |")
print("|---|---|---|---|---|")
for name, label in labels.items():
    ts = times[name]; med = statistics.median(ts)
    idle = rss[name][0][0] / 1024; peak = max(p for _, p in rss[name]) / 1024
    print("| %s | %.2f (%s) | %.2f | %.1f M | %.0f → %.0f |" % (
        label, med, ", ".join("%.2f" % t for t in ts), med / anchor, 10 / med, idle, peak))
PY
  echo
  echo "Target: Flight SQL within 1.5× of DuckDB's read; the runner's memory flat during the transfer."
  echo
  machine_lines
  echo "- clients: $("$PY" -c 'import adbc_driver_flightsql, pyarrow, duckdb; print("adbc-driver-flightsql", adbc_driver_flightsql.__version__, "· pyarrow", pyarrow.__version__, "· duckdb", duckdb.__version__)')"
  echo "- command: \`bench/flight.sh\`"
} >"$OUT"
cat "$OUT"
