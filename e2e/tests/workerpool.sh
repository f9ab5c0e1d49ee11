#!/usr/bin/env bash
# WorkerPool controller end to end, on the local cluster: the operator runs as a process with
# its own ServiceAccount token (e2e/tests/lib.sh), worker Jobs run `crane-executor work` in the
# crane image on the node, steps go through the cluster's Redis. Checks that a pool creates
# workers when steps queue, that they run the steps and exit when idle, that a wide plan is
# spread over several workers (the time is printed, not asserted), that minWorkers is kept
# without over-creating, that invalid pools are reported, that an AgentRun wakes its pool, that
# a Redis outage shows in status and heals, and the printer columns.
#
#   e2e/tests/workerpool.sh            # every test
#   e2e/tests/workerpool.sh t_wide     # tests whose name starts with t_wide
#
# Needs `make cluster-up` (which loads the crane image) and
# `cargo build -p crane-executor -p crane-operator`. Prints
# `N passed, M failed`; exits non-zero when any check failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${KUBECONFIG:-}" ] || [ -z "${REDIS_URL:-}" ] || [ -z "${CRANE_REDIS_PASSWORD_FILE:-}" ]; then
  eval "$("$root/e2e/cluster/env.sh")"
fi
. "$root/e2e/tests/lib.sh"
bin=${CRANE_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}
executor=$bin/crane-executor
prefix=crane-e2e-wp-$$
work=$(mktemp -d)



wp_field() { kubectl -n "$1" get workerpool "$2" -o jsonpath="$3" 2>/dev/null; }
ready_reason() { wp_field "$1" "$2" '{.status.conditions[?(@.type=="Ready")].reason}'; }
reason_is() { [ "$(ready_reason "$1" "$2")" = "$3" ]; }
field_is() { [ "$(wp_field "$1" "$2" "$3")" = "$4" ]; }
workers() { kubectl -n "$1" get jobs -l "app.kubernetes.io/name=crane-worker,crane.dev/pool=$2" -o name 2>/dev/null | grep -c . ; }
workers_at_least() { [ "$(workers "$1" "$2")" -ge "$3" ]; }
# run_succeeded RUN-ID NAMESPACE (a run's keys carry its namespace, its pool's)
run_succeeded() { "$executor" status --redis "$REDIS_URL" --namespace "$2" --run-id "$1" >"$work/$1.json" 2>&1; }

pool() { # NS NAME SPEC-JSON
  printf 'apiVersion: crane.dev/v1alpha1\nkind: WorkerPool\nmetadata: {name: %s}\nspec: %s\n' "$2" "$3" |
    kubectl -n "$1" apply -f - >/dev/null
}

# ---- operator -----------------------------------------------------------------------------

namespaces=(scale wide min invalid ar)
op_log=$work/operator.log

# The operator runs with its own ServiceAccount token (lib.sh), never as admin.
start_operator() {
  local args=(--redis-url "$REDIS_URL" --executor-image "$CRANE_IMAGE" --metrics-addr 127.0.0.1:0)
  for n in "${namespaces[@]}"; do args+=(--namespace "$prefix-$n"); done
  operator_start "$op_log" "${args[@]}"
}

