#!/usr/bin/env bash
# Runs the integration and end-to-end tests against the local control plane. Starts it when
# it is not running and, in that case, stops it again afterwards (by PID, via down.sh), so a
# test run leaves the machine as it found it. Set BULKHEAD_KEEP=1 to leave it running.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
state="${BULKHEAD_STATE_DIR:-$root/.bulkhead}"

was_running=0
if [[ -f "$state/kubeconfig" ]] && kubectl --kubeconfig "$state/kubeconfig" get --raw /readyz >/dev/null 2>&1; then
  was_running=1
fi

cleanup() {
  if [[ $was_running -eq 0 && "${BULKHEAD_KEEP:-0}" != 1 ]]; then
    bash e2e/hack/down.sh
  fi
}
trap cleanup EXIT

# The agent binary the tests start, and the local system's own agent.
cargo build --workspace --bins
bash e2e/hack/up.sh
cargo test -p bulkhead-e2e --no-fail-fast -- --test-threads="${BULKHEAD_TEST_THREADS:-4}"
