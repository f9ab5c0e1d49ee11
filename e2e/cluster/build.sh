#!/usr/bin/env bash
# Builds the local cluster's Go programs from the Go module proxy: the control plane (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler), the node (kubelet, kube-proxy),
# CoreDNS, the pods' sandbox program (pause) and helm. Binaries are cached by module checksum
# outside the work tree (~/.cache/crane/bin), so a warm run is a no-op; nothing built here is
# ever committed. Prints the bin directory.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${CRANE_CACHE:-$HOME/.cache/crane}
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOMODCACHE=${GOMODCACHE:-$cache/go/mod} GOCACHE=${GOCACHE:-$cache/go/build}
bin=$cache/bin
mkdir -p "$bin"
# One build at a time per cache: two work trees building the same binary would write the same
# temporary file.
exec 9>"$bin/.lock"
flock 9

kube_version=v1.36.3  # keep in step with kube/go.mod
ver_pkg() { printf -- '-X %s/version.gitVersion=%s -X %s/version.gitMajor=1 -X %s/version.gitMinor=%s ' \
  "$1" "$kube_version" "$1" "$1" "$(echo "$kube_version" | cut -d. -f2)"; }

# build MODULE_DIR PACKAGE NAME [LDFLAGS]: rebuilds only when the module, its source or the flags
# changed.
build() {
  local dir=$1 pkg=$2 name=$3 ldflags=${4:-}
  # The module files, plus the program's own source when the module has one (pause).
  local key; key=$( (cat "$here/$dir/go.mod"; cat "$here/$dir"/go.sum "$here/$dir"/*.go 2>/dev/null; echo "$pkg $ldflags") | sha256sum | cut -c1-12)
  local out=$bin/$name-$key
  if [ ! -x "$out" ]; then
    echo "building $name ($key) ..." >&2
    local start=$SECONDS
    (cd "$here/$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg")
    mv "$out.tmp" "$out"
    echo "built $name in $((SECONDS - start)) s" >&2
  fi
  ln -sfn "$out" "$bin/$name"
  # Superseded builds go after two days unused, not at once: two work trees on different
  # commits (a branch and main) would otherwise delete each other's build on every run.
  touch "$out"
  find "$bin" -maxdepth 1 -name "$name-*" ! -name "${out##*/}" ! -name '*.tmp' -mtime +2 -delete
}

build etcd go.etcd.io/etcd/server/v3 etcd
helm_version=v3.19.5  # keep in step with helm/go.mod
build helm helm.sh/helm/v3/cmd/helm helm "-X helm.sh/helm/v3/internal/version.version=$helm_version"
kflags="$(ver_pkg k8s.io/component-base) $(ver_pkg k8s.io/client-go/pkg)"
build kube k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$kflags"
build kube k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$kflags"
build kube k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler "$kflags"
build kube k8s.io/kubernetes/cmd/kubelet kubelet "$kflags"
build kube k8s.io/kubernetes/cmd/kube-proxy kube-proxy "$kflags"
build coredns github.com/coredns/coredns coredns
build pause . pause
echo "$bin"
