#!/usr/bin/env bash
# The container images of the local cluster, built offline (no registry is reachable here) and
# cached in ~/.cache/crane/images as docker archives:
#   localhost/crane-pause:<key>              the pods' sandbox (e2e/cluster/pause)
#   localhost/coredns:<key>                  CoreDNS (built by build.sh)
#   localhost/toolbox:crane                  busybox-static and curl from Debian, for tests' pods
#   docker.io/library/redis:7.4-alpine       stand-in for the chart's Redis: Debian's redis-server
#                                            (7.0) with sh and grep, under the chart's image name
#   gcr.io/distroless/cc-debian12:nonroot    stand-in for the Dockerfile's base (glibc, libgcc,
#                                            CA bundle, user nonroot 65532), from Debian packages
#   localhost/crane:dev-<hash>               the repository's Dockerfile, with the binaries built
#                                            on this machine (BINARIES=prebuilt)
# Debian-based images come from mmdebstrap and the machine's apt mirror; everything goes
# through podman (its storage and settings live under ~/.cache/crane/containers, so nothing in
# /etc or /var/lib/containers changes). Each image is rebuilt only when its inputs change (the
# recipe below, the Go binary, or the crane binaries' content).
#
#   images.sh build            node and base images (prints nothing)
#   images.sh crane BIN_DIR    the crane image from BIN_DIR/crane-{operator,executor}; prints its name
#   images.sh load [BIN_DIR]   imports the node images, and the crane image of BIN_DIR (default
#                              $CRANE_BIN_DIR, else target/debug) when its binaries exist, into
#                              the running cluster's containerd; records the crane image's name
#                              in $state/crane-image
set -euo pipefail
. "$(dirname "$0")/lib.sh"

images=$cache/images
store=$cache/containers
mkdir -p "$images" "$store"
# One at a time: two clusters starting together (make demo while make test runs) would build
# the same images into the same files.
exec 9>"$images/.lock"
flock 9
# podman's settings: runc and cgroupfs (no systemd here, and crun refuses this machine's hybrid
# cgroup layout), file events, ulimits within the machine's hard limit of 20000 open files.
if [ ! -f "$store/containers.conf" ]; then
  cat >"$store/containers.conf.tmp" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  mv "$store/containers.conf.tmp" "$store/containers.conf"
fi
if [ ! -f "$store/storage.conf" ]; then
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' \
    "$store/storage" "$store/run" >"$store/storage.conf.tmp"
  mv "$store/storage.conf.tmp" "$store/storage.conf"
fi
export CONTAINERS_CONF=$store/containers.conf CONTAINERS_STORAGE_CONF=$store/storage.conf

suite=bookworm
say() { echo "images: $*" >&2; }
key_of() { sha256sum | cut -c1-12; }

# archive NAME KEY: the cached docker archive of image NAME at KEY.
archive() { echo "$images/$1-$2.tar"; }

# save REF FILE: podman's image REF as a docker archive (what `ctr images import` reads).
save() {
  podman save --quiet --format docker-archive -o "$2.tmp" "$1" >/dev/null
  mv "$2.tmp" "$2"
}

# from_rootfs REF FILE DIR CHANGE...: imports the directory DIR as image REF (with Dockerfile
# CHANGEs such as ENTRYPOINT), then saves it to FILE.
from_rootfs() {
  local ref=$1 file=$2 dir=$3; shift 3
  local args=() c
  for c in "$@"; do args+=(--change "$c"); done
  tar -C "$dir" -c . | podman import --quiet "${args[@]}" - "$ref" >/dev/null
  save "$ref" "$file"
}

