#!/usr/bin/env bash
# `make up`: the local cluster (e2e/cluster/up.sh: control plane, a real node, CoreDNS) and Crane
# installed the way a user installs it, `helm upgrade --install charts/crane`, with the chart's
# defaults except the image: the crane image built from this work tree (localhost/crane:dev-<hash>,
# rebuilt and loaded when the binaries changed). So the cluster runs the bundled Redis
# (StatefulSet, password Secret, AOF on a PersistentVolume), two operator replicas with leader
# election and probes, the NetworkPolicies (applied; the local CNI does not enforce them) and
# the default WorkerPool. Pod Security `restricted` is enforced on Crane's namespaces. Returns
# once the operator is available and the default WorkerPool is Ready; everything keeps running
# until `make down`.
#
# Environment (all optional): CRANE_NAMESPACE (default crane-system) where the chart goes;
# CRANE_RUN_NAMESPACES (comma-separated) more namespaces for AgentRuns, each prepared by the
# chart (Secrets, NetworkPolicy, WorkerPool default); CRANE_WATCH_NAMESPACES (comma-separated;
# default all) what the operator watches; CRANE_CLUSTER_DIR (see e2e/cluster/lib.sh) another
# local cluster's state directory.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/e2e/cluster/lib.sh"
ns=${CRANE_NAMESPACE:-crane-system}
run_namespaces=${CRANE_RUN_NAMESPACES:-}
watch_namespaces=${CRANE_WATCH_NAMESPACES:-}
release=crane
t0=$SECONDS
say() { echo "up: $*" >&2; }

# A make up that fails leaves nothing running when it started the cluster itself (the pods'
# logs stay in the state directory); one that fails to upgrade a cluster already up leaves it.
was_up=0
(load_ports && pid_alive kube-apiserver && pid_alive kubelet) 2>/dev/null && was_up=1
ready=0
on_exit() {
  rm -f "${values:-}"
  if [ "$ready" = 0 ] && [ "$was_up" = 0 ]; then
    say "failed; stopping the cluster it started (logs stay in $state/logs and $node/pod-logs)"
    "$root/e2e/cluster/down.sh" || true
  fi
}
trap on_exit EXIT
"$root/e2e/cluster/up.sh"
# The cluster may have been up already: load the image of the binaries built now.
"$root/e2e/cluster/images.sh" load
eval "$("$root/e2e/cluster/env.sh")"
image=$CRANE_IMAGE
[ -n "$image" ] || { say "no crane image (cargo build first)"; exit 1; }

# The release's and the run namespaces, with Pod Security `restricted` enforced by the apiserver.
for n in "$ns" ${run_namespaces//,/ }; do
  kubectl get namespace "$n" >/dev/null 2>&1 || kubectl create namespace "$n" >/dev/null
  kubectl label --overwrite namespace "$n" pod-security.kubernetes.io/enforce=restricted >/dev/null
done

# The local node has no storage provisioner: a volume for the bundled Redis's claim.
"$root/e2e/cluster/pv.sh" "$ns" "data-$release-redis-0"

values=$(mktemp "${TMPDIR:-/tmp}/crane-up-values.XXXXXX")
list() { local IFS=,; local -a a; read -ra a <<<"${1:-}"; local out="" x; for x in "${a[@]}"; do out+="${out:+, }\"$x\""; done; echo "[$out]"; }
cat >"$values" <<VALUES
image: {repository: "${image%:*}", tag: "${image##*:}"}
runNamespaces: $(list "$run_namespaces")
operator:
  watchNamespaces: $(list "$watch_namespaces")
VALUES
say "helm upgrade --install $release charts/crane -n $ns (image $image)"
if ! out=$(helm upgrade --install "$release" "$root/charts/crane" -n "$ns" -f "$values" --wait --timeout 180s 2>&1); then
  say "helm failed: $out"
  kubectl -n "$ns" get pods -o wide >&2 || true
  for p in $(kubectl -n "$ns" get pods -o name 2>/dev/null); do
    echo "--- kubectl logs $p" >&2; kubectl -n "$ns" logs "$p" --all-containers --tail=15 >&2 2>&1 || true
  done
  exit 1
fi
kubectl -n "$ns" wait --for=condition=Ready workerpool/default --timeout=60s >/dev/null

# REDIS_URL and CRANE_REDIS_PASSWORD_FILE in `make -s env` now name the Redis Crane uses (the
# bundled one) and its admin password.
redis_ip=$(kubectl -n "$ns" get service "$release-redis" -o jsonpath='{.spec.clusterIP}')
(umask 077 && kubectl -n "$ns" get secret "$release-redis-admin" -o jsonpath='{.data.password}' |
  base64 -d >"$state/crane-redis-password")
echo "redis://$redis_ip:6379" >"$state/crane-redis-url"

ready=1
say "ready in $((SECONDS - t0)) s: operator $(kubectl -n "$ns" get deployment "$release-operator" -o jsonpath='{.status.readyReplicas}')/2 ready, bundled Redis, WorkerPool default in $ns${run_namespaces:+ and $run_namespaces}"
say "next: eval \"\$(make -s env)\"; kubectl -n $ns apply -f config/samples/crane_v1alpha1_agentrun_prompt.yaml; kubectl -n $ns get agentruns -w  (or: make demo)"
