#!/usr/bin/env bash
# `make bench`: every benchmark, one after another (they share 2 cores, so never at once):
# the engine's (executor/engine/examples/bench_engine.rs), the operator's (e2e/bench/operator.sh)
# and crane-server's (e2e/bench/server.sh).
# Prints their human-readable figures and ends with one JSON line
# {"engine": {...}, "operator": {...}, "server": {...}} built from the last JSON line each printed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=$(mktemp -d /tmp/crane-bench-all.XXXXXX)
trap 'rm -rf "$out"' EXIT
rc=0

echo "== engine bench"
cargo run --release --locked -q -p crane-engine --example bench_engine 2>&1 | tee "$out/engine" || rc=1
"$root/e2e/bench/operator.sh" 2>&1 | tee "$out/operator" || rc=1
"$root/e2e/bench/server.sh" 2>&1 | tee "$out/server" || rc=1

last_json() { grep -E '^\{.*\}$' "$1" 2>/dev/null | tail -n 1; }
engine=$(last_json "$out/engine")
operator=$(last_json "$out/operator")
server=$(last_json "$out/server")
echo "{\"engine\": ${engine:-null}, \"operator\": ${operator:-null}, \"server\": ${server:-null}}"
exit "$rc"