# debian DIR PACKAGES: the packages (comma-separated) and their dependencies unpacked into DIR
# (mmdebstrap's `extract` variant: no maintainer scripts, no package manager in the image).
debian() {
  mmdebstrap --quiet --variant=extract --mode=root --include="$2" "$suite" "$1" >/dev/null
  # The runtime mounts its own /dev; apt's leftovers, documentation and Perl (pulled in by
  # maintainer-script helpers such as adduser, which never run here) have no use in an image.
  rm -rf "$1"/dev/* "$1/var/cache/apt" "$1/var/lib/apt/lists" "$1/etc/apt" "$1/usr/share/doc" \
    "$1/usr/share/man" "$1/usr/share/locale" "$1/usr/share/perl" "$1/usr/lib/x86_64-linux-gnu/perl" \
    "$1"/usr/bin/perl*
}

# prune NAME KEEP: removes older archives of NAME, keeping KEEP (two work trees may alternate).
prune() {
  find "$images" -maxdepth 1 -name "$1-*.tar" -printf '%T@ %p\n' | sort -rn | tail -n "+$(($2 + 1))" |
    cut -d' ' -f2- | xargs -r rm -f
}

# ---- node images ----------------------------------------------------------------------------

# Go binaries as single-file images, keyed by the binary's own content-addressed build name.
go_image() { # NAME BINARY ENTRYPOINT-JSON
  local name=$1 binary; binary=$(readlink -f "$bin/$2")
  local key=${binary##*-} file tmp
  file=$(archive "$name" "$key")
  echo "$file"
  [ -f "$file" ] && return 0
  say "building localhost/$name:$key"
  tmp=$(mktemp -d)
  install -m 0755 "$binary" "$tmp/$2"
  from_rootfs "localhost/$name:$key" "$file" "$tmp" "ENTRYPOINT $3" "USER 65535:65535"
  rm -rf "$tmp"
  podman rmi "localhost/$name:$key" >/dev/null 2>&1 || true
  prune "$name" 2
}

# passwd DIR: the accounts distroless images have.
passwd() {
  mkdir -p "$1/etc" "$1/home/nonroot" "$1/tmp"
  chmod 1777 "$1/tmp"
  chown 65532:65532 "$1/home/nonroot"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$1/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$1/etc/group"
}

# debian_image NAME REF BUILDER: keyed by the recipe itself (the builder function and the
# helpers it uses), so changing one rebuilds the image.
debian_image() {
  local name=$1 ref=$2 key file tmp
  key=$( (echo "$suite"; declare -f debian passwd from_rootfs "$3") | key_of)
  file=$(archive "$name" "$key")
  echo "$file"
  [ -f "$file" ] && return 0
  say "building $ref from Debian $suite packages"
  tmp=$(mktemp -d)
  "$3" "$tmp/rootfs" "$ref" "$file"
  rm -rf "$tmp"
  prune "$name" 2
}

build_distroless() { # DIR REF FILE
  debian "$1" libc6,libgcc-s1,base-files,netbase,tzdata,ca-certificates
  passwd "$1"
  # update-ca-certificates never ran (no maintainer scripts): the bundle from its sources.
  mkdir -p "$1/etc/ssl/certs"
  cat "$1"/usr/share/ca-certificates/mozilla/*.crt >"$1/etc/ssl/certs/ca-certificates.crt"
  from_rootfs "$2" "$3" "$1" "USER 65532:65532" "ENV PATH=/usr/local/bin:/usr/bin:/bin"
}

build_redis() { # DIR REF FILE
  debian "$1" redis-server,dash,grep
  passwd "$1"
  mkdir -p "$1/data"
  from_rootfs "$2" "$3" "$1" "ENV PATH=/usr/local/bin:/usr/bin:/bin" "WORKDIR /data" \
    "USER 999:999" 'CMD ["redis-server"]'
  podman rmi "$2" >/dev/null 2>&1 || true
}

build_toolbox() { # DIR REF FILE
  debian "$1" busybox-static,curl
  local applet
  mkdir -p "$1/bin" "$1/tmp"
  chmod 1777 "$1/tmp"
  [ -x "$1/bin/busybox" ] || ln -sfn /usr/bin/busybox "$1/bin/busybox"
  for applet in $("$1/bin/busybox" --list); do
    [ -e "$1/bin/$applet" ] || ln -s busybox "$1/bin/$applet"
  done
  from_rootfs "$2" "$3" "$1" "ENV PATH=/usr/local/bin:/usr/bin:/bin" 'CMD ["sh"]'
  podman rmi "$2" >/dev/null 2>&1 || true
}

node_images() {
  go_image crane-pause pause '["/pause"]'
  go_image coredns coredns '["/coredns"]'
  debian_image toolbox localhost/toolbox:crane build_toolbox
  debian_image redis docker.io/library/redis:7.4-alpine build_redis
}

# The Dockerfile's base must be in podman's storage (not only archived) for `podman build`.
base_image() {
  local ref=gcr.io/distroless/cc-debian12:nonroot file
  file=$(debian_image distroless "$ref" build_distroless)
  if ! podman image exists "$ref" || [ "$(cat "$images/distroless.loaded" 2>/dev/null)" != "$file" ]; then
    podman load --quiet -i "$file" >/dev/null
    echo "$file" >"$images/distroless.loaded"
  fi
}

# ---- crane ----------------------------------------------------------------------------------

# The binaries the Dockerfile's prebuilt stage copies from bin/.
crane_binaries="crane-operator crane-executor crane-server kubectl-crane"
all_built() {
  local b
  for b in $crane_binaries; do [ -x "$1/$b" ] || return 1; done
}

# crane_image BIN_DIR: builds the repository's Dockerfile around BIN_DIR's binaries, stripped
# of debug information (a debug crane-executor is ≈ 185 MB, stripped ≈ 20 MB; release ones
# shrink too). The tag is the stripped binaries' hash, so the image and its archive are reused
# until the binaries change. Prints the archive, then the image name.
crane_image() {
  local dir=$1 ctx tag ref file b
  for b in $crane_binaries; do
    [ -x "$dir/$b" ] || { echo "images: $dir/$b missing (cargo build)" >&2; return 1; }
  done
  ctx=$images/crane-context-$(echo "$dir" | key_of)
  mkdir -p "$ctx/bin"
  for b in $crane_binaries; do
    if [ ! -f "$ctx/bin/$b" ] || [ "$dir/$b" -nt "$ctx/bin/$b" ]; then
      strip --strip-debug -o "$ctx/bin/$b.tmp" "$dir/$b"
      touch -r "$dir/$b" "$ctx/bin/$b.tmp"
      mv "$ctx/bin/$b.tmp" "$ctx/bin/$b"
    fi
  done
  tag=dev-$(for b in $crane_binaries; do cat "$ctx/bin/$b"; done | key_of)
  ref=localhost/crane:$tag
  file=$(archive crane "$tag")
  if [ ! -f "$file" ]; then
    base_image
    say "building $ref (Dockerfile, BINARIES=prebuilt, binaries from $dir)"
    podman build --quiet --pull=never --build-arg BINARIES=prebuilt -f "$root/Dockerfile" -t "$ref" "$ctx" >/dev/null
    save "$ref" "$file"
    podman rmi "$ref" >/dev/null 2>&1 || true
    podman image prune -f >/dev/null 2>&1 || true
    prune crane 4
  fi
  echo "$file"
  echo "$ref"
}

# ---- load -----------------------------------------------------------------------------------

# import FILE: into the cluster's containerd unless an image of that archive is there already.
import() {
  local refs
  refs=$(tar -xOf "$1" manifest.json | jq -r '.[].RepoTags[]')
  if ctr_node images ls -q | grep -qxF "$refs"; then return 0; fi
  ctr_node images import "$1" >/dev/null
}

case ${1:-} in
  build) node_images >/dev/null ;;
  crane) crane_image "${2:?BIN_DIR}" | tail -n 1 ;;
  load)
    [ -S "$(containerd_sock)" ] || { echo "images: no containerd at $(containerd_sock)" >&2; exit 1; }
    for f in $(node_images); do import "$f"; done
    dir=${2:-${CRANE_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}}
    if all_built "$dir"; then
      mapfile -t out < <(crane_image "$dir")
      import "${out[0]}"
      echo "${out[1]}" >"$state/crane-image"
    fi
    ;;
  *) echo "usage: $0 build | crane BIN_DIR | load [BIN_DIR]" >&2; exit 2 ;;
esac
