# shellcheck shell=bash
# shellcheck disable=SC2034 # variables used by the scripts that source this file
# Shared helpers for e2e/hack/up.sh, down.sh and images.sh: the state directory layout, the
# ports, the ordered list of components, and the pidfile/log/health helpers every component uses.
#
# Two directories: the state directory (BULKHEAD_STATE_DIR, default <checkout>/.bulkhead) keeps
# config, keys, kubeconfigs, etcd and registry data, pid files and logs, private to the user
# (0700). What a container must reach lives in the runtime directory instead,
# /var/lib/bulkhead-local/<16 hex of the state directory's sha256>/ (BULKHEAD_RUNTIME_DIR
# overrides it): containerd's root and state, under which runc mounts each container's root
# filesystem from inside the container's user namespace, as a host UID that owns nothing. Every
# directory down to it must be traversable by such a UID; a checkout's parent often is not
# (root's home is 0700), and widening it would open the keys in the state directory. up.sh
# creates the runtime directory 0711 with a marker naming its state directory and a symlink
# <state>/runtime to it; down.sh removes it, and only it, by that marker. The node agent's
# preflight (run by up.sh before the agent starts) names any directory on the way that blocks.
#
# A component is a long-running process started by up.sh. It is recorded in
# $STATE_DIR/pids/<component>.pid and logs to $STATE_DIR/logs/<component>.log. A recorded PID
# counts as "that component" only if the process is alive (not a zombie), its executable's name
# is component_exe <component>, and its command line mentions "$STATE_DIR/" (every component is
# started with at least one path under the state directory). That way a reused PID is never
# mistaken for, or killed as, one of ours.
#
# To add a component (the Bulkhead controller, the node agent):
#   1. append it to BULKHEAD_COMPONENTS in start order (down.sh stops them in reverse),
#   2. add a case to component_exe if its executable is not named like the component,
#   3. write a start_<name> function in up.sh that calls ensure_daemon with a health check,
#   4. if it listens on TCP, give it a *_PORT below (base + PORT_OFFSET) and add it to
#      BULKHEAD_PORTS.
#
# Ports: every TCP port is its base plus BULKHEAD_PORT_OFFSET (default 0), so a second,
# independent local system (another BULKHEAD_STATE_DIR, another offset) can run beside the first.
# Unix sockets (containerd) live in the state directory, so they never collide.

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/../.." && pwd)"

