#!/usr/bin/env bash
# Brings up a local cluster and returns when it is ready:
# - on the host: etcd, kube-apiserver (RBAC, static admin token), kube-controller-manager (the
#   controllers a real cluster runs) and kube-scheduler, on free ports;
# - one real node in a network namespace of its own, joined to the host by a veth pair:
#   containerd + runc, the kubelet (in a private mount namespace, so its kernel tunables never
#   touch the host), kube-proxy (iptables, inside the namespace) and a CNI bridge;
# - CoreDNS and a Redis (Service `redis` in namespace crane-local; its default user's password
#   in $CRANE_CLUSTER_DIR/redis-password) as pods;
# - the images (e2e/cluster/images.sh), the crane image built from target/debug's binaries.
# Idempotent: when everything already runs it only says so. Every start is a fresh cluster
# (the state directory is recreated). A failed start tears down whatever it started.
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
[ "$(id -u)" = 0 ] || { echo "cluster-up: the node needs root (namespaces, mounts, cgroups)" >&2; exit 1; }
for tool in openssl kubectl curl containerd runc ctr podman mmdebstrap iptables ip nsenter unshare jq; do
  command -v "$tool" >/dev/null || { echo "cluster-up: $tool is not installed (make deps)" >&2; exit 1; }
done
[ -x /usr/lib/cni/bridge ] || { echo "cluster-up: CNI plugins missing (make deps)" >&2; exit 1; }

# Half-running from an earlier failure: stop what is left before starting afresh.
"$here/down.sh"
"$here/build.sh" >/dev/null
"$here/images.sh" build

rm -rf "$state"
mkdir -p "$state"/{pki,pids,logs,etcd,cmd} "$node"/{run,cni/net.d,cni/ipam,pod-logs,volumes,sysctl}
chmod 700 "$state"

ready=0
cleanup_on_failure() {
  [ "$ready" = 1 ] && return 0
  echo "cluster-up: failed; tearing down what was started (logs stay in $state/logs)" >&2
  "$here/down.sh" || true
}
trap cleanup_on_failure EXIT

fail() {
  echo "cluster-up: $1; last lines of $state/logs/$2.log:" >&2
  tail -n 30 "$state/logs/$2.log" >&2 || true
  exit 1
}

# ---- the node's network namespace -----------------------------------------------------------
# The first free index from one derived from the state directory: `ip netns add` fails when
# another cluster holds the name, which makes the choice race-free between clusters.
mkdir -p /run/netns
start_index=$(( $(echo "$state" | cksum | cut -d' ' -f1) % 250 + 1 ))
index=""
for i in $(seq 0 249); do
  candidate=$(( (start_index + i - 1) % 250 + 1 ))
  ip link show "crane${candidate}h" >/dev/null 2>&1 && continue
  ip route show | grep -q "^10\.24[0-2]\.$candidate\." && continue
  if ip netns add "crane-$candidate" 2>/dev/null; then index=$candidate; break; fi
done
[ -n "$index" ] || { echo "cluster-up: no free node index (250 clusters?)" >&2; exit 1; }
node_vars "$index"
echo "NODE_INDEX=$index" >"$state/ports.env"
# Who owns the index: down.sh sweeps the node's namespace, cgroups and processes only for it.
mkdir -p /run/crane
echo "$state" >"/run/crane/node-$index"
in_node() { ip netns exec "$netns" "$@"; }
ip link add "$host_if" type veth peer name eth0 netns "$netns"
ip addr add "$HOST_IP/30" dev "$host_if"
ip link set "$host_if" up
in_node ip link set lo up
in_node ip addr add "$NODE_IP/30" dev eth0
in_node ip link set eth0 up
in_node ip route add default via "$HOST_IP"
# The node routes between its pods and the host (the bridge plugin would set this too).
in_node sysctl -qw net.ipv4.ip_forward=1
ip route add "$POD_CIDR" via "$NODE_IP" dev "$host_if"
ip route add "$SERVICE_CIDR" via "$NODE_IP" dev "$host_if"

# ---- ports, PKI, kubeconfig -------------------------------------------------------------------
ETCD_PORT=$(free_port)
ETCD_PEER_PORT=$(free_port "$ETCD_PORT")
API_PORT=$(free_port "$ETCD_PORT" "$ETCD_PEER_PORT")
cat >>"$state/ports.env" <<PORTS
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
API_PORT=$API_PORT
PORTS

