#!/usr/bin/env bash
# Builds the OpenTelemetry Collector of the e2e suites (OTLP receiver + file exporter,
# e2e/otelcol/manifest.yaml) with the collector builder from the Go module proxy, and prints
# the binary's path. The binary is cached by a hash of the manifest under
# ~/.cache/crane/bin/otelcol-crane-<hash>, like e2e/cluster/build.sh caches the control plane;
# a warm run only prints the path. Modules and the Go build cache of a cold build live in a
# scratch directory that is removed afterwards (they are large, the binary is not).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${CRANE_CACHE:-$HOME/.cache/crane}
manifest=$here/otelcol/manifest.yaml
builder_version=v0.165.0  # keep in step with dist.version in the manifest
key=$( (cat "$manifest" "$here"/otelcol/stub/*/*; echo "$builder_version") | sha256sum | cut -c1-12)
bin=$cache/bin
out=$bin/otelcol-crane-$key
if [ ! -x "$out" ]; then
  command -v go >/dev/null || { echo "otelcol.sh: go is not installed" >&2; exit 1; }
  mkdir -p "$bin"
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/crane-otelcol.XXXXXX")
  trap 'chmod -R u+w "$scratch" 2>/dev/null; rm -rf "$scratch"' EXIT
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-modcacherw \
    GOMODCACHE=$scratch/mod GOCACHE=$scratch/build GOBIN=$scratch/bin
  echo "building otelcol-crane ($key) ..." >&2
  start=$SECONDS
  go install "go.opentelemetry.io/collector/cmd/builder@$builder_version" >&2
  cp -r "$here/otelcol/stub" "$scratch/stub"
  sed "s|^dist:|dist:\n  output_path: $scratch/dist|" "$manifest" >"$scratch/manifest.yaml"
  "$scratch/bin/builder" --config "$scratch/manifest.yaml" >&2
  mv "$scratch/dist/otelcol-crane" "$out.tmp"
  mv "$out.tmp" "$out"
  find "$bin" -maxdepth 1 -name 'otelcol-crane-*' ! -name "${out##*/}" -delete  # superseded builds
  echo "built otelcol-crane in $((SECONDS - start)) s" >&2
fi
echo "$out"
