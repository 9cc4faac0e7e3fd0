#!/usr/bin/env bash
# Runs medserve's checks in named stages (`--list` says what each one does):
#
#   scripts/test.sh                 every stage, in the order of --list (what CI runs)
#   scripts/test.sh --quick         fmt, clippy, test (unit + HTTP tests): a few minutes warm
#   scripts/test.sh STAGE...        only those stages, in the order given
#   scripts/test.sh --list          the stages, one a line
#   scripts/test.sh --fail-fast ... stop at the first failing stage
#
# Each stage is a function below that builds what it needs itself (a build that is already
# done is a no-op for cargo), so any stage runs alone. Its output goes to target/test-logs/
# STAGE.log, and one line `PASS STAGE (N s)` or `FAIL STAGE (N s)` is printed; a FAIL is
# followed by the last lines of that log. A failing stage does not stop the run (unless
# --fail-fast): the remaining stages still run, so one run shows every failure, and the exit
# status is 1 when any stage failed (2 on a usage error).
#
# Builds: test, readme, python, client and browser share one debug build (the scripts take
# the binary from `cargo test`'s build: build_debug_medserve in scripts/lib.sh); schemathesis
# and load share the release build; fuzz has its own (AddressSanitizer, fuzz/target); clippy
# checks. client's Python venv (torch) lives outside the clone, reused across runs.
#
# Counting: every stage ends its output with a line that states its own count,
# `<what>: N passed, M failed` or `<what>: N passed (...)` (the scripts' closing lines, e.g.
# `README curl lines: 23 passed, 0 failed`); for the test stage it is the sum of cargo's
# `test result: ... N passed; M failed` lines. The closing `checks: N passed, M failed` adds
# those up and nothing else. A stage that fails without stating a count (a build error, say)
# adds 1 failed; a stage that exits 0 without stating one is a FAIL.
set -euo pipefail
cd "$(dirname "$0")/.."

STAGES=(fmt clippy containers test readme python client browser schemathesis load scale fuzz)
QUICK=(fmt clippy test)
declare -A ABOUT=(
    [fmt]="cargo fmt --check: the crate and fuzz/fuzz_targets"
    [clippy]="cargo clippy -D warnings: all targets; the lib without default features (as fuzz)"
    [containers]="hadolint on the Dockerfile, docker-compose config, deploy/k8s rendered and schema-validated (scripts/check-containers.sh)"
    [test]="cargo test --all-targets: unit, HTTP, S3, MONAI parity, OpenAPI contract, bench smoke"
    [readme]="README.md's curl lines against the debug binary (scripts/check-readme.sh)"
    [python]="numpy and nibabel read the debug binary's responses (scripts/check-python.sh)"
    [client]="the Python client + torch DataLoader against the debug binary (check-client.sh)"
    [browser]="headless Chromium: CORS reads, the exploration page clicked through (check-browser.sh)"
    [schemathesis]="schemathesis: openapi.yaml against the release binary (check-schemathesis.sh)"
    [load]="60 s mixed load on the release binary, 0 errors, bounded RSS (scripts/load-mix.sh)"
    [scale]="3 replicas behind nginx hashing on the item: affinity, kill -9 failover, restart (check-scale.sh)"
    [fuzz]="cargo-fuzz, ASan build in fuzz/, FUZZ_SECONDS (60) per target (scripts/fuzz.sh)"
)

# Within a stage: `check CMD...` runs one check and tallies it; `tally NAME` states the count
# and fails when any check failed.
passes=0
failures=0
check() {
    if "$@"; then passes=$((passes + 1)); else failures=$((failures + 1)); fi
}
tally() {
    echo "$1: ${passes} passed, ${failures} failed"
    [ "$failures" -eq 0 ]
}

