#!/usr/bin/env bash
# Load-scoped preview benchmark: p50/p99 latency and throughput at 1, 16 and 64 concurrent clients
# against a 10M-row Postgres table with an indexed filter column, served (a) by kalla-runner through
# its bounded source pool and (b) the older engine's way, a fresh pool per request, in the same run.
#
#   bench/preview.sh     # RUNS=3 SECONDS_PER_RUN=10 CLIENTS="1 16 64"; KALLA_BENCH_PG_URL picks the server
source "$(dirname "$0")/common.sh"
build_load_generators
RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-"1 16 64"}
CAP=${POOL_CAP:-4}

step "data: events (10M rows, index on account_id) in database $DB"
ensure_table events kalla-bench:events:v1 <<'SQL'
DROP TABLE IF EXISTS events;
CREATE TABLE events AS
SELECT i::int8 AS id, (i % 100000)::int8 AS account_id, ((i * 37) % 100000 / 100.0)::numeric(12,2) AS amount,
       DATE '2024-01-01' + (i % 365) AS day, md5(i::text) AS reference
FROM generate_series(1, 10000000) AS i;
ALTER TABLE events ADD PRIMARY KEY (id);
CREATE INDEX events_account_id ON events (account_id);
SQL

step "runner (release, embedded, source pool cap $CAP)"
PORT=$(free_port)
"$BIN/kalla-runner" --bind "127.0.0.1:$PORT" --data-dir "$WORK/data" \
  --source-pool-max-connections "$CAP" >"$WORK/runner.log" 2>&1 &
for _ in $(seq 150); do curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.2; done
export KALLA_API_TOKEN=$(cat "$WORK/data/api-token")
curl -fsS -H "Authorization: Bearer $KALLA_API_TOKEN" -H 'Content-Type: application/json' \
  -d "{\"alias\":\"events\",\"uri\":\"$DB_URL?table=public.events\"}" "http://127.0.0.1:$PORT/api/sources" >/dev/null

load() {
  "$BIN/preview-load" --mode "$1" --clients "$2" --seconds "$SECONDS_PER_RUN" \
    --runner "http://127.0.0.1:$PORT" --source-url "$DB_URL" --application-name "$3"
}
step "warm-up"
load runner 4 3 kalla-runner >/dev/null
step "$RUNS runs of ${SECONDS_PER_RUN}s per mode and client count, interleaved"
for clients in $CLIENTS; do
  for run in $(seq "$RUNS"); do
    load runner "$clients" kalla-runner | tee -a "$WORK/results.jsonl" >&2
    load fresh-pool "$clients" kalla-bench-fresh-pool | tee -a "$WORK/results.jsonl" >&2
  done
done

step "results"
OUT=$ROOT/bench/results/preview-$(date -u +%Y-%m-%d).md
python3 - "$WORK/results.jsonl" "$OUT" "$CAP" "$RUNS" "$SECONDS_PER_RUN" <<'PY'
import json, statistics, subprocess, sys, platform
runs = [json.loads(line) for line in open(sys.argv[1])]
cap, n_runs, secs = int(sys.argv[3]), sys.argv[4], sys.argv[5]
def sh(cmd): return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
rows = ["| clients | server | p50 ms | p99 ms | requests/s | errors | most source connections |", "|---|---|---|---|---|---|---|"]
for clients in sorted({r["clients"] for r in runs}):
    for mode, label in [("Runner", "kalla-runner, pooled (cap %d)" % cap), ("FreshPool", "fresh pool per request (older engine)")]:
        rs = [r for r in runs if r["clients"] == clients and r["mode"] == mode]
        if not rs: continue
        med = lambda k: statistics.median(r[k] for r in rs)
        rows.append("| %d | %s | %.2f | %.2f | %.0f | %d | %d |" % (clients, label, med("p50_ms"), med("p99_ms"), med("throughput_rps"), sum(r["errors"] for r in rs), max(r["max_source_connections"] for r in rs)))
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
text = "\n".join([
    "# Load-scoped preview benchmark, %s" % sh("date -u +%Y-%m-%dT%H:%MZ"),
    "",
    "10,000,000-row `events` table, `account_id = <random of 100,000>` (100 matching rows each, b-tree index), limit 200, exact count. Medians of %s runs of %s s per cell, interleaved; the fresh-pool rows answer in-process without HTTP, which only flatters them." % (n_runs, secs),
    "",
    *rows,
    "",
    "- machine: %s, %s cores, %s RAM, %s" % (cpu, sh("nproc"), sh("free -h | awk '/Mem:/{print $2}'"), platform.platform()),
    "- versions: %s; kalla %s (release); %s" % (sh("psql --version"), sh("git rev-parse --short HEAD"), sh("rustc --version")),
    "- command: `bench/preview.sh`",
])
open(sys.argv[2], "w").write(text + "\n")
print(text)
PY
