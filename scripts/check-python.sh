#!/usr/bin/env bash
# Reads the real binary's volume and slice responses with numpy and nibabel, as users do:
# npy/npz load with the right shape, dtype and values, NIfTI (.nii.gz and .nii) loads with the
# right shape, dtype and affine, slices match nibabel's get_fdata() of the source file, and
# the item metadata matches nibabel's header reading (tools/check_responses.py). Python
# packages come from tools/requirements-check.txt, installed into a venv under
# target/py-check (created once, then reused). Only 127.0.0.1 is contacted by the checks.
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

if ! "$venv/bin/python" tools/check_responses.py --base "$MEDSERVE_URL" --data "$work/data"; then
  echo "--- server log (last 40 lines)"
  tail -n 40 "$work/server.log"
  false
fi
