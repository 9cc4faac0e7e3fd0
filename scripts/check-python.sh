#!/usr/bin/env bash
# Reads the real binary's volume and slice responses with numpy and nibabel, as users do:
# npy/npz load with the right shape, dtype and values, NIfTI (.nii.gz and .nii) loads with the
# right shape, dtype and affine, slices match nibabel's get_fdata() of the source file, and
# the item metadata matches nibabel's header reading (tools/check_responses.py); and the gzip
# seek index `medserve gzindex` writes equals indexed_gzip's (tools/check_gzidx.py). Python
# packages come from tools/requirements-check.txt, installed into a venv under
# target/py-check (created once, then reused). Then what `medserve export` writes, read by the
# webdataset package and by tarfile + numpy (tools/check_export.py), and S3 object versions
# read with `?version_id=` from moto's S3 server (tools/check_versions.py). Only 127.0.0.1 is
# contacted by the checks.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

venv="$PWD/target/py-check"
python_venv "$venv" tools/requirements-check.txt

build_debug_medserve
bin="$PWD/target/debug/medserve"
work=$(mktemp -d)
trap 'stop_started; rm -rf "$work"' EXIT

"$bin" sample-data "$work/data" >/dev/null
serve_medserve "$bin" "$work/server.log" --data "$work/data"

status=0
"$venv/bin/python" tools/check_responses.py --base "$MEDSERVE_URL" --data "$work/data" \
  | tee "$work/responses.txt" || status=1
if [ "$status" -ne 0 ]; then
  echo "--- server log (last 40 lines)"
  tail -n 40 "$work/server.log"
fi
# The gzip seek index: byte-identical to indexed_gzip's, and readable by it.
"$venv/bin/python" tools/check_gzidx.py --bin "$bin" --work "$work/gzidx" --data "$work/data" \
  | tee "$work/gzidx.txt" || status=1
# `medserve export`'s shards read by webdataset and tarfile + numpy, equal to the HTTP routes.
"$venv/bin/python" tools/check_export.py --bin "$bin" --data "$work/data" --work "$work/export" \
  --base "$MEDSERVE_URL" | tee "$work/export.txt" || status=1
# Object versions (`?version_id=`) on a versioned bucket of moto's S3 server.
"$venv/bin/python" tools/check_versions.py --bin "$bin" --data "$work/data" --work "$work/versions" \
  | tee "$work/versions.txt" || status=1
# One closing line for the stage: the scripts' counts.
counts() { grep -E '^[^ ].*: [0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1 | grep -oE '[0-9]+' ; }
mapfile -t a < <(counts "$work/responses.txt")
mapfile -t b < <(counts "$work/gzidx.txt")
mapfile -t c < <(counts "$work/export.txt")
mapfile -t d < <(counts "$work/versions.txt")
echo "python, gzip-index, export and versions checks: $(( ${a[0]:-0} + ${b[0]:-0} + ${c[0]:-0} + ${d[0]:-0} )) passed, $(( ${a[1]:-1} + ${b[1]:-1} + ${c[1]:-1} + ${d[1]:-1} )) failed"
exit "$status"
