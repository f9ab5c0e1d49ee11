#!/usr/bin/env bash
# Faults survived, on the local cluster, caused the way they happen (issue 7):
# - Redis's process SIGKILLed mid-run: the kubelet restarts its container, Redis reloads its
#   AOF from the pod's volume, and the run continues and succeeds;
# - the Redis pod deleted mid-run: its replacement starts EMPTY; the operator rebuilds the run
#   from its status (completed steps keep their outputs and do not run again; a step whose
#   mirrored output was truncated runs again) and it succeeds;
# - retry from failure: annotation crane.dev/retry on a Failed run re-runs only the failed
#   and skipped steps, keeping completed ones, and the run succeeds;
# - a worker POD deleted, and a worker container's PROCESS SIGKILLed, mid-step: the step is
#   reclaimed after its lease and completes once; a todo_store.add never adds twice;
# - WorkerPool scale 0 → N → 0: reaction times are measured and printed (not asserted); no
#   busy worker is killed (every worker Job succeeds, no step runs twice).
#
# Every test runs against a PRIVATE Redis (a Deployment in this suite's namespace, AOF with
# fsync always, behind a Service) and an operator process pointed at its ClusterIP that watches
# only this suite's namespaces, so the cluster's own Redis is never touched; worker pods of
# those namespaces get the same URL.
#
#   e2e/tests/faults.sh            # every test
#   e2e/tests/faults.sh t_retry    # tests whose name starts with t_retry
#
# Needs a cluster (`make cluster-up`, or CRANE_CLUSTER_DIR=/tmp/x e2e/cluster/up.sh), its crane
# image, and `cargo build -p crane-executor -p crane-operator`. Prints figures, then
# `N passed, M failed`; exits non-zero when any check failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${KUBECONFIG:-}" ]; then
  eval "$("$root/e2e/cluster/env.sh")"
fi
. "$root/e2e/tests/lib.sh"
bin=${CRANE_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}
prefix=crane-e2e-faults-$$
work=$(mktemp -d)
figures=()

figure() { figures+=("$1"); echo "     figure: $1"; }

now_ms() { date +%s%3N; }

# ---- private Redis (a pod, AOF) ----------------------------------------------------------

redis_ns=$prefix-redis
redis_ip=""
redis_url=""
# With a timeout: right after the Redis pod goes, kube-proxy may still send a new connection
# to the old pod's address, where nothing answers or refuses; without one such a SYN waits for
# the kernel's connect timeout (a minute or more) instead of the next try.
rcli() { timeout 3 redis-cli -h "$redis_ip" "$@"; }
# redis_pod: the running Redis pod that is not on its way out.
redis_pod() {
  kubectl -n "$redis_ns" get pods -l app=redis -o json 2>/dev/null |
    jq -r '[.items[] | select(.metadata.deletionTimestamp == null and .status.phase == "Running") | .metadata.name][0] // empty'
}
redis_restarts() { kubectl -n "$redis_ns" get pods -l app=redis -o jsonpath='{.items[0].status.containerStatuses[0].restartCount}' 2>/dev/null; }
redis_ready() { [ "$(rcli ping 2>/dev/null)" = PONG ]; }

