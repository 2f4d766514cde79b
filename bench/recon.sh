#!/usr/bin/env bash
# Reconciliation benchmark: the 5M invoices × 5M payments pair of ../shared/data/20_recon.sql as
# parquet, reconciled on a 2-executor cluster (key + amount tolerance 0.01 + date window 0..30
# days, all five outputs written as parquet), side by side in the same run with DuckDB doing the
# same classification in SQL over the same files (counts only, and writing the outputs as parquet)
# and datacompy (Polars and Pandas) on them.
#
#   bench/recon.sh           # RUNS=3; needs Postgres at $KALLA_BENCH_PG_URL and ../shared/data
#
# KALLA_BENCH_RUNNER_ARGS passes runner flags (e.g. `--pair-partition-mib 1048576`, the shuffle sized
# by the task slots alone as before sizing to the data); KALLA_BENCH_LABEL then names the result file.
source "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}

step "python anchors: duckdb, datacompy (polars, pandas)"
VENV=$ROOT/bench/.venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q duckdb==1.5.5 pyarrow datacompy==1.1.0 polars pandas
PY=$VENV/bin/python
source "$ROOT/bench/recon_setup.sh"

RECIPE='{"name":"bench","left":{"source":"invoices","key":["invoice_id"]},"right":{"source":"payments","key":["invoice_ref"]},
 "rules":[{"kind":"numeric","left":"amount","right":"amount","abs_tol":0.01},
          {"kind":"date_window","left":"issued_on","right":"paid_on","min_days":0,"max_days":30}]}'
RECIPE_ID=$(api -d "$RECIPE" "$URL/api/recipes" | field '["id"]')

kalla_recon() {
  run_job "{\"type\":\"recon\",\"recipe_id\":\"$RECIPE_ID\"}" >"$WORK/kalla-job.json"
}
# The last Kalla run's own timings (outside the timed section).
kalla_job_timings() {
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("kalla_job", j["summary"]["duration_ms"]/1000); print("kalla_classify", j["summary"]["timings_ms"]["classify"]/1000)' \
    "$WORK/kalla-job.json" >>"$WORK/inner"
}
anchor() {
  "$PY" - "$1" "$WORK/invoices" "$WORK/payments" "$WORK/anchor-$1" >"$WORK/anchor-$1.json" <<'PY'
import json, sys, time
mode, invoices, payments, out = sys.argv[1:]
if mode.startswith("duckdb"):
    import duckdb
else:
    import datacompy, polars as pl, pandas as pd
START = time.perf_counter()
def report(counts):
    """Prints the counts and the seconds spent since the imports (the anchor's own time)."""
    print(json.dumps(dict(counts, seconds=round(time.perf_counter() - START, 3))))
CLASSIFY = """
WITH l AS (SELECT * FROM read_parquet('{i}/*.parquet')), r AS (SELECT * FROM read_parquet('{p}/*.parquet')),
j AS (SELECT l.invoice_id, r.invoice_ref, l.amount AS left_amount, r.amount AS right_amount,
             l.issued_on, r.paid_on,
             CASE WHEN r.invoice_ref IS NULL THEN 'left_only' WHEN l.invoice_id IS NULL THEN 'right_only'
                  WHEN abs(r.amount - l.amount) <= 0.01 AND date_diff('day', l.issued_on, r.paid_on) BETWEEN 0 AND 30
                  THEN 'matched' ELSE 'mismatched' END AS outcome
      FROM l FULL OUTER JOIN r ON l.invoice_id = r.invoice_ref)
"""
if mode in ("duckdb_counts", "duckdb_outputs"):
    con = duckdb.connect(config={"threads": 2})
    sql = CLASSIFY.format(i=invoices, p=payments)
    if mode == "duckdb_counts":
        rows = con.execute(sql + "SELECT outcome, count(*) FROM j GROUP BY 1 ORDER BY 1").fetchall()
    else:
        con.execute("CREATE TEMP TABLE j AS " + sql + "SELECT * FROM j")
        import os; os.makedirs(out, exist_ok=True)
        for o in ["matched", "mismatched", "left_only", "right_only"]:
            con.execute(f"COPY (SELECT * FROM j WHERE outcome = '{o}') TO '{out}/{o}.parquet' (FORMAT parquet)")
        rows = con.execute("SELECT outcome, count(*) FROM j GROUP BY 1 ORDER BY 1").fetchall()
    report({k: v for k, v in rows})
else:
    if mode == "datacompy_polars":
        l = pl.read_parquet(invoices + "/*.parquet"); r = pl.read_parquet(payments + "/*.parquet").rename({"invoice_ref": "invoice_id"})
        cmp = datacompy.PolarsCompare(l.select(["invoice_id", "amount"]), r.select(["invoice_id", "amount"]), join_columns="invoice_id", abs_tol=0.01)
    else:
        l = pd.read_parquet(invoices); r = pd.read_parquet(payments).rename(columns={"invoice_ref": "invoice_id"})
        cmp = datacompy.PandasCompare(l[["invoice_id", "amount"]], r[["invoice_id", "amount"]], join_columns="invoice_id", abs_tol=0.01)
    both = cmp.intersect_rows
    mismatched = len(cmp.all_mismatch())
    report({"matched": len(both) - mismatched, "mismatched": mismatched,
                      "left_only": len(cmp.df1_unq_rows), "right_only": len(cmp.df2_unq_rows),
                      "note": "amount only (datacompy has no date window)"})
PY
}

