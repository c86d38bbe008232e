#!/usr/bin/env bash
# Builds a kind node image without any container registry (issue #19,
# ../shared/research/kind-offline.md): `kind build node-image` fetches its base image and the
# pause, etcd, coredns and kindnetd images from registries, so this assembles the same image
# from Debian packages (debootstrap: systemd, containerd, runc, CNI plugins, iptables) and the
# Go-built Kubernetes binaries (tools.sh, kind-tools.sh), with kind's own base files (entrypoint,
# systemd units, containerd config) taken from the kind module. The control-plane images kubeadm
# expects (kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, etcd, coredns,
# pause) are built here too and preloaded into the node's containerd, with a registry image
# (Debian's docker-registry) for the examples.
#
# The result is the podman image localhost/kindest/node:<k8s version>-bulkhead, kept as a tarball
# in ~/.cache/bulkhead/kind keyed by the versions and this script's inputs: a warm call only
# imports the tarball into podman if podman lacks the image. Cold: a few minutes beyond the Go
# builds.
#
# Usage: e2e/hack/kind-image.sh [--print-image | --cached]
#   --cached  exit 0 if the image's tarball is cached (a warm call), 1 if a build is needed
set -euo pipefail
hack="$(cd "$(dirname "$0")" && pwd)"
source "$hack/versions.env"
source "$hack/kind-lib.sh"

if [[ "${1:-}" == "--print-image" ]]; then
  echo "$KIND_NODE_IMAGE"
  exit 0
