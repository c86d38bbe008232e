#!/usr/bin/env bash
# Builds the disk image of the SELinux-enforcing test host (issue #20): Debian bookworm from
# Debian's mirror (debootstrap), refpolicy's `container` module built from selinux-policy-src
# plus Bulkhead's glue (e2e/selinux/bulkhead_glue.te), every file labelled at build time, and
# containerd, runc and the CNI plugins for the node agent (copied in at boot, so a new agent
# build does not rebuild the image).
#
# The image is cached outside the repository, keyed by this script, the glue module and the
# package list: $CACHE/selinux/<key>/{root.img,vmlinuz,initrd.img,manifest.txt}. A second call
# with a warm cache does nothing. A cold build takes about 10 minutes on 2 cores.
#
# Usage: e2e/selinux/image.sh [--print-dir]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${BULKHEAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead}"
suite=bookworm
mirror="${BULKHEAD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages=(
  systemd-sysv udev linux-image-amd64 initramfs-tools kmod e2fsprogs
  policycoreutils selinux-utils semodule-utils selinux-policy-dev selinux-policy-src checkpolicy setools
  auditd make zstd
  containerd runc containernetworking-plugins iproute2 iptables socat busybox-static ca-certificates
  libseccomp2
)
key=$(cat "${BASH_SOURCE[0]}" "$here/bulkhead_glue.te" <(printf '%s\n' "$suite" "${packages[@]}") |
  sha256sum | cut -c1-16)
out="$cache_root/selinux/$key"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$out"
  exit 0
fi

log() { printf '[selinux-image] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

if [[ -s "$out/root.img" && -s "$out/vmlinuz" && -s "$out/initrd.img" ]]; then
  log "cached: $out"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, chroot, mounts)"

