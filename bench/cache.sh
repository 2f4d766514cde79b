#!/usr/bin/env bash
# Cache benchmark: refreshing the 10M-row lineitem into the parquet cache through a 2-executor
# cluster (vs the distributed scan alone), then TPC-H-style queries (Q1, Q6, a join) over the cached
# parquet through the cluster, side by side with DuckDB reading the same files, in the same run.
#
#   bench/cache.sh           # RUNS=3; needs Postgres at $KALLA_BENCH_PG_URL and ../shared/data
source "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}
load_lineitem
python_anchors
start_cluster

start_runner --cache-grace-period-secs 3600
CONN=$(api -d "{\"name\":\"bench\",\"source_type\":\"postgres\",\"config\":{\"uri\":\"$DB_URL\"}}" \
  "http://127.0.0.1:$PORT/api/connections" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

Q1="SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, sum(l_extendedprice) AS sum_base_price,
  sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price, sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
  avg(l_quantity) AS avg_qty, avg(l_extendedprice) AS avg_price, avg(l_discount) AS avg_disc, count(*) AS count_order
  FROM lineitem WHERE l_shipdate <= DATE '1998-09-02' GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus"
Q6="SELECT sum(l_extendedprice * l_discount) AS revenue FROM lineitem
  WHERE l_shipdate >= DATE '1994-01-01' AND l_shipdate < DATE '1995-01-01' AND l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24"
JOIN="SELECT l.l_shipmode, count(*) AS last_lines, sum(l.l_extendedprice) AS revenue
  FROM lineitem l JOIN (SELECT l_orderkey, max(l_linenumber) AS last FROM lineitem GROUP BY l_orderkey) o
    ON l.l_orderkey = o.l_orderkey AND l.l_linenumber = o.last
  GROUP BY l.l_shipmode ORDER BY l.l_shipmode"

refresh() {
  api -X POST "http://127.0.0.1:$PORT/api/connections/$CONN/tables/public/lineitem/refresh" >"$WORK/refresh.json"
}
kalla_query() {
  local sql=${1//lineitem/bench.public.lineitem}
  python3 -c 'import json,sys; print(json.dumps({"sql": sys.argv[1]}))' "$sql" >"$WORK/query.json"
  api -d @"$WORK/query.json" "http://127.0.0.1:$PORT/api/query" >"$WORK/kalla-$2.json"
}
duckdb_query() {
  local files; files=$(python3 -c 'import json; print(json.load(open("'"$WORK/refresh.json"'"))["version"])')
  "$PY" - "$WORK/store/cache/$CONN/public/lineitem/$files" "$1" "$WORK/duckdb-$2.json" <<'PY'
import duckdb, json, sys
con = duckdb.connect(config={"threads": 2})
con.execute(f"CREATE VIEW lineitem AS SELECT * FROM read_parquet('{sys.argv[1]}/*.parquet')")
rows = con.execute(sys.argv[2]).fetchall()
json.dump([[str(v) for v in row] for row in rows], open(sys.argv[3], "w"))
PY
}

step "warm-up: one scan, one refresh, one run of each query"
kalla_scan; refresh; cat "$WORK/refresh.json" >&2; echo >&2
for q in Q1 Q6 JOIN; do kalla_query "${!q}" "$q"; duckdb_query "${!q}" "$q"; done
head -c 600 "$WORK/kalla-Q1.json" >&2; echo >&2; cat "$WORK/duckdb-Q1.json" >&2; echo >&2

step "$RUNS timed runs, interleaved"
for run in $(seq "$RUNS"); do
  time_it scan kalla_scan
  time_it refresh refresh
  for q in Q1 Q6 JOIN; do
    time_it "kalla_$q" kalla_query "${!q}" "$q"
    time_it "duckdb_$q" duckdb_query "${!q}" "$q"
  done
done

step "results"
OUT=$ROOT/bench/results/cache-$(date -u +%Y-%m-%d).md
{
  "$PY" - "$WORK/times" "$WORK/refresh.json" <<'PY'
import json, statistics, sys
times = {}
for line in open(sys.argv[1]):
    name, secs = line.split(); times.setdefault(name, []).append(float(secs))
med = {k: statistics.median(v) for k, v in times.items()}
runs = lambda k: ", ".join("%.2f" % t for t in times[k])
refresh = json.load(open(sys.argv[2]))
print("# Cache benchmark\n")
print("10,000,000-row lineitem. Refresh: `POST …/tables/public/lineitem/refresh` through a release runner on a")
print("2-executor cluster (%d parquet files, %.0f MB, Snappy); scan: `kalla query` aggregating every column of the" % (refresh["files"], refresh["bytes"] / 1e6))
print("live table on the same cluster. Queries: `POST /api/query` over the cached parquet on the cluster, and DuckDB")
print("(2 threads) over the same files. Medians of %d interleaved runs after one warm-up.\n" % len(times["scan"]))
print("| step | median s | runs (s) | ratio |")
print("|---|---|---|---|")
print("| distributed scan (foundation) | %.2f | %s | 1.00 |" % (med["scan"], runs("scan")))
print("| cache refresh (scan + parquet write on the executors) | %.2f | %s | %.2f× the scan (target ≤ 1.5×) |" % (med["refresh"], runs("refresh"), med["refresh"] / med["scan"]))
print("\n| query | Kalla median s | DuckDB median s | Kalla / DuckDB |")
print("|---|---|---|---|")
for q in ["Q1", "Q6", "JOIN"]:
    k, d = med["kalla_" + q], med["duckdb_" + q]
    print("| %s | %.2f (%s) | %.2f (%s) | %.2f× |" % (q, k, runs("kalla_" + q), d, runs("duckdb_" + q), k / d))
PY
  echo
  machine_lines
  echo "- duckdb $("$PY" -c 'import duckdb; print(duckdb.__version__)'); command: \`bench/cache.sh\` (RUNS=$RUNS)"
} | tee "$OUT"
