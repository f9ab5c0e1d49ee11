# Shared by the cluster scripts (up, down, env, ctl, images, test): where a local cluster keeps
# its state, how its processes are found, and the names and addresses of its node. Sourced,
# never run.
#
# One local cluster per state directory (CRANE_CLUSTER_DIR, default .crane/cluster). Several
# run side by side: each node lives in a network namespace of its own (crane-<index>) with its
# own bridge, addresses, cgroup root and containerd, so `make demo` and `make test` (and the
# operator benchmark) never see each other.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state=${CRANE_CLUSTER_DIR:-$root/.crane/cluster}
cache=${CRANE_CACHE:-$HOME/.cache/crane}
bin=$cache/bin
node=$state/node
# Control plane on the host, then the node inside its network namespace. Started in this
# order, stopped in the reverse one.
control_plane=(etcd kube-apiserver kube-controller-manager kube-scheduler)
node_components=(containerd kubelet kube-proxy)
components=("${control_plane[@]}" "${node_components[@]}")
# The node's name in the API (one node per cluster).
node_name=crane-node

# node_vars INDEX: the names and addresses derived from a node's index (1-250), fixed for the
# cluster's life and recorded as NODE_INDEX in ports.env.
#   10.240.I.0/30  the veth pair joining host and node: host end HOST_IP (.1), node end NODE_IP (.2)
#   10.241.I.0/24  pods (bridge cni0 inside the node's namespace, gateway .1)
#   10.242.I.0/24  Services: kubernetes .1, kube-dns .10, the cluster's Redis .20
# The host routes the pod and Service ranges into the node's namespace, so host processes
# (tests, the operator run as a process) reach pods and ClusterIPs, and pods reach servers on
# the host at HOST_IP.
node_vars() {
  NODE_INDEX=$1
  netns=crane-$NODE_INDEX
  host_if=crane${NODE_INDEX}h
  HOST_IP=10.240.$NODE_INDEX.1
  NODE_IP=10.240.$NODE_INDEX.2
  POD_CIDR=10.241.$NODE_INDEX.0/24
  SERVICE_CIDR=10.242.$NODE_INDEX.0/24
  API_SERVICE_IP=10.242.$NODE_INDEX.1
  DNS_IP=10.242.$NODE_INDEX.10
  REDIS_IP=10.242.$NODE_INDEX.20
  cgroup_root=crane-$NODE_INDEX
}

# pid_alive NAME: true when NAME's recorded pid is running that program (guards against a
# recycled pid belonging to something else).
pid_alive() {
  local f=$state/pids/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$1" || return 1
  ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null
}

# running PID: true while PID exists and is not a zombie (a zombie is dead and only waits for
# its adoptive parent to reap it, which PID 1 here may do late).
running() {
  [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# free_port [TAKEN...]: a loopback port nobody listens on and not in TAKEN. Picked below the
# kernel's ephemeral range (outgoing connections take ports from it), so nothing can grab it
# between this check and the bind.
free_port() {
  local p lo=20000 hi
  hi=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$hi" -gt $((lo + 1000)) ] 2>/dev/null || { lo=10000; hi=20000; }
  for _ in $(seq 1 200); do
    p=$((lo + RANDOM % (hi - lo)))
    case " $* " in *" $p "*) continue ;; esac
    ss -Htan "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
  done
  echo "no free loopback port found" >&2
  return 1
}

# load_ports: read the ports and the node index the running cluster was started with.
load_ports() {
  [ -f "$state/ports.env" ] || return 1
  # shellcheck disable=SC1091
  . "$state/ports.env"
  [ -n "${NODE_INDEX:-}" ] && node_vars "$NODE_INDEX"
  return 0
}

kubectl_admin() { KUBECONFIG=$state/kubeconfig kubectl "$@"; }

# The node's containerd, for looking at containers (`ctr_node task ls`). Kubernetes' own
# containers live in the CRI's namespace k8s.io.
containerd_sock() { echo "$node/run/containerd.sock"; }
ctr_node() { ctr -a "$(containerd_sock)" -n k8s.io "$@"; }
