#!/usr/bin/env bash
# What TLS to the source costs: the scan benchmark (10M-row lineitem through a 2-executor cluster)
# and a reconciliation read live from Postgres (5M invoices × 5M payments), each with
# `sslmode=require` and with `sslmode=disable`, side by side with psql's binary COPY over both, in
# one run. Medians of RUNS interleaved runs go to bench/results/.
#
#   bench/tls.sh             # RUNS=3; needs Postgres with ssl=on at $KALLA_BENCH_PG_URL
source "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}
MODES=(require disable)

[ "$(psql "$DB_URL" -XtAc 'SHOW ssl')" = on ] || { echo "the bench server has ssl=off: nothing to compare" >&2; exit 1; }
load_lineitem
load_recon_tables
start_cluster
start_runner

copy_1() { psql "$DB_URL?sslmode=$1" -Xqc "COPY lineitem TO STDOUT (FORMAT binary)" >/dev/null; }
scan() {
  # shellcheck disable=SC2086 # the TLS flags are words
  "$BIN/kalla" query --scheduler "df://127.0.0.1:$SPORT" $CLIENT_FLAGS --table "lineitem=$DB_URL?sslmode=$1&table=public.lineitem" \
    --format csv "$EVERY_COLUMN" >"$WORK/scan-$1.out"
}
declare -A RECIPE
for mode in "${MODES[@]}"; do
  for table in invoices payments; do
    api -d "{\"alias\":\"${table}_$mode\",\"uri\":\"$DB_URL?sslmode=$mode&table=public.$table\"}" "$URL/api/sources" >/dev/null
  done
  RECIPE[$mode]=$(api -d "{\"name\":\"live_$mode\",\"left\":{\"source\":\"invoices_$mode\",\"key\":[\"invoice_id\"]},
    \"right\":{\"source\":\"payments_$mode\",\"key\":[\"invoice_ref\"]},
    \"rules\":[{\"kind\":\"numeric\",\"left\":\"amount\",\"right\":\"amount\",\"abs_tol\":0.01},
               {\"kind\":\"date_window\",\"left\":\"issued_on\",\"right\":\"paid_on\",\"min_days\":0,\"max_days\":30}]}" \
    "$URL/api/recipes" | field '["id"]')
done
recon() { run_job "{\"type\":\"recon\",\"recipe_id\":\"${RECIPE[$1]}\"}" >"$WORK/recon-$1.json"; }

# How the executors' sessions to the bench database are protected, as pg_stat_ssl shows them.
executor_sessions() {
  psql "$DB_URL" -XtAc "SELECT coalesce(string_agg(ssl || ':' || n, ' '), 'none') FROM (
    SELECT s.ssl, count(*) AS n FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
    WHERE a.datname = '$DB' AND a.application_name LIKE 'kalla-executor%' GROUP BY s.ssl) x"
}

step "warm-up (one untimed pass each), checking who is encrypted"
: >"$WORK/sessions"
for mode in "${MODES[@]}"; do
  copy_1 "$mode"; scan "$mode"; recon "$mode"
  echo "$mode $(executor_sessions)" | tee -a "$WORK/sessions" >&2
done
cmp "$WORK/scan-require.out" "$WORK/scan-disable.out" || { echo "the scans' answers differ" >&2; exit 1; }
for mode in "${MODES[@]}"; do field '["summary"]["outputs"]' <"$WORK/recon-$mode.json"; done | uniq | wc -l | grep -qx 1 \
  || { echo "the reconciliations' counts differ" >&2; exit 1; }

step "$RUNS timed runs, interleaved"
for run in $(seq "$RUNS"); do
  for mode in "${MODES[@]}"; do
    time_it "copy_1_$mode" copy_1 "$mode"
    time_it "scan_$mode" scan "$mode"
    time_it "recon_$mode" recon "$mode"
  done
done

step "results"
OUT=$ROOT/bench/results/tls-$(date -u +%Y-%m-%d).md
{
  echo "# TLS to the source, $RUNS interleaved runs after one warm-up"
  echo
  median_table require disable "\`sslmode=require\`" "\`sslmode=disable\`" \
    "copy_1=psql binary COPY of lineitem to /dev/null, 1 connection" \
    "scan=Kalla scan: 10M-row lineitem, every column decoded and aggregated, 2-executor cluster" \
    "recon=Kalla reconciliation read live from Postgres: 5M invoices × 5M payments, all outputs written"
  echo
  echo "- executors' sessions to the bench database after each mode's warm-up (\`pg_stat_ssl.ssl:count\`,"
  echo "  cumulative: pools stay open): $(tr '\n' ';' <"$WORK/sessions")"
  echo "- both modes gave the same scan answer and the same reconciliation counts: $(field '["summary"]["outputs"]' <"$WORK/recon-require.json")"
  echo "- \`require\` encrypts without checking the certificate; \`verify-full\` costs the same per byte"
  echo "  (verification happens once per connection, and connections are pooled)"
  machine_lines
  echo "- server: $(psql "$DB_URL" -XtAc "SELECT 'ssl=' || current_setting('ssl') || ', ' || version()")"
  echo "- command: \`bench/tls.sh\` (RUNS=$RUNS)"
} | tee "$OUT"
