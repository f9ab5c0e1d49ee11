#!/usr/bin/env bash
# Traces, dashboard and alerts end to end, on the local control plane:
#   - the alert rules pass `promtool check rules` and their unit tests (`promtool test rules`);
#   - an OpenTelemetry Collector built from Go modules (e2e/servers/otelcol.sh) receives OTLP
#     from the operator (a process here) and from planner and worker pods, and writes spans to
#     a file: each AgentRun is one trace with its root span, every step attempt under it, GenAI
#     attributes on model and tool spans, and the HTTP tool's server saw the same trace id in
#     `traceparent`; log lines carry trace ids;
#   - a real Prometheus (Debian's) scrapes the operator and the worker pods (found through the
#     API server by the suite and handed over as file_sd: Debian builds Prometheus without
#     Kubernetes discovery); every query of the Grafana dashboard returns data (the queries
#     are read from deploy/grafana/crane-dashboard.json, so a panel added later is checked too).
#
#   e2e/tests/telemetry.sh
#
# Needs `make cluster-up` (which loads the crane image), `cargo build --workspace`, prometheus/promtool (apt) and Go for the
# collector's first build. Prints `N passed, M failed`; exits non-zero when any check failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${KUBECONFIG:-}" ] || [ -z "${REDIS_URL:-}" ] || [ -z "${CRANE_REDIS_PASSWORD_FILE:-}" ]; then
  eval "$("$root/e2e/cluster/env.sh")"
fi
. "$root/e2e/tests/lib.sh"
ns=crane-e2e-tel-$$
work=$(mktemp -d)
bin=${CRANE_BIN_DIR:-$root/target/debug}
# Pods on the node reach servers on this machine at CRANE_HOST_IP (the host end of the node's
# veth); the servers listen on every address, so the operator (a process here) and Prometheus
# reach them too. Prometheus scrapes the worker pods at their pod IPs, which the host routes
# to the node.
host=${CRANE_HOST_IP:?CRANE_HOST_IP (this host as pods see it) is needed; see e2e/cluster/env.sh}
image=${CRANE_IMAGE:?CRANE_IMAGE (the crane image loaded into the node) is needed; see e2e/cluster/env.sh}
pids=()


cleanup() {
  delete_runs "$ns"
  operator_stop
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# ---- alert rules (no cluster needed) --------------------------------------------------------

if out=$(promtool check rules "$root/deploy/prometheus/crane-alerts.yaml" 2>&1); then
  pass "promtool check rules: deploy/prometheus/crane-alerts.yaml"
else
  fail "promtool check rules: deploy/prometheus/crane-alerts.yaml" "$out"
fi
if out=$(cd "$root/deploy/prometheus" && promtool test rules crane-alerts.test.yaml 2>&1); then
  pass "promtool test rules: every alert fires when it should and stays quiet otherwise"
else
  fail "promtool test rules" "$out"
fi

# ---- servers ------------------------------------------------------------------------------

# start NAME CMD...: starts a server in the background, its output in $work/NAME.log; waits
# for its "listening on HOST:PORT" line and sets PORT.
start() {
  local name=$1; shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  if ! wait_until 30 grep -q 'listening on' "$work/$name.log"; then
    fail "start $name" "$(tail -n 20 "$work/$name.log")"
    echo "$passed passed, $failed failed"; exit 1
  fi
  PORT=$(grep -m1 -o 'listening on [^ ]*' "$work/$name.log" | sed 's/.*://')
}

otelcol=$("$root/e2e/servers/otelcol.sh") || { fail "build the OpenTelemetry Collector"; echo "$passed passed, $failed failed"; exit 1; }
otlp_port=$(free_port)
cat >"$work/otelcol.yaml" <<EOF
receivers:
  otlp:
    protocols:
      http:
        endpoint: 0.0.0.0:$otlp_port
exporters:
  file:
    path: $work/spans.json
    flush_interval: 100ms
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [file]}
  telemetry:
    metrics: {level: none}
EOF
"$otelcol" --config "$work/otelcol.yaml" >"$work/otelcol.log" 2>&1 &
pids+=($!)
if ! wait_until 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$otlp_port"; then
  fail "start the collector" "$(tail -n 20 "$work/otelcol.log")"; echo "$passed passed, $failed failed"; exit 1
fi

