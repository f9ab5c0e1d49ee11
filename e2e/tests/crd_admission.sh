#!/usr/bin/env bash
# Admission checks of the Crane CRDs against a real kube-apiserver: applies crds/, then sends
# one bad manifest per CEL rule (each must be rejected with its message) and good manifests
# (each must be accepted). Prints `N passed, M failed`; exits non-zero when any check failed.
# Uses $KUBECONFIG when set, else the local control plane's (e2e/cluster/env.sh).
set -euo pipefail
shopt -s lastpipe  # accept/reject run at the end of pipelines and must count in this shell
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${KUBECONFIG:-}" ] && [ -x "$root/e2e/cluster/env.sh" ]; then
  eval "$("$root/e2e/cluster/env.sh")"
fi
ns=crane-crd-admission-$$
passed=0 failed=0

cleanup() { kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT

kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
  crd/agentruns.crane.dev crd/workerpools.crane.dev crd/tools.crane.dev crd/mcpservers.crane.dev crd/models.crane.dev crd/approvals.crane.dev >/dev/null
kubectl create namespace "$ns" >/dev/null

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/     /' <<<"$2"; return 0; }

# accept NAME: the manifest on stdin must be created.
accept() {
  local out
  if out=$(kubectl -n "$ns" create -f - 2>&1); then pass "$1"; else fail "$1 (rejected)" "$out"; fi
}
# reject NAME MESSAGE: the manifest on stdin must be refused with MESSAGE in the error.
reject() {
  local out
  if out=$(kubectl -n "$ns" create -f - 2>&1); then
    fail "$1 (accepted)" "$out"
  elif grep -qF -- "$2" <<<"$out"; then pass "$1"
  else fail "$1 (wrong message, want: $2)" "$out"; fi
}

ar() { printf 'apiVersion: crane.dev/v1alpha1\nkind: AgentRun\nmetadata: {name: %s}\nspec:\n%s\n' "$1" "$2"; }
wp() { printf 'apiVersion: crane.dev/v1alpha1\nkind: WorkerPool\nmetadata: {name: %s}\nspec: %s\n' "$1" "$2"; }

# --- good manifests ---
ar good-prompt '  prompt: "Add a todo to buy milk, then show me all my tasks"' | accept "prompt only is accepted"
ar good-plan '  plan:
    steps:
      - {id: 1, tool: todo_store.add, input: {title: "Buy milk"}, reasoning: "user wants a task", dependsOn: []}
      - {id: 2, tool: todo_store.list, input: {}, dependsOn: [1]}' | accept "plan with a dependency is accepted"
wp good-pool '{}' | accept "WorkerPool with defaults is accepted"

# A full 500-step plan (a chain plus a 499-wide join) stays within the CEL cost limits.
big=$(for i in $(seq 1 499); do echo "      - {id: $i, tool: wait, input: {ms: 1}}"; done
      echo "      - {id: 500, tool: calculator, input: {expression: \"1+1\"}, dependsOn: [$(seq -s, 1 499)]}")
ar good-500 "  plan:
    steps:
$big" | accept "500-step plan with a 499-wide join is accepted"

# check NAME WANT GOT
check() { if [ "$3" = "$2" ]; then pass "$1"; else fail "$1 (got '$3', want '$2')"; fi; }
check "AgentRun defaults are applied" "default auto 3 30 600 FailFast 3600 false" \
  "$(kubectl -n "$ns" get agentrun good-prompt -o jsonpath='{.spec.workerPool} {.spec.planner.mode} {.spec.retry.maxAttempts} {.spec.stepTimeoutSeconds} {.spec.activeDeadlineSeconds} {.spec.failurePolicy} {.spec.ttlSecondsAfterFinished} {.spec.cancel}')"
check "WorkerPool defaults are applied" "0 20 10 8 30" \
  "$(kubectl -n "$ns" get workerpool good-pool -o jsonpath='{.spec.minWorkers} {.spec.maxWorkers} {.spec.targetQueueDepth} {.spec.concurrency} {.spec.idleTimeoutSeconds}')"
check "step input is kept, not pruned" "Buy milk" \
  "$(kubectl -n "$ns" get agentrun good-plan -o jsonpath='{.spec.plan.steps[0].input.title}')"
check "printer columns" "NAME PHASE STEPS AGE PLANNER RESULT" \
  "$(kubectl -n "$ns" get agentruns -o wide | head -1 | tr -s ' ' | sed 's/ $//')"
check "short name ar and category crane" "agentrun.crane.dev/good-plan" \
  "$(kubectl -n "$ns" get crane -o name | grep -m1 good-plan)"

# --- one bad manifest per rule ---
ar no-prompt-no-plan '  workerPool: default' | reject "neither prompt nor plan" "spec: set prompt, plan, or both"
ar blank-prompt '  prompt: "   "' | reject "blank prompt" "spec.prompt must not be empty or blank"
ar empty-prompt '  prompt: ""' | reject "empty prompt" "spec.prompt must not be empty or blank"
ar dup-ids '  plan:
    steps:
      - {id: 1, tool: calculator, input: {expression: "1+1"}}
      - {id: 1, tool: calculator, input: {expression: "2+2"}}' | reject "duplicate step ids" "step ids must be unique"
ar missing-dep '  plan:
    steps:
      - {id: 1, tool: calculator, input: {expression: "1+1"}}
      - {id: 2, tool: calculator, input: {expression: "2+2"}, dependsOn: [7]}' | reject "dependsOn a missing id" "dependsOn names a step id that is not in spec.plan"
too_many=$(for i in $(seq 1 501); do echo "      - {id: $i, tool: wait, input: {ms: 1}}"; done)
ar too-many "  plan:
    steps:
$too_many" | reject "more than 500 steps" "Too many: 501: must have at most 500 items"
ar zero-id '  plan:
    steps:
      - {id: 0, tool: calculator, input: {expression: "1"}}' | reject "step id 0" "should be greater than or equal to 1"
ar big-id '  plan:
    steps:
      - {id: 4294967296, tool: calculator, input: {expression: "1"}}' | reject "step id above 2^32-1" "should be less than or equal to 4294967295"
ar big-dep '  plan:
    steps:
      - {id: 1, tool: calculator, input: {expression: "1"}, dependsOn: [4294967297]}' | reject "dependsOn id above 2^32-1" "should be less than or equal to 4294967295"
ar odd-tool '  plan:
    steps:
      - {id: 1, tool: "rm -rf /", input: {}}' | reject "tool name with spaces" "spec.plan.steps[0].tool in body should match"
# 142 steps each depending on every earlier one: 10 011 edges, one over the limit.
dense=$(for i in $(seq 1 142); do
  if [ "$i" -eq 1 ]; then echo "      - {id: 1, tool: wait, input: {ms: 1}}"
  else echo "      - {id: $i, tool: wait, input: {ms: 1}, dependsOn: [$(seq -s, 1 $((i - 1)))]}"; fi
done)
ar dense "  plan:
    steps:
$dense" | reject "more than 10000 dependsOn entries" "spec.plan has more than 10000 dependsOn entries in all"
ar long-pool "  prompt: \"calculate 1+1\"
  workerPool: $(printf 'p%.0s' $(seq 1 64))" | reject "workerPool longer than 63 characters" "spec.workerPool: Too long: may not be more than 63"
for pool in 'rt-b/default' 'default?x=1' 'default/status' 'Default' 'a.b' '-a'; do
  ar bad-pool "  prompt: \"calculate 1+1\"
  workerPool: \"$pool\"" | reject "workerPool '$pool' is refused" "spec.workerPool must be the name of a WorkerPool in this namespace"
done
ar nul-prompt '  prompt: "calculate 1+1\u0000 then rm"' | reject "prompt with a NUL character" "spec.prompt must not contain a NUL character"
ar dollar-prompt '  prompt: "what is $$100 + 1"' | accept "prompt with \$\$ is accepted"
check "a prompt with \$\$ is stored byte for byte" 'what is $$100 + 1' \
  "$(kubectl -n "$ns" get agentrun dollar-prompt -o jsonpath='{.spec.prompt}')"
wp bad-tools '{tools: ["calculator", "bogus tool {x}"]}' | reject "WorkerPool tool names are checked" "spec.tools[1] in body should match"
wp min-over-max '{minWorkers: 5, maxWorkers: 2}' | reject "WorkerPool minWorkers > maxWorkers" "spec.minWorkers must not be greater than spec.maxWorkers"
wp min-over-default-max '{minWorkers: 30}' | reject "WorkerPool minWorkers > default maxWorkers" "spec.minWorkers must not be greater than spec.maxWorkers"

# --- immutability (transition rules) ---
expect_patch_rejected() { # NAME PATCH MESSAGE
  local out
  if out=$(kubectl -n "$ns" patch agentrun "$1" --type merge -p "$2" 2>&1); then
    fail "patch $1 $2 (accepted)" "$out"
  elif grep -qF -- "$3" <<<"$out"; then pass "patch $1 $2 is rejected"
  else fail "patch $1 $2 (wrong message, want: $3)" "$out"; fi
}
expect_patch_rejected good-plan '{"spec":{"plan":{"steps":[{"id":1,"tool":"calculator","input":{"expression":"6*7"}}]}}}' \
  "spec.plan cannot be changed after creation; create a new AgentRun"
expect_patch_rejected good-prompt '{"spec":{"prompt":"something else"}}' \
  "spec.prompt cannot be changed after creation; create a new AgentRun"
expect_patch_rejected good-prompt '{"spec":{"plan":{"steps":[{"id":1,"tool":"calculator","input":{"expression":"1"}}]}}}' \
  "spec.plan cannot be changed after creation; create a new AgentRun"
if out=$(kubectl -n "$ns" patch agentrun good-plan --type merge -p '{"spec":{"cancel":true}}' 2>&1); then
  pass "spec.cancel can be changed"
else fail "spec.cancel change rejected" "$out"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
