#!/usr/bin/env bash
# Attacks the API contract with schemathesis (property-based requests generated from
# openapi.yaml, every check on: server errors, status codes, response schemas and headers,
# schema-valid requests accepted, schema-invalid ones rejected) against the real release
# binary on the sample data. Twelve passes: every operation with generated ids (mostly 404s
# that still exercise validation), then the item routes on a 3D CT, a 4D MRI, a Decathlon CT,
# a task without dataset.json or sform and a volume of NaNs that exist
# (tools/schemathesis/*.toml), one pass with a fresh random seed, the patch route and the batch
# routes on a 2D and a 3D split, then every operation on a server with API keys, with and without the key. Every pass but the random one is
# deterministic, so a CI failure reproduces locally with the same command; the random one
# prints its seed first (replay it with ST_SEED=<seed>). Fails on any failure or error.
# Python packages: tools/requirements-schemathesis.txt, in a venv under target/st.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

examples=${ST_EXAMPLES:-50}
# The random pass's seed: new each run unless ST_SEED replays one.
seed=${ST_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "schemathesis: random pass seed $seed (replay: ST_SEED=$seed $0)"
venv="$PWD/target/st"
python_venv "$venv" tools/requirements-schemathesis.txt

# Release: large generated sizes (256^3 x 4 channels) must answer within schemathesis's
# 10 s request timeout, which a debug build does not.
cargo build --locked --release --quiet --bin medserve
bin="$PWD/target/release/medserve"
work=$(mktemp -d)
trap 'stop_started; rm -rf "$work"' EXIT

"$bin" sample-data "$work/data" >/dev/null
serve_medserve "$bin" "$work/server.log" --data "$work/data"

total=0
runs=0
run_pass() {
  local name=$1 config=$2
  shift 2
  local out="$work/st-$name.txt"
  # Deterministic unless the pass gives a --seed.
  local gen=(--generation-deterministic)
  if [[ " $* " == *" --seed "* ]]; then gen=(); fi
  local args=(run openapi.yaml --url "$MEDSERVE_URL" --checks all
    "${gen[@]}" --max-examples "$examples" --no-color "$@")
  local st=("$venv/bin/st" --config-file "${config:-tools/schemathesis/base.toml}")
  if ! "${st[@]}" "${args[@]}" >"$out" 2>&1; then
    cat "$out"
    echo "--- server log (last 40 lines)"
    tail -n 40 "$work/server.log"
    echo "schemathesis $name: FAILED"
    return 1
  fi
  # "1184 generated, 1184 passed" (schemathesis 4's summary line).
  local n
  n=$(grep -oE '[0-9]+ generated' "$out" | tail -1 | grep -oE '[0-9]+')
  echo "schemathesis $name: $n cases, 0 failures ($(grep -oE '[0-9]+ generated.*' "$out" | tail -1))"
  total=$((total + n))
  runs=$((runs + 1))
}

# Every pass must leave the server running: a crash between requests is a failure too.
server_alive() {
  if ! kill -0 "$MEDSERVE_PID" 2>/dev/null; then
    echo "the server died during the run"; tail -n 40 "$work/server.log"; exit 1
  fi
}

# The batch and patch routes (see their passes below).
bounded='/splits/[{]split[}]/batch|/patches$'
run_pass any-ids "" --exclude-path-regex "$bounded"
run_pass ct-subject tools/schemathesis/items.toml --include-path-regex 'items|montage|stats' \
  --exclude-path-regex "$bounded"
run_pass mri-4d tools/schemathesis/mri4d.toml --include-path-regex 'slice|volume'
run_pass decathlon-ct tools/schemathesis/decathlon-ct.toml --include-path-regex 'slice|volume'
run_pass no-dataset-json tools/schemathesis/nojson.toml --include-path-regex 'items|montage|stats' \
  --exclude-path-regex "$bounded"
run_pass nan-volume tools/schemathesis/nan-volume.toml --include-path-regex 'items/' \
  --exclude-path-regex "$bounded"
# Every operation again, with the no-dataset.json task's items, from a new random seed: cases
# the deterministic passes never generate. Every check but one: schemathesis's negative
# mutations of a form-encoded object parameter can serialise to a query string that is valid
# (seed 3638041135 sent `a_min=0.0&a_max=0.0&...&flip=all`, which the schema allows, as
# "schema-violating"), so a random pass would fail CI on its own false positives; the
# deterministic passes above keep negative_data_rejection, with cases known to be sound.
run_pass "random-seed-$seed" tools/schemathesis/nojson.toml --seed "$seed" \
  --exclude-checks negative_data_rejection --exclude-path-regex "$bounded"
server_alive

# Batches and patches: what they send is bounded by a product of parameters (batch_size x
# size, num x patch) that no schema of a query can state, so a schema-valid request may be 422
# object-too-large by design; and a batch's chain parameters depend on the dataset's kind,
# which the query's schema cannot see either (a_min on a classification set is a 400, as a 2D
# size on a volume set). These routes are attacked here only, with every check but
# positive_data_acceptance (schemathesis's stateful phase ignores per-operation check
# settings, hence the CLI flag, and the other passes leaving these routes out, but for the
# no-key pass: 401 comes first), on a server that sends at most 64 MiB per response
# (--max-output-mb) so that generated sizes answer, or are refused, within the 10 s timeout.
stop_pid "$MEDSERVE_PID"
serve_medserve "$bin" "$work/server.log" --data "$work/data" --max-output-mb 64
run_pass patches tools/schemathesis/decathlon-ct.toml --include-path-regex '/patches$' \
  --exclude-checks positive_data_acceptance
run_pass batches-2d tools/schemathesis/batches-2d.toml --include-path-regex '/batch' \
  --exclude-checks positive_data_acceptance
run_pass batches-3d tools/schemathesis/batches-3d.toml --include-path-regex '/batch' \
  --exclude-checks positive_data_acceptance
server_alive

# The same server with API keys: every operation with the key (it must be accepted
# everywhere), then without it (every protected route answers its documented 401).
stop_pid "$MEDSERVE_PID"
key="schemathesis-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
serve_medserve "$bin" "$work/server.log" --data "$work/data" --api-keys "$key"
run_pass api-key "" --exclude-path-regex "$bounded" -H "Authorization: Bearer $key"
run_pass no-key "" --max-examples 20
server_alive
echo "schemathesis: $runs passed ($total generated cases, 0 failures)"
