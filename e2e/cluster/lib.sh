# Shared by up.sh, down.sh, env.sh and test.sh: where the local control plane keeps its state
# and how its processes are found. Sourced, never run.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state=${CRANE_CLUSTER_DIR:-$root/.crane/cluster}
cache=${CRANE_CACHE:-$HOME/.cache/crane}
bin=$cache/bin
# Started in this order, stopped in the reverse one.
components=(etcd kube-apiserver kube-controller-manager redis-server crane-proc-kubelet)

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

# group_running PGID: true while any member of the process group is running.
group_running() {
  local p
  for p in $(pgrep -g "$1" 2>/dev/null); do running "$p" && return 0; done
  return 1
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

# load_ports: read the ports the running cluster was started on.
load_ports() {
  [ -f "$state/ports.env" ] || return 1
  # shellcheck disable=SC1091
  . "$state/ports.env"
}

kubectl_admin() { KUBECONFIG=$state/kubeconfig kubectl "$@"; }
