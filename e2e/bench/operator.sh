#!/usr/bin/env bash
# The operator's benchmark (`make bench` runs it after bench-engine). Brings up a PRIVATE
# local cluster (CRANE_CLUSTER_DIR, default a fresh /tmp/crane-bench.XXXXXX) with release
# binaries: worker Jobs run the crane image built from target/release in containers on the
# node, the operator runs as a process with its own RBAC token (e2e/tests/lib.sh).
# operator/examples/bench_operator.rs measures and prints the figures and ends with one JSON
# line. Everything it started is stopped on exit, even on failure.
#
# Env: CRANE_BIN_DIR (default target/release; built when missing), BENCH_RUNS,
# BENCH_SOAK_ROUNDS, BENCH_SOAK_BATCH, BENCH_PRESENT, BENCH_BIG_STEPS (see the example),
# BENCH_OPERATOR_CONCURRENCY (the operator's --concurrency, default 8 as in production).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
release=${CARGO_TARGET_DIR:-$root/target}/release
bin=${CRANE_BIN_DIR:-$release}
export CRANE_BIN_DIR=$bin

if [ "$bin" = "$release" ]; then
  # Every binary the image carries (e2e/cluster/images.sh), or no image is built.
  cargo build --release --locked -q -p crane-operator -p crane-executor -p crane-server -p kubectl-crane --bins
fi
cargo build --release --locked -q -p crane-operator --example bench_operator

made_dir=0
if [ -z "${CRANE_CLUSTER_DIR:-}" ]; then
  CRANE_CLUSTER_DIR=$(mktemp -d /tmp/crane-bench.XXXXXX)
  made_dir=1
fi
case $CRANE_CLUSTER_DIR in
  /tmp/*) ;;
  *) echo "operator bench: CRANE_CLUSTER_DIR must be under /tmp (it stops and wipes that cluster)" >&2; exit 2 ;;
esac
export CRANE_CLUSTER_DIR
work=$(mktemp -d /tmp/crane-bench-work.XXXXXX)

# shellcheck source=../tests/lib.sh
. "$root/e2e/tests/lib.sh"

cleanup() {
  local rc=$?
  operator_stop
  "$root/e2e/cluster/down.sh" >/dev/null 2>&1 || true
  [ "$made_dir" = 1 ] && rm -rf "$CRANE_CLUSTER_DIR"
  [ "$rc" -ne 0 ] && [ -f "$work/operator.log" ] && { echo "-- operator log (last lines):" >&2; tail -n 20 "$work/operator.log" >&2; }
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT INT TERM

# up.sh loads the image of CRANE_BIN_DIR's binaries (the release ones).
"$root/e2e/cluster/up.sh" >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; exit 1; }
eval "$("$root/e2e/cluster/env.sh")"
node_cgroup() { (. "$root/e2e/cluster/lib.sh" && load_ports && echo "$cgroup_root"); }
pod_cgroup=$(node_cgroup)

ns=bench
kubectl create namespace "$ns" >/dev/null
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# Logs at info: debug logging per reconcile would be part of what is measured. The malloc
# setting is the one the chart and config/manager give the operator's container.
MALLOC_ARENA_MAX=1 OPERATOR_RUST_LOG=${OPERATOR_RUST_LOG:-info} operator_start "$work/operator.log" \
  --redis-url "$REDIS_URL" --executor-image "$CRANE_IMAGE" --namespace "$ns" \
  --metrics-addr "127.0.0.1:$metrics_port" --concurrency "${BENCH_OPERATOR_CONCURRENCY:-8}"

echo "== operator bench (release binaries in $bin; private cluster $CRANE_CLUSTER_DIR;"
echo "   the operator is a local process; workers are pods of image $CRANE_IMAGE)"
BENCH_NS=$ns OPERATOR_PID=$OPERATOR_PID BENCH_CLUSTER_DIR=$CRANE_CLUSTER_DIR BENCH_POD_CGROUP=$pod_cgroup \
  "$release/examples/bench_operator"