# A CA; the apiserver's serving certificate (host address, Service IP, names); the kubelet's
# serving certificate (node address) and the apiserver's client certificate for it (logs,
# exec); the service-account signing key.
pki=$state/pki
cert() { # NAME CN EXTENSIONS
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$2" -keyout "$pki/$1.key" -out "$pki/$1.csr"
  printf '%s\n' "$3" >"$pki/$1.ext"
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 30 -extfile "$pki/$1.ext" -out "$pki/$1.crt"
}
{
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=crane-local-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt"
  cert apiserver kube-apiserver "subjectAltName=IP:$HOST_IP,IP:127.0.0.1,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
  cert kubelet "$node_name" "subjectAltName=IP:$NODE_IP,DNS:$node_name
extendedKeyUsage=serverAuth"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client "extendedKeyUsage=clientAuth"
  openssl genrsa -out "$pki/sa.key" 2048
} >"$state/logs/pki.log" 2>&1
admin_token=$(openssl rand -hex 32)
echo "$admin_token,crane-admin,crane-admin,\"system:masters\"" >"$pki/tokens.csv"
chmod 600 "$pki"/*.key "$pki/tokens.csv"

server=https://$HOST_IP:$API_PORT
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

# start NAME CMD...: run detached (own session, no stdin), log to logs/NAME.log, record the pid
# and the command line (NUL-separated in cmd/NAME, for ctl.sh to start it again the same way).
start() {
  local name=$1; shift
  printf '%s\0' "$@" >"$state/cmd/$name"
  setsid "$@" </dev/null >"$state/logs/$name.log" 2>&1 &
  echo $! >"$state/pids/$name.pid"
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

# ---- control plane (host) -------------------------------------------------------------------
start etcd "$bin/etcd" --name default --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync=true --watch-progress-notify-interval=5s --log-level=warn
wait_until 30 etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
echo "  etcd ready at $((SECONDS - t0)) s" >&2

# Listens on the host end of the veth only: pods reach it there through the `kubernetes`
# Service (lease endpoint reconciler, advertised address), host tools through the kubeconfig.
start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" --bind-address="$HOST_IP" --secure-port="$API_PORT" \
  --advertise-address="$HOST_IP" --endpoint-reconciler-type=lease --cert-dir="$pki" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP \
  --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true --authorization-mode=RBAC \
  --service-account-issuer="https://kubernetes.default.svc.cluster.local" --api-audiences="https://kubernetes.default.svc.cluster.local" \
  --service-account-key-file="$pki/sa.key" --service-account-signing-key-file="$pki/sa.key" \
  --token-auth-file="$pki/tokens.csv" --profiling=false
wait_until 90 kube-apiserver kubectl_admin get --raw /readyz
echo "  kube-apiserver ready at $((SECONDS - t0)) s" >&2

# Every controller a cluster runs by default (*): Deployments, StatefulSets, Jobs, Services'
# endpoints, node lifecycle, pod GC, volumes, ... CSRs are signed with the cluster's CA.
start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig="$state/kubeconfig" --leader-elect=false --secure-port=0 --controllers='*' \
  --root-ca-file="$pki/ca.crt" --service-account-private-key-file="$pki/sa.key" \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --concurrent-job-syncs=5 --profiling=false
start kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig="$state/kubeconfig" --leader-elect=false --secure-port=0 --profiling=false

# ---- the node ---------------------------------------------------------------------------------
pause_image=localhost/crane-pause:$(readlink -f "$bin/pause" | sed 's/.*-//')
coredns_image=localhost/coredns:$(readlink -f "$bin/coredns" | sed 's/.*-//')

# The pods' cgroups live under /$cgroup_root in every hierarchy (the kubelet's cgroupRoot);
# a v1 cpuset is unusable until it has CPUs and memory nodes.
for h in /sys/fs/cgroup/*/; do
  mkdir -p "$h$cgroup_root"
  if [ -f "$h/cpuset.cpus" ]; then
    cat "$h/cpuset.cpus" >"$h$cgroup_root/cpuset.cpus"
    cat "$h/cpuset.mems" >"$h$cgroup_root/cpuset.mems"
  fi
done

cat >"$node/containerd.toml" <<TOML
version = 2
root = "$node/containerd"
state = "$node/run/containerd"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$(containerd_sock)"
[ttrpc]
  address = "$(containerd_sock).ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$node/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  disable_apparmor = true
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  # As containerd 2 does by default: non-root pods may bind ports below 1024 (CoreDNS on 53).
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/bin/runc"
        Root = "$node/run/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni/net.d"
    max_conf_num = 1
TOML
cat >"$node/cni/net.d/10-crane.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "crane",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$node/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
start containerd nsenter --net="/run/netns/$netns" containerd --config "$node/containerd.toml"
wait_until 30 containerd ctr_node version
"$here/images.sh" load
echo "  containerd ready, images loaded at $((SECONDS - t0)) s" >&2

