#!/usr/bin/env bash
# `kubectl crane` end to end against the local kube-apiserver, run as kubectl runs it (a
# `kubectl-crane` binary on PATH, `kubectl crane ...`), by ServiceAccount users with their
# own tokens and RBAC — never as admin. Needs only the apiserver: the CRDs and the Approval
# admission policy are applied here, and where the operator would create Approvals or write
# an AgentRun's status, the test does it by hand (admin, `kubectl patch --subresource=status`).
#
# `watch` is checked the way a person sees it: inside tmux, reading the screen with
# `tmux capture-pane` after each status change; and once through a pipe (plain lines).
#
#   e2e/tests/kubectl_crane.sh            # every test
#   e2e/tests/kubectl_crane.sh t_watch    # tests whose name starts with t_watch
#
# Needs `make cluster-up`, `cargo build -p kubectl-crane` and tmux. Prints
# `N passed, M failed`; exits non-zero when any check failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${KUBECONFIG:-}" ]; then
  eval "$("$root/e2e/cluster/env.sh")"
fi
. "$root/e2e/tests/lib.sh"
filter=${1:-t_}
id=$$
ns=crane-e2e-kc-$id
ns2=crane-e2e-kc2-$id
work=$(mktemp -d)
sock=kc-$id   # a tmux server of our own
admin_kubeconfig=$KUBECONFIG

command -v tmux >/dev/null || { echo "FAIL tmux is not installed (make deps installs it)"; echo "0 passed, 1 failed"; exit 1; }
plugin=${CRANE_BIN_DIR:-$root/target/debug}/kubectl-crane
[ -x "$plugin" ] || { echo "FAIL $plugin is missing: cargo build -p kubectl-crane"; echo "0 passed, 1 failed"; exit 1; }
# kubectl finds plugins on PATH by name: a directory with just ours goes first.
mkdir -p "$work/bin" && ln -s "$plugin" "$work/bin/kubectl-crane"
export PATH=$work/bin:$PATH

cleanup() {
  tmux -L "$sock" kill-server >/dev/null 2>&1
  KUBECONFIG=$admin_kubeconfig kubectl delete namespace "$ns" "$ns2" --wait=false >/dev/null 2>&1
  KUBECONFIG=$admin_kubeconfig kubectl delete clusterrole,clusterrolebinding "crane-e2e-kc-$id" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# ---- the cluster side: CRDs, policy, users -------------------------------------------------

setup() {
  kubectl apply --server-side --force-conflicts -f "$root/crds/" >/dev/null || return 1
  kubectl wait --for=condition=Established --timeout=60s crd/agentruns.crane.dev crd/approvals.crane.dev >/dev/null || return 1
  kubectl apply --server-side --force-conflicts -f "$root/config/admission/approval-policy.yaml" >/dev/null || return 1
  kubectl create namespace "$ns" >/dev/null && kubectl create namespace "$ns2" >/dev/null || return 1
  # What a person running agents needs in their namespace; no delete, no status.
  kubectl apply -n "$ns" -f - >/dev/null <<'YAML' || return 1
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: crane-user}
rules:
  - apiGroups: [crane.dev]
    resources: [agentruns]
    verbs: [get, list, watch, create, patch]
  - apiGroups: [crane.dev]
    resources: [approvals]
    verbs: [get, list, watch, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: crane-viewer}
rules:
  - apiGroups: [crane.dev]
    resources: [agentruns, approvals]
    verbs: [get, list, watch]
YAML
  local u
  for u in alice bob carol; do kubectl -n "$ns" create serviceaccount "$u" >/dev/null || return 1; done
  kubectl -n "$ns" create rolebinding crane-user --role=crane-user \
    --serviceaccount="$ns:alice" --serviceaccount="$ns:bob" >/dev/null || return 1
  kubectl -n "$ns" create rolebinding crane-viewer --role=crane-viewer --serviceaccount="$ns:carol" >/dev/null || return 1
  # `approvals -A` lists Approvals in every namespace.
  kubectl create clusterrole "crane-e2e-kc-$id" --verb=list,watch --resource=approvals.crane.dev >/dev/null || return 1
  kubectl create clusterrolebinding "crane-e2e-kc-$id" --clusterrole="crane-e2e-kc-$id" \
    --serviceaccount="$ns:alice" --serviceaccount="$ns:bob" >/dev/null || return 1
  local server ca token
  server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kubectl config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  for u in alice bob carol; do
    token=$(kubectl -n "$ns" create token "$u" --duration=1h) || return 1
    cat >"$work/$u.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster: {server: "$server", certificate-authority-data: "$ca"}
users:
- name: $u
  user: {token: "$token"}
contexts:
- name: $u
  context: {cluster: local, user: $u, namespace: $ns}
current-context: $u
KUBECONFIG
  done
  # The policy is enforced once the apiserver has loaded it: wait until a forged decision
  # is refused.
  wait_until 30 forged_decision_refused || { echo "the approval policy is not enforced" >&2; return 1; }
}

