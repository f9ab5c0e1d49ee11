#!/usr/bin/env bash
# The tools a namespace defines and the models it calls, end to end on the local cluster:
# workers in the node's containers call an HTTP Tool and the MCP reference server
# (@modelcontextprotocol/server-everything, from npm) running on this host, and a Model
# served by the fake OpenAI-compatible provider (the one outside service tests imitate);
# budgets refuse calls before they are sent. Then tenancy: a namespace's Redis login reads
# its own keys and nothing of another namespace's.
#
#   e2e/tests/tools.sh              # every test
#   e2e/tests/tools.sh t_mcp        # tests whose name starts with t_mcp
#
# Prints `N passed, M failed`; exits non-zero when any check failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${KUBECONFIG:-}" ] || [ -z "${REDIS_URL:-}" ] || [ -z "${CRANE_REDIS_PASSWORD_FILE:-}" ]; then
  eval "$("$root/e2e/cluster/env.sh")"
fi
. "$root/e2e/tests/lib.sh"
prefix=crane-e2e-tl-$$
work=$(mktemp -d)
filter=${1:-t_}
host=${CRANE_HOST_IP:?CRANE_HOST_IP (this host as pods see it) is needed; see e2e/cluster/env.sh}
bin=${CRANE_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}

ready() { [ "$(kubectl -n "$1" get "$2" "$3" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
why() { { kubectl -n "$1" get agentrun "$2" -o yaml 2>&1 | sed -n '/^status:/,$p' | head -40; echo "-- operator log:"; tail -n 8 "$op_log"; } 2>&1; }
pool() {
  printf 'apiVersion: crane.dev/v1alpha1\nkind: WorkerPool\nmetadata: {name: default}\nspec: {maxWorkers: 2, idleTimeoutSeconds: 30}\n' |
    kubectl -n "$1" apply -f - >/dev/null
}
# plan_run NS NAME STEPS-YAML [EXTRA-SPEC-YAML]
plan_run() {
  printf 'apiVersion: crane.dev/v1alpha1\nkind: AgentRun\nmetadata: {name: %s}\nspec:\n%s  plan:\n    steps:\n%s\n' \
    "$2" "${4:-}" "$3" | kubectl -n "$1" apply -f - >/dev/null
}

tests=(t_http_tool t_deleted_tool t_mcp_server t_model_and_budget t_tenancy)
selected=()
for t in "${tests[@]}"; do [[ $t == $filter* ]] && selected+=("$t"); done
op_log=$work/operator.log
pids=()

cleanup() {
  local t p
  local namespaces=()
  for t in "${selected[@]}"; do namespaces+=("$prefix-${t//_/-}"); done
  delete_runs "${namespaces[@]}"
  operator_stop
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for t in "${selected[@]}"; do
    kubectl delete namespace "$prefix-${t//_/-}" --wait=false >/dev/null 2>&1
  done
  rm -rf "$work"
}
trap cleanup EXIT

# The servers, on the host's address the node's pods reach.
http_port=$(free_port)
cat >"$work/tool.py" <<'PY'
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        out = json.dumps({"sum": body.get("a", 0) + body.get("b", 0),
                          "token": self.headers.get("authorization", "")}).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out))); self.end_headers(); self.wfile.write(out)
    def log_message(self, *a): pass
HTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
PY
python3 "$work/tool.py" "$host" "$http_port" & pids+=($!)
llm_port=$(free_port)
"$bin/crane-fake-llm" --listen "$host:$llm_port" >"$work/fake-llm.log" 2>&1 & pids+=($!)
mcp_port=$(free_port)
everything=$("$root/e2e/servers/npm-install.sh" @modelcontextprotocol/server-everything 2026.8.31) ||
  { echo "cannot install server-everything"; echo "0 passed, 1 failed"; exit 1; }
PORT=$mcp_port node "$everything/dist/index.js" streamableHttp >"$work/mcp.log" 2>&1 & pids+=($!)
wait_until 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$mcp_port" || { echo "server-everything did not listen"; cat "$work/mcp.log"; }

args=(--redis-url "$REDIS_URL" --executor-image "$CRANE_IMAGE")
for t in "${selected[@]}"; do
  kubectl create namespace "$prefix-${t//_/-}" >/dev/null
  args+=(--namespace "$prefix-${t//_/-}")
