#!/usr/bin/env bash
# Bounded HTTP load test of the release binary on this machine, reported as ratios against the
# trivial /healthz route measured in the same run (the HTTP ceiling of the machine).
#
# Builds target/release/medserve, writes the sample data into a temporary folder, serves it on
# 127.0.0.1:<free port>, and runs wrk (installed from Debian when missing) against:
#   healthz      GET /healthz                                   (baseline)
#   datasets     GET /v1/datasets
#   items_page   GET .../splits/train/items?limit=50
#   image_png    one image, default chain, PNG (same URL: cache hits after the first)
#   image_npy    the same image as .npy
#   rotate_32    every one of the 108 images in turn, size=32,32 (cold the first time)
#   slice_512    one 512x512 axial slice of the full-size CT (sample-data --large), PNG with a
#                CT window (cache hits after the first)
#   slices_512   all 200 axial slices of that CT in turn, as overlays (each rendered once)
#   volume_npy   a small volume through the seed's 3D chain as .npy (cache hits)
#   healthz_end  GET /healthz again, last: how far the machine's load drifted during the run
# Before any of these, one cold request for the full-size CT at 128x128x64 (decode + resize +
# scale + npy) is timed on its own and the server's peak RSS read right after it;
# then one sequential pass of cold requests (108 images at size=48,48, never asked for before)
# against 108 sequential /healthz requests over one connection, with curl.
# Prints a table and the server's peak RSS (VmHWM), and stops the server by its PID.
#
# Environment (all optional):
#   LOAD_DURATION     seconds per wrk run (default 10)
#   LOAD_CONNECTIONS  open connections (default 32)
#   LOAD_THREADS      wrk threads (default 2)
#   LOAD_PORT         port to listen on (default: a free one)
#   LOAD_SKIP_BUILD   1 = use the existing target/release/medserve
#   LOAD_BIN          another medserve binary to measure (e.g. a build of the commit before a
#                     change, for before/after rows from the same machine and hour)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION="${LOAD_DURATION:-10}"
CONNECTIONS="${LOAD_CONNECTIONS:-32}"
THREADS="${LOAD_THREADS:-2}"
for v in DURATION CONNECTIONS THREADS; do
    if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
        echo "error: LOAD_$v must be a positive whole number, got '${!v}'" >&2
        exit 2
    fi
done
if ((DURATION > 120)); then
    echo "error: LOAD_DURATION is capped at 120 seconds per run" >&2
    exit 2
fi

. scripts/lib.sh

load_prereqs curl python3
BIN="${LOAD_BIN:-${BIN}}"

WORK="$(mktemp -d)"
SERVER_PID=""
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    if [[ -n ${SERVER_PID} ]]; then stop_pid "${SERVER_PID}"; fi
    if [[ ${rc} -ne 0 && -f ${WORK}/server.log ]]; then
        echo "--- server log (last 30 lines) ---" >&2
        tail -n 30 "${WORK}/server.log" >&2 || true
    fi
    rm -rf "${WORK}"
    exit "${rc}"
}
trap cleanup EXIT

"${BIN}" sample-data --large "${WORK}/data" >/dev/null
PORT="${LOAD_PORT:-$(free_port)}"
BASE="http://127.0.0.1:${PORT}"
log "starting medserve on ${BASE}"
"${BIN}" serve --listen "127.0.0.1:${PORT}" --data "${WORK}/data" >"${WORK}/server.log" 2>&1 &
SERVER_PID=$!

if ! wait_http "${BASE}/readyz" "${SERVER_PID}"; then
    echo "error: medserve did not become ready within 10 s" >&2
    exit 1
fi

# Item paths of every split, from the API itself.
DS="/v1/datasets/medmnist"
: >"${WORK}/items.txt"
for split in train val test; do
    curl -fsS --max-time 10 "${BASE}${DS}/splits/${split}/items?limit=1000" |
        python3 -c 'import json, sys; [print(i["url"]) for i in json.load(sys.stdin)["items"]]' \
            >>"${WORK}/items.txt"
done
N_ITEMS=$(wc -l <"${WORK}/items.txt")
if ((N_ITEMS == 0)); then
    echo "error: the sample dataset listed no items" >&2
    exit 1
fi
FIRST="$(head -n 1 "${WORK}/items.txt")"
sed 's|$|/image?size=32,32|' "${WORK}/items.txt" >"${WORK}/rotate.txt"