start tool python3 "$root/e2e/servers/trace_echo.py" --listen 0.0.0.0:0 --log "$work/tool-requests.log" --fail-first
tool_port=$PORT
start llm "$bin/crane-fake-llm" --listen 0.0.0.0:0
llm_port=$PORT

# ---- operator: traced, workers serving metrics ----------------------------------------------

kubectl create namespace "$ns" >/dev/null
metrics_port=$(free_port)
worker_metrics_port=$(free_port)
export OTEL_EXPORTER_OTLP_ENDPOINT=http://$host:$otlp_port OTEL_BSP_SCHEDULE_DELAY=200
op_log=$work/operator.log
if ! operator_start "$op_log" --redis-url "$REDIS_URL" --executor-image "$image" \
  --metrics-addr "127.0.0.1:$metrics_port" --namespace "$ns" \
  --worker-metrics-port "$worker_metrics_port" \
  --llm-base-url "http://$host:$llm_port" --llm-model fake-small; then
  echo "$passed passed, $((failed + 1)) failed"; exit 1
fi
unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_BSP_SCHEDULE_DELAY

prom_port=$(free_port)
# Debian's Prometheus is built without Kubernetes service discovery, so the suite discovers
# the worker pods itself, through the API server as kubernetes_sd would (Running pods
# labelled crane-worker, their container port named `metrics`), and hands them to Prometheus
# in a file_sd file it rewrites every second.
workers_sd=$work/workers.json
echo '[]' >"$workers_sd"
discover_workers() {
  while :; do
    kubectl -n "$ns" get pods -l app.kubernetes.io/name=crane-worker -o json 2>/dev/null | python3 -c '
import json, sys
targets = []
for p in json.load(sys.stdin)["items"]:
    ip = p.get("status", {}).get("podIP")
    if p.get("status", {}).get("phase") != "Running" or not ip:
        continue
    for c in p["spec"]["containers"]:
        targets += ["%s:%d" % (ip, port["containerPort"]) for port in c.get("ports") or [] if port.get("name") == "metrics"]
print(json.dumps([{"targets": targets, "labels": {"namespace": sys.argv[1]}}] if targets else []))
' "$ns" >"$workers_sd.tmp" 2>/dev/null && mv "$workers_sd.tmp" "$workers_sd"
    sleep 1
  done
}
discover_workers &
pids+=($!)
cat >"$work/prometheus.yml" <<EOF
global: {scrape_interval: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: crane-operator
    static_configs: [{targets: ["127.0.0.1:$metrics_port"]}]
  - job_name: crane-workers
    file_sd_configs: [{files: ["$workers_sd"], refresh_interval: 1s}]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
prom=http://127.0.0.1:$prom_port
if ! wait_until 30 curl -fsS "$prom/-/ready"; then
  fail "start prometheus" "$(tail -n 20 "$work/prometheus.log")"
fi

# ---- runs ---------------------------------------------------------------------------------

kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: crane.dev/v1alpha1
kind: Tool
metadata: {name: echo}
spec:
  description: Answers with JSON and remembers the trace context it was called with.
  inputSchema: {type: object}
  http: {url: "http://$host:$tool_port/echo", timeoutSeconds: 5}
---
apiVersion: crane.dev/v1alpha1
kind: WorkerPool
metadata: {name: default}
spec: {maxWorkers: 1, concurrency: 4, idleTimeoutSeconds: 300}
EOF
wait_until 30 bash -c "[ \"\$(kubectl -n $ns get tool echo -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]" ||
  fail "the echo Tool becomes Ready" "$(kubectl -n "$ns" get tool echo -o yaml | sed -n '/^status:/,$p')"
kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: crane.dev/v1alpha1
kind: AgentRun
metadata: {name: steps}
spec:
  retry: {maxAttempts: 3, initialBackoffMs: 100, maxBackoffMs: 200}
  plan:
    steps:
      - {id: 1, tool: calculator, input: {expression: "20+22"}}
      - {id: 2, tool: echo, input: {value: "{step_1_output}"}, dependsOn: [1]}
      - {id: 3, tool: calculator, input: {expression: "2*21"}, dependsOn: [1]}
---
apiVersion: crane.dev/v1alpha1
kind: AgentRun
metadata: {name: planned}
spec:
  planner: {mode: llm}
  prompt: 'Compute it [plan calculator {"expression": "6*7"}]'
EOF
wait_until 120 terminal "$ns" steps
wait_until 120 terminal "$ns" planned
check "the plan run succeeds" Succeeded "$(ar_field "$ns" steps '{.status.phase}')" "$(tail -n 20 "$op_log")"
check "the LLM-planned run succeeds" "Succeeded llm" "$(ar_field "$ns" planned '{.status.phase} {.status.planSource}')" \
  "$(kubectl -n "$ns" get agentrun planned -o yaml | sed -n '/^status:/,$p')"
check "the echo step was retried once" 2 "$(ar_field "$ns" steps '{.status.steps[1].attempts}')"

# ---- traces -------------------------------------------------------------------------------

uids="$(ar_field "$ns" steps '{.metadata.uid}') $(ar_field "$ns" planned '{.metadata.uid}')"
attempts="$(ar_field "$ns" steps '{.status.steps[*].attempts}' | tr ' ' '+') $(ar_field "$ns" planned '{.status.steps[*].attempts}' | tr ' ' '+')"
# Spans come in batches (200 ms here); the roots are reported when the runs end.
roots_in() { [ "$(grep -o '"name":"agentrun"' "$work/spans.json" 2>/dev/null | wc -l)" -ge 2 ]; }
wait_until 30 roots_in || fail "both root spans reach the collector" "$(tail -c 2000 "$work/spans.json" 2>/dev/null)"
sleep 2 # the last worker and planner batches
python3 - "$work/spans.json" "$work/tool-requests.log" "$uids" "$attempts" >"$work/trace-checks" 2>&1 <<'PY'
import json, sys
spans_file, tool_log, uids, attempts = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
spans = []
for line in open(spans_file):
    line = line.strip()
    if not line:
        continue
    for rs in json.loads(line).get("resourceSpans", []):
        service = next((a["value"].get("stringValue") for a in rs.get("resource", {}).get("attributes", [])
                        if a["key"] == "service.name"), None)
        for ss in rs.get("scopeSpans", []):
            for s in ss.get("spans", []):
                s["service"] = service
                s["attrs"] = {a["key"]: next(iter(a["value"].values()), None) for a in s.get("attributes", [])}
                spans.append(s)
by_id = {s["spanId"]: s for s in spans}

def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else "\n     " + str(detail)[:1500]))

