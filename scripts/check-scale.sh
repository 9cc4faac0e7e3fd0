#!/usr/bin/env bash
# Scale-out proven on loopback (issue 13 §3): three release replicas of medserve behind
# Debian's nginx hashing on dataset/split/item, a bounded wrk load with `kill -9` of one
# replica, its restart, and round robin for comparison; then a hot item behind nginx and
# behind HAProxy's bounded-load consistent hashing (tools/check_scale.py says what is
# measured). Installs nginx, HAProxy and wrk from Debian when missing, without starting their
# system services. Ends with `scale checks: N passed, M failed`.
#
#   scripts/check-scale.sh              # builds target/release/medserve if it is missing
#   SCALE_SKIP_BUILD=1 scripts/check-scale.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# Debian's nginx package starts its service on 0.0.0.0:80 when installed; a policy-rc.d that
# refuses every start keeps it stopped (only our own nginx, on 127.0.0.1, runs).
install_quietly() {
    local policy=/usr/sbin/policy-rc.d placed=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 0755 "$policy"
        placed=1
    fi
    apt_install "$@"
    if [[ $placed -eq 1 ]]; then
        as_root rm -f "$policy"
    fi
}

missing=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
if [[ ${#missing[@]} -gt 0 ]]; then
    install_quietly "${missing[@]}"
fi
PATH="$PATH:/usr/sbin"

bin=target/release/medserve
if [[ ${SCALE_SKIP_BUILD:-0} != 1 ]]; then
    log "cargo build --release (a no-op when the load stage built it)"
    cargo build --release --locked --quiet
fi
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
"$bin" sample-data "$data" >/dev/null
log "nginx: $(nginx -v 2>&1); $(haproxy -v | head -n 1)"
python3 tools/check_scale.py --bin "$bin" --data "$data"
