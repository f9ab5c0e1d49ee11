#!/usr/bin/env bash
# crane-server end to end, on the local control plane: the server runs as a PROCESS with a
# kubeconfig of its own ServiceAccount (which has no RBAC at all: it acts as each caller), the
# operator as a process with its own token and the archive switched on, a private PostgreSQL
# from Debian's package (e2e/servers/postgres.sh), Redis from the cluster, steps run by worker
# Jobs running the crane image on the node. Two users, alice and bob, are ServiceAccounts with a Role in one namespace each;
# their tokens come from `kubectl create token`, and every request is made with curl as them.
#
#   e2e/tests/server.sh                  # every test, then the browser test (e2e/tests/server_ui.mjs)
#   e2e/tests/server.sh t_archive t_ui   # tests whose name starts with t_archive or t_ui
#   CRANE_UI_SCREENSHOTS=docs e2e/tests/server.sh t_ui   # also writes the README's screenshots
#
# Needs `make cluster-up` and `cargo build` (crane-server, crane-operator, crane-executor).
# Prints `N passed, M failed`; exits non-zero when any check failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${KUBECONFIG:-}" ] || [ -z "${REDIS_URL:-}" ] || [ -z "${CRANE_REDIS_PASSWORD_FILE:-}" ]; then
  eval "$("$root/e2e/cluster/env.sh")"
fi
. "$root/e2e/tests/lib.sh"
bin=${CRANE_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}
filters=("${@:-t_}")
prefix=crane-e2e-srv-$$
A=$prefix-a
B=$prefix-b
work=$(mktemp -d)
op_log=$work/operator.log
srv_log=$work/server.log
# Not inside $work: every parent of a data directory must be traversable by the postgres user.
pg=$(mktemp -d /tmp/crane-e2e-pg.XXXXXX)
SERVER_PID=""
server_stop() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null; SERVER_PID=""
}


cleanup() {
  local ns
  delete_runs "$A" "$B"
  operator_stop
  server_stop
  "$root/e2e/servers/postgres.sh" stop "$pg" >/dev/null 2>&1
  for ns in "$A" "$B"; do kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1; done
  kubectl -n crane-system delete serviceaccount crane-server-e2e >/dev/null 2>&1
  rm -rf "$work" "$pg"
}
trap cleanup EXIT

# ---- setup: namespaces, users, PostgreSQL, operator, server -----------------------------

kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/workerpools.crane.dev crd/agentruns.crane.dev crd/approvals.crane.dev >/dev/null
for ns in "$A" "$B"; do
  kubectl create namespace "$ns" >/dev/null
  printf 'apiVersion: crane.dev/v1alpha1\nkind: WorkerPool\nmetadata: {name: default}\nspec: {maxWorkers: 4, idleTimeoutSeconds: 30}\n' |
    kubectl -n "$ns" apply -f - >/dev/null
done
# user NS NAME: a ServiceAccount allowed to use Crane in NS only; prints its token.
user() {
  kubectl -n "$1" create serviceaccount "$2" >/dev/null
  kubectl -n "$1" apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: crane-user}
rules:
- apiGroups: [crane.dev]
  resources: [agentruns]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [crane.dev]
  resources: [approvals]
  verbs: [get, list, watch, patch, update]
- apiGroups: [crane.dev]
  resources: [workerpools, tools, mcpservers, models]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: crane-user}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: crane-user}
subjects: [{kind: ServiceAccount, name: $2, namespace: $1}]
YAML
  kubectl -n "$1" create token "$2" --duration=2h
}
kubectl apply --server-side --force-conflicts -k "$root/config/admission" >/dev/null 2>&1 || true
ALICE=$(user "$A" alice)
BOB=$(user "$B" bob)

eval "$("$root/e2e/servers/postgres.sh" start "$pg")" || { echo "0 passed, 1 failed"; exit 1; }
ARCHIVE_URL=$CRANE_ARCHIVE_URL
psql_q() { psql "$ARCHIVE_URL" -Atqc "$1" 2>/dev/null; }

