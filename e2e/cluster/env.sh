#!/usr/bin/env bash
# Prints the environment for using the running local cluster (`eval "$(make -s env)"`):
#   KUBECONFIG      the admin kubeconfig
#   REDIS_URL       the Redis Crane uses: the chart's bundled one once `make up` installed it,
#                   else the cluster's own (crane-local/redis); never with credentials
#   CRANE_REDIS_PASSWORD_FILE  the file with that Redis's admin (default user) password, which
#                   crane-operator, crane-server and crane-executor read
#   REDISCLI_AUTH   the same password, for redis-cli
#   CRANE_HOST_IP   this host as pods see it (the host end of the node's veth): a server a test
#                   starts on the host listens there for pods to reach it
#   CRANE_IMAGE     the crane image loaded into the node (built from target/debug)
#   PATH            with helm, kubectl and the cluster's binaries
set -euo pipefail
. "$(dirname "$0")/lib.sh"
if ! load_ports || [ ! -f "$state/kubeconfig" ] || [ -z "${NODE_INDEX:-}" ]; then
  echo "env: no local cluster state in $state; run 'make cluster-up' first" >&2
  exit 1
fi
redis_url=redis://$REDIS_IP:6379 password_file=$state/redis-password
if [ -s "$state/crane-redis-url" ]; then
  redis_url=$(cat "$state/crane-redis-url") password_file=$state/crane-redis-password
fi
kubectl_dir=$(dirname "$(command -v kubectl 2>/dev/null || echo /usr/bin/kubectl)")
printf 'export KUBECONFIG=%q REDIS_URL=%q CRANE_REDIS_PASSWORD_FILE=%q REDISCLI_AUTH=%q CRANE_HOST_IP=%q CRANE_IMAGE=%q PATH=%q\n' \
  "$state/kubeconfig" "$redis_url" "$password_file" "$(cat "$password_file")" "$HOST_IP" \
  "$(cat "$state/crane-image" 2>/dev/null || true)" "$bin:$kubectl_dir:$PATH"
