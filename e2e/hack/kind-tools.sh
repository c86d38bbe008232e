#!/usr/bin/env bash
# Builds what a kind node image assembled without a registry needs beyond tools.sh's control
# plane (issue #19; ../shared/research/kind-offline.md): kubelet, kubeadm, kubectl and
# kube-scheduler at the pinned Kubernetes version (with the full version stamp kubeadm checks),
# kind itself and coredns, cached outside the repository keyed by version. A second call with a
# warm cache does nothing. Cold: several minutes on 2 cores (the Go module cache tools.sh warmed
# is reused).
#
# Usage: e2e/hack/kind-tools.sh [--print-bin-dir]
set -euo pipefail

source "$(dirname "$0")/versions.env"
cache_root="${BULKHEAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead}"
bin_dir="$cache_root/bin/kind-${KIND_VERSION}_k8s-${KUBERNETES_VERSION}_coredns-${COREDNS_VERSION}"
if [[ "${1:-}" == "--print-bin-dir" ]]; then
  echo "$bin_dir"
  exit 0
fi
log() { printf '[kind-tools] %s\n' "$*" >&2; }
command -v go >/dev/null || { log "go is required"; exit 1; }
export GOFLAGS="-mod=mod" CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
mkdir -p "$bin_dir"

# The control plane's wrapper module (tools.sh makes it); kubeadm refuses a v0.0.0 build, so
# stamp both version packages as hack/lib/version.sh does.
bash "$(dirname "$0")/tools.sh" >/dev/null
work="$cache_root/src/kubernetes-$KUBERNETES_VERSION"
minor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)
stamp=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  stamp+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
for b in kubelet kubeadm kubectl kube-scheduler; do
  [[ -x "$bin_dir/$b" ]] && continue
  log "go build $b $KUBERNETES_VERSION"
  (cd "$work" && go build -trimpath -ldflags "-s -w$stamp" -o "$bin_dir/$b.tmp" "k8s.io/kubernetes/cmd/$b")
  mv "$bin_dir/$b.tmp" "$bin_dir/$b"
done
if [[ ! -x "$bin_dir/kind" ]]; then
  log "go install sigs.k8s.io/kind@$KIND_VERSION"
  GOBIN="$bin_dir" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kind@$KIND_VERSION"
fi
if [[ ! -x "$bin_dir/coredns" ]]; then
  log "go install github.com/coredns/coredns@$COREDNS_VERSION"
  GOBIN="$bin_dir" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
fi
log "binaries in $bin_dir"