done
if ! operator_start "$op_log" "${args[@]}"; then
  echo "0 passed, 1 failed"
  exit 1
fi
# WorkerPools once operator_start has installed the CRDs.
for t in "${selected[@]}"; do pool "$prefix-${t//_/-}"; done
ns_of() { echo "$prefix-${1//_/-}"; }

# ---- tests --------------------------------------------------------------------------------

t_http_tool() {
  local ns; ns=$(ns_of "${FUNCNAME[0]}")
  kubectl -n "$ns" create secret generic adder-token --from-literal=token="Bearer s3cret" >/dev/null
  kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: crane.dev/v1alpha1
kind: Tool
metadata: {name: adder}
spec:
  description: "Adds a and b."
  inputSchema: {type: object, properties: {a: {type: integer}, b: {type: integer}}, required: [a, b]}
  http:
    url: http://$host:$http_port/add
    method: POST
    timeoutSeconds: 5
    headers:
      - name: Authorization
        valueFrom: {secretKeyRef: {name: adder-token, key: token}}
YAML
  wait_until 60 ready "$ns" tool adder || fail "Tool adder Ready" "$(kubectl -n "$ns" get tool adder -o yaml)"
  plan_run "$ns" add '      - {id: 1, tool: adder, input: {a: 40, b: 2}}'
  wait_until 120 terminal "$ns" add
  check "a worker pod calls the HTTP Tool with its Secret header" 'Succeeded 42 Bearer s3cret' \
    "$(ar_field "$ns" add '{.status.phase} {.status.result.sum} {.status.result.token}')" "$(why "$ns" add)"
  plan_run "$ns" bad '      - {id: 1, tool: adder, input: {a: "forty", b: 2}}'
  wait_until 60 terminal "$ns" bad
  local err; err=$(ar_field "$ns" bad '{.status.error}')
  if [ "$(phase "$ns" bad)" = Failed ] && grep -q 'input.a' <<<"$err"; then
    pass "an input the Tool's schema refuses fails before anything is sent, saying where"
  else fail "an input the Tool's schema refuses fails before anything is sent, saying where" "$(why "$ns" bad)"; fi
}

# A run keeps the bindings it was planned with; deleting the Tool mid-run still stops its
# later steps from calling it, with an error that says so.
t_deleted_tool() {
  local ns; ns=$(ns_of "${FUNCNAME[0]}")
  printf 'apiVersion: crane.dev/v1alpha1\nkind: Tool\nmetadata: {name: adder}\nspec:\n  description: Adds.\n  inputSchema: {type: object}\n  http: {url: "http://%s:%s/add", method: POST}\n' \
    "$host" "$http_port" | kubectl -n "$ns" apply -f - >/dev/null
  wait_until 60 ready "$ns" tool adder || { fail "Tool adder Ready" "$(kubectl -n "$ns" get tool adder -o yaml)"; return; }
  plan_run "$ns" gone '      - {id: 1, tool: adder, input: {a: 1, b: 1}}
      - {id: 2, tool: wait, input: {ms: 6000}, dependsOn: [1]}
      - {id: 3, tool: adder, input: {a: 1, b: 2}, dependsOn: [2]}'
  step2_running() { [ "$(ar_field "$ns" gone '{.status.steps[1].phase}')" = Running ]; }
  wait_until 120 step2_running || { fail "the run reaches its wait step" "$(why "$ns" gone)"; return; }
  kubectl -n "$ns" delete tool adder >/dev/null
  wait_until 60 terminal "$ns" gone
  local got; got=$(ar_field "$ns" gone '{.status.phase} {.status.steps[0].phase} {.status.steps[2].phase}')
  local err; err=$(ar_field "$ns" gone '{.status.steps[2].error}')
  if [ "$got" = "Failed Succeeded Failed" ] && grep -qF "Tool $ns/adder was deleted after this run was planned" <<<"$err"; then
    pass "a Tool deleted mid-run fails the later steps that use it, saying so"
  else fail "a Tool deleted mid-run fails the later steps that use it, saying so (got '$got')" "$(why "$ns" gone)"; fi
  plan_run "$ns" after '      - {id: 1, tool: adder, input: {a: 1, b: 2}}'
  wait_until 60 terminal "$ns" after
  check "a new run naming it is InvalidPlan" "Failed InvalidPlan" \
    "$(ar_field "$ns" after '{.status.phase} {.status.conditions[?(@.type=="Failed")].reason}')" "$(why "$ns" after)"
}

