#!/usr/bin/env bash
# A kind cluster with Bulkhead installed by its Helm chart (issue #19; docs/install.md,
# "Walkthrough on kind"): the registry-free node image (kind-image.sh) run by kind's podman
# provider, the chart's images loaded with `kind load image-archive`, a registry on the node's
# loopback holding the examples' images, `helm install` with values that fit kind, and the
# examples applied. Idempotent: a second call finds the cluster and the release and only
# re-applies. kind-down.sh removes all of it and undoes the host preparation.
#
# Host preparation, all recorded in the state directory and undone by kind-down.sh:
#   - podman's default ulimits (kind passes none and the nofile hard limit here is 20000): a
#     containers.conf of our own, passed with CONTAINERS_CONF, so /etc/containers is untouched;
#   - the podman network bulkhead-kind on a subnet no route on this machine uses;
#   - unreachable routes for the node's own ranges (services 10.97.0.0/16, pods
#     10.244.0.0/16, instances 10.89.0.0/24), so nothing the node forwards for them leaves
#     this machine;
#   - /lib/modules, which kind's provider bind-mounts, created empty if missing;
#   - the kernel settings the kubelet writes on start (they are host-wide from a node
#     container): their values are saved here and restored on down.
#
# Env: BULKHEAD_STATE_DIR (default .bulkhead), BULKHEAD_PORT_OFFSET (the API server listens on
# 127.0.0.1:6443+offset), KIND_CLUSTER_NAME (default bulkhead), KIND_SUBNET (default
# 10.250.0.0/24), KIND_SKIP_EXAMPLES=1.
#
# Usage: e2e/hack/kind-up.sh
set -euo pipefail
hack="$(cd "$(dirname "$0")" && pwd)"
source "$hack/versions.env"
source "$hack/kind-lib.sh"
source "$hack/kind-env.sh"
log() { printf '[kind-up] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
[[ $(id -u) -eq 0 ]] || die "kind with podman needs root here (privileged node containers)"
command -v podman >/dev/null || die "podman is missing: run e2e/hack/install-deps.sh --kind"
for a in "$REPO_ROOT"/target/images/bulkhead-{controller,node-agent}.tar; do
  [[ -f "$a" ]] || die "$a is missing: run make images first"
done

env -u CONTAINERS_CONF bash "$hack/kind-image.sh"
mkdir -p "$KIND_STATE"
prepare_host
# Node images of an older recipe go (podman keeps one a container still runs).
for old in "$KIND_CACHE"/node-*.tar; do
  [[ "$old" == *"-$KIND_IMAGE_KEY.tar" ]] || rm -f "$old"
done
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/kindest/node:.*-bulkhead-' | grep -v -- "-$KIND_IMAGE_KEY\$" || true); do
  podman rmi "$old" >/dev/null 2>&1 || true
done

if ! kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER_NAME"; then
  render_config >"$KIND_STATE/kind.yaml"
  log "kind create cluster --name $KIND_CLUSTER_NAME"
  kind create cluster --name "$KIND_CLUSTER_NAME" --image "$KIND_NODE_IMAGE" \
    --config "$KIND_STATE/kind.yaml" --kubeconfig "$KUBECONFIG" --wait 5m
fi
kubectl get nodes -o wide

log "kind load image-archive (make images)"
for a in "$REPO_ROOT"/target/images/bulkhead-{controller,node-agent}.tar; do
  kind load image-archive "$a" --name "$KIND_CLUSTER_NAME"
done
helm_install
start_registry
[[ "${KIND_SKIP_EXAMPLES:-0}" == 1 ]] || apply_examples
log "cluster $KIND_CLUSTER_NAME up: export KUBECONFIG=$KUBECONFIG"
