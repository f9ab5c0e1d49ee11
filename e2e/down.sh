#!/usr/bin/env bash
# `make down`: uninstalls the chart (the operator stops; its worker and planner Jobs go with
# their AgentRuns and WorkerPools) and stops the local control plane; nothing is left running.
# Harmless when nothing runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
ns=${CRANE_NAMESPACE:-crane-system}
if env=$("$root/e2e/cluster/env.sh" 2>/dev/null); then
  eval "$env"
  if kubectl get --raw /readyz >/dev/null 2>&1 && helm status crane -n "$ns" >/dev/null 2>&1; then
    echo "down: helm uninstall crane -n $ns" >&2
    helm uninstall crane -n "$ns" --wait --timeout 60s >/dev/null || echo "down: helm uninstall failed; stopping the cluster anyway" >&2
  fi
fi
# The kubelet kills every pod's process group when it stops (e2e/cluster/down.sh).
"$root/e2e/cluster/down.sh"
