#!/usr/bin/env bash
# Prints the environment for using the running local control plane:
#   eval "$(make -s env)"   # KUBECONFIG, REDIS_URL, and PATH with helm and kubectl
set -euo pipefail
. "$(dirname "$0")/lib.sh"
if ! load_ports || [ ! -f "$state/kubeconfig" ]; then
  echo "env: no local cluster state in $state; run 'make cluster-up' first" >&2
  exit 1
fi
kubectl_dir=$(dirname "$(command -v kubectl 2>/dev/null || echo /usr/bin/kubectl)")
printf 'export KUBECONFIG=%q REDIS_URL=%q PATH=%q\n' \
  "$state/kubeconfig" "redis://127.0.0.1:$REDIS_PORT" "$bin:$kubectl_dir:$PATH"