step "warm-up: one run of each"
kalla_recon; cat "$WORK/kalla-job.json" >&2; echo >&2
for a in duckdb_counts duckdb_outputs datacompy_polars datacompy_pandas; do anchor $a; cat "$WORK/anchor-$a.json" >&2; done

step "$RUNS timed runs, interleaved"
: >"$WORK/inner"
for run in $(seq "$RUNS"); do
  time_it kalla kalla_recon
  kalla_job_timings
  for a in duckdb_counts duckdb_outputs datacompy_polars datacompy_pandas; do
    time_it $a anchor $a
    python3 -c 'import json,sys; print(sys.argv[1], json.load(open(sys.argv[2]))["seconds"])' "$a" "$WORK/anchor-$a.json" >>"$WORK/inner"
  done
done

step "where the time goes: the last Kalla run's Ballista jobs, stage by stage"
for b in $(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["ballista_job_ids"]))' "$WORK/kalla-job.json"); do
  scheduler_api "/api/job/$b" >"$WORK/ballista-$b.json"
  scheduler_api "/api/job/$b/stages?plan_format=metrics" >"$WORK/stages-$b.json"
done

step "results"
OUT=$ROOT/bench/results/recon-$(date -u +%Y-%m-%d)${KALLA_BENCH_LABEL:+-$KALLA_BENCH_LABEL}.md
{
  "$PY" - "$WORK/times" "$WORK/inner" "$WORK/kalla-job.json" "$WORK" <<'PY'
import json, statistics, sys
def medians(path):
    t = {}
    for line in open(path):
        name, secs = line.split(); t.setdefault(name, []).append(float(secs))
    return t
times, inner = medians(sys.argv[1]), medians(sys.argv[2])
job = json.load(open(sys.argv[3]))
med = lambda t, k: statistics.median(t[k])
runs = lambda t, k: ", ".join("%.2f" % x for x in t[k])
print("# Reconciliation benchmark\n")
print("5,000,000 invoices × 5,000,103 payments (`../shared/data/20_recon.sql`) as parquet written by Kalla; key")
print("`invoice_id = invoice_ref`, amount within 0.01 (inclusive, decimal), payment 0..30 days after the invoice.")
print("Kalla: a recon job through a release runner on a 2-executor cluster (2 vcores each), wall time from")
print("`POST /api/jobs` until the job reads succeeded, all five outputs written as parquet. Medians of %d" % len(times["kalla"]))
print("interleaved runs after one warm-up.\n")
print("| system | median s | runs (s) | vs Kalla |")
print("|---|---|---|---|")
k = med(times, "kalla")
print("| Kalla (cluster, outputs written) | %.2f | %s | 1.00 |" % (k, runs(times, "kalla")))
for a, label in [("duckdb_counts", "DuckDB SQL, counts only"), ("duckdb_outputs", "DuckDB SQL, outputs written as parquet"),
                 ("datacompy_polars", "datacompy (Polars), amount only"), ("datacompy_pandas", "datacompy (Pandas), amount only")]:
    print("| %s | %.2f | %s | %.2f× |" % (label, med(times, a), runs(times, a), med(times, a) / k))
print("\nThe same runs timed inside each system (medians): Kalla's job from its start (taken off the queue) to")
print("its outputs published, as the runner records it, %.2f s; the anchors from after Python's start and imports to their" % med(inner, "kalla_job"))
print("answer: %s." % ", ".join("%s %.2f s" % (a, med(inner, a)) for a in
      ["duckdb_counts", "duckdb_outputs", "datacompy_polars", "datacompy_pandas"]))
print("\nWhere Kalla's time goes (median of the job's own timings): job %.2f s, of which the classifying pass %.2f s;" %
      (med(inner, "kalla_job"), med(inner, "kalla_classify")))
print("timings of the last run: `%s`.\n" % json.dumps(job["summary"]["timings_ms"]))
print("Its Ballista jobs, stage by stage (from the scheduler's REST API; task times are medians / maxima):\n")
print("| Ballista job | wall s | stage | tasks | input rows | output rows | task s (median / max) | operators |")
print("|---|---|---|---|---|---|---|---|")
plans = []
for b in job["ballista_job_ids"]:
    head = json.load(open("%s/ballista-%s.json" % (sys.argv[4], b)))
    wall = (head["end_time"] - head["start_time"]) / 1000
    for stage in json.load(open("%s/stages-%s.json" % (sys.argv[4], b)))["stages"]:
        tasks = [t for t in stage["tasks"] if t]
        pct = stage.get("task_duration_percentiles") or {}
        plan = stage.get("stage_plan") or ""
        ops = [line.strip().split(":")[0] for line in plan.splitlines() if line.strip()]
        print("| %s | %.2f | %s | %d | %s | %s | %.2f / %.2f | %s |" % (
            b, wall, stage["stage_id"], len(tasks), format(stage["input_rows"], ","), format(stage["output_rows"], ","),
            pct.get("median", 0) / 1000, pct.get("max", 0) / 1000, " → ".join(reversed(ops))))
        plans.append("-- %s stage %s\n%s" % (b, stage["stage_id"], plan.rstrip()))
# Time per operator, summed over its stage's tasks: compute for most operators (for Kalla's sink,
# encoding and writing), the writing time of the shuffle writers, the processing time of the
# parquet scans. Operators share 2 cores, so these are wall times that include waiting for a core.
import re
UNITS = {"ns": 1e-9, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
TIMES = ("time_elapsed_processing", "write_time", "elapsed_compute")
def seconds(text):
    number, unit = re.fullmatch(r"([0-9.]+)(ns|µs|ms|s)", text).groups()
    return float(number) * UNITS[unit]
print("Time per operator, summed over the tasks of its stage (stage metrics of the last run):\n")
print("| stage | operator | metric | s |")
print("|---|---|---|---|")
for b in job["ballista_job_ids"]:
    for stage in json.load(open("%s/stages-%s.json" % (sys.argv[4], b)))["stages"]:
        for line in (stage.get("stage_plan") or "").splitlines():
            name = line.strip().split(":")[0]
            for metric in TIMES:
                found = re.search(r"\b%s=([0-9.]+(?:ns|µs|ms|s))" % metric, line)
                if found:
                    print("| %s | %s | %s | %.2f |" % (stage["stage_id"], name, metric, seconds(found.group(1))))
                    break
print("\n<details><summary>stage plans with metrics</summary>\n\n```\n%s\n```\n</details>\n" % "\n\n".join(plans))
print("Counts (last run):\n")
print("- Kalla: `%s`" % json.dumps(job["summary"]["outputs"]))
for a in ["duckdb_counts", "datacompy_polars", "datacompy_pandas"]:
    print("- %s: `%s`" % (a, open(sys.argv[4] + "/anchor-%s.json" % a).read().strip()))
print("- truth (../shared/data/README.md): matched 4,800,026 (4,599,852 exact + 200,174 within tolerance), mismatched 100,077,")
print("  left only 99,897, right only 100,000")
PY
  echo
  machine_lines
  echo "- the reconciliation's shuffle: $(grep "a reconciliation's shuffle is sized" "$WORK"/scheduler-*.log | tail -1 | sed 's/.*shuffle is sized *//')"
  echo "- duckdb $("$PY" -c 'import duckdb; print(duckdb.__version__)'), datacompy $("$PY" -c 'import datacompy; print(datacompy.__version__)'); command: \`${KALLA_BENCH_RUNNER_ARGS:+KALLA_BENCH_RUNNER_ARGS=\"$KALLA_BENCH_RUNNER_ARGS\" }bench/recon.sh\` (RUNS=$RUNS)"
} | tee "$OUT"
