#!/usr/bin/env bash
# Approval gates end to end, on the local cluster: the operator runs as a PROCESS with its own
# ServiceAccount token (e2e/tests/lib.sh), workers run the crane image on the node, and people
# decide with their own identities (`kubectl --as`), checked by the ValidatingAdmissionPolicy
# of config/admission/. Three users: alice and the group finance may decide, bob may update
# Approvals but is no approver.
#
#   e2e/tests/approvals.sh              # every test
#   e2e/tests/approvals.sh t_reject     # tests whose name starts with t_reject
#
# Prints `N passed, M failed`; exits non-zero when any check failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${KUBECONFIG:-}" ] || [ -z "${REDIS_URL:-}" ] || [ -z "${CRANE_REDIS_PASSWORD_FILE:-}" ]; then
  eval "$("$root/e2e/cluster/env.sh")"
fi
. "$root/e2e/tests/lib.sh"
prefix=crane-e2e-ap-$$
work=$(mktemp -d)
filter=${1:-t_}

step_phase_is() { [ "$(ar_field "$1" "$2" "{.status.steps[?(@.id==$3)].phase}")" = "$4" ]; }
# The JSON on stdin without insignificant whitespace (spaces inside strings stay).
compact_json() { python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin), separators=(",", ":")))'; }
approval_exists() { kubectl -n "$1" get approval "$2" >/dev/null 2>&1; }
outcome() { kubectl -n "$1" get approval "$2" -o jsonpath='{.status.outcome}' 2>/dev/null; }
outcome_is() { [ "$(outcome "$1" "$2")" = "$3" ]; }
why() { { kubectl -n "$1" get agentrun "$2" -o yaml 2>&1 | sed -n '/^status:/,$p' | head -40; kubectl -n "$1" get approvals -o yaml 2>&1 | tail -30; echo "-- operator log:"; tail -n 8 "$op_log"; } 2>&1; }

pool() {
  printf 'apiVersion: crane.dev/v1alpha1\nkind: WorkerPool\nmetadata: {name: default}\nspec: {maxWorkers: 2, idleTimeoutSeconds: 30}\n' |
    kubectl -n "$1" apply -f - >/dev/null
}
# plan_run NS NAME STEPS-YAML [EXTRA-SPEC-YAML]
plan_run() {
  printf 'apiVersion: crane.dev/v1alpha1\nkind: AgentRun\nmetadata: {name: %s}\nspec:\n%s  plan:\n    steps:\n%s\n' \
    "$2" "${4:-}" "$3" | kubectl -n "$1" apply -f - >/dev/null
}
# decide NS APPROVAL USER DECISION [COMMENT] [GROUP]: prints kubectl's output; its status.
decide() {
  local as=(--as "$3")
  [ -n "${6:-}" ] && as+=(--as-group "$6" --as-group system:authenticated)
  kubectl -n "$1" "${as[@]}" patch approval "$2" --type merge \
    -p "{\"spec\":{\"decision\":\"$4\",\"decidedBy\":\"$3\",\"comment\":\"${5:-}\"}}" 2>&1
}
# People may read and decide Approvals of the namespace, nothing else.
deciders() {
  kubectl -n "$1" apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: approvers}
rules:
  - apiGroups: [crane.dev]
    resources: [approvals]
    verbs: [get, list, watch, patch, update]
  - apiGroups: [crane.dev]
    resources: [agentruns]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: approvers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: approvers}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: carol}
YAML
}

tests=(t_approve_step t_reject t_timeout t_plan_approval t_parallel_gates t_decided_while_operator_down)
selected=()
for t in "${tests[@]}"; do [[ $t == $filter* ]] && selected+=("$t"); done
op_log=$work/operator.log

cleanup() {
  local t
  local namespaces=()
  for t in "${selected[@]}"; do namespaces+=("$prefix-${t//_/-}"); done
  delete_runs "${namespaces[@]}"
  operator_stop
  for t in "${selected[@]}"; do
    kubectl delete namespace "$prefix-${t//_/-}" --wait=false >/dev/null 2>&1
  done
  rm -rf "$work"
}
trap cleanup EXIT

ns_of() { echo "$prefix-${1//_/-}"; }
kubectl apply --server-side --force-conflicts -k "$root/config/admission" >/dev/null ||
  { echo "cannot apply config/admission"; echo "0 passed, 1 failed"; exit 1; }
args=(--redis-url "$REDIS_URL" --executor-image "$CRANE_IMAGE")
for t in "${selected[@]}"; do
  kubectl create namespace "$(ns_of "$t")" >/dev/null
  deciders "$(ns_of "$t")"
  args+=(--namespace "$(ns_of "$t")")
