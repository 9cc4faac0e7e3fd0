#!/usr/bin/env bash
# Preprocess once, measured (README "Preprocess once"): a MedNIST-sized set of N 64x64 PNGs
# (EXPORT_ITEMS, default 20000; MedNIST has 58954) exported with the seed's chain
# (size=64,64 scale=minmax), then one cold epoch of batches (batch_size 256, seed 0) over the
# raw dataset and over the export, each from a fresh release server (nothing cached), with the
# same parameters: the export's batches are the raw ones byte for byte, so the ratio is what
# skipping decode and resize buys a training job. Nothing is asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

items=${EXPORT_ITEMS:-20000}
bin=${LOAD_BIN:-target/release/medserve}
[[ -x $bin ]] || cargo build --release --locked
work=$(mktemp -d)
trap 'stop_started; rm -rf "$work"' EXIT
"$bin" sample-data --mednist-items "$items" "$work/data" >/dev/null
rm -rf "$work/data/medmnist" "$work/data/Task"* "$work/data/segmentation" "$work/data/nojson"

t0=$(date +%s.%N)
"$bin" export --data "$work/data" --dataset mednist --to "$work/data/processed/mednist-64" \
    size=64,64 scale=minmax >"$work/export.txt" 2>/dev/null
t1=$(date +%s.%N)
awk -v a="$t0" -v b="$t1" -v n="$items" \
    'BEGIN { printf "export: %d items in %.1f s, %.0f items/s\n", n, b - a, n / (b - a) }'
du -sh "$work/data/processed/mednist-64" | awk '{ print "export size: " $1 }'

epoch() {
    local ds=$1 query=$2 steps t0 t1
    serve_medserve "$bin" "$work/$ds.log" --data "$work/data" --cache-mb 1024
    steps=$(curl -fsS "$MEDSERVE_URL/v1/datasets/$ds/splits/all/batches?batch_size=256&seed=0" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["batches"])')
    t0=$(date +%s.%N)
    for ((b = 0; b < steps; b++)); do
        curl -fsS -o "$work/$ds-$b.npz" "$MEDSERVE_URL/v1/datasets/$ds/splits/all/batches/$b?batch_size=256&seed=0$query"
    done
    t1=$(date +%s.%N)
    stop_started
    awk -v a="$t0" -v b="$t1" -v n="$items" -v d="$ds" \
        'BEGIN { printf "  %-22s %6.2f s  %8.0f items/s\n", d, b - a, n / (b - a) }'
    echo "$t0 $t1" >"$work/$ds.time"
}
echo "one cold epoch of batches of 256 ($(nproc) cores):"
epoch mednist "&size=64,64&scale=minmax"
epoch processed-mednist-64 ""
same=yes
for f in "$work"/mednist-*.npz; do
    cmp -s "$f" "$work/processed-mednist-64-${f##*/mednist-}" || same=no
done
read -r a0 a1 <"$work/mednist.time"
read -r b0 b1 <"$work/processed-mednist-64.time"
awk -v a0="$a0" -v a1="$a1" -v b0="$b0" -v b1="$b1" -v s="$same" \
    'BEGIN { printf "processed epoch: %.2fx the raw epoch'"'"'s speed; batches identical: %s\n", (a1 - a0) / (b1 - b0), s }'
