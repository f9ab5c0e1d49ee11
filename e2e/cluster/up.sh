#!/usr/bin/env bash
# Brings up the local control plane on free loopback ports and returns when it is ready:
# etcd, kube-apiserver (RBAC, static admin token), kube-controller-manager, Redis and the
# process kubelet (Node proc-node). Idempotent: when everything already runs it only says so.
# Every start is a fresh cluster (state in .crane/cluster/ is recreated).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
t0=$SECONDS

all_up() {
  local c
  for c in "${components[@]}"; do pid_alive "$c" || return 1; done
  kubectl_admin get --raw /readyz >/dev/null 2>&1
}
if all_up; then
  echo "cluster already up (KUBECONFIG=$state/kubeconfig)" >&2
  exit 0
fi
# Half-running from an earlier failure: stop what is left before starting afresh.
"$here/down.sh"

# Redis comes from Debian; install it on a fresh machine (we run as root there).
if ! command -v redis-server >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "cluster-up: installing redis-server" >&2
  { apt-get install -y -q redis-server || { apt-get update -q && apt-get install -y -q redis-server; }; } >&2
fi
for tool in openssl kubectl redis-server redis-cli curl; do
  command -v "$tool" >/dev/null || { echo "cluster-up: $tool is not installed" >&2; exit 1; }
done

"$here/build.sh" >&2
target=${CARGO_TARGET_DIR:-$root/target}
kubelet_bin=$target/debug/crane-proc-kubelet
# Building one package resolves features differently from `make build`'s workspace build and
# would recompile shared crates, so only build when the binary is missing or stale.
if [ ! -x "$kubelet_bin" ] || [ -n "$(find "$root/e2e/kubelet" "$root/Cargo.lock" -newer "$kubelet_bin" -type f 2>/dev/null | head -1)" ]; then
  (cd "$root" && cargo build -q -p crane-proc-kubelet) >&2
fi
crane_bin_dir=${CRANE_BIN_DIR:-$target/debug}

rm -rf "$state"
mkdir -p "$state"/{pki,pids,logs,pods,etcd}
chmod 700 "$state"

ETCD_PORT=$(free_port)
ETCD_PEER_PORT=$(free_port "$ETCD_PORT")
API_PORT=$(free_port "$ETCD_PORT" "$ETCD_PEER_PORT")
REDIS_PORT=$(free_port "$ETCD_PORT" "$ETCD_PEER_PORT" "$API_PORT")
cat >"$state/ports.env" <<PORTS
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
API_PORT=$API_PORT
REDIS_PORT=$REDIS_PORT
PORTS

# PKI: a CA, the apiserver's serving certificate for 127.0.0.1/localhost, the SA signing key.
pki=$state/pki
{
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=crane-local-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1\nextendedKeyUsage=serverAuth\n' >"$pki/apiserver.ext"
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 30 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt"
  openssl genrsa -out "$pki/sa.key" 2048
} >"$state/logs/pki.log" 2>&1
admin_token=$(openssl rand -hex 32)
echo "$admin_token,crane-admin,crane-admin,\"system:masters\"" >"$pki/tokens.csv"
chmod 600 "$pki"/*.key "$pki/tokens.csv"

server=https://127.0.0.1:$API_PORT
cat >"$state/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: crane-local
  cluster:
    server: $server
    certificate-authority: $pki/ca.crt
users:
- name: crane-admin
  user:
    token: $admin_token
contexts:
- name: crane-local
  context: {cluster: crane-local, user: crane-admin, namespace: default}
current-context: crane-local
KC
chmod 600 "$state/kubeconfig"

# start NAME CMD...: run detached (own session, no stdin), log to logs/NAME.log, record pid.
start() {
  local name=$1; shift
  setsid "$@" </dev/null >"$state/logs/$name.log" 2>&1 &
  echo $! >"$state/pids/$name.pid"
}
fail() {
  echo "cluster-up: $1; last lines of $state/logs/$2.log:" >&2
  tail -n 30 "$state/logs/$2.log" >&2 || true
  "$here/down.sh" || true
  exit 1
}
# wait_until SECONDS NAME CMD...: poll CMD; fail with NAME's log when it dies or times out.
wait_until() {
  local limit=$1 name=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    pid_alive "$name" || fail "$name exited" "$name"
    [ $SECONDS -lt $deadline ] || fail "$name not ready after ${limit}s" "$name"
    sleep 0.2
  done
}

start etcd "$bin/etcd" --name default --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync=true --watch-progress-notify-interval=5s --log-level=warn
wait_until 30 etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
echo "  etcd ready at $((SECONDS - t0)) s" >&2

start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address=127.0.0.1 --secure-port="$API_PORT" \
  --advertise-address=127.0.0.1 --cert-dir="$pki" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true --authorization-mode=RBAC \
  --service-account-issuer="https://127.0.0.1:$API_PORT/" --api-audiences="https://127.0.0.1:$API_PORT/" \
  --service-account-key-file="$pki/sa.key" --service-account-signing-key-file="$pki/sa.key" \
  --token-auth-file="$pki/tokens.csv" --endpoint-reconciler-type=none --profiling=false
wait_until 90 kube-apiserver kubectl_admin get --raw /readyz
echo "  kube-apiserver ready at $((SECONDS - t0)) s" >&2

start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig="$state/kubeconfig" --leader-elect=false --secure-port=0 \
  --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/sa.key" \
  --controllers=job-controller,deployment-controller,replicaset-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,ttl-after-finished-controller,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller \
  --concurrent-job-syncs=5 --profiling=false

start redis-server redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
  --protected-mode no --dir "$state"
wait_until 15 redis-server redis-cli -p "$REDIS_PORT" ping
echo "  redis ready at $((SECONDS - t0)) s" >&2

start crane-proc-kubelet env KUBECONFIG="$state/kubeconfig" RUST_LOG="${KUBELET_LOG:-info,kube=warn}" \
  "$kubelet_bin" --state-dir "$state" --crane-bin-dir "$crane_bin_dir" \
  --ca-file "$pki/ca.crt"
node_ready() {
  [ "$(kubectl_admin get node proc-node -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_until 30 crane-proc-kubelet node_ready
echo "  node ready at $((SECONDS - t0)) s" >&2
# Pods need their namespace's default ServiceAccount, made by the controller manager.
wait_until 30 kube-controller-manager kubectl_admin get serviceaccount default -n default

echo "cluster up in $((SECONDS - t0)) s: KUBECONFIG=$state/kubeconfig REDIS_URL=redis://127.0.0.1:$REDIS_PORT" >&2
