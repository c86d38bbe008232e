#!/usr/bin/env bash
# Stops every process e2e/hack/up.sh started, by its recorded PID (SIGTERM, a bounded wait, then
# SIGKILL; never by name), in reverse start order, then deletes the state directory
# (${BULKHEAD_STATE_DIR:-<repo>/.bulkhead}: pki, etcd data, pids, kubeconfigs, logs).
# Does nothing, successfully, when nothing is running.
#
# Usage: e2e/hack/down.sh
set -euo pipefail

LOG_TAG=down
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

main() {
  if [[ ! -e "$STATE_DIR" ]]; then
    log "nothing to do: $STATE_DIR does not exist"
    return 0
  fi
  [[ -f "$STATE_MARKER" ]] ||
    die "refusing to touch $STATE_DIR: it has no $(basename "$STATE_MARKER") marker, so up.sh did not create it"
  take_lock

  local comp failed=0
  while read -r comp; do
    stop_component "$comp" || failed=1
  done < <(components_in_stop_order)
  ((failed == 0)) || die "some processes could not be stopped; kept $STATE_DIR (pid files included)"

  rm -rf "$STATE_DIR"
  log "removed $STATE_DIR"

  local port busy
  for port in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$KCM_PORT"; do
    busy=$(port_listeners "$port")
    if [[ -n "$busy" ]]; then
      log "warning: port $port is still in use by a process up.sh did not record:"
      printf '%s\n' "$busy" >&2
    fi
  done
}

main "$@"
