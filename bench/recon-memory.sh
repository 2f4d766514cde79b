#!/usr/bin/env bash
# Reconciliations larger than the executors' memory: the 1:1 recipe of bench/recon.sh, read live
# from Postgres at 5M × 5M, 20M × 20M and 50M × 50M, on a 2-executor cluster whose executors each
# have a POOL memory pool and on one whose pools are unbounded, both up side by side and run
# interleaved. Every run's counts are checked against the generator's truth; each executor's peak
# resident memory is read per job (its high-water mark is reset before each). Medians of RUNS runs
# go to bench/results/.
#
#   bench/recon-memory.sh    # RUNS=3 SIZES="5 20 50" (millions of rows a side) POOL=1GB
#
# The tables come from bench/recon_scale.sql (once per size; 50M needs ~20 GB of disk and ~20 min).
source "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}
read -ra SIZES <<<"${SIZES:-5 20 50}"
POOL=${POOL:-1GB}
declare -A POOLS=([bounded]=$POOL [unbounded]=0)
MODES=(bounded unbounded)

# Loads invoices_<n>m and payments_<n>m with their truth (once per size).
load_scaled_tables() {
  local n=$1
  table_is_current "payments_${n}m" kalla-bench:payments-scale:v1 && return
  step "data: invoices_${n}m and payments_${n}m (bench/recon_scale.sql)"
  psql "$DB_URL" -X -q -v ON_ERROR_STOP=1 -v rows="${n}000000" -v suffix="${n}m" \
    -f "${KALLA_BENCH_DATA:-$ROOT/../shared/data}/00_helpers.sql" -f bench/recon_scale.sql
}
for n in "${SIZES[@]}"; do load_scaled_tables "$n"; done

