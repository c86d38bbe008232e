#!/usr/bin/env bash
# The SELinux-enforcing test host `selinux-1` (issue #20): boots the image e2e/selinux/image.sh
# built (cached) under qemu with TCG, SELinux enforcing, with this checkout's node agent on a
# second disk, registered with the local control plane that up.sh runs.
#
# The guest's only network is qemu's user network with restrict=on: it reaches nothing but
# two forwards to this machine's loopback, the API server and the registry (a socat per
# connection: a `tcp:` guestfwd is one connection made at start), which the guest
# listens on at the same 127.0.0.1 ports so that the kubeconfig's server and the image names
# stay valid. Writes go to a throwaway overlay (-snapshot): the cached image never changes.
#
# Usage: e2e/selinux/host.sh up|down
#   up    boot (idempotent: a running VM recorded in the state dir is reused) and wait until
#         Host selinux-1 is Ready
#   down  stop the VM by its recorded PID and delete Host selinux-1
set -euo pipefail

LOG_TAG=selinux-host
# shellcheck source-path=SCRIPTDIR source=../hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

HOST=selinux-1
vm_dir="$STATE_DIR/$HOST"
pidfile="$vm_dir/qemu.pid"
console="$vm_dir/console.log"
# The tests' channel into the guest (e2e/selinux/probe.sh): this loopback port, forwarded to
# the guest's 7070. e2e/tests/selinux_host.rs computes it the same way.
PROBE_PORT=$((7070 + PORT_OFFSET))
kc=(kubectl --kubeconfig "$ADMIN_KUBECONFIG" --request-timeout=20s)

vm_pid() {
  local pid
  [[ -s "$pidfile" ]] || return 1
  pid=$(tr -d '[:space:]' <"$pidfile")
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == */qemu-system-x86_64 ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$vm_dir/" || return 1
  echo "$pid"
}

