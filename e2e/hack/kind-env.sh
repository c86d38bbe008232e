# The kind cluster's environment and steps, shared by kind-up.sh, kind-down.sh and
# kind-test.sh (issue #19). Needs versions.env and kind-lib.sh sourced first.
# shellcheck shell=bash

REPO_ROOT="$(cd "$KIND_HACK/../.." && pwd)"
STATE_DIR="${BULKHEAD_STATE_DIR:-$REPO_ROOT/.bulkhead}"
KIND_STATE="$STATE_DIR/kind"
KIND_CLUSTER_NAME="${KIND_CLUSTER_NAME:-bulkhead}"
KIND_SUBNET="${KIND_SUBNET:-10.250.0.0/24}"
KIND_NETWORK=bulkhead-kind
PORT_OFFSET="${BULKHEAD_PORT_OFFSET:-0}"
[[ "$PORT_OFFSET" =~ ^[0-9]{1,5}$ ]] && ((10#$PORT_OFFSET <= 49000)) || {
  echo "error: BULKHEAD_PORT_OFFSET=$PORT_OFFSET is not a number from 0 to 49000" >&2
  exit 1
}
KIND_API_PORT=$((6443 + 10#$PORT_OFFSET))
# Where the host reaches the node's registry (kubectl port-forward) while filling it.
KIND_REGISTRY_FORWARD_PORT=$((5001 + 10#$PORT_OFFSET))
BULKHEAD_NAMESPACE=bulkhead-system
# The kernel settings the kubelet writes on start (pkg/kubelet/cm: setupKernelTunables) plus the
# inotify limits kind's nodes need; host-wide from a node container, so saved and restored.
KIND_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes
  fs.inotify.max_user_watches fs.inotify.max_user_instances)

export KUBECONFIG="$KIND_STATE/kubeconfig"
export KIND_EXPERIMENTAL_PROVIDER=podman
export KIND_EXPERIMENTAL_PODMAN_NETWORK="$KIND_NETWORK"
# podman reads this instead of /etc/containers (prepare_host writes it); only once it exists,
# since podman refuses a CONTAINERS_CONF that names no file.
if [[ -f "$KIND_STATE/containers.conf" ]]; then
  export CONTAINERS_CONF="$KIND_STATE/containers.conf"
else
  unset CONTAINERS_CONF
fi
PATH="$(bash "$KIND_HACK/kind-tools.sh" --print-bin-dir):$(bash "$KIND_HACK/tools.sh" --print-bin-dir):$PATH"
export PATH

# prepare_host: what the node container needs from this machine, each change recorded.
prepare_host() {
  local hard
  hard=$(ulimit -Hn)
  [[ "$hard" == unlimited ]] && hard=1048576
  export CONTAINERS_CONF="$KIND_STATE/containers.conf"
  printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=4096:4096"]\n' "$hard" "$hard" >"$CONTAINERS_CONF"
  if [[ ! -f "$KIND_STATE/sysctls.saved" ]]; then
    local k
    for k in "${KIND_SYSCTLS[@]}"; do echo "$k=$(sysctl -n "$k")"; done >"$KIND_STATE/sysctls.saved.tmp"
    mv "$KIND_STATE/sysctls.saved.tmp" "$KIND_STATE/sysctls.saved"
  fi
  sysctl -q -w fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=512
  if [[ ! -e /lib/modules ]]; then
    mkdir /lib/modules
    touch "$KIND_STATE/created-lib-modules"
  fi
  guard_routes
  if ! podman network exists "$KIND_NETWORK"; then
    ip -4 route | grep -q "^${KIND_SUBNET%%/*}" && {
      echo "error: $KIND_SUBNET is already routed on this machine; set KIND_SUBNET to a free /24" >&2
      exit 1
    }
    podman network create -d bridge --subnet "$KIND_SUBNET" "$KIND_NETWORK" >/dev/null
  fi
}

# The node's own ranges: the service subnet (e2e/kind/cluster.yaml), the pod subnet and the agent's
# instance subnet live inside the node, so nothing the node forwards to this machine for
# them (a ClusterIP before kube-proxy has synced, say) may leave it: unreachable routes, at
# a metric of their own so that a local system's guard of the same range can coexist.
KIND_GUARDED=(10.97.0.0/16 10.244.0.0/16 10.89.0.0/24)
KIND_GUARD_METRIC=4244
guard_routes() {
  local cidr
  for cidr in "${KIND_GUARDED[@]}"; do
    if ! ip -4 route show type unreachable "$cidr" | grep -q "metric $KIND_GUARD_METRIC"; then
      ip route add unreachable "$cidr" metric "$KIND_GUARD_METRIC"
      echo "$cidr" >>"$KIND_STATE/guard-routes"
    fi
  done
}

# undo_host: the reverse of prepare_host, for what it recorded.
undo_host() {
  if [[ -f "$KIND_STATE/guard-routes" ]]; then
    local cidr
    while read -r cidr; do
      ip route del unreachable "$cidr" metric "$KIND_GUARD_METRIC" 2>/dev/null || true
    done <"$KIND_STATE/guard-routes"
    rm -f "$KIND_STATE/guard-routes"
  fi
  if podman network exists "$KIND_NETWORK" 2>/dev/null; then
    podman network rm "$KIND_NETWORK" >/dev/null
  fi
  if [[ -f "$KIND_STATE/sysctls.saved" ]]; then
    local line
    while read -r line; do sysctl -q -w "$line" || true; done <"$KIND_STATE/sysctls.saved"
    rm -f "$KIND_STATE/sysctls.saved"
  fi
  if [[ -f "$KIND_STATE/created-lib-modules" ]]; then
    rmdir /lib/modules 2>/dev/null || true
    rm -f "$KIND_STATE/created-lib-modules"
  fi
  rm -f "$KIND_STATE/containers.conf"
  unset CONTAINERS_CONF
}

# render_config: kind's cluster configuration for this machine.
render_config() {
  sed -e "s/@API_PORT@/$KIND_API_PORT/" "$KIND_FILES/cluster.yaml"
}

# start_registry: a registry on the node's loopback (localhost:5000, where the examples pull
# from), filled with the example images through a port-forward.
start_registry() {
  # A pod's spec cannot change in place: a new one each time (it is refilled below).
  kubectl -n "$BULKHEAD_NAMESPACE" delete pod registry --ignore-not-found --wait=true >/dev/null
  kubectl apply -f "$KIND_FILES/registry.yaml" >/dev/null
  kubectl -n "$BULKHEAD_NAMESPACE" wait --for=condition=Ready pod/registry --timeout=120s >/dev/null
  local cache="${BULKHEAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead}/images" image layout
  kubectl -n "$BULKHEAD_NAMESPACE" port-forward pod/registry "$KIND_REGISTRY_FORWARD_PORT:5000" >"$KIND_STATE/port-forward.log" 2>&1 &
  local pf=$!
  for _ in $(seq 50); do
    curl -fsS -o /dev/null "http://127.0.0.1:$KIND_REGISTRY_FORWARD_PORT/v2/" 2>/dev/null && break
    sleep 0.2
  done
  for image in web-v1 web-v2 tools-v1; do
    layout=$(find "$cache" -maxdepth 1 -name "$image-*" -type d | head -1)
    [[ -n "$layout" ]] || { kill "$pf"; echo "error: no cached $image layout in $cache: run make up once (images.sh builds it)" >&2; exit 1; }
    skopeo copy --quiet --dest-tls-verify=false "oci:$layout:$image" \
      "docker://127.0.0.1:$KIND_REGISTRY_FORWARD_PORT/bulkhead/${image%-*}:${image##*-}"
  done
  kill "$pf"
  wait "$pf" 2>/dev/null || true
}

# helm_install: the chart with the values for a kind node (e2e/kind/values.yaml).
helm_install() {
  local tag
  tag=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml" | head -1)
  helm upgrade --install bulkhead "$REPO_ROOT/charts/bulkhead" -n "$BULKHEAD_NAMESPACE" --create-namespace \
    -f "$KIND_FILES/values.yaml" --set imageTag="$tag" "$@"
  kubectl -n "$BULKHEAD_NAMESPACE" rollout status deployment/bulkhead-controller --timeout=180s
  kubectl -n "$BULKHEAD_NAMESPACE" rollout status daemonset/bulkhead-node-agent --timeout=180s
}

# apply_examples: the examples, web Available.
apply_examples() {
  kubectl label namespace default bulkhead.dev/isolation=baseline --overwrite >/dev/null
  kubectl apply -f "$REPO_ROOT/examples/"
  kubectl wait --for=condition=Available wl/web --timeout=180s
}
