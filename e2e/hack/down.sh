#!/usr/bin/env bash
# Stops every process e2e/hack/up.sh started, by its recorded PID (SIGTERM, a bounded wait, then
# SIGKILL; never by name), in reverse start order, then deletes the state directory
# (${BULKHEAD_STATE_DIR:-<repo>/.bulkhead}: pki, etcd data, containerd, registry, pids,
# kubeconfigs, logs). Does nothing, successfully, when nothing is running.
#
# Before containerd stops, every task in every namespace of the private containerd is killed and
# deleted (which also ends its shim and unmounts its root filesystem), and its containers,
# images, leases, snapshots and content are removed. If containerd is not running but a killed
# run left tasks, containerd is started again to do that (it also cleans up after dead shims).
# Afterwards, as a last resort: shims still naming the private containerd's socket are killed
# by PID, the sockets and runc state of dead shims are removed, anything still mounted under the
# state directory is unmounted, and the empty cgroups of Bulkhead containers
# (/bulkhead/<container-id> in each hierarchy) are removed with rmdir. The state directory is
# deleted only when no shim and no mount under it remain; so is the runtime directory
# (containerd's root and state, see lib.sh), and only when its marker names this state directory.
#
# Usage: e2e/hack/down.sh
set -euo pipefail

LOG_TAG=down
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Seconds to wait for a killed task to report STOPPED.
TASK_STOP_TIMEOUT="${BULKHEAD_TASK_STOP_TIMEOUT:-20}"

# Prints "<id> <status>" for each task of namespace $1.
task_statuses() {
  ctr_local -n "$1" tasks ls | awk 'NR > 1 { print $1, $3 }'
}