cleanup() {
  # AgentRuns carry the operator's finalizer: delete them while it still runs, or their
  # namespace would hang in Terminating.
  kubectl -n "$prefix-ar" delete agentruns --all --timeout=30s >/dev/null 2>&1
  operator_stop
  stop_own_redis
  for n in "${namespaces[@]}"; do kubectl delete namespace "$prefix-$n" --wait=false >/dev/null 2>&1; done
  kubectl delete namespace "$outage_ns" --wait=false >/dev/null 2>&1
  if [ "$failed" -gt 0 ] && [ -f "$op_log" ]; then
    echo "--- operator log (last 40 lines) ---"; tail -n 40 "$op_log"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---- tests --------------------------------------------------------------------------------

# Steps queue on an idle pool → worker Jobs appear → the workers run the steps.
t_scale_up_runs_the_steps() {
  local ns=$prefix-scale
  pool "$ns" pool '{maxWorkers: 4, targetQueueDepth: 2, concurrency: 2, idleTimeoutSeconds: 3}'
  if wait_until 30 reason_is "$ns" pool Idle; then pass "idle pool is Ready (reason Idle)"
  else fail "idle pool is Ready (reason Idle)" "$(kubectl -n "$ns" get workerpool pool -o yaml)"; fi
  check "idle pool has no workers" 0 "$(workers "$ns" pool)"

  # Steps 1-2 feed the join 3; steps 4-7 add load so more than one worker is wanted.
  cat >"$work/join.json" <<'EOF'
{"steps": [
  {"id": 1, "tool": "calculator", "input": {"expression": "2*5"}},
  {"id": 2, "tool": "calculator", "input": {"expression": "40+5"}},
  {"id": 3, "tool": "calculator", "input": {"expression": "{step_1_output} + {step_2_output}"}, "dependsOn": [1, 2]},
  {"id": 4, "tool": "wait", "input": {"ms": 1500}},
  {"id": 5, "tool": "wait", "input": {"ms": 1500}},
  {"id": 6, "tool": "wait", "input": {"ms": 1500}},
  {"id": 7, "tool": "wait", "input": {"ms": 1500}}
]}
EOF
  local out
  if ! out=$("$executor" submit --redis "$REDIS_URL" --pool "$ns/pool" --plan "$work/join.json" --run-id "$prefix-join" 2>&1); then
    fail "submit the join plan" "$out"; return
  fi
  if wait_until 30 workers_at_least "$ns" pool 2; then pass "queued steps create several worker Jobs"
  else fail "queued steps create several worker Jobs (have $(workers "$ns" pool))" "$(kubectl -n "$ns" get workerpool pool -o yaml)"; fi
  if wait_until 90 run_succeeded "$prefix-join" "$ns"; then pass "workers run the plan to Succeeded"
  else fail "workers run the plan to Succeeded" "$(cat "$work/$prefix-join.json")"; fi
  check "the join step adds the outputs of steps 1 and 2" 55 \
    "$(jq -r '.steps[] | select(.id == 3) | .output' "$work/$prefix-join.json" 2>/dev/null)"

  local job
  job=$(kubectl -n "$ns" get jobs -l crane.dev/pool=pool -o name | head -1)
  check "worker Job is owned by the pool" "WorkerPool/pool/true" \
    "$(kubectl -n "$ns" get "$job" -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].controller}')"
  check "worker Job: backoffLimit 0, restartPolicy Never, no service-account token" "0 Never false" \
    "$(kubectl -n "$ns" get "$job" -o jsonpath='{.spec.backoffLimit} {.spec.template.spec.restartPolicy} {.spec.template.spec.automountServiceAccountToken}')"
  check "worker Job: restricted security context" "true 65532 true false ALL RuntimeDefault" \
    "$(kubectl -n "$ns" get "$job" -o jsonpath='{.spec.template.spec.containers[0].securityContext.runAsNonRoot} {.spec.template.spec.containers[0].securityContext.runAsUser} {.spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem} {.spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation} {.spec.template.spec.containers[0].securityContext.capabilities.drop[0]} {.spec.template.spec.securityContext.seccompProfile.type}')"
  check "worker Job runs crane-executor work for this pool" \
    "crane-executor work --redis $REDIS_URL --pool $ns/pool --concurrency 2 --idle-timeout 3" \
    "$(kubectl -n "$ns" get "$job" -o jsonpath='{.spec.template.spec.containers[0].command[*]}')"
  if [ -n "$(wp_field "$ns" pool '{.status.lastScaleTime}')" ]; then pass "status.lastScaleTime is set"
  else fail "status.lastScaleTime is set"; fi
  if kubectl -n "$ns" get events --field-selector reason=ScaledUp -o name 2>/dev/null | grep -q .; then
    pass "a ScaledUp event is recorded"
  else fail "a ScaledUp event is recorded" "$(kubectl -n "$ns" get events 2>&1)"; fi
}

# Continues t_scale_up_runs_the_steps: with nothing left to do the workers exit by
# themselves (exit 0) and activeWorkers returns to 0.
t_scale_up_workers_exit_when_idle() {
  local ns=$prefix-scale
  if wait_until 60 field_is "$ns" pool '{.status.activeWorkers}' 0; then pass "activeWorkers returns to 0 once idle"
  else fail "activeWorkers returns to 0 once idle" "$(kubectl -n "$ns" get workerpool pool -o yaml; kubectl -n "$ns" get jobs)"; fi
  local total succeeded
  total=$(workers "$ns" pool)
  succeeded=$(kubectl -n "$ns" get jobs -l crane.dev/pool=pool -o jsonpath='{range .items[*]}{.status.succeeded}{"\n"}{end}' | grep -c '^1$')
  check "every worker exited 0 (idle exit, none deleted)" "$total" "$succeeded"
  check "desiredWorkers and queueDepth back to 0" "0 0" "$(wp_field "$ns" pool '{.status.desiredWorkers} {.status.queueDepth}')"
  check "idle pool is Ready again (reason Idle)" Idle "$(ready_reason "$ns" pool)"
}

t_columns() {
  local ns=$prefix-scale
  check "kubectl get workerpools shows WORKERS DESIRED QUEUE AGE" "NAME WORKERS DESIRED QUEUE AGE" \
    "$(kubectl -n "$ns" get workerpools | head -1 | tr -s ' ' | sed 's/ $//')"
  check "columns carry the status numbers" "pool 0 0 0" \
    "$(kubectl -n "$ns" get wp pool --no-headers | awk '{print $1, $2, $3, $4}')"
}

# 20 × wait 500 ms then a join: with several workers it takes a few seconds, not 10+.
t_wide_plan_uses_several_workers() {
  local ns=$prefix-wide
  pool "$ns" wide '{maxWorkers: 10, targetQueueDepth: 2, concurrency: 2, idleTimeoutSeconds: 5}'
  wait_until 30 reason_is "$ns" wide Idle || true
  {
    printf '{"steps": [\n'
    for i in $(seq 1 20); do printf '  {"id": %d, "tool": "wait", "input": {"ms": 500}},\n' "$i"; done
    printf '  {"id": 21, "tool": "calculator", "input": {"expression": "20*500"}, "dependsOn": [%s]}\n]}\n' "$(seq -s, 1 20)"
  } >"$work/wide.json"
  local t0 t1 out
  t0=$(date +%s.%N)
  if ! out=$("$executor" submit --redis "$REDIS_URL" --pool "$ns/wide" --plan "$work/wide.json" --run-id "$prefix-wide" 2>&1); then
    fail "submit the wide plan" "$out"; return
  fi
  # `submit` bypasses the Kubernetes API, so an idle pool notices it at its next poll
  # (IDLE_REQUEUE, 5 s); an AgentRun wakes its pool at once.
  local tw=""
  wait_until 30 workers_at_least "$ns" wide 1 && tw=$(date +%s.%N)
  if wait_until 120 run_succeeded "$prefix-wide" "$ns"; then
    t1=$(date +%s.%N)
    pass "wide plan (20 x wait 500 ms + join) Succeeded"
    printf 'info wide plan: %.1f s from submit to Succeeded (first worker Job after %.1f s, %.1f s from then) with %d worker Job(s)\n' \
      "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" "$(awk -v a="$t0" -v b="${tw:-$t0}" 'BEGIN{print b-a}')" \
      "$(awk -v a="${tw:-$t0}" -v b="$t1" 'BEGIN{print b-a}')" "$(workers "$ns" wide)"
  else
    fail "wide plan (20 x wait 500 ms + join) Succeeded" "$(cat "$work/$prefix-wide.json")"
  fi
  local n; n=$(workers "$ns" wide)
  if [ "$n" -ge 2 ]; then pass "the wide plan was spread over several workers ($n)"
  else fail "the wide plan was spread over several workers (only $n)"; fi
  if [ "$n" -le 10 ]; then pass "never more worker Jobs than maxWorkers ($n <= 10)"
  else fail "never more worker Jobs than maxWorkers ($n > 10)" "$(kubectl -n "$ns" get jobs)"; fi
  check "the join ran after all 20 waits" 10000 \
    "$(jq -r '.steps[] | select(.id == 21) | .output' "$work/$prefix-wide.json" 2>/dev/null)"
}

# minWorkers with an empty queue: exactly that many Jobs, also after many reconciles;
# deleting the pool removes its workers (owner references).
t_min_workers_kept_without_over_creating() {
  local ns=$prefix-min
  pool "$ns" keep '{minWorkers: 2, maxWorkers: 5, idleTimeoutSeconds: 300}'
  if wait_until 30 workers_at_least "$ns" keep 2; then pass "minWorkers Jobs are created on an empty queue"
  else fail "minWorkers Jobs are created on an empty queue" "$(kubectl -n "$ns" get workerpool keep -o yaml)"; fi
  # Several reconciles happen meanwhile (requeue ~1 s with active workers, plus Job events).
  sleep 6
  check "exactly minWorkers Jobs after several reconciles" 2 "$(workers "$ns" keep)"
  if wait_until 20 field_is "$ns" keep '{.status.activeWorkers}/{.status.desiredWorkers}' 2/2; then pass "status shows 2 active of 2 desired"
  else fail "status shows 2 active of 2 desired" "$(wp_field "$ns" keep '{.status}')"; fi
  check "pool with workers is Ready (reason WorkersActive)" WorkersActive "$(ready_reason "$ns" keep)"
  kubectl -n "$ns" delete workerpool keep --wait=false >/dev/null
  if wait_until 60 bash -c "[ \"\$(kubectl -n $ns get jobs -l crane.dev/pool=keep -o name | grep -c .)\" = 0 ]"; then
    pass "deleting the pool removes its worker Jobs"
  else fail "deleting the pool removes its worker Jobs" "$(kubectl -n "$ns" get jobs 2>&1)"; fi
}

t_invalid_pools_are_reported() {
  local ns=$prefix-invalid
  pool "$ns" dotted.name '{maxWorkers: 2, minWorkers: 1}'
  if wait_until 30 reason_is "$ns" dotted.name InvalidSpec; then pass "a pool name with a dot is reported InvalidSpec"
  else fail "a pool name with a dot is reported InvalidSpec" "$(kubectl -n "$ns" get workerpool dotted.name -o yaml)"; fi
  local msg; msg=$(wp_field "$ns" dotted.name '{.status.conditions[?(@.type=="Ready")].message}')
  if grep -q "cannot be served" <<<"$msg"; then pass "the message says why ($msg)"; else fail "the message says why" "$msg"; fi
  pool "$ns" sneaky '{minWorkers: 1, template: {env: [{name: CRANE_REDIS_PASSWORD, value: x}]}}'
  if wait_until 30 reason_is "$ns" sneaky InvalidSpec; then pass "a template overriding the Redis password env is rejected"
  else fail "a template overriding the Redis password env is rejected" "$(kubectl -n "$ns" get workerpool sneaky -o yaml)"; fi
  msg=$(wp_field "$ns" sneaky '{.status.conditions[?(@.type=="Ready")].message}')
  if grep -q "spec.template.env\[0\].name" <<<"$msg"; then pass "the message names the field"; else fail "the message names the field" "$msg"; fi
  check "invalid pools get no workers" 0 "$(kubectl -n "$ns" get jobs -o name | grep -c .)"
  # Fixing the spec is picked up at once.
  pool "$ns" sneaky '{minWorkers: 1, idleTimeoutSeconds: 300, template: {env: [{name: RUST_LOG, value: info}]}}'
  if wait_until 30 workers_at_least "$ns" sneaky 1; then pass "the fixed pool gets its worker"
  else fail "the fixed pool gets its worker" "$(kubectl -n "$ns" get workerpool sneaky -o yaml)"; fi
}

# The way users queue steps: an AgentRun on the pool. Its changes wake the pool at once
# (a watch on AgentRuns), rather than at the pool's next idle poll.
t_agentrun_wakes_its_pool() {
  local ns=$prefix-ar
  pool "$ns" default '{idleTimeoutSeconds: 3}'
  wait_until 30 reason_is "$ns" default Idle || true
  cat <<'EOF' | kubectl -n "$ns" apply -f - >/dev/null
apiVersion: crane.dev/v1alpha1
kind: AgentRun
metadata: {name: sum}
spec:
  plan:
    steps:
      - {id: 1, tool: calculator, input: {expression: "2*5"}}
      - {id: 2, tool: calculator, input: {expression: "40+5"}}
      - {id: 3, tool: calculator, input: {expression: "{step_1_output} + {step_2_output}"}, dependsOn: [1, 2]}
EOF
  local out
  if out=$(kubectl -n "$ns" wait --for=condition=Complete --timeout=90s agentrun/sum 2>&1); then
    pass "an AgentRun on the pool completes through its workers"
  else fail "an AgentRun on the pool completes through its workers" "$out$(kubectl -n "$ns" get agentrun sum -o yaml)"; fi
  if workers_at_least "$ns" default 1; then pass "the pool created a worker for the AgentRun"
  else fail "the pool created a worker for the AgentRun"; fi
  if grep -F "related object updated: AgentRun.v1alpha1.crane.dev/sum.$ns" "$op_log" | grep -qF "WorkerPool.v1alpha1.crane.dev/default.$ns"; then
    pass "the AgentRun's changes trigger a reconcile of its pool"
  else fail "the AgentRun's changes trigger a reconcile of its pool"; fi
  if wait_until 60 field_is "$ns" default '{.status.activeWorkers}' 0; then pass "its worker exits when idle"
  else fail "its worker exits when idle" "$(kubectl -n "$ns" get jobs 2>&1)"; fi
}

# A pool whose Redis goes away says so in its status (Ready=False, RedisUnavailable, with
# the error) and recovers by itself when Redis is back. Uses a Redis of its own and a second
# operator process watching only this test's namespace, so the shared Redis stays up.
outage_ns=$prefix-outage
redis_pid=""
# A private redis-server with the suite's Redis password (CRANE_REDIS_PASSWORD_FILE, which the
# operator reads; given on stdin, not in its arguments).
start_own_redis() { # PORT
  printf 'requirepass %s\n' "$(cat "$CRANE_REDIS_PASSWORD_FILE")" |
    redis-server - --bind 127.0.0.1 --port "$1" --save '' --appendonly no --dir "$work" >>"$work/redis.log" 2>&1 &
  redis_pid=$!
  wait_until 10 redis-cli -p "$1" ping
}
stop_own_redis() {
  if [ -n "$redis_pid" ]; then kill -TERM "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; fi
  redis_pid=""
}
t_redis_outage_is_reported() {
  local ns=$outage_ns port main_pid=$OPERATOR_PID main_kc=$OPERATOR_KUBECONFIG
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if ! start_own_redis "$port"; then fail "start a private redis-server" "$(cat "$work/redis.log")"; return; fi
  kubectl create namespace "$ns" >/dev/null
  if ! operator_start "$work/operator-outage.log" --redis-url "redis://127.0.0.1:$port" \
    --executor-image "$CRANE_IMAGE" --metrics-addr 127.0.0.1:0 --namespace "$ns"; then
    fail "start a second operator for the outage test"
  else
    pool "$ns" p '{maxWorkers: 2}'
    if wait_until 30 reason_is "$ns" p Idle; then pass "outage: pool Ready while Redis is up"
    else fail "outage: pool Ready while Redis is up" "$(wp_field "$ns" p '{.status}')"; fi
    stop_own_redis
    if wait_until 60 reason_is "$ns" p RedisUnavailable; then pass "outage: Redis down → Ready=False, reason RedisUnavailable"
    else fail "outage: Redis down → Ready=False, reason RedisUnavailable" "$(wp_field "$ns" p '{.status}')"; fi
    check "outage: the condition is False" False "$(wp_field "$ns" p '{.status.conditions[?(@.type=="Ready")].status}')"
    local msg; msg=$(wp_field "$ns" p '{.status.conditions[?(@.type=="Ready")].message}')
    if grep -q "cannot read the queue depth" <<<"$msg"; then pass "outage: the message carries the error ($msg)"
    else fail "outage: the message carries the error" "$msg"; fi
    check "outage: no worker created while blind" 0 "$(workers "$ns" p)"
    start_own_redis "$port" || true
    if wait_until 90 reason_is "$ns" p Idle; then pass "outage: Ready again once Redis is back"
    else fail "outage: Ready again once Redis is back" "$(wp_field "$ns" p '{.status}'; tail -n 20 "$work/operator-outage.log")"; fi
    operator_stop
  fi
  stop_own_redis
  OPERATOR_PID=$main_pid OPERATOR_KUBECONFIG=$main_kc
}

# ---- main ---------------------------------------------------------------------------------

for f in "$executor" "$bin/crane-operator"; do
  [ -x "$f" ] || { echo "missing $f: cargo build -p crane-executor -p crane-operator"; exit 2; }
done
kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/workerpools.crane.dev >/dev/null
for n in "${namespaces[@]}"; do kubectl create namespace "$prefix-$n" >/dev/null; done
start_operator || exit 1

tests=(t_scale_up_runs_the_steps t_scale_up_workers_exit_when_idle t_columns
  t_wide_plan_uses_several_workers t_min_workers_kept_without_over_creating t_invalid_pools_are_reported t_agentrun_wakes_its_pool
  t_redis_outage_is_reported)
for t in "${tests[@]}"; do
  if [ -z "${1:-}" ] || [[ $t == "$1"* ]]; then
    echo "== $t"
    "$t"
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
