#!/usr/bin/env bash
# Headless Chromium (Debian's) against the debug binary on the sample data, in two parts:
#
# 1. CORS: a page from one origin reads medserve on another origin (fetch of JSON, of float32
#    arrays with exposed X-Shape/X-Dtype/ETag, an Authorization header that forces a
#    preflight, a problem+json error, a PNG in <img>), and a server whose CORS list excludes
#    the page's origin is unreadable.
# 2. The exploration page at / (tests/browser/page.mjs, playwright-core from
#    tests/browser/package-lock.json, `npm ci`; no browser download): every view clicked
#    through and checked against the API, WebGL through SwiftShader for the 3D view,
#    screenshots of each view in target/browser-shots/.
#
# Only 127.0.0.1 is used. Ends with `browser page checks: N passed, M failed, K skipped`
# (both parts; skipped: checks of routes this server does not have yet).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
start_time=$(date +%s)

chrome=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chrome" ]; then
  apt_install chromium
  chrome=$(command -v chromium)
fi

build_debug_medserve
bin="$PWD/target/debug/medserve"
work=$(mktemp -d)
trap 'stop_started; rm -rf "$work"' EXIT

"$bin" sample-data "$work/data" >/dev/null
serve_medserve "$bin" "$work/api.log" --data "$work/data"
api=$MEDSERVE_URL
serve_medserve "$bin" "$work/denied.log" --data "$work/data" --cors-origins "https://viewer.example.org"
denied=$MEDSERVE_URL
mkdir -p "$work/page"
cp tests/browser/viewer.html "$work/page/"
page_port=$(free_port)
python3 -m http.server "$page_port" --bind 127.0.0.1 --directory "$work/page" >"$work/page.log" 2>&1 &
started $!
wait_http "http://127.0.0.1:$page_port/" $! || { cat "$work/page.log"; exit 1; }

url="http://127.0.0.1:$page_port/viewer.html?api=$api&denied=$denied"
timeout 60 "$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$work/profile" --virtual-time-budget=15000 --dump-dom "$url" \
  >"$work/dom.html" 2>"$work/chrome.log" || { cat "$work/chrome.log"; exit 1; }

cors_passed=0
cors_failed=1
if python3 - "$work/dom.html" <<'PY'
import html, json, re, sys
dom = open(sys.argv[1]).read()
m = re.search(r'<pre id="result">(.*?)</pre>', dom, re.S)
assert m, "no result element in the page"
r = json.loads(html.unescape(m.group(1)))
print("browser saw:", json.dumps(r))
assert "failure" not in r, r
assert r["datasets"] == ["Task01_BrainTumour", "Task09_Spleen", "medmnist", "nojson", "segmentation"], r
assert r["status"] == 200 and r["shape"] == "1,64,64" and r["dtype"] == "float32", r
assert r["etag"] and r["etag"].startswith('"'), r
assert r["length"] == 64 * 64 and r["min"] == 0 and r["max"] == 1, r
assert r["error"] == {"status": 404, "type": "application/problem+json", "code": "dataset-not-found"}, r
assert r["png"] == [64, 64], r
assert r["denied"] == "blocked", r
n = r["nii"]
assert n["status"] == 200 and n["type"] == "application/gzip" and n["magic"] == [0x1F, 0x8B], r
assert n["encoding"] is None and n["sizeof_hdr"] == 348 and n["dims"] == [32, 32, 12], r
assert r["slice"] == [64, 64], r
print("browser CORS check: passed")
PY
then
  cors_passed=1
  cors_failed=0
fi

# The exploration page. node and npm from Debian when missing; playwright-core as locked.
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
(cd tests/browser && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
shots="$PWD/target/browser-shots"
rm -rf "$shots"
page_rc=0
CHROMIUM="$chrome" node tests/browser/page.mjs "$api" "$shots" "$work/page.json" || page_rc=$?
read -r page_passed page_failed page_skipped < <(python3 -c '
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    print(r["passed"], r["failed"], len(r["skipped"]))
except Exception:
    print(0, 1, 0)  # the script died before writing its result
' "$work/page.json")
if [ "$page_rc" -ne 0 ] && [ "$page_failed" -eq 0 ]; then page_failed=1; fi
printf 'screenshots in %s:' "$shots"
for f in "$shots"/*.png; do [ -e "$f" ] && printf ' %s' "${f##*/}"; done
echo
echo "browser stage took $(($(date +%s) - start_time)) s"
echo "browser page checks: $((cors_passed + page_passed)) passed, $((cors_failed + page_failed)) failed, $page_skipped skipped"
[ $((cors_failed + page_failed)) -eq 0 ]
