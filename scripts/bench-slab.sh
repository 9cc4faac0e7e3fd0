#!/usr/bin/env bash
# Slab reads over HTTP (issue 12 §3): axial slices of a volume that is not decoded, read from a
# byte range of the stored object, against the full decode the same server does first. Serves
# the bench CT (512x512x200 int16, made by `cargo bench --bench volume`) gzipped and as an
# uncompressed .nii with a RAM cache smaller than the decoded volume, and prints each request's
# time and the bytes it read from the store (/metrics). Nothing is asserted.
#
#   scripts/bench-slab.sh                 # uses target/release/medserve (built if missing)
#   MEDSERVE_BENCH_VOLUME=x.nii.gz scripts/bench-slab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

target=${CARGO_TARGET_DIR:-target}
vol=${MEDSERVE_BENCH_VOLUME:-$target/bench-data/ct_512x512x200.nii.gz}
bin=${LOAD_BIN:-$target/release/medserve}
[[ -f $vol ]] || { echo "error: $vol is missing; 'cargo bench --bench volume' makes it" >&2; exit 2; }
[[ -x $bin ]] || cargo build --release
work=$(mktemp -d)
trap 'stop_started; rm -rf "$work"' EXIT
mkdir -p "$work/data/ct/train/s1" "$work/data/raw/train/s1"
cp "$vol" "$work/data/ct/train/s1/img.nii.gz"
gzip -dc "$vol" >"$work/data/raw/train/s1/img.nii"
serve_medserve "$bin" "$work/log" --data "$work/data" --cache-mb 64
items=$MEDSERVE_URL/v1/datasets

took() { curl -fsS -o /dev/null -w '%{time_total}' "$1"; }
metric() { curl -fsS "$MEDSERVE_URL/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
row() {
    local what=$1 url=$2 before after t
    before=$(metric medserve_storage_range_get_bytes_total)
    t=$(took "$url")
    after=$(metric medserve_storage_range_get_bytes_total)
    printf '  %-58s %9.1f ms %12s bytes by range\n' "$what" "$(awk -v t="$t" 'BEGIN { print t * 1000 }')" "$((after - before))"
}

echo "slab reads: $(stat -c %s "$work/data/ct/train/s1/img.nii.gz") bytes gzipped, $(stat -c %s "$work/data/raw/train/s1/img.nii") as .nii, --cache-mb 64"
row "gz: cold axial slice (full decode)" "$items/ct/splits/train/items/s1/slice?axis=2&index=10&format=npy"
# The volume leaves the cache; its second decode records the seek index.
for i in 20 30; do
    row "gz: axial slice $i (decoded again, or by range once indexed)" "$items/ct/splits/train/items/s1/slice?axis=2&index=$i&format=npy"
done
echo "  seek indexes built: $(metric medserve_gzip_indexes_built_total)"
for i in 50 100 150 199; do
    row "gz: axial slice $i" "$items/ct/splits/train/items/s1/slice?axis=2&index=$i&format=npy"
done
for i in 10 100 199; do
    row ".nii: axial slice $i" "$items/raw/splits/train/items/s1/slice?axis=2&index=$i&format=npy"
done
echo "  decodes: $(metric medserve_decode_total), slab reads: $(metric medserve_slab_reads_total)"