op_metrics_port=$(free_port)
op_args=(--redis-url "$REDIS_URL" --executor-image "$CRANE_IMAGE" --metrics-addr "127.0.0.1:$op_metrics_port"
         --namespace "$A" --namespace "$B" --archive-url "$ARCHIVE_URL"
         --archive-retention-days 1 --archive-prune-interval-seconds 2)
if ! operator_start "$op_log" "${op_args[@]}"; then echo "0 passed, 1 failed"; exit 1; fi

# The server's own identity: a ServiceAccount with no RBAC. Its kubeconfig only tells the
# server where the apiserver is and which CA to trust.
server_kubeconfig=$work/server.kubeconfig
kubectl -n crane-system create serviceaccount crane-server-e2e >/dev/null 2>&1
(umask 077; cat >"$server_kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: crane
  cluster: {server: "$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')", certificate-authority-data: "$(kubectl config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"}
users:
- name: crane-server
  user: {token: "$(kubectl -n crane-system create token crane-server-e2e --duration=2h)"}
contexts:
- name: crane-server
  context: {cluster: crane, user: crane-server}
current-context: crane-server
KUBECONFIG
)
PORT=$(free_port)
SRV_METRICS=$(free_port)
URL=http://127.0.0.1:$PORT
server_start() {
  KUBECONFIG=$server_kubeconfig RUST_LOG=info "$bin/crane-server" --addr "127.0.0.1:$PORT" \
    --metrics-addr "127.0.0.1:$SRV_METRICS" --redis-url "$REDIS_URL" --archive-url "$ARCHIVE_URL" \
    --max-body-bytes 262144 >>"$srv_log" 2>&1 &
  SERVER_PID=$!
  wait_until 30 curl -sf "$URL/readyz" || { echo "crane-server did not start:"; tail -20 "$srv_log"; return 1; }
}
if ! server_start; then echo "0 passed, 1 failed"; exit 1; fi

# ---- helpers ------------------------------------------------------------------------------