forged_decision_refused() {
  ! printf 'apiVersion: crane.dev/v1alpha1\nkind: Approval\nmetadata: {generateName: probe-}\nspec: {run: probe, message: m, decision: Approved, decidedBy: somebody-else}\n' |
    kubectl -n "$ns" create -f - >/dev/null 2>&1
}

user() { echo "system:serviceaccount:$ns:$1"; }
# as USER ARGS...: kubectl crane as that user (their kubeconfig, their context's namespace).
as() { local u=$1; shift; KUBECONFIG=$work/$u.kubeconfig kubectl crane "$@"; }
adm() { KUBECONFIG=$admin_kubeconfig kubectl -n "$ns" "$@"; }
field() { adm get "$1" -o jsonpath="$2" 2>/dev/null; }

# agentrun NAME [SPEC-YAML]: an AgentRun created by admin (what `run` creates is tested apart).
agentrun() {
  printf 'apiVersion: crane.dev/v1alpha1\nkind: AgentRun\nmetadata: {name: %s}\nspec:\n%s\n' "$1" \
    "${2:-  prompt: \"do the thing\"}" | adm create -f - >/dev/null
}
# approval RUN STEP|plan MESSAGE [APPROVERS-JSON]: what the operator creates, owned by the run.
approval() {
  local run=$1 step=$2 name stepfield="" uid
  if [ "$step" = plan ]; then name=$run-plan; else name=$run-step-$step; stepfield=", stepId: $step"; fi
  uid=$(field "agentrun/$run" '{.metadata.uid}')
  printf 'apiVersion: crane.dev/v1alpha1\nkind: Approval\nmetadata:\n  name: %s\n  ownerReferences: [{apiVersion: crane.dev/v1alpha1, kind: AgentRun, name: %s, uid: "%s", controller: true}]\nspec: {run: %s%s, message: "%s", approvers: %s}\n' \
    "$name" "$run" "$uid" "$run" "$stepfield" "$3" "${4:-[]}" | adm create -f - >/dev/null
}
# status RUN JSON: writes the run's status as the operator would.
status() { adm patch agentrun "$1" --subresource=status --type merge -p "{\"status\": $2}" >/dev/null; }

# The step phase for a step waiting for a person: the CRD's, once it has one.
if grep -q WaitingForApproval "$root/crds/agentruns.crane.dev.yaml"; then waiting=WaitingForApproval; else waiting=Running; fi

# expect NAME WANT-EXIT WANT-TEXT CMD...: CMD exits WANT-EXIT with WANT-TEXT in its output.
expect() {
  local name=$1 want_rc=$2 want=$3 out rc; shift 3
  out=$("$@" 2>&1); rc=$?
  if [ "$rc" != "$want_rc" ]; then fail "$name (exit $rc, want $want_rc)" "$out"
  elif ! grep -qF -- "$want" <<<"$out"; then fail "$name (want: $want)" "$out"
  else pass "$name"; fi
}

