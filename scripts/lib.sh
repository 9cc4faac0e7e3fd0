# Helpers shared by scripts/*.sh. Source it (`. scripts/lib.sh`); it only defines functions.
# shellcheck shell=bash

log() { printf '==> %s\n' "$*" >&2; }

# Runs a command as root: directly when we are root (CI and our machines), else through sudo.
as_root() {
    if [[ ${EUID} -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "error: need root (or sudo) to run: $*" >&2
        return 1
    fi
}

# Installs Debian packages, non-interactively.
apt_install() {
    log "installing $* (Debian)"
    as_root env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -qq "$@" >/dev/null
    hash -r
}

# A TCP port on 127.0.0.1 that is free right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Waits up to 10 s for URL to answer 2xx; fails otherwise, or at once when PID (if given) exits.
wait_http() {
    local url=$1 pid=${2:-}
    for _ in $(seq 100); do
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.1
    done
    return 1
}

# Processes started by `serve_medserve` (and `started`), stopped by `stop_started`: scripts
# call it from their EXIT trap, so only what they started is ended, by PID.
STARTED_PIDS=()
started() { STARTED_PIDS+=("$1"); }
stop_started() {
    local p
    for p in "${STARTED_PIDS[@]}"; do stop_pid "$p"; done
}

# stop_pid PID: SIGTERM, up to 5 s for a graceful exit, then SIGKILL; reaps it.
stop_pid() {
    local pid=$1
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# serve_medserve BIN LOG [serve flags...]: starts `BIN serve` on a free 127.0.0.1 port with
# the flags, logging to LOG, and waits until /readyz answers. Sets MEDSERVE_URL and
# MEDSERVE_PID; on failure prints the log and returns 1.
serve_medserve() {
    local bin=$1 logfile=$2 port
    shift 2
    port=$(free_port)
    "$bin" serve --listen "127.0.0.1:$port" "$@" >"$logfile" 2>&1 &
    MEDSERVE_PID=$!
    started "$MEDSERVE_PID"
    MEDSERVE_URL="http://127.0.0.1:$port"
    wait_http "$MEDSERVE_URL/readyz" "$MEDSERVE_PID" || { cat "$logfile"; return 1; }
}

# python_venv DIR REQUIREMENTS: a venv at DIR (created once, then reused) with REQUIREMENTS
# installed; Debian's python3-venv is installed first when the interpreter lacks venv.
python_venv() {
    local venv=$1 reqs=$2
    if ! "$venv/bin/python" -c 'import sys' >/dev/null 2>&1; then
        rm -rf "$venv"
        if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
            apt_install python3-venv
        fi
        log "creating $venv"
        mkdir -p "$(dirname "$venv")"
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"
}

# build_debug_medserve: builds target/debug/medserve as `cargo test` does. A plain `cargo build
# --bin medserve` resolves features without the dev-dependencies (aws-sdk-s3 with
# behavior-version-latest, ...), so it compiled a second debug copy of the AWS SDK and of
# everything above it; building the small test target that runs the binary (tests/binary.rs)
# reuses the test build instead.
build_debug_medserve() {
    cargo test --locked --quiet --no-run --test binary
}

# load_prereqs TOOL...: the load scripts' common start: the named tools must exist, wrk is
# installed from Debian when missing, and target/release/medserve is built unless
# LOAD_SKIP_BUILD=1. Sets BIN.
load_prereqs() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || {
            echo "error: $tool is required" >&2
            exit 1
        }
    done
    command -v wrk >/dev/null 2>&1 || apt_install wrk
    if [[ ${LOAD_SKIP_BUILD:-0} != 1 ]]; then
        log "cargo build --release --locked"
        cargo build --release --locked
    fi
    # shellcheck disable=SC2034 # read by the calling script
    BIN="$PWD/target/release/medserve"
}