done
if ! operator_start "$op_log" "${args[@]}"; then
  echo "0 passed, 1 failed"
  exit 1
fi
# WorkerPools once operator_start has installed the CRDs.
for t in "${selected[@]}"; do pool "$(ns_of "$t")"; done

# ---- tests --------------------------------------------------------------------------------

t_approve_step() {
  local ns; ns=$(ns_of "${FUNCNAME[0]}")
  plan_run "$ns" pay '      - {id: 1, tool: calculator, input: {expression: "1200*2"}}
      - {id: 2, tool: approval, input: {message: "Pay {step_1_output} EUR?", approvers: [alice, finance]}, dependsOn: [1]}
      - {id: 3, tool: calculator, input: {expression: "{step_1_output} + 1"}, dependsOn: [2]}'
  if wait_until 120 approval_exists "$ns" pay-step-2; then pass "a waiting step gets Approval pay-step-2"
  else fail "a waiting step gets Approval pay-step-2" "$(why "$ns" pay)"; return; fi
  check "the step is WaitingForApproval, the run Running" "WaitingForApproval Running" \
    "$(ar_field "$ns" pay '{.status.steps[?(@.id==2)].phase} {.status.phase}')"
  check "the Approval shows the resolved message, its approvers and its run" "Pay 2400 EUR? alice,finance pay 2" \
    "$(kubectl -n "$ns" get approval pay-step-2 -o jsonpath='{.spec.message} {.spec.approvers[0]},{.spec.approvers[1]} {.spec.run} {.spec.stepId}')"
  check "the Approval is owned by its AgentRun" "AgentRun pay" \
    "$(kubectl -n "$ns" get approval pay-step-2 -o jsonpath='{.metadata.ownerReferences[0].kind} {.metadata.ownerReferences[0].name}')"
  local out
  out=$(decide "$ns" pay-step-2 bob Approved "me too")
  if grep -q 'bob is not among the approvers of this Approval: alice, finance' <<<"$out"; then
    pass "a non-approver is refused by admission, saying why"
  else fail "a non-approver is refused by admission, saying why" "$out"; fi
  out=$(kubectl -n "$ns" --as bob patch approval pay-step-2 --type merge \
    -p '{"spec":{"decision":"Approved","decidedBy":"alice"}}' 2>&1)
  if grep -q 'spec.decidedBy must be your own user name, bob' <<<"$out"; then
    pass "nobody decides in another's name"
  else fail "nobody decides in another's name" "$out"; fi
  out=$(decide "$ns" pay-step-2 carol Approved "for finance" finance)
  if [ $? -eq 0 ] || grep -q patched <<<"$out"; then pass "a member of an approver group decides"
  else fail "a member of an approver group decides" "$out"; fi
  wait_until 60 terminal "$ns" pay
  check "approved: the dependent step ran, the run Succeeded" "Succeeded 2401" \
    "$(ar_field "$ns" pay '{.status.phase} {.status.result}')" "$(why "$ns" pay)"
  check "the approval step's output names who decided" '{"approved":true,"by":"carol","comment":"for finance"}' \
    "$(ar_field "$ns" pay '{.status.steps[?(@.id==2)].output}' | compact_json)"
  check "the Approval records the outcome" Approved "$(outcome "$ns" pay-step-2)"
  out=$(decide "$ns" pay-step-2 alice Rejected "changed my mind")
  if grep -q 'already decided' <<<"$out"; then pass "a decision never changes"
  else fail "a decision never changes" "$out"; fi
  local events; events=$(kubectl -n "$ns" get events --field-selector involvedObject.name=pay -o jsonpath='{.items[*].reason}' 2>&1)
  if grep -qw Approved <<<"$events"; then pass "the decision is an Event on the run"
  else fail "the decision is an Event on the run" "$events"; fi
}

t_reject() {
  local ns; ns=$(ns_of "${FUNCNAME[0]}")
  plan_run "$ns" drop '      - {id: 1, tool: approval, input: {message: "Drop the table?"}}
      - {id: 2, tool: calculator, input: {expression: "1"}, dependsOn: [1]}'
  wait_until 120 approval_exists "$ns" drop-step-1 || { fail "rejection: Approval created" "$(why "$ns" drop)"; return; }
  decide "$ns" drop-step-1 alice Rejected "not in production" >/dev/null
  wait_until 60 terminal "$ns" drop
  check "rejected: the run Failed, the step says who and why, the rest skipped" \
    "Failed rejected by alice: not in production Skipped" \
    "$(ar_field "$ns" drop '{.status.phase} {.status.steps[0].error} {.status.steps[1].phase}')" "$(why "$ns" drop)"
  check "rejected: outcome Rejected" Rejected "$(outcome "$ns" drop-step-1)"
}