# ---- run -----------------------------------------------------------------------------------

t_run_prompt() {
  local out name
  out=$(as alice run --prompt "What is (41*7)+13?" --pool fast --model small 2>&1)
  name=$(sed -n 's|^agentrun.crane.dev/\(.*\) created$|\1|p' <<<"$out")
  check "run --prompt: says what it created" "what-is-41-7-13-" "${name:0:16}" "$out"
  check "run --prompt: generateName, prompt, pool, model, created by kubectl-crane as alice" \
    "what-is-41-7-13- What is (41*7)+13? fast small kubectl-crane" \
    "$(field "agentrun/$name" '{.metadata.generateName} {.spec.prompt} {.spec.workerPool} {.spec.model} {.metadata.managedFields[0].manager}')"
}

t_run_plan_file() {
  cat >"$work/deploy plan.yaml" <<'YAML'
# a plan file: just the steps
steps:
  - {id: 1, tool: calculator, input: {expression: "2+3"}}
  - {id: 2, tool: approval, input: {message: "ship it?"}, dependsOn: [1]}
YAML
  local out name
  out=$(as alice run -f "$work/deploy plan.yaml" 2>&1)
  name=$(sed -n 's|^agentrun.crane.dev/\(.*\) created$|\1|p' <<<"$out")
  check "run -f plan.yaml: the plan is spec.plan, named after the file" "deploy-plan- calculator approval 1" \
    "$(field "agentrun/$name" '{.metadata.generateName} {.spec.plan.steps[0].tool} {.spec.plan.steps[1].tool} {.spec.plan.steps[1].dependsOn[0]}')" "$out"
  # A whole manifest on stdin, JSON; its own name is kept.
  out=$(printf '{"apiVersion":"crane.dev/v1alpha1","kind":"AgentRun","metadata":{"name":"from-stdin"},"spec":{"prompt":"hi"}}' |
    as alice run -f - 2>&1)
  check "run -f - (manifest on stdin): created with its own name" "agentrun.crane.dev/from-stdin created" "$out"
  # Strict field validation, as kubectl create: a misspelt field is an error, not dropped.
  printf 'steps:\n  - {id: 1, tool: calculator, input: {expression: "1"}, depends_on: [2]}\n' >"$work/typo.yaml"
  expect "run -f with a misspelt field: refused, naming it" 2 'unknown field "spec.plan.steps[0].depends_on"' \
    as alice run -f "$work/typo.yaml"
  # The CRD's rules answer in their own words.
  printf 'steps:\n  - {id: 1, tool: calculator}\n  - {id: 1, tool: calculator}\n' >"$work/dup.yaml"
  expect "run -f with duplicate ids: the CEL rule's message" 2 "step ids must be unique" \
    as alice run -f "$work/dup.yaml"
  expect "run -f with a missing file: says so" 2 "cannot read $work/none.yaml" as alice run -f "$work/none.yaml"
  printf 'kind: Pod\napiVersion: v1\n' >"$work/pod.yaml"
  expect "run -f with another kind: refused before sending" 2 'kind is "Pod"' as alice run -f "$work/pod.yaml"
  expect "run --prompt '': the CEL message" 2 "spec.prompt must not be empty or blank" as alice run --prompt ""
  expect "run as a viewer: RBAC names verb and resource" 2 \
    "you are not allowed to create agentruns.crane.dev in namespace $ns (Kubernetes RBAC)" as carol run --prompt hi
}

# ---- errors --------------------------------------------------------------------------------

