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
if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
  rm -rf "$venv"
  # Debian's python3 ships without venv/ensurepip; they come with python3-venv.
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3-venv
  fi
  log "creating $venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tools/requirements-check.txt

cargo build --locked --quiet --bin medserve
bin="$PWD/target/debug/medserve"
work=$(mktemp -d)
port=$(free_port)

pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" sample-data "$work/data" >/dev/null
"$bin" serve --data "$work/data" --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
pid=$!
wait_http "http://127.0.0.1:$port/readyz" "$pid" || { cat "$work/server.log"; exit 1; }

if ! "$venv/bin/python" tools/check_responses.py --base "http://127.0.0.1:$port" --data "$work/data"; then
  echo "--- server log (last 40 lines)"
  tail -n 40 "$work/server.log"
  false
fi
