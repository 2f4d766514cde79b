#!/usr/bin/env bash
# The plans a recon job's pass could be built from, run as plain queries (`POST /api/query`)
# through the same cluster over the same parquet files as bench/recon.sh, each reduced to one row
# so that nothing is written: a scan, the grouping by key with and without the compared values
# (the plan before the pairing operator), and a full outer join doing the same pairing.
#
#   bench/recon-parts.sh     # RUNS=3; needs Postgres at $KALLA_BENCH_PG_URL and ../shared/data
source "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}
source "$ROOT/bench/recon_setup.sh"

BOTH="(SELECT invoice_id AS k, amount AS la, issued_on AS li, CAST(NULL AS DECIMAL(12,2)) AS ra,
         CAST(NULL AS DATE) AS rp, 1 AS lc, 0 AS rc FROM invoices
       UNION ALL SELECT invoice_ref, NULL, NULL, amount, paid_on, 0, 1 FROM payments) AS u"
declare -A PARTS=(
  [scan]="SELECT count(*), max(invoice_id), max(amount), max(issued_on) FROM invoices"
  [group_keys]="SELECT count(*) FROM (SELECT k FROM $BOTH GROUP BY k) g"
  [group_counts]="SELECT count(*), sum(lc), sum(rc) FROM (SELECT k, sum(lc) lc, sum(rc) rc FROM $BOTH GROUP BY k) g"
  [group_values]="SELECT count(*), sum(lc), sum(rc), max(la), max(li), max(ra), max(rp) FROM
     (SELECT k, sum(lc) lc, sum(rc) rc, max(la) la, max(li) li, max(ra) ra, max(rp) rp FROM $BOTH GROUP BY k) g"
  [full_join]="SELECT count(*), max(i.amount), max(p.amount), max(i.issued_on), max(p.paid_on)
     FROM invoices i FULL OUTER JOIN payments p ON i.invoice_id = p.invoice_ref"
)
ORDER="scan group_keys group_counts group_values full_join"
query() {
  local body; body=$(python3 -c 'import json,sys; print(json.dumps({"sql": sys.argv[1]}))' "${PARTS[$1]}")
  api -d "$body" "$URL/api/query" | field '["rows"]' >"$WORK/part-$1.txt"
}

step "warm-up: one run of each"
for part in $ORDER; do query "$part"; echo "$part: $(cat "$WORK/part-$part.txt")" >&2; done
step "$RUNS timed runs, interleaved"
for run in $(seq "$RUNS"); do
  for part in $ORDER; do time_it "$part" query "$part"; done
done

step "results"
OUT=$ROOT/bench/results/recon-parts-$(date -u +%Y-%m-%d).md
{
  python3 - "$WORK/times" "$ORDER" <<'PY'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    name, secs = line.split(); times.setdefault(name, []).append(float(secs))
print("# Parts of the reconciliation plan as plain queries\n")
print("The invoices/payments parquet files of `bench/recon.sh`, queried through `POST /api/query` on a")
print("2-executor cluster (2 vcores each); each query returns one row. Medians of %d interleaved runs" % len(times["scan"]))
print("after one warm-up; wall time of the HTTP call.\n")
print("| part | median s | runs (s) |")
print("|---|---|---|")
for name in sys.argv[2].split():
    print("| %s | %.2f | %s |" % (name, statistics.median(times[name]), ", ".join("%.2f" % t for t in times[name])))
PY
  echo
  machine_lines
  echo "- command: \`bench/recon-parts.sh\` (RUNS=$RUNS)"
} | tee "$OUT"
