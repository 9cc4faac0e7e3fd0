#!/usr/bin/env bash
# Bounded mixed-traffic load test of the release binary: LOAD_DURATION seconds (default 60, at
# most 120) at LOAD_CONNECTIONS connections (default 64) over a deterministic weighted mix of
# listings/metadata, 2D images, slices and volumes on the sample data, with a deliberately small
# cache (--cache-mb LOAD_CACHE_MB, default 64) so that it fills and evicts during the run.
#
# Steps:
#   1. builds target/release/medserve (unless LOAD_SKIP_BUILD=1), writes the sample data (not
#      --large) into a temporary folder and serves it on 127.0.0.1:<free port>;
#   2. lists every dataset, split and item through the API and writes every request of the mix
#      (tools/load_mix.lua reads them): listings and item metadata; each image at size=N,N for
#      N in 16,24,32,48,64,96,128 as png and npy; slices of every volume item along every axis
#      (0, 1, 2 and the named planes), every index, every channel, parts image/label/overlay
#      (label and overlay where the item has a mask), several windows, png and npy; volumes at
#      X,Y,Z with each side in 16,24,32,48,64, as npy and nii.gz, image (raw, and for CT also
#      a_min=-1000&a_max=1000) and label where there is one;
#   3. warm-up and check: one sequential pass (curl) that decodes every object once and asks for
#      a spread of the mix's requests; any non-2xx there stops the test with its path and body;
#   4. baseline: wrk on /healthz for LOAD_BASELINE_DURATION seconds (default 10);
#   5. the mix: wrk -t LOAD_THREADS -c LOAD_CONNECTIONS -d LOAD_DURATION --latency --timeout 30s
#      (weights: listing 15, image 40, slice 30, volume 15; change with LOAD_MIX_WEIGHTS), while
#      a background loop samples the server's VmRSS every second; /metrics is read before and
#      after (decodes, transforms, cache entries and bytes) and VmHWM at the end.
# Prints a table, one summary line and a closing `load-mix checks: N passed, M failed` (the
# warm-up, the mix's answers, the RSS bound), and stops the server by its PID (TERM, then KILL).
# Latency is reported, never asserted. Exits non-zero when any answer was neither 2xx nor 304,
# on any socket error (connect, read, write, timeout), when the server died, or when its peak
# RSS (VmHWM) exceeded the cache cap + LOAD_MAX_OVERHEAD_MB.
#
# Environment (all optional):
#   LOAD_DURATION           seconds of the mix (default 60, at most 120)
#   LOAD_CONNECTIONS        open connections (default 64)
#   LOAD_THREADS            wrk threads (default 2)
#   LOAD_BASELINE_DURATION  seconds of the /healthz baseline (default 10, at most 120)
#   LOAD_CACHE_MB           the server's --cache-mb (default 64)
#   LOAD_MAX_OVERHEAD_MB    allowed peak RSS above the cache cap, MiB (default 256)
#   LOAD_MIX_WEIGHTS        e.g. listing=15,image=40,slice=30,volume=15 (the default)
#   LOAD_MIX_SEED           base of wrk's per-thread random seeds (default 1)
#   LOAD_PORT               port to listen on (default: a free one)
#   LOAD_SKIP_BUILD         1 = use the existing target/release/medserve
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION="${LOAD_DURATION:-60}"
CONNECTIONS="${LOAD_CONNECTIONS:-64}"
THREADS="${LOAD_THREADS:-2}"
BASELINE_DURATION="${LOAD_BASELINE_DURATION:-10}"
CACHE_MB="${LOAD_CACHE_MB:-64}"
MAX_OVERHEAD_MB="${LOAD_MAX_OVERHEAD_MB:-256}"
MIX_SEED="${LOAD_MIX_SEED:-1}"
for v in DURATION CONNECTIONS THREADS BASELINE_DURATION CACHE_MB MAX_OVERHEAD_MB MIX_SEED; do
    if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
        echo "error: LOAD_$v must be a positive whole number, got '${!v}'" >&2
        exit 2
    fi
