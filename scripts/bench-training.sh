#!/usr/bin/env bash
# Issue 10 section 6: the training path against MONAI, measured in the same run, printed as one
# ratio table (docs/PERFORMANCE.md, "Training path (issue 10)"). Nothing is asserted.
#
# Builds target/release/medserve, writes a bench set into a temporary folder (1,792 64x64
# grayscale PNGs in the MedNIST layout, copied from `medserve sample-data` with +-4 of noise;
# a 512x512x200 int16 CT with a generated mask as bench3d/train/ct512/{img,label}.nii.gz),
# then for each repeat: a fresh server for the raw-HTTP batches (cold epoch, then warm epochs)
# and the patch route; another fresh server for the Python client (cold epoch, warm epoch);
# and MONAI in one process (Compose over loaded arrays, DataLoader(num_workers=2),
# RandCropByPosNegLabeld). Servers listen on 127.0.0.1:<free port> and are stopped by PID.
#
# Environment:
#   BENCH_REPEAT        runs of every measurement; the table shows medians (default 3)
#   BENCH_WARM_EPOCHS   warm epochs timed per run, after the cold one (default 2)
#   BENCH_IMAGES        PNGs in the bench set (default 1792 = 7 batches of 256)
#   BENCH_ROTATES       rand_rotate / RandRotate range_x values in radians (default "15 0.2618":
#                       the seed's range_x=15 as MONAI reads it, then 15 degrees)
#   BENCH_MAX_LOAD      before each run, wait (at most BENCH_LOAD_WAIT s, default 600) until the
#                       1-minute load is below this (default 0.8); then go on anyway. Every
#                       JSON line records the load when it was measured
#   BENCH_CACHE_MB      the servers' --cache-mb (default 2048): the patch route's working set on
#                       the 512x512x200 CT (int16 volume, float32 image, mask twice, index
#                       lists) is 629 MB, over the default 512 MiB, and then misses every time
#   MEDSERVE_BENCH_VOLUME  the CT (default target/bench-data/ct_512x512x200.nii.gz when it
#                       exists, else the one `medserve sample-data --large` writes)
#   MONAI_PYTHON        Python with monai + torch (default /tmp/monai-venv/bin/python, else
#                       /root/venv-monai/bin/python); the client part also needs numpy and
#                       urllib3 there (clients/python is put on PYTHONPATH); without one the
#                       MONAI and client parts are skipped and only medserve's numbers printed
#   BENCH_SKIP_BUILD=1  use target/release/medserve as it is
#   BENCH_KEEP=DIR      keep the data and the raw JSON lines in DIR (default: a temp dir, removed)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

repeat=${BENCH_REPEAT:-3}
warm_epochs=${BENCH_WARM_EPOCHS:-2}
images=${BENCH_IMAGES:-1792}
read -r -a rotates <<<"${BENCH_ROTATES:-15 0.2618}"
max_load=${BENCH_MAX_LOAD:-0.8}
cache_mb=${BENCH_CACHE_MB:-2048}
load_wait=${BENCH_LOAD_WAIT:-600}
tool=tools/bench_training.py

if [[ -n ${BENCH_KEEP:-} ]]; then
    work=$BENCH_KEEP
    mkdir -p "$work"
else
    work=$(mktemp -d)
fi
cleanup() {
    stop_started
    [[ -n ${BENCH_KEEP:-} ]] || rm -rf "$work"
}
trap cleanup EXIT

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release --locked --bin medserve"
    cargo build --release --locked --bin medserve
fi
bin=$PWD/target/release/medserve

# The Python for MONAI and the client; python3 (standard library only) for the rest.
py=${MONAI_PYTHON:-}
if [[ -z $py ]]; then
    for cand in /tmp/monai-venv/bin/python /root/venv-monai/bin/python; do
        if [[ -x $cand ]]; then
            py=$cand
            break
        fi
    done
fi
have_monai=0
if [[ -n $py ]] && "$py" -c 'import monai, torch, PIL' 2>/dev/null; then
    have_monai=1
