#!/usr/bin/env bash
# Builds the test images from Debian's busybox-static (and e2e/images/probe.c) into OCI
# layouts with umoci, and pushes them with skopeo to the local system's registry (default
# localhost:$((5000 + BULKHEAD_PORT_OFFSET))). No Docker involved.
#
#   bulkhead/web:v1, bulkhead/web:v2  busybox httpd serving "v1" / "v2" from /www on :8080
#   bulkhead/tamper:v1                like web, with a layer of its own (digest-mismatch test)
#   bulkhead/tools:v1                 busybox plus /bin/probe (the isolation attempts) and a
#                                      set-uid copy /bin/probe-suid
#
# The built layouts are cached outside the state directory, in
# ${BULKHEAD_CACHE:-~/.cache/bulkhead}/images/<name>-<tag>-<hash of the inputs and recipe>, so
# an image is rebuilt only when its inputs change, and pushed only when the registry does not
# already hold that exact manifest. A second run does nothing.
#
# Needs the registry of a running local system: up.sh runs this script once the registry is
# healthy (unless BULKHEAD_SKIP_IMAGES=1); it refuses to run on a state directory up.sh did not
# create.
#
# Usage: e2e/hack/images.sh [registry]
set -euo pipefail

LOG_TAG=images
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

registry="${1:-${BULKHEAD_REGISTRY:-$REGISTRY_HOST}}"

[[ -f "$STATE_MARKER" ]] ||
  die "$STATE_DIR is not a local system's state directory (no $(basename "$STATE_MARKER")): run e2e/hack/up.sh, which starts the registry and runs this script"
# up.sh holds the state directory's lock while it runs this script; alone, take it, so that a
# down.sh cannot delete the registry under a push.
[[ "${BULKHEAD_LOCK_HELD:-0}" == 1 ]] || take_lock

busybox=/bin/busybox
[[ -x "$busybox" ]] || die "$busybox missing: apt-get install busybox-static"
for tool in umoci skopeo gcc; do
  command -v "$tool" >/dev/null || die "$tool is required (e2e/hack/install-deps.sh installs it)"
done
curl --noproxy '*' -fsS --max-time 5 -o /dev/null "http://${registry/#localhost:/$LOOPBACK:}/v2/" ||
  die "registry $registry does not answer: is the local system up (e2e/hack/up.sh)?"

case "$(dpkg --print-architecture 2>/dev/null || uname -m)" in
  amd64 | x86_64) arch=amd64 ;;
  arm64 | aarch64) arch=arm64 ;;
  *) arch=$(go env GOARCH 2>/dev/null) || die "cannot tell the OCI architecture of this machine" ;;
esac

cache="$CACHE_ROOT/images"
mkdir -p "$cache"
# One builder at a time per cache (two local systems may share it).
exec 8>>"$cache/.lock"
flock -w 900 8 || die "timed out waiting for $cache/.lock"
rm -rf "$cache"/.tmp-*

probe="$cache/probe-$(sha256sum "$REPO_ROOT/e2e/images/probe.c" | cut -c1-16)"
if [[ ! -x "$probe" ]]; then
  log "compiling probe (static)"
  gcc -static -O2 -Wall -o "$probe.tmp" "$REPO_ROOT/e2e/images/probe.c"
  mv "$probe.tmp" "$probe"
  find "$cache" -maxdepth 1 -name 'probe-*' ! -path "$probe" -delete
fi

# build_layout NAME TAG CONTENT-MARKER OUT: builds OCI layout OUT holding tag NAME-TAG.
build_layout() {
  local name=$1 tag=$2 marker=$3 layout=$4 applet
  local bundle="$layout.bundle"
  umoci init --layout "$layout"
  umoci new --image "$layout:$name-$tag"
  umoci unpack --image "$layout:$name-$tag" "$bundle" >/dev/null
  local rootfs="$bundle/rootfs"
  mkdir -p "$rootfs"/{bin,www,etc,tmp,run,proc,sys,dev,var/cache}
  cp "$busybox" "$rootfs/bin/busybox"
  for applet in sh ls cat echo sleep ps id httpd wget mount umount hostname kill grep head tr nc true false env; do
    ln -sf busybox "$rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\napp:x:1000:1000:app:/:/bin/sh\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\napp:x:1000:\n' >"$rootfs/etc/group"
  echo "$marker" >"$rootfs/www/index.html"
  if [[ "$name" == tools ]]; then
    cp "$probe" "$rootfs/bin/probe"
    cp "$probe" "$rootfs/bin/probe-suid"
    chmod 4755 "$rootfs/bin/probe-suid"
  fi
  umoci repack --image "$layout:$name-$tag" "$bundle" >/dev/null
  umoci config --image "$layout:$name-$tag" \
    --config.entrypoint /bin/busybox \
    --config.cmd httpd --config.cmd -f --config.cmd -p --config.cmd 8080 --config.cmd -h --config.cmd /www \
    --config.workingdir / \
    --config.env PATH=/bin \
    --config.exposedports 8080/tcp \
    --architecture "$arch" --os linux
  umoci gc --layout "$layout"
  rm -rf "$bundle"
}

# image NAME TAG CONTENT-MARKER: makes sure $registry/bulkhead/NAME:TAG is the cached build for
# the current inputs, building and pushing only what is missing.
image() {
  local name=$1 tag=$2 marker=$3
  local ref="$registry/bulkhead/$name:$tag" key layout tmp want have
  key=$(cat "$busybox" "$probe" <(echo "$marker $arch") <(declare -f build_layout) |
    sha256sum | cut -c1-16)
  layout="$cache/$name-$tag-$key"
  if [[ ! -f "$layout/index.json" ]]; then
    log "building bulkhead/$name:$tag"
    tmp="$cache/.tmp-$name-$tag-$$"
    build_layout "$name" "$tag" "$marker" "$tmp"
    rm -rf "$layout"
    mv "$tmp" "$layout"
    find "$cache" -maxdepth 1 -name "$name-$tag-*" ! -path "$layout" -exec rm -rf {} +
  fi
  want=$(skopeo inspect --format '{{.Digest}}' "oci:$layout:$name-$tag")
  have=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$ref" 2>/dev/null || true)
  [[ "$have" != "$want" ]] || return 0
  log "pushing $ref"
  skopeo copy --quiet --dest-tls-verify=false "oci:$layout:$name-$tag" "docker://$ref"
  have=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$ref")
  [[ "$have" == "$want" ]] || die "$ref is $have after the push, expected $want"
}

image web v1 v1
image web v2 v2
image tools v1 tools-v1
# Only for the digest-mismatch test, which corrupts its (unique) layer in the registry and
# restores it afterwards; no other test may use it.
image tamper v1 tamper-v1
log "images in $registry: bulkhead/web:v1, bulkhead/web:v2, bulkhead/tools:v1, bulkhead/tamper:v1"
