# Set-up shared by the reconciliation benchmarks (sourced after common.sh): the invoices/payments
# pair in the bench database, a cluster and a release runner on it (see start_runner), and both
# tables as parquet sources `invoices` and `payments` written by Kalla query jobs.

load_recon_tables
start_cluster
start_runner

step "parquet copies of both tables, written by Kalla query jobs"
for table in invoices payments; do
  api -d "{\"alias\":\"pg_$table\",\"uri\":\"$DB_URL?table=public.$table\"}" "$URL/api/sources" >/dev/null
  job=$(run_job "{\"type\":\"query\",\"sql\":\"SELECT * FROM pg_$table\"}" | field '["id"]')
  mv "$WORK/store/results/$job/result" "$WORK/$table"
  api -d "{\"alias\":\"$table\",\"uri\":\"file://$WORK/$table/\",\"source_type\":\"parquet\"}" "$URL/api/sources" >/dev/null
done
du -sh "$WORK/invoices" "$WORK/payments" >&2
