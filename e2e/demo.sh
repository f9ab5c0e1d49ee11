#!/usr/bin/env bash
# `make demo`: `make up` (e2e/up.sh) with namespace crane-demo as a run namespace (the chart
# gives it the Redis Secret, the NetworkPolicy and the WorkerPool `default`), then the AgentRun
# samples of config/samples/ applied there, followed like `kubectl get agentruns -w` until every
# run is terminal, then each run's result and where to read the pods' logs. Exits 0 only when
# every run Succeeded.
# Runs left from an earlier demo are deleted first, so each demo runs them afresh.
# Everything keeps running afterwards; `make down` stops it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
demo=${CRANE_DEMO_NAMESPACE:-crane-demo}
timeout=${CRANE_DEMO_TIMEOUT:-300}

CRANE_RUN_NAMESPACES=${CRANE_RUN_NAMESPACES:-$demo} "$root/e2e/up.sh"
eval "$("$root/e2e/cluster/env.sh")"

kubectl get namespace "$demo" >/dev/null 2>&1 || kubectl create namespace "$demo" >/dev/null
kubectl -n "$demo" delete agentruns --all --wait=true --timeout=60s >/dev/null
echo "\$ kubectl -n $demo apply -f config/samples/crane_v1alpha1_agentrun_*.yaml"
kubectl -n "$demo" apply $(printf -- '-f %s ' "$root"/config/samples/crane_v1alpha1_agentrun_*.yaml)
mapfile -t runs < <(kubectl -n "$demo" get agentruns -o name)
[ "${#runs[@]}" -gt 0 ] || { echo "demo: no AgentRun in config/samples/" >&2; exit 1; }

echo "\$ kubectl -n $demo get agentruns -w"
kubectl -n "$demo" get agentruns -w &
watcher=$!
stop_watch() { kill "$watcher" 2>/dev/null || true; wait "$watcher" 2>/dev/null || true; }
trap stop_watch EXIT

deadline=$((SECONDS + timeout))
while :; do
  pending=$(kubectl -n "$demo" get agentruns -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' |
    grep -cvxE 'Succeeded|Failed|Cancelled' || true)
  [ "$pending" -eq 0 ] && break
  if [ "$SECONDS" -ge "$deadline" ]; then
    stop_watch
    echo "demo: $pending run(s) not finished after ${timeout}s" >&2
    kubectl -n "$demo" get agentruns -o wide >&2
    exit 1
  fi
  sleep 1
done
sleep 1
stop_watch
trap - EXIT

echo
kubectl -n "$demo" get agentruns -o wide
echo
ok=0
for r in "${runs[@]}"; do
  name=${r#*/}
  phase=$(kubectl -n "$demo" get "$r" -o jsonpath='{.status.phase}')
  if [ "$phase" = Succeeded ]; then
    echo "$name: $phase, result: $(kubectl -n "$demo" get "$r" -o jsonpath='{.status.result}')"
  else
    ok=1
    echo "$name: $phase, error: $(kubectl -n "$demo" get "$r" -o jsonpath='{.status.error}')"
  fi
done
echo
echo "\$ kubectl -n $demo get pods     # planner and worker Jobs' pods; 'kubectl logs' works for them"
kubectl -n "$demo" get pods
echo
if [ "$ok" -eq 0 ]; then
  echo "All ${#runs[@]} runs succeeded. Still running: the local cluster and Crane ('make down' stops them)."
else
  echo "Some runs did not succeed (above). 'kubectl -n $demo describe agentrun NAME' tells more." >&2
fi
exit "$ok"
