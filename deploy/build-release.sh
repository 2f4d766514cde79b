#!/usr/bin/env bash
# The release build of Kalla's binaries, as the container images run it (deploy/docker/Dockerfile)
# and CI checks it: builds kalla-scheduler, kalla-executor, kalla-runner and kalla, then writes each
# into OUT_DIR (default: target/release/dist) twice: stripped, as the images ship it, and its debug
# info beside it as BINARY.debug, kept for crash reports (`addr2line -e kalla-runner.debug ADDR`;
# the stripped binary names its .debug file and carries the same build id).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bins -p kalla-scheduler -p kalla-executor -p kalla-runner
target=${CARGO_TARGET_DIR:-target}
out=${1:-$target/release/dist}
mkdir -p "$out"
for binary in kalla-scheduler kalla-executor kalla-runner kalla; do
  objcopy --only-keep-debug "$target/release/$binary" "$out/$binary.debug"
  objcopy --strip-all --add-gnu-debuglink="$out/$binary.debug" "$target/release/$binary" "$out/$binary"
done
ls -l "$out"