for run, uid, want in zip(["steps", "planned"], uids, attempts):
    trace = uid.replace("-", "")
    mine = [s for s in spans if s["traceId"] == trace]
    roots = [s for s in mine if not s.get("parentSpanId")]
    check(f"{run}: one trace (the run's uid) with one root span 'agentrun'",
          len(roots) == 1 and roots[0]["name"] == "agentrun", [(s["name"], s["service"]) for s in roots])
    if len(roots) != 1:
        continue
    root = roots[0]
    check(f"{run}: the root span names the run and its phase",
          root["attrs"].get("run") == run and root["attrs"].get("phase") == "Succeeded", root["attrs"])
    step_spans = [s for s in spans if s["name"].startswith("step ") and s["attrs"].get("run") == uid]
    check(f"{run}: one span per step attempt ({eval(want)}), each a child of the root",
          len(step_spans) == eval(want) and all(s["parentSpanId"] == root["spanId"] and s["traceId"] == trace for s in step_spans),
          [(s["name"], s["traceId"], s.get("parentSpanId")) for s in step_spans])
    check(f"{run}: attempt spans carry run, namespace, step, tool, attempt and outcome",
          all(all(k in s["attrs"] for k in ("run", "namespace", "step", "tool", "attempt", "outcome")) for s in step_spans),
          [s["attrs"] for s in step_spans])
    tools = [s for s in mine if s["attrs"].get("gen_ai.operation.name") == "execute_tool"]
    check(f"{run}: an execute_tool span with gen_ai.tool.name inside every attempt",
          len(tools) == len(step_spans) and all(
              s["name"] == "execute_tool " + s["attrs"].get("gen_ai.tool.name", "?")
              and by_id.get(s.get("parentSpanId"), {}).get("name", "").startswith("step ") for s in tools),
          [(s["name"], s["attrs"]) for s in tools])
    if run == "steps":
        outcomes = sorted(s["attrs"].get("outcome") for s in step_spans if s["attrs"].get("tool") == "echo")
        check("steps: the echo step's attempts show the retry, then success",
              outcomes == ["retry_transient", "succeeded"], outcomes)
        failed = [s for s in tools if s["attrs"].get("error.type")]
        check("steps: the failed tool call has error.type and an error status",
              len(failed) == 1 and failed[0].get("status", {}).get("code") == 2, [(s["attrs"], s.get("status")) for s in failed])
        try:
            seen = [json.loads(l) for l in open(tool_log) if l.strip()]
        except FileNotFoundError:  # the tool server was never called
            seen = []
        ids = {s["spanId"] for s in tools}
        parents = [r["traceparent"] or "" for r in seen]
        check("steps: the tool server saw the run's trace id in traceparent, from the tool spans",
              len(seen) == 2 and all(p.split("-")[1:2] == [trace] and p.split("-")[2] in ids for p in parents), parents)
    if run == "planned":
        plans = [s for s in mine if s["name"] == "plan"]
        check("planned: the planner's span (service crane-planner) is a child of the root",
              len(plans) == 1 and plans[0]["parentSpanId"] == root["spanId"] and plans[0]["service"] == "crane-planner",
              [(s["parentSpanId"], s["service"]) for s in plans])
        chats = [s for s in mine if s["attrs"].get("gen_ai.operation.name") == "chat"]
        want_attrs = ("gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
                      "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.response.finish_reasons")
        check("planned: the model call is a 'chat fake-small' client span with the GenAI attributes, under the planner's span",
              len(chats) == 1 and chats[0]["name"] == "chat fake-small" and chats[0].get("kind") == 3
              and all(k in chats[0]["attrs"] for k in want_attrs)
              and chats[0]["attrs"]["gen_ai.request.model"] == "fake-small"
              and plans and chats[0]["parentSpanId"] == plans[0]["spanId"],
              [(s["name"], s.get("kind"), s["attrs"]) for s in chats])
        check("planned: no prompt text on spans unless enabled",
              not any("gen_ai.input.messages" in s["attrs"] for s in chats))