t_mcp_server() {
  local ns; ns=$(ns_of "${FUNCNAME[0]}")
  kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: crane.dev/v1alpha1
kind: MCPServer
metadata: {name: everything}
spec:
  url: http://$host:$mcp_port/mcp
  timeoutSeconds: 30
YAML
  if wait_until 60 ready "$ns" mcpserver everything; then pass "MCPServer discovered and Ready"
  else fail "MCPServer discovered and Ready" "$(kubectl -n "$ns" get mcpserver everything -o yaml)"; return; fi
  local tools; tools=$(kubectl -n "$ns" get mcpserver everything -o jsonpath='{.status.tools[*].name}')
  if grep -qw echo <<<"$tools" && grep -qw get-sum <<<"$tools"; then pass "its tools are listed in status"
  else fail "its tools are listed in status" "$tools"; fi
  plan_run "$ns" mcp '      - {id: 1, tool: everything.get-sum, input: {a: 2, b: 3}}
      - {id: 2, tool: everything.echo, input: {message: "sum {step_1_output}"}, dependsOn: [1]}'
  wait_until 120 terminal "$ns" mcp
  check "a worker pod calls MCP tools through the reference server" Succeeded "$(phase "$ns" mcp)" "$(why "$ns" mcp)"
  local out; out=$(ar_field "$ns" mcp '{.status.steps[0].output} {.status.result}')
  if grep -q 5 <<<"$out" && grep -q 'sum' <<<"$out"; then pass "MCP outputs flow into the next step"
  else fail "MCP outputs flow into the next step" "$out"; fi
  # The LLM planner is offered the namespace's catalog and picks the MCP tool from it (the fake
  # provider plans what the prompt's directive says, and only from the tools it was sent).
  kubectl -n "$ns" create secret generic llm --from-literal=apiKey=sk-test >/dev/null
  printf 'apiVersion: crane.dev/v1alpha1\nkind: Model\nmetadata: {name: planner}\nspec: {baseUrl: "http://%s:%s", model: fake-small, apiKeySecretRef: {name: llm, key: apiKey}, timeoutSeconds: 10}\n' \
    "$host" "$llm_port" | kubectl -n "$ns" apply -f - >/dev/null
  wait_until 60 ready "$ns" model planner
  printf 'apiVersion: crane.dev/v1alpha1\nkind: AgentRun\nmetadata: {name: planned}\nspec:\n  prompt: %s\n  model: planner\n  planner: {mode: llm}\n' \
    "'Add two and three [plan everything.get-sum {\"a\": 2, \"b\": 3}]'" | kubectl -n "$ns" apply -f - >/dev/null
  wait_until 120 terminal "$ns" planned
  check "the LLM planner chose the MCP tool the catalog offered" "Succeeded llm everything.get-sum" \
    "$(ar_field "$ns" planned '{.status.phase} {.status.planSource} {.status.plan.steps[0].tool}')" "$(why "$ns" planned)"
  local sent; sent=$(curl -fsS "http://$host:$llm_port/__requests")
  if grep -q 'everything.get-sum' <<<"$sent"; then pass "the planner's request listed the MCP tools"
  else fail "the planner's request listed the MCP tools" "$(head -c 400 <<<"$sent")"; fi
  # Deleting the MCPServer mid-run stops its tools for runs planned before, like a Tool's.
  plan_run "$ns" late '      - {id: 1, tool: wait, input: {ms: 6000}}
      - {id: 2, tool: everything.echo, input: {message: "late"}, dependsOn: [1]}'
  waiting() { [ "$(ar_field "$ns" late '{.status.steps[0].phase}')" = Running ]; }
  wait_until 120 waiting || { fail "the run reaches its wait step" "$(why "$ns" late)"; return; }
  kubectl -n "$ns" delete mcpserver everything >/dev/null
  wait_until 60 terminal "$ns" late
  local err; err=$(ar_field "$ns" late '{.status.steps[1].error}')
  if [ "$(phase "$ns" late)" = Failed ] && grep -qF "MCPServer $ns/everything was deleted after this run was planned" <<<"$err"; then
    pass "an MCPServer deleted mid-run fails the later steps that use its tools, saying so"
  else fail "an MCPServer deleted mid-run fails the later steps that use its tools, saying so" "$(why "$ns" late)"; fi
}

