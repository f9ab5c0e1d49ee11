#!/usr/bin/env bash
# `make bench`: every benchmark, one after another (they share 2 cores, so never at once):
# the engine's (executor/engine/examples/bench_engine.rs, with the cost of tracing measured
# against a local OpenTelemetry Collector), the operator's (e2e/bench/operator.sh) and
# crane-server's (e2e/bench/server.sh).
# Prints their human-readable figures and ends with one JSON line
# {"engine": {...}, "operator": {...}, "server": {...}} built from the last JSON line each printed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=$(mktemp -d /tmp/crane-bench-all.XXXXXX)
trap 'rm -rf "$out"' EXIT
rc=0

# The engine bench also measures the cost of tracing: throughput with spans exported to a
# real OpenTelemetry Collector (e2e/servers/otelcol.sh) against none.
otelcol=$("$root/e2e/servers/otelcol.sh")
otlp_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf '%s\n' "receivers: {otlp: {protocols: {http: {endpoint: \"127.0.0.1:$otlp_port\"}}}}" \
  "exporters: {file: {path: \"$out/spans.json\"}}" \
  "service: {pipelines: {traces: {receivers: [otlp], exporters: [file]}}, telemetry: {metrics: {level: none}}}" \
  >"$out/otelcol.yaml"
"$otelcol" --config "$out/otelcol.yaml" >"$out/otelcol.log" 2>&1 &
otelcol_pid=$!
trap 'kill "$otelcol_pid" 2>/dev/null; wait "$otelcol_pid" 2>/dev/null; rm -rf "$out"' EXIT

echo "== engine bench"
CRANE_BENCH_OTLP_ENDPOINT=http://127.0.0.1:$otlp_port \
  cargo run --release --locked -q -p crane-engine --example bench_engine 2>&1 | tee "$out/engine" || rc=1
kill "$otelcol_pid" 2>/dev/null
"$root/e2e/bench/operator.sh" 2>&1 | tee "$out/operator" || rc=1
"$root/e2e/bench/server.sh" 2>&1 | tee "$out/server" || rc=1

last_json() { grep -E '^\{.*\}$' "$1" 2>/dev/null | tail -n 1; }
engine=$(last_json "$out/engine")
operator=$(last_json "$out/operator")
server=$(last_json "$out/server")
echo "{\"engine\": ${engine:-null}, \"operator\": ${operator:-null}, \"server\": ${server:-null}}"
exit "$rc"
