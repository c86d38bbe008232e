#!/usr/bin/env bash
# make test-selinux: the local system (started here if it is not running), the SELinux VM
# selinux-1 with this checkout's agent, the tests that need it, then the VM stopped (and the
# local system, if this script started it).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
state="${BULKHEAD_STATE_DIR:-$root/.bulkhead}"
was_running=0
if [[ -f "$state/kubeconfig" ]] && kubectl --kubeconfig "$state/kubeconfig" get --raw /readyz >/dev/null 2>&1; then
  was_running=1
fi
cleanup() {
  bash e2e/selinux/host.sh down || true
  if [[ $was_running -eq 0 && "${BULKHEAD_KEEP:-0}" != 1 ]]; then
    bash e2e/hack/down.sh
  fi
}
trap cleanup EXIT
command -v socat >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null
cargo build --workspace --bins
cargo build --release -p bulkhead-node-agent
bash e2e/hack/up.sh
# First without the VM (no host enforces SELinux), then with it.
cargo test -p bulkhead-e2e --test selinux_host -- --ignored no_enforcing_host
bash e2e/selinux/host.sh up
cargo test -p bulkhead-e2e --test selinux_host -- --ignored --skip no_enforcing_host --test-threads=2