t_model_and_budget() {
  local ns; ns=$(ns_of "${FUNCNAME[0]}")
  kubectl -n "$ns" create secret generic llm --from-literal=apiKey=sk-test >/dev/null
  kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: crane.dev/v1alpha1
kind: Model
metadata: {name: small}
spec:
  baseUrl: http://$host:$llm_port
  model: fake-small
  apiKeySecretRef: {name: llm, key: apiKey}
  timeoutSeconds: 10
  limits: {maxConcurrentRequests: 1}
YAML
  wait_until 60 ready "$ns" model small || fail "Model small Ready" "$(kubectl -n "$ns" get model small -o yaml)"
  plan_run "$ns" ask '      - {id: 1, tool: llm, input: {prompt: "[reply four words right here]"}}
      - {id: 2, tool: llm, input: {prompt: "again [reply two words]"}}' '  model: small
'
  wait_until 120 terminal "$ns" ask
  check "llm steps run on the Model, their text is the output" "Succeeded four words right here" \
    "$(ar_field "$ns" ask '{.status.phase} {.status.steps[0].output}')" "$(why "$ns" ask)"
  check "usage: completion tokens per step, llm calls per run" "4 2 2" \
    "$(ar_field "$ns" ask '{.status.steps[0].usage.completionTokens} {.status.steps[1].usage.completionTokens} {.status.usage.llmCalls}')"
  local stats; stats=$(curl -fsS "http://$host:$llm_port/__stats")
  check "maxConcurrentRequests held across workers" 1 \
    "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["maxInFlight"].get("fake-small"))' <<<"$stats")"
  plan_run "$ns" broke '      - {id: 1, tool: llm, input: {prompt: "too much", maxTokens: 500}}' '  model: small
  budget: {maxTokens: 100}
'
  wait_until 120 terminal "$ns" broke
  check "a call the budget cannot cover fails the run with reason BudgetExceeded" "Failed BudgetExceeded" \
    "$(ar_field "$ns" broke '{.status.phase} {.status.conditions[?(@.type=="Failed")].reason}')" "$(why "$ns" broke)"
}

t_tenancy() {
  local ns other; ns=$(ns_of "${FUNCNAME[0]}"); other=$(ns_of t_http_tool)
  plan_run "$ns" mine '      - {id: 1, tool: calculator, input: {expression: "1+1"}}'
  wait_until 120 terminal "$ns" mine
  local user pass
  user=$(kubectl -n "$ns" get secret crane-redis -o jsonpath='{.data.username}' | base64 -d)
  pass=$(kubectl -n "$ns" get secret crane-redis -o jsonpath='{.data.password}' | base64 -d)
  check "the namespace's login is its own Redis user" "crane-ns-$ns" "$user"
  local url=${REDIS_URL#redis://}; url=${url##*@}
  local rc=(redis-cli -h "${url%%:*}" -p "${url##*:}" --user "$user" --pass "$pass" --no-auth-warning)
  local own; own=$("${rc[@]}" --scan --pattern "crane:ns:$ns:*" 2>&1 | head -1)
  if [ -n "$own" ]; then pass "it reads its own keys"; else fail "it reads its own keys" "$own"; fi
  local out; out=$("${rc[@]}" GET "crane:ns:$other:anything" 2>&1)
  if grep -q NOPERM <<<"$out"; then pass "another namespace's keys: NOPERM"
  else fail "another namespace's keys: NOPERM" "$out"; fi
  out=$("${rc[@]}" FLUSHALL 2>&1)
  if grep -q NOPERM <<<"$out"; then pass "administrative commands: NOPERM"
  else fail "administrative commands: NOPERM" "$out"; fi
}

for t in "${selected[@]}"; do "$t"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