# deploy_redis: AOF with fsync on every write, so a SIGKILL loses nothing acknowledged; the
# AOF lives in the pod's emptyDir, which outlives a container restart but not the pod. Its
# password is the cluster Redis's (CRANE_REDIS_PASSWORD_FILE), which the operator and redis-cli
# already use.
deploy_redis() {
  kubectl create namespace "$redis_ns" >/dev/null 2>&1
  kubectl -n "$redis_ns" create secret generic redis-config \
    --from-file=redis.conf=<(printf 'requirepass %s\n' "$(cat "$CRANE_REDIS_PASSWORD_FILE")") >/dev/null || return 1
  kubectl -n "$redis_ns" apply -f - >/dev/null <<'YAML' || return 1
apiVersion: apps/v1
kind: Deployment
metadata: {name: redis}
spec:
  replicas: 1
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 5
      securityContext: {runAsNonRoot: true, runAsUser: 999, runAsGroup: 999, fsGroup: 999, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: redis
          image: docker.io/library/redis:7.4-alpine
          command: [redis-server, /etc/redis/redis.conf, --bind, 0.0.0.0, --protected-mode, "no", --save, "", --appendonly, "yes", --appendfsync, always, --dir, /data]
          ports: [{name: redis, containerPort: 6379}]
          readinessProbe: {tcpSocket: {port: redis}, periodSeconds: 1}
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
          volumeMounts: [{name: data, mountPath: /data}, {name: config, mountPath: /etc/redis, readOnly: true}]
      volumes: [{name: data, emptyDir: {}}, {name: config, secret: {secretName: redis-config, defaultMode: 0440}}]
---
apiVersion: v1
kind: Service
metadata: {name: redis}
spec:
  selector: {app: redis}
  ports: [{name: redis, port: 6379, targetPort: redis}]
YAML
  kubectl -n "$redis_ns" rollout status deployment/redis --timeout=60s >/dev/null || return 1
  redis_ip=$(kubectl -n "$redis_ns" get service redis -o jsonpath='{.spec.clusterIP}')
  redis_url=redis://$redis_ip:6379
  wait_until 20 redis_ready
}

# ---- objects ------------------------------------------------------------------------------

namespaces=(aof empty retry poddel sigkill scale)
ns_of() { echo "$prefix-$1"; }

pool() { # NS NAME SPEC-JSON
  printf 'apiVersion: crane.dev/v1alpha1\nkind: WorkerPool\nmetadata: {name: %s}\nspec: %s\n' "$2" "$3" |
    kubectl -n "$1" apply -f - >/dev/null
}
# agentrun NS NAME PLAN-STEPS-JSON [EXTRA-SPEC-JSON-FIELDS]
agentrun() {
  local extra=${4:-}
  [ -n "$extra" ] && extra=", $extra"
  printf '{"apiVersion":"crane.dev/v1alpha1","kind":"AgentRun","metadata":{"name":"%s"},"spec":{"workerPool":"p","plan":{"steps":%s}%s}}' \
    "$2" "$3" "$extra" | kubectl -n "$1" apply -f - >/dev/null
}
ar_json() { kubectl -n "$1" get agentrun "$2" -o json 2>/dev/null; }
# step_field NS RUN ID JQ-FIELD
step_field() { ar_json "$1" "$2" | jq -c ".status.steps[]? | select(.id == $3) | $4" 2>/dev/null; }
step_phase_is() { [ "$(step_field "$1" "$2" "$3" .phase)" = "\"$4\"" ]; }
steps_succeeded() { # NS RUN ID...
  local ns=$1 run=$2 id; shift 2
  for id in "$@"; do step_phase_is "$ns" "$run" "$id" Succeeded || return 1; done
}
max_attempts() { ar_json "$1" "$2" | jq '[.status.steps[].attempts] | max' 2>/dev/null; }
worker_jobs() { kubectl -n "$1" get jobs -l "app.kubernetes.io/name=crane-worker" -o json 2>/dev/null; }
worker_job_count() { worker_jobs "$1" | jq '.items | length'; }
has_worker_job() { [ "$(worker_job_count "$1")" -ge 1 ]; }
# The todos of namespace NS in the private Redis, as "id:title" lines.
# todo_key NS NAME: a key of the namespace's todo store (its layout: executor/tools/src/todo.rs).
todo_key() { echo "crane:ns:$1:{todo:$1}:$2"; }
todos() { rcli --raw HGETALL "$(todo_key "$1" items)" | paste - - | tr '\t' ':'; }
todo_count() { rcli HLEN "$(todo_key "$1" items)"; }
# A running worker pod of NS (its name).
busy_worker_pod() {
  kubectl -n "$1" get pods -l app.kubernetes.io/name=crane-worker \
    --field-selector=status.phase=Running -o jsonpath='{.items[0].metadata.name}' 2>/dev/null
}

# ---- operator -----------------------------------------------------------------------------

op_log=$work/operator.log
start_operator() {
  local args=(--redis-url "$redis_url" --executor-image "$CRANE_IMAGE" --metrics-addr 127.0.0.1:0)
  for n in "${namespaces[@]}"; do args+=(--namespace "$(ns_of "$n")"); done
  operator_start "$op_log" "${args[@]}"
}

cleanup() {
  # AgentRuns carry the operator's finalizer: delete them while it still runs, or their
  # namespaces would hang in Terminating.
  for n in "${namespaces[@]}"; do
    kubectl -n "$(ns_of "$n")" delete agentruns --all --timeout=30s >/dev/null 2>&1
  done
  operator_stop
  for n in "${namespaces[@]}"; do kubectl delete namespace "$(ns_of "$n")" --wait=false >/dev/null 2>&1; done
  kubectl delete namespace "$redis_ns" --wait=false >/dev/null 2>&1
  if [ "$failed" -gt 0 ] && [ -f "$op_log" ]; then
    echo "--- operator log (last 40 lines) ---"; tail -n 40 "$op_log"
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# ---- tests --------------------------------------------------------------------------------

# Redis's process SIGKILLed mid-run: the kubelet restarts the container, which reloads its AOF;
# the run goes on from where it was.
t_redis_aof_restart_runs_continue() {
  local ns; ns=$(ns_of aof)
  pool "$ns" p '{maxWorkers: 2, concurrency: 4, idleTimeoutSeconds: 10}'
  agentrun "$ns" chain '[
    {"id": 1, "tool": "todo_store.add", "input": {"title": "added once"}},
    {"id": 2, "tool": "wait", "input": {"ms": 1500}, "dependsOn": [1]},
    {"id": 3, "tool": "wait", "input": {"ms": 1500}, "dependsOn": [2]},
    {"id": 4, "tool": "wait", "input": {"ms": 1500}, "dependsOn": [3]},
    {"id": 5, "tool": "todo_store.list", "input": {}, "dependsOn": [4]}]'
  if ! wait_until 60 steps_succeeded "$ns" chain 1 2; then
    fail "aof: steps 1-2 succeed before the crash" "$(ar_json "$ns" chain | jq -c .status)"; return
  fi
  local before restarts pod pid; before=$(step_field "$ns" chain 1 '[.attempts, .finishedAt]')
  restarts=$(redis_restarts) pod=$(redis_pod)
  pid=$(container_pid "$redis_ns" "$pod") || { fail "aof: the Redis container's pid"; return; }
  kill -KILL "$pid"
  restarted() { [ "$(redis_restarts)" -gt "$restarts" ] && redis_ready; }
  if wait_until 60 restarted; then pass "aof: the kubelet restarted the SIGKILLed Redis container"
  else fail "aof: the kubelet restarted the SIGKILLed Redis container" "$(kubectl -n "$redis_ns" describe pod "$pod" | tail -n 10)"; return; fi
  check "aof: the same pod, not a new one" "$pod" "$(redis_pod)"
  if wait_until 90 phase_is "$ns" chain Succeeded; then pass "aof: the run succeeds after Redis restarted from its AOF"
  else fail "aof: the run succeeds after Redis restarted from its AOF" "$(ar_json "$ns" chain | jq -c .status)"; return; fi
  check "aof: step 1 kept its attempts and finish time" "$before" "$(step_field "$ns" chain 1 '[.attempts, .finishedAt]')"
  check "aof: the todo was added once" 1 "$(todo_count "$ns")"
  check "aof: step 5 lists exactly that todo" 1 "$(step_field "$ns" chain 5 '.output | length')"
  local m; m=$(max_attempts "$ns" chain)
  if [ "${m:-9}" -le 2 ]; then pass "aof: no step took more than 2 attempts (max $m)"; else fail "aof: no step took more than 2 attempts (max $m)"; fi
}

# The Redis pod deleted mid-run: its replacement starts empty (a new emptyDir); the run is
# rebuilt from its status and finishes.
t_redis_lost_run_is_rebuilt_from_status() {
  local ns long; ns=$(ns_of empty)
  long=$(printf 'L%.0s' $(seq 1 300)) # a title whose add-output exceeds the 256-byte status cap
  pool "$ns" p '{maxWorkers: 2, concurrency: 4, idleTimeoutSeconds: 10}'
  agentrun "$ns" rebuild "[
    {\"id\": 1, \"tool\": \"todo_store.add\", \"input\": {\"title\": \"short\"}},
    {\"id\": 2, \"tool\": \"calculator\", \"input\": {\"expression\": \"6*7\"}},
    {\"id\": 7, \"tool\": \"todo_store.add\", \"input\": {\"title\": \"$long\"}},
    {\"id\": 3, \"tool\": \"wait\", \"input\": {\"ms\": 3000}, \"dependsOn\": [1, 2, 7]},
    {\"id\": 4, \"tool\": \"wait\", \"input\": {\"ms\": 500}, \"dependsOn\": [3]},
    {\"id\": 5, \"tool\": \"calculator\", \"input\": {\"expression\": \"{step_2_output} + 1\"}, \"dependsOn\": [4]},
    {\"id\": 6, \"tool\": \"todo_store.list\", \"input\": {}, \"dependsOn\": [5, 7]}]"
  if ! wait_until 60 steps_succeeded "$ns" rebuild 1 2 7; then
    fail "empty: steps 1, 2, 7 succeed before Redis is lost" "$(ar_json "$ns" rebuild | jq -c .status)"; return
  fi
  check "empty: step 7's output is truncated in status" true "$(step_field "$ns" rebuild 7 .output.truncated)"
  local before old; before=$(step_field "$ns" rebuild 1 '[.attempts, .startedAt, .output]')
  old=$(redis_pod)
  kubectl -n "$redis_ns" delete pod "$old" --wait=false >/dev/null
  replaced() { local p; p=$(redis_pod); [ -n "$p" ] && [ "$p" != "$old" ] && redis_ready; }
  local t_del; t_del=$(now_ms)
  if ! wait_until 90 replaced; then fail "empty: the deleted Redis pod is replaced" "$(kubectl -n "$redis_ns" get pods 2>&1)"; return; fi
  figure "redis pod deleted → its replacement answers: $(( $(now_ms) - t_del )) ms"
  local t0; t0=$(now_ms)
  if wait_until 120 phase_is "$ns" rebuild Succeeded; then pass "empty: the lost run is rebuilt from its status and succeeds"
  else fail "empty: the lost run is rebuilt from its status and succeeds" "$(ar_json "$ns" rebuild | jq -c .status; grep -i rebuil "$op_log" | tail -n 5)"; return; fi
  figure "redis lost → rebuilt run Succeeded: $(( $(now_ms) - t0 )) ms (the operator re-checks every run when its Redis connection comes back)"
  grep -q "rebuilt it from its status" "$op_log" && pass "empty: the operator logged the rebuild" || fail "empty: the operator logged the rebuild"
  check "empty: step 1 was restored, not re-run (attempts, startedAt, output)" "$before" \
    "$(step_field "$ns" rebuild 1 '[.attempts, .startedAt, .output]')"
  check "empty: step 5 read step 2's restored output" 43 "$(step_field "$ns" rebuild 5 .output)"
  # The fresh Redis holds only what ran after the loss: step 7 again (truncated, so re-run),
  # not step 1 (restored).
  check "empty: only the truncated step's todo was added again" "1" "$(todo_count "$ns")"
  check "empty: the fresh store holds step 7's todo only" "$long" "$(rcli --raw HVALS "$(todo_key "$ns" items)")"
}

# A Failed run annotated crane.dev/retry re-runs only its failed and skipped steps.
t_retry_from_failure() {
  local ns; ns=$(ns_of retry)
  pool "$ns" p '{maxWorkers: 1, concurrency: 4, idleTimeoutSeconds: 10}'
  # Step 2 completes todo 2, which does not exist until the test creates it by hand.
  agentrun "$ns" retry '[
    {"id": 1, "tool": "todo_store.add", "input": {"title": "first"}},
    {"id": 2, "tool": "todo_store.complete", "input": {"id": 2}, "dependsOn": [1]},
    {"id": 3, "tool": "todo_store.list", "input": {}, "dependsOn": [2]}]' \
    '"retry": {"maxAttempts": 1}'
  if wait_until 60 phase_is "$ns" retry Failed; then pass "retry: the run fails on the missing todo"
  else fail "retry: the run fails on the missing todo" "$(ar_json "$ns" retry | jq -c .status)"; return; fi
  check "retry: steps are Succeeded, Failed, Skipped" '"Succeeded","Failed","Skipped"' \
    "$(ar_json "$ns" retry | jq -c '[.status.steps[] | .phase] | join(",")' | sed 's/,/","/g')"
  local before; before=$(step_field "$ns" retry 1 '[.attempts, .finishedAt, .output]')
  # The todo the failed step wanted, created by hand.
  rcli INCR "$(todo_key "$ns" seq)" >/dev/null
  rcli HSET "$(todo_key "$ns" items)" 2 "by hand" >/dev/null
  kubectl -n "$ns" annotate agentrun retry crane.dev/retry=t1 >/dev/null
  if wait_until 60 phase_is "$ns" retry Succeeded; then pass "retry: the annotated run succeeds"
  else fail "retry: the annotated run succeeds" "$(ar_json "$ns" retry | jq -c .status)"; return; fi
  check "retry: step 1 kept its attempts, finish time and output" "$before" "$(step_field "$ns" retry 1 '[.attempts, .finishedAt, .output]')"
  check "retry: the failed step ran once more" 1 "$(step_field "$ns" retry 2 .attempts)"
  check "retry: status.retryToken records the token" t1 "$(kubectl -n "$ns" get agentrun retry -o jsonpath='{.status.retryToken}')"
  check "retry: no todo added twice" 2 "$(todo_count "$ns")"
  check "retry: Failed condition is False again" False \
    "$(kubectl -n "$ns" get agentrun retry -o jsonpath='{.status.conditions[?(@.type=="Failed")].status}')"
  if kubectl -n "$ns" wait --for=condition=Complete agentrun/retry --timeout=5s >/dev/null 2>&1; then pass "retry: kubectl wait --for=condition=Complete works"
  else fail "retry: kubectl wait --for=condition=Complete works"; fi
  # A new token on a Succeeded run changes nothing.
  kubectl -n "$ns" annotate --overwrite agentrun retry crane.dev/retry=t2 >/dev/null
  sleep 2
  check "retry: a Succeeded run is not retried" "Succeeded t1" \
    "$(kubectl -n "$ns" get agentrun retry -o jsonpath='{.status.phase} {.status.retryToken}')"
}

# worker_fault NS HOW: runs a 4 s step and a todo add on a one-worker pool, kills the worker
# while the 4 s step runs (HOW: delete-pod | sigkill), and checks the outcome.
worker_fault() {
  local ns=$1 how=$2 pod pid t0
  pool "$ns" p '{maxWorkers: 1, concurrency: 2, idleTimeoutSeconds: 10}'
  agentrun "$ns" victim '[
    {"id": 1, "tool": "wait", "input": {"ms": 4000}},
    {"id": 2, "tool": "todo_store.add", "input": {"title": "never twice"}},
    {"id": 3, "tool": "todo_store.list", "input": {}, "dependsOn": [1, 2]}]' \
    '"retry": {"maxAttempts": 3}'
  if ! wait_until 60 step_phase_is "$ns" victim 1 Running; then
    fail "$how: step 1 starts" "$(ar_json "$ns" victim | jq -c .status)"; return
  fi
  pod=$(busy_worker_pod "$ns")
  [ -n "$pod" ] || { fail "$how: a running worker pod"; return; }
  t0=$(now_ms)
  case $how in
    delete-pod)
      kubectl -n "$ns" delete pod "$pod" --wait=false >/dev/null ;;
    sigkill)
      pid=$(container_pid "$ns" "$pod")
      if ! [[ $pid =~ ^[0-9]+$ ]]; then fail "$how: the worker container's pid" "$(kubectl -n "$ns" get pod "$pod" -o yaml | tail -n 20)"; return; fi
      kill -KILL "$pid" ;;
  esac
  if wait_until 120 phase_is "$ns" victim Succeeded; then pass "$how: the run succeeds after the worker died mid-step"
  else fail "$how: the run succeeds after the worker died mid-step" "$(ar_json "$ns" victim | jq -c .status)"; return; fi
  figure "$how: worker killed → run Succeeded in $(( $(now_ms) - t0 )) ms (step lease 10 s)"
  local a1; a1=$(step_field "$ns" victim 1 .attempts)
  if [ "$how" = sigkill ]; then
    check "$how: the killed step was reclaimed once (attempts)" 2 "$a1"
  elif [ "${a1:-9}" -le 2 ]; then pass "$how: step 1 completed once (attempts $a1: drained or reclaimed)"
  else fail "$how: step 1 completed once (attempts $a1)"; fi
  check "$how: the todo was added once" 1 "$(todo_count "$ns")"
  check "$how: step 3 lists one todo" 1 "$(step_field "$ns" victim 3 '.output | length')"
  local jobs; jobs=$(worker_job_count "$ns")
  figure "$how: $jobs worker Job(s) used"
}
t_worker_pod_deleted_mid_step() { worker_fault "$(ns_of poddel)" delete-pod; }
t_worker_sigkilled_mid_step() { worker_fault "$(ns_of sigkill)" sigkill; }

# WorkerPool 0 → N → 0, with reaction times printed; no busy worker is killed on scale-in.
t_scale_zero_n_zero() {
  local ns steps t0 t_first t_done
  ns=$(ns_of scale)
  pool "$ns" p '{minWorkers: 0, maxWorkers: 3, targetQueueDepth: 2, concurrency: 2, idleTimeoutSeconds: 3}'
  check "scale: an idle pool has no workers" 0 "$(worker_job_count "$ns")"
  steps=$(for i in $(seq 1 12); do printf '{"id": %d, "tool": "wait", "input": {"ms": 1500}},' "$i"; done)
  t0=$(now_ms)
  agentrun "$ns" burst "[${steps%,}]"
  if wait_until 60 has_worker_job "$ns"; then t_first=$(now_ms); pass "scale: queued steps create a worker Job"
  else fail "scale: queued steps create a worker Job"; return; fi
  local created submitted
  submitted=$(kubectl -n "$ns" get agentrun burst -o jsonpath='{.metadata.creationTimestamp}')
  created=$(worker_jobs "$ns" | jq -r '[.items[].metadata.creationTimestamp] | min')
  figure "scale: AgentRun applied → first worker Job seen: $((t_first - t0)) ms (polled every 250 ms); creationTimestamps $submitted → $created ($(( $(date -d "$created" +%s) - $(date -d "$submitted" +%s) )) s, 1 s resolution)"
  if wait_until 90 phase_is "$ns" burst Succeeded; then pass "scale: the burst succeeds"
  else fail "scale: the burst succeeds" "$(ar_json "$ns" burst | jq -c .status)"; return; fi
  t_done=$(now_ms)
  local peak; peak=$(worker_job_count "$ns")
  figure "scale: $peak worker Job(s) at peak for 12 × 1.5 s steps (maxWorkers 3)"
  all_workers_gone() { [ "$(worker_jobs "$ns" | jq '[.items[] | select((.status.active // 0) > 0)] | length')" = 0 ]; }
  if wait_until 60 all_workers_gone; then pass "scale: every worker exits once idle"
  else fail "scale: every worker exits once idle" "$(worker_jobs "$ns" | jq -c '[.items[] | .status]')"; return; fi
  figure "scale: run Succeeded → all workers gone: $(( $(now_ms) - t_done )) ms (idleTimeoutSeconds 3)"
  check "scale: every worker Job Succeeded (none killed busy)" "$peak/$peak" \
    "$(worker_jobs "$ns" | jq -r "[.items[] | select((.status.succeeded // 0) == 1)] | length")/$peak"
  check "scale: no step ran twice" 1 "$(max_attempts "$ns" burst)"
  check "scale: the pool reports 0 active workers" 0 \
    "$(kubectl -n "$ns" get workerpool p -o jsonpath='{.status.activeWorkers}' 2>/dev/null || echo '?')"
}

# ---- main ---------------------------------------------------------------------------------

for f in "$bin/crane-executor" "$bin/crane-operator"; do
  [ -x "$f" ] || { echo "missing $f: cargo build -p crane-executor -p crane-operator"; exit 2; }
done
for tool in redis-cli jq python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool"; exit 2; }
done
deploy_redis || { echo "cannot start the private Redis"; kubectl -n "$redis_ns" get pods; echo "0 passed, 1 failed"; exit 1; }
for n in "${namespaces[@]}"; do kubectl create namespace "$(ns_of "$n")" >/dev/null; done
start_operator || exit 1

tests=(t_redis_aof_restart_runs_continue t_retry_from_failure t_worker_pod_deleted_mid_step
  t_worker_sigkilled_mid_step t_scale_zero_n_zero t_redis_lost_run_is_rebuilt_from_status)
for t in "${tests[@]}"; do
  if [ -z "${1:-}" ] || [[ $t == "$1"* ]]; then
    echo "== $t"
    start=$SECONDS
    "$t"
    echo "     ($((SECONDS - start)) s)"
  fi
done
if [ "${#figures[@]}" -gt 0 ]; then
  echo "--- figures"
  printf '  %s\n' "${figures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