STATE_DIR="${BULKHEAD_STATE_DIR:-$REPO_ROOT/.bulkhead}"
[[ "$STATE_DIR" == /* ]] || STATE_DIR="$PWD/$STATE_DIR"
STATE_DIR="${STATE_DIR%/}"
# Marker that tells down.sh this directory is ours to delete.
STATE_MARKER="$STATE_DIR/.bulkhead-state"

# The runtime directory (see the top of this file), its marker (holding "$STATE_DIR") and the
# symlink to it in the state directory.
RUNTIME_ROOT=/var/lib/bulkhead-local
RUNTIME_DIR="${BULKHEAD_RUNTIME_DIR:-$RUNTIME_ROOT/$(printf '%s' "$STATE_DIR" | sha256sum | cut -c1-16)}"
RUNTIME_DIR="${RUNTIME_DIR%/}"
RUNTIME_MARKER="$RUNTIME_DIR/.bulkhead-runtime"
RUNTIME_LINK="$STATE_DIR/runtime"

PKI_DIR="$STATE_DIR/pki"
ADMIN_KUBECONFIG="$STATE_DIR/kubeconfig"
KCM_KUBECONFIG="$STATE_DIR/kube-controller-manager.kubeconfig"
AGENT_KUBECONFIG="$STATE_DIR/node-agent.kubeconfig"
CONTROLLER_KUBECONFIG="$STATE_DIR/controller.kubeconfig"
# The helm release of the chart's RBAC and policies (the e2e chart tests use the same one).
CHART_RELEASE=bulkhead

# Loopback endpoints (test-only; nothing here is reachable from off this machine).
LOOPBACK=127.0.0.1
PORT_OFFSET="${BULKHEAD_PORT_OFFSET:-0}"
if [[ ! "$PORT_OFFSET" =~ ^[0-9]{1,5}$ ]] || ((10#$PORT_OFFSET > 49000)); then
  printf '[%s] error: BULKHEAD_PORT_OFFSET=%s is not a number from 0 to 49000\n' \
    "${LOG_TAG:-hack}" "$PORT_OFFSET" >&2
  exit 1
fi
PORT_OFFSET=$((10#$PORT_OFFSET))
ETCD_CLIENT_PORT=$((12379 + PORT_OFFSET))
ETCD_PEER_PORT=$((12380 + PORT_OFFSET))
APISERVER_PORT=$((16443 + PORT_OFFSET))
KCM_PORT=$((10257 + PORT_OFFSET))
REGISTRY_PORT=$((5000 + PORT_OFFSET))
CONTROLLER_METRICS_PORT=$((9464 + PORT_OFFSET))
AGENT_METRICS_PORT=$((9465 + PORT_OFFSET))
# The controller's registry push-notification endpoint (image updates, issue #17).
NOTIFY_PORT=$((9466 + PORT_OFFSET))
BULKHEAD_PORTS=("$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT" "$KCM_PORT" "$REGISTRY_PORT" "$CONTROLLER_METRICS_PORT" "$AGENT_METRICS_PORT" "$NOTIFY_PORT")
APISERVER_URL="https://$LOOPBACK:$APISERVER_PORT"
# The registry as image references name it (images.sh pushes there; tests pull from there).
REGISTRY_HOST="localhost:$REGISTRY_PORT"
# Each system's services get a /24 of their own (N = offset / 1000, like the bridge), which
# its kube-proxy alone routes (see below); 10.96.0.0/16 as a whole is guarded.
SERVICE_CIDR="10.96.$((PORT_OFFSET / 1000)).0/24"
SERVICE_FIRST_IP="10.96.$((PORT_OFFSET / 1000)).1"
SERVICE_GUARD_CIDR=10.96.0.0/16
SA_ISSUER=https://kubernetes.default.svc.cluster.local
BULKHEAD_NAMESPACE=bulkhead-system

# The private containerd (never the system one on /run/containerd). Its sockets are in the state
# directory: a unix socket path must be shorter than 108 bytes, so up.sh refuses a state
# directory too long for them. Shim sockets are /run/containerd/s/<sha256 of address+ns+id>
# whatever the config says (containerd 1.6), so they never collide with a system containerd's.
CONTAINERD_DIR="$STATE_DIR/containerd"
CONTAINERD_CONFIG="$CONTAINERD_DIR/config.toml"
CONTAINERD_SOCK="$CONTAINERD_DIR/containerd.sock"
CONTAINERD_TTRPC_SOCK="$CONTAINERD_DIR/containerd.sock.ttrpc"
# containerd's root (images, snapshots) and state (task bundles, each container's rootfs mount).
CONTAINERD_ROOT="$RUNTIME_DIR/containerd/root"
CONTAINERD_STATE="$RUNTIME_DIR/containerd/state"
# The node agent puts each container in cgroup /bulkhead/<container-id>.
BULKHEAD_CGROUP_PARENT=bulkhead

REGISTRY_DIR="$STATE_DIR/registry"
REGISTRY_CONFIG="$REGISTRY_DIR/config.yml"
# The token the registry presents to the controller's notification endpoint.
NOTIFY_TOKEN_FILE="$REGISTRY_DIR/notify-token"

# Built test images are cached outside the state directory (like tools.sh's binaries), so an
# up.sh after a down.sh only pushes them again.
CACHE_ROOT="${BULKHEAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead}"

# Start order. down.sh stops in reverse order (and anything with a pid file that is not listed
# here before that).
BULKHEAD_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-proxy containerd registry node-agent controller)

# The local system's one node agent: its Host name, containerd namespace and state, and its
# instance network (a bridge and /24 of its own per system, inside the guarded range). Not
# 10.88.0.0/16: podman's default network (cni-podman0 holds 10.88.0.1/16) and containerd's
# example CNI configuration use it, and two devices for one subnet break both.
AGENT_HOST="${BULKHEAD_HOST_NAME:-local-1}"
AGENT_DIR="$STATE_DIR/agent"
AGENT_ISOLATION_FLOOR="${BULKHEAD_ISOLATION_FLOOR:-baseline}"
AGENT_BRIDGE="bulkhead$((PORT_OFFSET / 1000))"
AGENT_SUBNET="${BULKHEAD_INSTANCE_SUBNET:-10.90.$((PORT_OFFSET / 1000)).0/24}"
# Instance addresses (10.89.0.0/16: the e2e tests' agents, e2e/src/agent.rs; 10.90.0.0/16: the
# local agents) and service addresses are guarded by unreachable routes, so that nothing for
# them ever leaves this machine, even when a bridge is gone.
GUARDED_CIDRS=(10.89.0.0/16 10.90.0.0/16 "$SERVICE_GUARD_CIDR" 10.95.0.0/16)

# kube-proxy (iptables mode) owns host-global names (KUBE-* chains) and prunes what it does
# not know, so each system's runs in a network namespace of its own, joined to the host by a
# veth (host side $PROXY_VETH, $PROXY_HOST_IP; inside, eth0 $PROXY_IP). The host routes
# only this system's service range into it; kube-proxy DNATs to an instance and masquerades
# (--masquerade-all) so that replies come back through it, and routes the instance subnet
# back to the host. The walls let $PROXY_IP through like the host (--service-proxy-address).
# kube-proxy reaches the API server at $PROXY_HOST_IP:$APISERVER_PORT, DNATed on the host to
# the loopback (route_localnet on that veth only).
PROXY_NETNS="bulkhead-kp$((PORT_OFFSET / 1000))"
PROXY_VETH="bhkp$((PORT_OFFSET / 1000))"
PROXY_HOST_IP="10.95.$((PORT_OFFSET / 1000)).1"
PROXY_IP="10.95.$((PORT_OFFSET / 1000)).2"
PROXY_KUBECONFIG="$STATE_DIR/kube-proxy.kubeconfig"
# Marks the host's iptables rules of this system's proxy (down.sh deletes by it).
PROXY_RULE_COMMENT="bulkhead kube-proxy $PROXY_NETNS"
# The guard of earlier versions (local agents on 10.88.x), which down.sh also removes.
LEGACY_GUARDED_CIDRS=(10.88.0.0/15)

# Seconds to wait after SIGTERM before SIGKILL.
STOP_TIMEOUT="${BULKHEAD_STOP_TIMEOUT:-20}"

LOG_TAG="${LOG_TAG:-hack}"

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

pid_file() { printf '%s/pids/%s.pid\n' "$STATE_DIR" "$1"; }
log_file() { printf '%s/logs/%s.log\n' "$STATE_DIR" "$1"; }

# Name of the executable a component runs as (basename of /proc/PID/exe).
component_exe() {
  case "$1" in
    registry) printf '%s\n' docker-registry ;;
    node-agent) printf '%s\n' bulkhead-node-agent ;;
    controller) printf '%s\n' bulkhead-controller ;;
    *) printf '%s\n' "$1" ;;
  esac
}

# Serializes up.sh and down.sh runs on one state directory (parallel test processes may all call
# up.sh). The lock file lives outside the state directory, which down.sh deletes. The lock is
# held on descriptor 9 until the script exits; start_daemon closes it for the daemons.
take_lock() {
  local key lock
  key=$(printf '%s' "$STATE_DIR" | md5sum | cut -c1-16)
  lock="${TMPDIR:-/tmp}/bulkhead-$key.lock"
  exec 9>>"$lock"
  if ! flock -n 9; then
    log "waiting for another up.sh/down.sh on $STATE_DIR (lock $lock)"
    flock -w 900 9 || die "timed out waiting for lock $lock"
  fi
}

# Succeeds if PID $2 is a live process that is component $1 started for this state directory.
is_component_process() {
  local comp=$1 pid=$2 stat state exe cmdline
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  state=${stat##*) }
  state=${state%% *}
  [[ "$state" != Z && "$state" != X ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  [[ "${exe##*/}" == "$(component_exe "$comp")" ]] || return 1
  cmdline=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmdline" == *"$STATE_DIR/"* ]] || return 1
}

