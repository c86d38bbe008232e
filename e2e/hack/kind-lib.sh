# Shared by kind-image.sh, kind-up.sh and kind-down.sh (issue #19): names, paths and the cache
# key of the registry-free kind node image. Needs versions.env sourced first.
# shellcheck shell=bash

KIND_HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KIND_FILES="$(cd "$KIND_HACK/../kind" && pwd)"
KIND_CACHE="${BULKHEAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead}/kind"
# The image names kubeadm $KUBERNETES_VERSION expects (cmd/kubeadm/app/constants); the etcd
# image carries the project's etcd ($ETCD_VERSION) under kubeadm's tag.
PAUSE_VERSION=3.10.1
KUBEADM_ETCD_TAG=3.6.5-0
KIND_REGISTRY_IMAGE=localhost/bulkhead/registry:kind
# Everything the image is built from: a change to any of it builds a new cache entry.
KIND_IMAGE_KEY=$(cat "$KIND_HACK/versions.env" "$KIND_HACK/kind-image.sh" "$KIND_HACK/kind-lib.sh" \
  "$KIND_FILES/10-kind-ptp.conflist" | sha256sum | cut -c1-12)
KIND_NODE_IMAGE="localhost/kindest/node:$KUBERNETES_VERSION-bulkhead-$KIND_IMAGE_KEY"

# import_node <tarball>: the node's root file system as a podman image, with the metadata kind's
# base image sets (systemd as PID 1 behind kind's entrypoint).
import_node() {
  podman import \
    --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
    --change 'ENV container=docker' \
    --change 'STOPSIGNAL SIGRTMIN+3' \
    "$1" "$KIND_NODE_IMAGE" >/dev/null
}