done
if ((DURATION > 120 || BASELINE_DURATION > 120)); then
    echo "error: LOAD_DURATION and LOAD_BASELINE_DURATION are capped at 120 seconds" >&2
    exit 2
fi
if ((THREADS > CONNECTIONS)); then
    echo "error: LOAD_THREADS ($THREADS) must not exceed LOAD_CONNECTIONS ($CONNECTIONS)" >&2
    exit 2
fi
export LOAD_MIX_WEIGHTS="${LOAD_MIX_WEIGHTS:-listing=15,image=40,slice=30,volume=15}"
export LOAD_MIX_SEED="${MIX_SEED}"

# shellcheck source=scripts/lib.sh disable=SC1091 # followed with shellcheck -x
. scripts/lib.sh

load_prereqs curl python3 awk
LUA="$PWD/tools/load_mix.lua"
[[ -x ${BIN} ]] || {
    echo "error: ${BIN} is missing (run without LOAD_SKIP_BUILD=1)" >&2
    exit 1
}

WORK="$(mktemp -d)"
SERVER_PID=""
SAMPLER_PID=""
stop_sampler() {
    if [[ -n ${SAMPLER_PID} ]]; then
        kill "${SAMPLER_PID}" 2>/dev/null || true
        wait "${SAMPLER_PID}" 2>/dev/null || true
        SAMPLER_PID=""
    fi
}
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    stop_sampler
    if [[ -n ${SERVER_PID} ]]; then stop_pid "${SERVER_PID}"; fi
    if [[ ${rc} -ne 0 && -f ${WORK}/server.log ]]; then
        echo "--- server log (last 30 lines) ---" >&2
        tail -n 30 "${WORK}/server.log" >&2 || true
    fi
    rm -rf "${WORK}"
    exit "${rc}"
}
trap cleanup EXIT

LOADAVG_START="$(cut -d' ' -f1-3 /proc/loadavg)"
"${BIN}" sample-data "${WORK}/data" >/dev/null
PORT="${LOAD_PORT:-$(free_port)}"
BASE="http://127.0.0.1:${PORT}"
log "starting medserve on ${BASE} with --cache-mb ${CACHE_MB}"
"${BIN}" serve --listen "127.0.0.1:${PORT}" --data "${WORK}/data" --cache-mb "${CACHE_MB}" \
    >"${WORK}/server.log" 2>&1 &
SERVER_PID=$!
if ! wait_http "${BASE}/readyz" "${SERVER_PID}"; then
    echo "error: medserve did not become ready within 10 s" >&2
    exit 1
fi

