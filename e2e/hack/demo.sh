#!/usr/bin/env bash
# The one-command demo: install what is missing, build, start the local system (control
# plane, containerd, registry, node agent, controller), apply examples/, show what the kernel
# enforces on an instance, then roll out a patched image blue/green while a client polls the
# service every 20 ms, narrating each step, and print a summary. The system keeps running.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
state="${BULKHEAD_STATE_DIR:-$root/.bulkhead}"
export KUBECONFIG="$state/kubeconfig"
step() { printf '\n==> %s\n' "$*"; }

# Never fail silently: on a timeout, print each Workload's conditions, each instance that is not
# Running and Ready with its phase, reason and message, the Hosts' conditions and the log
# paths, then exit non-zero.
explain_timeout() {
  {
    printf '\n!!! timed out waiting for %s. What is not ready, and why:\n' "$1"
    printf '\nWorkloads in namespace demo (condition=status reason: message):\n'
    kubectl get wl -n demo -o json | jq -r '.items[] | "  \(.metadata.name) phase=\(.status.phase // "-")",
      ((.status.conditions // [])[] | "    \(.type)=\(.status) \(.reason // "-"): \(.message // "")")'
    printf '\nInstances not Running and Ready (phase, reason, message):\n'
    kubectl get inst -n demo -o json | jq -r '.items[]
      | select(.status.phase != "Running" or ([(.status.conditions // [])[] | select(.type == "Ready" and .status == "True")] | length) == 0)
      | "  \(.metadata.name) on \(.spec.hostName // "no host yet"): phase=\(.status.phase // "none") reason=\(.status.reason // "-") message=\(.status.message // "-")"'
    printf '\nHosts (condition=status reason: message):\n'
    kubectl get bhost -o json | jq -r '.items[] | "  \(.metadata.name)\(if .spec.unschedulable then " (cordoned)" else "" end)",
      ((.status.conditions // [])[] | "    \(.type)=\(.status) \(.reason // "-"): \(.message // "")")'
    printf '\nLogs:\n'
    printf '  %s\n' "$state"/logs/*.log
    printf '  instance output: %s/agent/logs/ (or: target/debug/bulkhead-node-agent logs --state-dir %s/agent <namespace>/<name>)\n' "$state" "$state"
  } >&2
  exit 1
}

# kubectl wait that explains itself when it times out.
wait_available() {
  kubectl wait --for=condition=Available "wl/$1" -n demo --timeout="${2:-180s}" ||
    explain_timeout "Workload $1 to become Available"
}

step "installing what this machine lacks (Debian packages, pinned Kubernetes binaries)"
bash e2e/hack/install-deps.sh

step "building bulkhead"
cargo build --workspace --bins

step "starting the local system: etcd, kube-apiserver, kube-controller-manager, kube-proxy (in its own network namespace), containerd, registry, node agent, controller"
bash e2e/hack/up.sh

step "preflight: what the node agent checked before it registered this host (logs/preflight.log)"
cat "$state/logs/preflight.log"

step "kubectl get hosts: the agent registered its host and what its kernel can enforce"
kubectl get bhost
kubectl get bhost local-1 -o jsonpath='{.status.features}{"\n"}'

step "applying examples/ into namespace demo"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# api adds NET_BIND_SERVICE, a baseline relaxation (docs/security.md): the namespace allows it.
kubectl label namespace demo bulkhead.dev/isolation=baseline --overwrite >/dev/null
kubectl apply -n demo -f examples/

step "waiting for Workload web to become Available (the controller schedules, the agent starts)"
wait_available web
wait_available api

step "kubectl get bulkhead -n demo"
kubectl get bulkhead -n demo

first=$(kubectl get inst -n demo -l bulkhead.dev/workload=web -o jsonpath='{.items[0].metadata.name}')
step "what instance $first runs with (status.isolation, written by the agent)"
kubectl get inst -n demo "$first" -o jsonpath='{.status.isolation}' | jq . 2>/dev/null || \
  kubectl get inst -n demo "$first" -o jsonpath='{.status.isolation}{"\n"}'
container=$(kubectl get inst -n demo "$first" -o jsonpath='{.status.containerID}')
pid=$(ctr --address "$state/containerd/containerd.sock" -n bulkhead tasks ls | awk -v c="$container" '$1 == c {print $2}')
echo "host PID $pid runs as host UID $(awk '/^Uid:/ {print $2}' /proc/"$pid"/status) (root inside, unprivileged outside)"
grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/"$pid"/status
ip=$(kubectl get inst -n demo "$first" -o jsonpath='{.status.podIP}')
echo "curl http://$ip:8080/ (the instance's own network namespace, on the agent's bridge):"
curl -s --max-time 3 "http://$ip:8080/" || echo "(no answer)"

step "the WorkloadService publishes the ready instances as a native Service + EndpointSlice"
kubectl get wsvc web -n demo
kubectl get service,endpointslices -n demo -l bulkhead.dev/service=web

step "starting a client that polls the service's ClusterIP $(kubectl get service web -n demo -o jsonpath='{.spec.clusterIP}') every 20 ms (through kube-proxy, in its own network namespace)"
client_log="$state/logs/demo-client.log"
"${CARGO_TARGET_DIR:-$root/target}/debug/bulkhead-traffic" demo web --cluster-ip --max-seconds 400 >"$client_log" 2>&1 &
client=$!
trap 'kill "$client" 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  grep -q "answered" "$client_log" 2>/dev/null && break
  sleep 0.2
done
tail -n 1 "$client_log"

v2="localhost:${REGISTRY_PORT:-5000}/bulkhead/web:v2"
step "the patched image is published: $v2"
skopeo inspect --tls-verify=false "docker://$v2" --format 'digest {{.Digest}}, built {{.Created}}' 2>/dev/null || true

step "pointing Workload web at the patched image: a blue/green rollout starts"
ts() { date +%s.%N; }
t_patch=$(ts)
kubectl patch wl web -n demo --type merge -p "{\"spec\":{\"template\":{\"image\":\"$v2\"}}}"
old=$(kubectl get wl web -n demo -o jsonpath='{.status.activeRevision}')
last=""
finished=0
for _ in $(seq 1 240); do
  wl=$(kubectl get wl web -n demo -o jsonpath='{.status.phase}|{.status.activeRevision}|{.status.previewRevision}|{.status.updateRevision}|{.status.conditions[?(@.type=="Progressing")].reason}|{.status.conditions[?(@.type=="Progressing")].message}')
  IFS='|' read -r phase active preview update reason message <<<"$wl"
  revs=$(kubectl get inst -n demo -l bulkhead.dev/workload=web --no-headers \
    -o custom-columns=REV:.spec.revision,PHASE:.status.phase,READY:'.status.conditions[?(@.type=="Ready")].status' 2>/dev/null |
    awk '{n[$1]++; if ($2 == "Running" && $3 == "True") r[$1]++} END {for (k in n) printf "%s:%d/%d ready  ", k, r[k]+0, n[k]}')
  now="phase=$phase active=$active preview=${preview:-none} ($reason) instances ${revs:-none}"
  if [[ "$now" != "$last" ]]; then
    printf '  %s  %s\n' "$(date +%T)" "$now"
    [[ -n "$message" ]] && printf '             %s\n' "$message"
    printf '             %s\n' "$(tail -n 1 "$client_log")"
    last="$now"
  fi
  if [[ "$phase" == Healthy && "$active" == "$update" && "$active" != "$old" && "$revs" != *"$old"* ]]; then
    finished=1
    break
  fi
  sleep 0.5
done
((finished == 1)) || explain_timeout "the blue/green rollout of web to finish"
t_done=$(ts)
kill -TERM "$client" 2>/dev/null || true
wait "$client" 2>/dev/null || true
trap - EXIT

step "kubectl get bulkhead -n demo after the rollout"
kubectl get wl,wsvc -n demo
kubectl get inst -n demo -l bulkhead.dev/workload=web

step "the rollout's story, as Events on Workload web"
kubectl get events.events.k8s.io -n demo --field-selector regarding.name=web,regarding.kind=Workload \
  --sort-by=.eventTime -o custom-columns=TIME:.eventTime,REASON:.reason,NOTE:.note | tail -n 8

event_time() {
  local t
  t=$(kubectl get events.events.k8s.io -n demo --field-selector "regarding.name=web,reason=$1" \
    --sort-by=.eventTime -o jsonpath='{.items[-1:].eventTime}' 2>/dev/null)
  [[ -n "$t" ]] && date -d "$t" +%s.%N || echo ""
}
t_preview=$(event_time PreviewStarted)
t_ready=$(event_time PreviewReady)
t_promoted=$(event_time Promoted)
t_retired=$(event_time ScaledDown)
span() { [[ -n "$1" && -n "$2" ]] && awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1fs", b - a}' || echo "?"; }

step "summary"
grep '^\[client\] summary\|^\[client\] answers\|^\[client\] v\|^\[client\] failed' "$client_log" | sed 's/^\[client\] /  client: /'
echo "  revision $old -> $(kubectl get wl web -n demo -o jsonpath='{.status.activeRevision}')"
echo "  patch applied -> preview instances started:   $(span "$t_patch" "$t_preview")"
echo "  preview started -> all ready and verified:   $(span "$t_preview" "$t_ready")"
echo "  ready -> traffic switched (autoPromotionSeconds 5): $(span "$t_ready" "$t_promoted")"
echo "  switched -> old revision retired (scaleDownDelaySeconds 30, instant rollback until then): $(span "$t_promoted" "$t_retired")"
echo "  whole rollout:                               $(span "$t_patch" "$t_done")"

step "the API refuses bad input, naming the field"
kubectl apply -n demo -f - <<'YAML' || true
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {name: broken}
spec:
  owner: team-demo
  replicas: -1
  template: {image: "localhost:5000/Web:v1"}
YAML

step "a tenant cannot lower the walls: namespace demo is baseline, so host root is refused"
kubectl apply -n demo -f - <<'YAML' || true
apiVersion: bulkhead.dev/v1alpha1
kind: Workload
metadata: {name: rooted}
spec:
  owner: team-demo
  template: {image: "localhost:5000/bulkhead/web:v1"}
  isolation:
    userNamespace: false
    capabilities: {add: [SYS_ADMIN]}
YAML

step "act two: patched images roll out by themselves (e2e/hack/demo-patched.sh)"
bash e2e/hack/demo-patched.sh

cat <<EOT

The system keeps running. Look around:
  export KUBECONFIG=$KUBECONFIG
  kubectl get bulkhead -A                  # every Bulkhead object
  kubectl get wl web -n demo -o yaml       # status.blueGreen: the rollout's record
  kubectl get endpointslices -n demo       # what a Service consumer routes to
  kubectl explain workload.spec.isolation  # the API's own documentation
  kubectl bulkhead status web -n demo      # the rollout as a tree (target/debug/kubectl-bulkhead)
  ls $state/logs/                       # component logs
Stop everything with: make down
EOT
