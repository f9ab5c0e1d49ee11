#!/usr/bin/env bash
# High availability and operator/apiserver faults, on the cluster it is given: operators run
# as PROCESSES with their own ServiceAccount token (e2e/tests/lib.sh), sharing one Lease in
# crane-system, and then as the chart's pods; worker Jobs run the crane image against the
# cluster's Redis.
#
#   t_failover        two replicas, one leads (Lease holder, the follower never reconciles);
#                     SIGKILL the leader mid-run: the other takes over (failover time printed),
#                     the run finishes, every step ran once, the todo was added once.
#   t_kill_restart    one replica SIGKILLed mid-run with 6 runs going and restarted (same pod
#                     name, as a container restart): every run finishes, no step twice.
#   t_apiserver_down  kube-apiserver stopped for 15 s mid-run (e2e/cluster/ctl.sh): the operator
#                     process survives (it steps down and re-acquires the Lease) and every run
#                     finishes once the API is back.
#   t_pods_leader     the chart installed (two operator pods, the local image): the leader
#                     container's process SIGKILLed mid-run (the kubelet restarts it in the same
#                     pod, which leads again), then the leader pod deleted mid-run (it releases
#                     the Lease; the other pod takes over): every run finishes, no step twice.
#
# DESTRUCTIVE (stops kube-apiserver): run it on a private cluster while developing,
#   CRANE_CLUSTER_DIR=/tmp/ha-cluster e2e/cluster/up.sh
#   CRANE_CLUSTER_DIR=/tmp/ha-cluster e2e/tests/ha.sh [t_name-prefix]
# It brings the apiserver back on exit, even on failure. Needs `cargo build -p crane-executor
# -p crane-operator`. Prints `N passed, M failed`; exits non-zero when any check failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${KUBECONFIG:-}" ] || [ -z "${REDIS_URL:-}" ] || [ -z "${CRANE_REDIS_PASSWORD_FILE:-}" ]; then
  eval "$("$root/e2e/cluster/env.sh")"
fi
. "$root/e2e/tests/lib.sh"
ctl=$root/e2e/cluster/ctl.sh
ns=crane-e2e-ha-$$
lease=crane-e2e-ha-$$
work=$(mktemp -d)
bin=${CRANE_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}
filter=${1:-t_}

now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

# ---- operators ----------------------------------------------------------------------------