t_unknown_run() {
  expect "watch of an unknown run" 2 "agentrun nope not found in namespace $ns" as alice watch nope
  expect "approve of an unknown run" 2 "agentrun nope not found in namespace $ns" as alice approve nope
  # alice has no Role in $ns2: -n is honoured, and RBAC says what was refused where.
  expect "-n picks the namespace; RBAC names verb, resource and namespace" 2 \
    "you are not allowed to get agentruns.crane.dev in namespace $ns2 (Kubernetes RBAC)" as alice -n "$ns2" cancel nope
}

# ---- approve / reject ----------------------------------------------------------------------

t_approve() {
  agentrun deploy
  approval deploy 2 "Deploy to production?" "[\"$(user alice)\"]"
  expect "approve by a non-approver: the policy's message, verbatim" 2 \
    "$(user bob) is not among the approvers of this Approval: $(user alice)" as bob approve deploy
  check "refused: the Approval is still open" "" "$(field approval/deploy-step-2 '{.spec.decision}')"
  expect "approve by the approver" 0 "approval.crane.dev/deploy-step-2 approved by $(user alice)" \
    as alice approve deploy --step 2 --comment "looks good"
  check "approved: decision, decidedBy (the user's own name), comment" "Approved $(user alice) looks good" \
    "$(field approval/deploy-step-2 '{.spec.decision} {.spec.decidedBy} {.spec.comment}')"
  expect "approve again: already decided" 2 "approval deploy-step-2 was already decided" as alice approve deploy --step 2
  expect "no open approval left: says so and lists what exists" 2 \
    "agentrun deploy has no open approval; the run's approvals: deploy-step-2 (Approved by $(user alice))" \
    as alice approve deploy
  expect "a step without an approval: lists what exists" 2 \
    "approval deploy-step-7 not found in namespace $ns; the run's approvals: deploy-step-2" \
    as alice reject deploy --step 7
  # The policy also holds when someone bypasses the plugin: not even the approver may change it.
  local out
  out=$(KUBECONFIG=$work/alice.kubeconfig kubectl patch approval deploy-step-2 --type merge \
    -p "{\"spec\":{\"decision\":\"Rejected\",\"decidedBy\":\"$(user alice)\"}}" 2>&1)
  if grep -q "already decided" <<<"$out"; then pass "a decision never changes (plain kubectl patch refused)"
  else fail "a decision never changes (plain kubectl patch refused)" "$out"; fi
}

t_reject() {
  agentrun risky
  approval risky 1 "Delete all todos?"
  expect "reject with a comment (no approvers: anyone with RBAC may decide)" 0 \
    "approval.crane.dev/risky-step-1 rejected by $(user bob)" as bob reject risky --comment "too risky"
  check "rejected: decision, decidedBy, comment" "Rejected $(user bob) too risky" \
    "$(field approval/risky-step-1 '{.spec.decision} {.spec.decidedBy} {.spec.comment}')"
  agentrun viewonly
  approval viewonly 1 "Allowed?"
  expect "decide without patch permission: RBAC names verb and resource" 2 \
    "you are not allowed to patch approvals.crane.dev in namespace $ns (Kubernetes RBAC)" as carol approve viewonly
}

t_plan_and_choice() {
  agentrun planned
  approval planned plan "Run this plan?"
  approval planned 3 "Step 3?"
  status planned '{"phase": "AwaitingApproval"}'
  expect "AwaitingApproval, no --step: the plan's approval" 0 "approval.crane.dev/planned-plan approved" \
    as alice approve planned
  agentrun twogates
  approval twogates 1 "one?"
  approval twogates 2 "two?"
  expect "two open approvals, no --step: asks which" 2 \
    "agentrun twogates has 2 open approvals; choose one with --step: twogates-step-1 (--step 1), twogates-step-2 (--step 2)" \
    as alice approve twogates
  expect "the second gate decided first" 0 "twogates-step-2 rejected" as alice reject twogates --step 2
  expect "then the only open one is chosen" 0 "twogates-step-1 approved" as alice approve twogates
}

