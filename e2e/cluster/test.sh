#!/usr/bin/env bash
# Control-plane tests against the real local cluster (bash + kubectl). Brings the cluster up
# when it is not running and takes it down at the end if it started it. Each test is a
# function t_*; each runs in its own namespace. Ends with the line `N passed, M failed`.
#   e2e/cluster/test.sh            # all tests
#   e2e/cluster/test.sh t_rbac     # only tests whose name starts with t_rbac
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

started=0
if ! { load_ports && pid_alive kube-apiserver && pid_alive crane-proc-kubelet; }; then
  "$here/up.sh" || { echo "0 passed, 1 failed"; exit 1; }
  started=1
fi
load_ports
export KUBECONFIG=$state/kubeconfig
run_id=$RANDOM

# ---- helpers ------------------------------------------------------------------------------
# fail MSG: record a failed assertion; the test fails even if later commands succeed.
failures=0
fail() { echo "    FAIL: $*" >&2; failures=$((failures + 1)); return 1; }

# eventually SECONDS CMD...: retry CMD until it succeeds or SECONDS pass.
eventually() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.3
  done
}

# mkns NAME: a fresh namespace whose default ServiceAccount exists (pods need it).
mkns() {
  kubectl create namespace "$1" >/dev/null || return 1
  eventually 30 kubectl get serviceaccount default -n "$1" || fail "no default ServiceAccount in $1"
}

# job NS NAME BACKOFF SCRIPT [EXTRA_CONTAINER_YAML]: a busybox Job running `sh -c SCRIPT`.
job() {
  local ns=$1 name=$2 backoff=$3 script=$4 extra=${5:-}
  kubectl apply -n "$ns" -f - >/dev/null <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: $name}
spec:
  backoffLimit: $backoff
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 5
      containers:
      - name: main
        image: busybox
        command: [sh, -c, $(printf '%s' "$script" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))' 2>/dev/null || printf '"%s"' "$script")]
$extra
YAML
}

pod_of() { kubectl get pods -n "$1" -l "job-name=$2" -o 'jsonpath={.items[0].metadata.name}' 2>/dev/null; }

# pgid_of NS POD: the process group the kubelet recorded for the pod's main container.
pgid_of() { cat "$state/pods/$1_$2/main.pid" 2>/dev/null; }
group_gone() { ! group_running "$1"; }

# ---- tests --------------------------------------------------------------------------------
t_readyz() {
  [ "$(kubectl get --raw /readyz)" = ok ] || fail "/readyz did not answer ok"
}

t_job_exit_0_completes() {
  local ns=t-ok-$run_id
  mkns "$ns" || return 1
  job "$ns" ok 0 'echo hello from $(HOSTNAME); exit 0' || return 1
  kubectl wait -n "$ns" --for=condition=complete job/ok --timeout=60s >/dev/null || fail "job did not complete"
  local pod; pod=$(pod_of "$ns" ok)
  grep -q "hello from" "$state/pods/${ns}_$pod/main.log" || fail "pod log file lacks the output"
  local code
  code=$(kubectl get pod -n "$ns" "$pod" -o 'jsonpath={.status.containerStatuses[0].state.terminated.exitCode}')
  [ "$code" = 0 ] || fail "exitCode $code, want 0"
}

t_job_exit_3_fails() {
  local ns=t-fail-$run_id
  mkns "$ns" || return 1
  job "$ns" bad 0 'exit 3' || return 1
  kubectl wait -n "$ns" --for=condition=failed job/bad --timeout=60s >/dev/null || fail "job did not fail"
  local pod code phase
  pod=$(pod_of "$ns" bad)
  code=$(kubectl get pod -n "$ns" "$pod" -o 'jsonpath={.status.containerStatuses[0].state.terminated.exitCode}')
  phase=$(kubectl get pod -n "$ns" "$pod" -o 'jsonpath={.status.phase}')
  [ "$code" = 3 ] || fail "exitCode $code, want 3"
  [ "$phase" = Failed ] || fail "phase $phase, want Failed"
  [ "$(kubectl get job -n "$ns" bad -o 'jsonpath={.status.failed}')" = 1 ] || fail "job retried despite backoffLimit 0"
}

t_env_from_secret() {
  local ns=t-env-$run_id
  mkns "$ns" || return 1
  kubectl create secret generic creds -n "$ns" --from-literal=token='s3cr3t value' --from-literal=USER=crane >/dev/null
  kubectl create configmap cfg -n "$ns" --from-literal=mode=fast >/dev/null
  job "$ns" env 0 '[ "$TOKEN" = "s3cr3t value" ] && [ "$S_USER" = crane ] && [ "$MODE" = fast ] && [ "$GREETING" = "token=s3cr3t value" ] && echo env-ok' \
'        env:
        - {name: TOKEN, valueFrom: {secretKeyRef: {name: creds, key: token}}}
        - {name: MODE, valueFrom: {configMapKeyRef: {name: cfg, key: mode}}}
        - {name: GREETING, value: "token=$(TOKEN)"}
        envFrom:
        - {prefix: S_, secretRef: {name: creds}}' || return 1
  kubectl wait -n "$ns" --for=condition=complete job/env --timeout=60s >/dev/null || fail "the process did not see the Secret's values"
  grep -q env-ok "$state/pods/${ns}_$(pod_of "$ns" env)/main.log" || fail "no env-ok in the log"
}