# wrk prints a machine-readable line from done(); with a paths file, it cycles through it.
cat >"${WORK}/report.lua" <<'LUA'
-- With LOAD_PATHS_FILE set, requests cycle through the paths in that file (one per line);
-- without it, wrk sends its URL as usual (a static request, the cheapest for wrk).
local file = os.getenv("LOAD_PATHS_FILE")
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
if file and file ~= "" then
  local paths, i = {}, nil
  for line in io.lines(file) do paths[#paths + 1] = line end
  function request()
    -- Threads start at different places in the list.
    i = i or (id or 0) * 37
    i = i % #paths + 1
    return wrk.format("GET", paths[i])
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.1f %d %d %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout, summary.requests))
end
LUA
declare -A RPS P50 P99 NON2XX SOCKERR REQS
NAMES=()
# store NAME REQ_PER_S P50_US P99_US NON_2XX SOCKET_ERRORS REQUESTS
store() {
    RPS["$1"]=$2
    P50["$1"]=$3
    P99["$1"]=$4
    NON2XX["$1"]=$5
    SOCKERR["$1"]=$6
    REQS["$1"]=$7
}
run() {
    local name=$1 url=$2 paths=${3:-}
    log "wrk ${name}: ${DURATION}s, ${THREADS} threads, ${CONNECTIONS} connections: ${url}"
    local out
    out="$(LOAD_PATHS_FILE="${paths}" wrk -t "${THREADS}" -c "${CONNECTIONS}" -d "${DURATION}s" --timeout 10s \
        -s "${WORK}/report.lua" "${url}" | tee -a "${WORK}/wrk.log" | grep '^RESULT ')"
    local _ rps p50 p99 bad sock n
    read -r _ rps p50 p99 bad sock n <<<"${out}"
    store "${name}" "${rps}" "${p50}" "${p99}" "${bad}" "${sock}" "${n}"
    NAMES+=("${name}")
}

CT512="${BASE}/v1/datasets/large/splits/train/items/ct_512"
curl -fsS --max-time 10 -o /dev/null "${BASE}/v1/datasets/large/splits/train/items"
log "one cold request: the 512x512x200 CT at 128,128,64 through the seed's chain"
COLD_512="$(curl -fsS --max-time 60 -o /dev/null -w '%{time_total}' \
    "${CT512}/volume?size=128,128,64&a_min=-1000&a_max=1000")"
HWM_COLD="$(awk '/^VmHWM/ {print $2, $3}' "/proc/${SERVER_PID}/status")"
WARM_NEW="$(curl -fsS --max-time 60 -o /dev/null -w '%{time_total}' \
    "${CT512}/volume?size=128,128,64&a_min=-1000&a_max=1000&clip=true")"
for i in $(seq 0 199); do echo "/v1/datasets/large/splits/train/items/ct_512/slice?axis=2&index=${i}&part=overlay&preset=ct-abdomen"; done >"${WORK}/slices.txt"

run healthz "${BASE}/healthz"
run datasets "${BASE}/v1/datasets"
run items_page "${BASE}${DS}/splits/train/items?limit=50"
run image_png "${BASE}${FIRST}/image"
run image_npy "${BASE}${FIRST}/image?format=npy"
run rotate_32 "${BASE}/" "${WORK}/rotate.txt"
run slice_512 "${CT512}/slice?preset=ct-abdomen"
run slices_512 "${BASE}/" "${WORK}/slices.txt"
run volume_npy "${BASE}/v1/datasets/Task09_Spleen/splits/train/items/spleen_10/volume?size=32,32,16&a_min=-1000&a_max=1000"
# The baseline again: on a shared machine, a first and last /healthz far apart say the rows
# between were measured under different load (ratios stay against the first).
run healthz_end "${BASE}/healthz"

