#!/usr/bin/env bash
# Runs every check medserve has: formatting, lints, all tests (unit, HTTP, S3 against a real
# S3-protocol server, MONAI parity, OpenAPI contract, bench smoke), the README's curl examples
# against the real binary, numpy/nibabel reading the array and NIfTI responses, schemathesis
# against openapi.yaml, a 60 s mixed load test, cargo-fuzz targets for a bounded time, a
# headless-Chromium CORS check, and the container files.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
rustfmt --edition 2024 --check fuzz/fuzz_targets/*.rs
echo "== cargo clippy -D warnings"
cargo clippy --locked --all-targets -- -D warnings
# The fuzz targets build medserve without its S3 backend.
cargo clippy --locked --lib --no-default-features -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "== cargo test"
cargo test --locked --all-targets 2>&1 | tee -a "$log"
echo "== README examples"
scripts/check-readme.sh 2>&1 | tee -a "$log"
echo "== numpy and nibabel read the responses"
scripts/check-python.sh 2>&1 | tee -a "$log"
echo "== schemathesis against openapi.yaml"
scripts/check-schemathesis.sh 2>&1 | tee -a "$log"
echo "== mixed load, 60 s x 64 connections (0 errors, RSS under the cache cap + 256 MiB)"
LOAD_SKIP_BUILD=1 scripts/load-mix.sh 2>&1 | tee "$log.load"
grep -q '^load-mix: .* 0 errors' "$log.load" && echo "load test: 1 passed" | tee -a "$log"
rm -f "$log.load"
echo "== fuzzing: NIfTI, PNG/JPEG, npy/npz/NIfTI writers, query strings (${FUZZ_SECONDS:-60} s each)"
scripts/fuzz.sh 2>&1 | tee -a "$log"
echo "== headless browser (CORS)"
scripts/check-browser.sh 2>&1 | tee -a "$log"
echo "== container files"
scripts/check-containers.sh
# One closing line over everything above (each step already stopped the script on failure).
passed=$(grep -hoE '(ok\. |: )[0-9]+ passed' "$log" | grep -oE '[0-9]+' | awk '{s += $1} END {print s}')
echo "checks: $((passed + 2)) passed, 0 failed"
