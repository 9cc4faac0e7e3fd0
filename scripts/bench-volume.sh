#!/usr/bin/env bash
# The 3D cold-request benchmark: `cargo bench --bench volume` (extra arguments are passed on,
# e.g. `scripts/bench-volume.sh -- cold_total`), then nibabel + MONAI doing the same in one
# Python process on the same file (tools/bench_monai_volume.py), then one table of medians of
# this run as ratios. Nothing is asserted: the numbers are for reading.
#
# Environment:
#   MEDSERVE_BENCH_VOLUME  .nii.gz to use instead of the generated 512x512x200 int16 CT
#   MONAI_PYTHON           Python with monai, nibabel, torch (default /root/venv-monai/bin/python
#                          when it exists; see tools/requirements-fixtures.txt)
#   MONAI_REPEAT           timed runs of each Python measurement (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

target=${CARGO_TARGET_DIR:-target}
crit=${CRITERION_HOME:-$target/criterion}/volume
vol=${MEDSERVE_BENCH_VOLUME:-$target/bench-data/ct_512x512x200.nii.gz}
stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT

log "cargo bench --bench volume $*"
cargo bench --bench volume "$@"

monai=""
py=${MONAI_PYTHON:-}
if [[ -z $py && -x /root/venv-monai/bin/python ]]; then
    py=/root/venv-monai/bin/python
fi
if [[ -z $py ]] || ! "$py" -c 'import monai, nibabel, torch' 2>/dev/null; then
    log "skipping the MONAI baseline: no Python with monai, nibabel and torch${py:+ at $py}."
    log "install it with: python3 -m venv /root/venv-monai && /root/venv-monai/bin/pip install -r tools/requirements-fixtures.txt"
    log "(or point MONAI_PYTHON at one)"
elif [[ ! -f $vol ]]; then
    log "skipping the MONAI baseline: $vol does not exist (the benchmark makes it unless run with --test)"
else
    log "nibabel + MONAI baseline ($py, ${MONAI_REPEAT:-3} runs each)"
    monai=$("$py" tools/bench_monai_volume.py "$vol" --repeat "${MONAI_REPEAT:-3}")
    echo "$monai"
fi