t_delete_job_kills_process() {
  local ns=t-del-$run_id
  mkns "$ns" || return 1
  job "$ns" sleeper 0 'trap "" TERM; sleep 1000 & wait; sleep 1000' || return 1
  local pod pgid
  eventually 60 bash -c "[ -n \"\$(kubectl get pods -n $ns -l job-name=sleeper -o jsonpath='{.items[?(@.status.phase==\"Running\")].metadata.name}')\" ]" \
    || fail "pod never ran" || return 1
  pod=$(pod_of "$ns" sleeper)
  pgid=$(pgid_of "$ns" "$pod")
  [ -n "$pgid" ] && group_running "$pgid" || fail "no live process group recorded for $pod" || return 1
  kubectl delete job -n "$ns" sleeper --wait=true --timeout=60s >/dev/null || fail "job deletion failed" || return 1
  # The process ignores SIGTERM: it must be SIGKILLed after the 5 s grace period.
  eventually 30 group_gone "$pgid" || fail "process group $pgid still alive after deleting the Job" || return 1
  eventually 30 bash -c "[ -z \"\$(kubectl get pods -n $ns -o name)\" ]" || fail "pod object not removed"
}

t_namespace_deletion() {
  local ns=t-ns-$run_id
  mkns "$ns" || return 1
  kubectl create configmap c -n "$ns" --from-literal=a=b >/dev/null
  job "$ns" sleeper 0 'sleep 1000' || return 1
  eventually 60 bash -c "[ -n \"\$(cat $state/pods/${ns}_*/main.pid 2>/dev/null)\" ]" || fail "pod never started" || return 1
  local pgid; pgid=$(cat "$state"/pods/"${ns}"_*/main.pid)
  kubectl delete namespace "$ns" --wait=true --timeout=90s >/dev/null || fail "namespace deletion did not finish" || return 1
  kubectl get namespace "$ns" >/dev/null 2>&1 && fail "namespace still exists"
  group_gone "$pgid" || fail "pod process survived its namespace"
}

t_crd_cel_rule_rejects() {
  local crd=widgets.test.crane.dev ns=t-crd-$run_id
  mkns "$ns" || return 1
  kubectl apply -f - >/dev/null <<'YAML' || return 1
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.crane.dev}
spec:
  group: test.crane.dev
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: "self.min <= self.max"
              message: "min must not exceed max"
            properties:
              min: {type: integer}
              max: {type: integer}
YAML
  kubectl wait --for=condition=established "crd/$crd" --timeout=30s >/dev/null || fail "CRD not established" || return 1
  local out
  out=$(kubectl apply -n "$ns" -f - 2>&1 <<'YAML'
apiVersion: test.crane.dev/v1
kind: Widget
metadata: {name: bad}
spec: {min: 5, max: 1}
YAML
) && fail "bad object was accepted" && return 1
  grep -q "min must not exceed max" <<<"$out" || fail "rejection lacks the rule's message: $out" || return 1
  kubectl apply -n "$ns" -f - >/dev/null <<'YAML' || fail "good object rejected"
apiVersion: test.crane.dev/v1
kind: Widget
metadata: {name: good}
spec: {min: 1, max: 5}
YAML
}

t_kubectl_wait_on_job() {
  local ns=t-wait-$run_id
  mkns "$ns" || return 1
  job "$ns" slow 0 'sleep 2' || return 1
  # wait must block until the Job completes, then report success...
  kubectl wait -n "$ns" --for=condition=complete job/slow --timeout=60s >/dev/null || fail "wait did not see completion" || return 1
  [ "$(kubectl get job -n "$ns" slow -o 'jsonpath={.status.succeeded}')" = 1 ] || fail "wait returned before success" || return 1
  # ...and must not report a condition the Job does not have.
  kubectl wait -n "$ns" --for=condition=failed job/slow --timeout=2s >/dev/null 2>&1 && fail "wait claimed a completed Job failed"
  return 0
}