declare -A OP_PID=()
kubeconfig=$work/operator.kubeconfig
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# op_start NAME: an operator process with pod name NAME (its Lease identity), log
# $work/NAME.log (appended), returning once it leads or stands by.
op_start() {
  local name=$1 log=$work/$1.log
  echo "---- start $(date -u +%T)" >>"$log"
  KUBECONFIG=$kubeconfig RUST_LOG=info,crane_operator=debug POD_NAME=$name \
    CRANE_LEADER_ELECTION_ID=$lease POD_NAMESPACE=crane-system \
    "$bin/crane-operator" --redis-url "$REDIS_URL" --executor-image "$CRANE_IMAGE" \
    --namespace "$ns" --metrics-addr "127.0.0.1:$(port)" >>"$log" 2>&1 &
  OP_PID[$name]=$!
  local deadline=$((SECONDS + 60))
  until grep -qE '"(acquired leadership|standing by: another replica leads)"' "$log"; do
    if ! kill -0 "${OP_PID[$name]}" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      echo "op_start $name: did not start; log:" >&2; tail -n 20 "$log" >&2
      return 1
    fi
    sleep 0.2
  done
}
op_kill() { # NAME SIGNAL
  local pid=${OP_PID[$1]:-}
  [ -n "$pid" ] || return 0
  {
    kill "-$2" "$pid"
    local deadline=$((SECONDS + 20))
    while kill -0 "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    kill -KILL "$pid"
    wait "$pid"
  } 2>/dev/null # also bash's "Killed" job notice
  unset "OP_PID[$1]"
}
holder() { kubectl -n crane-system get lease "$lease" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
holder_is() { [ "$(holder)" = "$1" ]; }

# ---- runs ---------------------------------------------------------------------------------

# run_create NAME WAIT_MS: todo_store.add, two waits, todo_store.list — mid-run for 2*WAIT_MS.
run_create() {
  cat <<YAML | kubectl -n "$ns" apply -f - >/dev/null
apiVersion: crane.dev/v1alpha1
kind: AgentRun
metadata: {name: $1}
spec:
  plan:
    steps:
      - {id: 1, tool: todo_store.add, input: {title: "ha-todo-$1"}}
      - {id: 2, tool: wait, input: {ms: $2}, dependsOn: [1]}
      - {id: 3, tool: wait, input: {ms: $2}, dependsOn: [2]}
      - {id: 4, tool: todo_store.list, input: {}, dependsOn: [3]}
YAML
}
ar() { kubectl -n "$ns" get agentrun "$1" -o jsonpath="$2" 2>/dev/null; }
phase() { ar "$1" '{.status.phase}'; }
terminal() { case "$(phase "$1")" in Succeeded|Failed|Cancelled) return 0 ;; *) return 1 ;; esac; }
all_terminal() { local r; for r in "$@"; do terminal "$r" || return 1; done; }
# mid_run NAME: step 1 done, the waits not yet.
mid_run() { [ "$(ar "$1" '{.status.steps[0].phase}/{.status.steps[3].phase}')" = "Succeeded/Pending" ]; }
all_mid_run() { local r; for r in "$@"; do mid_run "$r" || return 1; done; }
# todo_count NAME: todos titled for NAME in the namespace's store (Redis, the source of truth).
todo_count() {
  redis-cli -u "$REDIS_URL" hvals "crane:ns:$ns:{todo:$ns}:items" 2>/dev/null | grep -c -- "ha-todo-$1\b"
}
why() { { kubectl -n "$ns" get agentrun "$1" -o yaml 2>&1 | sed -n '/^status:/,$p' | head -30; } 2>&1; }

# check_runs LABEL NAME...: every run Succeeded, every step attempted once, one todo each.
check_runs() {
  local label=$1 r bad_phase="" bad_attempts="" bad_todos=""; shift
  for r in "$@"; do
    [ "$(phase "$r")" = Succeeded ] || bad_phase+="$r=$(phase "$r") "
    [ "$(ar "$r" '{.status.steps[*].attempts}')" = "1 1 1 1" ] || bad_attempts+="$r=[$(ar "$r" '{.status.steps[*].attempts}')] "
    [ "$(todo_count "$r")" = 1 ] || bad_todos+="$r=$(todo_count "$r") "
  done
  if [ -z "$bad_phase" ]; then pass "$label: all $# runs Succeeded"; else fail "$label: runs not Succeeded: $bad_phase" "$(why "${1}")"; fi
  if [ -z "$bad_attempts" ]; then pass "$label: every step ran once (attempts 1)"; else fail "$label: steps attempted more than once: $bad_attempts"; fi
  if [ -z "$bad_todos" ]; then pass "$label: each todo_store.add added exactly one todo"; else fail "$label: todo counts: $bad_todos"; fi
}

# ---- setup / cleanup ----------------------------------------------------------------------

pods_ns=$ns-pods
pods_release=ha$$

