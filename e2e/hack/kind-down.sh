#!/usr/bin/env bash
# Removes what kind-up.sh made (issue #19): the kind cluster (its node container and volume),
# the podman network bulkhead-kind, and the host preparation it recorded (the kernel settings
# the kubelet wrote are restored to their saved values, /lib/modules removed if kind-up made
# it). The node image stays cached (make kind-image). Safe to run twice.
#
# Usage: e2e/hack/kind-down.sh
set -euo pipefail
hack="$(cd "$(dirname "$0")" && pwd)"
source "$hack/versions.env"
source "$hack/kind-lib.sh"
source "$hack/kind-env.sh"
log() { printf '[kind-down] %s\n' "$*" >&2; }
[[ $(id -u) -eq 0 ]] || { log "error: run as root, like kind-up.sh"; exit 1; }
command -v podman >/dev/null || { log "podman is not installed: nothing to remove"; exit 0; }
[[ -d "$KIND_STATE" ]] || mkdir -p "$KIND_STATE"
if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER_NAME"; then
  log "kind delete cluster --name $KIND_CLUSTER_NAME"
  kind delete cluster --name "$KIND_CLUSTER_NAME" --kubeconfig "$KUBECONFIG"
fi
# kind deletes the node's /var volume with the node; one left by an interrupted create carries
# the node's name as its label.
for v in $(podman volume ls -q --filter "label=$KIND_CLUSTER_NAME-control-plane" 2>/dev/null); do
  podman volume rm -f "$v" >/dev/null
done
undo_host
rm -rf "$KIND_STATE"
log "down"