host_ready() {
  [[ "$("${kc[@]}" get hosts.bulkhead.dev "$HOST" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# The second disk: the agent, its kubeconfig (the agent ServiceAccount with the node name
# selinux-1, like every agent here) and boot.sh.
make_payload() {
  # A release build: under TCG a debug build's TLS handshake with the API server outlasts the
  # client's 30 s connect timeout.
  local bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/${BULKHEAD_SELINUX_PROFILE:-release}/bulkhead-node-agent"
  local payload="$vm_dir/payload" size
  [[ -x "$bin" ]] || die "$bin missing: run cargo build --release -p bulkhead-node-agent first"
  rm -rf "$payload"
  mkdir -p "$payload"
  cp "$bin" "$payload/bulkhead-node-agent"
  cp "$HACK_DIR/../selinux/probe.sh" "$payload/probe.sh"
  [[ -s "$AGENT_KUBECONFIG" ]] || die "$AGENT_KUBECONFIG missing: run make up first"
  sed "s/node-name: \[$AGENT_HOST\]/node-name: [$HOST]/" "$AGENT_KUBECONFIG" >"$payload/kubeconfig"
  grep -q "node-name: \[$HOST\]" "$payload/kubeconfig" || die "could not write the agent's kubeconfig"
  cat >"$payload/boot.sh" <<EOF
#!/bin/sh
# Written by e2e/selinux/host.sh. The guest end of the two forwards, then the agent.
echo "bulkhead-boot: selinux enforce=\$(cat /sys/fs/selinux/enforce) context=\$(cat /proc/self/attr/current)"
# qemu's user network: an address from its DHCP server, or one set by hand.
i=0
while ! ip -4 -o addr show scope global | grep -q inet && [ \$i -lt 60 ]; do sleep 1; i=\$((i + 1)); done
if ! ip -4 -o addr show scope global | grep -q inet; then
  dev=\$(ls /sys/class/net | grep -v '^lo\$' | head -1)
  ip link set "\$dev" up && ip addr add 10.0.2.15/24 dev "\$dev"
fi
echo "bulkhead-boot: \$(ip -4 -o addr show | tr '\\n' ' ')"
socat TCP-LISTEN:$APISERVER_PORT,bind=127.0.0.1,fork,reuseaddr TCP:10.0.2.100:$APISERVER_PORT &
socat TCP-LISTEN:$REGISTRY_PORT,bind=127.0.0.1,fork,reuseaddr TCP:10.0.2.100:$REGISTRY_PORT &
# The tests' channel (probe.sh), from qemu's host side only: not from the instances' bridge.
socat TCP-LISTEN:7070,fork,reuseaddr,range=10.0.2.2/32 EXEC:"/bin/sh /opt/bulkhead/probe.sh" &
sleep 2
echo "bulkhead-boot: listening: \$(ss -Hltn | awk '{print \$4}' | tr '\\n' ' ')"
echo "bulkhead-boot: the API server through the forward: \$(printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' | timeout 60 socat -T30 - OPENSSL:127.0.0.1:$APISERVER_PORT,verify=0 2>&1 | head -1)"
# Every SELinux denial, as it happens, on the console (each names a rule the glue may lack).
tail -n +1 -F /var/log/audit/audit.log 2>/dev/null | grep --line-buffered -e denied -e SELINUX_ERR |
  sed -u 's/^/bulkhead-avc: /' &
i=0
while [ ! -S /run/containerd/containerd.sock ] && [ \$i -lt 120 ]; do sleep 1; i=\$((i + 1)); done
mkdir -p /var/lib/bulkhead
# The agent's network walls need bridged traffic to pass iptables (it refuses to start
# otherwise): the module and its two settings, as on any host (docs/install.md).
modprobe br_netfilter 2>/dev/null || true
sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 || true
exec /opt/bulkhead/bulkhead-node-agent \\
  --host-name $HOST \\
  --kubeconfig /opt/bulkhead/kubeconfig \\
  --containerd-address /run/containerd/containerd.sock \\
  --state-dir /var/lib/bulkhead \\
  --allowed-registries $REGISTRY_HOST \\
  --cni-bin-dir /usr/lib/cni \\
  --cni-bridge bulkhead0 \\
  --instance-subnet 10.91.0.0/24 \\
  --isolation-floor baseline \\
  --metrics-address 127.0.0.1:9465
EOF
  # SELinux is off here, but ext4 keeps security.selinux xattrs and mkfs.ext4 -d copies them:
  # the guest sees ordinary executables and files (bin_t), not unlabeled ones.
  python3 - "$payload" <<'PY' || die "labelling the payload failed"
import os, sys
for name in os.listdir(sys.argv[1]):
    os.setxattr(os.path.join(sys.argv[1], name), "security.selinux", b"system_u:object_r:bin_t:s0\0")
PY
  size=$(($(du -sm "$payload" | cut -f1) + 32))
  mkfs.ext4 -q -F -d "$payload" "$vm_dir/payload.img" "${size}M"
}

up() {
  local image pid i
  [[ -s "$ADMIN_KUBECONFIG" ]] || die "the local system is not up: run make up first"
  command -v socat >/dev/null || die "socat is missing (apt-get install socat)"
  bash "$HACK_DIR/../selinux/image.sh" >&2
  image=$(bash "$HACK_DIR/../selinux/image.sh" --print-dir)
  mkdir -p "$vm_dir"
  if pid=$(vm_pid); then
    log "VM already running (pid $pid), reused"
  else
    make_payload
    : >"$console"
    qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 3G -display none -no-reboot -snapshot \
      -daemonize -pidfile "$pidfile" -serial "file:$console" \
      -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
      -drive "file=$image/root.img,if=virtio,format=raw" \
      -drive "file=$vm_dir/payload.img,if=virtio,format=raw" \
      -netdev "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:$APISERVER_PORT-cmd:socat - TCP:127.0.0.1:$APISERVER_PORT,guestfwd=tcp:10.0.2.100:$REGISTRY_PORT-cmd:socat - TCP:127.0.0.1:$REGISTRY_PORT,hostfwd=tcp:127.0.0.1:$PROBE_PORT-:7070" \
      -device virtio-net-pci,netdev=n0 \
      -append "root=/dev/vda rw console=ttyS0 security=selinux enforcing=${BULKHEAD_SELINUX_ENFORCING:-1} audit=1 panic=-1" ||
      die "qemu failed to start"
    pid=$(vm_pid) || die "qemu recorded no pid in $pidfile"
    log "VM started (pid $pid); console $console"
  fi
  for ((i = 0; i < ${BULKHEAD_SELINUX_BOOT_TIMEOUT:-600}; i += 2)); do
    if host_ready; then
      log "Host $HOST Ready after ${i}s"
      return 0
    fi
    vm_pid >/dev/null || { tail -40 "$console" >&2; die "the VM exited"; }
    sleep 2
  done
  tail -40 "$console" >&2
  die "Host $HOST not Ready within ${BULKHEAD_SELINUX_BOOT_TIMEOUT:-600}s (console: $console)"
}

down() {
  local pid i
  if pid=$(vm_pid); then
    kill -TERM "$pid"
    for ((i = 0; i < 100; i++)); do
      vm_pid >/dev/null || break
      sleep 0.1
    done
    vm_pid >/dev/null && kill -KILL "$pid"
    log "stopped the VM (pid $pid)"
  fi
  rm -rf "$vm_dir"
  if [[ -s "$ADMIN_KUBECONFIG" ]]; then
    "${kc[@]}" delete hosts.bulkhead.dev "$HOST" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) die "usage: e2e/selinux/host.sh up|down" ;;
esac