# KiB of VmRSS or VmHWM of the server.
proc_kib() { awk -v f="$1:" '$1 == f {print $2}' "/proc/${SERVER_PID}/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
ms() { awk -v u="$1" 'BEGIN { printf "%.1f", u / 1000 }'; }

# --- 2. every request of the mix, from the API --------------------------------------------------
log "listing every dataset, split and item"
python3 - "${BASE}" "${WORK}" <<'PY'
import json, sys, urllib.parse, urllib.request

base, work = sys.argv[1], sys.argv[2]

def get(path):
    with urllib.request.urlopen(base + path, timeout=30) as r:
        return json.load(r)

def items_of(path):
    out, offset = [], 0
    while True:
        page = get(f"{path}?offset={offset}&limit=1000")
        out += page["items"]
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return out, page["total"]

lines, warm, objects = [], [], 0

def add(cat, group, path, key="-"):
    lines.append(f"{cat}\t{group}\t{path}\t{key}")

SIZES_2D = (16, 24, 32, 48, 64, 96, 128)
SIDES_3D = (16, 24, 32, 48, 64)
PLANES = {"S": "axial", "I": "axial", "A": "coronal", "P": "coronal", "L": "sagittal", "R": "sagittal"}
CT_WINDOWS = ("window=40,400", "preset=ct-abdomen", "preset=ct-bone", "a_min=-160&a_max=240", "")
MRI_WINDOWS = ("preset=mri", "window=500,1000", "")

add("listing", "catalog", "/v1/datasets")
for d in sorted(get("/v1/datasets"), key=lambda d: d["name"]):
    name = d["name"]
    ds = "/v1/datasets/" + urllib.parse.quote(name, safe="")
    add("listing", name, ds)
    add("listing", name, ds + "/splits")
    classification = d["kind"] == "classification"
    for split in d["splits"]:
        sp = f"{ds}/splits/{urllib.parse.quote(split, safe='')}"
        items, total = items_of(sp + "/items")
        for limit in (1, 10, 100, 1000):
            for offset in sorted({0, total // 2}):
                add("listing", name, f"{sp}/items?offset={offset}&limit={limit}")
        if classification:
            add("listing", name, sp + "/classes")
            for c in get(sp + "/classes"):
                add("listing", name, f"{sp}/items?class={urllib.parse.quote(c['name'], safe='')}&limit=5")
        for it in items:
            url = it["url"]
            objects += 1
            add("listing", name, url)
            if classification:
                for n in SIZES_2D:
                    for fmt in ("png", "npy"):
                        add("image", url, f"{url}/image?size={n},{n}&format={fmt}", f"{url}|{n}")
                warm.append(f"{url}/image?size=64,64&format=png")
                continue
            meta = get(url)
            vol = meta["volume"]
            shape, channels = vol["shape"], vol["channels"]
            labelled = bool(meta.get("has_label"))
            objects += labelled
            ct = vol["dtype"] in ("int16", "int32", "uint16") and channels == 1
            windows = CT_WINDOWS if ct else MRI_WINDOWS
            axes = [(str(a), shape[a]) for a in range(3)]
            axes += [(PLANES[vol["orientation"][a]], shape[a]) for a in range(3)]
            parts = [("image", w, "png") for w in windows] + [("image", "", "npy")]
            if labelled:
                parts += [("label", "", "png"), ("label", "", "npy")]
                parts += [("overlay", w, "png") for w in windows]
            for axis, n in axes:
                for index in range(n):
                    for ch in range(channels):
                        for part, window, fmt in parts:
                            q = f"axis={axis}&index={index}&part={part}&format={fmt}"
                            q += f"&channel={ch}" if channels > 1 else ""
                            q += f"&{window}" if window else ""
                            add("slice", url, f"{url}/slice?{q}")
            warm.append(f"{url}/slice?part={'overlay' if labelled else 'image'}")
            scales = ("", "&a_min=-1000&a_max=1000") if ct else ("",)
            for x in SIDES_3D:
                for y in SIDES_3D:
                    for z in SIDES_3D:
                        size = f"{x},{y},{z}"
                        for fmt in ("npy", "nii.gz"):
                            for s in scales:
                                add("volume", url, f"{url}/volume?size={size}&format={fmt}{s}",
                                    f"{url}|image|{size}|{s}")
                            if labelled:
                                add("volume", url, f"{url}/volume?size={size}&format={fmt}&part=label",
                                    f"{url}|label|{size}")

with open(f"{work}/mix.tsv", "w") as f:
    f.write("\n".join(lines) + "\n")
# Warm-up: every object once, then a spread of the mix (every 211th request).
warm += [l.split("\t")[2] for l in lines[::211]]
with open(f"{work}/warm.txt", "w") as f:
    f.write("\n".join(warm) + "\n")
counts = {}
for l in lines:
    counts[l.split("\t")[0]] = counts.get(l.split("\t")[0], 0) + 1
with open(f"{work}/mix.env", "w") as f:
    f.write(f"OBJECTS={objects}\n")
    for c in ("listing", "image", "slice", "volume"):
        f.write(f"PATHS_{c.upper()}={counts.get(c, 0)}\n")
    f.write(f"N_WARM={len(warm)}\n")
PY
OBJECTS="" PATHS_LISTING="" PATHS_IMAGE="" PATHS_SLICE="" PATHS_VOLUME="" N_WARM=""
# shellcheck source=/dev/null # written just above
. "${WORK}/mix.env"
log "mix: ${PATHS_LISTING} listing, ${PATHS_IMAGE} image, ${PATHS_SLICE} slice and" \
    "${PATHS_VOLUME} volume requests over ${OBJECTS} stored objects; weights ${LOAD_MIX_WEIGHTS}"

# --- 3. warm-up and check -----------------------------------------------------------------------
log "warm-up: ${N_WARM} sequential requests (every object decoded once, a spread of the mix)"
: >"${WORK}/curl.cfg"
while read -r p; do
    printf 'url = "%s%s"\noutput = "/dev/null"\n' "${BASE}" "${p}" >>"${WORK}/curl.cfg"
done <"${WORK}/warm.txt"
curl -sS --max-time 300 -K "${WORK}/curl.cfg" -w '%{http_code} %{url_effective}\n' \
    >"${WORK}/warm.out"
if awk '$1 !~ /^2/ {bad = 1} END {exit !bad}' "${WORK}/warm.out"; then
    echo "error: the warm-up had answers that are not 2xx:" >&2
    awk '$1 !~ /^2/' "${WORK}/warm.out" | head -n 5 | while read -r code url; do
        echo "  ${code} ${url}: $(curl -sS --max-time 30 "${url}" | head -c 400)" >&2
    done
    exit 1
fi
if (($(wc -l <"${WORK}/warm.out") != N_WARM)); then
    echo "error: the warm-up answered $(wc -l <"${WORK}/warm.out") of ${N_WARM} requests" >&2
    exit 1
fi

declare -A M0 M1
# metrics ARRAY_NAME: reads the counters and gauges we report from /metrics.
metrics() {
    local -n into=$1
    local name value
    while read -r name value; do
        # shellcheck disable=SC2034 # a reference to the caller's array
        into["${name#medserve_}"]=${value}
    done < <(curl -fsS --max-time 10 "${BASE}/metrics" |
        awk '/^medserve_(decode_total|transform_total|storage_get_total|cache_entries|cache_bytes) / {print $1, $2}')
}

# --- 4. baseline --------------------------------------------------------------------------------
declare -A HZ MIX
# wrk_run ARRAY_NAME SECONDS URL [PATHS_FILE]: runs wrk, keeps its output, parses RESULT.
wrk_run() {
    local -n res=$1
    local seconds=$2 url=$3 paths=${4:-} out="${WORK}/wrk-$1.out" kv
    LOAD_MIX_PATHS="${paths}" wrk -t "${THREADS}" -c "${CONNECTIONS}" -d "${seconds}s" \
        --latency --timeout 30s -s "${LUA}" "${url}" >"${out}" 2>&1 || {
        echo "error: wrk failed:" >&2
        cat "${out}" >&2
        exit 1
    }
    local line
    line="$(grep -m1 '^RESULT ' "${out}" || true)"
    if [[ -z ${line} ]]; then
        echo "error: wrk printed no RESULT line:" >&2
        cat "${out}" >&2
        exit 1
    fi
    for kv in ${line#RESULT }; do
        # shellcheck disable=SC2034 # a reference to the caller's array
        res["${kv%%=*}"]=${kv#*=}
    done
}
log "baseline: wrk /healthz, ${BASELINE_DURATION}s, ${THREADS} threads x ${CONNECTIONS} connections"
wrk_run HZ "${BASELINE_DURATION}" "${BASE}/healthz"

# --- 5. the mix ---------------------------------------------------------------------------------
metrics M0
RSS_START="$(proc_kib VmRSS)"
(
    t=0
    while kill -0 "${SERVER_PID}" 2>/dev/null; do
        echo "${t} $(proc_kib VmRSS)"
        sleep 1
        t=$((t + 1))
    done
) >"${WORK}/rss.txt" 2>/dev/null &
SAMPLER_PID=$!
LOADAVG_MIX="$(cut -d' ' -f1-3 /proc/loadavg)"
log "mix: wrk ${DURATION}s, ${THREADS} threads x ${CONNECTIONS} connections (load average ${LOADAVG_MIX})"
wrk_run MIX "${DURATION}" "${BASE}/" "${WORK}/mix.tsv"
stop_sampler
LOADAVG_END="$(cut -d' ' -f1-3 /proc/loadavg)"

# Checks counted in the closing line: the warm-up (any answer that was not 2xx stopped the test
# there), the mix's answers, the peak RSS.
passed=1
fail=0
if ! kill -0 "${SERVER_PID}" 2>/dev/null; then
    echo "error: medserve exited during the run" >&2
    exit 1
fi
metrics M1
HWM="$(proc_kib VmHWM)"
RSS_END="$(proc_kib VmRSS)"
RSS_MAX="$(awk 'NF == 2 && $2 > m {m = $2} END {print m + 0}' "${WORK}/rss.txt")"
RSS_SERIES="$(awk 'NF == 2 {last = $1 "s " sprintf("%.0f", $2 / 1024)}
    NF == 2 && $1 % 10 == 0 {printf "%s%ds %.0f", sep, $1, $2 / 1024; sep = ", "; last = ""}
    END {if (last != "") printf "%s%s", sep, last}' "${WORK}/rss.txt")"
# Warnings and errors the server logged (without colours).
sed 's/\x1b\[[0-9;]*m//g' "${WORK}/server.log" | grep -E ' (WARN|ERROR) |panicked' >"${WORK}/server-problems.log" || true
N_PROBLEMS="$(wc -l <"${WORK}/server-problems.log")"

# --- report -------------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f%%", (b > 0 ? 100 * a / b : 0) }'; }
sock_errors() {
    local -n r=$1
    local c=${r[connect]} rd=${r[read]} w=${r[write]} t=${r[timeout]}
    echo $((c + rd + w + t))
}
HZ_SOCK="$(sock_errors HZ)"
MIX_SOCK="$(sock_errors MIX)"
MIX_NON2XX="${MIX[non2xx]}"
((MIX[status_errors] > MIX_NON2XX)) && MIX_NON2XX="${MIX[status_errors]}"
ERRORS=$((MIX_NON2XX + MIX_SOCK))
X_HZ="$(ratio "${MIX[rps]}" "${HZ[rps]}")"
CAP_KIB=$((CACHE_MB * 1024))
OVERHEAD_KIB=$((HWM - CAP_KIB))
BOUND_KIB=$(((CACHE_MB + MAX_OVERHEAD_MB) * 1024))
DECODES=$((M1[decode_total] - M0[decode_total]))
TRANSFORMS=$((M1[transform_total] - M0[transform_total]))
GETS=$((M1[storage_get_total] - M0[storage_get_total]))

echo
echo "medserve load-mix, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -m); load average" \
    "${LOADAVG_START} at the start, ${LOADAVG_MIX} when the mix began, ${LOADAVG_END} at its end"
echo "--- wrk output of the mix ---"
grep -v -E '^(RESULT|BAD) ' "${WORK}/wrk-MIX.out"
echo "-----------------------------"
printf '%-8s %5s %9s %9s %9s %8s %8s %8s %8s %8s %8s\n' \
    run secs requests req/s x_healthz p50_ms p90_ms p99_ms max_ms non-2xx sock_err
row() {
    local -n r=$1
    local name=$2 secs=$3 non2xx=${r[non2xx]:-0}
    ((r[status_errors] > non2xx)) && non2xx=${r[status_errors]}
    printf '%-8s %5s %9s %9s %9s %8s %8s %8s %8s %8s %8s\n' "${name}" "${secs}" "${r[requests]}" \
        "${r[rps]}" "$(ratio "${r[rps]}" "${HZ[rps]}")" "$(ms "${r[p50_us]}")" "$(ms "${r[p90_us]}")" \
        "$(ms "${r[p99_us]}")" "$(ms "${r[max_us]}")" "${non2xx}" "$(sock_errors "$1")"
}
row HZ healthz "${BASELINE_DURATION}"
row MIX mix "${DURATION}"
echo "mix by category (sent, share, non-2xx): listing ${MIX[sent_listing]} $(pct "${MIX[sent_listing]}" "${MIX[requests]}") ${MIX[bad_listing]};" \
    "image ${MIX[sent_image]} $(pct "${MIX[sent_image]}" "${MIX[requests]}") ${MIX[bad_image]};" \
    "slice ${MIX[sent_slice]} $(pct "${MIX[sent_slice]}" "${MIX[requests]}") ${MIX[bad_slice]};" \
    "volume ${MIX[sent_volume]} $(pct "${MIX[sent_volume]}" "${MIX[requests]}") ${MIX[bad_volume]}" \
    "(sent counts requests started; wrk counts answers); status codes of non-2xx: ${MIX[codes]};" \
    "$(awk -v b="${MIX[bytes]}" -v s="${MIX[duration_s]}" 'BEGIN { printf "%.1f MiB/s", b / s / 1048576 }') read"
echo "paths in the mix: ${PATHS_LISTING} listing, ${PATHS_IMAGE} image, ${PATHS_SLICE} slice," \
    "${PATHS_VOLUME} volume; ${OBJECTS} stored objects (images, volumes, masks)"
echo "cache (cap ${CACHE_MB} MiB): before the mix ${M0[cache_entries]} entries, $(mib $((M0[cache_bytes] / 1024))) MiB;" \
    "after ${M1[cache_entries]} entries, $(mib $((M1[cache_bytes] / 1024))) MiB"
echo "during the mix: ${DECODES} decodes and ${GETS} store GETs (every one of the ${OBJECTS} objects" \
    "was decoded in the warm-up, ${M0[decode_total]} decodes before the mix: each of these is a" \
    "re-decode after eviction); ${TRANSFORMS} transform chains computed for" \
    "${MIX[distinct_transform_keys]} distinct chains requested ($((TRANSFORMS - MIX[distinct_transform_keys]))" \
    "more than distinct: recomputed after eviction)"
echo "server RSS: $(mib "${RSS_START}") MiB after warm-up and baseline; peak sampled during the mix" \
    "$(mib "${RSS_MAX}") MiB; $(mib "${RSS_END}") MiB at the end; VmHWM (peak) $(mib "${HWM}") MiB"
echo "RSS every 10 s of the mix (MiB): ${RSS_SERIES}"
echo "measured overhead: peak RSS - cache cap = $(mib "${HWM}") - ${CACHE_MB} = $(mib "${OVERHEAD_KIB}") MiB;" \
    "bound: peak RSS <= cache cap ${CACHE_MB} MiB + LOAD_MAX_OVERHEAD_MB ${MAX_OVERHEAD_MB} MiB" \
    "= $((CACHE_MB + MAX_OVERHEAD_MB)) MiB: $( ((HWM <= BOUND_KIB)) && echo ok || echo EXCEEDED)"
echo "server log: ${N_PROBLEMS} WARN/ERROR/panic lines"
head -n 5 "${WORK}/server-problems.log"
grep '^BAD ' "${WORK}/wrk-MIX.out" || true

if ((ERRORS > 0 || HZ_SOCK > 0 || HZ[status_errors] > 0)); then
    echo "error: ${MIX_NON2XX} answers were neither 2xx nor 304 and ${MIX_SOCK} socket errors in the" \
        "mix (connect ${MIX[connect]}, read ${MIX[read]}, write ${MIX[write]}, timeout ${MIX[timeout]});" \
        "baseline: ${HZ[status_errors]} non-2xx, ${HZ_SOCK} socket errors" >&2
    fail=$((fail + 1))
else
    passed=$((passed + 1))
fi
if ((HWM > BOUND_KIB)); then
    echo "error: peak RSS $(mib "${HWM}") MiB exceeds the cache cap ${CACHE_MB} MiB +" \
        "${MAX_OVERHEAD_MB} MiB" >&2
    fail=$((fail + 1))
else
    passed=$((passed + 1))
fi
echo "load-mix: ${DURATION} s x ${CONNECTIONS} connections: ${MIX[requests]} requests" \
    "(${MIX[rps]}/s, ${X_HZ} x healthz), ${ERRORS} errors, p50 $(ms "${MIX[p50_us]}") ms," \
    "p99 $(ms "${MIX[p99_us]}") ms, peak RSS $(mib "${HWM}") MB (cache cap ${CACHE_MB} MB +" \
    "$(mib "${OVERHEAD_KIB}") MB)"
echo "load-mix checks: ${passed} passed, ${fail} failed"
((fail == 0))
