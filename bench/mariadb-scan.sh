#!/usr/bin/env bash
# MariaDB scan benchmark: the 10M-row lineitem (copied from the Postgres bench table into
# MariaDB) read through a 2-executor Kalla cluster in 4 key ranges, side by side with ConnectorX
# (the same 4 ranges of l_orderkey) and `mariadb --quick` dumping to /dev/null on one connection
# and on 2 key ranges in parallel (the physical limit), in the same run. Medians of RUNS runs go
# to bench/results/.
#
#   bench/mariadb-scan.sh     # needs Postgres at $KALLA_BENCH_PG_URL, MariaDB at
#                             # $KALLA_BENCH_MARIADB_URL (mysql://root@127.0.0.1:3306) and ../shared/data
source "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}
MARIA_URL=${KALLA_BENCH_MARIADB_URL:-mysql://root@127.0.0.1:3306}
read -r MARIA_HOST MARIA_PORT MARIA_USER < <(python3 -c 'import sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
print(u.hostname, u.port or 3306, u.username or "root")' "$MARIA_URL")
maria() { mariadb --protocol=tcp -h "$MARIA_HOST" -P "$MARIA_PORT" -u "$MARIA_USER" "$@"; }
MARIA_TABLE="$MARIA_URL/$DB?table=lineitem"
VERSION=kalla-bench:lineitem:v1

load_lineitem
step "data: lineitem (10M rows) copied into MariaDB database $DB"
maria -e "CREATE DATABASE IF NOT EXISTS $DB"
if [ "$(maria -N -e "SELECT TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = '$DB' AND TABLE_NAME = 'lineitem'")" != "$VERSION" ]; then
  maria "$DB" -e "DROP TABLE IF EXISTS lineitem;
    CREATE TABLE lineitem (
      l_orderkey BIGINT NOT NULL, l_partkey BIGINT NOT NULL, l_suppkey BIGINT NOT NULL,
      l_linenumber INT NOT NULL, l_quantity DECIMAL(15,2) NOT NULL, l_extendedprice DECIMAL(15,2) NOT NULL,
      l_discount DECIMAL(15,2) NOT NULL, l_tax DECIMAL(15,2) NOT NULL, l_returnflag CHAR(1) NOT NULL,
      l_linestatus CHAR(1) NOT NULL, l_shipdate DATE NOT NULL, l_commitdate DATE NOT NULL,
      l_receiptdate DATE NOT NULL, l_shipinstruct VARCHAR(25) NOT NULL, l_shipmode VARCHAR(10) NOT NULL,
      l_comment VARCHAR(44) NOT NULL, PRIMARY KEY (l_orderkey, l_linenumber)
    ) ENGINE=InnoDB"
  psql "$DB_URL" -Xqc "COPY (SELECT * FROM lineitem ORDER BY l_orderkey, l_linenumber) TO STDOUT (FORMAT csv)" |
    maria --local-infile=1 "$DB" -e "LOAD DATA LOCAL INFILE '/dev/stdin' INTO TABLE lineitem
      FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"'"
  maria "$DB" -e "ANALYZE TABLE lineitem; ALTER TABLE lineitem COMMENT = '$VERSION'" >/dev/null
fi
read -r MIN_KEY MAX_KEY < <(maria -N "$DB" -e "SELECT MIN(l_orderkey), MAX(l_orderkey) FROM lineitem")
MID_KEY=$(( (MIN_KEY + MAX_KEY) / 2 ))

python_anchors
PG_HOST=$MARIA_HOST start_cluster

quick() { maria --quick "$DB" -e "SELECT * FROM lineitem $1" >/dev/null; }
quick_1() { quick ""; }
quick_2() {
  quick "WHERE l_orderkey < $MID_KEY" &
  quick "WHERE l_orderkey >= $MID_KEY"
  wait %%
}
kalla_cluster() {
  # shellcheck disable=SC2086 # the TLS flags are words
  "$BIN/kalla" query --scheduler "df://127.0.0.1:$SPORT" $CLIENT_FLAGS --partitions 4 \
    --table "lineitem=$MARIA_TABLE" --format csv "$EVERY_COLUMN" >"$WORK/kalla.out"
}
connectorx_4() {
  "$PY" - "$MARIA_URL/$DB" <<'PY'
import sys, connectorx as cx
table = cx.read_sql(sys.argv[1], "SELECT * FROM lineitem", return_type="arrow", partition_on="l_orderkey", partition_num=4)
assert table.num_rows == 10_000_000, table.num_rows
PY
}

ANCHORS=(quick_1 quick_2 kalla_cluster connectorx_4)
step "warm-up (one untimed pass each)"
for a in "${ANCHORS[@]}"; do $a; done
cat "$WORK/kalla.out" >&2
step "$RUNS timed runs, interleaved"
for run in $(seq "$RUNS"); do
  for a in "${ANCHORS[@]}"; do time_it "$a" "$a"; done
done

step "results"
OUT=$ROOT/bench/results/mariadb-scan-$(date -u +%Y-%m-%d).md
{
  echo "# MariaDB scan benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "10,000,000-row TPC-H-shaped lineitem in MariaDB (InnoDB, primary key (l_orderkey, l_linenumber)),"
  echo "the server's own settings (innodb_buffer_pool_size $(maria -N -e 'SELECT @@innodb_buffer_pool_size DIV 1048576') MiB: the table is read through the OS page cache),"
  echo "median of $RUNS interleaved runs after one warm-up."
  echo
  python3 - "$WORK/times" "$("$PY" -c 'import connectorx; print(connectorx.__version__)')" <<'PY'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    name, secs = line.split(); times.setdefault(name, []).append(float(secs))
med = {k: statistics.median(v) for k, v in times.items()}
labels = {
    "quick_1": "`mariadb --quick` to /dev/null, 1 connection",
    "quick_2": "`mariadb --quick` to /dev/null, 2 parallel key ranges (physical limit)",
    "kalla_cluster": "Kalla: 2-executor cluster, 4 key ranges, every column decoded to Arrow and aggregated",
    "connectorx_4": "ConnectorX %s, Arrow, 4 partitions on l_orderkey" % sys.argv[2],
}
print("| system | median s | runs (s) | rows/s | vs parallel limit throughput |")
print("|---|---|---|---|---|")
for k in ["quick_1", "quick_2", "kalla_cluster", "connectorx_4"]:
    print("| %s | %.2f | %s | %.2fM | %.0f%% |" % (labels[k], med[k], ", ".join("%.2f" % t for t in times[k]),
          10 / med[k], 100 * med["quick_2"] / med[k]))
print()
print("Kalla vs ConnectorX: %.2fx the throughput." % (med["connectorx_4"] / med["kalla_cluster"]))
PY
  echo
  machine_lines
  echo "- MariaDB: $(maria -N -e 'SELECT VERSION()')"
  echo "- command: \`bench/mariadb-scan.sh\` (RUNS=$RUNS)"
} >"$OUT"
cat "$OUT"
