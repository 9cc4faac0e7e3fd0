#!/usr/bin/env bash
# Runs every `curl` line of README.md, exactly as printed, against the real binary serving the
# built-in sample data. A line ending in a comment with a status (`# 404`) must answer that
# status; every other line must answer 2xx. Only 127.0.0.1 is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

build_debug_medserve
bin="$PWD/target/debug/medserve"
work=$(mktemp -d)
trap 'stop_started; rm -rf "$work"' EXIT

# No --data: the built-in sample data, as `cargo run --release` serves it.
# Then its `medserve export` lines, as printed (from the folder the first command
# runs in), so its curl lines about the exports find them.
"$bin" sample-data "$work/medserve-sample-data" >/dev/null
# The README's `cp -r medserve-sample-data/...` lines (dated copies: dataset versions) too.
mapfile -t copies < <(grep -E '^cp -r medserve-sample-data/' README.md)
for line in "${copies[@]}"; do
  (cd "$work" && bash -c "$line") || { echo "FAIL $line"; exit 1; }
  echo "ok   $line"
done
mapfile -t exports < <(grep -E '^medserve export ' README.md)
[ "${#exports[@]}" -gt 0 ] || { echo "no medserve export lines in README.md"; exit 1; }
for line in "${exports[@]}"; do
  if (cd "$work" && bash -c "\"$bin\" ${line#medserve }" >"$work/export.log" 2>&1); then
    echo "ok   $line"
  else
    echo "FAIL $line"; tail -n 5 "$work/export.log"; exit 1
  fi
done
serve_medserve "$bin" "$work/server.log" --sample-dir "$work/medserve-sample-data"
port=${MEDSERVE_URL##*:}

mapfile -t lines < <(grep -E '^\s*curl ' README.md)
[ "${#lines[@]}" -gt 0 ] || { echo "no curl lines in README.md"; exit 1; }
failed=0
for line in "${lines[@]}"; do
  cmd=${line//127.0.0.1:8080/127.0.0.1:$port}
  want="2xx"
  if [[ $cmd =~ \#[[:space:]]*([0-9]{3}) ]]; then want=${BASH_REMATCH[1]}; fi
  cmd=${cmd%%#*}
  got=$(cd "$work" && bash -c "$cmd -s -w '\n%{http_code}'" 2>/dev/null | tail -n 1) || true
  if [[ $want == 2xx && $got == 2?? ]] || [[ $got == "$want" ]]; then
    echo "ok   $got  $line"
  else
    echo "FAIL $got (want $want)  $line"
    failed=$((failed + 1))
  fi
done
echo "README curl lines: $(( ${#lines[@]} - failed )) passed, $failed failed"
[ "$failed" -eq 0 ]