need=()
for p in debootstrap qemu-system-x86 e2fsprogs zstd; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [[ ${#need[@]} -gt 0 ]]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/bulkhead-selinux.XXXXXX")
rootfs="$work/rootfs"
mounted=()
cleanup() {
  local m
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    m=${mounted[i]}
    mountpoint -q "$m" && umount -l "$m"
  done
  rm -rf "$work"
}
trap cleanup EXIT

started=$SECONDS
log "debootstrap $suite into $rootfs"
debootstrap --variant=minbase --include="$(
  IFS=,
  echo "${packages[*]}"
)" "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  {
    tail -20 "$work/debootstrap.log" >&2
    die "debootstrap failed"
  }
log "debootstrap done after $((SECONDS - started))s"

in_root() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }

# The policy: the config first, so that the policy package installs for enforcing.
mkdir -p "$rootfs/etc/selinux"
printf 'SELINUX=enforcing\nSELINUXTYPE=default\n' >"$rootfs/etc/selinux/config"
mount --bind /proc "$rootfs/proc" && mounted+=("$rootfs/proc")
in_root apt-get install -y -qq --no-install-recommends selinux-policy-default >"$work/policy.log" 2>&1 ||
  {
    tail -20 "$work/policy.log" >&2
    die "installing selinux-policy-default failed"
  }

log "building the container module and Bulkhead's glue"
mkdir -p "$rootfs/root/policy" "$work/src"
tar --zstd -xf "$rootfs/usr/src/selinux-policy-src.tar.zst" -C "$work/src" \
  --wildcards '*modules/services/container.*' || die "container.te not found in selinux-policy-src"
find "$work/src" -path '*modules/services/container.*' -exec cp {} "$rootfs/root/policy/" \;
[[ -s "$rootfs/root/policy/container.te" ]] || die "container.te not found in selinux-policy-src"
cp "$here/bulkhead_glue.te" "$rootfs/root/policy/"
in_root sh -c 'cd /root/policy && make -f /usr/share/selinux/devel/Makefile container.pp bulkhead_glue.pp' \
  >"$work/modules.log" 2>&1 || {
  tail -30 "$work/modules.log" >&2
  die "compiling the policy modules failed"
}
in_root semodule -n -s default -i /root/policy/container.pp /root/policy/bulkhead_glue.pp ||
  die "linking the policy modules failed"

# A host to boot: root on the virtio disk, root without a password on the serial console only.
# The second disk carries the agent, its kubeconfig and boot.sh (e2e/selinux/host.sh makes it
# per boot, its files labelled there); bulkhead-boot.service runs boot.sh.
{
  printf '/dev/vda / ext4 defaults 0 1\n'
  printf '/dev/vdb /opt/bulkhead ext4 ro,nofail 0 0\n'
} >"$rootfs/etc/fstab"
cat >"$rootfs/etc/systemd/system/bulkhead-boot.service" <<'UNIT'
[Unit]
Description=Bulkhead test host: forwards to the local control plane, then the node agent
After=network-online.target containerd.service opt-bulkhead.mount
Wants=network-online.target
ConditionPathExists=/opt/bulkhead/boot.sh

[Service]
ExecStart=/bin/sh /opt/bulkhead/boot.sh
Restart=no
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/bulkhead-boot.service \
  "$rootfs/etc/systemd/system/multi-user.target.wants/bulkhead-boot.service"
# The guest's one network: qemu's user network (DHCP on the first interface).
mkdir -p "$rootfs/etc/systemd/network"
printf '[Match]\nName=en*\n\n[Network]\nDHCP=yes\n' >"$rootfs/etc/systemd/network/80-dhcp.network"
ln -sf /lib/systemd/system/systemd-networkd.service \
  "$rootfs/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
echo selinux-1 >"$rootfs/etc/hostname"
in_root passwd -d root >/dev/null
# The agent and its configuration arrive on a second disk at boot (e2e/selinux/host.sh).
mkdir -p "$rootfs/opt/bulkhead"

# containerd's snapshot directory, made now so that setfiles labels it container_ro_file_t
# (container.fc) and every snapshot containerd unpacks there inherits the type. Overlayfs
# checks the instance's read of a lower file against that file's own label too, and the
# default (var_lib_t) is one no container may read.
mkdir -p "$rootfs/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"

log "labelling every file (setfiles inside the chroot, /proc mounted)"
policy=$(ls "$rootfs"/etc/selinux/default/policy/policy.* | head -1)
in_root setfiles -F -c "/etc/selinux/default/policy/${policy##*/}" \
  /etc/selinux/default/contexts/files/file_contexts / 2>"$work/setfiles.log" || true
umount "$rootfs/proc"
mounted=()
label_of() { python3 -c 'import os,sys; sys.stdout.write(os.getxattr(sys.argv[1], "security.selinux").decode())' "$1" 2>/dev/null; }
label_of "$rootfs/usr/sbin/runc" | grep -q container_engine_exec_t ||
  die "runc is not labelled container_engine_exec_t: labelling failed (see $work/setfiles.log)"
label_of "$rootfs/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots" |
  grep -q container_ro_file_t ||
  die "containerd's snapshots are not labelled container_ro_file_t (see $work/setfiles.log)"

mkdir -p "$out.tmp"
cp -L "$rootfs/vmlinuz" "$out.tmp/vmlinuz"
cp -L "$rootfs/initrd.img" "$out.tmp/initrd.img"
rm -rf "$rootfs/root/policy"
log "making the ext4 image (labels kept by mkfs.ext4 -d)"
mkfs.ext4 -q -F -L selinux-1 -d "$rootfs" "$out.tmp/root.img" 4G ||
  die "mkfs.ext4 -d failed"
{
  echo "suite $suite"
  echo "built $(date -u +%FT%TZ) in $((SECONDS - started))s"
  in_root dpkg-query -W -f='${Package} ${Version}\n' linux-image-amd64 runc containerd selinux-policy-default 2>/dev/null || true
} >"$out.tmp/manifest.txt"
rm -rf "$out"
mv "$out.tmp" "$out"
# Images of earlier keys are never used again: only the current one stays.
find "$cache_root/selinux" -mindepth 1 -maxdepth 1 -type d ! -path "$out" -exec rm -rf {} +
log "image ready in $((SECONDS - started))s: $out"
