#!/usr/bin/env bash
# Stops the local control plane by recorded PID (kubelet first, so it can still kill its pods'
# process groups), then sweeps any pod process group a SIGKILLed kubelet left behind.
# Harmless when nothing runs. Logs and state stay in .crane/cluster/ for inspection.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

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
}

stopped_any=0
for ((i = ${#components[@]} - 1; i >= 0; i--)); do
  name=${components[i]}
  [ -f "$state/pids/$name.pid" ] && stopped_any=1
  stop "$name"
done

# Pod process groups are recorded as <state>/pods/<ns>_<pod>/<container>.pid while alive.
shopt -s nullglob
for f in "$state"/pods/*/*.pid; do
  pgid=$(cat "$f" 2>/dev/null || true)
  if [[ $pgid =~ ^[0-9]+$ ]] && group_running "$pgid"; then
    echo "cluster-down: killing leftover pod process group $pgid ($f)" >&2
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
  rm -f "$f"
done
[ "$stopped_any" = 1 ] && echo "cluster stopped" >&2
exit 0
