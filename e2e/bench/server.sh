#!/usr/bin/env bash
# crane-server's benchmark (`make bench-server`; `make bench` runs it after the operator's).
# Brings up a PRIVATE local control plane (CRANE_CLUSTER_DIR, default a fresh
# /tmp/crane-bench-server.XXXXXX), makes a user (a ServiceAccount with a Role in one
# namespace, token from `kubectl create token`), and runs
# operator/server/examples/bench_server.rs in release mode: it starts its own PostgreSQL and
# an in-process crane-server, prints the figures and ends with one JSON line. Everything it
# started is stopped on exit, even on failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release --locked -q -p crane-server --example bench_server

made_dir=0
if [ -z "${CRANE_CLUSTER_DIR:-}" ]; then
  CRANE_CLUSTER_DIR=$(mktemp -d /tmp/crane-bench-server.XXXXXX)
  made_dir=1
fi
case $CRANE_CLUSTER_DIR in
  /tmp/*) ;;
  *) echo "server bench: CRANE_CLUSTER_DIR must be under /tmp (it stops and wipes that cluster)" >&2; exit 2 ;;
esac
export CRANE_CLUSTER_DIR
work=$(mktemp -d /tmp/crane-bench-work.XXXXXX)
cleanup() {
  local rc=$?
  "$root/e2e/cluster/down.sh" >/dev/null 2>&1 || true
  [ "$made_dir" = 1 ] && rm -rf "$CRANE_CLUSTER_DIR"
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT INT TERM

"$root/e2e/cluster/up.sh" >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; exit 1; }
eval "$("$root/e2e/cluster/env.sh")"
kubectl apply --server-side -f "$root/crds/" >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/agentruns.crane.dev >/dev/null
ns=bench
kubectl create namespace "$ns" >/dev/null
kubectl -n "$ns" create serviceaccount user >/dev/null
kubectl -n "$ns" create role crane-user --verb=get,list,watch,create,patch,delete --resource=agentruns.crane.dev >/dev/null
kubectl -n "$ns" create rolebinding crane-user --role=crane-user --serviceaccount="$ns:user" >/dev/null
token=$(kubectl -n "$ns" create token user --duration=1h)

echo "== server bench (release build; private cluster $CRANE_CLUSTER_DIR; PostgreSQL $(ls -d /usr/lib/postgresql/*/ | sort -V | tail -n 1 | xargs basename))"
BENCH_NS=$ns BENCH_TOKEN=$token RUST_LOG=warn "$root/target/release/examples/bench_server"
