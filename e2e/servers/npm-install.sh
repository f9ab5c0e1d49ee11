#!/usr/bin/env bash
# Installs one npm package at an exact version into the cache (~/.cache/crane/npm/NAME@VERSION)
# and prints the package's directory. Tests start the servers they need from there (the MCP
# reference server, for one); a warm run only prints the path.
#   e2e/servers/npm-install.sh @modelcontextprotocol/server-everything 2026.8.31
set -euo pipefail
name=${1:?usage: npm-install.sh NAME VERSION}
version=${2:?usage: npm-install.sh NAME VERSION}
cache=${CRANE_CACHE:-$HOME/.cache/crane}
dir=$cache/npm/${name//\//+}@$version
pkg=$dir/node_modules/$name
if [ ! -f "$pkg/package.json" ]; then
  command -v npm >/dev/null || { echo "npm-install: npm is not installed" >&2; exit 1; }
  mkdir -p "$dir.tmp"
  (cd "$dir.tmp" && npm install --no-audit --no-fund --no-save --loglevel=error "$name@$version" >&2)
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
fi
echo "$pkg"