fi
log() { printf '[kind-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in podman debootstrap gcc containerd ctr; do
  command -v "$tool" >/dev/null || die "$tool is required: run e2e/hack/install-deps.sh --kind"
done
[[ $(id -u) -eq 0 ]] || die "building the node image needs root (debootstrap, podman import)"

tarball="$KIND_CACHE/node-$KUBERNETES_VERSION-$KIND_IMAGE_KEY.tar"
[[ "${1:-}" == "--cached" ]] && { [[ -f "$tarball" ]]; exit; }
if [[ -f "$tarball" ]]; then
  if ! podman image exists "$KIND_NODE_IMAGE"; then
    log "podman import $tarball"
    import_node "$tarball"
  fi
  log "$KIND_NODE_IMAGE (cached: $tarball)"
  exit 0
fi

k8s_bin=$(bash "$hack/tools.sh" --print-bin-dir)
kind_bin=$(bash "$hack/kind-tools.sh" --print-bin-dir)
bash "$hack/tools.sh" >/dev/null
bash "$hack/kind-tools.sh"
kind_src=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
k8s_src=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')
[[ -d "$kind_src/images/base/files" ]] || die "kind $KIND_VERSION's base files are missing from the Go module cache"

mkdir -p "$KIND_CACHE"
work=$(mktemp -d "$KIND_CACHE/.work-XXXXXX")
ctrd_pid=""
cleanup() {
  [[ -n "$ctrd_pid" ]] && kill "$ctrd_pid" 2>/dev/null && wait "$ctrd_pid" 2>/dev/null
  for img in "${made_images[@]}"; do podman rmi -f "$img" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
made_images=()
trap cleanup EXIT
mirror="${KIND_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# debootstrap <dir> <packages,...>: a Debian bookworm root file system, cached by package list.
debootstrap_cached() {
  local dir=$1 packages=$2 key
  key=$(printf '%s' "$packages" | sha256sum | cut -c1-12)
  local cached="$KIND_CACHE/debootstrap-bookworm-$key.tar"
  if [[ ! -f "$cached" ]]; then
    log "debootstrap bookworm ($packages)"
    debootstrap --variant=minbase --include="$packages" bookworm "$work/db-$key" "$mirror" >"$work/db-$key.log" 2>&1 \
      || { tail -20 "$work/db-$key.log" >&2; die "debootstrap failed (log above)"; }
    rm -rf "$work/db-$key"/var/cache/apt/archives/*.deb "$work/db-$key"/var/lib/apt/lists/*
    tar -C "$work/db-$key" --numeric-owner -cf "$cached.tmp" .
    mv "$cached.tmp" "$cached"
    rm -rf "$work/db-$key"
  fi
  mkdir -p "$dir"
  tar -C "$dir" --numeric-owner -xf "$cached"
}

# image <rootfs dir> <name> <archive> [podman import --change ...]: a docker-archive of one image.
image() {
  local dir=$1 name=$2 archive=$3
  shift 3
  local changes=(--change 'ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')
  for c in "$@"; do changes+=(--change "$c"); done
  tar -C "$dir" --numeric-owner -c . | podman import -q "${changes[@]}" - "$name" >/dev/null
  made_images+=("$name")
  podman save -q --format docker-archive -o "$archive" "$name" >/dev/null
}

# A root file system with only static binaries in /usr/local/bin (and /etc/passwd, /tmp).
static_rootfs() {
  local dir=$1
  shift
  mkdir -p "$dir"/{etc,tmp,usr/local/bin,var/lib}
  chmod 1777 "$dir/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532::/:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
  install -m 0755 "$@" "$dir/usr/local/bin/"
}

# 1. The component images, named as kubeadm $KUBERNETES_VERSION expects them.
imgs="$work/images"
mkdir -p "$imgs"
log "component images"
gcc -Os -static -DVERSION="$PAUSE_VERSION" -o "$work/pause" "$k8s_src/build/pause/linux/pause.c"
strip "$work/pause"
static_rootfs "$work/r-pause" "$work/pause"
image "$work/r-pause" "registry.k8s.io/pause:$PAUSE_VERSION" "$imgs/pause.tar" 'ENTRYPOINT ["/usr/local/bin/pause"]'
for c in kube-apiserver kube-controller-manager; do
  static_rootfs "$work/r-$c" "$k8s_bin/$c"
  image "$work/r-$c" "registry.k8s.io/$c:$KUBERNETES_VERSION" "$imgs/$c.tar" "ENTRYPOINT [\"/usr/local/bin/$c\"]"
done
static_rootfs "$work/r-kube-scheduler" "$kind_bin/kube-scheduler"
image "$work/r-kube-scheduler" "registry.k8s.io/kube-scheduler:$KUBERNETES_VERSION" "$imgs/kube-scheduler.tar" 'ENTRYPOINT ["/usr/local/bin/kube-scheduler"]'
static_rootfs "$work/r-etcd" "$k8s_bin/etcd"
image "$work/r-etcd" "registry.k8s.io/etcd:$KUBEADM_ETCD_TAG" "$imgs/etcd.tar" 'ENTRYPOINT ["/usr/local/bin/etcd"]'
static_rootfs "$work/r-coredns" "$kind_bin/coredns"
ln -s usr/local/bin/coredns "$work/r-coredns/coredns"
image "$work/r-coredns" "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "$imgs/coredns.tar" 'ENTRYPOINT ["/coredns"]'
# kube-proxy needs iptables; the registry the examples pull from is Debian's docker-registry.
debootstrap_cached "$work/r-debian" "iptables,conntrack,docker-registry,ca-certificates"
install -m 0755 "$k8s_bin/kube-proxy" "$work/r-debian/usr/local/bin/"
image "$work/r-debian" "registry.k8s.io/kube-proxy:$KUBERNETES_VERSION" "$imgs/kube-proxy.tar" 'ENTRYPOINT ["/usr/local/bin/kube-proxy"]'
image "$work/r-debian" "$KIND_REGISTRY_IMAGE" "$imgs/registry.tar" 'ENTRYPOINT ["/usr/bin/docker-registry"]' 'CMD ["serve","/etc/docker/registry/config.yml"]'

# 2. The node's root file system: what kind's base image installs, from Debian.
log "node root file system"
node="$work/node"
debootstrap_cached "$node" "systemd,systemd-sysv,dbus,containerd,runc,containernetworking-plugins,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,e2fsprogs,bash,ca-certificates,curl,jq,procps"
files="$kind_src/images/base/files"
cp -r --no-preserve=ownership "$files/etc/." "$node/etc/"
mkdir -p "$node/kind/bin" "$node/etc/kubernetes/manifests" "$node/opt/cni/bin" "$node/kind/manifests"
install -m 0755 "$files"/kind/bin/* "$node/kind/bin/"
install -m 0755 "$files"/usr/local/bin/* "$node/usr/local/bin/"
chmod -R u+w,go-w "$node/etc/systemd" "$node/etc/containerd" "$node/etc/default" "$node/etc/sysctl.d"
(
  cd "$node"
  find lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
  rm -f lib/systemd/system/multi-user.target.wants/* etc/systemd/system/*.wants/* \
    lib/systemd/system/local-fs.target.wants/* lib/systemd/system/sockets.target.wants/*udev* \
    lib/systemd/system/sockets.target.wants/*initctl* lib/systemd/system/basic.target.wants/*
  echo "ReadKMsg=no" >>etc/systemd/journald.conf
  ln -sf /usr/lib/systemd/systemd sbin/init
)
chroot "$node" systemctl enable kubelet.service containerd.service undo-mount-hacks.service >/dev/null 2>&1
chroot "$node" systemctl mask systemd-binfmt.service >/dev/null 2>&1
# Debian's containerd and runc, where kind's units and scripts look for them.
ln -sf /usr/bin/containerd "$node/usr/local/bin/containerd"
ln -sf /usr/bin/ctr "$node/usr/local/bin/ctr"
ln -sf /usr/bin/containerd-shim-runc-v2 "$node/usr/local/bin/containerd-shim-runc-v2"
mkdir -p "$node/usr/local/sbin"
ln -sf /usr/sbin/runc "$node/usr/local/sbin/runc"
# Debian's CNI plugins where kind's (and the chart's default cni.binDir) are: hard links, so that
# the agent sees real files through its hostPath mount.
for p in "$node"/usr/lib/cni/*; do ln -f "$p" "$node/opt/cni/bin/$(basename "$p")"; done
for b in kubelet kubeadm kubectl; do install -m 0755 "$kind_bin/$b" "$node/usr/bin/$b"; done
echo "$KUBERNETES_VERSION" >"$node/kind/version"
# containerd: kind's config with Debian's 1.6 in mind. restrict_oom_score_adj: the sandbox's
# bounding set lacks CAP_SYS_RESOURCE, which lowering an OOM score needs.
sed -i -e "s|sandbox_image = .*|sandbox_image = \"registry.k8s.io/pause:$PAUSE_VERSION\"|" \
  -e 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' "$node/etc/containerd/config.toml"
chroot "$node" ctr oci spec \
  | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
  | jq 'del(.process.rlimits)' >"$node/etc/containerd/cri-base.json"
# The pod network (kind's kindnetd needs a registry image): ptp + host-local on one node.
mkdir -p "$node/etc/cni/net.d"
install -m 0644 "$KIND_FILES/10-kind-ptp.conflist" "$node/etc/cni/net.d/"

# 3. The images, preloaded into the node's containerd (namespace k8s.io) by a throwaway
# containerd on the node's own /var/lib/containerd (CRI off: nothing else starts).
log "preloading images"
printf 'version = 2\nroot = "%s"\nstate = "%s"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "%s"\n' \
  "$node/var/lib/containerd" "$work/ctrd-state" "$work/ctrd.sock" >"$work/ctrd.toml"
containerd --config "$work/ctrd.toml" >"$work/ctrd.log" 2>&1 &
ctrd_pid=$!
for _ in $(seq 100); do [[ -S "$work/ctrd.sock" ]] && break; sleep 0.1; done
[[ -S "$work/ctrd.sock" ]] || die "the throwaway containerd did not start: $(tail -5 "$work/ctrd.log")"
for a in "$imgs"/*.tar; do
  ctr --address "$work/ctrd.sock" -n k8s.io images import --all-platforms --no-unpack --digests "$a" >/dev/null
done
ctr --address "$work/ctrd.sock" -n k8s.io images ls -q >&2
kill "$ctrd_pid"
wait "$ctrd_pid" 2>/dev/null || true
ctrd_pid=""

log "packing $tarball"
tar -C "$node" --numeric-owner -cf "$tarball.tmp" .
mv "$tarball.tmp" "$tarball"
import_node "$tarball"
log "$KIND_NODE_IMAGE ($(du -h "$tarball" | cut -f1))"
