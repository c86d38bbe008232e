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

# diagnose_node: why the node's control plane did not come up, short enough to read at the
# end of a CI log: kubeadm's verdict lines, the node's containerd tasks, the kubelet's last
# words, the last lines of each control-plane component's log, and this machine's load.
# (The node image has ctr, not crictl.)
diagnose_node() {
  local node="$KIND_CLUSTER_NAME-control-plane"
  log "kubeadm said:"
  grep -E 'error execution phase|is not healthy|not ready|timed out|context deadline|\[(control-plane|kubelet)-check\]' \
    "$KIND_STATE/create.log" | grep -v '^\s' | tail -12 | cut -c1-300 >&2 || true
  log "the node's tasks:"
  podman exec "$node" ctr -n k8s.io tasks ls 2>&1 | head -12 | cut -c1-160 >&2 || true
  log "kubelet (last 15 lines):"
  podman exec "$node" journalctl -u kubelet --no-pager -n 15 2>&1 | cut -c1-300 >&2 || true
  podman exec "$node" sh -c 'for f in /var/log/pods/kube-system_*/*/*.log; do
      echo "== ${f#/var/log/pods/kube-system_}"; tail -n 5 "$f"; done' 2>&1 | cut -c1-300 >&2 || true
  log "load: $(cut -d' ' -f1-3 /proc/loadavg); $(free -m | awk '/^Mem:/ {print $7 " MiB available"}'); $(df -h --output=avail /var/lib/containers 2>/dev/null | tail -1 | tr -d ' ') free for podman's storage"
}

# create_cluster: kind create cluster. kubeadm's init on a loaded machine has failed once in
# CI (a control plane not healthy within kubeadm's 4 minutes); kind keeps the failed node
# (--retain) so that the diagnosis above can read it, then it goes and the create runs once more.
create_cluster() {
  local attempt
  render_config >"$KIND_STATE/kind.yaml"
  for attempt in 1 2; do
    log "kind create cluster --name $KIND_CLUSTER_NAME (attempt $attempt of 2)"
    if kind create cluster --name "$KIND_CLUSTER_NAME" --image "$KIND_NODE_IMAGE" --retain \
      --config "$KIND_STATE/kind.yaml" --kubeconfig "$KUBECONFIG" --wait 5m >"$KIND_STATE/create.log" 2>&1; then
      grep -v '^\s*$' "$KIND_STATE/create.log" | tail -3 >&2
      return 0
    fi
    log "kind create cluster failed (attempt $attempt; its whole output: $KIND_STATE/create.log)"
    diagnose_node
    kind delete cluster --name "$KIND_CLUSTER_NAME" --kubeconfig "$KUBECONFIG" >/dev/null 2>&1 || true
  done
  die "kind create cluster failed twice (diagnosis above)"
}

if ! kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER_NAME"; then
  create_cluster
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
