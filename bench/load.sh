#!/usr/bin/env bash
# Sustained load: CLIENTS concurrent clients (a third each on load-scoped previews, POST /api/query
# and job submissions) for LOAD_SECONDS against a release kalla-runner on a 2-executor cluster, loopback
# only. Reports answers by status (only 2xx and the documented 429/503 back-pressure are allowed),
# latencies, whether every accepted job ended well, the runner's memory over the run and the most
# connections each process held to the source, against the configured caps.
#
#   bench/load.sh            # CLIENTS=200 LOAD_SECONDS=60 POOL_CAP=4; KALLA_BENCH_PG_URL picks the server
source "$(dirname "$0")/common.sh"
build_load_generators
CLIENTS=${CLIENTS:-200}
SECONDS_OF_LOAD=${LOAD_SECONDS:-60}
CAP=${POOL_CAP:-4}

step "data: load_accounts (100,000 rows, 1,000 accounts) in database $DB"
ensure_table load_accounts kalla-bench:load_accounts:v1 <<'SQL'
DROP TABLE IF EXISTS load_accounts;
CREATE TABLE load_accounts AS
SELECT i::int8 AS id, (i % 1000)::int8 AS account_id, ((i * 37) % 100000 / 100.0)::numeric(12,2) AS amount,
       DATE '2024-01-01' + (i % 365) AS day
FROM generate_series(1, 100000) AS i;
CREATE INDEX load_accounts_account_id ON load_accounts (account_id);
SQL

start_cluster --source-pool-max-connections "$CAP"
step "runner (release, on the cluster, source pool cap $CAP)"
PORT=$(free_port)
# shellcheck disable=SC2086 # the TLS flags are words
KALLA_SECRET_KEY=$(openssl rand -base64 32) "$BIN/kalla-runner" --bind "127.0.0.1:$PORT" --data-dir "$WORK/data" --scheduler "df://127.0.0.1:$SPORT" $CLIENT_FLAGS \
  --cache-dir "file://$WORK/cache/" --allowed-hosts "$PG_HOST" --source-pool-max-connections "$CAP" >"$WORK/runner.log" 2>&1 &
RUNNER_PID=$!
for _ in $(seq 150); do curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.2; done
export KALLA_API_TOKEN=$(cat "$WORK/data/api-token")
curl -fsS -H "Authorization: Bearer $KALLA_API_TOKEN" -H 'Content-Type: application/json' \
  -d "{\"alias\":\"accounts\",\"uri\":\"$DB_URL?table=public.load_accounts\"}" "http://127.0.0.1:$PORT/api/sources" >/dev/null

step "warm-up (3 clients, 5 s)"
"$BIN/api-load" --clients 3 --seconds 5 --runner "http://127.0.0.1:$PORT" --alias accounts \
  --source-url "$DB_URL" --runner-pid "$RUNNER_PID" >/dev/null
step "$CLIENTS clients for ${SECONDS_OF_LOAD}s"
"$BIN/api-load" --clients "$CLIENTS" --seconds "$SECONDS_OF_LOAD" --runner "http://127.0.0.1:$PORT" \
  --alias accounts --source-url "$DB_URL" --runner-pid "$RUNNER_PID" | tee "$WORK/load.json" >&2
kill -0 "$RUNNER_PID" || { echo "the runner died under load; see $WORK/runner.log" >&2; exit 1; }
PANICS=$(cat "$WORK"/*.log | grep -c 'panicked' || true)

step "results"
OUT=$ROOT/bench/results/load-$(date -u +%Y-%m-%d).md
{
  python3 - "$WORK/load.json" "$CAP" "$PANICS" <<'PY'
import json, sys, subprocess
r = json.load(open(sys.argv[1])); cap = int(sys.argv[2]); panics = int(sys.argv[3])
when = subprocess.run(["date", "-u", "+%Y-%m-%dT%H:%MZ"], capture_output=True, text=True).stdout.strip()
print(f"# Sustained load, {when}\n")
print(f"{r['clients']} clients for {r['seconds']} s on loopback against a release `kalla-runner` on a scheduler and two "
      "executors (2 vcores each), SQLite metadata; a third of the clients each send, back to back: a load-scoped preview "
      "of `accounts` (`account_id eq <random of 1,000>`, limit 100, exact count), a `POST /api/query` "
      "(`count(*), sum(amount) … WHERE account_id = <random>`, a distributed scan with the filter pushed down), and a "
      "`POST /api/jobs` query job (`SELECT * … WHERE account_id = <random>`, written as parquet; a client answered 429 "
      "waits 0.5 s). Source: the 100,000-row `load_accounts` table.\n")
print("| requests | sent | answers by status | undocumented answers | ok/s | p50 ms | p99 ms |")
print("|---|---|---|---|---|---|---|")
for kind, s in r["requests"].items():
    statuses = ", ".join(f"{k}: {v}" for k, v in s["by_status"].items())
    print(f"| {kind} | {s['requests']} | {statuses} | {s['errors']} | {s['ok_per_second']:.1f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} |")
m = r["runner_rss_mib"]
print(f"\n- accepted jobs, by how they ended: {', '.join(f'{k}: {v}' for k, v in r['jobs_ended'].items()) or 'none'}")
print(f"- runner resident memory (MiB): {m['start']:.0f} before the load, peak {m['peak']:.0f}; peak in the load's first "
      f"10 s {m['peak_first_10s']:.0f}, in its last 10 s {m['peak_last_10s']:.0f}; {m['end']:.0f} once every accepted job had ended")
conns = ", ".join(f"`{k}`: {v}" for k, v in r["max_source_connections"].items())
print(f"- most connections to the source at once, per process (cap {cap} each): {conns}")
print(f"- panics in the runner's, scheduler's and executors' logs: {panics}")
PY
  machine_lines
  echo "- command: \`bench/load.sh\` (CLIENTS=$CLIENTS LOAD_SECONDS=$SECONDS_OF_LOAD POOL_CAP=$CAP)"
} >"$OUT"
cat "$OUT"
