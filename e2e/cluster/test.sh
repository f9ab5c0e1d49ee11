#!/usr/bin/env bash
# The local cluster's own tests (bash + kubectl): control plane, the real node (containers,
# images, securityContext, probes, restarts, logs, exec), Services, DNS, the routes between host
# and pods, and that `down.sh` leaves nothing of the cluster behind while another cluster keeps
# running. Brings the cluster up when it is not running and takes it down at the end if it
# started it (run it on a private one: CRANE_CLUSTER_DIR=/tmp/x). Each test is a function t_*;
# each runs in its own namespace. Ends with the line `N passed, M failed`.
#   e2e/cluster/test.sh            # all tests
#   e2e/cluster/test.sh t_rbac     # only tests whose name starts with t_rbac
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

started=0
if ! { load_ports && pid_alive kube-apiserver && pid_alive kubelet; }; then
  "$here/up.sh" || { echo "0 passed, 1 failed"; exit 1; }
  started=1
fi
load_ports
export KUBECONFIG=$state/kubeconfig
run_id=$RANDOM
toolbox=localhost/toolbox:crane

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

# json STRING: STRING as a JSON (and so YAML) string.
json() { printf '%s' "$1" | jq -Rs .; }

# job NS NAME BACKOFF SCRIPT [EXTRA_CONTAINER_YAML]: a busybox Job running `sh -c SCRIPT`; its
# $0 is a marker naming the Job, so its processes can be found on the host.
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
        image: $toolbox
        imagePullPolicy: Never
        command: [sh, -c, $(json "$script"), $(marker "$ns" "$name")]
$extra
YAML
}

# deployment NS NAME REPLICAS CONTAINERS_YAML: a Deployment whose pods are labelled app=NAME.
deployment() {
  kubectl apply -n "$1" -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: $2}
spec:
  replicas: $3
  selector: {matchLabels: {app: $2}}
  template:
    metadata: {labels: {app: $2}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
$4
YAML
}

pod_of() { kubectl get pods -n "$1" -l "job-name=$2" -o 'jsonpath={.items[0].metadata.name}' 2>/dev/null; }
logs_of() { kubectl logs -n "$1" "$(pod_of "$1" "$2")" 2>/dev/null; }

# marker NS NAME, marked_pids NS NAME: the host's view of a container's processes (containers
# share the host's PID namespace tree: their processes are in the host's /proc).
marker() { echo "crane-test-$1-$2"; }
marked_pids() {
  local want p; want=$(marker "$1" "$2")
  for p in /proc/[0-9]*; do
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qw -- "$want" && running "${p#/proc/}" && echo "${p#/proc/}"
  done
}
no_marked_pids() { [ -z "$(marked_pids "$1" "$2")" ]; }
has_marked_pids() { [ -n "$(marked_pids "$1" "$2")" ]; }

# ---- tests --------------------------------------------------------------------------------
t_readyz() {
  [ "$(kubectl get --raw /readyz)" = ok ] || fail "/readyz did not answer ok"
}

t_job_exit_0_completes() {
  local ns=t-ok-$run_id
  mkns "$ns" || return 1
  job "$ns" ok 0 'echo hello from $HOSTNAME; exit 0' || return 1
  kubectl wait -n "$ns" --for=condition=complete job/ok --timeout=60s >/dev/null || fail "job did not complete"
  local pod; pod=$(pod_of "$ns" ok)
  grep -q "hello from $pod" <<<"$(logs_of "$ns" ok)" || fail "kubectl logs lacks the output"
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
  grep -q env-ok <<<"$(logs_of "$ns" env)" || fail "no env-ok in kubectl logs"
}

t_delete_job_kills_process() {
  local ns=t-del-$run_id
  mkns "$ns" || return 1
  job "$ns" sleeper 0 'trap "" TERM; sleep 1000 & wait; sleep 1000' || return 1
  eventually 60 bash -c "[ -n \"\$(kubectl get pods -n $ns -l job-name=sleeper -o jsonpath='{.items[?(@.status.phase==\"Running\")].metadata.name}')\" ]" \
    || fail "pod never ran" || return 1
  eventually 10 has_marked_pids "$ns" sleeper || fail "the container's process is not on the host" || return 1
  kubectl delete job -n "$ns" sleeper --wait=true --timeout=60s >/dev/null || fail "job deletion failed" || return 1
  # The process ignores SIGTERM: it must be SIGKILLed after the 5 s grace period.
  eventually 30 no_marked_pids "$ns" sleeper || fail "the container's process survived the Job: $(marked_pids "$ns" sleeper)" || return 1
  eventually 30 bash -c "[ -z \"\$(kubectl get pods -n $ns -o name)\" ]" || fail "pod object not removed"
}

