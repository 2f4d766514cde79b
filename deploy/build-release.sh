#!/usr/bin/env bash
# The release build of Kalla's binaries, as the container images run it (deploy/docker/Dockerfile)
# and CI checks it: builds and copies kalla-scheduler, kalla-executor, kalla-runner and kalla into
# OUT_DIR (default: target/release, where cargo leaves them).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bins -p kalla-scheduler -p kalla-executor -p kalla-runner
out=${1:-}
[ -z "$out" ] && exit 0
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$out"
for binary in kalla-scheduler kalla-executor kalla-runner kalla; do
  cp "$target/release/$binary" "$out/"
done
