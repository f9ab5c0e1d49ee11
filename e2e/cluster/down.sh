#!/usr/bin/env bash
# Stops the local cluster of this state directory and removes everything it put on the host,
# touching nothing of any other cluster:
#   the kubelet first (so nothing restarts), then every container (killed through containerd,
#   whose shims then exit and remove their sockets), containerd, kube-proxy, the control plane,
#   each by recorded pid; then sweeps what a crash can leave: processes still in the node's
#   cgroups or using its containerd socket, mounts under the state directory, the cgroups, the
#   shims' sockets, the kubelet's log links in /var/log/containers, and the network namespace
#   (which takes the veth pair, the bridge, the host routes and every iptables rule kube-proxy
#   made inside it along).
# Harmless when nothing runs. Logs stay in the state directory for inspection.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# stop NAME: SIGTERM its recorded pid, SIGKILL after 15 s.
stop() {
  local name=$1 pid
  pid_alive "$name" || { rm -f "$state/pids/$name.pid"; return 0; }
  pid=$(cat "$state/pids/$name.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    running "$pid" || break
    sleep 0.1
  done
  if running "$pid"; then
    echo "cluster-down: $name ($pid) ignored SIGTERM; killing" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$state/pids/$name.pid"
  stopped_any=1
}

# cgroup_pids: every process in the node's cgroups (any hierarchy has them all: the kubelet
# puts each container in the same path under each).
cgroup_pids() {
  [ -n "${cgroup_root:-}" ] || return 0
  find /sys/fs/cgroup/pids/"$cgroup_root" -name cgroup.procs -exec cat {} + 2>/dev/null || true
}
# socket_pids: processes that name the node's containerd socket (the shims do, in their
# command line), or whose working directory or binary is inside the state directory.
socket_pids() {
  local p sock; sock=$(containerd_sock)
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = $$ ] && continue
    if tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "$sock"; then echo "$p"; continue; fi
    case $(readlink "/proc/$p/cwd" 2>/dev/null) in "$state" | "$state"/*) echo "$p" ;; esac
  done
}
kill_all() { # WHAT PIDS...: SIGKILL each, say so
  local what=$1; shift
  [ $# -gt 0 ] || return 0
  echo "cluster-down: killing $# leftover $what process(es)" >&2
  kill -KILL "$@" 2>/dev/null || true
  stopped_any=1
}

stopped_any=0
# The node's resources are swept only while this state directory owns its index (up.sh records
# the owner in /run/crane): a stale state directory must never touch another cluster's node.
have_node=0
if load_ports 2>/dev/null && [ -n "${NODE_INDEX:-}" ] &&
   [ "$(cat "/run/crane/node-$NODE_INDEX" 2>/dev/null)" = "$state" ]; then
  have_node=1
fi

stop kubelet
# Every task (pod sandboxes and containers), while containerd still answers: the shims then
# exit and clean up after themselves.
if [ "$have_node" = 1 ] && pid_alive containerd; then
  for id in $(ctr_node tasks ls -q 2>/dev/null); do
    ctr_node tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr_node tasks ls -q 2>/dev/null); do
    ctr_node tasks delete -f "$id" >/dev/null 2>&1 || true
  done
fi
stop containerd
stop kube-proxy
for ((i = ${#control_plane[@]} - 1; i >= 0; i--)); do stop "${control_plane[i]}"; done

if [ "$have_node" = 1 ]; then
  # What a SIGKILLed kubelet or containerd leaves running: containers and shims.
  for _ in 1 2 3; do
    mapfile -t left < <( (cgroup_pids; socket_pids) | sort -u)
    [ "${#left[@]}" -eq 0 ] && break
    kill_all "pod or shim" "${left[@]}"
    sleep 0.5
  done
  # Mounts under the state directory, deepest first: container root filesystems, pod network
  # namespaces, volumes, and the kubelet's shared root.
  for _ in 1 2 3; do
    mapfile -t mounts < <(awk -v s="$state/" 'index($5, s) == 1 || $5 == substr(s, 1, length(s) - 1) {print $5}' /proc/self/mountinfo | sort -r)
    [ "${#mounts[@]}" -eq 0 ] && break
    for m in "${mounts[@]}"; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
  done
  # The shims' sockets live in /run/containerd/s, named by the sha256 of
  # "<containerd address>/<namespace>/<task id>" (containerd 1.6).
  if [ -d "$node/run/containerd/io.containerd.runtime.v2.task/k8s.io" ]; then
    for d in "$node"/run/containerd/io.containerd.runtime.v2.task/k8s.io/*/; do
      [ -d "$d" ] || continue
      id=$(basename "$d")
      rm -f "/run/containerd/s/$(printf '%s' "$(containerd_sock)/k8s.io/$id" | sha256sum | cut -c1-64)"
    done
  fi
  # The kubelet links each container's log into /var/log/containers.
  for l in /var/log/containers/*.log; do
    [ -L "$l" ] || continue
    case $(readlink "$l") in "$node"/*) rm -f "$l" ;; esac
  done
  # Cgroups, leaves first (each rmdir needs the group empty of processes and children).
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h$cgroup_root" ] || continue
    for _ in 1 2 3 4 5; do
      find "$h$cgroup_root" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [ -d "$h$cgroup_root" ] || break
      sleep 0.3
    done
    [ -d "$h$cgroup_root" ] && echo "cluster-down: could not remove $h$cgroup_root" >&2
  done
  # The namespace takes its interfaces (the veth pair, the bridge), the host routes through
  # them and kube-proxy's rules along.
  if [ -e "/run/netns/$netns" ]; then
    ip netns delete "$netns" 2>/dev/null || echo "cluster-down: could not delete netns $netns" >&2
    stopped_any=1
  fi
  ip link delete "$host_if" 2>/dev/null || true
  rm -f "/run/crane/node-$NODE_INDEX"
fi
[ "$stopped_any" = 1 ] && echo "cluster stopped" >&2
exit 0