stage_fmt() {
    check cargo fmt --all -- --check
    check rustfmt --edition 2024 --check fuzz/fuzz_targets/*.rs
    tally fmt
}
stage_clippy() {
    check cargo clippy --locked --all-targets -- -D warnings
    # The fuzz targets build medserve without its S3 backend.
    check cargo clippy --locked --lib --no-default-features -- -D warnings
    tally clippy
}
stage_containers() { scripts/check-containers.sh; }
stage_test() { cargo test --locked --all-targets; }
stage_readme() { scripts/check-readme.sh; }
stage_python() { scripts/check-python.sh; }
stage_client() { scripts/check-client.sh; }
stage_browser() { scripts/check-browser.sh; }
stage_schemathesis() { scripts/check-schemathesis.sh; }
stage_load() { scripts/load-mix.sh; }
stage_scale() { scripts/check-scale.sh; }
stage_fuzz() { scripts/fuzz.sh; }

# count STAGE LOG: prints "PASSED FAILED" as the stage's log states them, or nothing.
count() {
    if [ "$1" = test ]; then
        awk '/^test result: (ok|FAILED)\./ {
                for (i = 2; i <= NF; i++) {
                    if ($i == "passed;") p += $(i - 1)
                    if ($i == "failed;") f += $(i - 1)
                }
                n++
            }
            END { if (n) print p + 0, f + 0 }' "$2"
    else
        # `<what>: N passed, M failed`, or `<what>: N passed (...)` (0 failed).
        grep -E '^[^ ].*: [0-9]+ passed' "$2" | tail -n 1 |
            sed -E 's/^.*: ([0-9]+) passed(, ([0-9]+) failed)?.*$/\1 \3/' | awk '{print $1, $2 + 0}'
    fi
}

usage() {
    sed -n '2,8s/^# \{0,1\}//p' "$0" >&2
    exit 2
}

selected=()
fail_fast=0
while [ $# -gt 0 ]; do
    case $1 in
        --list)
            for s in "${STAGES[@]}"; do printf '%-13s %s\n' "$s" "${ABOUT[$s]}"; done
            exit 0
            ;;
        --quick) selected+=("${QUICK[@]}") ;;
        --fail-fast) fail_fast=1 ;;
        -h | --help) usage ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *)
            if [ -z "${ABOUT[$1]:-}" ]; then
                echo "no stage '$1' (scripts/test.sh --list)" >&2
                exit 2
            fi
            selected+=("$1")
            ;;
    esac
    shift
done
[ "${#selected[@]}" -gt 0 ] || selected=("${STAGES[@]}")

logs=target/test-logs
mkdir -p "$logs"
declare -A RESULT SECS NPASS NFAIL
total_pass=0
total_fail=0
failed_stages=0
run_start=$(date +%s)
for s in "${selected[@]}"; do
    log="$logs/$s.log"
    echo "== $s: ${ABOUT[$s]}"
    start=$(date +%s)
    rc=0
    # In the background so that `set -e` holds inside the stage (a `||` would switch it off).
    (
        set -euo pipefail
        "stage_$s"
    ) >"$log" 2>&1 </dev/null &
    wait $! || rc=$?
    code=$rc
    SECS[$s]=$(($(date +%s) - start))
    read -r p f < <(count "$s" "$log") || true
    note=""
    if [ -z "${p:-}" ]; then
        p=0
        f=1
        if [ "$rc" -eq 0 ]; then
            rc=1
            note=" (it stated no count: '<what>: N passed, M failed')"
        fi
    elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
    elif [ "$rc" -eq 0 ] && [ "$f" -ne 0 ]; then
        rc=1
    fi
    NPASS[$s]=$p
    NFAIL[$s]=$f
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    unset p f
    if [ "$rc" -eq 0 ]; then
        RESULT[$s]=PASS
        echo "PASS $s (${SECS[$s]} s)"
    else
        RESULT[$s]=FAIL
        failed_stages=$((failed_stages + 1))
        echo "--- $s: last 60 lines of $log (exit $code)$note"
        tail -n 60 "$log"
        echo "FAIL $s (${SECS[$s]} s)"
        [ "$fail_fast" -eq 0 ] || break
    fi
done

row() { printf '%-13s %-6s %8s %8s %8s\n' "$@"; }
echo
row stage result seconds passed failed
for s in "${selected[@]}"; do
    row "$s" "${RESULT[$s]:-skip}" "${SECS[$s]:--}" "${NPASS[$s]:--}" "${NFAIL[$s]:--}"
done
row total "" "$(($(date +%s) - run_start))" "$total_pass" "$total_fail"
echo "checks: $total_pass passed, $total_fail failed"
[ "$failed_stages" -eq 0 ]
