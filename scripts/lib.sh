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
