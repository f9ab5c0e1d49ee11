#!/usr/bin/env bash
# How people install Crane, checked against the local cluster: the Helm chart (lint, schema,
# server-side dry run, and a real `helm install` with the chart's defaults and the local image:
# two operator replicas behind probes and leader election, the bundled Redis with its password
# and AOF, a sample AgentRun run to Succeeded in the release namespace and in a run namespace),
# config/default through kustomize, the Pod Security `restricted` hardening of every rendered
# workload and of the running pods, the RBAC kept identical in chart and config/rbac, and the
# Argo CD health checks. Every name it creates is its own (namespace, release, kustomize prefix),
# so it does not depend on what else is installed. One function per test;
# `e2e/tests/chart.sh t_helm` runs the tests whose name starts with t_helm. Prints
# `N passed, M failed`; exits non-zero when any check failed. Uses $KUBECONFIG when set, else
# the local cluster's (e2e/cluster/env.sh).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ -z "${KUBECONFIG:-}" ] || [ -z "${CRANE_IMAGE:-}" ]; then
  eval "$("$root/e2e/cluster/env.sh")" || { echo "chart.sh: no local cluster (make cluster-up)"; echo "0 passed, 1 failed"; exit 1; }
fi
chart=$root/charts/crane
ns=crane-chart-$$
release=chart$$
fullname=$release-crane
passed=0 failed=0
work=$(mktemp -d "${TMPDIR:-/tmp}/crane-chart.XXXXXX")

cleanup() {
  helm uninstall "$release" -n "$ns" --wait --timeout 60s >/dev/null 2>&1 || true
  kubectl delete namespace "$ns" "$ns-runs" "$ns-kustomize" --wait=false >/dev/null 2>&1 || true
  kubectl delete pv "local-$ns-data-$fullname-redis-0" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The dry runs of WorkerPools and AgentRuns need the CRDs, as `helm install` would put them.
kubectl apply --server-side --force-conflicts -f "$chart/crds/" >/dev/null &&
  kubectl wait --for=condition=Established --timeout=60s crd/agentruns.crane.dev crd/workerpools.crane.dev crd/tools.crane.dev crd/mcpservers.crane.dev crd/models.crane.dev crd/approvals.crane.dev >/dev/null ||
  echo "chart.sh: could not apply charts/crane/crds/" >&2

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/     /' <<<"$2" | head -n 40; return 0; }
# check NAME WANT GOT
check() { if [ "$3" = "$2" ]; then pass "$1"; else fail "$1 (got '$3', want '$2')"; fi; }

# The chart's defaults except: the image built from this work tree, a run namespace, and an
# operator watching only this test's namespaces (other suites run operators on this cluster).
local_values() {
  cat <<VALUES
image: {repository: "${CRANE_IMAGE%:*}", tag: "${CRANE_IMAGE##*:}"}
runNamespaces: [$ns-runs]
operator:
  watchNamespaces: [$ns, $ns-runs]
  logLevel: "info,crane_operator=debug"
VALUES
}

# Variants of the chart's values that must all render, lint and pass the server's dry run.
variants() { echo default external llm-runns-monitor; }
variant_args() {
  case $1 in
    default) ;;
    external) echo "--set redis.bundled=false --set redis.external.url=redis://redis.example:6379 --set redis.external.passwordSecret.name=redis-auth" ;;
    llm-runns-monitor) echo "--set runNamespaces={$ns-runs} --set llm.baseUrl=https://llm.example/v1 --set llm.model=m --set llm.apiKey=sk-test --set networkPolicy.llm.cidrs={203.0.113.0/24} --set metrics.serviceMonitor.enabled=true" ;;
  esac
}