# Sequential passes: one curl process, one keep-alive connection, each path once.
seq_pass() {
    local paths=$1 suffix=$2 cfg="${WORK}/curl.cfg"
    : >"${cfg}"
    while read -r p; do
        printf 'url = "%s%s%s"\noutput = "/dev/null"\n' "${BASE}" "${p}" "${suffix}" >>"${cfg}"
    done <"${paths}"
    curl -sS --max-time 120 -K "${cfg}" -w '%{http_code} %{time_total}\n' |
        python3 -c '
import statistics, sys
rows = [l.split() for l in sys.stdin if l.strip()]
t = sorted(float(r[1]) * 1e6 for r in rows)
bad = sum(1 for r in rows if not r[0].startswith("2"))
print("%.1f %d %d %d %d" % (len(t) / (sum(t) / 1e6), statistics.median(t),
      t[int(0.99 * (len(t) - 1))], bad, len(t)))'
}
for _ in $(seq "${N_ITEMS}"); do echo /healthz; done >"${WORK}/healthz.txt"
log "sequential passes: ${N_ITEMS} x /healthz, then ${N_ITEMS} never-seen images at size=48,48"
read -r rps p50 p99 bad n <<<"$(seq_pass "${WORK}/healthz.txt" "")"
store seq_healthz "${rps}" "${p50}" "${p99}" "${bad}" 0 "${n}"
read -r rps p50 p99 bad n <<<"$(seq_pass "${WORK}/items.txt" "/image?size=48,48")"
store seq_cold_48 "${rps}" "${p50}" "${p99}" "${bad}" 0 "${n}"

# Cache behaviour: every image is decoded once; transforms = 1 (default 64x64 chain) + one per
# item at 32x32 + one per item at 48x48 when the cache and request coalescing work.
METRICS="$(curl -fsS --max-time 10 "${BASE}/metrics" |
    grep -E '^medserve_(storage_get_total|decode_total|transform_total|cache_entries) ' |
    tr '\n' ' ' || true)"
HWM="$(awk '/^VmHWM/ {print $2, $3}' "/proc/${SERVER_PID}/status")"
RSS="$(awk '/^VmRSS/ {print $2, $3}' "/proc/${SERVER_PID}/status")"

ratio() { python3 -c "print('%.3f' % ($1 / $2))"; }
echo
echo "medserve load test, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m)," \
    "wrk ${THREADS} threads x ${CONNECTIONS} connections x ${DURATION}s per row," \
    "${N_ITEMS} sample items"
printf '%-12s %10s %8s %9s %9s %8s %8s %8s %9s %8s\n' \
    test req/s x_rps p50_us p99_us x_p50 x_p99 non-2xx sock_err requests
print_row() {
    local n=$1 base=$2
    printf '%-12s %10s %8s %9s %9s %8s %8s %8s %9s %8s\n' "${n}" "${RPS[$n]}" \
        "$(ratio "${RPS[$n]}" "${RPS[$base]}")" "${P50[$n]}" "${P99[$n]}" \
        "$(ratio "${P50[$n]}" "${P50[$base]}")" "$(ratio "${P99[$n]}" "${P99[$base]}")" \
        "${NON2XX[$n]}" "${SOCKERR[$n]}" "${REQS[$n]}"
}
for n in "${NAMES[@]}"; do print_row "${n}" healthz; done
echo "-- sequential, 1 connection (curl), ratios against seq_healthz --"
for n in seq_healthz seq_cold_48; do print_row "${n}" seq_healthz; done
echo
echo "x_rps = req/s / baseline req/s; x_p50, x_p99 = latency / baseline latency;" \
    "non-2xx = wrk's HTTP errors (status >= 400) or curl's non-2xx codes"
echo "server peak RSS (VmHWM): ${HWM}; RSS at the end: ${RSS}"
echo "512x512x200 int16 CT: cold request for (1,128,128,64) float32 ${COLD_512} s" \
    "(peak RSS right after it: ${HWM_COLD}); a new transform of the cached volume ${WARM_NEW} s"
# Decodes: every image once, the full-size CT and its mask (overlays), spleen_10. Transforms:
# the images' chains (1 + 2 per item) and three volume chains.
echo "server metrics: ${METRICS:-unavailable} (expected: decodes $((N_ITEMS + 3))," \
    "transforms $((1 + 2 * N_ITEMS + 3)))"

fail=0
for n in "${NAMES[@]}" seq_healthz seq_cold_48; do
    if [[ ${NON2XX[$n]} != 0 || ${SOCKERR[$n]} != 0 ]]; then
        echo "error: ${n} had ${NON2XX[$n]} non-2xx answers and ${SOCKERR[$n]} socket errors" >&2
        fail=1
    fi
done
exit "${fail}"
