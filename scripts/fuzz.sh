#!/usr/bin/env bash
# Fuzzes medserve's parsers with cargo-fuzz (libFuzzer + AddressSanitizer), a bounded run for
# CI: NIfTI volumes (nifti), PNG/JPEG images (image), round trips of the npy/npz/NIfTI
# encoders (npy) and query strings with the `Accept` header (query); fuzz/fuzz_targets/ says
# what each one checks. Each target runs FUZZ_SECONDS (default 60) from a temporary copy of its committed
# seeds (fuzz/seeds/<target>, written by tools/make_fuzz_seeds.py), so the checkout stays clean.
#
# Only the stable toolchain is needed: cargo-fuzz passes nightly-only flags (-Zsanitizer=...),
# which RUSTC_BOOTSTRAP=1 unlocks. cargo-fuzz itself is installed from crates.io when missing.
#
# Prints one `fuzz <target>: ...` line per target and a closing `fuzz targets: N passed, M
# failed`; exits 1 when a target crashes (panic, failed assertion, ASan report, out-of-memory,
# timeout), printing the input's path (under fuzz/artifacts/<target>/, kept), its base64 and
# the command that replays it. FUZZ_TARGETS="nifti image" runs a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

CARGO_FUZZ_VERSION=0.13.2
seconds=${FUZZ_SECONDS:-60}
# libFuzzer reads -max_total_time=0 as "no limit".
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "FUZZ_SECONDS must be a whole number above 0, not '$seconds'"; exit 1; }
read -r -a targets <<<"${FUZZ_TARGETS:-nifti image npy query}"

# Longest input per target: NIfTI seeds are up to tens of KB, the rest are small.
max_len() {
  case $1 in
    nifti) echo 65536 ;;
    query) echo 4096 ;;
    *) echo 16384 ;;
  esac
}

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION (crates.io)"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi

# The main crate's lock, so the fuzzed dependencies are the versions medserve ships with; cargo
# only adds the fuzz crate's own (libfuzzer-sys) and drops what the fuzz build does not use.
cp Cargo.lock fuzz/Cargo.lock
export RUSTC_BOOTSTRAP=1
log "building fuzz targets ($(rustc --version))"
start=$(date +%s)
# Default profile: optimised, with debug assertions and overflow checks; AddressSanitizer.
cargo fuzz build --fuzz-dir fuzz
log "built in $(( $(date +%s) - start )) s"
bin_dir=fuzz/target/x86_64-unknown-linux-gnu/release

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# `stat::NAME: VALUE` from libFuzzer's -print_final_stats output.
fuzz_stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }

passed=0
failed=0
for t in "${targets[@]}"; do
  [ -d "fuzz/seeds/$t" ] || { echo "fuzz $t: no seeds in fuzz/seeds/$t"; exit 1; }
  corpus="$work/corpus-$t"
  artifacts="$PWD/fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  cp fuzz/seeds/"$t"/* "$corpus"/
  log="$work/$t.log"
  start=$(date +%s)
  rc=0
  # The outer timeout only guards against a hang outside any input (libFuzzer's -timeout
  # covers each input).
  timeout --kill-after=30 $((seconds + 300)) "$bin_dir/$t" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len="$(max_len "$t")" \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1 || rc=$?
  took=$(( $(date +%s) - start ))
  execs=$(fuzz_stat number_of_executed_units "$log")
  entries=$(find "$corpus" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    echo "fuzz $t: ${execs:-?} executions in $took s, $entries corpus entries, 0 crashes"
    passed=$((passed + 1))
    continue
  fi
  failed=$((failed + 1))
  crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
  echo "fuzz $t: ${execs:-?} executions in $took s, $entries corpus entries, 1 crash (libFuzzer exit $rc)"
  echo "--- fuzz $t: what failed"
  grep -E -A4 'panicked at|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' "$log" | head -n 30 || true
  echo "--- fuzz $t: libFuzzer output (last 60 lines)"
  tail -n 60 "$log"
  if [ -n "$crash" ] && [ -f "$crash" ]; then
    echo "--- fuzz $t: crashing input: $crash ($(wc -c <"$crash") bytes)"
    if [ "$(wc -c <"$crash")" -le 8192 ]; then
      echo "base64: $(base64 -w0 "$crash")"
    fi
    echo "replay: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz $t $crash"
  else
    echo "--- fuzz $t: no crashing input was written (see the output above)"
  fi
done
echo "fuzz targets: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
