#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build Bulkhead and run its local system and
# tests: Debian packages (the container runtime, CNI plugins, registry and image tools,
# protoc, openssl, iproute2), then the pinned Go-built control plane (see tools.sh).
# Safe to run repeatedly: it installs only what is missing.
#
# Usage: e2e/hack/install-deps.sh [--kind]
#   --kind  also what the kind cluster needs (make kind-image, kind-up, test-kind: podman,
#           debootstrap, gcc for the static pause binary) and its Go-built tools
set -euo pipefail

log() { printf '[deps] %s\n' "$*" >&2; }

packages=(
  ca-certificates openssl iproute2 iptables procps curl jq make
  containerd runc containernetworking-plugins docker-registry skopeo umoci busybox-static
  protobuf-compiler
  # seccomp user notification in the node agent (the libseccomp crate links it)
  libseccomp-dev pkg-config
  python3 python3-venv # make bench: its charts (matplotlib in a venv, see bench/hack/bench.sh)
)
kind=0
case "${1:-}" in
  --kind) kind=1 ;;
  "") ;;
  *) log "unknown argument $1 (only --kind)"; exit 1 ;;
esac
# kind's podman provider (Debian's docker.io cannot run privileged containers in sandboxes
# without CAP_SYS_RESOURCE; see e2e/hack/kind-image.sh) and the node image's build.
[[ $kind == 1 ]] && packages+=(podman debootstrap gcc libc6-dev)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    log "missing Debian packages: ${missing[*]}; run this script as root (or sudo apt-get install them)"
    exit 1
  fi
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the packaged containerd and registry as services; Bulkhead runs private
  # instances of both under .bulkhead/ and leaves the system ones alone.
fi

for tool in go cargo; do
  command -v "$tool" >/dev/null || { log "$tool is required (Go >= 1.24, Rust >= 1.89)"; exit 1; }
done

bash "$(dirname "$0")/tools.sh"
[[ $kind == 1 ]] && bash "$(dirname "$0")/kind-tools.sh"
log "all dependencies present"
