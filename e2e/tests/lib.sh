# Shared helpers of the operator's end-to-end tests; source it, do not run it.
#
#   operator_start LOGFILE [crane-operator flags...]   starts target/debug/crane-operator as a
#       PROCESS with a kubeconfig holding a token of ServiceAccount crane-system/crane-operator
#       (config/rbac applied first, CRDs from crds/), never as admin; sets OPERATOR_PID and
#       OPERATOR_KUBECONFIG and returns once the controllers started (or 1 with the log).
#   operator_stop                                      SIGTERM, then SIGKILL after 15 s.
#
#   container_pid NS POD                               the host pid of the pod's first container
#       (containerd's view), for killing it the way a crash would.
#
#   pass / fail / check / wait_until                  test bookkeeping (see below).
#
# Needs KUBECONFIG (admin), REDIS_URL with CRANE_REDIS_PASSWORD_FILE (its admin password), and
# CRANE_IMAGE (the crane image loaded into the node, which planner and worker Jobs run), e.g.
# from `eval "$(make -s env)"`; honours CRANE_CLUSTER_DIR like the cluster scripts.

_crane_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OPERATOR_PID=""
OPERATOR_KUBECONFIG=""
CRANE_IMAGE=${CRANE_IMAGE:-$(cat "${CRANE_CLUSTER_DIR:-$_crane_root/.crane/cluster}/crane-image" 2>/dev/null || true)}

# Test bookkeeping shared by the suites: each counts into `passed` / `failed` and ends with
# `echo "$passed passed, $failed failed"`.
passed=0 failed=0
pass() { passed=$((passed + 1)); echo "ok   $1"; }
# fail NAME [DETAIL]: DETAIL (e.g. a log excerpt) is printed indented under the failure.
fail() {
  failed=$((failed + 1)); echo "FAIL $1"
  if [ -n "${2:-}" ]; then sed 's/^/     /' <<<"$2"; fi
  return 0
}
# check NAME WANT GOT [DETAIL]
check() { if [ "$3" = "$2" ]; then pass "$1"; else fail "$1 (got '$3', want '$2')" "${4:-}"; fi; }
# AgentRun helpers: ar_field NS NAME JSONPATH, phase NS NAME, phase_is NS NAME PHASE, terminal
# NS NAME (Succeeded, Failed or Cancelled).
ar_field() { kubectl -n "$1" get agentrun "$2" -o jsonpath="$3" 2>/dev/null; }
phase() { ar_field "$1" "$2" '{.status.phase}'; }
phase_is() { [ "$(phase "$1" "$2")" = "$3" ]; }
terminal() { case "$(phase "$1" "$2")" in Succeeded|Failed|Cancelled) return 0 ;; *) return 1 ;; esac; }
# delete_runs NS...: deletes every AgentRun of the namespaces and waits (30 s at most) until
# they are gone. Call it while the operator still runs: runs carry its finalizer, and their
# namespaces would hang in Terminating.
delete_runs() {
  local ns
  for ns in "$@"; do kubectl -n "$ns" delete agentruns --all --wait=false >/dev/null 2>&1; done
  for ns in "$@"; do kubectl -n "$ns" wait --for=delete agentruns --all --timeout=30s >/dev/null 2>&1; done
}
# free_port: a TCP port free on every address (servers the tests start bind one of them).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'; }
# wait_until SECONDS CMD...: polls CMD every 0.25 s; 0 when it succeeded in time.
wait_until() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -ge "$deadline" ] && return 1
    sleep 0.25
  done
}

# operator_kubeconfig FILE: writes a kubeconfig for the operator's ServiceAccount.
operator_kubeconfig() {
  local file=$1 server ca token
  kubectl apply --server-side --force-conflicts -f "$_crane_root/crds/" >/dev/null || return 1
  kubectl wait --for=condition=Established --timeout=60s \
    crd/agentruns.crane.dev crd/workerpools.crane.dev crd/tools.crane.dev crd/mcpservers.crane.dev crd/models.crane.dev crd/approvals.crane.dev >/dev/null || return 1
  kubectl get namespace crane-system >/dev/null 2>&1 || kubectl create namespace crane-system >/dev/null || return 1
  kubectl apply --server-side --force-conflicts -k "$_crane_root/config/rbac" >/dev/null || return 1
  server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
  ca=$(kubectl config view --raw --minify --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
  token=$(kubectl create token crane-operator -n crane-system --duration=2h) || return 1
  umask 077
  cat >"$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: crane
  cluster: {server: "$server", certificate-authority-data: "$ca"}
users:
- name: crane-operator
  user: {token: "$token"}
contexts:
- name: crane-operator
  context: {cluster: crane, user: crane-operator}
current-context: crane-operator
KUBECONFIG
}

operator_start() {
  local log=$1; shift
  local bin=${CRANE_BIN_DIR:-${CARGO_TARGET_DIR:-$_crane_root/target}/debug}
  OPERATOR_KUBECONFIG=$(mktemp "${TMPDIR:-/tmp}/crane-operator-kubeconfig.XXXXXX")
  operator_kubeconfig "$OPERATOR_KUBECONFIG" || { echo "operator_start: cannot prepare RBAC/kubeconfig" >&2; return 1; }
  # A Lease of its own unless the caller names one: operators of suites run side by side
  # on one cluster must not stand by for each other (e2e/tests/ha.sh shares one on purpose).
  KUBECONFIG=$OPERATOR_KUBECONFIG RUST_LOG=${OPERATOR_RUST_LOG:-info,crane_operator=debug} \
    CRANE_LEADER_ELECTION_ID=${CRANE_LEADER_ELECTION_ID:-crane-e2e-$$-$RANDOM} \
    "$bin/crane-operator" "$@" >"$log" 2>&1 &
  OPERATOR_PID=$!
  local deadline=$((SECONDS + 60))
  until grep -q '"starting controllers"' "$log" 2>/dev/null; do
    if ! kill -0 "$OPERATOR_PID" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      echo "operator_start: the operator did not start; its log:" >&2
      tail -n 30 "$log" >&2
      return 1
    fi
    sleep 0.2
  done
}

container_pid() {
  local id
  id=$(kubectl -n "$1" get pod "$2" -o jsonpath='{.status.containerStatuses[0].containerID}' 2>/dev/null)
  id=${id#containerd://}
  [ -n "$id" ] || return 1
  (. "$_crane_root/e2e/cluster/lib.sh" && ctr_node tasks ls 2>/dev/null) | awk -v id="$id" '$1 == id {print $2}'
}

operator_stop() {
  [ -n "$OPERATOR_PID" ] || return 0
  if kill -0 "$OPERATOR_PID" 2>/dev/null; then
    kill -TERM "$OPERATOR_PID" 2>/dev/null
    local deadline=$((SECONDS + 15))
    while kill -0 "$OPERATOR_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    kill -0 "$OPERATOR_PID" 2>/dev/null && kill -KILL "$OPERATOR_PID" 2>/dev/null
  fi
  wait "$OPERATOR_PID" 2>/dev/null
  OPERATOR_PID=""
  [ -n "$OPERATOR_KUBECONFIG" ] && rm -f "$OPERATOR_KUBECONFIG"
  OPERATOR_KUBECONFIG=""
  return 0
}