declare -A CLUSTER RECIPE EXECUTORS
for mode in "${MODES[@]}"; do
  start_cluster --memory-pool-size "${POOLS[$mode]}"
  EXECUTORS[$mode]=$(pgrep -f "kalla-executor .*--scheduler-port $SPORT " | tr '\n' ' ')
  start_runner
  CLUSTER[$mode]="$SPORT|$CLIENT_FLAGS|$URL|$TOKEN"
  for n in "${SIZES[@]}"; do
    for table in invoices payments; do
      api -d "{\"alias\":\"${table}_${n}m\",\"uri\":\"$DB_URL?table=public.${table}_${n}m\"}" "$URL/api/sources" >/dev/null
    done
    RECIPE[$mode$n]=$(api -d "{\"name\":\"recon-${n}m\",\"left\":{\"source\":\"invoices_${n}m\",\"key\":[\"invoice_id\"]},
      \"right\":{\"source\":\"payments_${n}m\",\"key\":[\"invoice_ref\"]},
      \"rules\":[{\"kind\":\"numeric\",\"left\":\"amount\",\"right\":\"amount\",\"abs_tol\":0.01},
                 {\"kind\":\"date_window\",\"left\":\"issued_on\",\"right\":\"paid_on\",\"min_days\":0,\"max_days\":30}]}" \
      "$URL/api/recipes" | field '["id"]')
  done
done

use() { IFS='|' read -r SPORT CLIENT_FLAGS URL TOKEN <<<"${CLUSTER[$1]}"; }

# Runs the recipe of size $2 on the cluster of mode $1, checks its counts against the truth and
# appends "MODE SIZE RSS_KIB_EXECUTOR1 RSS_KIB_EXECUTOR2 SPILLED_BYTES TASKS LARGEST_TASK_ROWS
# SHUFFLE_PARTITIONS" to $WORK/memory; the job alone is timed (as MODE_SIZE).
recon() {
  local mode=$1 n=$2 pid peaks=() partitions
  use "$mode"
  # Writing 5 to clear_refs resets a process's peak resident set size (VmHWM) to its current one.
  for pid in ${EXECUTORS[$mode]}; do echo 5 >"/proc/$pid/clear_refs"; done
  time_it "${mode}_$n" run_job "{\"type\":\"recon\",\"recipe_id\":\"${RECIPE[$mode$n]}\"}" >"$WORK/recon-$mode-$n.json"
  for pid in ${EXECUTORS[$mode]}; do peaks+=("$(awk '/^VmHWM/{print $2}' "/proc/$pid/status")"); done
  python3 - "$WORK/recon-$mode-$n.json" "$(psql "$DB_URL" -XqtAc \
    "SELECT row_to_json(t) FROM (SELECT matched, mismatched, left_only, right_only FROM recon_scale_truth WHERE suffix = '${n}m') t")" <<'PY' || exit 1
import json, sys
outputs = json.load(open(sys.argv[1]))["summary"]["outputs"]
truth = json.loads(sys.argv[2])
wrong = {k: (outputs.get(k), v) for k, v in truth.items() if outputs.get(k) != v}
if wrong or outputs.get("duplicates", 0):
    sys.exit("counts (kalla, truth) differ from the truth: %s; duplicates %s" % (wrong, outputs.get("duplicates")))
PY
  partitions=$(grep "a reconciliation's shuffle is sized" "$WORK/scheduler-$SPORT.log" | tail -1 | sed 's/.*partitions=//')
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["summary"]["skew"]; print(*sys.argv[2:-1], s["spilled_bytes"], s["tasks"], s["largest_task_rows"], sys.argv[-1])' \
    "$WORK/recon-$mode-$n.json" "$mode" "$n" "${peaks[@]}" "$partitions" >>"$WORK/memory"
}

step "warm-up: the smallest size on each cluster"
for mode in "${MODES[@]}"; do recon "$mode" "${SIZES[0]}"; done
: >"$WORK/memory" && : >"$WORK/times"

step "$RUNS timed runs, interleaved"
for run in $(seq "$RUNS"); do
  for n in "${SIZES[@]}"; do
    for mode in "${MODES[@]}"; do recon "$mode" "$n"; done
  done
done

step "results"
OUT=$ROOT/bench/results/recon-memory-$(date -u +%Y-%m-%d).md
{
  echo "# Reconciliations larger than the executors' memory, $RUNS interleaved runs after one warm-up"
  echo
  python3 - "$WORK/times" "$WORK/memory" "$POOL" "${SIZES[@]}" <<'PY'
import statistics, sys
from collections import defaultdict
times, memory, pool, sizes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
runs = defaultdict(list)
for line in open(times):
    name, secs = line.split(); runs[name].append(float(secs))
peaks, spills, tasks, largest, partitions = defaultdict(list), defaultdict(list), {}, {}, {}
for line in open(memory):
    mode, n, rss1, rss2, spilled, task_count, largest_rows, shuffle = line.split()
    peaks[mode, n] += [int(rss1) / 1024, int(rss2) / 1024]
    spills[mode, n].append(int(spilled) / 2**20)
    tasks[mode, n], largest[mode, n], partitions[mode, n] = int(task_count), int(largest_rows), shuffle
per_row = lambda mode, n: statistics.median(runs["%s_%s" % (mode, n)]) / (int(n) * 2e6) * 1e9
print("| size (rows a side) | executors' pool | median s (runs) | ns per input row | vs %sM | peak RSS per executor, MiB (max of runs) | spilled MiB (median) | shuffle partitions | pairing tasks | largest task's rows |" % sizes[0])
print("|---|---|---|---|---|---|---|---|---|---|")
for n in sizes:
    for mode in ("bounded", "unbounded"):
        t = runs["%s_%s" % (mode, n)]
        print("| %sM | %s | %.2f (%s) | %.0f | %.2f× | %.0f | %.0f | %s | %d | %s |" % (
            n, pool if mode == "bounded" else "unbounded", statistics.median(t), ", ".join("%.2f" % x for x in t),
            per_row(mode, n), per_row(mode, n) / per_row(mode, sizes[0]), max(peaks[mode, n]),
            statistics.median(spills[mode, n]), partitions[mode, n], tasks[mode, n], format(largest[mode, n], ",")))
PY
  echo
  echo "- the recipe of \`bench/recon.sh\` (key \`invoice_id = invoice_ref\`, amount within 0.01, payment 0..30 days"
  echo "  after the invoice), read live from Postgres, all five outputs written; tables from \`bench/recon_scale.sql\`"
  echo "- every run's counts equal the generator's truth (\`recon_scale_truth\`), e.g. at ${SIZES[-1]}M: $(field '["summary"]["outputs"]' <"$WORK/recon-bounded-${SIZES[-1]}.json")"
  echo "- two clusters side by side, each a scheduler, two executors of 2 vcores each and a runner (default"
  echo "  \`--pair-partition-mib\`); one with \`--memory-pool-size $POOL\` per executor, one with \`0\` (unbounded)"
  echo "- peak RSS: each executor's VmHWM after the job, reset before it (\`/proc/PID/clear_refs\`)"
  machine_lines
  echo "- command: \`bench/recon-memory.sh\` (RUNS=$RUNS SIZES=\"${SIZES[*]}\" POOL=$POOL)"
} | tee "$OUT"
