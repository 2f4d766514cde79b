#!/usr/bin/env bash
# What mutual TLS on the cluster plane costs: the scan benchmark (10M-row lineitem through a
# 2-executor cluster, `kalla query`) and a reconciliation read live from Postgres (5M invoices ×
# 5M payments, through a runner), each on a cluster with mutual TLS and on one with --plaintext,
# both started side by side and run interleaved. Medians of RUNS runs go to bench/results/.
#
#   bench/mtls.sh            # RUNS=3
source "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}
MODES=(on off)

load_lineitem
load_recon_tables
declare -A CLUSTER RECIPE
for mode in "${MODES[@]}"; do
  CLUSTER_TLS=$mode start_cluster
  start_runner
  CLUSTER[$mode]="$SPORT|$CLIENT_FLAGS|$URL|$TOKEN"
  for table in invoices payments; do
    api -d "{\"alias\":\"$table\",\"uri\":\"$DB_URL?table=public.$table\"}" "$URL/api/sources" >/dev/null
  done
  RECIPE[$mode]=$(api -d "{\"name\":\"live\",\"left\":{\"source\":\"invoices\",\"key\":[\"invoice_id\"]},
    \"right\":{\"source\":\"payments\",\"key\":[\"invoice_ref\"]},
    \"rules\":[{\"kind\":\"numeric\",\"left\":\"amount\",\"right\":\"amount\",\"abs_tol\":0.01},
               {\"kind\":\"date_window\",\"left\":\"issued_on\",\"right\":\"paid_on\",\"min_days\":0,\"max_days\":30}]}" \
    "$URL/api/recipes" | field '["id"]')
done

# Points the helpers (kalla_scan, api, run_job) at the cluster and runner of one mode.
use() { IFS='|' read -r SPORT CLIENT_FLAGS URL TOKEN <<<"${CLUSTER[$1]}"; }
scan() { use "$1"; kalla_scan && mv "$WORK/kalla.out" "$WORK/scan-$1.out"; }
recon() { use "$1"; run_job "{\"type\":\"recon\",\"recipe_id\":\"${RECIPE[$1]}\"}" >"$WORK/recon-$1.json"; }

step "warm-up (one untimed pass each)"
for mode in "${MODES[@]}"; do scan "$mode"; recon "$mode"; done
cmp "$WORK/scan-on.out" "$WORK/scan-off.out" || { echo "the scans' answers differ" >&2; exit 1; }
for mode in "${MODES[@]}"; do field '["summary"]["outputs"]' <"$WORK/recon-$mode.json"; done | uniq | wc -l | grep -qx 1 \
  || { echo "the reconciliations' counts differ" >&2; exit 1; }

step "$RUNS timed runs, interleaved"
for run in $(seq "$RUNS"); do
  for mode in "${MODES[@]}"; do
    time_it "scan_$mode" scan "$mode"
    time_it "recon_$mode" recon "$mode"
  done
done

step "results"
OUT=$ROOT/bench/results/mtls-$(date -u +%Y-%m-%d).md
{
  echo "# Mutual TLS on the cluster plane, $RUNS interleaved runs after one warm-up"
  echo
  median_table on off "mutual TLS" "\`--plaintext\`" \
    "scan=Kalla scan: 10M-row lineitem, every column decoded and aggregated, 2-executor cluster (\`kalla query\`)" \
    "recon=Kalla reconciliation read live from Postgres: 5M invoices × 5M payments, all outputs written (runner job)"
  echo
  echo "- both clusters ran side by side (a scheduler, two executors of 2 vcores each and a runner per mode),"
  echo "  pull-staged scheduling in both; the source connections are plaintext in both (\`bench/tls.sh\` measures those)"
  echo "- both modes gave the same scan answer and the same reconciliation counts: $(field '["summary"]["outputs"]' <"$WORK/recon-on.json")"
  echo "- with TLS every byte of the cluster plane crosses the TLS front of the scheduler or an executor:"
  echo "  task status, shuffle reads between executors and result fetches"
  machine_lines
  echo "- command: \`bench/mtls.sh\` (RUNS=$RUNS)"
} | tee "$OUT"