# Prints the recorded PID of component $1 if it names a live process that is that component.
component_pid() {
  local comp=$1 f pid
  f=$(pid_file "$comp")
  [[ -f "$f" ]] || return 1
  pid=$(tr -d '[:space:]' <"$f")
  is_component_process "$comp" "$pid" || return 1
  printf '%s\n' "$pid"
}

# Components that have a pid file, in stop order: unknown ones first, then the known ones in
# reverse start order.
components_in_stop_order() {
  local f comp known i
  for f in "$STATE_DIR"/pids/*.pid; do
    [[ -e "$f" ]] || continue
    comp=${f##*/}
    comp=${comp%.pid}
    known=0
    for i in "${BULKHEAD_COMPONENTS[@]}"; do
      [[ "$i" == "$comp" ]] && known=1
    done
    [[ $known -eq 1 ]] || printf '%s\n' "$comp"
  done
  for ((i = ${#BULKHEAD_COMPONENTS[@]} - 1; i >= 0; i--)); do
    printf '%s\n' "${BULKHEAD_COMPONENTS[i]}"
  done
}

# Removes pid files that do not name a live process of their component (left by a killed run).
clear_stale_pidfiles() {
  local f comp pid
  for f in "$STATE_DIR"/pids/*.pid; do
    [[ -e "$f" ]] || continue
    comp=${f##*/}
    comp=${comp%.pid}
    if ! component_pid "$comp" >/dev/null; then
      pid=$(tr -d '[:space:]' <"$f")
      log "removing stale pid file for $comp (pid ${pid:-?} is not a running $comp)"
      rm -f "$f"
    fi
  done
}

# Prints the listening sockets on TCP port $1 (empty if none).
port_listeners() {
  ss -Hltnp "sport = :$1" 2>/dev/null || true
}

require_ports_free() {
  local comp=$1 port busy
  shift
  for port in "$@"; do
    busy=$(port_listeners "$port")
    if [[ -n "$busy" ]]; then
      log "port $port, needed by $comp, is already in use by a process up.sh did not record:"
      printf '%s\n' "$busy" >&2
      die "stop that process (a run with another state dir, or a killed run whose state was deleted) and retry"
    fi
  done
}

# Prints the tail of a component's log and the log's path.
show_log_tail() {
  local f
  f=$(log_file "$1")
  if [[ -s "$f" ]]; then
    log "last lines of $f:"
    tail -n "${2:-40}" "$f" | sed 's/^/    /' >&2
  fi
  log "full log: $f"
}

fail_component() {
  local comp=$1
  shift
  log "error: $comp: $*"
  show_log_tail "$comp"
  exit 1
}

# Starts component $1 as "$2 $3 ..." detached from this shell (own session, stdin from
# /dev/null, without the lock descriptor 9), appending to its log, and records its PID. The PID is written by the process
# itself right before it execs the binary, so it is the binary's PID even if setsid forks.
start_daemon() {
  local comp=$1 pidf logf i
  shift
  pidf=$(pid_file "$comp")
  logf=$(log_file "$comp")
  [[ -x "$1" ]] || die "$comp: executable $1 not found"
  rm -f "$pidf"
  printf '===== %s: starting %s =====\n' "$(date -u +%FT%TZ)" "$*" >>"$logf"
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid bash -c 'echo "$$" >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidf" "$@" \
    </dev/null >>"$logf" 2>&1 9>&- &
  for ((i = 0; i < 100; i++)); do
    [[ -s "$pidf" ]] && return 0
    sleep 0.05
  done
  fail_component "$comp" "did not record its pid in $pidf"
}

# Waits until "$3" (a command) succeeds, at most $4 seconds, while component $1 (PID $2) stays
# alive. Fails with the log tail if it dies or the deadline passes.
wait_healthy() {
  local comp=$1 pid=$2 check=$3 timeout=$4 deadline
  deadline=$((SECONDS + timeout))
  while :; do
    if ! is_component_process "$comp" "$pid"; then
      fail_component "$comp" "process $pid exited"
    fi
    if "$check" >/dev/null 2>&1; then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      fail_component "$comp" "not healthy after ${timeout}s (pid $pid still running; run e2e/hack/down.sh to stop it)"
    fi
    sleep 0.5
  done
}

# Reuses component $1 if its recorded PID is alive, otherwise starts it. Arguments:
#   <component> <health-check function> <timeout seconds> "<ports to check free>" -- <argv...>
ensure_daemon() {
  local comp=$1 check=$2 timeout=$3 ports=$4 pid started
  shift 4
  [[ "${1:-}" == -- ]] && shift
  if pid=$(component_pid "$comp"); then
    wait_healthy "$comp" "$pid" "$check" "$timeout"
    log "$comp already running (pid $pid), reused"
    return 0
  fi
  # shellcheck disable=SC2086 # space-separated port list
  require_ports_free "$comp" $ports
  started=$SECONDS
  start_daemon "$comp" "$@"
  pid=$(tr -d '[:space:]' <"$(pid_file "$comp")")
  wait_healthy "$comp" "$pid" "$check" "$timeout"
  log "$comp ready (pid $pid, $((SECONDS - started))s)"
}

# Sends SIGTERM to component $1's recorded process, waits up to STOP_TIMEOUT seconds, then
# SIGKILL. Never signals a PID that is not that component.
stop_component() {
  local comp=$1 pidf pid i
  pidf=$(pid_file "$comp")
  [[ -f "$pidf" ]] || return 0
  pid=$(tr -d '[:space:]' <"$pidf")
  if ! is_component_process "$comp" "$pid"; then
    log "$comp: pid ${pid:-?} is not a running $comp; removing its pid file"
    rm -f "$pidf"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
    is_component_process "$comp" "$pid" || break
    sleep 0.1
  done
  if is_component_process "$comp" "$pid"; then
    log "$comp (pid $pid) still running ${STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      is_component_process "$comp" "$pid" || break
      sleep 0.1
    done
    if is_component_process "$comp" "$pid"; then
      log "error: $comp (pid $pid) survived SIGKILL"
      return 1
    fi
  fi
  rm -f "$pidf"
  log "stopped $comp (pid $pid)"
}

# ---------------------------------------------------------------------------------------------
# The private containerd (started by up.sh; down.sh may restart it to stop the tasks of a
# killed run through their shims).

# ctr against the private containerd: ctr_local [global ctr flags] <command...>. Bounded in time
# and never reads the caller's stdin.
ctr_local() {
  timeout "${CTR_TIMEOUT:-60}" ctr --address "$CONTAINERD_SOCK" "$@" </dev/null
}

containerd_healthy() {
  timeout 5 ctr --address "$CONTAINERD_SOCK" version </dev/null
}

# Writes $CONTAINERD_CONFIG. containerd 1.6 has no server-side default snapshotter or runtime
# outside the CRI plugin (disabled here): clients choose them per call (ctr defaults to overlayfs
# and io.containerd.runc.v2; the node agent passes them). required_plugins makes containerd
# refuse to start when overlayfs or the v2 runtime cannot load, instead of failing at the first
# container. The other snapshotters cannot work here, and the "opt" plugin would write to
# /opt/containerd: disabled.
check_containerd_socket_paths() {
  local n
  for n in "$CONTAINERD_SOCK" "$CONTAINERD_TTRPC_SOCK"; do
    ((${#n} < 108)) ||
      die "containerd socket path $n is ${#n} bytes, too long for a unix socket (limit 107): use a shorter BULKHEAD_STATE_DIR"
  done
}

# Creates the runtime directory (and $RUNTIME_ROOT) traversable, not listable, by others, with
# its marker and the state directory's symlink to it. Refuses a directory that is not ours.
ensure_runtime_dir() {
  if [[ -e "$RUNTIME_DIR" && ! -f "$RUNTIME_MARKER" ]]; then
    die "$RUNTIME_DIR exists but has no $(basename "$RUNTIME_MARKER") marker, so up.sh did not create it: remove it or set BULKHEAD_RUNTIME_DIR to another directory"
  fi
  if [[ -f "$RUNTIME_MARKER" && "$(cat "$RUNTIME_MARKER")" != "$STATE_DIR" ]]; then
    die "$RUNTIME_DIR belongs to state directory $(cat "$RUNTIME_MARKER"), not $STATE_DIR: set BULKHEAD_RUNTIME_DIR to another directory"
  fi
  [[ -n "${BULKHEAD_RUNTIME_DIR:-}" ]] || mkdir -p -m 0711 "$RUNTIME_ROOT"
  mkdir -p -m 0711 "$RUNTIME_DIR" "$RUNTIME_DIR/containerd"
  chmod 0711 "$RUNTIME_DIR" "$RUNTIME_DIR/containerd"
  printf '%s\n' "$STATE_DIR" >"$RUNTIME_MARKER"
  ln -sfn "$RUNTIME_DIR" "$RUNTIME_LINK"
}

write_containerd_config() {
  check_containerd_socket_paths
  mkdir -p "$CONTAINERD_DIR"
  ensure_runtime_dir
  cat >"$CONTAINERD_CONFIG.tmp" <<EOT
# Written by e2e/hack/up.sh: the test system's private containerd. Its root and state are in
# the runtime directory (see lib.sh), reachable from a container's user namespace.
version = 2
root = "$CONTAINERD_ROOT"
state = "$CONTAINERD_STATE"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]
required_plugins = [
  "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.runtime.v2.task",
]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_TTRPC_SOCK"

[debug]
  address = ""

[metrics]
  address = ""
EOT
  mv "$CONTAINERD_CONFIG.tmp" "$CONTAINERD_CONFIG"
}

start_containerd() {
  local old_umask path=$PATH d
  write_containerd_config
  # The runc v2 shim finds runc (/usr/sbin on Debian) through containerd's PATH.
  for d in /usr/local/sbin /usr/sbin /sbin; do
    [[ ":$path:" == *":$d:"* ]] || path="$path:$d"
  done
  # containerd creates snapshot directories (a container's "/" among them) with the process
  # umask: 077 would make "/" unreadable to a container's non-root users.
  old_umask=$(umask)
  umask 022
  PATH="$path" ensure_daemon containerd containerd_healthy 60 "" -- \
    "$(command -v containerd || echo /usr/bin/containerd)" --config "$CONTAINERD_CONFIG"
  umask "$old_umask"
}

# Prints the PIDs of live processes whose command line has "-address $CONTAINERD_SOCK": the
# shims of the private containerd (matched by the exact socket path, never by a name).
our_shim_pids() {
  local d args i
  for d in /proc/[0-9]*; do
    mapfile -d '' -t args 2>/dev/null <"$d/cmdline" || continue
    for ((i = 1; i < ${#args[@]}; i++)); do
      if [[ "${args[i]}" == "$CONTAINERD_SOCK" && "${args[i - 1]}" == -address ]]; then
        printf '%s\n' "${d#/proc/}"
        break
      fi
    done
  done
}