# The hardening check: reads manifests (YAML, many documents) on stdin, prints one line per
# violation of Pod Security `restricted` as this project states it, exits 1 on any.
harden() {
  python3 -c '
import sys, yaml
bad = []
def pod_specs(d):
    k, s = d.get("kind"), d.get("spec") or {}
    if k == "Pod": yield s
    elif k in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        yield (s.get("template") or {}).get("spec") or {}
    elif k == "CronJob":
        yield ((((s.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")) or {}
n = 0
docs = []
for d in yaml.safe_load_all(sys.stdin):
    if isinstance(d, dict): docs.extend(d.get("items") or [] if d.get("kind", "").endswith("List") else [d])
for d in docs:
    for p in pod_specs(d):
        n += 1
        where = "%s/%s" % (d.get("kind"), (d.get("metadata") or {}).get("name"))
        psc = p.get("securityContext") or {}
        for f in ("hostNetwork", "hostPID", "hostIPC"):
            if p.get(f): bad.append("%s: %s" % (where, f))
        cs = (p.get("initContainers") or []) + (p.get("containers") or [])
        if not cs: bad.append("%s: no containers" % where)
        for c in cs:
            w = "%s container %s" % (where, c.get("name"))
            sc = c.get("securityContext") or {}
            eff = lambda key: sc.get(key, psc.get(key))
            if eff("runAsNonRoot") is not True: bad.append(w + ": runAsNonRoot is not true")
            if eff("runAsUser") == 0: bad.append(w + ": runAsUser 0")
            if sc.get("readOnlyRootFilesystem") is not True: bad.append(w + ": readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False: bad.append(w + ": allowPrivilegeEscalation is not false")
            if sc.get("privileged"): bad.append(w + ": privileged")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []): bad.append(w + ": capabilities.drop lacks ALL")
            if ((sc.get("capabilities") or {}).get("add")): bad.append(w + ": capabilities.add")
            if ((eff("seccompProfile") or {}).get("type")) != "RuntimeDefault": bad.append(w + ": seccompProfile is not RuntimeDefault")
if n == 0: bad.append("no pod templates found")
print("\n".join(bad))
sys.exit(1 if bad else 0)
'
}

t_helm_lint() {
  local v out
  for v in $(variants); do
    # shellcheck disable=SC2046
    if out=$(helm lint --strict "$chart" $(variant_args "$v") 2>&1); then pass "helm lint --strict ($v)"
    else fail "helm lint --strict ($v)" "$out"; fi
  done
}

t_helm_schema_rejects_hostile_values() {
  local set want out
  while IFS='|' read -r set want; do
    if out=$(helm template x "$chart" --set "$set" 2>&1); then
      fail "values $set accepted"
    elif grep -qF -- "$want" <<<"$out"; then pass "values $set rejected"
    else fail "values $set rejected without naming $want" "$out"; fi
  done <<'CASES'
operator.replicas=6|/operator/replicas
operator.leaderElection.leaseDurationSeconds=1|/operator/leaderElection/leaseDurationSeconds
operator.replicas=-1|/operator/replicas
workerPool.name=Bad_Name|/workerPool/name
runNamespaces[0]=../etc|/runNamespaces/0
operator.watchNamespaces[0]=a b|/operator/watchNamespaces/0
redis.external.url=http://x|/redis/external/url
llm.baseUrl=file:///etc/passwd|/llm/baseUrl
llm.existingSecret=a/b|/llm/existingSecret
networkPolicy.llm.cidrs[0]=0.0.0.0/0; rm -rf|/networkPolicy/llm/cidrs/0
operator.metricsPort=70000|/operator/metricsPort
image.pullPolicy=Sometimes|/image/pullPolicy
surprise=1|additional properties 'surprise' not allowed
CASES
  if out=$(helm template x "$chart" --set redis.bundled=false 2>&1); then
    fail "external Redis without a URL renders"
  elif grep -qF "redis.external.url is required" <<<"$out"; then pass "external Redis without a URL is refused"
  else fail "external Redis without a URL: wrong message" "$out"; fi
}

t_helm_template_dry_run_server() {
  local v out
  kubectl create namespace "$ns" >/dev/null 2>&1
  kubectl create namespace "$ns-runs" >/dev/null 2>&1
  for v in $(variants); do
    # shellcheck disable=SC2046
    if ! out=$(helm template "$release" "$chart" -n "$ns" $(variant_args "$v") 2>&1 >"$work/$v.yaml"); then
      fail "helm template ($v)" "$out"; continue
    fi
    if [ "$v" = llm-runns-monitor ] && ! kubectl get crd servicemonitors.monitoring.coreos.com >/dev/null 2>&1; then
      # No Prometheus Operator here: check the rest server-side, its kinds (ServiceMonitor,
      # PodMonitor, PrometheusRule) by kind only.
      grep -q '^kind: ServiceMonitor' "$work/$v.yaml" || { fail "ServiceMonitor not rendered"; continue; }
      python3 -c 'import sys,yaml; print("---\n".join(yaml.safe_dump(d) for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("apiVersion")!="monitoring.coreos.com/v1"))' \
        "$work/$v.yaml" >"$work/$v.server.yaml"
    else
      cp "$work/$v.yaml" "$work/$v.server.yaml"
    fi
    if out=$(kubectl apply --dry-run=server -f "$work/$v.server.yaml" 2>&1); then
      pass "helm template | kubectl apply --dry-run=server ($v)"
    else fail "helm template | kubectl apply --dry-run=server ($v)" "$out"; fi
  done
}

t_kustomize_dry_run_server() {
  local out
  if ! kubectl kustomize "$root/config/default" >"$work/kustomize.yaml" 2>"$work/err"; then
    fail "kubectl kustomize config/default" "$(cat "$work/err")"; return
  fi
  # The dry run goes through an overlay with a namespace and a name prefix of this test's own
  # (kustomize leaves the CRDs' names alone): an install of Crane already on the cluster, such
  # as `make demo`'s Helm release in crane-system, must not be what the result depends on.
  mkdir -p "$work/overlay"
  cat >"$work/overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: $ns-kustomize
namePrefix: k$$-
resources: [$(python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$root/config/default" "$work/overlay")]
YAML
  if ! kubectl kustomize --load-restrictor=LoadRestrictionsNone "$work/overlay" >"$work/kustomize-private.yaml" 2>"$work/err"; then
    fail "kubectl kustomize (private overlay of config/default)" "$(cat "$work/err")"; return
  fi
  # Namespaced objects need their namespace to exist even in a dry run.
  kubectl create namespace "$ns-kustomize" >/dev/null 2>&1
  if out=$(kubectl apply --dry-run=server -f "$work/kustomize-private.yaml" 2>&1); then
    pass "kubectl kustomize config/default | kubectl apply --dry-run=server"
  else fail "kubectl kustomize config/default | kubectl apply --dry-run=server" "$out"; fi
  local sample
  kubectl create namespace "$ns-runs" >/dev/null 2>&1
  for sample in "$root"/config/samples/*.yaml "$root"/config/samples/*/*.yaml; do
    if out=$(kubectl apply --dry-run=server -n "$ns-runs" -f "$sample" 2>&1); then pass "sample ${sample#"$root"/config/samples/} is accepted"
    else fail "sample ${sample#"$root"/config/samples/} is rejected" "$out"; fi
  done
}

t_hardening() {
  local v out
  # The checker itself must catch a weak pod, or its passes mean nothing.
  if out=$(printf 'kind: Deployment\nmetadata: {name: weak}\nspec:\n  template:\n    spec:\n      containers:\n      - {name: c, securityContext: {runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, seccompProfile: {type: RuntimeDefault}}}\n' | harden) ||
     ! grep -q 'capabilities.drop lacks ALL' <<<"$out"; then
    fail "hardening check catches a container that keeps its capabilities" "$out"
  else pass "hardening check catches a container that keeps its capabilities"; fi
  for v in $(variants); do
    helm template "$release" "$chart" -n "$ns" $(variant_args "$v") >"$work/h-$v.yaml" 2>/dev/null
    if out=$(harden <"$work/h-$v.yaml"); then pass "chart workloads are restricted ($v)"
    else fail "chart workloads are restricted ($v)" "$out"; fi
  done
  helm template "$release" "$chart" -n "$ns" --set redis.persistence.enabled=false >"$work/h-emptydir.yaml" 2>/dev/null
  if out=$(harden <"$work/h-emptydir.yaml"); then pass "chart workloads are restricted (Redis without persistence)"
  else fail "chart workloads are restricted (Redis without persistence)" "$out"; fi
  if out=$(kubectl kustomize "$root/config/default" | harden); then pass "config/default workloads are restricted"
  else fail "config/default workloads are restricted" "$out"; fi
}

t_rbac_same_in_chart_and_config() {
  local out
  helm template "$release" "$chart" -n "$ns" >"$work/rbac.yaml" 2>/dev/null
  if out=$(python3 - "$work/rbac.yaml" "$root/config/rbac/role.yaml" <<'PY'
import sys, yaml
def rules(path):
    for d in yaml.safe_load_all(open(path)):
        if d and d.get("kind") == "ClusterRole":
            return d["rules"]
    sys.exit("no ClusterRole in " + path)
a, b = rules(sys.argv[1]), rules(sys.argv[2])
if a != b:
    print("chart:  ", a); print("config: ", b); sys.exit(1)
flat = [(g, r, v) for x in a for g in x["apiGroups"] for r in x["resources"] for v in x["verbs"]]
assert not [f for f in flat if "*" in f], "wildcard in rules"
# Secrets: the namespaces' crane-redis logins are written, never deleted; pods only listed.
bad = [f for f in flat if (f[1] == "secrets" and f[2] not in ("get", "list", "watch", "create", "update", "patch"))
       or (f[1] == "pods" and f[2] != "list") or f[1].startswith("pods/")]
assert not bad, "more than the operator needs on Secrets or Pods: %s" % bad
PY
  ); then pass "chart ClusterRole rules == config/rbac/role.yaml, no wildcard, Secrets never deleted, Pods only listed"
  else fail "chart ClusterRole rules differ from config/rbac/role.yaml" "$out"; fi
}

t_crds_in_chart_are_generated() {
  local f ok=1
  for f in "$root"/crds/*.yaml; do
    cmp -s "$f" "$chart/crds/$(basename "$f")" || ok=0
  done
  [ "$(ls "$chart"/crds/*.yaml | wc -l)" = "$(ls "$root"/crds/*.yaml | wc -l)" ] || ok=0
  if [ $ok = 1 ]; then pass "charts/crane/crds/ is the generated crds/"; else fail "charts/crane/crds/ differs from crds/ (make crds)"; fi
}

t_argocd_health() {
  local out
  if ! command -v lua5.4 >/dev/null; then fail "Argo CD health: lua5.4 missing (apt-get install -y lua5.4)"; return; fi
  if out=$(lua5.4 "$root/deploy/argocd/health_test.lua" 2>&1); then pass "Argo CD health checks ($(tail -n 1 <<<"$out"))"
  else fail "Argo CD health checks" "$out"; fi
  if out=$("$root/deploy/argocd/gen-patch.sh" --check 2>&1); then pass "argocd-cm-patch.yaml matches the .lua files"
  else fail "argocd-cm-patch.yaml is stale" "$out"; fi
}

# wait_phase NS NAME SECONDS: prints the AgentRun's phase once terminal (or the last one seen).
wait_phase() {
  local phase="" deadline=$((SECONDS + $3))
  while [ "$SECONDS" -lt "$deadline" ]; do
    phase=$(kubectl -n "$1" get agentrun "$2" -o jsonpath='{.status.phase}' 2>/dev/null)
    case $phase in Succeeded | Failed | Cancelled) break ;; esac
    sleep 1
  done
  echo "$phase"
}

# in_ns_restricted NS...: namespaces as `make up` makes them, Pod Security restricted enforced.
in_ns_restricted() {
  local n
  for n in "$@"; do
    kubectl create namespace "$n" >/dev/null 2>&1
    kubectl label --overwrite namespace "$n" pod-security.kubernetes.io/enforce=restricted >/dev/null
  done
}

t_helm_install_runs_a_sample() {
  local out phase result ip
  in_ns_restricted "$ns" "$ns-runs"
  "$root/e2e/cluster/pv.sh" "$ns" "data-$fullname-redis-0" || { fail "a volume for the bundled Redis"; return; }
  local_values >"$work/local-values.yaml"
  if ! out=$(helm install "$release" "$chart" -n "$ns" -f "$work/local-values.yaml" --wait --timeout 180s 2>&1); then
    fail "helm install" "$out$(kubectl -n "$ns" get pods 2>&1)"; return
  fi
  pass "helm install (CRDs, operator, RBAC, bundled Redis, default WorkerPools)"
  grep -q "rollout status" <<<"$out" && pass "NOTES.txt tells what to run next" || fail "NOTES.txt missing from install output" "$out"
  check "operator: both replicas Ready (readiness probe on /readyz)" 2 \
    "$(kubectl -n "$ns" get deployment "$fullname-operator" -o jsonpath='{.status.readyReplicas}')"
  ip=$(kubectl -n "$ns" get service "$fullname-operator-metrics" -o jsonpath='{.spec.clusterIP}')
  check "operator: /readyz through its metrics Service" ok "$(curl -fsS -m 5 "http://$ip:8080/readyz" 2>&1)"
  local holder; holder=$(kubectl -n "$ns" get lease crane-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null)
  if [ -n "$holder" ] && kubectl -n "$ns" get pod "$holder" >/dev/null 2>&1; then pass "operator: one replica leads (Lease held by pod $holder)"
  else fail "operator: one replica leads (Lease holder '$holder')"; fi
  for n in "$ns" "$ns-runs"; do
    if out=$(kubectl -n "$n" wait --for=condition=Ready workerpool/default --timeout=60s 2>&1); then pass "WorkerPool default is Ready in $n"
    else fail "WorkerPool default is Ready in $n" "$out$(kubectl -n "$n" get workerpool default -o yaml 2>&1 | tail -n 20)"; fi
  done
  for f in crane_v1alpha1_agentrun_plan crane_v1alpha1_agentrun_prompt; do
    kubectl -n "$ns" apply -f "$root/config/samples/$f.yaml" >/dev/null || fail "apply $f"
  done
  # A run namespace needs nothing but the chart's runNamespaces: no pool of its own to create.
  kubectl -n "$ns-runs" apply -f "$root/config/samples/crane_v1alpha1_agentrun_plan.yaml" >/dev/null || fail "apply in $ns-runs"
  phase=$(wait_phase "$ns" sums 180)
  result=$(kubectl -n "$ns" get agentrun sums -o jsonpath='{.status.result}' 2>/dev/null)
  if [ "$phase" = Succeeded ] && [ "$result" = 312 ]; then pass "sample plan run Succeeded with result 312"
  else fail "sample plan run: phase '$phase', result '$result' (want Succeeded, 312)" "$(kubectl -n "$ns" get agentrun sums -o yaml 2>&1 | tail -n 30)"; fi
  phase=$(wait_phase "$ns" milk 180)
  result=$(kubectl -n "$ns" get agentrun milk -o jsonpath='{.status.result}' 2>/dev/null)
  if [ "$phase" = Succeeded ] && grep -q 'Buy milk' <<<"$result"; then pass "sample prompt run Succeeded and lists 'Buy milk'"
  else fail "sample prompt run: phase '$phase', result '$result'" "$(kubectl -n "$ns" get agentrun milk -o yaml 2>&1 | tail -n 30)"; fi
  phase=$(wait_phase "$ns-runs" sums 180)
  if [ "$phase" = Succeeded ]; then pass "a run in a runNamespace Succeeded on the chart's WorkerPool there"
  else fail "a run in a runNamespace: phase '$phase'" "$(kubectl -n "$ns-runs" get agentrun sums -o yaml 2>&1 | tail -n 20)"; fi
  # Re-applying an unchanged run does nothing: no write at all (kubectl may still print
  # "configured": client-side apply replaces the steps list, whose defaults the server adds).
  local rv_before rv_after
  rv_before=$(kubectl -n "$ns" get agentrun sums -o jsonpath='{.metadata.resourceVersion}/{.metadata.generation}/{.status.finishedAt}')
  out=$(kubectl -n "$ns" apply -f "$root/config/samples/crane_v1alpha1_agentrun_plan.yaml" 2>&1)
  sleep 2
  rv_after=$(kubectl -n "$ns" get agentrun sums -o jsonpath='{.metadata.resourceVersion}/{.metadata.generation}/{.status.finishedAt}')
  if [ -n "$rv_before" ] && [ "$rv_before" = "$rv_after" ] && [ "$(kubectl -n "$ns" get agentrun sums -o jsonpath='{.status.phase}')" = Succeeded ]; then
    pass "re-applying an unchanged AgentRun writes nothing and does not run it again"
  else fail "re-applying an unchanged AgentRun changed it ($rv_before -> $rv_after)" "$out"; fi
  # The Jobs the operator built: no token, restricted; the pods that ran: admitted under the
  # namespace's enforced `restricted` and running with it.
  kubectl -n "$ns" get jobs -o yaml >"$work/jobs.yaml" 2>/dev/null
  if ! grep -q 'kind: Job' "$work/jobs.yaml"; then fail "no planner or worker Jobs found"
  elif out=$(harden <"$work/jobs.yaml") && ! grep -q 'automountServiceAccountToken: true' "$work/jobs.yaml" &&
     [ "$(grep -c 'automountServiceAccountToken: false' "$work/jobs.yaml")" -ge 2 ]; then
    pass "planner and worker Jobs: no service-account token, restricted"
  else fail "planner and worker Jobs are not hardened" "$out"; fi
  kubectl -n "$ns" get pods -o yaml >"$work/pods.yaml" 2>/dev/null
  if out=$(harden <"$work/pods.yaml"); then pass "every pod of the release runs restricted ($(grep -c '^  kind: Pod' "$work/pods.yaml") pods)"
  else fail "pods of the release are not restricted" "$out"; fi
  # kubectl logs: the operator's JSON lines, a planner's plan, a worker's step lines.
  local log
  log=$(kubectl -n "$ns" logs "deployment/$fullname-operator" 2>/dev/null | head -n 1)
  jq -e .timestamp <<<"$log" >/dev/null 2>&1 && pass "kubectl logs of the operator: JSON lines" || fail "kubectl logs of the operator" "$log"
  log=$(kubectl -n "$ns" logs job/milk-planner 2>&1)
  grep -q '"steps"' <<<"$log" && pass "kubectl logs of the planner: the plan" || fail "kubectl logs of the planner" "$log"
  log=$(kubectl -n "$ns" logs -l app.kubernetes.io/name=crane-worker --tail=-1 2>&1)
  grep -q '"run finished"' <<<"$log" && pass "kubectl logs of a worker: its runs" || fail "kubectl logs of a worker" "$log"
}

# The bundled Redis as it runs: the Secret's password required, AOF with fsync every second on
# its volume, the password in no process's command line (the host sees containers' processes).
t_bundled_redis() {
  local ip password out
  ip=$(kubectl -n "$ns" get service "$fullname-redis" -o jsonpath='{.spec.clusterIP}' 2>/dev/null)
  password=$(kubectl -n "$ns" get secret "$fullname-redis-admin" -o jsonpath='{.data.password}' 2>/dev/null | base64 -d)
  [ -n "$ip" ] && [ -n "$password" ] || { fail "bundled Redis: Service and Secret" "ip '$ip'"; return; }
  out=$(redis-cli -h "$ip" ping 2>&1)
  if grep -q NOAUTH <<<"$out"; then pass "bundled Redis refuses clients without the password"
  else fail "bundled Redis answers without the password" "$out"; fi
  out=$(REDISCLI_AUTH=$password redis-cli -h "$ip" config get appendonly appendfsync 2>&1 | tr '\n' ' ')
  if [ "$out" = "appendonly yes appendfsync everysec " ] || [ "$out" = "appendfsync everysec appendonly yes " ]; then
    pass "bundled Redis: AOF on, fsync everysec"
  else fail "bundled Redis persistence settings" "$out"; fi
  check "bundled Redis: its data on the PersistentVolume" Bound \
    "$(kubectl -n "$ns" get pvc "data-$fullname-redis-0" -o jsonpath='{.status.phase}' 2>&1)"
  if grep -rqaF -- "$password" /proc/[0-9]*/cmdline 2>/dev/null; then fail "the Redis password shows in a command line"
  else pass "the Redis password is in no command line"; fi
}

t_helm_uninstall() {
  local out
  if out=$(helm uninstall "$release" -n "$ns" --wait --timeout 60s 2>&1); then pass "helm uninstall"
  else fail "helm uninstall" "$out"; return; fi
  gone() { [ -z "$(kubectl -n "$ns" get pods -l app.kubernetes.io/component=operator -o name 2>/dev/null)" ]; }
  local deadline=$((SECONDS + 60))
  until gone || [ "$SECONDS" -ge "$deadline" ]; do sleep 1; done
  if gone; then pass "the operator pods are gone after helm uninstall"
  else fail "operator pods still there after helm uninstall" "$(kubectl -n "$ns" get pods 2>&1)"; fi
}

tests=(t_helm_lint t_helm_schema_rejects_hostile_values t_helm_template_dry_run_server
  t_kustomize_dry_run_server t_hardening t_rbac_same_in_chart_and_config
  t_crds_in_chart_are_generated t_argocd_health t_helm_install_runs_a_sample t_bundled_redis t_helm_uninstall)
for t in "${tests[@]}"; do
  case $t in "${1:-t_}"*) echo "-- $t"; "$t" ;; esac
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
