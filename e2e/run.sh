#!/usr/bin/env bash
# Runs every test suite that needs the local control plane: first the control plane's own
# suite (which brings a cluster up and down itself and checks nothing is left running), then
# the Crane suites in e2e/tests/ against one shared cluster. Prints the suites' totals as
# `N passed, M failed` and exits non-zero when anything failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
passed=0 failed=0

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

suite control-plane "$root/e2e/cluster/test.sh"

started=0
if ! "$root/e2e/cluster/env.sh" >/dev/null 2>&1 || ! (eval "$("$root/e2e/cluster/env.sh")"; kubectl get --raw /readyz >/dev/null 2>&1); then
  "$root/e2e/cluster/up.sh" || { echo "$passed passed, $((failed + 1)) failed"; exit 1; }
  started=1
fi
eval "$("$root/e2e/cluster/env.sh")"
for t in crd_admission agentrun workerpool chart ha faults server; do
  [ -x "$root/e2e/tests/$t.sh" ] && suite "$t" "$root/e2e/tests/$t.sh"
done
[ "$started" = 1 ] && "$root/e2e/cluster/down.sh"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