t_timeout() {
  local ns; ns=$(ns_of "${FUNCNAME[0]}")
  plan_run "$ns" late '      - {id: 1, tool: approval, input: {message: "Anyone?", timeoutSeconds: 3, onTimeout: Approve}}
      - {id: 2, tool: calculator, input: {expression: "7*6"}, dependsOn: [1]}'
  wait_until 120 terminal "$ns" late
  check "timeout with onTimeout Approve: the run goes on" "Succeeded 42" \
    "$(ar_field "$ns" late '{.status.phase} {.status.result}')" "$(why "$ns" late)"
  check "timeout: outcome TimedOut" TimedOut "$(outcome "$ns" late-step-1)"
}

t_plan_approval() {
  local ns; ns=$(ns_of "${FUNCNAME[0]}")
  printf 'apiVersion: crane.dev/v1alpha1\nkind: AgentRun\nmetadata: {name: planned}\nspec:\n  prompt: "What is (41*7)+13?"\n  planner: {mode: rules}\n  approval: {plan: true}\n' |
    kubectl -n "$ns" apply -f - >/dev/null
  if wait_until 120 phase_is "$ns" planned AwaitingApproval; then pass "plan approval: AwaitingApproval after planning"
  else fail "plan approval: AwaitingApproval after planning" "$(why "$ns" planned)"; return; fi
  check "plan approval: the plan is in status, its Approval exists" "calculator yes" \
    "$(ar_field "$ns" planned '{.status.plan.steps[0].tool}') $(approval_exists "$ns" planned-plan && echo yes)"
  sleep 3
  check "plan approval: nothing runs before it is approved" "AwaitingApproval" "$(phase "$ns" planned)"
  decide "$ns" planned-plan alice Approved "" >/dev/null
  wait_until 90 terminal "$ns" planned
  check "plan approval: approved, the run Succeeded" "Succeeded 300" \
    "$(ar_field "$ns" planned '{.status.phase} {.status.result}')" "$(why "$ns" planned)"
}

t_parallel_gates() {
  local ns; ns=$(ns_of "${FUNCNAME[0]}")
  plan_run "$ns" two '      - {id: 1, tool: approval, input: {message: "first?"}}
      - {id: 2, tool: approval, input: {message: "second?"}}
      - {id: 3, tool: calculator, input: {expression: "3"}, dependsOn: [1]}
      - {id: 4, tool: calculator, input: {expression: "4"}, dependsOn: [2]}' '  failurePolicy: ContinueIndependent
'
  wait_until 120 approval_exists "$ns" two-step-2 && wait_until 30 approval_exists "$ns" two-step-1 ||
    { fail "parallel gates: both Approvals" "$(why "$ns" two)"; return; }
  decide "$ns" two-step-2 alice Approved "" >/dev/null
  if wait_until 60 step_phase_is "$ns" two 4 Succeeded; then pass "parallel gates: the second decided first runs its step"
  else fail "parallel gates: the second decided first runs its step" "$(why "$ns" two)"; fi
  check "parallel gates: the first still waits" WaitingForApproval \
    "$(ar_field "$ns" two '{.status.steps[?(@.id==1)].phase}')"
  decide "$ns" two-step-1 alice Rejected "" >/dev/null
  wait_until 60 terminal "$ns" two
  check "parallel gates: each gate had its own outcome" "Failed Succeeded Skipped Succeeded" \
    "$(ar_field "$ns" two '{.status.steps[*].phase}')" "$(why "$ns" two)"
}

t_decided_while_operator_down() {
  local ns; ns=$(ns_of "${FUNCNAME[0]}")
  plan_run "$ns" durable '      - {id: 1, tool: approval, input: {message: "ok?"}}
      - {id: 2, tool: calculator, input: {expression: "2+2"}, dependsOn: [1]}'
  wait_until 120 approval_exists "$ns" durable-step-1 || { fail "restart: Approval created" "$(why "$ns" durable)"; return; }
  operator_stop
  decide "$ns" durable-step-1 alice Approved "while you were out" >/dev/null
  if ! operator_start "$op_log.2" "${args[@]}"; then fail "restart: the operator comes back"; return; fi
  op_log=$op_log.2
  wait_until 90 terminal "$ns" durable
  check "a decision made while the operator was down is applied when it returns" "Succeeded 4 Approved" \
    "$(ar_field "$ns" durable '{.status.phase} {.status.result}') $(outcome "$ns" durable-step-1)" "$(why "$ns" durable)"
}

for t in "${selected[@]}"; do "$t"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
