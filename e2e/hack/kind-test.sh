#!/usr/bin/env bash
# make test-kind (issue #19): the chart on a real kind node, end to end.
#
#   1. docs/install.md's kind walkthrough, run verbatim (the block between its
#      kind-walkthrough markers): node image, cluster, images, chart, registry, examples;
#   2. controller (two replicas, one leader) and agent pods Running and Ready, the node a Ready
#      Host;
#   3. web Available, and each of its instances' status.isolation read back inside the node
#      from the instance's process: user namespace range (uid_map), seccomp filter, no
#      capabilities, read-only root;
#   4. the network walls refuse a client pod (pods are not Instances) until a NetworkPolicy
#      lets the pod network in (e2e/kind/allow-pods.yaml); then a blue/green rollout of web:v2
#      under that client polling the Service's ClusterIP every 20 ms, with the agent pod
#      deleted mid-rollout: the DaemonSet restarts it, it adopts its
#      instances (same PIDs), the rollout completes, the client saw no failed request and
#      exactly one switch from v1 to v2;
#   5. helm upgrade with a changed value (the agent's log level reaches the new pod) and helm
#      uninstall (the CRDs stay, as documented).
#
# Ends with kind-down.sh (also on failure, unless KIND_KEEP=1). Every wait has a deadline.
set -euo pipefail
USER_PATH=$PATH
hack="$(cd "$(dirname "$0")" && pwd)"
source "$hack/versions.env"
source "$hack/kind-lib.sh"
source "$hack/kind-env.sh"
log() { printf '[test-kind] %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
pass() { log "ok: $*"; }
node="$KIND_CLUSTER_NAME-control-plane"
ns="$BULKHEAD_NAMESPACE"
started=$SECONDS
finish() {
  local rc=$?
  if [[ $rc -ne 0 ]] && ! kubectl get --raw /readyz >/dev/null 2>&1; then
    log "failed after $((SECONDS - started))s, with no cluster API to ask (kind-up's diagnosis is above)"
  elif [[ $rc -ne 0 ]]; then
    log "failed after $((SECONDS - started))s; state:"
    kubectl get pods -A -o wide 2>&1 | head -30 >&2 || true
    kubectl get wl,inst -A -o wide 2>&1 | head -20 >&2 || true
    kubectl get events -A --sort-by=.lastTimestamp 2>&1 | tail -15 >&2 || true
    kubectl -n "$ns" logs ds/bulkhead-node-agent --tail=15 2>&1 | cut -c1-400 >&2 || true
    kubectl -n "$ns" logs -l app.kubernetes.io/component=controller --prefix --tail=10 2>&1 | cut -c1-400 >&2 || true
  fi
  if [[ "${KIND_KEEP:-0}" != 1 ]]; then bash "$hack/kind-down.sh" || rc=1; fi
  log "took $((SECONDS - started))s"
  exit $rc
}
trap finish EXIT

# in_node <command...>: run in the kind node (the host PID view of instances is the node's).
in_node() { podman exec "$node" "$@"; }

# wait_for <seconds> <description> <command...>: poll every 0.5 s until the command succeeds.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "$what not within ${limit}s"
    sleep 0.5
  done
}

# A fresh cluster: whatever an earlier kind-up left goes first.
bash "$hack/kind-down.sh"

# 1. The walkthrough, verbatim.
log "docs/install.md's kind walkthrough"
walkthrough=$(sed -n '/<!-- kind-walkthrough:begin -->/,/<!-- kind-walkthrough:end -->/p' "$REPO_ROOT/docs/install.md" |
  sed -n '/^```sh$/,/^```$/p' | grep -v '^```')
[[ -n "$walkthrough" ]] || fail "docs/install.md has no kind-walkthrough block"
# As a user would: none of this script's environment (kubeconfig, podman settings).
(cd "$REPO_ROOT" && env -u KUBECONFIG -u CONTAINERS_CONF -u KIND_EXPERIMENTAL_PROVIDER \
  -u KIND_EXPERIMENTAL_PODMAN_NETWORK PATH="$USER_PATH" bash -euo pipefail -c "$walkthrough")
export CONTAINERS_CONF="$KIND_STATE/containers.conf"
pass "walkthrough ran ($((SECONDS - started))s)"

