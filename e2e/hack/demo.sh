#!/usr/bin/env bash
# The one-command demo, as far as the project has come: install what is missing, build,
# start the local system (control plane, containerd, registry, node agent, controller),
# apply examples/, show what the kernel enforces on an instance, and roll out a patched
# image. Blue/green with traffic switching, networking and probes arrive with their issues.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
state="${BULKHEAD_STATE_DIR:-$root/.bulkhead}"
export KUBECONFIG="$state/kubeconfig"
step() { printf '\n==> %s\n' "$*"; }

step "installing what this machine lacks (Debian packages, pinned Kubernetes binaries)"
bash e2e/hack/install-deps.sh

step "building bulkhead"
cargo build --workspace --bins

step "starting the local system: etcd, kube-apiserver, kube-controller-manager, containerd, registry, node agent, controller"
bash e2e/hack/up.sh

step "kubectl get hosts: the agent registered its host and what its kernel can enforce"
kubectl get bhost
kubectl get bhost local-1 -o jsonpath='{.status.features}{"\n"}'

step "applying examples/ into namespace demo"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -n demo -f examples/

step "waiting for Workload web to become Available (the controller schedules, the agent starts)"
kubectl wait --for=condition=Available wl/web -n demo --timeout=180s
kubectl wait --for=condition=Available wl/api -n demo --timeout=180s

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

step "publishing the patched image: web -> localhost:5000/bulkhead/web:v2"
echo "(until the blue/green controller lands, a BlueGreen Workload rolls with every new instance"
echo " started and ready before any old one retires: maxSurge 100%, maxUnavailable 0)"
kubectl patch wl web -n demo --type merge -p '{"spec":{"template":{"image":"localhost:5000/bulkhead/web:v2"}}}'
for _ in $(seq 1 120); do
  line=$(kubectl get wl web -n demo -o jsonpath='{.status.phase} ready={.status.readyReplicas} updated={.status.updatedReplicas} instances={.status.replicas} active={.status.activeRevision} update={.status.updateRevision}')
  echo "  $(date +%T) $line"
  [[ "$line" == Healthy* && "$(kubectl get wl web -n demo -o jsonpath='{.status.activeRevision}')" == "$(kubectl get wl web -n demo -o jsonpath='{.status.updateRevision}')" ]] && break
  sleep 1
done
kubectl get inst -n demo -l bulkhead.dev/workload=web
ip=$(kubectl get inst -n demo -l bulkhead.dev/workload=web -o jsonpath='{.items[?(@.status.phase=="Running")].status.podIP}' | awk '{print $1}')
echo "curl http://$ip:8080/ now answers: $(curl -s --max-time 3 "http://$ip:8080/" || echo '(no answer)')"

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

cat <<EOT

The demo stops here for now: instance networking, probes and the real blue/green switch
of service traffic are the next pieces. The system keeps running:
  export KUBECONFIG=$KUBECONFIG
  kubectl get bulkhead -A                  # every Bulkhead object
  kubectl explain workload.spec.isolation  # the API's own documentation
  ls $state/logs/                       # component logs
Stop everything with: make down
EOT
