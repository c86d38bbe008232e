#!/usr/bin/env bash
# Starts the local test system on 127.0.0.1: etcd, kube-apiserver and kube-controller-manager
# (from the binaries e2e/hack/tools.sh builds and caches), kube-proxy in a network namespace of
# its own (see lib.sh, PROXY_NETNS), a private containerd, and a docker-registry that
# e2e/hack/images.sh fills with the test images.
#
# Idempotent: a component whose recorded PID is still that component is reused; pid files left by
# a killed run are cleared first. A second call returns quickly and starts nothing.
#
# State lives in ${BULKHEAD_STATE_DIR:-<repo>/.bulkhead}:
#   pki/                               CAs, serving and client certs, service-account key pair
#   etcd/                              etcd data
#   containerd/config.toml             the private containerd and its containerd.sock
#   runtime -> /var/lib/bulkhead-local/<hash>/  containerd's root/ and state/, reachable from
#                                      a container's user namespace (see lib.sh)
#   registry/config.yml                the registry: data/
#   logs/<component>.log               each component's output; logs/preflight.log the agent's
#                                      preflight checks
#   pids/<component>.pid               each component's PID
#   kubeconfig                         admin (system:masters), server https://127.0.0.1:16443
#   kube-controller-manager.kubeconfig, kube-proxy.kubeconfig (system:kube-proxy, through
#                                      the proxy's veth)
#   node-agent.kubeconfig, controller.kubeconfig   the admin impersonating each one's
#                                      ServiceAccount (the agent's with its node name)
#
# Environment:
#   BULKHEAD_STATE_DIR    state directory (see above)
#   BULKHEAD_PORT_OFFSET  added to every TCP port (etcd 12379/12380, kube-apiserver 16443,
#                         kube-controller-manager 10257, registry 5000); default 0. N = offset / 1000
#                         also names the system's bridge, service range 10.96.N.0/24 and
#                         kube-proxy network namespace bulkhead-kpN
#   BULKHEAD_SKIP_IMAGES  1: do not run images.sh
#   BULKHEAD_ISOLATION_FLOOR  the local agent's --isolation-floor (default baseline: the
#                         examples need NET_BIND_SERVICE)
#   BULKHEAD_PROFILE      cargo profile directory of the agent and controller binaries
#                         (debug, the default, or release: `make bench` uses release)
#
# Stop everything and delete the state with e2e/hack/down.sh.
#
# Usage: e2e/hack/up.sh
set -euo pipefail

LOG_TAG=up
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------------------------
# PKI

# Writes $PKI_DIR/$1.{key,crt}, a self-signed CA, unless both exist. Returns 1 if it had to
# create them (the caller then drops the certificates the old CA signed).
ensure_ca() {
  local name=$1 cn=$2
  [[ -s "$PKI_DIR/$name.crt" && -s "$PKI_DIR/$name.key" ]] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/CN=$cn" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -keyout "$PKI_DIR/$name.key.tmp" -out "$PKI_DIR/$name.crt.tmp" 2>/dev/null ||
    die "openssl failed to create CA $name"
  mv "$PKI_DIR/$name.key.tmp" "$PKI_DIR/$name.key"
  mv "$PKI_DIR/$name.crt.tmp" "$PKI_DIR/$name.crt"
  log "generated CA $PKI_DIR/$name.crt"
  return 1
}

# Writes $PKI_DIR/$2.{key,crt} unless both exist: an RSA key and a certificate signed by CA $1.
#   $1 CA name, $2 name, $3 subject, $4 extendedKeyUsage, $5 subjectAltName (optional)
issue_cert() {
  local ca=$1 name=$2 subject=$3 eku=$4 san=${5:-} tmp
  [[ -s "$PKI_DIR/$name.crt" && -s "$PKI_DIR/$name.key" ]] && return 0
  tmp=$(mktemp -d "$PKI_DIR/.tmp.XXXXXX")
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    echo "subjectKeyIdentifier=hash"
    echo "authorityKeyIdentifier=keyid"
    [[ -z "$san" ]] || echo "subjectAltName=$san"
  } >"$tmp/ext"
  openssl req -new -newkey rsa:2048 -nodes -sha256 -subj "$subject" \
    -keyout "$tmp/key" -out "$tmp/csr" 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; die "openssl req failed for $name"; }
  openssl x509 -req -sha256 -days 3650 -in "$tmp/csr" \
    -CA "$PKI_DIR/$ca.crt" -CAkey "$PKI_DIR/$ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -extfile "$tmp/ext" -out "$tmp/crt" 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; die "openssl x509 failed for $name"; }
  mv "$tmp/key" "$PKI_DIR/$name.key"
  mv "$tmp/crt" "$PKI_DIR/$name.crt"
  rm -rf "$tmp"
}