t_namespace_deletion() {
  local ns=t-ns-$run_id
  mkns "$ns" || return 1
  kubectl create configmap c -n "$ns" --from-literal=a=b >/dev/null
  job "$ns" sleeper 0 'sleep 1000 & wait' || return 1
  eventually 60 has_marked_pids "$ns" sleeper || fail "pod never started" || return 1
  kubectl delete namespace "$ns" --wait=true --timeout=90s >/dev/null || fail "namespace deletion did not finish" || return 1
  kubectl get namespace "$ns" >/dev/null 2>&1 && fail "namespace still exists"
  eventually 10 no_marked_pids "$ns" sleeper || fail "pod process survived its namespace"
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
  sa() { kubectl --kubeconfig=/dev/null --server="https://$HOST_IP:$API_PORT" \
          --certificate-authority="$state/pki/ca.crt" --token="$token" -n "$ns" "$@"; }
  eventually 10 sa get configmaps || fail "granted permission refused" || return 1
  out=$(sa get secrets 2>&1) && fail "listing secrets was allowed" && return 1
  grep -q Forbidden <<<"$out" || fail "unexpected error: $out" || return 1
  # Inside a pod: the kubelet mounts the ServiceAccount's own token and the cluster's CA; the
  # `kubernetes` Service (DNS name, kube-proxy, the apiserver on the host) verifies as TLS.
  local api='https://kubernetes.default.svc/api/v1/namespaces/${NS}'
  kubectl apply -n "$ns" -f - >/dev/null <<YAML || return 1
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
        image: $toolbox
        imagePullPolicy: Never
        env: [{name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}]
        command: [sh, -c, 'd=/var/run/secrets/kubernetes.io/serviceaccount; get() { curl -sS -o /dev/null -w "%{http_code}\n" --cacert \$d/ca.crt -H "Authorization: Bearer \$(cat \$d/token)" "\$1"; }; echo "configmaps \$(get $api/configmaps)"; echo "secrets \$(get $api/secrets)"']
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
        image: $toolbox
        imagePullPolicy: Never
        command: [sh, -c, '! ls /var/run/secrets/kubernetes.io/serviceaccount']
YAML
  kubectl wait -n "$ns" --for=condition=complete job/insider --timeout=60s >/dev/null || fail "the in-pod API calls did not run" || return 1
  out=$(logs_of "$ns" insider)
  grep -q '^configmaps 200$' <<<"$out" && grep -q '^secrets 403$' <<<"$out" ||
    fail "the pod's token did not carry exactly the ServiceAccount's RBAC: $out" || return 1
  kubectl wait -n "$ns" --for=condition=complete job/tokenless --timeout=60s >/dev/null || fail "pod with automount false got a token"
}

t_deployment_restarts_exited_pod() {
  local ns=t-deploy-$run_id
  mkns "$ns" || return 1
  deployment "$ns" web 1 "      - name: main
        image: $toolbox
        imagePullPolicy: Never
        command: [sh, -c, 'echo started; sleep 1; exit 1']" || return 1
  restarted() {
    local n
    n=$(kubectl get pods -n "$ns" -l app=web -o 'jsonpath={.items[0].status.containerStatuses[0].restartCount}')
    [ "${n:-0}" -ge 2 ]
  }
  # The kubelet backs off 10 s, then 20 s, between restarts.
  eventually 90 restarted || fail "pod was not restarted after its process exited" || return 1
  local pod; pod=$(kubectl get pods -n "$ns" -l app=web -o 'jsonpath={.items[0].metadata.name}')
  grep -q started <<<"$(kubectl logs -n "$ns" "$pod" --previous 2>&1)" || fail "kubectl logs --previous lacks the earlier run" || return 1
  [ "$(kubectl get pod -n "$ns" "$pod" -o 'jsonpath={.status.containerStatuses[0].lastState.terminated.exitCode}')" = 1 ] ||
    fail "lastState does not show exit code 1" || return 1
  kubectl delete deployment -n "$ns" web --wait=true >/dev/null
  eventually 30 bash -c "[ -z \"\$(kubectl get pods -n $ns -o name)\" ]" || fail "pods not removed with the Deployment"
}

