#!/usr/bin/env bash
# Stops and starts ONE component of the running local cluster, for fault tests:
#
#   e2e/cluster/ctl.sh stop NAME     SIGTERM (SIGKILL after 15 s)
#   e2e/cluster/ctl.sh kill NAME     SIGKILL at once
#   e2e/cluster/ctl.sh start NAME    start it again exactly as up.sh did; return once ready
#   e2e/cluster/ctl.sh status NAME   exit 0 while it runs
#
# NAME is one of lib.sh's components (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd, kubelet, kube-proxy). up.sh records each one's command line in
# $state/cmd/NAME, so a restart reuses its flags, ports and namespaces without repeating them
# here. Honours CRANE_CLUSTER_DIR like up.sh (use a private cluster for faults).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

usage() { echo "usage: $0 stop|kill|start|status NAME (NAME: ${components[*]})" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1 name=$2
known=0
for c in "${components[@]}"; do [ "$c" = "$name" ] && known=1; done
[ $known = 1 ] || { echo "ctl: unknown component '${name:0:64}'" >&2; usage; }
ready() {
  case $name in
    kube-apiserver) kubectl_admin get --raw /readyz >/dev/null 2>&1 ;;
    etcd) load_ports && curl -fsS "http://127.0.0.1:$ETCD_PORT/health" >/dev/null 2>&1 ;;
    containerd) ctr_node version >/dev/null 2>&1 ;;
    *) pid_alive "$name" ;;
  esac
}

case $action in
  status) pid_alive "$name" ;;
  stop | kill)
    pid_alive "$name" || { echo "ctl: $name is not running" >&2; exit 0; }
    pid=$(cat "$state/pids/$name.pid")
    if [ "$action" = kill ]; then kill -KILL "$pid" 2>/dev/null || true; else kill -TERM "$pid" 2>/dev/null || true; fi
    for _ in $(seq 1 150); do running "$pid" || break; sleep 0.1; done
    if running "$pid"; then
      echo "ctl: $name ($pid) ignored SIGTERM; killing" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do running "$pid" || break; sleep 0.1; done
    fi
    rm -f "$state/pids/$name.pid"
    echo "ctl: $name stopped" >&2
    ;;
  start)
    if pid_alive "$name"; then echo "ctl: $name already runs" >&2; exit 0; fi
    [ -s "$state/cmd/$name" ] || { echo "ctl: no recorded command line for $name in $state/cmd" >&2; exit 1; }
    mapfile -d '' args <"$state/cmd/$name"
    setsid "${args[@]}" </dev/null >>"$state/logs/$name.log" 2>&1 &
    echo $! >"$state/pids/$name.pid"
    deadline=$((SECONDS + 90))
    until ready; do
      if ! pid_alive "$name"; then
        echo "ctl: $name exited; last lines of its log:" >&2; tail -n 20 "$state/logs/$name.log" >&2; exit 1
      fi
      [ "$SECONDS" -lt "$deadline" ] || { echo "ctl: $name not ready after 90 s" >&2; exit 1; }
      sleep 0.2
    done
    echo "ctl: $name started" >&2
    ;;
  *) usage ;;
esac
