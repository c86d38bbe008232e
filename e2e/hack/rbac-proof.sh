#!/usr/bin/env bash
# Shows that every rule of the chart's RBAC is needed: removes each rule of the controller's
# and the node agent's ClusterRole and Role in turn, runs a scenario (a blue/green Workload
# with a WorkloadService and a Localhost profile, a host whose Lease expired long ago, a
# seccomp recording) with the controller and an agent as the chart's ServiceAccounts, and
# records what fails (the API server refusing a request on the rule's resource, or the
# scenario never completing). A few minutes (a few seconds per rule). The result is in $BULKHEAD_STATE_DIR/rbac-proof.txt.
#
# Usage: BULKHEAD_STATE_DIR=... BULKHEAD_PORT_OFFSET=... e2e/hack/rbac-proof.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
state="${BULKHEAD_STATE_DIR:-$root/.bulkhead}"
cargo build --workspace --bins
bash e2e/hack/up.sh
cargo test -p bulkhead-e2e --test chart -- --nocapture every_proven_rule_of_the_chart_rbac_is_needed
echo "result: $state/rbac-proof.txt"
