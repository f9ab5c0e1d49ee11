#!/usr/bin/env bash
# Runs every test suite that needs a local cluster, on clusters of its own: first the cluster's
# own suite (e2e/cluster/test.sh, which brings its cluster up and down and checks nothing is
# left), then the Crane suites in e2e/tests/ against one shared cluster. Both clusters live
# under a fresh /tmp/crane-test.XXXXXX, never the one `make up`/`make demo` runs, so the tests
# do not depend on what else is installed and run while a demo is up. Prints the suites' totals
# as `N passed, M failed`, exits non-zero when anything failed, and keeps the state directories
# (logs) of a failed run.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
passed=0 failed=0
base=$(mktemp -d /tmp/crane-test.XXXXXX)

# suite NAME CMD...: runs one suite, adding its closing `N passed, M failed` to the totals.
suite() {
  local name=$1 out line p f
  shift
  echo "== $name"
  out=$(mktemp)
  "$@" 2>&1 | tee "$out"
  local rc=${PIPESTATUS[0]}
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -n 1)
  rm -f "$out"
  if [ -n "$line" ]; then
    p=${line%% passed*}; f=${line#*, }; f=${f%% failed*}
    passed=$((passed + p)); failed=$((failed + f))
  fi
  # A suite that died before its summary, or exited non-zero with no failure counted, fails.
  if [ "$rc" -ne 0 ] && { [ -z "$line" ] || [ "${f:-0}" -eq 0 ]; }; then
    failed=$((failed + 1)); echo "FAIL $name exited $rc"
  fi
}

finish() {
  CRANE_CLUSTER_DIR=$base/cluster "$root/e2e/cluster/down.sh"
  echo "$passed passed, $failed failed"
  if [ "$failed" -eq 0 ]; then rm -rf "$base"; else echo "state and logs kept in $base" >&2; fi
  [ "$failed" -eq 0 ]
}
trap 'finish; exit $?' EXIT
trap 'exit 130' INT TERM

suite cluster env CRANE_CLUSTER_DIR="$base/selftest" "$root/e2e/cluster/test.sh"

export CRANE_CLUSTER_DIR=$base/cluster
echo "== cluster for the Crane suites ($CRANE_CLUSTER_DIR)"
if ! "$root/e2e/cluster/up.sh"; then
  failed=$((failed + 1))
  exit 1
fi
# Only what this cluster says: nothing from the caller's environment (a demo's KUBECONFIG).
unset KUBECONFIG REDIS_URL CRANE_IMAGE CRANE_HOST_IP
eval "$("$root/e2e/cluster/env.sh")"
for t in crd_admission agentrun workerpool chart ha faults kubectl_crane server tools approvals telemetry; do
  suite "$t" "$root/e2e/tests/$t.sh"
done
