#!/usr/bin/env bash
# Download benchmark: a query job's ~2 GB output fetched through the API as CSV and as parquet,
# while the runner's resident memory and its temporary and data directories are sampled; the
# anchor, in the same run, is Postgres's own `COPY … TO STDOUT (FORMAT csv)` of the same rows.
#
#   bench/download.sh     # RUNS=3 ROWS=20000000 (a 2.1 GB CSV); KALLA_BENCH_PG_URL picks the server
source "$(dirname "$0")/common.sh"
RUNS=${RUNS:-3}
ROWS=${ROWS:-20000000}

step "data: wide ($ROWS rows, about 130 bytes of CSV each) in database $DB"
ensure_table wide "kalla-bench:wide:v1:$ROWS" <<SQL
DROP TABLE IF EXISTS wide;
CREATE TABLE wide AS
SELECT i::int8 AS id, (i % 100000)::int8 AS account_id, ((i * 37) % 100000 / 100.0)::numeric(12,2) AS amount,
       DATE '2024-01-01' + (i % 365) AS day, md5(i::text) AS reference, repeat(chr(97 + i % 26), 40) AS note
FROM generate_series(1, $ROWS) AS i;
SQL

step "runner (release, embedded), its temporary files in $WORK/tmp"
PORT=$(free_port)
mkdir -p "$WORK/tmp"
TMPDIR=$WORK/tmp "$BIN/kalla-runner" --bind "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/runner.log" 2>&1 &
RUNNER_PID=$!
for _ in $(seq 150); do curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.2; done
TOKEN=$(cat "$WORK/data/api-token")
api() { curl -fsS -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
api -d "{\"alias\":\"wide\",\"uri\":\"$DB_URL?table=public.wide\"}" "http://127.0.0.1:$PORT/api/sources" >/dev/null

step "query job: SELECT * FROM wide, written as parquet"
JOB=$(api -d '{"type":"query","sql":"SELECT * FROM wide"}' "http://127.0.0.1:$PORT/api/jobs" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
while :; do
  STATUS=$(api "http://127.0.0.1:$PORT/api/jobs/$JOB" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  case $STATUS in succeeded) break ;; failed|cancelled) echo "job $JOB $STATUS" >&2; exit 1 ;; esac
  sleep 1
done

# Samples, every 0.2 s until $1 exits: the runner's RSS (KiB) and the bytes under its temporary
# and data directories; prints the largest of each, and the data dir's size before.
sample() {
  local watched=$1 rss tmp data peak_rss=0 peak_tmp=0 peak_data=0
  local before_data
  before_data=$(du -sb "$WORK/data" | cut -f1)
  while kill -0 "$watched" 2>/dev/null; do
    rss=$(ps -o rss= -p "$RUNNER_PID" | tr -d ' ')
    tmp=$(du -sb "$WORK/tmp" | cut -f1)
    data=$(du -sb "$WORK/data" | cut -f1)
    [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
    [ "$tmp" -gt "$peak_tmp" ] && peak_tmp=$tmp
    [ "$data" -gt "$peak_data" ] && peak_data=$data
    sleep 0.2
  done
  echo "$peak_rss $peak_tmp $((peak_data - before_data))"
}

# One timed download: label, then the command writing the bytes to stdout; appends a JSON line.
measure() {
  local label=$1 started ended bytes peaks idle_rss
  shift
  idle_rss=$(ps -o rss= -p "$RUNNER_PID" | tr -d ' ')
  started=$(date +%s.%N)
  "$@" | wc -c >"$WORK/bytes" &
  local pipeline=$!
  peaks=$(sample "$pipeline")
  wait "$pipeline"
  ended=$(date +%s.%N)
  bytes=$(cat "$WORK/bytes")
  read -r peak_rss peak_tmp data_growth <<<"$peaks"
  printf '{"label":"%s","seconds":%s,"bytes":%s,"idle_rss_kib":%s,"peak_rss_kib":%s,"peak_tmp_bytes":%s,"data_dir_growth_bytes":%s}\n' \
    "$label" "$(echo "$ended - $started" | bc)" "$bytes" "$idle_rss" "$peak_rss" "$peak_tmp" "$data_growth" \
    | tee -a "$WORK/results.jsonl" >&2
}

download() {
  curl -fsS -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/jobs/$JOB/results/result?format=$1"
}
copy_csv() { psql "$DB_URL" -XqAc "COPY wide TO STDOUT (FORMAT csv, HEADER)"; }

step "warm-up"
download csv >/dev/null
step "$RUNS runs of each, interleaved"
for _ in $(seq "$RUNS"); do
  measure kalla_csv download csv
  measure kalla_parquet download parquet
  measure postgres_copy_csv copy_csv
done

step "results"
OUT=$ROOT/bench/results/download-$(date -u +%Y-%m-%d).md
python3 - "$WORK/results.jsonl" "$OUT" "$RUNS" "$ROWS" <<'PY'
import json, statistics, subprocess, sys, platform
runs = [json.loads(line) for line in open(sys.argv[1])]
n_runs, rows_n = sys.argv[3], int(sys.argv[4])
def sh(cmd): return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
labels = {
    "kalla_csv": "`GET …/results/result?format=csv` (kalla-runner)",
    "kalla_parquet": "`GET …/results/result?format=parquet` (kalla-runner)",
    "postgres_copy_csv": "`COPY wide TO STDOUT (FORMAT csv)` (psql, anchor)",
}
anchor = statistics.median(r["seconds"] for r in runs if r["label"] == "postgres_copy_csv")
table = ["| download | MB | median s | MB/s | × anchor time | runner RSS before the first → highest MiB | runner temp dir peak MiB | runner data dir growth MiB |",
         "|---|---|---|---|---|---|---|---|"]
for label, text in labels.items():
    rs = [r for r in runs if r["label"] == label]
    secs = statistics.median(r["seconds"] for r in rs)
    mb = statistics.median(r["bytes"] for r in rs) / 1e6
    kalla = label.startswith("kalla")
    rss = "%.0f → %.0f" % (rs[0]["idle_rss_kib"] / 1024, max(r["peak_rss_kib"] for r in rs) / 1024) if kalla else "—"
    tmp = "%.1f" % (max(r["peak_tmp_bytes"] for r in rs) / 2**20) if kalla else "—"
    grow = "%.1f" % (max(r["data_dir_growth_bytes"] for r in rs) / 2**20) if kalla else "—"
    table.append("| %s | %.0f | %.2f | %.0f | %.2f | %s | %s | %s |" % (text, mb, secs, mb / secs, secs / anchor, rss, tmp, grow))
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
text = "\n".join([
    "# Download benchmark, %s" % sh("date -u +%Y-%m-%dT%H:%MZ"),
    "",
    "A query job's output (`SELECT * FROM wide`, %s rows: id, account, amount, date, 32-character reference, 40-character note) downloaded through the runner's API, against Postgres writing the same rows as CSV itself. Medians of %s runs, interleaved after one warm-up; the runner's RSS and the bytes under its temporary and data directories sampled every 0.2 s (peaks are the maxima over all runs; every run's RSS is in the JSON lines the script prints)." % (format(rows_n, ","), n_runs),
    "",
    *table,
    "",
    "- machine: %s, %s cores, %s RAM, %s" % (cpu, sh("nproc"), sh("free -h | awk '/Mem:/{print $2}'"), platform.platform()),
    "- versions: %s; kalla %s (release); %s" % (sh("psql --version"), sh("git rev-parse --short HEAD"), sh("rustc --version")),
    "- command: `bench/download.sh`",
])
open(sys.argv[2], "w").write(text + "\n")
print(text)
PY
