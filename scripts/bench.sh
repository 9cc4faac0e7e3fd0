#!/usr/bin/env bash
# The performance story in one run on this machine (issue 12 §5), each part measured against a
# baseline of the same run:
#   1. volumes: `cargo bench --bench volume` (inflate backends, decode, cold request, seek
#      index, disk tier, transforms) plus nibabel + MONAI in one Python process on the same
#      file, with its ratio table (scripts/bench-volume.sh; MONAI_PYTHON names the venv);
#   2. 2D: `cargo bench --bench pipeline` (decode, chain, encoders) and its ratio table;
#   3. HTTP: scripts/load.sh (wrk against the release binary, every row as a ratio to the same
#      server's /healthz, the cold CT request timed on its own);
#   4. slab reads: scripts/bench-slab.sh (slices of a volume that is not decoded, read by byte
#      range, against the full decode; time and bytes read per request);
#   5. export: scripts/bench-export.sh (`medserve export` of a MedNIST-sized set, then one cold
#      epoch of batches over the raw set and over the export, as a ratio).
# Then the three tables again, together. Nothing is asserted: the numbers are for reading
# (docs/PERFORMANCE.md keeps the table of each measured commit). About 15 minutes on 2 cores;
# run it on an otherwise idle machine (the load average is printed before each part).
#
#   scripts/bench.sh            # everything
#   BENCH_PARTS="volume http" scripts/bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

parts=${BENCH_PARTS:-volume 2d http slab export}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
load() { uptime | sed 's/.*load average/load average/'; }

for part in $parts; do
    log "== $part ($(load))"
    case $part in
    volume) scripts/bench-volume.sh 2>&1 | tee "$out/volume.txt" ;;
    2d) cargo bench --bench pipeline 2>&1 | tee "$out/2d.txt" ;;
    http) scripts/load.sh 2>&1 | tee "$out/http.txt" ;;
    slab) scripts/bench-slab.sh 2>&1 | tee "$out/slab.txt" ;;
    export) scripts/bench-export.sh 2>&1 | tee "$out/export.txt" ;;
    *) echo "unknown part '$part' (volume, 2d, http, slab, export)" >&2; exit 2 ;;
    esac
done

echo
echo "==================== summary (this run, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD)) ===================="
if [[ -f $out/volume.txt ]]; then
    echo "-- volumes (criterion medians; ratios to inflate_only = zlib-rs, the pre-issue-12 floor)"
    sed -n '/^== volume:/,$p' "$out/volume.txt"
fi
if [[ -f $out/2d.txt ]]; then
    echo "-- 2D pipeline"
    sed -n '/Medians of this run/,$p' "$out/2d.txt"
fi
if [[ -f $out/http.txt ]]; then
    echo "-- HTTP (ratios to /healthz)"
    sed -n '/^medserve load test/,$p' "$out/http.txt"
fi
if [[ -f $out/slab.txt ]]; then
    echo "-- slab reads"
    sed -n '/^slab reads/,$p' "$out/slab.txt"
fi