cleanup() {
  # Whatever happened, leave the cluster healthy: the apiserver back up.
  "$ctl" status kube-apiserver || "$ctl" start kube-apiserver || true
  if helm status "$pods_release" -n "$pods_ns" >/dev/null 2>&1; then
    delete_runs "$pods_ns"
    helm uninstall "$pods_release" -n "$pods_ns" --wait --timeout 60s >/dev/null 2>&1
  fi
  kubectl delete namespace "$pods_ns" --wait=false >/dev/null 2>&1
  [ -n "${OP_PID[*]:-}" ] || op_start cleanup >/dev/null 2>&1 || true
  delete_runs "$ns"
  local n
  for n in "${!OP_PID[@]}"; do op_kill "$n" TERM; done
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1
  kubectl -n crane-system delete lease "$lease" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

if ! operator_kubeconfig "$kubeconfig"; then echo "0 passed, 1 failed"; exit 1; fi
kubectl create namespace "$ns" >/dev/null
printf 'apiVersion: crane.dev/v1alpha1\nkind: WorkerPool\nmetadata: {name: default}\nspec: {maxWorkers: 4, idleTimeoutSeconds: 60}\n' |
  kubectl -n "$ns" apply -f - >/dev/null

# ---- tests --------------------------------------------------------------------------------

t_failover() {
  op_start ha-a || { fail "failover: replica a starts"; return; }
  wait_until 30 holder_is ha-a
  op_start ha-b || { fail "failover: replica b starts"; return; }
  check "failover: replica a holds the Lease" ha-a "$(holder)"
  grep -q '"standing by: another replica leads"' "$work/ha-b.log" && pass "failover: replica b stands by" ||
    fail "failover: replica b stands by" "$(tail -n 5 "$work/ha-b.log")"
  run_create fo 6000
  if ! wait_until 60 mid_run fo; then fail "failover: run reaches mid-run" "$(why fo)"; return; fi
  if grep -qiE 'reconcil|starting controllers' "$work/ha-b.log"; then
    fail "failover: the follower never reconciles" "$(grep -iE 'reconcil|starting controllers' "$work/ha-b.log" | head -3)"
  else pass "failover: the follower never reconciles (no reconcile in its log)"; fi
  local t0; t0=$(now)
  op_kill ha-a KILL
  if wait_until 40 holder_is ha-b; then
    local took; took=$(since "$t0")
    pass "failover: replica b took the Lease"
    echo "     figure: failover after SIGKILL of the leader: ${took} s (lease 15 s, retry 2 s)"
  else fail "failover: replica b took the Lease (holder '$(holder)')" "$(tail -n 5 "$work/ha-b.log")"; fi
  wait_until 90 terminal fo
  check_runs failover fo
  op_kill ha-b TERM
}

t_kill_restart() {
  op_start ha-single || { fail "kill/restart: operator starts"; return; }
  wait_until 40 holder_is ha-single || { fail "kill/restart: operator leads (holder '$(holder)')"; return; }
  local runs=(kr1 kr2 kr3 kr4 kr5 kr6) r
  for r in "${runs[@]}"; do run_create "$r" 5000; done
  if ! wait_until 90 all_mid_run "${runs[@]}"; then fail "kill/restart: runs reach mid-run" "$(why kr6)"; fi
  op_kill ha-single KILL
  sleep 2
  local t0; t0=$(now)
  op_start ha-single || { fail "kill/restart: operator restarts"; return; }
  wait_until 30 holder_is ha-single
  echo "     figure: restarted operator leads again after $(since "$t0") s (same pod name: no lease wait)"
  wait_until 120 all_terminal "${runs[@]}"
  check_runs kill/restart "${runs[@]}"
}

t_apiserver_down() {
  [ -n "${OP_PID[ha-single]:-}" ] || op_start ha-single || { fail "apiserver: operator starts"; return; }
  wait_until 40 holder_is ha-single || { fail "apiserver: operator leads"; return; }
  local runs=(api1 api2 api3 api4) r pid=${OP_PID[ha-single]}
  for r in "${runs[@]}"; do run_create "$r" 8000; done
  if ! wait_until 90 all_mid_run "${runs[@]}"; then fail "apiserver: runs reach mid-run" "$(why api4)"; fi
  local lines; lines=$(wc -l <"$work/ha-single.log")
  # SIGKILL: the API is gone at once, as when its node dies (SIGTERM drains for seconds).
  "$ctl" kill kube-apiserver || { fail "apiserver: ctl.sh kill kube-apiserver"; return; }
  local t0; t0=$(now)
  sleep 15
  if ! "$ctl" start kube-apiserver; then fail "apiserver: ctl.sh start kube-apiserver"; return; fi
  echo "     figure: kube-apiserver away for $(since "$t0") s"
  if kill -0 "$pid" 2>/dev/null; then pass "apiserver: the operator process survived the outage"
  else fail "apiserver: the operator process survived the outage" "$(tail -n 10 "$work/ha-single.log")"; fi
  local t1; t1=$(now)
  if wait_until 150 all_terminal "${runs[@]}"; then
    echo "     figure: all runs terminal $(since "$t1") s after the API came back"
  fi
  check_runs apiserver "${runs[@]}"
  local after; after=$(tail -n "+$((lines + 1))" "$work/ha-single.log")
  if grep -q '"lost leadership; stopping the controllers"' <<<"$after"; then
    grep -q '"acquired leadership"' <<<"$after" && pass "apiserver: stepped down during the outage and led again after it" ||
      fail "apiserver: stepped down but never led again" "$(tail -n 5 <<<"$after")"
  else pass "apiserver: kept leading through the outage (renewed in time)"; fi
  check "apiserver: operator holds the Lease again" ha-single "$(holder)"
}

# The chart's operator pods, killed the ways pods die.
t_pods_leader() {
  local ns=$pods_ns out leader pid t0 r
  pod_holder() { kubectl -n "$ns" get lease crane-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
  kubectl create namespace "$ns" >/dev/null 2>&1
  kubectl -n "$ns" create secret generic redis-admin --from-file=password="$CRANE_REDIS_PASSWORD_FILE" >/dev/null
  if ! out=$(helm install "$pods_release" "$root/charts/crane" -n "$ns" --wait --timeout 120s \
      --set image.repository="${CRANE_IMAGE%:*}" --set image.tag="${CRANE_IMAGE##*:}" \
      --set redis.bundled=false --set redis.external.url="$REDIS_URL" \
      --set redis.external.passwordSecret.name=redis-admin \
      --set "operator.watchNamespaces={$ns}" 2>&1); then
    fail "pods: helm install" "$out"; return
  fi
  someone_leads() { [ -n "$(pod_holder)" ]; }
  wait_until 60 someone_leads
  leader=$(pod_holder)
  kubectl -n "$ns" get pod "$leader" >/dev/null 2>&1 || { fail "pods: a pod leads (holder '$leader')"; return; }
  local runs=(pk1 pk2 pk3 pk4)
  for r in "${runs[@]}"; do run_create "$r" 4000; done
  if ! wait_until 90 all_mid_run "${runs[@]}"; then fail "pods: runs reach mid-run" "$(why pk4)"; fi
  pid=$(container_pid "$ns" "$leader") || { fail "pods: the leader container's pid"; return; }
  t0=$(now)
  kill -KILL "$pid"
  back() {
    [ "$(kubectl -n "$ns" get pod "$leader" -o jsonpath='{.status.containerStatuses[0].restartCount}/{.status.containerStatuses[0].ready}')" = 1/true ]
  }
  if wait_until 90 back; then
    echo "     figure: leader container SIGKILLed → restarted in its pod and Ready after $(since "$t0") s"
    pass "pods: the kubelet restarted the SIGKILLed leader in the same pod"
  else fail "pods: the kubelet restarted the SIGKILLed leader" "$(kubectl -n "$ns" get pods 2>&1)"; fi
  check "pods: the restarted pod leads again (same identity)" "$leader" "$(pod_holder)"
  wait_until 120 all_terminal "${runs[@]}"
  check_runs "pods, leader SIGKILLed" "${runs[@]}"

  runs=(pd1 pd2 pd3 pd4)
  for r in "${runs[@]}"; do run_create "$r" 4000; done
  if ! wait_until 90 all_mid_run "${runs[@]}"; then fail "pods: runs reach mid-run again" "$(why pd4)"; fi
  t0=$(now)
  kubectl -n "$ns" delete pod "$leader" --wait=false >/dev/null
  other_leads() { local h; h=$(pod_holder); [ -n "$h" ] && [ "$h" != "$leader" ]; }
  if wait_until 60 other_leads; then
    echo "     figure: leader pod deleted → the other pod leads after $(since "$t0") s (the leader releases the Lease on SIGTERM)"
    pass "pods: the other replica took over from the deleted leader"
  else fail "pods: the other replica took over (holder '$(pod_holder)')"; fi
  wait_until 120 all_terminal "${runs[@]}"
  check_runs "pods, leader pod deleted" "${runs[@]}"
}

for t in t_failover t_kill_restart t_apiserver_down t_pods_leader; do
  [[ $t == $filter* ]] && "$t"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
