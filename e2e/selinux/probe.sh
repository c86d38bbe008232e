#!/bin/sh
# The guest side of the tests' channel into selinux-1 (e2e/tests/selinux_host.rs): boot.sh
# serves it with socat on the guest's port 7070, reachable only from qemu's host side
# (10.0.2.2, forwarded from this machine's loopback by e2e/selinux/host.sh), one request per
# connection: a line `VERB ARG...`, answered with the command's output and a last line
# `exit=N`. It runs as root in the guest (initrc_t) and knows a fixed set of verbs; container
# IDs and labels are checked before use.
#
#   enforce                  /sys/fs/selinux/enforce
#   permissive               the permissive types in the loaded policy (seinfo)
#   exec ID SCRIPT           `sh -c SCRIPT` inside instance ID (runc exec: the instance's
#                            label, user namespace, seccomp filter and capabilities)
#   share ID                 binds the shared directory /srv/shared (mode 1777, labelled
#                            container_file_t:s0, which every instance's level dominates) onto
#                            the instance's /www; mount propagation carries it into the running
#                            instance
#   unshare ID               unmounts it again (before the instance is deleted: the shim
#                            cannot unmount a rootfs with a mount under it)
#   label FILE               the SELinux label of /srv/shared/FILE
#   relabel FILE LEVEL       sets the level of /srv/shared/FILE (chcon -l)
#   avc TEXT                 the AVC denials that contain TEXT
#   compute_av SCON TCON     the kernel's decision for class file (compute_av)
set -u
runc_root=/run/containerd/runc/bulkhead
tasks=/run/containerd/io.containerd.runtime.v2.task/bulkhead
shared=/srv/shared

read -r verb a rest || exit 2
b=${rest%% *}
bad() {
  echo "bad argument: $1"
  echo "exit=2"
  exit 0
}
id_ok() { case "$1" in '' | *[!A-Za-z0-9_.-]*) bad "$1" ;; esac; }
file_ok() { case "$1" in '' | *[!A-Za-z0-9_.-]*) bad "$1" ;; esac; }
label_ok() { case "$1" in '' | *[!A-Za-z0-9_:,.-]*) bad "$1" ;; esac; }

# The command's output (stderr too) ending in a newline, then its status.
run() {
  out=$("$@" </dev/null 2>&1)
  code=$?
  printf '%s\nexit=%d\n' "$out" "$code"
}

case "$verb" in
  enforce) run cat /sys/fs/selinux/enforce ;;
  permissive) run seinfo --permissive ;;
  exec)
    id_ok "$a"
    run runc --root "$runc_root" exec "$a" sh -c "$rest"
    ;;
  share)
    id_ok "$a"
    mkdir -p "$shared" && chmod 1777 "$shared" &&
      chcon system_u:object_r:container_file_t:s0 "$shared" &&
      run mount --bind "$shared" "$tasks/$a/rootfs/www"
    ;;
  unshare)
    id_ok "$a"
    run umount "$tasks/$a/rootfs/www"
    ;;
  label)
    file_ok "$a"
    run stat -c %C "$shared/$a"
    ;;
  relabel)
    file_ok "$a"
    label_ok "$b"
    run chcon -l "$b" "$shared/$a"
    ;;
  avc)
    label_ok "$a"
    run grep -h -e "denied.*$a" /var/log/audit/audit.log
    ;;
  compute_av)
    label_ok "$a"
    label_ok "$b"
    run compute_av "$a" "$b" file
    ;;
  *) bad "$verb" ;;
esac
