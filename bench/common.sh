# Shared set-up of the benchmark scripts (sourced): paths, the bench database, a scratch dir,
# a release build, and small helpers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SERVER_URL=${KALLA_BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=kalla_bench
DB_URL="${SERVER_URL%/*}/$DB"
BIN=$ROOT/target/release
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT

step() { printf '\n== %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Whether table $1 in the bench database carries the version comment $2 (else it must be (re)loaded).
table_is_current() {
  [ "$(psql "$DB_URL" -XqtAc "SELECT obj_description('$1'::regclass)" 2>/dev/null)" = "$2" ]
}

step "release build"
cargo build --release --locked --workspace --bins -q

psql "$SERVER_URL" -Xqtc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1 \
  || psql "$SERVER_URL" -Xqc "CREATE DATABASE $DB"