# Pod Security `restricted` enforced by the apiserver on the namespace, and in force in the
# container: its user, a read-only root, no capabilities; a writable emptyDir.
t_restricted_pod() {
  local ns=t-restricted-$run_id out
  mkns "$ns" || return 1
  kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
  out=$(kubectl run -n "$ns" loose --image="$toolbox" --image-pull-policy=Never --restart=Never -- true 2>&1) &&
    fail "a pod without the restricted settings was admitted" && return 1
  grep -q 'violates PodSecurity "restricted' <<<"$out" || fail "unexpected rejection: $out" || return 1
  kubectl apply -n "$ns" -f - >/dev/null <<YAML || return 1
apiVersion: batch/v1
kind: Job
metadata: {name: tight}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: main
        image: $toolbox
        imagePullPolicy: Never
        command: [sh, -c, 'echo "uid \$(id -u)"; touch /root-write 2>/dev/null && echo "root writable" || echo "root read-only"; grep CapEff /proc/self/status; grep Seccomp: /proc/self/status; touch /scratch/x && echo "scratch writable"']
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        volumeMounts: [{name: scratch, mountPath: /scratch}]
      volumes: [{name: scratch, emptyDir: {}}]
YAML
  kubectl wait -n "$ns" --for=condition=complete job/tight --timeout=60s >/dev/null || fail "the restricted pod did not complete" || return 1
  out=$(logs_of "$ns" tight)
  local want
  for want in 'uid 65532' 'root read-only' 'CapEff:	0000000000000000' 'Seccomp:	2' 'scratch writable'; do
    grep -qF "$want" <<<"$out" || fail "in the container: want '$want', got: $out" || return 1
  done
}

# A Service by DNS name from a pod, its ClusterIP from the host, a server on the host from a
# pod (CRANE_HOST_IP), and readiness probes gating the endpoints.
t_services_dns_and_host_routes() {
  local ns=t-net-$run_id out port host_pid
  mkns "$ns" || return 1
  deployment "$ns" web 2 "      - name: httpd
        image: $toolbox
        imagePullPolicy: Never
        command: [sh, -c, 'mkdir -p /tmp/www && hostname >/tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www']
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}" || return 1
  kubectl -n "$ns" create service clusterip web --tcp=80:8080 >/dev/null || return 1
  kubectl rollout status -n "$ns" deployment/web --timeout=60s >/dev/null || fail "web pods not ready" || return 1
  local ip; ip=$(kubectl get service -n "$ns" web -o jsonpath='{.spec.clusterIP}')
  eventually 10 curl -fsS -m 2 "http://$ip/" || fail "the host cannot reach ClusterIP $ip" || return 1
  port=$(free_port) || return 1
  mkdir -p "$state/tmp-www" && echo "from the host" >"$state/tmp-www/index.html"
  python3 -m http.server "$port" --bind "$HOST_IP" --directory "$state/tmp-www" >/dev/null 2>&1 &
  host_pid=$!
  job "$ns" client 0 "for i in 1 2 3 4 5 6; do curl -fsS -m 2 http://web.$ns.svc.cluster.local/ && break; sleep 1; done; nslookup kubernetes.default.svc.cluster.local | grep -q $API_SERVICE_IP && echo dns-ok; curl -fsS -m 2 http://$HOST_IP:$port/"
  kubectl wait -n "$ns" --for=condition=complete job/client --timeout=60s >/dev/null
  kill "$host_pid" 2>/dev/null; wait "$host_pid" 2>/dev/null
  out=$(logs_of "$ns" client)
  grep -q '^web-' <<<"$out" || fail "a pod could not reach Service web by name: $out" || return 1
  grep -q '^dns-ok$' <<<"$out" || fail "kubernetes.default did not resolve to $API_SERVICE_IP: $out" || return 1
  grep -q '^from the host$' <<<"$out" || fail "a pod could not reach the host at $HOST_IP: $out" || return 1
}

# The cluster's Redis serves only who knows its password, which is in no manifest or argument.
t_redis_requires_password() {
  local pw out
  pw=$(cat "$state/redis-password") || fail "no $state/redis-password" || return 1
  out=$(env -u REDISCLI_AUTH redis-cli -h "$REDIS_IP" get x 2>&1)
  grep -q NOAUTH <<<"$out" || fail "without a password Redis answered: $out" || return 1
  out=$(REDISCLI_AUTH=wrong redis-cli -h "$REDIS_IP" ping 2>&1)
  grep -q WRONGPASS <<<"$out" || fail "a wrong password got: $out" || return 1
  [ "$(REDISCLI_AUTH=$pw redis-cli -h "$REDIS_IP" ping 2>&1)" = PONG ] || fail "the password file's password is refused" || return 1
  out=$(kubectl -n crane-local get deployment redis -o json)
  grep -qF "$pw" <<<"$out" && { fail "the password is in the Deployment"; return 1; }
  return 0
}

t_exec_and_logs() {
  local ns=t-exec-$run_id out
  mkns "$ns" || return 1
  kubectl run -n "$ns" shell --image="$toolbox" --image-pull-policy=Never --restart=Never -- sh -c 'echo hello-log; sleep 600' >/dev/null || return 1
  kubectl wait -n "$ns" --for=condition=Ready pod/shell --timeout=60s >/dev/null || fail "pod not Ready" || return 1
  out=$(kubectl exec -n "$ns" shell -- sh -c 'echo "exec as $(id -u) in $(hostname)"' 2>&1)
  [ "$out" = "exec as 0 in shell" ] || fail "kubectl exec: $out" || return 1
  eventually 10 bash -c "kubectl logs -n $ns shell | grep -q hello-log" || fail "kubectl logs lacks the output"
}

