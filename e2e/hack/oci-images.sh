#!/usr/bin/env bash
# Builds the controller and node-agent container images WITHOUT Docker, from binaries built on
# this machine, as docker-archive tarballs that `kind load image-archive` (and `docker load`,
# `ctr images import`, `skopeo copy`) accept:
#
#   target/images/bulkhead-controller.tar   bulkhead/controller:<version>   user 65532:65532
#   target/images/bulkhead-node-agent.tar   bulkhead/node-agent:<version>   user 0 (it needs the
#                                           node's containerd socket; see the chart)
#
# Each image has two layers: a minimal runtime base (the binary's shared libraries, resolved
# with ldd from this machine's glibc, like distroless/cc; CA certificates; /etc/passwd with
# nonroot 65532; /tmp) and the binary in /usr/local/bin. Built with umoci into an OCI layout,
# then copied to a docker-archive with skopeo. images/*.Dockerfile build the same images with
# Docker.
#
# Usage: e2e/hack/oci-images.sh [--bin-dir target/release] [--out target/images] [--tag VERSION]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
log() { printf '[oci-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

bin_dir="$root/target/release"
out="$root/target/images"
tag=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
while [[ $# -gt 0 ]]; do
  case "$1" in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    *) die "unknown argument $1" ;;
  esac
done
for tool in umoci skopeo ldd; do
  command -v "$tool" >/dev/null || die "$tool is required (e2e/hack/install-deps.sh installs umoci and skopeo)"
done
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) die "unsupported architecture $(uname -m)" ;;
esac
mkdir -p "$out"
work=$(mktemp -d "$out/.work-XXXXXX")
trap 'rm -rf "$work"' EXIT

# build <binary> <repository> <uid>
build() {
  local binary=$1 repo=$2 uid=$3
  local src="$bin_dir/$binary" layout="$work/$binary" ref="$binary:$tag"
  [[ -x "$src" ]] || die "$src is missing: cargo build --release --bins (make images does)"
  umoci init --layout "$layout"
  umoci new --image "$layout:$ref"

  # Layer 1: the runtime base.
  umoci unpack --image "$layout:$ref" "$work/bundle" >/dev/null
  local rootfs="$work/bundle/rootfs" lib
  mkdir -p "$rootfs"/{etc/ssl/certs,tmp,usr/local/bin}
  chmod 1777 "$rootfs/tmp"
  for lib in $(ldd "$src" | grep -o '/[^ ]*'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] && cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  umoci repack --image "$layout:$ref" --history.created_by "runtime base: $(ldd "$src" | grep -o '/[^ ]*' | xargs -n1 basename | tr '\n' ' ')" "$work/bundle" >/dev/null
  rm -rf "$work/bundle"

  # Layer 2: the binary.
  umoci unpack --image "$layout:$ref" "$work/bundle" >/dev/null
  install -m 0755 "$src" "$work/bundle/rootfs/usr/local/bin/$binary"
  umoci repack --image "$layout:$ref" --history.created_by "COPY $binary /usr/local/bin/" "$work/bundle" >/dev/null
  rm -rf "$work/bundle"

  umoci config --image "$layout:$ref" \
    --config.entrypoint "/usr/local/bin/$binary" \
    --config.user "$uid:$uid" \
    --config.workingdir / \
    --config.env PATH=/usr/local/bin:/usr/bin:/bin \
    --config.label "org.opencontainers.image.title=$binary" \
    --config.label "org.opencontainers.image.version=$tag" \
    --config.label "org.opencontainers.image.source=https://github.com/bulkhead-dev/bulkhead" \
    --architecture "$arch" --os linux
  umoci gc --layout "$layout"
  rm -f "$out/$binary.tar"
  skopeo copy --quiet "oci:$layout:$ref" "docker-archive:$out/$binary.tar:$repo:$tag"
  log "$out/$binary.tar: $repo:$tag ($(du -h "$out/$binary.tar" | cut -f1))"
}

build bulkhead-controller bulkhead/controller 65532
build bulkhead-node-agent bulkhead/node-agent 0