t_rbac_denies_serviceaccount() {
  local ns=t-rbac-$run_id
  mkns "$ns" || return 1
  kubectl create serviceaccount limited -n "$ns" >/dev/null
  kubectl create role cm-reader -n "$ns" --verb=get,list --resource=configmaps >/dev/null
  kubectl create rolebinding cm-reader -n "$ns" --role=cm-reader --serviceaccount="$ns:limited" >/dev/null
  local token out
  token=$(kubectl create token limited -n "$ns") || return 1
  sa() { kubectl --kubeconfig=/dev/null --server="https://127.0.0.1:$API_PORT" \
          --certificate-authority="$state/pki/ca.crt" --token="$token" -n "$ns" "$@"; }
  eventually 10 sa get configmaps || fail "granted permission refused" || return 1
  out=$(sa get secrets 2>&1) && fail "listing secrets was allowed" && return 1
  grep -q Forbidden <<<"$out" || fail "unexpected error: $out" || return 1
  # Inside a pod: the kubelet's token is the ServiceAccount's own, with exactly its RBAC.
  kubectl apply -n "$ns" -f - >/dev/null <<'YAML' || return 1
apiVersion: batch/v1
kind: Job
metadata: {name: insider}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      serviceAccountName: limited
      containers:
      - name: main
        image: busybox
        command: [sh, -c, 'kubectl get configmaps -o name && ! kubectl get secrets && kubectl auth whoami -o jsonpath="{.status.userInfo.username}"']
---
apiVersion: batch/v1
kind: Job
metadata: {name: tokenless}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      serviceAccountName: limited
      automountServiceAccountToken: false
      containers:
      - name: main
        image: busybox
        command: [sh, -c, '[ -z "$KUBECONFIG" ] && ! kubectl get configmaps --request-timeout=5s']
YAML
  kubectl wait -n "$ns" --for=condition=complete job/insider --timeout=60s >/dev/null || fail "pod token did not carry the SA's RBAC" || return 1
  grep -q "system:serviceaccount:$ns:limited" "$state/pods/${ns}_$(pod_of "$ns" insider)/main.log" || fail "pod did not act as its ServiceAccount" || return 1
  kubectl wait -n "$ns" --for=condition=complete job/tokenless --timeout=60s >/dev/null || fail "pod with automount false reached the API"
}

t_deployment_restarts_exited_pod() {
  local ns=t-deploy-$run_id
  mkns "$ns" || return 1
  kubectl apply -n "$ns" -f - >/dev/null <<'YAML' || return 1
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: busybox
        command: [sh, -c, 'echo started; sleep 1; exit 1']
YAML
  restarted() {
    local n
    n=$(kubectl get pods -n "$ns" -l app=web -o 'jsonpath={.items[0].status.containerStatuses[0].restartCount}')
    [ "${n:-0}" -ge 2 ]
  }
  eventually 60 restarted || fail "pod was not restarted after its process exited" || return 1
  local pod; pod=$(kubectl get pods -n "$ns" -l app=web -o 'jsonpath={.items[0].metadata.name}')
  [ "$(grep -c started "$state/pods/${ns}_$pod/main.log")" -ge 2 ] || fail "log shows no second run" || return 1
  [ "$(kubectl get pod -n "$ns" "$pod" -o 'jsonpath={.status.phase}')" = Running ] || fail "restarting pod not Running" || return 1
  kubectl delete deployment -n "$ns" web --wait=true >/dev/null
  eventually 30 bash -c "[ -z \"\$(kubectl get pods -n $ns -o name)\" ]" || fail "pods not removed with the Deployment"
}

# ---- runner -------------------------------------------------------------------------------
passed=0
failed=0
filter=${1:-t_}
for t in $(declare -F | awk '{print $3}' | grep '^t_'); do
  case $t in "$filter"*) ;; *) continue ;; esac
  start=$SECONDS
  if ( failures=0; "$t"; rc=$?; [ "$rc" -eq 0 ] && [ "$failures" -eq 0 ] ); then
    passed=$((passed + 1)); echo "ok   $t ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1)); echo "FAIL $t ($((SECONDS - start)) s)"
  fi
done

# Test namespaces are removed in the background of the cluster; nothing else to clean.
for ns in $(kubectl get ns -o name 2>/dev/null | grep -- "-$run_id\$"); do
  kubectl delete "$ns" --wait=false >/dev/null 2>&1 || true
done

if [ "$started" = 1 ]; then
  pids=$(cat "$state"/pids/*.pid 2>/dev/null | tr '\n' ' ')
  "$here/down.sh"
  left=""
  for p in $pids; do running "$p" && left+="$p "; done
  for f in "$state"/pods/*/*.pid; do [ -f "$f" ] && left+="pg:$(cat "$f") "; done
  # Any process still in the cluster's state dir (pods run with their cwd there) is a leak.
  for p in $(pgrep -f "$state" 2>/dev/null); do running "$p" && left+="$p "; done
  for d in /proc/[0-9]*; do
    case $(readlink "$d/cwd" 2>/dev/null) in "$state"/*) running "${d#/proc/}" && left+="${d#/proc/} " ;; esac
  done
  if [ -z "$left" ]; then
    passed=$((passed + 1)); echo "ok   t_down_leaves_nothing_running"
  else
    failed=$((failed + 1)); echo "FAIL t_down_leaves_nothing_running: $left"
  fi
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