# Kills and deletes every task of namespace $1, then removes everything else in it.
clean_namespace() {
  local ns=$1 ids=() id deadline left snapshotter keys n pass
  mapfile -t ids < <(ctr_local -n "$ns" tasks ls -q)
  for id in "${ids[@]}"; do
    ctr_local -n "$ns" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  deadline=$((SECONDS + TASK_STOP_TIMEOUT))
  while :; do
    left=$(task_statuses "$ns" | awk '$2 != "STOPPED" && $2 != "CREATED"' || true)
    [[ -z "$left" ]] && break
    if ((SECONDS >= deadline)); then
      log "warning: namespace $ns: tasks not stopped ${TASK_STOP_TIMEOUT}s after SIGKILL: $left"
      break
    fi
    sleep 0.2
  done
  for id in "${ids[@]}"; do
    ctr_local -n "$ns" tasks rm -f "$id" >/dev/null 2>&1 ||
      log "warning: namespace $ns: could not delete task $id"
  done

  mapfile -t ids < <(ctr_local -n "$ns" containers ls -q)
  ((${#ids[@]} == 0)) || ctr_local -n "$ns" containers rm "${ids[@]}" >/dev/null ||
    log "warning: namespace $ns: could not delete every container"
  mapfile -t ids < <(ctr_local -n "$ns" images ls -q)
  ((${#ids[@]} == 0)) || ctr_local -n "$ns" images rm --sync "${ids[@]}" >/dev/null ||
    log "warning: namespace $ns: could not delete every image"
  mapfile -t ids < <(ctr_local -n "$ns" leases ls -q)
  ((${#ids[@]} == 0)) || ctr_local -n "$ns" leases rm --sync "${ids[@]}" >/dev/null ||
    log "warning: namespace $ns: could not delete every lease"
  # Snapshots nothing references any more: children before parents, so a few passes.
  while read -r snapshotter; do
    for ((pass = 0; pass < 10; pass++)); do
      mapfile -t keys < <(ctr_local -n "$ns" snapshots --snapshotter "$snapshotter" ls |
        awk 'NR > 1 { print $1 }')
      ((${#keys[@]} > 0)) || break
      n=0
      for id in "${keys[@]}"; do
        ctr_local -n "$ns" snapshots --snapshotter "$snapshotter" rm "$id" >/dev/null 2>&1 &&
          n=$((n + 1))
      done
      ((n > 0)) || {
        log "warning: namespace $ns: could not delete $snapshotter snapshots ${keys[*]}"
        break
      }
    done
  done < <(ctr_local plugins ls | awk '$1 == "io.containerd.snapshotter.v1" && $NF == "ok" { print $2 }')
  mapfile -t ids < <(ctr_local -n "$ns" content ls -q)
  ((${#ids[@]} == 0)) || ctr_local -n "$ns" content rm "${ids[@]}" >/dev/null ||
    log "warning: namespace $ns: could not delete every blob"
  ctr_local namespaces rm "$ns" >/dev/null 2>&1 ||
    log "warning: could not remove containerd namespace $ns (not empty?)"
}

# Empties the private containerd before it stops. Starts it again if it is not running but a
# killed run left tasks (live shims, or task bundles): containerd then stops them through their
# shims, or runs "runc delete --force" itself for a task whose shim is dead.
clean_containerd() {
  local nss=() ns
  if ! component_pid containerd >/dev/null; then
    [[ -s "$CONTAINERD_CONFIG" ]] || return 0
    [[ -n "$(our_shim_pids)" ]] ||
      compgen -G "$CONTAINERD_STATE/io.containerd.runtime.v2.task/*/*" >/dev/null ||
      return 0
    log "containerd is not running but a killed run left tasks: starting it to stop them"
    start_containerd
  fi
  if ! mapfile -t nss < <(ctr_local namespaces ls -q); then
    log "warning: cannot list the namespaces of containerd $CONTAINERD_SOCK"
    return 0
  fi
  for ns in "${nss[@]}"; do
    [[ -n "$ns" ]] || continue
    log "containerd namespace $ns: stopping its tasks, removing its containers and images"
    clean_namespace "$ns"
  done
}

# Last resort for shims that outlived containerd: SIGKILL each one's children (the container's
# init), then the shim, by PID.
kill_leftover_shims() {
  local pids=() children=() pid child i
  mapfile -t pids < <(our_shim_pids)
  ((${#pids[@]} > 0)) || return 0
  for pid in "${pids[@]}"; do
    log "warning: shim $pid of $CONTAINERD_SOCK outlived containerd; killing it and its children"
    # /proc/PID/task/TID/children: space-separated PIDs.
    read -r -a children < <(cat /proc/"$pid"/task/*/children 2>/dev/null | tr '\n' ' ') || true
    for child in "${children[@]}"; do
      kill -KILL "$child" 2>/dev/null || true
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  for ((i = 0; i < 50; i++)); do
    [[ -z "$(our_shim_pids)" ]] && return 0
    sleep 0.1
  done
  log "error: shims still running: $(our_shim_pids | tr '\n' ' ')"
  return 1
}

# A shim that was killed leaves its socket (/run/containerd/s/<hash of our address, ns, id>,
# named in its bundle's "address" file) and runc's state for its container (<runc root>/<ns>/<id>,
# default root /run/containerd/runc) behind; containerd's own clean-up of a dead shim's task
# removes the bundle but not the socket. record_task_leftovers notes both for every task bundle
# of the private containerd before anything stops; remove_task_leftovers removes what is still
# there once no shim of ours runs: the socket, and the runc state only if its state.json names
# that very bundle (another containerd's container may have the same namespace and id).
TASK_SOCKETS=()
TASK_RUNC_STATES=()
record_task_leftovers() {
  local bundle ns id addr root
  # (containerd's state was under the state directory before it moved to the runtime directory)
  for bundle in "$CONTAINERD_STATE"/io.containerd.runtime.v2.task/*/* \
    "$CONTAINERD_DIR"/state/io.containerd.runtime.v2.task/*/*; do
    [[ -d "$bundle" ]] || continue
    id=${bundle##*/}
    ns=${bundle%/*}
    ns=${ns##*/}
    addr=$(cat "$bundle/address" 2>/dev/null || true)
    addr=${addr#unix://}
    [[ ! "$addr" =~ ^/run/containerd/s/[0-9a-f]{64}$ ]] || TASK_SOCKETS+=("$addr")
    root=$(sed -n 's/.*"root": *"\([^"]*\)".*/\1/p' "$bundle/options.json" 2>/dev/null || true)
    TASK_RUNC_STATES+=("${root:-/run/containerd/runc}/$ns/$id|$bundle")
  done
}

remove_task_leftovers() {
  local addr entry rstate bundle
  for addr in "${TASK_SOCKETS[@]}"; do
    [[ -S "$addr" ]] || continue
    log "removing $addr, the socket of a dead shim"
    rm -f "$addr"
  done
  for entry in "${TASK_RUNC_STATES[@]}"; do
    rstate=${entry%%|*}
    bundle=${entry#*|}
    if [[ -f "$rstate/state.json" ]] && grep -qF "\"bundle=$bundle\"" "$rstate/state.json"; then
      log "removing runc's state $rstate of a dead container"
      rm -rf "$rstate"
    fi
  done
}

# Prints the mount points under $1 (or $1 itself), deepest first.
mounts_under() {
  local dir=$1 mp
  while read -r _ _ _ _ mp _; do
    mp=${mp//\\040/ }
    mp=${mp//\\011/$'\t'}
    mp=${mp//\\134/\\}
    [[ "$mp" == "$dir" || "$mp" == "$dir"/* ]] && printf '%s\n' "$mp"
  done </proc/self/mountinfo | awk -F/ '{ print NF "\t" $0 }' | sort -rn -k1,1 | cut -f2-
}

# Unmounts what is still mounted under the state and runtime directories.
unmount_state() {
  local dir mp left failed=0
  for dir in "$STATE_DIR" "$RUNTIME_DIR"; do
    dir=$(realpath -m "$dir")
    while read -r mp; do
      [[ -n "$mp" ]] || continue
      log "unmounting $mp"
      umount -l "$mp" || log "warning: umount -l $mp failed"
    done < <(mounts_under "$dir")
    left=$(mounts_under "$dir")
    if [[ -n "$left" ]]; then
      log "error: still mounted under $dir: $left"
      failed=1
    fi
  done
  return "$failed"
}

# Deletes the runtime directory if its marker says it is this state directory's (and
# $RUNTIME_ROOT once empty). Another one is kept, with a warning.
remove_runtime_dir() {
  [[ -e "$RUNTIME_DIR" ]] || return 0
  if [[ ! -f "$RUNTIME_MARKER" || "$(cat "$RUNTIME_MARKER")" != "$STATE_DIR" ]]; then
    log "warning: kept $RUNTIME_DIR: its marker $RUNTIME_MARKER does not name $STATE_DIR"
    return 0
  fi
  rm -rf --one-file-system "$RUNTIME_DIR"
  [[ -n "${BULKHEAD_RUNTIME_DIR:-}" ]] || rmdir "$RUNTIME_ROOT" 2>/dev/null || true
  log "removed $RUNTIME_DIR"
}

# rmdir (never rm -r) of the empty cgroups under /bulkhead in every cgroup hierarchy. A cgroup
# that still has processes (of a container the other local system runs, say) cannot be removed
# and is kept.
remove_cgroups() {
  local root dir sub kept=()
  while read -r root; do
    dir="$root/$BULKHEAD_CGROUP_PARENT"
    [[ -d "$dir" ]] || continue
    while IFS= read -r -d '' sub; do
      rmdir "$sub" 2>/dev/null || kept+=("$sub")
    done < <(find "$dir" -mindepth 1 -depth -type d -print0 2>/dev/null)
    rmdir "$dir" 2>/dev/null || true
  done < <(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) ~ /^cgroup2?$/) print $5; break } }' \
    /proc/self/mountinfo | sort -u)
  ((${#kept[@]} == 0)) ||
    log "kept cgroups that still have processes (another local system's containers?): $(
      printf '%s\n' "${kept[@]#*/"$BULKHEAD_CGROUP_PARENT"/}" | sort -u | tr '\n' ' ')"
}

# The network walls of a bridge (node-agent/src/walls/render.rs): the mangle jumps to its
# chains BE-/BI-/BH-<bridge> (and B6-<bridge> for IPv6), then those chains, the
# per-instance ones under them and the shared ones (BS-<bridge>-<hash>). Names end at the
# bridge name or a dash, so bh1's walls never take bh12's.
remove_walls() {
  local bridge=$1 tables rule chain re
  re="^B[EIHS6]-$bridge(-[0-9a-f]+)?\$"
  for tables in iptables ip6tables; do
    while read -r rule; do
      [[ -n "$rule" ]] || continue
      # shellcheck disable=SC2086 # the rule's words are iptables arguments
      "$tables" -w -t mangle ${rule/-A /-D } 2>/dev/null || true
    done < <("$tables" -w -t mangle -S 2>/dev/null | grep -E -- "^-A (FORWARD|INPUT) .*-j B[EIH6]-$bridge\$" || true)
    for chain in $("$tables" -w -t mangle -S 2>/dev/null | sed -n 's/^-N //p' | grep -E "$re" || true); do
      "$tables" -w -t mangle -F "$chain" 2>/dev/null || true
    done
    for chain in $("$tables" -w -t mangle -S 2>/dev/null | sed -n 's/^-N //p' | grep -E "$re" || true); do
      "$tables" -w -t mangle -X "$chain" 2>/dev/null || true
    done
  done
}

# kube-proxy's network (up.sh, proxy_network): the host's rules marked with this system's
# comment, the veth (its route goes with it) and the network namespace (its KUBE-* chains go
# with it). kube-proxy itself was stopped by PID before.
remove_proxy_network() {
  local table rule
  for table in nat filter; do
    while read -r rule; do
      [[ -n "$rule" ]] || continue
      eval iptables -w -t "$table" "${rule/-A /-D }" 2>/dev/null || true
    done < <(iptables -w -t "$table" -S 2>/dev/null | grep -F -- "\"$PROXY_RULE_COMMENT\"" || true)
  done
  ip link show "$PROXY_VETH" >/dev/null 2>&1 && ip link del "$PROXY_VETH" 2>/dev/null
  if ip netns list 2>/dev/null | grep -q "^$PROXY_NETNS\( \|\$\)"; then
    ip netns del "$PROXY_NETNS" || log "warning: could not delete network namespace $PROXY_NETNS"
  fi
  return 0
}

# The bridges of this system's agents (the local one, and the e2e tests' agents, which list
# theirs in agents/*/bridge), the firewall plugin's FORWARD rules for the addresses whose ADD
# results the agents kept (instances whose agent was gone before their DEL), and the guard
# routes of the primary system (offset 0).
remove_network() {
  local bridge ip rule
  # Each file holds one name without a newline: read them one by one (a plain `cat` of all
  # of them would run the names together).
  local file bridges=("$AGENT_BRIDGE")
  for file in "$STATE_DIR"/agents/*/bridge; do
    [[ -f "$file" ]] && bridges+=("$(<"$file")")
  done
  for bridge in "${bridges[@]}"; do
    ip link show "$bridge" >/dev/null 2>&1 && ip link del "$bridge" 2>/dev/null
    remove_walls "$bridge"
  done
  for ip in $(cat "$AGENT_DIR"/cni/results/*.json "$STATE_DIR"/agents/*/cni/results/*.json 2>/dev/null |
    jq -r '.ips[]?.address // empty' 2>/dev/null | cut -d/ -f1 | sort -u); do
    while read -r rule; do
      [[ -n "$rule" ]] || continue
      # shellcheck disable=SC2086 # the rule's words are iptables arguments
      iptables ${rule/-A CNI-FORWARD/-D CNI-FORWARD} 2>/dev/null || true
    done < <(iptables -S CNI-FORWARD 2>/dev/null | grep -F -- " $ip/32 " || true)
  done
  # The firewall plugin's chains, once no instance of any system uses them (only the plugin's
  # own admin jump is left).
  if [[ "$(iptables -S CNI-FORWARD 2>/dev/null | grep -c -- '^-A')" == 1 &&
    "$(iptables -S CNI-ADMIN 2>/dev/null | grep -c -- '^-A')" == 0 ]]; then
    while read -r rule; do
      # shellcheck disable=SC2086 # the rule's words are iptables arguments
      eval iptables "${rule/-A FORWARD/-D FORWARD}" 2>/dev/null || true
    done < <(iptables -S FORWARD 2>/dev/null | grep -- '-j CNI-FORWARD' || true)
    iptables -F CNI-FORWARD 2>/dev/null && iptables -X CNI-FORWARD 2>/dev/null || true
    iptables -X CNI-ADMIN 2>/dev/null || true
  fi
  # The guard routes are shared by every local system on this machine (they cover each
  # offset's ranges): the last one down removes them, whatever its offset.
  if ! other_systems_up; then
    local cidr
    for cidr in "${GUARDED_CIDRS[@]}" "${LEGACY_GUARDED_CIDRS[@]}"; do
      ip route del unreachable "$cidr" metric 4242 2>/dev/null || true
    done
  fi
}

# Whether another local system's runtime directory exists under $RUNTIME_ROOT. One with its
# own BULKHEAD_RUNTIME_DIR elsewhere is not seen: it is without the guard routes until its
# next up.sh adds them again.
other_systems_up() {
  local dir
  for dir in "$RUNTIME_ROOT"/*/; do
    [[ -d "$dir" && "${dir%/}" != "$RUNTIME_DIR" ]] && return 0
  done
  return 1
}

main() {
  if [[ ! -e "$STATE_DIR" ]]; then
    # A runtime directory whose state directory was deleted by hand: nothing runs from it
    # (every component is recorded in the state directory), so only its mounts are left.
    if [[ -f "$RUNTIME_MARKER" && "$(cat "$RUNTIME_MARKER")" == "$STATE_DIR" ]]; then
      unmount_state && remove_runtime_dir
      return
    fi
    log "nothing to do: $STATE_DIR does not exist"
    return 0
  fi
  [[ -f "$STATE_MARKER" ]] ||
    die "refusing to touch $STATE_DIR: it has no $(basename "$STATE_MARKER") marker, so up.sh did not create it"
  take_lock
  record_task_leftovers

  local comp failed=0
  while read -r comp; do
    [[ "$comp" != containerd ]] || clean_containerd
    stop_component "$comp" || failed=1
  done < <(components_in_stop_order)
  ((failed == 0)) || die "some processes could not be stopped; kept $STATE_DIR (pid files included)"

  kill_leftover_shims || failed=1
  ((failed == 1)) || remove_task_leftovers
  unmount_state || failed=1
  remove_cgroups
  remove_proxy_network
  remove_network
  ((failed == 0)) || die "kept $STATE_DIR: see the errors above"

  rm -rf --one-file-system "$STATE_DIR"
  log "removed $STATE_DIR"
  remove_runtime_dir

  local port busy
  for port in "${BULKHEAD_PORTS[@]}"; do
    busy=$(port_listeners "$port")
    if [[ -n "$busy" ]]; then
      log "warning: port $port is still in use by a process up.sh did not record:"
      printf '%s\n' "$busy" >&2
    fi
  done
}

main "$@"