# 2. The chart's pods and the Host.
check_pods() {
  local component=$1 want=$2 ready
  ready=$(kubectl -n "$ns" get pods -l "app.kubernetes.io/component=$component" \
    -o jsonpath='{range .items[*]}{.status.phase}/{.status.containerStatuses[0].ready}{"\n"}{end}' | grep -c '^Running/true$' || true)
  [[ "$ready" == "$want" ]]
}
wait_for 120 "2 controller pods Running and Ready" check_pods controller 2
wait_for 120 "the agent pod Running and Ready" check_pods node-agent 1
leader=$(kubectl -n "$ns" get lease bulkhead-controller -o jsonpath='{.spec.holderIdentity}')
kubectl -n "$ns" get pod "$leader" >/dev/null 2>&1 || fail "leader lease names $leader, not a controller pod"
host_ready() { [[ $(kubectl get bhost "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]; }
wait_for 60 "Host $node Ready=True" host_ready
kubectl get bhost
pass "controller 2/2 Ready (leader $leader), agent Ready, Host $node Ready"

# 3. Isolation as the agent reports it, and as the node's kernel shows it.
web_pids() { # <revision>: "containerID pid" of each Running web instance of that revision
  local rev=$1 id
  for id in $(kubectl get inst -l "bulkhead.dev/workload=web,bulkhead.dev/revision=$rev" \
    -o jsonpath='{range .items[?(@.status.phase=="Running")]}{.status.containerID}{"\n"}{end}'); do
    echo "$id $(in_node ctr -n bulkhead task ls | awk -v id="$id" '$1 == id {print $2}')"
  done
}
rev1=$(kubectl get wl web -o jsonpath='{.status.activeRevision}')
[[ -n "$rev1" ]] || fail "web has no active revision"
count=0
for inst in $(kubectl get inst -l "bulkhead.dev/workload=web" -o jsonpath='{.items[*].metadata.name}'); do
  iso=$(kubectl get inst "$inst" -o jsonpath='{.status.isolation}')
  id=$(kubectl get inst "$inst" -o jsonpath='{.status.containerID}')
  pid=$(in_node ctr -n bulkhead task ls | awk -v id="$id" '$1 == id {print $2}')
  [[ "$pid" =~ ^[0-9]+$ ]] || fail "$inst: no task for container $id in the node's containerd"
  host_uid=$(jq -r '.userNamespace.hostUID' <<<"$iso")
  size=$(jq -r '.userNamespace.size' <<<"$iso")
  read -r inner outer len < <(in_node cat "/proc/$pid/uid_map")
  [[ "$inner $outer $len" == "0 $host_uid $size" ]] || fail "$inst: uid_map '$inner $outer $len', status says 0 $host_uid $size"
  [[ $(jq -r '.seccomp.mode' <<<"$iso") == filter ]] || fail "$inst: status seccomp mode is not filter"
  in_node grep -q '^Seccomp:[[:space:]]*2$' "/proc/$pid/status" || fail "$inst: process $pid has no seccomp filter"
  jq -e '.capabilities.effective == []' <<<"$iso" >/dev/null || fail "$inst: status lists effective capabilities (or none at all)"
  in_node grep -q '^CapEff:[[:space:]]*0000000000000000$' "/proc/$pid/status" || fail "$inst: process $pid has capabilities"
  [[ $(jq -r '.readOnlyRootFilesystem' <<<"$iso") == true ]] || fail "$inst: status says the root is writable"
  in_node awk '$5 == "/" {print $6}' "/proc/$pid/mountinfo" | grep -q '^ro' || fail "$inst: process $pid's root is not mounted ro"
  count=$((count + 1))
done
[[ $count -ge 2 ]] || fail "only $count web instances to check"
pass "isolation of $count web instances read back in the node (uid_map, seccomp filter, CapEff 0, ro root)"

# 4. Blue/green under a 20 ms client, the agent pod deleted mid-rollout.
ip=$(kubectl get svc web -o jsonpath='{.spec.clusterIP}')
[[ -n "$ip" ]] || fail "Service web has no ClusterIP"
# The client's image (busybox), loaded onto the node like the chart's.
tools=$(find "${BULKHEAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead}/images" -maxdepth 1 -name 'tools-v1-*' -type d | head -1)
[[ -n "$tools" ]] || fail "no cached tools:v1 image layout: run make up once"
mkdir -p "$KIND_STATE"
rm -f "$KIND_STATE/tools.tar"
skopeo copy --quiet "oci:$tools:tools-v1" "docker-archive:$KIND_STATE/tools.tar:docker.io/bulkhead/tools:v1"
kind load image-archive "$KIND_STATE/tools.tar" --name "$KIND_CLUSTER_NAME"
sed "s/@IP@/$ip/" "$KIND_FILES/client.yaml" | kubectl apply -f - >/dev/null
kubectl wait --for=condition=Ready pod/web-client --timeout=120s >/dev/null
# The walls first: a pod is not an Instance, so web refuses it (the control that shows the
# client can fail) until a NetworkPolicy lets the pod network in.
refused() { (($(kubectl logs web-client | grep -cx FAIL) >= 5)) && ! kubectl logs web-client | grep -qx v1; }
wait_for 60 "5 refused requests from the pod before any NetworkPolicy" refused
pass "the walls refuse the pod network by default ($(kubectl logs web-client | grep -cx FAIL) requests)"
kubectl apply -f "$KIND_FILES/allow-pods.yaml" >/dev/null
wait_for 30 "the client's first answer after the NetworkPolicy" bash -c "kubectl logs web-client | grep -qx v1"
before=$(web_pids "$rev1")
log "v1 tasks: $(tr '\n' ' ' <<<"$before")"
kubectl patch wl web --type merge -p '{"spec":{"template":{"image":"localhost:5000/bulkhead/web:v2"}}}' >/dev/null
preview_up() { [[ -n $(kubectl get wl web -o jsonpath='{.status.previewRevision}') ]]; }
wait_for 60 "a preview revision" preview_up
old_agent=$(kubectl -n "$ns" get pods -l app.kubernetes.io/component=node-agent -o jsonpath='{.items[0].metadata.name}')
kubectl -n "$ns" delete pod "$old_agent" --wait=false >/dev/null
log "deleted agent pod $old_agent mid-rollout"
new_agent_ready() {
  local name
  name=$(kubectl -n "$ns" get pods -l app.kubernetes.io/component=node-agent -o jsonpath='{.items[0].metadata.name}')
  [[ -n "$name" && "$name" != "$old_agent" ]] && check_pods node-agent 1
}
wait_for 120 "a new agent pod Ready" new_agent_ready
# The v1 instances (they retire only scaleDownDelaySeconds after the switch) are the same
# processes: the new agent adopted them.
adopted=0
while read -r id pid; do
  [[ -z "$id" ]] && continue
  now=$(in_node ctr -n bulkhead task ls | awk -v id="$id" '$1 == id {print $2}')
  [[ "$now" == "$pid" ]] || fail "instance task $id was pid $pid, now '$now': not adopted"
  adopted=$((adopted + 1))
done <<<"$before"
[[ $adopted -ge 2 ]] || fail "only $adopted v1 tasks to check for adoption"
log "the new agent pod adopted $adopted v1 instances (same PIDs)"
rev2=$(kubectl get wl web -o jsonpath='{.status.updateRevision}')
promoted() {
  [[ $(kubectl get wl web -o jsonpath='{.status.activeRevision}') == "$rev2" ]] &&
    [[ $(kubectl get wl web -o jsonpath='{.status.availableReplicas}') == 2 ]] &&
    [[ -z $(kubectl get wl web -o jsonpath='{.status.previewRevision}') ]]
}
wait_for 240 "web's rollout to $rev2" promoted
wait_for 30 "the client's first v2 answer" bash -c "kubectl logs web-client | grep -qx v2"
# Keep asking until the v1 instances have retired (scaleDownDelaySeconds), then a bit more.
no_v1() { [[ -z $(kubectl get inst -l "bulkhead.dev/workload=web,bulkhead.dev/revision=$rev1" -o name) ]]; }
wait_for 120 "the v1 instances to retire" no_v1
mark=$(kubectl logs web-client | wc -l)
more_answers() { (($(kubectl logs web-client | wc -l) > mark + 50)); }
wait_for 30 "50 more answers after the v1 instances retired" more_answers
kubectl exec web-client -- /bin/busybox touch /tmp/stop
wait_for 30 "the client to stop" bash -c "kubectl logs web-client | grep -q '^done'"
# From the first answer on (the refused requests before the NetworkPolicy were the control).
answers=$(kubectl logs web-client | sed -n '/^v1$/,$p' | grep -E '^(v1|v2|FAIL)')
total=$(wc -l <<<"$answers")
failed=$(grep -c '^FAIL' <<<"$answers" || true)
switches=$(uniq <<<"$answers" | wc -l)
log "client: $total requests, $failed failed, $((switches - 1)) switches"
[[ "$failed" == 0 ]] || fail "$failed of $total requests failed during the rollout"
[[ $(uniq <<<"$answers" | tr '\n' ' ') == "v1 v2 " ]] || fail "answers switched $((switches - 1)) times: $(uniq -c <<<"$answers" | tr '\n' ' ')"
pass "blue/green under a 20 ms client: $total requests, 0 failed, one switch; agent restart adopted its instances"
kubectl delete pod web-client --wait=false >/dev/null

# 5. helm upgrade with a changed value, then helm uninstall.
helm_install --set agent.logLevel=debug >/dev/null
agent_debug() {
  kubectl -n "$ns" get pods -l app.kubernetes.io/component=node-agent \
    -o jsonpath='{.items[*].spec.containers[0].env[?(@.name=="RUST_LOG")].value}' | grep -qx debug &&
    check_pods node-agent 1
}
wait_for 120 "the upgraded agent pod (RUST_LOG=debug) Ready" agent_debug
[[ $(helm -n "$ns" history bulkhead -o json | jq length) -ge 2 ]] || fail "helm history shows no upgrade"
pass "helm upgrade rolled the agent with the new value"
helm -n "$ns" uninstall bulkhead --wait --timeout 120s >/dev/null
no_chart_pods() { [[ -z $(kubectl -n "$ns" get pods -l app.kubernetes.io/instance=bulkhead -o name) ]]; }
wait_for 120 "the chart's pods gone" no_chart_pods
for crd in workloads.bulkhead.dev instances.bulkhead.dev hosts.bulkhead.dev; do
  kubectl get crd "$crd" >/dev/null || fail "helm uninstall deleted CRD $crd"
done
pass "helm uninstall removed the release and kept the CRDs"
log "all passed in $((SECONDS - started))s"