else
    log "skipping the MONAI side and the client: no Python with monai, torch and pillow${py:+ at $py}."
    log "(point MONAI_PYTHON at one, or: python3 -m venv /root/venv-monai && /root/venv-monai/bin/pip install -r tools/requirements-fixtures.txt pillow urllib3)"
fi
have_client=0
if [[ $have_monai == 1 ]]; then
    if "$py" -c 'import numpy, urllib3' 2>/dev/null; then
        have_client=1
    else
        log "skipping the client measurement: $py lacks urllib3 (pip install ./clients/python)"
    fi
fi
export PYTHONPATH="$PWD/clients/python/src${PYTHONPATH:+:$PYTHONPATH}"

# quiet: waits until the 1-minute load is below max_load (at most load_wait s).
quiet() {
    local waited=0 l
    while :; do
        l=$(cut -d' ' -f1 /proc/loadavg)
        if awk -v l="$l" -v m="$max_load" 'BEGIN { exit !(l < m) }'; then
            return 0
        fi
        if ((waited >= load_wait)); then
            log "load is still $l after ${waited}s: measuring anyway"
            return 0
        fi
        if ((waited % 60 == 0)); then log "load $l >= $max_load, waiting (${waited}s so far)"; fi
        sleep 10
        waited=$((waited + 10))
    done
}

log "bench data in $work"
"$bin" sample-data "$work/sample" --large >/dev/null
ct=${MEDSERVE_BENCH_VOLUME:-}
if [[ -z $ct && -f target/bench-data/ct_512x512x200.nii.gz ]]; then
    ct=target/bench-data/ct_512x512x200.nii.gz
fi
ct=${ct:-$work/sample/large/train/ct_512/img.nii.gz}
python3 "$tool" make-data "$work/data" --sample "$work/sample" --ct "$ct" --images "$images" >&2
rm -rf "$work/sample"
# Every file once through the page cache before anything is timed.
cat "$work"/data/*/train/*/* >/dev/null

lines=$work/lines.jsonl
: >"$lines"
# fresh_server: a new server on the bench data (every cache empty); stops the previous one.
fresh_server() {
    if [[ -n ${MEDSERVE_PID:-} ]]; then stop_pid "$MEDSERVE_PID"; fi
    serve_medserve "$bin" "$work/server.log" --data "$work/data" --cache-mb "$cache_mb"
}

for ((run = 0; run < repeat; run++)); do
    # Once per run: the phases of a run raise the 1-minute average themselves.
    quiet
    for rot in "${rotates[@]}"; do
        log "run $((run + 1))/$repeat, rand_rotate=$rot: medserve over HTTP"
        fresh_server
        python3 "$tool" raw --url "$MEDSERVE_URL" --run "$run" --rotate "$rot" --tag "$rot" \
            --warm-epochs "$warm_epochs" | tee -a "$lines"
        if [[ $rot == "${rotates[0]}" ]]; then
            python3 "$tool" patches --url "$MEDSERVE_URL" --run "$run" | tee -a "$lines"
        fi
        if [[ $have_client == 1 ]]; then
            log "run $((run + 1))/$repeat, rand_rotate=$rot: medserve.BatchLoader in DataLoader"
            fresh_server
            "$py" "$tool" client --url "$MEDSERVE_URL" --run "$run" --rotate "$rot" \
                --tag "$rot" | tee -a "$lines"
        fi
        stop_pid "$MEDSERVE_PID"
        MEDSERVE_PID=
        if [[ $have_monai == 1 ]]; then
            log "run $((run + 1))/$repeat, rand_rotate=$rot: MONAI"
            parts=compose,loader
            if [[ $rot == "${rotates[0]}" ]]; then parts=compose,loader,crop; fi
            "$py" "$tool" monai --data "$work/data" --run "$run" --rotate "$rot" --tag "$rot" \
                --warm-epochs "$warm_epochs" --parts "$parts" | tee -a "$lines"
        fi
    done
done

echo
echo "== training path, $images PNGs of 64x64 in batches of 256, medians of $repeat runs" \
    "($(git rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ))"
tags=$(
    IFS=,
    echo "${rotates[*]}"
)
python3 "$tool" summary "$lines" --tags "$tags"
if [[ -n ${BENCH_KEEP:-} ]]; then log "raw lines kept in $lines"; fi