t_approvals_list() {
  agentrun listed
  approval listed 1 "anyone may"
  approval listed 2 "alice only" "[\"$(user alice)\"]"
  approval listed 3 "bob's group" "[\"system:serviceaccounts:$ns\"]"
  approval listed 4 "decided already"
  KUBECONFIG=$work/alice.kubeconfig kubectl -n "$ns" patch approval listed-step-4 --type merge \
    -p "{\"spec\":{\"decision\":\"Approved\",\"decidedBy\":\"$(user alice)\"}}" >/dev/null
  KUBECONFIG=$admin_kubeconfig kubectl -n "$ns2" create -f - >/dev/null <<'YAML'
apiVersion: crane.dev/v1alpha1
kind: Approval
metadata: {name: elsewhere-step-1}
spec: {run: elsewhere, stepId: 1, message: "in another namespace"}
YAML
  local out rows want
  out=$(as bob approvals -A 2>&1)
  # Other tests' Approvals are in $ns too; these two runs are this test's.
  rows=$(awk '$2=="listed" || $2=="elsewhere" {print $1 "/" $2 "/" $3}' <<<"$out" | sort | tr '\n' ' ')
  want=$(printf '%s\n' "$ns/listed/1" "$ns/listed/3" "$ns2/elsewhere/1" | sort | tr '\n' ' ')
  check "approvals -A as bob: the open ones he may decide (no approvers, or his group), in every namespace" \
    "$want" "$rows" "$out"
  check "approvals -A: the columns" "NAMESPACE RUN STEP MESSAGE AGE" "$(head -1 <<<"$out" | tr -s ' ')"
  out=$(as alice approvals 2>&1)
  rows=$(awk '$1=="listed" {print $1 "/" $2}' <<<"$out" | tr '\n' ' ')
  check "approvals as alice (her namespace): anyone's, hers, her group's; not the decided one" \
    "listed/1 listed/2 listed/3 " "$rows" "$out"
  check "approvals: RUN STEP MESSAGE AGE" "RUN STEP MESSAGE AGE" "$(head -1 <<<"$out" | tr -s ' ')"
  grep -q "alice only" <<<"$out" && pass "approvals: the message is shown" || fail "approvals: the message is shown" "$out"
  expect "approvals where nothing waits: says so" 0 "No open approvals for $(user alice) in namespace default" \
    as alice -n default approvals
}

# ---- cancel / retry ------------------------------------------------------------------------

t_cancel_retry() {
  agentrun stopme
  status stopme '{"phase": "Running"}'
  expect "cancel" 0 "agentrun.crane.dev/stopme cancel requested" as alice cancel stopme
  check "cancel: spec.cancel is true" true "$(field agentrun/stopme '{.spec.cancel}')"
  expect "retry of a run that is not Failed: refused" 2 "agentrun stopme is Running; only a Failed run can be retried" \
    as alice retry stopme
  check "refused retry: no annotation" "" "$(field agentrun/stopme '{.metadata.annotations.crane\.dev/retry}')"
  status stopme '{"phase": "Failed", "error": "step 1 failed"}'
  local before after
  before=$(date +%s%3N)
  expect "retry of a Failed run" 0 "agentrun.crane.dev/stopme retry requested (crane.dev/retry=" as alice retry stopme
  after=$(field agentrun/stopme '{.metadata.annotations.crane\.dev/retry}')
  if [[ $after =~ ^[0-9]+$ ]] && [ "$after" -ge "$before" ]; then pass "retry: crane.dev/retry is a new token (Unix ms)"
  else fail "retry: crane.dev/retry is a new token (Unix ms)" "got '$after', before $before"; fi
  expect "cancel of a finished run: nothing to do" 0 "is already Failed; nothing to cancel" as alice cancel stopme
}

# ---- watch ---------------------------------------------------------------------------------

