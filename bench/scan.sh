#!/usr/bin/env bash
# Scan benchmark: a 10M-row lineitem read through a 2-executor Kalla cluster, side by side
# with binary COPY (1 connection, 2 parallel ctid ranges), DuckDB's postgres scanner and
# ConnectorX, in the same run. Medians of RUNS runs go to bench/results/.
#
#   bench/scan.sh            # needs Postgres at $KALLA_BENCH_PG_URL and ../shared/data
source "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}
load_lineitem
BLOCKS=$(psql "$DB_URL" -XtAc "SELECT pg_relation_size('lineitem') / current_setting('block_size')::int")
HALF=$((BLOCKS / 2))

python_anchors
start_cluster


copy_1() { psql "$DB_URL" -Xqc "COPY lineitem TO STDOUT (FORMAT binary)" >/dev/null; }
copy_2() {
  psql "$DB_URL" -Xqc "COPY (SELECT * FROM lineitem WHERE ctid < '($HALF,0)'::tid) TO STDOUT (FORMAT binary)" >/dev/null &
  psql "$DB_URL" -Xqc "COPY (SELECT * FROM lineitem WHERE ctid >= '($HALF,0)'::tid) TO STDOUT (FORMAT binary)" >/dev/null
  wait %%
}
kalla_cluster() { kalla_scan; }
duckdb_scanner() {
  "$PY" - "$DB_URL" <<'PY'
import sys, duckdb, duckdb_extension_postgres_scanner as ext, os, glob
con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
path = glob.glob(os.path.join(os.path.dirname(ext.__file__), "**", "postgres_scanner.duckdb_extension"), recursive=True)[0]
con.execute(f"LOAD '{path}'")
con.execute(f"ATTACH '{sys.argv[1]}' AS pg (TYPE postgres, READ_ONLY)")
table = con.execute("SELECT * FROM pg.public.lineitem").fetch_arrow_table()
assert table.num_rows == 10_000_000, table.num_rows
PY
}
connectorx_2() {
  "$PY" - "$DB_URL" <<'PY'
import sys, connectorx as cx
table = cx.read_sql(sys.argv[1], "SELECT * FROM lineitem", return_type="arrow", partition_on="l_orderkey", partition_num=2)
assert table.num_rows == 10_000_000, table.num_rows
PY
}

ANCHORS=(copy_1 copy_2 kalla_cluster duckdb_scanner connectorx_2)
step "warm-up (one untimed pass each)"
for a in "${ANCHORS[@]}"; do $a; done
head -c 300 "$WORK/kalla.out" >&2; echo >&2
step "$RUNS timed runs, interleaved"
for run in $(seq "$RUNS"); do
  for a in "${ANCHORS[@]}"; do
    start=$(date +%s.%N); $a; end=$(date +%s.%N)
    echo "$a $(echo "$end - $start" | bc)" | tee -a "$WORK/times" >&2
  done
done

step "results"
OUT=$ROOT/bench/results/scan-$(date -u +%Y-%m-%d).md
"$PY" - "$WORK/times" "$OUT" <<'PY'
import statistics, sys, platform, subprocess, duckdb, connectorx
times = {}
for line in open(sys.argv[1]):
    name, secs = line.split(); times.setdefault(name, []).append(float(secs))
med = {k: statistics.median(v) for k, v in times.items()}
labels = {
    "copy_1": "psql binary COPY to /dev/null, 1 connection",
    "copy_2": "psql binary COPY to /dev/null, 2 parallel ctid ranges (physical limit)",
    "kalla_cluster": "Kalla: 2-executor cluster, every column decoded to Arrow and aggregated",
    "duckdb_scanner": "DuckDB 1.5.5 postgres scanner, whole table to Arrow",
    "connectorx_2": "ConnectorX %s, Arrow, 2 partitions on l_orderkey" % connectorx.__version__,
}
def sh(cmd):
    return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
rows = ["| system | median s | runs (s) | rows/s | vs parallel COPY throughput |", "|---|---|---|---|---|"]
for k in ["copy_1", "copy_2", "kalla_cluster", "duckdb_scanner", "connectorx_2"]:
    rows.append("| %s | %.2f | %s | %.2fM | %.0f%% |" % (labels[k], med[k], ", ".join("%.2f" % t for t in times[k]), 10 / med[k], 100 * med["copy_2"] / med[k]))
text = "\n".join([
    "# Scan benchmark, %s" % sh("date -u +%Y-%m-%dT%H:%MZ"),
    "",
    "10,000,000-row TPC-H-shaped lineitem (1.47 GB heap), warm cache, median of %d interleaved runs after one warm-up." % len(times["copy_1"]),
    "",
    *rows,
    "",
    "- machine: %s, %s cores, %s RAM, %s" % (cpu, sh("nproc"), sh("free -h | awk '/Mem:/{print $2}'"), platform.platform()),
    "- versions: %s; kalla %s (release); %s; duckdb %s; connectorx %s" % (
        sh("psql --version"), sh("git rev-parse --short HEAD"), sh("rustc --version"), duckdb.__version__, connectorx.__version__),
    "- command: `bench/scan.sh` (RUNS=%d)" % len(times["copy_1"]),
])
open(sys.argv[2], "w").write(text + "\n")
print(text)
PY
