#!/usr/bin/env bash
# A real headless Chromium loads a page from one origin that reads medserve on another origin
# (fetch of JSON, of float32 arrays with exposed X-Shape/X-Dtype/ETag, an Authorization header
# that forces a preflight, a problem+json error, a PNG in <img>), and checks that a server whose
# CORS list excludes the page's origin is unreadable. Only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

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

python3 - "$work/dom.html" <<'PY'
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
print("browser CORS check: 1 passed, 0 failed")
PY