# screen: what the tmux pane shows now (text only).
screen() { tmux -L "$sock" capture-pane -p -t "$1" 2>/dev/null; }
screen_has() { screen "$1" | grep -qF -- "$2"; }
# watch_in_tmux SESSION RUN [ENV...]: `kubectl crane watch RUN` as alice in a 150x45 terminal;
# its exit code lands in $work/SESSION.rc.
watch_in_tmux() {
  local s=$1 run=$2; shift 2
  tmux -u -L "$sock" new-session -d -s "$s" -x 150 -y 45 \
    "env $* KUBECONFIG='$work/alice.kubeconfig' PATH='$PATH' TERM=xterm-256color kubectl crane watch $run; echo \$? >'$work/$s.rc'; sleep 600"
}

t_watch_tty() {
  agentrun ship '  plan:
    steps:
      - {id: 1, tool: calculator, input: {expression: "2+3"}}
      - {id: 2, tool: approval, input: {message: "Ship it?"}, dependsOn: [1]}
      - {id: 3, tool: llm, input: {prompt: "write release notes"}, dependsOn: [2]}'
  approval ship 2 "Ship version 5 to production?" "[\"$(user alice)\", \"release-managers\"]"
  status ship "{\"phase\": \"Running\", \"progress\": \"1/3\", \"startedAt\": \"$(date -u -d '-20 seconds' +%FT%TZ)\",
    \"usage\": {\"promptTokens\": 900, \"completionTokens\": 100, \"totalTokens\": 1000, \"llmCalls\": 1, \"toolCalls\": 2},
    \"steps\": [
      {\"id\": 1, \"tool\": \"calculator\", \"phase\": \"Succeeded\", \"attempts\": 2, \"output\": 5,
       \"startedAt\": \"$(date -u -d '-19 seconds' +%FT%TZ)\", \"finishedAt\": \"$(date -u -d '-17 seconds' +%FT%TZ)\"},
      {\"id\": 2, \"tool\": \"approval\", \"phase\": \"$waiting\", \"attempts\": 0, \"message\": \"waiting for approval ship-step-2\",
       \"startedAt\": \"$(date -u -d '-16 seconds' +%FT%TZ)\"}]}"
  watch_in_tmux w1 ship
  if ! wait_until 20 screen_has w1 "ship-step-2"; then
    fail "watch in a terminal: the tree appears" "$(screen w1)"; return
  fi
  local s; s=$(screen w1)
  line() { grep -E -- "$1" <<<"$s" | head -1; }
  check "watch: the header (run, phase, progress)" "agentrun/ship ● Running 1/3 steps" \
    "$(line '^agentrun/ship' | tr -s ' ' | cut -d' ' -f1-5)" "$s"
  check "watch: usage" "usage 1000 tokens (900 prompt + 100 completion) · 1 llm call · 2 tool calls" "$(line '^usage')" "$s"
  local l1 l2 l3
  l1=$(line '^✓ 1 calculator'); l2=$(line '^  [^ ]+ 2 approval'); l3=$(line '^    · 3 llm')
  if [[ $l1 == *Succeeded*"2 attempts"*"2.0s"*"→ 5"* ]]; then pass "watch: step 1 Succeeded, attempts, duration, output"
  else fail "watch: step 1 Succeeded, attempts, duration, output" "$s"; fi
  if [[ $l2 == *"$waiting"*"waiting for approval ship-step-2"* ]]; then pass "watch: step 2 waits for its approval, indented under step 1"
  else fail "watch: step 2 waits for its approval, indented under step 1" "$s"; fi
  if [[ $l3 == *Pending* ]]; then pass "watch: step 3 Pending, under step 2"; else fail "watch: step 3 Pending, under step 2" "$s"; fi
  if grep -qF "? ship-step-2  step 2    waiting: Ship version 5 to production?  (approvers: $(user alice), release-managers)" <<<"$s" &&
     grep -qF "APPROVALS (1 open)" <<<"$s" && grep -qF "decide: kubectl crane approve ship --step 2" <<<"$s"; then
    pass "watch: the open approval, its approvers and how to decide"
  else fail "watch: the open approval, its approvers and how to decide" "$s"; fi
  if tmux -L "$sock" capture-pane -p -e -t w1 | grep -q $'\e\[32m'; then pass "watch: colours on a terminal"
  else fail "watch: colours on a terminal" "$(tmux -L "$sock" capture-pane -p -e -t w1 | head -12 | cat -v)"; fi

  # A decision shows without a status change; then the steps move.
  as alice approve ship --step 2 --comment "go" >/dev/null 2>&1
  wait_until 10 screen_has w1 "Approved by $(user alice): go (applying)" &&
    pass "watch: the decision shows as it is made" || fail "watch: the decision shows as it is made" "$(screen w1)"
  adm patch approval ship-step-2 --subresource=status --type merge -p '{"status":{"outcome":"Approved"}}' >/dev/null
  status ship '{"progress": "2/3", "steps": [
      {"id": 2, "tool": "approval", "phase": "Succeeded", "attempts": 1, "output": {"approved": true}},
      {"id": 3, "tool": "llm", "phase": "Running", "attempts": 1, "usage": {"promptTokens": 40, "completionTokens": 2}}]}'
  wait_until 10 screen_has w1 "2/3 steps" && s=$(screen w1)
  if [[ $(line '^  ✓ 2 approval') == *Succeeded*'→ {"approved":true}'* ]] && [[ $(line '^    ● 3 llm') == *Running*"40+2 tokens"* ]] &&
     grep -qF "APPROVALS (0 open)" <<<"$s"; then
    pass "watch: redrawn after a status change (step 2 Succeeded, step 3 Running with its tokens)"
  else fail "watch: redrawn after a status change (step 2 Succeeded, step 3 Running with its tokens)" "$s"; fi
  check "watch: one frame, redrawn in place (not appended)" 1 "$(grep -c '^agentrun/ship' <<<"$s")" "$s"
  if grep -qE '\[\?(7|25)[lh]|\[[0-9;]*m|\[J' <<<"$s"; then fail "watch: no stray escape sequences on screen" "$s"
  else pass "watch: no stray escape sequences on screen"; fi

  status ship '{"phase": "Succeeded", "progress": "3/3", "result": "Release notes: v5", "finishedAt": "'"$(date -u +%FT%TZ)"'",
    "steps": [{"id": 3, "tool": "llm", "phase": "Succeeded", "attempts": 1, "output": "Release notes: v5"}]}'
  if wait_until 10 test -s "$work/w1.rc"; then check "watch: exits 0 when the run Succeeded" 0 "$(cat "$work/w1.rc")"
  else fail "watch: exits 0 when the run Succeeded" "$(screen w1)"; fi
  s=$(screen w1)
  if grep -qF "result: Release notes: v5" <<<"$s" && grep -q "^agentrun/ship  ✓ Succeeded" <<<"$s"; then
    pass "watch: the final frame stays, with the result"
  else fail "watch: the final frame stays, with the result" "$s"; fi

  # NO_COLOR: the same tree without colours; a Failed run exits 1.
  agentrun doomed
  status doomed '{"phase": "Running", "steps": [{"id": 1, "tool": "calculator", "phase": "Running", "attempts": 1}]}'
  watch_in_tmux w2 doomed NO_COLOR=1
  wait_until 20 screen_has w2 "agentrun/doomed" || { fail "watch (NO_COLOR): the tree appears" "$(screen w2)"; return; }
  if tmux -L "$sock" capture-pane -p -e -t w2 | grep -q $'\e\[3[0-9]m'; then fail "watch: NO_COLOR means no colours" "$(tmux -L "$sock" capture-pane -p -e -t w2 | cat -v)"
  else pass "watch: NO_COLOR means no colours"; fi
  status doomed '{"phase": "Failed", "error": "step 1 (calculator) failed: division by zero",
    "steps": [{"id": 1, "tool": "calculator", "phase": "Failed", "attempts": 3, "error": "division by zero"}]}'
  if wait_until 10 test -s "$work/w2.rc"; then check "watch: exits 1 when the run Failed" 1 "$(cat "$work/w2.rc")"
  else fail "watch: exits 1 when the run Failed" "$(screen w2)"; fi
  screen_has w2 "error: step 1 (calculator) failed: division by zero" && pass "watch: the run's error is shown" ||
    fail "watch: the run's error is shown" "$(screen w2)"
}

