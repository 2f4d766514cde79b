#!/usr/bin/env bash
# Waterfall benchmark: 5M invoices and about 6.8M payments (bench/recon_passes.py: a fifth of the
# invoices paid in parts, 2% of payments without a reference) as parquet, reconciled on a
# 2-executor cluster by a recipe of three passes (reference one to one, reference one to many by
# the sum, customer and amount with the nearest date within 3 days), every output written; side by
# side in the same run with DuckDB doing the same passes in SQL over the same files and writing the
# same outputs, which must equal Kalla's row for row. Kalla's one-to-one job on bench/recon.sh's
# 5M × 5M set runs in the same loop, as the yardstick of the target (at most twice its time).
#
#   bench/recon-passes.sh      # RUNS=3; needs Postgres at $KALLA_BENCH_PG_URL and ../shared/data
source "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}

step "python anchor: duckdb"
VENV=$ROOT/bench/.venv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q duckdb==1.5.5
PY=$VENV/bin/python
source "$ROOT/bench/recon_setup.sh"

step "data: the waterfall's invoices and payments as parquet (bench/recon_passes.py)"
DATA=$WORK/waterfall
mkdir -p "$DATA"
"$PY" bench/recon_passes.py generate "$DATA" >"$WORK/generated.json"
cat "$WORK/generated.json" >&2
du -sh "$DATA"/* >&2
for table in invoices payments; do
  api -d "{\"alias\":\"${table}_wf\",\"uri\":\"file://$DATA/$table/\",\"source_type\":\"parquet\"}" "$URL/api/sources" >/dev/null
done

ONE_TO_ONE='{"name":"bench","left":{"source":"invoices","key":["invoice_id"]},"right":{"source":"payments","key":["invoice_ref"]},
 "rules":[{"kind":"numeric","left":"amount","right":"amount","abs_tol":0.01},
          {"kind":"date_window","left":"issued_on","right":"paid_on","min_days":0,"max_days":30}]}'
WATERFALL='{"name":"bench-waterfall","left":{"source":"invoices_wf"},"right":{"source":"payments_wf","carry":["payment_id"]},"passes":[
 {"name":"reference","left_key":["invoice_id"],"right_key":["invoice_ref"],
  "rules":[{"kind":"numeric","left":"amount","right":"amount","abs_tol":0.01},
           {"kind":"date_window","left":"issued_on","right":"paid_on","min_days":0,"max_days":30}]},
 {"name":"split","left_key":["invoice_id"],"right_key":["invoice_ref"],"cardinality":"one_to_many","max_group_size":10,
  "rules":[{"kind":"numeric","left":"amount","right":"amount","aggregate":"sum","abs_tol":0.01}]},
 {"name":"customer_amount","left_key":["customer_id","amount"],"right_key":["customer_id","amount"],
  "nearest":[{"left":"issued_on","right":"paid_on","within":3}],"rules":[]}]}'
ONE_TO_ONE_ID=$(api -d "$ONE_TO_ONE" "$URL/api/recipes" | field '["id"]')
WATERFALL_ID=$(api -d "$WATERFALL" "$URL/api/recipes" | field '["id"]')

kalla_one_to_one() {
  run_job "{\"type\":\"recon\",\"recipe_id\":\"$ONE_TO_ONE_ID\"}" >"$WORK/one-to-one-job.json"
}
kalla_waterfall() {
  run_job "{\"type\":\"recon\",\"recipe_id\":\"$WATERFALL_ID\"}" >"$WORK/waterfall-job.json"
}
duckdb_waterfall() {
  rm -rf "$WORK/duckdb-out"
  "$PY" bench/recon_passes.py duckdb "$DATA" "$WORK/duckdb-out" >"$WORK/duckdb.json"
}
# The runs' own timings (outside the timed section): Kalla's job as the runner records it, DuckDB's
# from after Python's start and imports.
inner_timings() {
  python3 - "$WORK" >>"$WORK/inner" <<'PY'
import json, sys
work = sys.argv[1]
for name in ("one-to-one", "waterfall"):
    print("kalla_%s" % name.replace("-", "_"), json.load(open("%s/%s-job.json" % (work, name)))["summary"]["duration_ms"] / 1000)
print("duckdb_waterfall", json.load(open(work + "/duckdb.json"))["seconds"])
PY
}

step "warm-up: one run of each"
kalla_one_to_one
kalla_waterfall; cat "$WORK/waterfall-job.json" >&2; echo >&2
duckdb_waterfall; cat "$WORK/duckdb.json" >&2

step "$RUNS timed runs, interleaved"
: >"$WORK/inner"
for run in $(seq "$RUNS"); do
  time_it kalla_one_to_one kalla_one_to_one
  time_it kalla_waterfall kalla_waterfall
  time_it duckdb_waterfall duckdb_waterfall
  inner_timings
done

step "the last runs' outputs, Kalla's against DuckDB's, row for row"
JOB=$(field '["id"]' <"$WORK/waterfall-job.json")
"$PY" bench/recon_passes.py compare "$WORK/store/results/$JOB" "$WORK/duckdb-out" >"$WORK/compared.json"

step "results"
OUT=$ROOT/bench/results/recon-passes-$(date -u +%Y-%m-%d).md
{
  python3 - "$WORK" <<'PY'
import json, statistics, sys
work = sys.argv[1]
def timings(path):
    t = {}
    for line in open(path):
        name, secs = line.split(); t.setdefault(name, []).append(float(secs))
    return t
times, inner = timings(work + "/times"), timings(work + "/inner")
med = lambda t, k: statistics.median(t[k])
runs = lambda t, k: ", ".join("%.2f" % x for x in t[k])
generated = json.load(open(work + "/generated.json"))
job = json.load(open(work + "/waterfall-job.json"))
print("# Waterfall reconciliation benchmark\n")
print("%s invoices × %s payments (%s without a reference), generated as parquet by `bench/recon_passes.py`," %
      tuple(format(generated[k], ",") for k in ("invoices", "payments", "payments_without_reference")))
print("reconciled by three passes: `reference` (one to one on the invoice reference, amount within 0.01, paid")
print("0..30 days after issue), `split` (the same key, one invoice to many payments, their sum within 0.01, at")
print("most 10 rows a group) and `customer_amount` (customer and amount equal, the nearest payment date within")
print("3 days). Kalla: a recon job through a release runner on a 2-executor cluster (2 vcores each), wall time")
print("from `POST /api/jobs` until the job reads succeeded, all seven outputs written as parquet. DuckDB: the")
print("same passes in SQL over the same files (2 threads), writing the same outputs as parquet, from the start")
print("of its Python process. Medians of %d interleaved runs after one warm-up.\n" % len(times["kalla_waterfall"]))
print("| system | median s | runs (s) | vs Kalla's waterfall |")
print("|---|---|---|---|")
k = med(times, "kalla_waterfall")
for key, label in [("kalla_waterfall", "Kalla, three passes"), ("duckdb_waterfall", "DuckDB SQL, three passes"),
                   ("kalla_one_to_one", "Kalla, one to one on bench/recon.sh's 5M × 5M")]:
    print("| %s | %.2f | %s | %.2f× |" % (label, med(times, key), runs(times, key), med(times, key) / k))
print("\nTargets: Kalla's waterfall at most DuckDB's time (%.2f×) and at most twice Kalla's own one-to-one job"
      % (k / med(times, "duckdb_waterfall")))
print("(%.2f×)." % (k / med(times, "kalla_one_to_one")))
print("\nThe same runs timed inside each system (medians): Kalla's waterfall job %.2f s and one-to-one job %.2f s as"
      % (med(inner, "kalla_waterfall"), med(inner, "kalla_one_to_one")))
print("the runner records them (from the job's start to its outputs published); DuckDB %.2f s after Python's"
      % med(inner, "duckdb_waterfall"))
print("start and imports. Timings of the last waterfall job: `%s`.\n" % json.dumps(job["summary"]["timings_ms"]))
print("Rows per pass and output (last Kalla run):\n")
print("| pass | %s | passed on (left, right) |" % " | ".join(json.load(open(work + "/compared.json"))))
print("|---|%s---|" % ("---|" * 7))
for p in job["summary"]["passes"]:
    on = p.get("passed_on") or {}
    print("| %s | %s | %s |" % (p["pass"], " | ".join(format(p["outputs"].get(o, 0), ",") for o in json.load(open(work + "/compared.json"))),
                                 "%s, %s" % (format(on["left"], ","), format(on["right"], ",")) if on else "—"))
compared = json.load(open(work + "/compared.json"))
print("\nKalla's outputs against DuckDB's, every column as text, as multisets (`EXCEPT ALL` both ways):\n")
print("| output | rows | only in Kalla's | only in DuckDB's |")
print("|---|---|---|---|")
for output, c in compared.items():
    print("| %s | %s | %d | %d |" % (output, format(c["rows"], ","), c["only_kalla"], c["only_duckdb"]))
PY
  echo
  machine_lines
  echo "- the waterfall's shuffles: $(grep "a reconciliation's shuffle is sized" "$WORK"/scheduler-*.log | tail -3 | sed 's/.*shuffle is sized *//' | paste -sd ';')"
  echo "- duckdb $("$PY" -c 'import duckdb; print(duckdb.__version__)'); command: \`bench/recon-passes.sh\` (RUNS=$RUNS)"
} | tee "$OUT"