# ---- leftovers ----------------------------------------------------------------------------
# leftovers: one line per thing of this cluster (state directory, node index) still on the
# host. Things of any other cluster running meanwhile are not looked at.
leftovers() {
  local p sock; sock=$(containerd_sock)
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    running "$p" || continue
    if tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "$state/"; then echo "process $p: $(tr '\0' ' ' <"/proc/$p/cmdline" | cut -c1-100)"; continue; fi
    case $(readlink "/proc/$p/cwd" 2>/dev/null) in "$state" | "$state"/*) echo "process $p works in $state" ;; esac
    grep -q "/$cgroup_root/" "/proc/$p/cgroup" 2>/dev/null && echo "process $p in cgroup $cgroup_root"
  done
  awk -v s="$state" 'index($5, s "/") == 1 || $5 == s {print "mount " $5}' /proc/self/mountinfo
  for h in /sys/fs/cgroup/*/; do [ -d "$h$cgroup_root" ] && echo "cgroup $h$cgroup_root"; done
  [ -e "/run/netns/$netns" ] && echo "network namespace $netns"
  ip link show "$host_if" >/dev/null 2>&1 && echo "link $host_if"
  ip route show | grep -E "^10\.24[0-2]\.$NODE_INDEX\." | sed 's/^/route /'
  # The host's own rules: the node's live inside its namespace; nothing may leak out.
  iptables-save 2>/dev/null | grep -E "10\.24[0-2]\.$NODE_INDEX\.|$host_if|cni0" | sed 's/^/iptables /'
  nft list ruleset 2>/dev/null | grep -E "10\.24[0-2]\.$NODE_INDEX\.|$host_if" | sed 's/^/nft /'
  for d in "$node"/run/containerd/io.containerd.runtime.v2.task/k8s.io/*/; do
    [ -d "$d" ] || continue
    local s; s=/run/containerd/s/$(printf '%s' "$sock/k8s.io/$(basename "$d")" | sha256sum | cut -c1-64)
    [ -e "$s" ] && echo "shim socket $s"
  done
  for p in /var/log/containers/*.log; do
    [ -L "$p" ] && case $(readlink "$p") in "$node"/*) echo "log link $p" ;; esac
  done
  [ -e "/run/crane/node-$NODE_INDEX" ] && echo "owner file /run/crane/node-$NODE_INDEX"
  return 0
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

# Only a cluster this suite started is taken down: with pods running (the leftovers check is
# only worth something when there was something to leave), and while a second cluster runs
# beside it, which must survive untouched.
if [ "$started" = 1 ]; then
  other=$(mktemp -d /tmp/crane-other.XXXXXX)
  start=$SECONDS
  if ! CRANE_CLUSTER_DIR=$other "$here/up.sh" >"$other.log" 2>&1; then
    failed=$((failed + 1)); echo "FAIL t_second_cluster_beside_it: up failed"; sed 's/^/     /' "$other.log" | tail -n 20
  else
    other_index=$(CRANE_CLUSTER_DIR=$other bash -c ". '$here/lib.sh'; load_ports; echo \$NODE_INDEX")
    if [ "$other_index" != "$NODE_INDEX" ]; then
      passed=$((passed + 1)); echo "ok   t_second_cluster_beside_it (node $other_index beside $NODE_INDEX, $((SECONDS - start)) s)"
    else
      failed=$((failed + 1)); echo "FAIL t_second_cluster_beside_it: both clusters got node index $NODE_INDEX"
    fi
  fi
  start=$SECONDS
  "$here/down.sh"
  left=$(leftovers)
  if [ -z "$left" ]; then
    passed=$((passed + 1)); echo "ok   t_down_leaves_nothing ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1)); echo "FAIL t_down_leaves_nothing:"; sed 's/^/     /' <<<"$left"
  fi
  # The other cluster still works after this one went: its DNS answers through its Service.
  if [ -n "${other_index:-}" ]; then
    if CRANE_CLUSTER_DIR=$other bash -c ". '$here/lib.sh'; load_ports; REDISCLI_AUTH=\$(cat \$state/redis-password) redis-cli -h \$REDIS_IP ping | grep -q PONG &&
         KUBECONFIG=\$state/kubeconfig kubectl -n kube-system get pods -l k8s-app=kube-dns -o jsonpath='{.items[0].status.containerStatuses[0].ready}' | grep -q true"; then
      passed=$((passed + 1)); echo "ok   t_down_spares_the_other_cluster"
    else
      failed=$((failed + 1)); echo "FAIL t_down_spares_the_other_cluster"
    fi
  fi
  CRANE_CLUSTER_DIR=$other "$here/down.sh" 2>/dev/null
  rm -rf "$other" "$other.log"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
