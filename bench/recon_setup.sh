# Set-up shared by the reconciliation benchmarks (sourced after common.sh): the invoices/payments
# pair in the bench database, a cluster and a release runner on it with results in $WORK/store,
# both tables as parquet sources `invoices` and `payments` written by Kalla query jobs, and the
# helpers `api` (an authenticated call), `field` (a JSON field of stdin) and `run_job`.
# KALLA_BENCH_RUNNER_ARGS: extra flags for the runner (e.g. `--shuffle-compression none`).

step "data: invoices (5M) and payments (5M) in database $DB"
if ! table_is_current payments kalla-bench:payments:v1; then
  data_dir=${KALLA_BENCH_DATA:-$ROOT/../shared/data}
  psql "$DB_URL" -X -v ON_ERROR_STOP=1 -q -f "$data_dir/00_helpers.sql" -f "$data_dir/20_recon.sql"
fi

start_cluster

step "runner (release) on the cluster, results in $WORK/store"
PORT=$(free_port)
mkdir -p "$WORK/store"
"$BIN/kalla-runner" --bind "127.0.0.1:$PORT" --data-dir "$WORK/runner" --scheduler "df://127.0.0.1:$SPORT" \
  --cache-dir "file://$WORK/store/" ${KALLA_BENCH_RUNNER_ARGS:-} >"$WORK/runner.log" 2>&1 &
for _ in $(seq 150); do curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.2; done
TOKEN=$(cat "$WORK/runner/api-token")
URL=http://127.0.0.1:$PORT
api() { curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
field() { python3 -c 'import json,sys; v=json.load(sys.stdin); print(eval("v"+sys.argv[1]))' "$1"; }
# Submits a job and waits for it; prints the finished job. Polls every 20 ms and reads the status
# in bash, not by starting Python for each look, so the wait ends within ~30 ms of the job.
run_job() {
  local id job status_pattern='^\{"id":"[^"]*","type":"[a-z]*","status":"([a-z]*)"'
  id=$(api -d "$1" "$URL/api/jobs" | field '["id"]')
  while :; do
    job=$(api "$URL/api/jobs/$id")
    [[ $job =~ $status_pattern ]] || { echo "unexpected job JSON: $job" >&2; exit 1; }
    case ${BASH_REMATCH[1]} in
      succeeded) printf '%s\n' "$job"; return ;;
      failed|cancelled) printf '%s\n' "$job" >&2; exit 1 ;;
    esac
    sleep 0.02
  done
}

step "parquet copies of both tables, written by Kalla query jobs"
for table in invoices payments; do
  api -d "{\"alias\":\"pg_$table\",\"uri\":\"$DB_URL?table=public.$table\"}" "$URL/api/sources" >/dev/null
  job=$(run_job "{\"type\":\"query\",\"sql\":\"SELECT * FROM pg_$table\"}" | field '["id"]')
  mv "$WORK/store/results/$job/result" "$WORK/$table"
  api -d "{\"alias\":\"$table\",\"uri\":\"file://$WORK/$table/\",\"source_type\":\"parquet\"}" "$URL/api/sources" >/dev/null
done
du -sh "$WORK/invoices" "$WORK/payments" >&2
