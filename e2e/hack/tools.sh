#!/usr/bin/env bash
# Builds the pinned Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-proxy), etcd and helm from Go modules and caches them outside the repository,
# keyed by version. A second call with a warm cache does nothing.
#
# cosign (signing test images for image updates, issue #17) is built the same way into its own
# directory, keyed by its version: e2e/hack/tools.sh --print-cosign prints its path.
#
# Usage: e2e/hack/tools.sh [--print-bin-dir | --print-cosign]
set -euo pipefail

source "$(dirname "$0")/versions.env"

cache_root="${BULKHEAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead}"
bin_dir="$cache_root/bin/k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}"

cosign_dir="$cache_root/bin/cosign-${COSIGN_VERSION}"

if [[ "${1:-}" == "--print-bin-dir" ]]; then
  echo "$bin_dir"
  exit 0
fi
if [[ "${1:-}" == "--print-cosign" ]]; then
  echo "$cosign_dir/cosign"
  exit 0
fi

log() { printf '[tools] %s\n' "$*" >&2; }

need_go() {
  command -v go >/dev/null || { log "go is required to build the control plane; install Go 1.24 or newer"; exit 1; }
}

mkdir -p "$bin_dir"
export GOFLAGS="-mod=mod"
export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

# kube-apiserver, kube-controller-manager, kube-proxy from k8s.io/kubernetes through a wrapper
# module: k8s.io/kubernetes' own go.mod replaces its staging modules with local paths, which a
# dependent module cannot use, so the wrapper replaces each with its published v0.Y.Z version.
build_kubernetes() {
  local missing=()
  for b in kube-apiserver kube-controller-manager kube-proxy; do
    [[ -x "$bin_dir/$b" ]] || missing+=("$b")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  need_go
  local work="$cache_root/src/kubernetes-$KUBERNETES_VERSION"
  mkdir -p "$work"
  local staging="v0.${KUBERNETES_VERSION#v1.}"
  log "building ${missing[*]} $KUBERNETES_VERSION (staging modules $staging); a cold build takes many minutes"
  (
    cd "$work"
    if [[ ! -f go.mod ]]; then
      local gomod
      gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
      {
        echo "module bulkhead.dev/k8s-tools"
        echo
        echo "go 1.24"
        echo
        echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
        echo
        grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/' "$gomod" \
          | awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}'
      } > go.mod.tmp
      mv go.mod.tmp go.mod
      cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
      go mod tidy -e >/dev/null 2>&1 || true
      go get "k8s.io/kubernetes@$KUBERNETES_VERSION"
    fi
    local ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2)"
    for b in "${missing[@]}"; do
      log "go build $b"
      go build -trimpath -ldflags "$ldflags" -o "$bin_dir/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$bin_dir/$b.tmp" "$bin_dir/$b"
    done
  )
}

# etcd: go.etcd.io/etcd/server/v3 is the main package; its go.mod replaces the sibling etcd
# modules with local paths, so the wrapper pins each to the same published version.
build_etcd() {
  [[ -x "$bin_dir/etcd" ]] && return 0
  need_go
  local work="$cache_root/src/etcd-$ETCD_VERSION"
  mkdir -p "$work"
  log "building etcd $ETCD_VERSION"
  (
    cd "$work"
    if [[ ! -f go.mod ]]; then
      cat > go.mod <<MOD
module bulkhead.dev/etcd-tools

go 1.24

require go.etcd.io/etcd/server/v3 $ETCD_VERSION

replace (
	go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 $ETCD_VERSION
	go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 $ETCD_VERSION
	go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 $ETCD_VERSION
)
MOD
      cat > tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
      go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    fi
    go build -trimpath -ldflags "-s -w" -o "$bin_dir/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$bin_dir/etcd.tmp" "$bin_dir/etcd"
  )
}

build_helm() {
  [[ -x "$bin_dir/helm" ]] && return 0
  need_go
  log "building helm $HELM_VERSION"
  GOBIN="$bin_dir" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

# cosign from its Go module (cold: about 4 minutes on 2 cores, a 137 MB binary). The e2e harness
# signs test images with it offline: a local key pair, no transparency log.
build_cosign() {
  [[ -x "$cosign_dir/cosign" ]] && return 0
  need_go
  mkdir -p "$cosign_dir"
  log "building cosign $COSIGN_VERSION"
  GOBIN="$cosign_dir" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/release-utils/version.gitVersion=$COSIGN_VERSION" \
    "github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION"
}

build_etcd
build_helm
build_kubernetes
build_cosign
log "binaries in $bin_dir; cosign in $cosign_dir"
