#!/usr/bin/env bash
# What one replica serves in large bodies (docs/SCALING.md): the release binary on the large
# sample data (a 512x512x200 CT with its mask), each request warmed once, then wrk for
# LOAD_DURATION seconds (default 10) per row; prints req/s and GiB/s of body. Rows:
#   volume_128   the CT through the seed's chain to (1,128,128,64) float32 .npy (4 MiB, cached)
#   patches_96   2 patches of 96x96x64 with their masks (.npz, sampled from cached lists; each
#                request crops and encodes again)
#   slice_512    one 512x512 axial slice as float32 .npy (1 MiB, cached)
# Nothing is asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

duration=${LOAD_DURATION:-10}
bin=${LOAD_BIN:-target/release/medserve}
[[ -x $bin ]] || cargo build --release --locked
command -v wrk >/dev/null 2>&1 || apt_install wrk
work=$(mktemp -d)
trap 'stop_started; rm -rf "$work"' EXIT
"$bin" sample-data --large "$work/data" >/dev/null
serve_medserve "$bin" "$work/log" --data "$work/data" --cache-mb 2048
ct=/v1/datasets/large/splits/train/items/ct_512

row() {
    local name=$1 path=$2 bytes out rps
    bytes=$(curl -fsS -o /dev/null -w '%{size_download}' "$MEDSERVE_URL$path")
    out=$(wrk -t 2 -c 8 -d "${duration}s" --timeout 30s "$MEDSERVE_URL$path")
    rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
    if grep -q 'Non-2xx' <<<"$out"; then
        echo "error: $name answered non-2xx under load" >&2
        exit 1
    fi
    awk -v n="$name" -v r="$rps" -v b="$bytes" \
        'BEGIN { printf "  %-12s %10.1f req/s  %9d bytes  %6.2f GiB/s\n", n, r, b, r * b / 2^30 }'
}

echo "one replica, large bodies ($(nproc) cores shared with wrk, ${duration} s per row)"
row volume_128 "$ct/volume?size=128,128,64&a_min=-1000&a_max=1000&b_min=0&b_max=1&clip=true&format=npy"
row patches_96 "$ct/patches?patch=96,96,64&num=2&seed=1&pos=1&neg=1"
row slice_512 "$ct/slice?axis=2&format=npy"