# call TOKEN METHOD PATH [BODY]: the response body on stdout; its status in $work/code.
call() {
  local tok=$1 method=$2 path=$3 body=${4:-}
  local args=(-s -o "$work/body" -w '%{http_code}' -X "$method")
  [ -n "$tok" ] && args+=(-H "Authorization: Bearer $tok")
  [ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
  curl "${args[@]}" "$URL$path" >"$work/code" 2>/dev/null
  cat "$work/body"
}
code() { cat "$work/code"; }
jq_() { python3 -c 'import json,sys
v=json.load(sys.stdin)
for k in sys.argv[1].split("."):
    if k == "": continue
    v = v[int(k)] if isinstance(v, list) else (v.get(k) if isinstance(v, dict) else None)
print(v if not isinstance(v, (dict, list)) else json.dumps(v))' "$1" 2>/dev/null; }
gone() { ! kubectl -n "$1" get agentrun "$2" >/dev/null 2>&1; }
deleting() { [ -n "$(kubectl -n "$1" get agentrun "$2" -o jsonpath='{.metadata.deletionTimestamp}' 2>/dev/null)" ]; }
archived_count() { psql_q "SELECT count(*) FROM archived_runs WHERE uid = '$1'"; }
archived() { [ "$(archived_count "$1")" = 1 ]; }
op_metric() { curl -s "http://127.0.0.1:$op_metrics_port/metrics" | grep -E "^$1" | awk '{s+=$NF} END {print s+0}'; }
# plan NAME TTL STEPS-JSON: an AgentRun body for POST …/runs.
plan() { printf '{"metadata": {"name": "%s"}, "spec": {"ttlSecondsAfterFinished": %s, "plan": {"steps": %s}}}' "$1" "$2" "$3"; }
why() { { echo "-- body: $(head -c 600 "$work/body")"; echo "-- server log:"; tail -n 5 "$srv_log"; echo "-- operator log:"; tail -n 5 "$op_log"; } 2>&1; }

# ---- tests --------------------------------------------------------------------------------

t_auth_401() {
  call "" GET "/api/v1/namespaces/$A/runs" >/dev/null
  check "no token: 401" 401 "$(code)"
  call "not-a-token" GET "/api/v1/namespaces/$A/runs" >/dev/null
  check "a token the apiserver does not accept: its 401" 401 "$(code)"
  check "whoami names the ServiceAccount" "system:serviceaccount:$A:alice" "$(call "$ALICE" GET /api/v1/whoami | jq_ username)"
}

t_rbac_live() {
  local out
  out=$(call "$ALICE" POST "/api/v1/namespaces/$A/runs" "$(plan mine 3600 '[{"id": 1, "tool": "calculator", "input": {"expression": "6*7"}}]')")
  check "alice creates a run in her namespace: 201" 201 "$(code)" "$(why)"
  check "it is created as an AgentRun" mine "$(kubectl -n "$A" get agentrun mine -o jsonpath='{.metadata.name}' 2>&1)"
  call "$BOB" GET "/api/v1/namespaces/$A/runs" >/dev/null
  check "bob lists alice's namespace: 403 from RBAC" 403 "$(code)"
  call "$BOB" GET "/api/v1/namespaces/$A/runs/mine" >/dev/null
  check "bob reads alice's run: 403" 403 "$(code)"
  call "$BOB" POST "/api/v1/namespaces/$A/runs" "$(plan sneaky 60 '[{"id": 1, "tool": "calculator", "input": {"expression": "1"}}]')" >/dev/null
  check "bob creates in alice's namespace: 403" 403 "$(code)"
  call "$BOB" POST "/api/v1/namespaces/$A/runs/mine/cancel" >/dev/null
  check "bob cancels alice's run: 403" 403 "$(code)"
  call "$BOB" DELETE "/api/v1/namespaces/$A/runs/mine" >/dev/null
  check "bob deletes alice's run: 403" 403 "$(code)"
  wait_until 60 terminal "$A" mine
  out=$(call "$ALICE" GET "/api/v1/namespaces/$A/runs?source=live")
  check "alice's list has her live run" "mine live Succeeded" "$(jq_ items.0.name <<<"$out") $(jq_ items.0.source <<<"$out") $(jq_ items.0.phase <<<"$out")" "$(why)"
  out=$(call "$BOB" GET "/api/v1/namespaces/$B/runs")
  check "bob's own namespace: 200 and none of alice's runs" "200 0" "$(code) $(python3 -c 'import json,sys; print(sum(1 for i in json.load(sys.stdin)["items"] if i["namespace"] != sys.argv[1]))' "$B" <<<"$out")"
}

t_compat() {
  local out id
  out=$(curl -s -X POST -H "Authorization: Bearer $ALICE" -H "X-Crane-Namespace: $A" -H 'Content-Type: application/json' \
    --data '{"prompt": "What is (41*7)+13?", "planner": {"mode": "rules"}}' "$URL/api/v1/runs")
  id=$(jq_ id <<<"$out")
  if [[ $id == run-* ]]; then pass "POST /api/v1/runs {prompt} returns an id"; else fail "POST /api/v1/runs {prompt} returns an id" "$out"; fi
  wait_until 90 terminal "$A" "$id"
  out=$(call "$ALICE" GET "/api/v1/runs/$id?namespace=$A")
  check "GET /api/v1/runs/{id}: phase, result, plan, steps" "Succeeded 300 calculator calculator" \
    "$(jq_ phase <<<"$out") $(jq_ result <<<"$out") $(jq_ plan.steps.0.tool <<<"$out") $(jq_ steps.0.tool <<<"$out")" "$out"
  curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $ALICE" -H "X-Crane-Namespace: $B" \
    -H 'Content-Type: application/json' --data '{"prompt": "1+1"}' "$URL/api/v1/runs" >"$work/code"
  check "compat create with a namespace the token has no rights in: 403" 403 "$(code)"
}

t_outputs_and_events() {
  local title out
  title=$(printf 'x%.0s' $(seq 1 400))
  call "$ALICE" POST "/api/v1/namespaces/$A/runs" "$(plan slow 3600 "[
    {\"id\": 1, \"tool\": \"wait\", \"input\": {\"ms\": 1200}},
    {\"id\": 2, \"tool\": \"todo_store.add\", \"input\": {\"title\": \"$title\"}, \"dependsOn\": [1]},
    {\"id\": 3, \"tool\": \"wait\", \"input\": {\"ms\": 1200}, \"dependsOn\": [2]}]")" >/dev/null
  check "run with a long output created" 201 "$(code)" "$(why)"
  # Follow the events while it runs; the stream ends by itself after the run's terminal event.
  curl -sN -m 60 -H "Authorization: Bearer $ALICE" "$URL/api/v1/namespaces/$A/runs/slow/events" >"$work/sse" 2>/dev/null
  if grep -q '^event: end' "$work/sse" && grep -q '"phase":"Succeeded"' "$work/sse" && grep -q '"phase":"Running"' "$work/sse"; then
    pass "SSE: step events Running/Succeeded, then end"
  else fail "SSE: step events Running/Succeeded, then end" "$(head -c 800 "$work/sse")"; fi
  local first last n_all n_after
  first=$(grep -m1 '^id: ' "$work/sse" | cut -d' ' -f2)
  n_all=$(grep -c '^id: ' "$work/sse")
  curl -sN -m 10 -H "Authorization: Bearer $ALICE" -H "Last-Event-ID: $first" "$URL/api/v1/namespaces/$A/runs/slow/events" >"$work/sse2" 2>/dev/null
  n_after=$(grep -c '^id: ' "$work/sse2")
  check "SSE resumes after Last-Event-ID (one event fewer)" "$((n_all - 1))" "$n_after" "$(head -c 400 "$work/sse2")"
  if grep -q "^id: $first\$" "$work/sse2"; then fail "SSE: the acknowledged event is not sent again"; else pass "SSE: the acknowledged event is not sent again"; fi
  curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BOB" "$URL/api/v1/namespaces/$A/runs/slow/events" >"$work/code"
  check "SSE for bob on alice's run: 403" 403 "$(code)"
  out=$(call "$ALICE" GET "/api/v1/namespaces/$A/runs/slow/outputs")
  check "outputs of a live run: from redis, full (status keeps 256 bytes)" "redis 400" \
    "$(jq_ source <<<"$out") $(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["steps"][1]["output"]["title"]))' <<<"$out" 2>/dev/null)" "$(head -c 300 <<<"$out")"
  check "the status has it truncated" True "$(kubectl -n "$A" get agentrun slow -o jsonpath='{.status.steps[1].output.truncated}' | sed 's/true/True/')"
}

t_archive_after_delete() {
  local uid out
  call "$ALICE" POST "/api/v1/namespaces/$A/runs" "$(plan shortlived 1 '[{"id": 1, "tool": "todo_store.add", "input": {"title": "'"$(printf 'y%.0s' $(seq 1 300))"'"}}]')" >/dev/null
  uid=$(kubectl -n "$A" get agentrun shortlived -o jsonpath='{.metadata.uid}')
  wait_until 90 gone "$A" shortlived
  check "TTL deleted the AgentRun; it is archived once" 1 "$(archived_count "$uid")" "$(tail -5 "$op_log")"
  check "its redis keys are gone" "" "$(redis-cli -u "$REDIS_URL" --scan --pattern "crane:ns:$A:{$uid}*" 2>/dev/null)"
  out=$(call "$ALICE" GET "/api/v1/namespaces/$A/runs/shortlived")
  check "GET the run: archived, Succeeded" "archived Succeeded" "$(jq_ source <<<"$out") $(jq_ summary.phase <<<"$out")" "$(why)"
  out=$(call "$ALICE" GET "/api/v1/namespaces/$A/runs/shortlived/outputs")
  check "outputs after deletion and redis expiry: full, from the archive" "archive 300" \
    "$(jq_ source <<<"$out") $(python3 -c 'import json,sys; print(len(json.load(sys.stdin)["steps"][0]["output"]["title"]))' <<<"$out" 2>/dev/null)" "$(head -c 300 <<<"$out")"
  out=$(call "$ALICE" GET "/api/v1/namespaces/$A/runs?source=archived&q=shortlived")
  check "the list shows it archived" "shortlived archived" "$(jq_ items.0.name <<<"$out") $(jq_ items.0.source <<<"$out")"
  call "$BOB" GET "/api/v1/namespaces/$A/runs/shortlived" >/dev/null
  check "bob cannot read alice's archived run: 403" 403 "$(code)"
  call "$BOB" GET "/api/v1/namespaces/$A/runs?source=archived" >/dev/null
  check "bob cannot list alice's archive: 403" 403 "$(code)"
  out=$(call "$BOB" GET "/api/v1/namespaces/$B/runs?source=archived")
  check "bob's archive list has none of alice's runs" "200 0" "$(code) $(grep -c shortlived <<<"$out")"
  check "the archive write metric counted it" yes "$( [ "$(op_metric 'crane_operator_archive_writes_total\{result="archived"\}')" -ge 1 ] && echo yes)"
}

t_postgres_down() {
  local uid out
  "$root/e2e/servers/postgres.sh" stop "$pg" >/dev/null
  call "$ALICE" POST "/api/v1/namespaces/$A/runs" "$(plan outage 1 '[{"id": 1, "tool": "calculator", "input": {"expression": "2+2"}}]')" >/dev/null
  uid=$(kubectl -n "$A" get agentrun outage -o jsonpath='{.metadata.uid}')
  wait_until 90 deleting "$A" outage
  sleep 6
  if gone "$A" outage; then fail "PostgreSQL down: the AgentRun waits in its finalizer"; else pass "PostgreSQL down: the AgentRun waits in its finalizer"; fi
  check "the backlog metric shows it" yes "$( [ "$(op_metric crane_operator_archive_backlog)" -ge 1 ] && echo yes)" "$(curl -s "http://127.0.0.1:$op_metrics_port/metrics" | grep archive)"
  out=$(call "$ALICE" GET "/api/v1/namespaces/$A/runs")
  check "the list still serves live runs, saying the archive is unavailable" "200 unavailable" "$(code) $(jq_ archive <<<"$out")"
  eval "$("$root/e2e/servers/postgres.sh" start "$pg")"
  wait_until 120 gone "$A" outage
  check "PostgreSQL back: archived exactly once, then deleted" "1 yes" "$(archived_count "$uid") $(gone "$A" outage && echo yes)" "$(tail -5 "$op_log")"
  wait_until 10 test "$(op_metric crane_operator_archive_backlog)" = 0
  check "the backlog is empty again" 0 "$(op_metric crane_operator_archive_backlog)"
}

t_operator_killed() {
  local uid args
  "$root/e2e/servers/postgres.sh" stop "$pg" >/dev/null
  call "$ALICE" POST "/api/v1/namespaces/$A/runs" "$(plan killed 1 '[{"id": 1, "tool": "calculator", "input": {"expression": "3+3"}}]')" >/dev/null
  uid=$(kubectl -n "$A" get agentrun killed -o jsonpath='{.metadata.uid}')
  wait_until 90 deleting "$A" killed
  # Finished and deleted, not archived yet: SIGKILL the operator there.
  kill -KILL "$OPERATOR_PID"; wait "$OPERATOR_PID" 2>/dev/null; OPERATOR_PID=""
  eval "$("$root/e2e/servers/postgres.sh" start "$pg")"
  check "killed before the archive write: not archived yet, object still there" "0 no" "$(archived_count "$uid") $(gone "$A" killed && echo yes || echo no)"
  operator_start "$op_log.2" "${op_args[@]}" || { fail "operator restart"; return; }
  wait_until 90 gone "$A" killed
  check "restarted operator archives it exactly once, then the object goes" "1 yes" "$(archived_count "$uid") $(gone "$A" killed && echo yes)" "$(tail -5 "$op_log.2")"
  op_log=$op_log.2
}

t_retention() {
  local uid
  call "$ALICE" POST "/api/v1/namespaces/$A/runs" "$(plan old 1 '[{"id": 1, "tool": "calculator", "input": {"expression": "1"}}]')" >/dev/null
  uid=$(kubectl -n "$A" get agentrun old -o jsonpath='{.metadata.uid}')
  wait_until 90 archived "$uid"
  check "archived" 1 "$(archived_count "$uid")"
  # Retention is 1 day: make this run 3 days old in the archive; the leader prunes it.
  psql_q "UPDATE archived_runs SET archived_at = now() - interval '3 days' WHERE uid = '$uid'" >/dev/null
  wait_until 20 test "$(archived_count "$uid")" = 0
  check "retention pruned the run older than archive.retentionDays" 0 "$(archived_count "$uid")"
  check "younger runs stay" yes "$( [ "$(psql_q 'SELECT count(*) FROM archived_runs')" -ge 1 ] && echo yes)"
  check "pruned runs are counted" yes "$( [ "$(op_metric crane_operator_archive_pruned_runs_total)" -ge 1 ] && echo yes)"
}

t_cancel_retry_delete() {
  local out
  call "$ALICE" POST "/api/v1/namespaces/$A/runs" "$(plan long 3600 '[{"id": 1, "tool": "wait", "input": {"ms": 20000}}, {"id": 2, "tool": "calculator", "input": {"expression": "1"}, "dependsOn": [1]}]')" >/dev/null
  call "$ALICE" POST "/api/v1/namespaces/$A/runs/long/cancel" >/dev/null
  check "cancel: 200, spec.cancel set" "200 true" "$(code) $(kubectl -n "$A" get agentrun long -o jsonpath='{.spec.cancel}')"
  wait_until 60 terminal "$A" long
  check "cancelled run" Cancelled "$(phase "$A" long)"
  call "$ALICE" POST "/api/v1/namespaces/$A/runs/mine/retry" >/dev/null
  check "retry of a Succeeded run: 409" 409 "$(code)"
  call "$ALICE" POST "/api/v1/namespaces/$A/runs/long/retry" >/dev/null
  check "retry of the Cancelled run: 200 and the annotation" "200 yes" "$(code) $([ -n "$(kubectl -n "$A" get agentrun long -o jsonpath='{.metadata.annotations.crane\.dev/retry}')" ] && echo yes)"
  call "$ALICE" DELETE "/api/v1/namespaces/$A/runs/long" >/dev/null
  check "delete a live run: 200" 200 "$(code)"
  wait_until 60 gone "$A" long
  out=$(call "$ALICE" GET "/api/v1/namespaces/$A/runs/long")
  check "a deleted run is archived on its way out" archived "$(jq_ source <<<"$out")"
  call "$ALICE" DELETE "/api/v1/namespaces/$A/runs/long" >/dev/null
  check "delete the archived run (alice may delete agentruns)" 200 "$(code)"
  call "$ALICE" GET "/api/v1/namespaces/$A/runs/long" >/dev/null
  check "then it is gone" 404 "$(code)"
}

t_approve() {
  kubectl -n "$A" apply -f - >/dev/null <<'YAML'
apiVersion: crane.dev/v1alpha1
kind: Approval
metadata: {name: mine-plan}
spec: {run: mine, message: "Run the plan?"}
YAML
  local out
  out=$(call "$ALICE" GET "/api/v1/namespaces/$A/approvals?run=mine")
  check "approvals of the run" mine-plan "$(jq_ items.0.metadata.name <<<"$out")"
  call "$BOB" POST "/api/v1/namespaces/$A/approvals/mine-plan/approve" '{}' >/dev/null
  check "bob cannot approve in alice's namespace: 403" 403 "$(code)"
  out=$(call "$ALICE" POST "/api/v1/namespaces/$A/approvals/mine-plan/approve" '{"comment": "looks right"}')
  check "alice approves: decision, decidedBy is her user name" "200 Approved system:serviceaccount:$A:alice" \
    "$(code) $(kubectl -n "$A" get approval mine-plan -o jsonpath='{.spec.decision} {.spec.decidedBy}')" "$(why)"
  call "$ALICE" POST "/api/v1/namespaces/$A/approvals/mine-plan/reject" >/dev/null
  check "a decision never changes: 409" 409 "$(code)"
}

t_resources() {
  local out
  out=$(call "$ALICE" GET "/api/v1/namespaces/$A/workerpools")
  check "workerpools as alice" "200 default" "$(code) $(jq_ items.0.metadata.name <<<"$out")"
  for k in tools mcpservers models; do
    call "$ALICE" GET "/api/v1/namespaces/$A/$k" >/dev/null
    check "$k as alice" 200 "$(code)"
  done
  call "$BOB" GET "/api/v1/namespaces/$A/workerpools" >/dev/null
  check "workerpools of alice's namespace as bob: 403" 403 "$(code)"
}

t_hostile() {
  local big
  big=$(python3 -c 'print("{\"spec\": {\"prompt\": \"" + "x"*300000 + "\"}}")')
  printf '%s' "$big" >"$work/big.json"
  curl -s -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \
    --data-binary @"$work/big.json" "$URL/api/v1/namespaces/$A/runs" >"$work/code"
  check "oversized body: 413" 413 "$(code)"
  call "$ALICE" POST "/api/v1/namespaces/$A/runs" '{"spec": {"prompt": ' >/dev/null
  check "malformed JSON: 400" 400 "$(code)"
  call "$ALICE" GET "/api/v1/namespaces/Not_A_Namespace/runs" >/dev/null
  check "invalid namespace: 400" 400 "$(code)"
  call "$ALICE" POST "/api/v1/namespaces/$A/runs" "$(plan 'Bad..Name' 60 '[{"id": 1, "tool": "calculator", "input": {"expression": "1"}}]')" >/dev/null
  check "invalid run name: 400" 400 "$(code)"
  local before after
  before=$(psql_q 'SELECT count(*) FROM archived_runs')
  call "$ALICE" GET "/api/v1/namespaces/$A/runs?q=%27%3B%20DELETE%20FROM%20archived_runs%3B%20--" >/dev/null
  check "SQL in the text filter: 200, matched literally" 200 "$(code)"
  after=$(psql_q 'SELECT count(*) FROM archived_runs')
  check "… and the archive is intact" "$before" "$after"
  call "$ALICE" GET "/api/v1/namespaces/$A/runs?phase=Running%27%20OR%20%271%27%3D%271" >/dev/null
  check "SQL in the phase filter: 400" 400 "$(code)"
  call "$BOB" GET "/api/v1/namespaces/$A/runs/mine/outputs" >/dev/null
  check "a token for another namespace: 403" 403 "$(code)"
}

t_openapi_and_metrics() {
  local doc
  doc=$(curl -s "$URL/api/v1/openapi.json")
  check "OpenAPI document without a token" 3.1.0 "$(jq_ openapi <<<"$doc")"
  local m; m=$(curl -s "http://127.0.0.1:$SRV_METRICS/metrics")
  if grep -q 'crane_server_http_requests_total{route="/api/v1/namespaces/{namespace}/runs"' <<<"$m"; then
    pass "server metrics by route template"; else fail "server metrics by route template" "$(grep requests <<<"$m" | head -3)"; fi
  if grep -q '"message":"request"' "$srv_log" && ! grep -q "$ALICE" "$srv_log"; then pass "JSON request logs, no tokens in them"
  else fail "JSON request logs, no tokens in them" "$(tail -2 "$srv_log")"; fi
}

t_ui() {
  local pw
  if ! command -v chromium >/dev/null; then fail "browser test: chromium is not installed (make deps)"; return; fi
  pw=$("$root/e2e/servers/npm-install.sh" playwright-core 1.65.1) || { fail "browser test: cannot install playwright-core"; return; }
  # An archived run, a run that takes a few seconds (steps turn green one by one), a gate.
  call "$ALICE" POST "/api/v1/namespaces/$A/runs" "$(plan ui-archived 1 '[
    {"id": 1, "tool": "calculator", "input": {"expression": "6*7"}},
    {"id": 2, "tool": "todo_store.add", "input": {"title": "Buy milk"}, "dependsOn": [1]}]')" >/dev/null
  wait_until 90 gone "$A" ui-archived
  call "$ALICE" POST "/api/v1/namespaces/$A/runs" "$(plan ui-live 3600 '[
    {"id": 1, "tool": "wait", "input": {"ms": 1500}},
    {"id": 2, "tool": "calculator", "input": {"expression": "41*7"}, "dependsOn": [1]},
    {"id": 3, "tool": "wait", "input": {"ms": 1500}, "dependsOn": [1]},
    {"id": 4, "tool": "calculator", "input": {"expression": "{step_2_output} + 13"}, "dependsOn": [2, 3]},
    {"id": 5, "tool": "wait", "input": {"ms": 2500}, "dependsOn": [4]},
    {"id": 6, "tool": "calculator", "input": {"expression": "2^10"}, "dependsOn": [4]},
    {"id": 7, "tool": "wait", "input": {"ms": 1500}, "dependsOn": [5, 6]}]')" >/dev/null
  kubectl -n "$A" apply -f - >/dev/null <<'YAML'
apiVersion: crane.dev/v1alpha1
kind: Approval
metadata: {name: ui-live-step-5}
spec: {run: ui-live, stepId: 5, message: "Wait 2.5 s more?", details: {tool: wait, input: {ms: 2500}}}
YAML
  if node "$root/e2e/tests/server_ui.mjs" "$pw" "$URL" "$ALICE" "$A" "${CRANE_UI_SCREENSHOTS:-$work}" >"$work/ui.log" 2>&1; then
    while read -r line; do pass "browser: $line"; done < <(grep '^ok ' "$work/ui.log" | cut -c4-)
  else
    while read -r line; do pass "browser: $line"; done < <(grep '^ok ' "$work/ui.log" | cut -c4-)
    fail "browser test" "$(grep -v '^ok ' "$work/ui.log" | tail -20)"
  fi
}

t_chart_values() {
  local out
  out=$(helm template x "$root/charts/crane" --set archive.enabled=true --set archive.existingSecret=pg \
    --set archive.caSecret.name=pg-ca --set archive.retentionDays=30 2>&1)
  if grep -q 'command: \[crane-server\]' <<<"$out" && grep -q 'name: CRANE_ARCHIVE_URL' <<<"$out" &&
     grep -q 'value: "1572864"' <<<"$out" && grep -q 'value: "30"' <<<"$out"; then
    pass "chart: the server Deployment with the archive URL from its Secret"
  else fail "chart: the server Deployment with the archive URL from its Secret" "$(head -c 600 <<<"$out")"; fi
  if out=$(helm template x "$root/charts/crane" --set archive.enabled=true 2>&1); then
    fail "chart: archive.enabled without archive.existingSecret is refused"
  else pass "chart: archive.enabled without archive.existingSecret is refused"; fi
  if helm template x "$root/charts/crane" --set server.enabled=false 2>/dev/null | grep -q crane-server; then
    fail "chart: server.enabled=false renders no server"
  else pass "chart: server.enabled=false renders no server"; fi
}

tests=(t_chart_values t_auth_401 t_rbac_live t_compat t_outputs_and_events t_archive_after_delete t_postgres_down
       t_operator_killed t_retention t_cancel_retry_delete t_approve t_resources t_hostile t_openapi_and_metrics t_ui)
for t in "${tests[@]}"; do
  for f in "${filters[@]}"; do
    if [[ $t == $f* ]]; then "$t"; break; fi
  done
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
