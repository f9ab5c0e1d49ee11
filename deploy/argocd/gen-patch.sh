#!/usr/bin/env bash
# Regenerates argocd-cm-patch.yaml from the two .lua health checks; `--check` only reports
# (exit 1) when the committed patch differs from what would be generated.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
render() {
  cat <<'HEAD'
# Argo CD health checks for Crane's custom resources, generated from agentrun-health.lua and
# workerpool-health.lua by gen-patch.sh (deploy/argocd/README.md). Merge into argocd-cm:
#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file deploy/argocd/argocd-cm-patch.yaml
data:
HEAD
  local kind file
  for kind in AgentRun WorkerPool; do
    file=$here/$(echo "$kind" | tr '[:upper:]' '[:lower:]')-health.lua
    echo "  resource.customizations.health.crane.dev_$kind: |"
    sed -e 's/^\(.\)/    \1/' "$file"
  done
}
if [ "${1:-}" = --check ]; then
  diff -u "$here/argocd-cm-patch.yaml" <(render) >&2 || { echo "argocd-cm-patch.yaml is stale: run deploy/argocd/gen-patch.sh" >&2; exit 1; }
else
  render >"$here/argocd-cm-patch.yaml"
fi