t_watch_plain() {
  # Through a pipe: one plain line per change, no escape sequences; run -w follows the run.
  printf 'steps:\n  - {id: 1, tool: calculator, input: {expression: "6*7"}}\n' >"$work/one.yaml"
  as alice run -f "$work/one.yaml" -w >"$work/plain.out" 2>"$work/plain.err" &
  local pid=$! name
  wait_until 15 grep -q ' created$' "$work/plain.out"
  name=$(sed -n 's|^agentrun.crane.dev/\(.*\) created$|\1|p' "$work/plain.out")
  wait_until 10 grep -q "^agentrun/$name Pending" "$work/plain.out"
  status "$name" '{"phase": "Running", "progress": "0/1", "steps": [{"id": 1, "tool": "calculator", "phase": "Running", "attempts": 1}]}'
  wait_until 10 grep -q "^step 1 calculator Running" "$work/plain.out"
  status "$name" '{"phase": "Cancelled", "progress": "0/1", "error": "cancelled by the user",
    "steps": [{"id": 1, "tool": "calculator", "phase": "Skipped", "attempts": 1}]}'
  local rc=timeout
  if wait_until 10 bash -c "! kill -0 $pid 2>/dev/null"; then wait "$pid"; rc=$?; fi
  check "run -w through a pipe: exits 1 when the run is Cancelled" 1 "$rc" "$(cat "$work/plain.out" "$work/plain.err")"
  check "run -w through a pipe: one plain line per change" \
    "agentrun.crane.dev/$name created|agentrun/$name Pending|agentrun/$name Running steps=0/1|step 1 calculator Running attempts=1|agentrun/$name Cancelled steps=0/1 error=cancelled by the user|step 1 calculator Skipped attempts=1" \
    "$(paste -sd'|' "$work/plain.out")"
  if grep -q $'\e' "$work/plain.out"; then fail "plain output has no escape sequences" "$(cat -v "$work/plain.out")"
  else pass "plain output has no escape sequences"; fi
  # A run deleted while it is watched: an error, not a hang.
  agentrun vanishing
  as alice watch vanishing >"$work/gone.out" 2>&1 &
  pid=$!
  wait_until 10 grep -q "^agentrun/vanishing Pending" "$work/gone.out"
  adm delete agentrun vanishing --wait=false >/dev/null
  rc=timeout
  if wait_until 10 bash -c "! kill -0 $pid 2>/dev/null"; then wait "$pid"; rc=$?; fi
  check "watch of a run that is deleted: exits 2" 2 "$rc" "$(cat "$work/gone.out")"
  grep -q "error: agentrun vanishing was deleted while it was being watched" "$work/gone.out" &&
    pass "watch of a run that is deleted: says so" || fail "watch of a run that is deleted: says so" "$(cat "$work/gone.out")"
}

# ---- main ----------------------------------------------------------------------------------

if ! setup; then echo "FAIL setup"; echo "0 passed, 1 failed"; exit 1; fi
for t in t_run_prompt t_run_plan_file t_unknown_run t_approve t_reject t_plan_and_choice t_approvals_list \
         t_cancel_retry t_watch_tty t_watch_plain; do
  [[ $t == $filter* ]] && "$t"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