PY
while IFS= read -r line; do
  case "$line" in
    "ok   "*) pass "${line#ok   }" ;;
    "FAIL "*) fail "${line#FAIL }" ;;
    "     "*) echo "$line" ;;
    *) fail "trace checks" "$line" ;;
  esac
done <"$work/trace-checks"

# Workers log nothing inside a step span at the default level (a line per step would cost
# throughput), so the lines checked are the operator's: those of a run's reconciles name the
# run's trace.
if grep -q '"trace_id":"'"$(ar_field "$ns" steps '{.metadata.uid}' | tr -d -)"'","span_id":"[0-9a-f]\{16\}"' "$op_log"; then
  pass "operator log lines about a run carry its trace_id and a span_id"
else
  fail "operator log lines about a run carry its trace_id and a span_id" "$(grep -m3 trace_id "$op_log")"
fi

# ---- metrics: every dashboard query returns data --------------------------------------------

targets_up() {
  curl -fsS "$prom/api/v1/targets" | python3 -c '
import json, sys
jobs = {t["labels"]["job"] for t in json.load(sys.stdin)["data"]["activeTargets"] if t["health"] == "up"}
sys.exit(0 if {"crane-operator", "crane-workers"} <= jobs else 1)'
}
wait_until 60 targets_up && pass "prometheus scrapes the operator and the worker pods" ||
  fail "prometheus scrapes the operator and the worker pods" "$(curl -fsS "$prom/api/v1/targets" | head -c 1500)"
python3 - "$root/deploy/grafana/crane-dashboard.json" >"$work/queries" <<'PY'
import json, sys
def walk(panels):
    for p in panels:
        yield from walk(p.get("panels", []))
        for t in p.get("targets", []):
            if t.get("expr"):
                print(p["title"] + "\t" + t["expr"].replace("$__rate_interval", "1m"))
walk_list = list(walk(json.load(open(sys.argv[1]))["panels"]))
PY
empty_queries() {
  local title expr n missing=""
  while IFS=$'\t' read -r title expr; do
    n=$(curl -fsS "$prom/api/v1/query" --data-urlencode "query=$expr" |
      python3 -c 'import json,sys; print(len(json.load(sys.stdin)["data"]["result"]))' 2>/dev/null)
    [ "${n:-0}" -gt 0 ] || missing+="$title: $expr"$'\n'
  done <"$work/queries"
  printf '%s' "$missing"
}
# Rates need two scrapes of a series inside the window.
deadline=$((SECONDS + 60))
until missing=$(empty_queries); [ -z "$missing" ] || [ "$SECONDS" -ge "$deadline" ]; do sleep 2; done
check "every dashboard panel's query ($(wc -l <"$work/queries") of them) returns data" "" "$missing"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
