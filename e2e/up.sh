#!/usr/bin/env bash
# `make up`: the local control plane (e2e/cluster/up.sh), the binaries, and Crane installed
# the way a user installs it — `helm upgrade --install charts/crane` against the local
# apiserver — with the cluster's Redis as external Redis and image names containing "crane"
# (the process kubelet runs target/debug/crane-operator and crane-executor for them). Returns
# once the operator answers /readyz and the default WorkerPool is Ready; all of it keeps
# running in the background until `make down`.
#
# Environment: CRANE_NAMESPACE (default crane-system) where the chart goes;
# CRANE_RUN_NAMESPACES (comma-separated) more namespaces for AgentRuns;
# CRANE_WATCH_NAMESPACES (comma-separated; default all) what the operator watches;
# CRANE_CLUSTER_DIR (see e2e/cluster/lib.sh) another local cluster's state directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/e2e/cluster/lib.sh"  # free_port
ns=${CRANE_NAMESPACE:-crane-system}
release=crane
t0=$SECONDS
say() { echo "up: $*" >&2; }

"$root/e2e/cluster/up.sh"
# The workspace build (not per package: that would resolve features differently and rebuild).
say "building crane-operator and crane-executor"
(cd "$root" && cargo build -q --workspace --locked) >&2
eval "$("$root/e2e/cluster/env.sh")"

# Pods of the process kubelet share the host's network: pick a free port for /metrics.
state=${CRANE_CLUSTER_DIR:-$root/.crane/cluster}
port_file=$state/crane-metrics-port
port=$(cat "$port_file" 2>/dev/null || true)
if ! [[ $port =~ ^[0-9]+$ ]] || { ss -Htln "sport = :$port" | grep -q . && [ "$(curl -fsS "http://127.0.0.1:$port/readyz" 2>/dev/null)" != ok ]; }; then
  port=$(free_port)
  echo "$port" >"$port_file"
fi

values=$(mktemp "${TMPDIR:-/tmp}/crane-up-values.XXXXXX")
trap 'rm -f "$values"' EXIT
list() { local IFS=,; local -a a; read -ra a <<<"${1:-}"; local out="" x; for x in "${a[@]}"; do out+="${out:+, }\"$x\""; done; echo "[$out]"; }
cat >"$values" <<VALUES
image: {repository: crane, tag: dev, pullPolicy: Never}
redis: {bundled: false, external: {url: "$REDIS_URL"}}
runNamespaces: $(list "${CRANE_RUN_NAMESPACES:-}")
operator:
  metricsPort: $port
  watchNamespaces: $(list "${CRANE_WATCH_NAMESPACES:-}")
VALUES
for n in ${CRANE_RUN_NAMESPACES//,/ }; do
  kubectl get namespace "$n" >/dev/null 2>&1 || kubectl create namespace "$n" >/dev/null
done
say "helm upgrade --install $release charts/crane -n $ns"
helm upgrade --install "$release" "$root/charts/crane" -n "$ns" --create-namespace \
  -f "$values" --wait --timeout 120s >/dev/null

deadline=$((SECONDS + 90))
until [ "$(curl -fsS "http://127.0.0.1:$port/readyz" 2>/dev/null)" = ok ]; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "the operator is not ready after 90 s; its log:"
    tail -n 30 "$state"/pods/"$ns"_crane-operator-*/operator.log >&2 2>/dev/null || true
    exit 1
  fi
  sleep 0.5
done
kubectl -n "$ns" wait --for=condition=Ready workerpool/default --timeout=60s >/dev/null
say "ready in $((SECONDS - t0)) s: operator (metrics on 127.0.0.1:$port), WorkerPool $ns/default"
say "next: eval \"\$(make -s env)\"; kubectl -n $ns apply -f config/samples/crane_v1alpha1_agentrun_prompt.yaml; kubectl -n $ns get agentruns -w  (or: make demo)"