# pki/: ca (signs the serving and client certs; also the cluster signing CA of
# kube-controller-manager), front-proxy-ca (request-header authentication, which
# kube-controller-manager's delegated authentication expects to find), sa.key/sa.pub.
ensure_pki() {
  mkdir -p "$PKI_DIR"
  rm -rf "$PKI_DIR"/.tmp.* "$PKI_DIR"/*.tmp
  if [[ ! -s "$PKI_DIR/ca.crt" || ! -s "$PKI_DIR/ca.key" ]]; then
    # Without the CA every other cert is useless: start over.
    find "$PKI_DIR" -mindepth 1 -delete
  fi
  ensure_ca ca bulkhead-local-ca || true
  ensure_ca front-proxy-ca bulkhead-front-proxy-ca || rm -f "$PKI_DIR"/front-proxy-client.*
  issue_cert ca apiserver "/CN=kube-apiserver" serverAuth \
    "IP:$LOOPBACK,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:$SERVICE_FIRST_IP"
  issue_cert ca admin "/O=system:masters/CN=bulkhead-admin" clientAuth
  issue_cert ca kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  issue_cert ca kube-controller-manager-serving "/CN=kube-controller-manager" serverAuth \
    "IP:$LOOPBACK,DNS:localhost"
  issue_cert front-proxy-ca front-proxy-client "/CN=front-proxy-client" clientAuth
  # system:kube-proxy: the user the bootstrap binding system:node-proxier names.
  issue_cert ca kube-proxy "/CN=system:kube-proxy" clientAuth
  if [[ ! -s "$PKI_DIR/sa.key" || ! -s "$PKI_DIR/sa.pub" ]]; then
    openssl genrsa -out "$PKI_DIR/sa.key.tmp" 2048 2>/dev/null || die "openssl genrsa failed"
    openssl rsa -in "$PKI_DIR/sa.key.tmp" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null ||
      die "openssl rsa -pubout failed"
    mv "$PKI_DIR/sa.key.tmp" "$PKI_DIR/sa.key"
  fi
}

# Writes kubeconfig $1 for client cert $PKI_DIR/$2.{crt,key} (certs embedded), atomically.
write_kubeconfig() {
  local out=$1 user=$2
  cat >"$out.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bulkhead
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(base64 -w0 "$PKI_DIR/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$PKI_DIR/$user.crt")
    client-key-data: $(base64 -w0 "$PKI_DIR/$user.key")
contexts:
- name: bulkhead
  context:
    cluster: bulkhead
    user: $user
current-context: bulkhead
EOF
  mv "$out.tmp" "$out"
}

# Writes kubeconfig $1 for the admin's client cert impersonating user $2, with the user extra
# authentication.kubernetes.io/node-name=$3 when $3 is set: the identity Kubernetes gives a
# pod's bound ServiceAccount token, so the local controller and agents run under exactly the
# chart's RBAC and admission policies (node restriction keys on that extra).
write_identity_kubeconfig() {
  local out=$1 user=$2 node=${3:-}
  write_kubeconfig "$out" admin
  {
    printf '    as: %s\n' "$user"
    if [[ -n "$node" ]]; then
      printf '    as-user-extra:\n      authentication.kubernetes.io/node-name: [%s]\n' "$node"
    fi
  } >"$out.as"
  # The user block ends with client-key-data; the identity follows it.
  sed -i "/^    client-key-data:/r $out.as" "$out"
  rm -f "$out.as"
}

# ---------------------------------------------------------------------------------------------
# Health checks (each returns 0 when its component is ready)

curl_local() { curl --noproxy '*' -fsS --max-time 3 "$@"; }

etcd_healthy() {
  curl_local "http://$LOOPBACK:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'
}

apiserver_ready() {
  curl_local --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/admin.crt" --key "$PKI_DIR/admin.key" \
    "$APISERVER_URL/readyz" | grep -qx ok
}

kcm_healthy() {
  curl_local --cacert "$PKI_DIR/ca.crt" "https://$LOOPBACK:$KCM_PORT/healthz" | grep -qx ok
}

registry_healthy() {
  [[ "$(curl_local -o /dev/null -w '%{http_code}' "http://$LOOPBACK:$REGISTRY_PORT/v2/")" == 200 ]]
}

# ---------------------------------------------------------------------------------------------
# Components, in BULKHEAD_COMPONENTS order

start_etcd() {
  ensure_daemon etcd etcd_healthy 60 "$ETCD_CLIENT_PORT $ETCD_PEER_PORT" -- \
    "$BIN_DIR/etcd" \
    --name=bulkhead \
    --data-dir="$STATE_DIR/etcd" \
    --listen-client-urls="http://$LOOPBACK:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://$LOOPBACK:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://$LOOPBACK:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://$LOOPBACK:$ETCD_PEER_PORT" \
    --initial-cluster="bulkhead=http://$LOOPBACK:$ETCD_PEER_PORT" \
    --initial-cluster-state=new \
    --initial-cluster-token=bulkhead-local
}

start_apiserver() {
  ensure_daemon kube-apiserver apiserver_ready "${BULKHEAD_APISERVER_TIMEOUT:-90}" "$APISERVER_PORT" -- \
    "$BIN_DIR/kube-apiserver" \
    --bind-address="$LOOPBACK" \
    --advertise-address="$LOOPBACK" \
    --secure-port="$APISERVER_PORT" \
    --etcd-servers="http://$LOOPBACK:$ETCD_CLIENT_PORT" \
    --tls-cert-file="$PKI_DIR/apiserver.crt" \
    --tls-private-key-file="$PKI_DIR/apiserver.key" \
    --client-ca-file="$PKI_DIR/ca.crt" \
    --requestheader-client-ca-file="$PKI_DIR/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI_DIR/front-proxy-client.crt" \
    --proxy-client-key-file="$PKI_DIR/front-proxy-client.key" \
    --authorization-mode=Node,RBAC \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-issuer="$SA_ISSUER" \
    --service-account-key-file="$PKI_DIR/sa.pub" \
    --service-account-signing-key-file="$PKI_DIR/sa.key" \
    --api-audiences="$SA_ISSUER" \
    --allow-privileged=true \
    --endpoint-reconciler-type=none \
    --profiling=false \
    --v=1
}

start_controller_manager() {
  ensure_daemon kube-controller-manager kcm_healthy 60 "$KCM_PORT" -- \
    "$BIN_DIR/kube-controller-manager" \
    --bind-address="$LOOPBACK" \
    --secure-port="$KCM_PORT" \
    --tls-cert-file="$PKI_DIR/kube-controller-manager-serving.crt" \
    --tls-private-key-file="$PKI_DIR/kube-controller-manager-serving.key" \
    --kubeconfig="$KCM_KUBECONFIG" \
    --authentication-kubeconfig="$KCM_KUBECONFIG" \
    --authorization-kubeconfig="$KCM_KUBECONFIG" \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI_DIR/sa.key" \
    --root-ca-file="$PKI_DIR/ca.crt" \
    --cluster-signing-cert-file="$PKI_DIR/ca.crt" \
    --cluster-signing-key-file="$PKI_DIR/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --cluster-name=bulkhead \
    --leader-elect=false \
    --controllers='*' \
    --profiling=false \
    --v=1
}

# kube-proxy in its own network namespace (see lib.sh, PROXY_NETNS): the namespace, its veth
# and addresses, the host's route for the service range, the DNAT of the API server, then
# the daemon. Everything is per system (named after N = offset / 1000); down.sh removes it.
proxy_network() {
  local ns=(ip netns exec "$PROXY_NETNS")
  ip netns list | grep -qx "$PROXY_NETNS\( (id: [0-9]*)\)\?" || ip netns add "$PROXY_NETNS" ||
    die "cannot create network namespace $PROXY_NETNS"
  if ! ip link show "$PROXY_VETH" >/dev/null 2>&1; then
    ip link add "$PROXY_VETH" type veth peer name eth0 netns "$PROXY_NETNS" ||
      die "cannot create veth $PROXY_VETH into $PROXY_NETNS"
  fi
  ip addr replace "$PROXY_HOST_IP/30" dev "$PROXY_VETH"
  ip link set "$PROXY_VETH" up
  "${ns[@]}" ip addr replace "$PROXY_IP/30" dev eth0
  "${ns[@]}" ip link set lo up
  "${ns[@]}" ip link set eth0 up
  # Inside: back to the host for this system's instances only (no default route). The
  # service range too, so that a packet for a ClusterIP kube-proxy did not DNAT is forwarded
  # (kube-proxy's REJECT of a Service without endpoints is in FORWARD) and never returns: what
  # kube-proxy leaves is refused as unreachable (appended: kube-proxy's jumps come first).
  "${ns[@]}" ip route replace "$AGENT_SUBNET" via "$PROXY_HOST_IP" dev eth0
  "${ns[@]}" ip route replace "$SERVICE_CIDR" via "$PROXY_HOST_IP" dev eth0
  "${ns[@]}" iptables -w -C FORWARD -d "$SERVICE_CIDR" -j REJECT --reject-with icmp-net-unreachable 2>/dev/null ||
    "${ns[@]}" iptables -w -A FORWARD -d "$SERVICE_CIDR" -j REJECT --reject-with icmp-net-unreachable ||
    die "cannot add the service range's REJECT in $PROXY_NETNS"
  # No ICMP rate limit: a ClusterIP without endpoints is refused at once, every time.
  "${ns[@]}" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.icmp_ratelimit=0 net.ipv4.conf.all.send_redirects=0 \
    net.ipv4.conf.eth0.send_redirects=0 >/dev/null
  # The host: this system's service range into the namespace (more specific than the guard).
  ip route replace "$SERVICE_CIDR" via "$PROXY_IP" dev "$PROXY_VETH"
  # The API server for kube-proxy, on the host side of the veth only.
  sysctl -qw "net.ipv4.conf.$PROXY_VETH.route_localnet=1" >/dev/null
  proxy_rule nat PREROUTING -i "$PROXY_VETH" -d "$PROXY_HOST_IP/32" -p tcp --dport "$APISERVER_PORT" \
    -j DNAT --to-destination "$LOOPBACK:$APISERVER_PORT"
  # A host whose FORWARD policy drops (Docker's) would drop the proxy's connections; the
  # walls (mangle, before filter) still decide.
  proxy_rule filter FORWARD -i "$PROXY_VETH" -o "$AGENT_BRIDGE" -j ACCEPT
  # Instances have no route beyond their subnet: they see the proxy as the host, the bridge's
  # own address (the walls let $PROXY_IP through before this rewrite).
  proxy_rule nat POSTROUTING -s "$PROXY_IP/32" -o "$AGENT_BRIDGE" -j MASQUERADE
}

# Inserts rule "$3..." into chain $2 of table $1 unless present, marked with PROXY_RULE_COMMENT.
proxy_rule() {
  local table=$1 chain=$2
  shift 2
  iptables -w -t "$table" -C "$chain" "$@" -m comment --comment "$PROXY_RULE_COMMENT" 2>/dev/null ||
    iptables -w -t "$table" -I "$chain" 1 "$@" -m comment --comment "$PROXY_RULE_COMMENT" ||
    die "cannot add iptables rule to $table $chain: $*"
}

# /livez: healthy once the first sync is in. (/healthz stays 503, "nodeEligible": false: no
# Node object is named --hostname-override, agents register Hosts; kube-proxy waits 30 s for
# it, then runs without.)
kube_proxy_healthy() {
  curl --noproxy '*' -fsS --max-time 3 -o /dev/null "http://$PROXY_IP:10256/livez"
}

start_kube_proxy() {
  [[ -x "$BIN_DIR/kube-proxy" ]] || die "$BIN_DIR/kube-proxy missing after tools.sh"
  proxy_network
  write_kubeconfig "$PROXY_KUBECONFIG" kube-proxy
  # Through the veth, with the API server's own name checked (its certificate names the
  # loopback and localhost).
  sed -i -e "s|    server: .*|    server: https://$PROXY_HOST_IP:$APISERVER_PORT\n    tls-server-name: localhost|" \
    "$PROXY_KUBECONFIG"
  # Host-global settings are left alone: no conntrack table size or timeouts, no localhost
  # NodePorts (route_localnet).
  ensure_daemon kube-proxy kube_proxy_healthy 90 "" -- \
    "$(command -v ip)" netns exec "$PROXY_NETNS" "$BIN_DIR/kube-proxy" \
    --kubeconfig="$PROXY_KUBECONFIG" \
    --hostname-override="$AGENT_HOST" \
    --proxy-mode=iptables \
    --masquerade-all \
    --bind-address="$PROXY_IP" \
    --nodeport-addresses="$PROXY_IP/32" \
    --iptables-localhost-nodeports=false \
    --healthz-bind-address="$PROXY_IP:10256" \
    --metrics-bind-address="127.0.0.1:10249" \
    --conntrack-max-per-core=0 \
    --conntrack-tcp-timeout-established=0 \
    --conntrack-tcp-timeout-close-wait=0 \
    --v=1
}

# start_containerd is in lib.sh (down.sh uses it too).

write_registry_config() {
  mkdir -p "$REGISTRY_DIR/data"
  # The secret signs upload state; one per state directory.
  [[ -s "$REGISTRY_DIR/http-secret" ]] || openssl rand -hex 16 >"$REGISTRY_DIR/http-secret"
  [[ -s "$NOTIFY_TOKEN_FILE" ]] || (umask 077 && openssl rand -hex 16 >"$NOTIFY_TOKEN_FILE")
  cat >"$REGISTRY_CONFIG.tmp" <<EOF
# Written by e2e/hack/up.sh: the test system's registry (no auth, loopback only).
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/data
  delete:
    enabled: true
http:
  addr: $LOOPBACK:$REGISTRY_PORT
  secret: $(cat "$REGISTRY_DIR/http-secret")
# Pushes are announced to the controller (image updates follow tags, docs/image-updates.md).
notifications:
  endpoints:
    - name: bulkhead-controller
      url: http://$LOOPBACK:$NOTIFY_PORT/registry/notifications
      headers:
        Authorization: [Bearer $(cat "$NOTIFY_TOKEN_FILE")]
      timeout: 2s
      threshold: 3
      backoff: 1s
      ignoredmediatypes:
        - application/octet-stream
EOF
  mv "$REGISTRY_CONFIG.tmp" "$REGISTRY_CONFIG"
}

start_registry() {
  write_registry_config
  ensure_daemon registry registry_healthy 30 "$REGISTRY_PORT" -- \
    "$(command -v docker-registry || echo /usr/bin/docker-registry)" serve "$REGISTRY_CONFIG"
}

push_images() {
  if [[ "${BULKHEAD_SKIP_IMAGES:-0}" == 1 ]]; then
    log "BULKHEAD_SKIP_IMAGES=1: not building or pushing the test images"
    return 0
  fi
  # The image cache is not private; images.sh runs under this script's lock.
  (umask 022 && BULKHEAD_STATE_DIR="$STATE_DIR" BULKHEAD_LOCK_HELD=1 \
    bash "$HACK_DIR/images.sh" "$REGISTRY_HOST" >&2) || die "images.sh failed"
}

# The chart's RBAC, ServiceAccounts, tenant roles and admission policies (isolation levels,
# node restriction, controller-only writes), as `helm install` puts them on a real cluster; the
# controller Deployment and agent DaemonSet are left out (the local ones run as processes).
install_chart() {
  local helm="$BIN_DIR/helm" out
  [[ -x "$helm" ]] || die "$helm missing after tools.sh"
  if ! out=$(HELM_CACHE_HOME="$STATE_DIR/helm/cache" HELM_CONFIG_HOME="$STATE_DIR/helm/config" \
    HELM_DATA_HOME="$STATE_DIR/helm/data" KUBECONFIG="$ADMIN_KUBECONFIG" \
    "$helm" upgrade --install "$CHART_RELEASE" "$REPO_ROOT/charts/bulkhead" \
    --namespace "$BULKHEAD_NAMESPACE" --history-max 3 \
    --set controller.enabled=false --set agent.enabled=false 2>&1); then
    printf '%s\n' "$out" >&2
    die "helm install of the chart's RBAC and policies failed"
  fi
  log "chart RBAC and admission policies installed (helm release $CHART_RELEASE)"
}

# Which build of the agent and controller runs: target/$BULKHEAD_PROFILE/ (debug or release).
PROFILE_FLAGS=()
[[ "${BULKHEAD_PROFILE:-debug}" == release ]] && PROFILE_FLAGS=(--release)

# The node agent of this machine: built from this checkout if its binary is missing, Ready once
# its Host reports Ready.
agent_ready() {
  [[ "$(kubectl --kubeconfig "$ADMIN_KUBECONFIG" get hosts.bulkhead.dev "$AGENT_HOST" \
    -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

# The agent's preflight with the agent's flags: one line per check in logs/preflight.log. Fails
# up.sh, showing the checks, when a required one fails (the agent would refuse to start anyway,
# with the same lines in its log, but only after its health check timed out).
agent_preflight() {
  local bin=$1 out
  out=$(log_file preflight)
  if ! "$bin" preflight \
    --containerd-address "$CONTAINERD_SOCK" \
    --containerd-state-dir "$CONTAINERD_STATE" \
    --state-dir "$AGENT_DIR" \
    --allowed-registries "$REGISTRY_HOST" \
    --cni-bridge "$AGENT_BRIDGE" \
    --instance-subnet "$AGENT_SUBNET" >"$out" 2>&1; then
    log "the node agent's preflight failed on this machine:"
    sed 's/^/    /' "$out" >&2
    die "fix the FAIL lines above (each says how), then run up.sh again; the checks are in $out"
  fi
  grep '^warn' "$out" | sed 's/^/    /' >&2 || true
  log "preflight passed ($(grep -c '^ok' "$out") checks ok, $(grep -c '^warn' "$out") warnings; $out)"
}

start_node_agent() {
  [[ "${BULKHEAD_SKIP_AGENT:-0}" == 1 ]] && return 0
  local bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/${BULKHEAD_PROFILE:-debug}/bulkhead-node-agent"
  if [[ ! -x "$bin" ]]; then
    log "building bulkhead-node-agent"
    (cd "$REPO_ROOT" && cargo build -q -p bulkhead-node-agent "${PROFILE_FLAGS[@]}") || die "cargo build failed"
  fi
  kubectl --kubeconfig "$ADMIN_KUBECONFIG" apply --server-side --force-conflicts --field-manager=bulkhead-up \
    -f "$REPO_ROOT/charts/bulkhead/crds/" >/dev/null || die "installing the CRDs failed"
  mkdir -p "$AGENT_DIR"
  agent_preflight "$bin"
  write_identity_kubeconfig "$AGENT_KUBECONFIG" "system:serviceaccount:$BULKHEAD_NAMESPACE:bulkhead-node-agent" "$AGENT_HOST"
  ensure_daemon node-agent agent_ready 60 "$AGENT_METRICS_PORT" -- "$bin" \
    --host-name "$AGENT_HOST" \
    --kubeconfig "$AGENT_KUBECONFIG" \
    --isolation-floor "$AGENT_ISOLATION_FLOOR" \
    --containerd-address "$CONTAINERD_SOCK" \
    --containerd-namespace bulkhead \
    --state-dir "$AGENT_DIR" \
    --allowed-registries "$REGISTRY_HOST" \
    --cni-bridge "$AGENT_BRIDGE" \
    --instance-subnet "$AGENT_SUBNET" \
    --service-proxy-address "$PROXY_IP" \
    --metrics-address "127.0.0.1:$AGENT_METRICS_PORT" \
    --containerd-state-dir "$CONTAINERD_STATE"
}

# bulkhead-controller: leader-elected, Ready once it leads.
controller_ready() {
  curl -fsS "http://127.0.0.1:$CONTROLLER_METRICS_PORT/readyz" >/dev/null
}

start_controller() {
  [[ "${BULKHEAD_SKIP_CONTROLLER:-0}" == 1 ]] && return 0
  local bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/${BULKHEAD_PROFILE:-debug}/bulkhead-controller"
  if [[ ! -x "$bin" ]]; then
    log "building bulkhead-controller"
    (cd "$REPO_ROOT" && cargo build -q -p bulkhead-controller "${PROFILE_FLAGS[@]}") || die "cargo build failed"
  fi
  write_identity_kubeconfig "$CONTROLLER_KUBECONFIG" "system:serviceaccount:$BULKHEAD_NAMESPACE:bulkhead-controller"
  ensure_daemon controller controller_ready 60 "$CONTROLLER_METRICS_PORT" -- "$bin" \
    --kubeconfig "$CONTROLLER_KUBECONFIG" \
    --identity "local-$CONTROLLER_METRICS_PORT" \
    --metrics-address "127.0.0.1:$CONTROLLER_METRICS_PORT" \
    --host-lost-grace-seconds "${BULKHEAD_HOST_LOST_GRACE_SECONDS:-10}" \
    --allowed-registries "$REGISTRY_HOST" \
    --registry-notifications-address "$LOOPBACK:$NOTIFY_PORT" \
    --registry-notifications-token-file "$NOTIFY_TOKEN_FILE"
}

# Unreachable routes over the instance and service ranges (a higher metric than the bridges'
# own routes, which are more specific anyway).
guard_routes() {
  local cidr
  for cidr in "${GUARDED_CIDRS[@]}"; do
    ip route replace unreachable "$cidr" metric 4242 || die "cannot add the unreachable route for $cidr"
  done
}

ensure_namespace() {
  local kc=(kubectl --kubeconfig "$ADMIN_KUBECONFIG" --request-timeout=20s)
  if "${kc[@]}" get namespace "$BULKHEAD_NAMESPACE" >/dev/null 2>&1; then
    return 0
  fi
  local out
  if ! out=$("${kc[@]}" create namespace "$BULKHEAD_NAMESPACE" 2>&1) &&
    [[ "$out" != *AlreadyExists* ]]; then
    die "creating namespace $BULKHEAD_NAMESPACE failed: $out"
  fi
  log "namespace $BULKHEAD_NAMESPACE created"
}

# ---------------------------------------------------------------------------------------------

main() {
  local t0=$SECONDS
  # Keys, kubeconfigs and etcd data are private to the user running the tests.
  umask 077
  check_containerd_socket_paths
  mkdir -p "$STATE_DIR"
  take_lock
  # The marker comes first: it is what lets down.sh (and images.sh) treat the directory as ours.
  touch "$STATE_MARKER"
  mkdir -p "$STATE_DIR/logs" "$STATE_DIR/pids" "$STATE_DIR/etcd"
  clear_stale_pidfiles

  # The binary cache is not private: build with the usual umask.
  (umask 022 && bash "$HACK_DIR/tools.sh" >&2)
  BIN_DIR=$(bash "$HACK_DIR/tools.sh" --print-bin-dir)
  local b
  for b in etcd kube-apiserver kube-controller-manager; do
    [[ -x "$BIN_DIR/$b" ]] || die "$BIN_DIR/$b missing after tools.sh"
  done

  ensure_pki
  write_kubeconfig "$ADMIN_KUBECONFIG" admin
  write_kubeconfig "$KCM_KUBECONFIG" kube-controller-manager

  start_etcd
  start_apiserver
  start_controller_manager
  start_containerd
  start_registry
  ensure_namespace
  install_chart
  push_images
  guard_routes
  start_kube_proxy
  start_node_agent
  start_controller

  log "up in $((SECONDS - t0))s; export KUBECONFIG=$ADMIN_KUBECONFIG; containerd $CONTAINERD_SOCK; registry $REGISTRY_HOST"
}

main "$@"
