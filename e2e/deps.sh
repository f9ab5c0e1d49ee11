#!/usr/bin/env bash
# `make deps`: installs what the tests, the demo and the benchmarks need when it is missing, on a
# fresh Debian 12 machine (as root, like CI):
# - Debian packages, with at most one `apt-get update`: Redis (unit and component tests), Lua
#   (the Argo CD health test), Prometheus with promtool (the telemetry suite), tmux (the kubectl crane watch test reads its screen),
#   PostgreSQL (the run archive's tests), Chromium and npm (crane-server's browser test),
#   containerd, runc, the CNI plugins, podman, mmdebstrap, iptables (the local node and its
#   images), jq, binutils (strip);
# - PyYAML (the chart's hardening check);
# - the Go-built programs (e2e/cluster/build.sh) and the node's images (e2e/cluster/images.sh),
#   both cached by version under ~/.cache/crane, so a warm run only checks.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

# command-or-path:package pairs; a package is installed when its probe is missing.
need=(redis-server:redis-server lua5.4:lua5.4 promtool:prometheus tmux:tmux '/usr/lib/postgresql/*/bin/postgres:postgresql'
  chromium:chromium npm:npm containerd:containerd runc:runc
  /usr/lib/cni/bridge:containernetworking-plugins podman:podman mmdebstrap:mmdebstrap
  iptables:iptables jq:jq strip:binutils nsenter:util-linux ip:iproute2 curl:curl openssl:openssl)
missing=()
for pair in "${need[@]}"; do
  probe=${pair%%:*} pkg=${pair#*:}
  case $probe in
    /*) compgen -G "$probe" >/dev/null || missing+=("$pkg") ;;
    *) command -v "$probe" >/dev/null || missing+=("$pkg") ;;
  esac
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  apt-get update -qq
  # No recommends: podman would bring a second runtime (crun) and a rootless toolchain.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml
"$root/e2e/cluster/build.sh" >/dev/null
"$root/e2e/cluster/images.sh" build
