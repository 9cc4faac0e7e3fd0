#!/usr/bin/env bash
# The Python client (clients/python) against the real debug binary serving the sample data:
# pytest runs clients/python/tests with real torch and real DataLoader workers (ItemDataset
# against the listing and the image route, BatchLoader coverage across ranks x workers, exact
# resumption, W=2 -> W=1, a model that learns, the numpy-only path, retries on 503).
#
# Python packages come from clients/python/requirements-ci.txt (every package pinned, torch
# without its GPU stack: ../shared/FIELD-NOTES.md), installed with --no-deps into a venv
# OUTSIDE the clone, ${XDG_CACHE_HOME:-$HOME/.cache}/medserve/client-venv-<hash of the
# requirements and the interpreter>: created once (~1-3 min, ~4 GB; 59 s here), then reused by every run
# on this machine; a venv of another hash is removed when a new one is made. The client itself
# is reinstalled from the clone every run (`pip install ./clients/python`).
#
# Only 127.0.0.1 is contacted by the tests. Ends with `client tests: N passed, M failed` and
# the stage's own time.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

t0=$(date +%s)
reqs=clients/python/requirements-ci.txt
cache="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/medserve"
hash=$({ cat "$reqs"; python3 --version; echo "install: pip --no-deps -r"; } | sha256sum | cut -c1-16)
venv="$cache/client-venv-$hash"

# client_venv: the venv at $venv, complete (a `.complete` marker is written last, so a run
# killed mid-install is redone, not reused).
client_venv() {
    if [[ -f $venv/.complete ]] && "$venv/bin/python" -c 'import torch, numpy, urllib3, pytest' 2>/dev/null; then
        log "reusing $venv"
        return 0
    fi
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then apt_install python3-venv; fi
    mkdir -p "$cache"
    local old
    for old in "$cache"/client-venv-*; do
        [[ -e $old && $old != "$venv" ]] || continue
        log "removing $old (another requirements hash)"
        rm -rf "$old"
    done
    rm -rf "$venv"
    log "creating $venv from $reqs"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -r "$reqs"
    "$venv/bin/python" -c 'import torch; torch.ones(1)'
    touch "$venv/.complete"
}

# One run at a time per machine creates the venv (flock where util-linux has it).
if command -v flock >/dev/null 2>&1; then
    mkdir -p "$cache"
    exec 9>"$cache/client-venv.lock"
    flock 9
fi
client_venv
t_venv=$(date +%s)

# The client as users install it (not editable), from this clone.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --no-build-isolation --force-reinstall ./clients/python
rm -rf clients/python/build clients/python/src/*.egg-info

build_debug_medserve
bin="$PWD/target/debug/medserve"
t_build=$(date +%s)
work=$(mktemp -d)
trap 'stop_started; rm -rf "$work"' EXIT

"$bin" sample-data "$work/data" >/dev/null
serve_medserve "$bin" "$work/server.log" --data "$work/data"

export MEDSERVE_URL MEDSERVE_BIN="$bin" MEDSERVE_DATA="$work/data"
unset MEDSERVE_API_KEY

rc=0
# From outside the clone, so the tests import the installed package, not the source folder.
root=$PWD
(cd "$work" && "$venv/bin/python" -m pytest "$root/clients/python/tests" -p no:cacheprovider \
    -q -rs --durations=5) 2>&1 | tee "$work/pytest.out" || rc=$?
[ "$rc" -eq 0 ] || { echo "--- server log (last 40 lines)"; tail -n 40 "$work/server.log"; }

# pytest's closing line, e.g. `2 failed, 28 passed, 1 skipped in 31.2s`.
summary=$(grep -E '^=*[ ]*[0-9]+ (passed|failed|error)' "$work/pytest.out" | tail -n 1 || true)
n() { sed -nE "s/.*[^0-9]([0-9]+) $1.*/\1/p" <<<" $summary" | head -n 1; }
passed=$(n passed)
failures=$(n failed)
errors=$(n error)
skipped=$(n skipped)
failed=$((${failures:-0} + ${errors:-0}))
t_end=$(date +%s)
echo "client stage: $((t_end - t0)) s (venv $((t_venv - t0)) s, client install + debug build" \
    "$((t_build - t_venv)) s, server + pytest $((t_end - t_build)) s)"
[[ -n $passed || $failed -gt 0 ]] || failed=1 # no tests ran: a failure
echo "client tests: ${passed:-0} passed, ${failed} failed${skipped:+ ($skipped skipped)}"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