# The kubelet's root is a shared mount: volumes it mounts there (Secrets, tokens) propagate
# out of its private mount namespace to containerd and runc.
mkdir -p "$node/kubelet"
mount --bind "$node/kubelet" "$node/kubelet"
mount --make-shared "$node/kubelet"
# Kernel tunables the kubelet insists on (protectKernelDefaults) that differ on this host:
# inside its mount namespace a file with the expected value hides each one, so the host's
# settings are never read as wrong nor written.
masks=""
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
          kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  key=${kv%%=*} want=${kv#*=}
  if [ "$(cat "/proc/sys/$key")" != "$want" ]; then
    echo "$want" >"$node/sysctl/${key//\//_}"
    masks+="mount --bind $node/sysctl/${key//\//_} /proc/sys/$key; "
  fi
done
cat >"$node/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$(containerd_sock)
cgroupDriver: cgroupfs
cgroupRoot: /$cgroup_root
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
failSwapOn: false
failCgroupV1: false
protectKernelDefaults: true
makeIPTablesUtilChains: false
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $node/resolv.conf
podLogsDir: $node/pod-logs
volumePluginDir: $node/volume-plugins
serializeImagePulls: false
# The node shares the host's disk with everything else on it (builds fill and empty it by
# tens of GB): evict, and so collect images, only when it is all but full. An image collected
# here cannot come back (there is no registry), and containerd 1.6 does not protect the
# sandbox image from the kubelet's collector.
evictionHard: {memory.available: 50Mi, nodefs.available: 200Mi, nodefs.inodesFree: "1000", imagefs.available: 200Mi, imagefs.inodesFree: "1000"}
# And the node takes pods again 30 s after such a moment, not 5 min.
evictionPressureTransitionPeriod: 30s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
containerLogMaxSize: 10Mi
maxPods: 110
YAML
# Pods with dnsPolicy Default (CoreDNS itself) get no upstream: nothing beyond the host routes.
: >"$node/resolv.conf"
start kubelet nsenter --net="/run/netns/$netns" unshare --mount --propagation unchanged -- \
  sh -ec "mount --make-rprivate /proc; $masks exec \"\$0\" \"\$@\"" \
  "$bin/kubelet" --config="$node/kubelet.yaml" --kubeconfig="$state/kubeconfig" \
  --hostname-override="$node_name" --node-ip="$NODE_IP" --root-dir="$node/kubelet" --v=1

cat >"$node/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $state/kubeconfig}
hostnameOverride: $node_name
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# No writes to the host's conntrack settings (global, not per namespace).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false}
YAML
start kube-proxy nsenter --net="/run/netns/$netns" "$bin/kube-proxy" --config="$node/kube-proxy.yaml"

node_ready() {
  [ "$(kubectl_admin get node "$node_name" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_until 60 kubelet node_ready
echo "  node ready at $((SECONDS - t0)) s" >&2

# ---- add-ons: CoreDNS and the cluster's Redis ----------------------------------------------
# The Redis's password: made once per cluster directory, readable by this user only.
if [ ! -s "$state/redis-password" ]; then
  (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$state/redis-password")
fi
redis_password=$(cat "$state/redis-password")
{
  sed -e "s|@DNS_IP@|$DNS_IP|g" -e "s|@COREDNS_IMAGE@|$coredns_image|g" -e "s|@REDIS_IP@|$REDIS_IP|g" \
    "$here/addons.yaml"
  # printf is a builtin: the password is in no process's arguments.
  printf -- '---\napiVersion: v1\nkind: Secret\nmetadata: {name: redis-config, namespace: crane-local}\ndata: {redis.conf: %s}\n' \
    "$(printf 'requirepass %s\n' "$redis_password" | base64 -w0)"
} | kubectl_admin apply -f - >"$state/logs/addons.log" 2>&1 || fail "add-ons not applied" addons
kubectl_admin -n kube-system rollout status deployment/coredns --timeout=90s >>"$state/logs/addons.log" 2>&1 ||
  fail "CoreDNS not ready" addons
kubectl_admin -n crane-local rollout status deployment/redis --timeout=90s >>"$state/logs/addons.log" 2>&1 ||
  fail "Redis not ready" addons
# From the host through the Service: the route into the node and kube-proxy's rules work.
redis_pong() { [ "$(REDISCLI_AUTH=$redis_password redis-cli -h "$REDIS_IP" ping 2>/dev/null)" = PONG ]; }
wait_until 30 kube-proxy redis_pong
# Pods need their namespace's default ServiceAccount, made by the controller manager.
wait_until 30 kube-controller-manager kubectl_admin get serviceaccount default -n default
echo "  CoreDNS and Redis ready at $((SECONDS - t0)) s" >&2

ready=1
echo "cluster up in $((SECONDS - t0)) s: KUBECONFIG=$state/kubeconfig REDIS_URL=redis://$REDIS_IP:6379 CRANE_REDIS_PASSWORD_FILE=$state/redis-password CRANE_HOST_IP=$HOST_IP" >&2
