#!/usr/bin/env bash
# The demo's second act (issue #17): a Workload follows a tag; a patched web is pushed under the
# same tag, signed with cosign; Bulkhead notices (the registry's push notification), previews,
# promotes and retires the old revision while a client polls every 20 ms; then an unsigned push
# under the same tag is refused and the Workload shows why. Prints push -> preview started and
# push -> traffic switched.
#
# Runs against a running local system (e2e/hack/up.sh; demo.sh runs it last). Namespace
# demo-patched and repository bulkhead/demo-web are made afresh each time.
#
# With --rounds N (a benchmark), N more signed pushes alternate between the two images after the
# act, each timed push -> preview started and push -> traffic switched, and the medians printed.
#
# Usage: e2e/hack/demo-patched.sh [--rounds N]
set -euo pipefail
rounds=0
[[ "${1:-}" == --rounds ]] && rounds="${2:?--rounds needs a number}"

LOG_TAG=demo
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
export KUBECONFIG="$ADMIN_KUBECONFIG"
step() { printf '\n==> %s\n' "$*"; }
ts() { date +%s.%N; }
span() { [[ -n "$1" && -n "$2" ]] && awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fs", b - a}' || echo "?"; }

ns=demo-patched
repo="$REGISTRY_HOST/bulkhead/demo-web"
cosign=$(bash "$HACK_DIR/tools.sh" --print-cosign)
[[ -x "$cosign" ]] || die "cosign is missing: run e2e/hack/tools.sh (make deps)"
keys="$STATE_DIR/demo-cosign"
export COSIGN_PASSWORD=bulkhead-demo
copy() { skopeo copy --quiet --preserve-digests --src-tls-verify=false --dest-tls-verify=false "docker://$1" "docker://$2"; }
digest() { skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$1"; }
sign() { "$cosign" sign --yes --key "$keys/cosign.key" --tlog-upload=false --allow-insecure-registry "$repo@$1" >/dev/null 2>&1; }
field() { kubectl get wl web -n "$ns" -o jsonpath="$1"; }

# Waits until the Workload runs only digest $1, switched and the old revision retired.
wait_switched() {
  local want=$1 old active phase
  old=$(field '{.status.activeRevision}')
  for _ in $(seq 1 240); do
    active=$(field '{.status.activeRevision}')
    phase=$(field '{.status.phase}')
    if [[ "$active" != "$old" && "$phase" == Healthy && "$(field '{.status.imageUpdates.digest}')" == "$want" ]] &&
      ! kubectl get inst -n "$ns" --no-headers -o custom-columns=REV:.spec.revision | grep -q "$old"; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

step "act two: a Workload that follows $repo:stable and trusts one cosign key"
if [[ ! -f "$keys/cosign.pub" ]]; then
  mkdir -p "$keys"
  (cd "$keys" && "$cosign" generate-key-pair --output-key-prefix cosign >/dev/null 2>&1)
fi
kubectl delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$ns" >/dev/null
copy "$REGISTRY_HOST/bulkhead/web:v1" "$repo:stable"
d1=$(digest "$repo:stable")
sign "$d1"
echo "  $repo:stable -> $d1, signed"
kubectl create configmap trusted-keys -n "$ns" --from-file=release.pub="$keys/cosign.pub" >/dev/null
kubectl apply -n "$ns" -f - <<YAML
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {name: web}
spec:
  owner: team-demo
  replicas: 2
  template:
    image: $repo:stable
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {port: 8080, path: /}, periodSeconds: 1}
    terminationGracePeriodSeconds: 2
  imageUpdates: {policy: Follow, checkIntervalSeconds: 300, trustedKeys: {configMapName: trusted-keys}}
  strategy: {type: BlueGreen, blueGreen: {autoPromote: true, scaleDownDelaySeconds: 5}}
---
apiVersion: bulkhead.dev/v1alpha1
kind: WorkloadService
metadata: {name: web}
spec:
  workloadName: web
  ports: [{name: http, port: 80, targetPort: 8080}]
YAML
kubectl wait --for=condition=Available wl/web -n "$ns" --timeout=180s >/dev/null || die "web did not become Available"
kubectl get wl web -n "$ns" -o wide

step "a client polls the service every 20 ms"
client_log="$STATE_DIR/logs/demo-patched-client.log"
"${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/bulkhead-traffic" "$ns" web --max-seconds 300 >"$client_log" 2>&1 &
client=$!
trap 'kill "$client" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "answered" "$client_log" 2>/dev/null && break
  sleep 0.2
done
tail -n 1 "$client_log"

step "a patched web is pushed under the same tag, signed (pushed as :candidate, signed, then tagged :stable)"
copy "$REGISTRY_HOST/bulkhead/web:v2" "$repo:candidate"
d2=$(digest "$repo:candidate")
sign "$d2"
t_push=$(ts)
copy "$repo:candidate" "$repo:stable"
echo "  $repo:stable -> $d2, signed; nobody touches the Workload"
wait_switched "$d2" || die "the rollout of $d2 did not finish; see kubectl bulkhead status web -n $ns"
kill -TERM "$client" 2>/dev/null || true
wait "$client" 2>/dev/null || true
trap - EXIT

# When an Event of reason $1 about web last happened (a repeated one is a series: its
# lastObservedTime moves, its eventTime stays).
event_time() {
  local t
  t=$(kubectl get events.events.k8s.io -n "$ns" --field-selector "regarding.name=web,reason=$1" \
    -o jsonpath='{range .items[*]}{.series.lastObservedTime}{" "}{.eventTime}{"\n"}{end}' 2>/dev/null |
    awk '{print $1}' | sort | tail -n 1)
  [[ -n "$t" ]] && date -d "$t" +%s.%N || echo ""
}
t_preview=$(event_time PreviewStarted)
t_promoted=$(event_time Promoted)
kubectl get wl web -n "$ns" -o wide
kubectl get inst -n "$ns" -o custom-columns=NAME:.metadata.name,IMAGE:.spec.template.image
grep '^\[client\] summary' "$client_log" | sed 's/^\[client\] /  client: /'
echo "  push -> preview started:   $(span "$t_push" "$t_preview")   (check interval 300 s: the push notification did it)"
echo "  push -> traffic switched:  $(span "$t_push" "$t_promoted")"

step "an unsigned image is pushed under the same tag: refused, the patched revision keeps serving"
copy "$REGISTRY_HOST/bulkhead/tamper:v1" "$repo:stable"
for _ in $(seq 1 60); do
  [[ "$(field '{.status.conditions[?(@.type=="ImageNotTrusted")].status}')" == True ]] && break
  sleep 0.5
done
kubectl get wl web -n "$ns" -o wide
echo "  ImageNotTrusted: $(field '{.status.conditions[?(@.type=="ImageNotTrusted")].reason}'): $(field '{.status.conditions[?(@.type=="ImageNotTrusted")].message}')"
plugin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/kubectl-bulkhead"
[[ -x "$plugin" ]] && "$plugin" status web -n "$ns" | head -n 4

((rounds > 0)) || exit 0
step "benchmark: $rounds signed pushes under the same tag (check interval 300 s)"
copy "$REGISTRY_HOST/bulkhead/web:v1" "$repo:stable"   # back to a trusted digest first
wait_switched "$d1" || die "going back to $d1 did not finish"
previews=() switches=()
for round in $(seq 1 "$rounds"); do
  if ((round % 2 == 1)); then src=$d2; else src=$d1; fi
  t_push=$(ts)
  copy "$repo@$src" "$repo:stable"
  wait_switched "$src" || die "round $round did not finish"
  p=$(span "$t_push" "$(event_time PreviewStarted)")
  # Going back to the revision that had traffic before is reported as RolledBack.
  w=$(span "$t_push" "$(printf '%s\n' "$(event_time Promoted)" "$(event_time RolledBack)" | sort -n | tail -n 1)")
  echo "  round $round: push -> preview started $p, push -> traffic switched $w"
  previews+=("${p%s}") switches+=("${w%s}")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2) "s"}'; }
echo "  p50 over $rounds rounds: push -> preview started $(median "${previews[@]}"), push -> traffic switched $(median "${switches[@]}") (poll interval 300 s)"
