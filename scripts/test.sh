#!/usr/bin/env bash
# Runs every check medserve has: formatting, lints, all tests (unit, HTTP, S3 against a real
# S3-protocol server, MONAI parity, OpenAPI contract, bench smoke), the README's curl examples
# against the real binary, a headless-Chromium CORS check, and the container files.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --all-targets
echo "== README examples"
scripts/check-readme.sh
echo "== headless browser (CORS)"
scripts/check-browser.sh
echo "== container files"
scripts/check-containers.sh
echo "all checks passed"