# Median (ns) of volume/<id> measured by this run, or nothing.
med() {
    local f=$crit/$1/new/estimates.json
    if [[ -f $f && $f -nt $stamp ]]; then
        jq -r '.median.point_estimate' "$f"
    fi
}
# A value from the MONAI JSON line (seconds -> ns), or nothing.
py_ns() {
    if [[ -n $monai ]]; then
        jq -r "$1 // empty | . * 1e9" <<<"$monai"
    fi
}
# calc EXPR NAME=VALUE...: awk arithmetic; prints "-" when any value is missing.
calc() {
    local expr=$1 kv
    shift
    local args=()
    for kv in "$@"; do
        [[ -n ${kv#*=} ]] || { echo "-"; return; }
        args+=(-v "$kv")
    done
    awk "${args[@]}" "BEGIN { printf \"%.2f\", $expr }"
}

fetch=$(med fetch_local)
inflate=$(med inflate_only)
decode=$(med decode)
area=$(med resize_area_128x128x64)
linear=$(med resize_trilinear_128x128x64)
scale=$(med scale_range)
npy=$(med encode_npy)
cold=$(med cold_total)
stream=$(med decode_stream_file)
cold_stream=$(med cold_stream)
warm=$(med warm_transform)
label=$(med label_nearest_128x128x64)
slice=$(med slice_axial_png)
backend=$(med inflate_backend)
ix_build=$(med gzindex_build)
parallel=$(med inflate_parallel_2)
slab=$(med slab_read_axial)
disk_load=$(med disk_load)
recold=$(med recold_disk)
monai_def=$(py_ns .median_s.monai_threads_default)
monai_1=$(py_ns .median_s.monai_threads_1)
nib=$(py_ns .median_s.nibabel_get_fdata)
zlib=$(py_ns .median_s.zlib_inflate)
threads=""
[[ -z $monai ]] || threads=$(jq -r .torch_threads_default <<<"$monai")

if [[ -z $inflate || -z $cold ]]; then
    log "no summary: inflate_only and cold_total were not both measured by this run"
    exit 0
fi

ms() { calc "v / 1e6" "v=$1"; }
row() { printf '  %-52s %10s\n' "$1" "$2"; }
echo
echo "== volume: $vol ($(du -h "$vol" | cut -f1) compressed), medians of this run"
echo "Cold request split (ms):"
row "fetch (std::fs::read, page cache)" "$(ms "$fetch")"
row "inflate (flate2 MultiGzDecoder alone)" "$(ms "$inflate")"
row "parse/convert (decode - inflate)" "$(calc "(d - i) / 1e6" "d=$decode" "i=$inflate")"
row "resize area -> 128x128x64 (int16->f32 fused)" "$(ms "$area")"
row "scale (RangeScale -1000..1000 -> 0..1)" "$(ms "$scale")"
row "encode .npy" "$(ms "$npy")"
row "cold_total (measured: decode..npy)" "$(ms "$cold")"
echo "Ratios (x = time / baseline):"
row "decode / inflate_only" "$(calc "d / i" "d=$decode" "i=$inflate")"
row "cold_total / inflate_only                  (goal <= 0.7)" "$(calc "c / i" "c=$cold" "i=$inflate")"
row "inflate_backend (libdeflate) / inflate_only" "$(calc "b / i" "b=$backend" "i=$inflate")"
row "gzindex_build (inflate + index) / inflate_only" "$(calc "b / i" "b=$ix_build" "i=$inflate")"
row "inflate_parallel_2 / inflate_only         (goal <= 0.59)" "$(calc "p / i" "p=$parallel" "i=$inflate")"
row "disk_load / decode" "$(calc "l / d" "l=$disk_load" "d=$decode")"
row "recold_disk / cold_total                  (goal <= 0.25)" "$(calc "r / c" "r=$recold" "c=$cold")"
row "decode streamed from the file / inflate_only" "$(calc "s / i" "s=$stream" "i=$inflate")"
row "cold_stream / inflate_only (the server's path; goal <= 1.3)" "$(calc "c / i" "c=$cold_stream" "i=$inflate")"
row "monai (${threads:-?} threads) / cold_stream" "$(calc "m / c" "m=$monai_def" "c=$cold_stream")"
row "(fetch + cold_total) / inflate_only" "$(calc "(f + c) / i" "f=$fetch" "c=$cold" "i=$inflate")"
row "resize area / inflate_only" "$(calc "r / i" "r=$area" "i=$inflate")"
row "monai (${threads:-?} threads) / cold_total        (goal >= 5)" "$(calc "m / c" "m=$monai_def" "c=$cold")"
row "monai (${threads:-?} threads) / (fetch + cold_total)" "$(calc "m / (f + c)" "m=$monai_def" "f=$fetch" "c=$cold")"
row "monai (1 thread) / cold_total" "$(calc "m / c" "m=$monai_1" "c=$cold")"
row "python zlib inflate / inflate_only" "$(calc "z / i" "z=$zlib" "i=$inflate")"
echo "Other (ms):"
row "warm_transform (cached volume)       (goal <= 30)" "$(ms "$warm")"
row "resize trilinear -> 128x128x64" "$(ms "$linear")"
row "label nearest -> 128x128x64" "$(ms "$label")"
row "axial slice -> PNG" "$(ms "$slice")"
row "one axial slab read through the seek index" "$(ms "$slab")"
row "  / decode (what a slice of an evicted volume cost before)" "$(calc "s / d" "s=$slab" "d=$decode")"
row "monai pipeline, ${threads:-?} threads / 1 thread" "$(ms "$monai_def") / $(ms "$monai_1")"
row "nibabel load + get_fdata" "$(ms "$nib")"
if [[ -n $monai ]]; then
    echo "MONAI split (ms): $(jq -r '.monai_split_s | to_entries | map("\(.key) \(.value * 1000 | round)") | join(", ")' <<<"$monai")"
fi
