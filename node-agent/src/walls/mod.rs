//! Network walls between instances: default deny across namespaces and standard
//! `networking.k8s.io/v1` NetworkPolicy, enforced in the host's kernel on the agent's bridge
//! (iptables `mangle` chains named after the bridge, see [`render`]).
//!
//! observe → plan → apply: [`Walls::sync`] reads the local instances from the CNI results
//! the agent keeps (one file per attached container, written at ADD and removed at DEL, so
//! they survive an agent restart), every Instance address, namespace and policy from
//! reflector stores, plans each local instance's walls ([`plan::plan`], pure), renders the
//! bridge's whole rule set ([`render::render`], pure) and applies it in one
//! `iptables-restore --noflush` transaction. Rules are never removed when the agent stops:
//! a restarted agent replaces them atomically, so there is no moment without walls.
//! The start path syncs after the CNI ADD, and the instance is reported Running (so can be
//! Ready) only after: before its process starts or, when its new address is walled off
//! completely until then ([`closed_until_synced`]), beside the start.

pub mod cidr;
pub mod iptables;
pub mod plan;
pub mod render;
pub mod report;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use bulkhead_crds::Instance;
use futures::StreamExt;
use k8s_openapi::api::{core::v1::Namespace, networking::v1::NetworkPolicy};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, reflector, reflector::Store, watcher},
};
use serde_json::Value;
use tracing::{info, warn};

use iptables::Family::{V4, V6};
use plan::{Direction, Member};
use render::Local;

/// Why the walls could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum WallsError {
    /// An iptables command failed.
    #[error("{command} failed: {message}")]
    Iptables {
        /// The command.
        command: &'static str,
        /// Its error.
        message: String,
    },
    /// Bridged traffic does not pass iptables, so walls between instances on one bridge
    /// would not hold.
    #[error(
        "bridge netfilter is off ({path} is {value:?}): instances on one bridge would bypass \
         the network walls; run `modprobe br_netfilter` and `sysctl -w \
         net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1`, or start the agent with --no-network-walls"
    )]
    BridgeNetfilterOff {
        /// The sysctl file.
        path: &'static str,
        /// What it holds ("" when missing).
        value: String,
    },
    /// The policy, namespace or instance watch has not listed yet.
    #[error(
        "the NetworkPolicy, Namespace and Instance watches have not synced: check the agent's \
         RBAC (list and watch on networkpolicies, namespaces and instances)"
    )]
    NotSynced,
}

/// What the kernel holds for one instance, for its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Rules of its chains and its dispatch rules.
    pub rules: usize,
    /// `namespace/name` of the policies selecting it.
    pub policies: Vec<String>,
}

/// The walls of one bridge.
pub struct Walls {
    bridge: String,
    /// Service proxies' addresses, let through to every instance like the host.
    proxies: Vec<std::net::Ipv4Addr>,
    /// The node's root when the agent runs in a pod (--cni-root): iptables runs there.
    root: Option<PathBuf>,
    results: PathBuf,
    policies: Store<NetworkPolicy>,
    namespaces: Store<Namespace>,
    instances: Store<Instance>,
    /// When all three stores hold their first lists (the start-up sync and the loop wait
    /// at the same time; see `bulkhead_telemetry::ready`).
    ready: bulkhead_telemetry::ready::Ready,
    /// The last transaction applied (without jumps), so unchanged plans are not re-applied.
    last: tokio::sync::Mutex<Option<String>>,
    /// The per-instance chains the last sync kept (every other one was deleted).
    kept: Mutex<Option<Vec<String>>>,
    /// The local addresses the last sync walled, each with its container (`None` before the
    /// first sync): what [`Self::closed_until_synced`] reads.
    walled: Mutex<Option<BTreeMap<std::net::Ipv4Addr, String>>>,
    /// Writes what was applied into the Instances' status, in the background.
    reporter: Arc<report::Reporter>,
    applied: Mutex<BTreeMap<String, Applied>>,
}

impl std::fmt::Debug for Walls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Walls")
            .field("bridge", &self.bridge)
            .finish()
    }
}

/// Keeps of an Instance only what the walls read (identity, labels, the status address):
/// every agent holds every Instance of the cluster, so a whole object each would cost each
/// host memory in proportion to the fleet's size (192 MiB of RSS after one 10000-instance
/// fan-out elsewhere in the cluster; 69 MiB pruned).
fn prune(instance: &mut Instance) {
    let meta = &mut instance.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
    instance.spec.template = Default::default();
    instance.spec.isolation = Default::default();
    instance.spec.image_signature = None;
    instance.spec.seccomp_profile_digest = None;
    instance.status = instance
        .status
        .take()
        .map(|s| bulkhead_crds::InstanceStatus {
            pod_ip: s.pod_ip,
            ..Default::default()
        });
}

impl Walls {
    /// Starts the watches and the loop that re-syncs on every change (and every 30 s, in
    /// case something removed the rules).
    pub fn start(
        client: &Client,
        bridge: &str,
        proxies: &[std::net::Ipv4Addr],
        state_dir: &Path,
        root: Option<PathBuf>,
    ) -> Arc<Self> {
        let (policies, pw) = reflector::store();
        let (namespaces, nw) = reflector::store();
        let (instances, iw) = reflector::store();
        let cfg = watcher::Config::default;
        let events = futures::stream::select_all([
            reflector(
                pw,
                watcher(Api::<NetworkPolicy>::all(client.clone()), cfg()),
            )
            .default_backoff()
            .map(log_watch_error)
            .boxed(),
            reflector(nw, watcher(Api::<Namespace>::all(client.clone()), cfg()))
                .default_backoff()
                .map(log_watch_error)
                .boxed(),
            reflector(
                iw,
                watcher(Api::<Instance>::all(client.clone()), cfg()).modify(prune),
            )
            .default_backoff()
            .map(log_watch_error)
            .boxed(),
        ]);
        let ready = {
            let (p, n, i) = (policies.clone(), namespaces.clone(), instances.clone());
            bulkhead_telemetry::ready::Ready::spawn(async move {
                p.wait_until_ready().await.is_ok()
                    && n.wait_until_ready().await.is_ok()
                    && i.wait_until_ready().await.is_ok()
            })
        };
        let walls = Arc::new(Self {
            ready,
            bridge: bridge.to_string(),
            proxies: proxies.to_vec(),
            root,
            results: state_dir.join("cni/results"),
            policies,
            namespaces,
            instances,
            last: tokio::sync::Mutex::new(None),
            kept: Mutex::default(),
            walled: Mutex::default(),
            reporter: report::Reporter::start(client.clone()),
            applied: Mutex::default(),
        });
        tokio::spawn(run(walls.clone(), events));
        walls
    }

    /// What the kernel holds for a container, once synced.
    pub fn applied(&self, container_id: &str) -> Option<Applied> {
        self.applied.lock().ok()?.get(container_id).cloned()
    }

    /// The instance's own status write carries `a`: its queued report of `a` is not sent.
    pub fn claim(&self, namespace: &str, name: &str, a: &Applied) {
        self.reporter.claim(namespace, name, a);
    }

    /// Checks that bridged IPv4 and IPv6 traffic passes iptables (else the walls would hold
    /// only between bridges).
    pub fn check_bridge_netfilter() -> Result<(), WallsError> {
        for path in [
            "/proc/sys/net/bridge/bridge-nf-call-iptables",
            "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
        ] {
            let value = std::fs::read_to_string(path).unwrap_or_default();
            if !bridge_netfilter_on(&value) {
                return Err(WallsError::BridgeNetfilterOff {
                    path,
                    value: value.trim().to_string(),
                });
            }
        }
        Ok(())
    }

    /// Plans and applies the bridge's walls; `force` re-applies an unchanged plan.
    pub async fn sync(&self, force: bool) -> Result<(), WallsError> {
        self.sync_checked(force, None).await
    }

    /// The bridge's jumps from the built-in chains that are not in the kernel. A start checks
    /// them while its network is attached, not after (see [`Self::sync_checked`]).
    pub async fn missing_jumps(&self) -> Vec<(&'static str, String)> {
        iptables::missing_jumps(self.root.as_deref(), V4, render::jumps(&self.bridge)).await
    }

    /// Whether container `id`, just attached at `ip`, is walled off completely until the next
    /// sync: then its process may start while that sync runs ([`closed_until_synced`]).
    /// `missing` are the jumps found missing while it was attached.
    pub fn closed_until_synced(
        &self,
        id: &str,
        ip: std::net::Ipv4Addr,
        missing: &[(&'static str, String)],
    ) -> bool {
        let walled = self.walled.lock().ok();
        closed_until_synced(walled.as_ref().and_then(|w| w.as_ref()), id, ip, missing)
    }

    /// [`Self::sync`] with the jumps already checked (`Some`: the missing ones), which the
    /// restore then adds. A jump removed between the check and the restore is added back by
    /// the next sync (at most 30 s later), as one removed at any other time is.
    pub async fn sync_checked(
        &self,
        force: bool,
        checked: Option<Vec<(&'static str, String)>>,
    ) -> Result<(), WallsError> {
        tokio::time::timeout(Duration::from_secs(30), self.ready.wait())
            .await
            .map_err(|_| WallsError::NotSynced)?
            .map_err(|_| WallsError::NotSynced)?;
        let mut last = self.last.lock().await;
        let (locals, owners) = self.locals();
        let text = render::render(&self.bridge, &locals, &self.proxies, &[]);
        if !force && last.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        let missing = match checked {
            Some(missing) => missing,
            None => self.missing_jumps().await,
        };
        // Tests widen the window between a plan and its restore (every sync of that agent):
        // whatever starts meanwhile runs before any sync that knows it has applied.
        if let Some(wait) = crate::failpoint::delay("walls-restore") {
            tokio::time::sleep(wait).await;
        }
        iptables::restore(
            self.root.as_deref(),
            V4,
            &render::render(&self.bridge, &locals, &self.proxies, &missing),
        )
        .await?;
        if force || last.is_none() {
            let missing =
                iptables::missing_jumps(self.root.as_deref(), V6, render::jumps6(&self.bridge))
                    .await;
            iptables::restore(
                self.root.as_deref(),
                V6,
                &render::render6(&self.bridge, &missing),
            )
            .await?;
        }
        let keep: Vec<String> = locals
            .iter()
            .flat_map(|l| ['E', 'I'].map(|d| render::instance_chain(&self.bridge, d, &l.id)))
            .chain(render::shared(&self.bridge, &locals).1.into_keys())
            .collect();
        let kept = self.kept.lock().ok().and_then(|k| k.clone());
        if needs_sweep(kept.as_deref(), &keep, force) {
            iptables::remove_stale(self.root.as_deref(), &self.bridge, &keep).await?;
        }
        if let Ok(mut k) = self.kept.lock() {
            *k = Some(keep);
        }
        let now: BTreeMap<String, Applied> = locals
            .iter()
            .map(|l| {
                let a = Applied {
                    rules: render::rule_count(l),
                    policies: l.walls.policies.clone(),
                };
                (l.id.clone(), a)
            })
            .collect();
        let before = self
            .applied
            .lock()
            .map(|mut a| std::mem::replace(&mut *a, now.clone()))
            .unwrap_or_default();
        for (id, a) in now {
            if before.get(&id) != Some(&a)
                && let Some((namespace, name)) = owners.get(&id)
            {
                self.reporter
                    .queue(namespace.clone(), name.clone(), a, before.get(&id));
            }
        }
        if let Ok(mut w) = self.walled.lock() {
            *w = Some(locals.iter().map(|l| (l.ip, l.id.clone())).collect());
        }
        info!(bridge = %self.bridge, instances = locals.len(), "network walls applied");
        *last = Some(text);
        Ok(())
    }

    /// The attached containers with their walls (observe + plan), and the Instance
    /// (namespace, name) of each container the store knows.
    fn locals(&self) -> (Vec<Local>, BTreeMap<String, (String, String)>) {
        let attached = read_results(&self.results);
        let instances = self.instances.state();
        let by_id: BTreeMap<String, &Instance> = instances
            .iter()
            .map(|i| {
                let id = crate::instance::labels::container_id(&i.uid().unwrap_or_default());
                (id, i.as_ref())
            })
            .collect();
        let mut input = plan::Input {
            members: vec![],
            namespaces: self
                .namespaces
                .state()
                .iter()
                .map(|n| (n.name_any(), n.labels().clone().into_iter().collect()))
                .collect(),
            policies: self
                .policies
                .state()
                .iter()
                .map(|p| (**p).clone())
                .collect(),
        };
        // Local addresses come from the CNI results (current even before the status is
        // written); others from the Instances' status.
        let local_ips: BTreeMap<&str, std::net::Ipv4Addr> = attached
            .iter()
            .filter_map(|(id, ip, _)| Some((by_id.get(id)?.metadata.uid.as_deref()?, *ip)))
            .collect();
        for i in instances.iter() {
            let uid = i.uid().unwrap_or_default();
            let ip = local_ips.get(uid.as_str()).copied().or_else(|| {
                let status_ip = i.status.as_ref()?.pod_ip.as_deref()?;
                plan::ipv4(status_ip).filter(|ip| !attached.iter().any(|a| a.1 == *ip))
            });
            if let Some(ip) = ip {
                input.members.push(Member {
                    namespace: i.namespace().unwrap_or_default(),
                    name: i.name_any(),
                    ip,
                    labels: i.labels().clone().into_iter().collect(),
                });
            }
        }
        let owners = by_id
            .iter()
            .filter(|(id, _)| attached.iter().any(|a| &a.0 == *id))
            .map(|(id, i)| {
                (
                    id.clone(),
                    (i.namespace().unwrap_or_default(), i.name_any()),
                )
            })
            .collect();
        let locals = attached
            .into_iter()
            .map(|(id, ip, veth)| {
                let walls = match by_id.get(&id) {
                    Some(i) => plan::plan(
                        &input,
                        &Member {
                            namespace: i.namespace().unwrap_or_default(),
                            name: i.name_any(),
                            ip,
                            labels: i.labels().clone().into_iter().collect(),
                        },
                    ),
                    // An instance the store does not know (deleted, or not seen yet): closed.
                    None => plan::Walls {
                        ingress: Direction::Only(vec![]),
                        egress: Direction::Only(vec![]),
                        policies: vec![],
                    },
                };
                Local {
                    id,
                    ip,
                    veth,
                    walls,
                }
            })
            .collect();
        (locals, owners)
    }
}

/// Whether a new local address is walled off completely before its own chains exist: the
/// dispatch chains drop every packet from an address without a chain (or from another
/// port) and every packet to one. That holds when the walls were applied before (`walled`,
/// the addresses the last sync walled), every jump into them is in place (`missing` is
/// empty), and no chain of another container answers for `ip` (an address handed on by
/// IPAM before the sync that removes its previous owner's chains: its ingress chain
/// would still admit that owner's peers). Pure.
pub fn closed_until_synced(
    walled: Option<&BTreeMap<std::net::Ipv4Addr, String>>,
    id: &str,
    ip: std::net::Ipv4Addr,
    missing: &[(&'static str, String)],
) -> bool {
    let Some(walled) = walled else { return false };
    missing.is_empty() && walled.get(&ip).is_none_or(|owner| owner == id)
}

/// Whether a sync must list the kernel's chains to delete stale ones: always when forced or
/// first, else only when a chain the last sync kept is no longer kept. (After each sync the
/// bridge's per-instance chains are exactly the kept ones, so a sync that only adds
/// instances, like a start, leaves nothing stale and saves the listing.)
fn needs_sweep(kept: Option<&[String]>, keep: &[String], force: bool) -> bool {
    match kept {
        None => true,
        Some(_) if force => true,
        Some(kept) => kept.iter().any(|c| !keep.contains(c)),
    }
}

/// Whether the sysctl's content says bridged traffic is passed to iptables.
fn bridge_netfilter_on(value: &str) -> bool {
    value.trim() == "1"
}

/// The status form of what is applied.
pub fn network_status(a: &Applied) -> bulkhead_crds::instance::NetworkStatus {
    bulkhead_crds::instance::NetworkStatus {
        rules: i32::try_from(a.rules).unwrap_or(i32::MAX),
        policies: a.policies.clone(),
    }
}

/// A failed watch is logged (an RBAC refusal reads `... cannot list resource ...`); the
/// watcher retries with back-off.
fn log_watch_error<T>(event: Result<T, watcher::Error>) {
    if let Err(e) = event {
        warn!(error = %e, "network walls watch failed");
    }
}

/// Re-syncs after each burst of watch events, and every 30 s. The watches are driven by a
/// task of their own, so a sync waiting for the stores never stalls them.
async fn run(walls: Arc<Walls>, events: impl futures::Stream<Item = ()> + Send + 'static) {
    let changed = Arc::new(tokio::sync::Notify::new());
    let notify = changed.clone();
    tokio::spawn(events.for_each(move |()| {
        notify.notify_one();
        futures::future::ready(())
    }));
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        let force = tokio::select! {
            () = changed.notified() => {
                // Let a burst (a list, a namespace deletion) settle into one sync.
                tokio::time::sleep(Duration::from_millis(100)).await;
                false
            }
            _ = tick.tick() => true,
        };
        if let Err(e) = walls.sync(force).await {
            warn!(bridge = %walls.bridge, error = %e, "applying the network walls failed");
        }
    }
}

/// The attached containers: `(container id, address, host veth)` from the kept CNI ADD
/// results.
fn read_results(dir: &Path) -> Vec<(String, std::net::Ipv4Addr, Option<String>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let id = path.file_stem()?.to_str()?.to_string();
            let result: Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
            let ip = plan::ipv4(&crate::network::cni::first_ip(&result)?)?;
            Some((id, ip, host_veth(&result)))
        })
        .collect();
    out.sort();
    out
}

/// The host side of the instance's veth in a bridge plugin's result: the interface with
/// no sandbox that is not the bridge (the one `ips[].interface` does not name).
fn host_veth(result: &Value) -> Option<String> {
    result["interfaces"]
        .as_array()?
        .iter()
        .filter(|i| i["sandbox"].as_str().is_none_or(str::is_empty))
        .filter_map(|i| i["name"].as_str())
        .find(|n| n.starts_with("veth"))
        .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_address_is_closed_until_synced_only_when_nothing_stale_answers_for_it() {
        let ip = |last: u8| std::net::Ipv4Addr::new(10, 89, 0, last);
        let walled: BTreeMap<_, _> = [(ip(2), "bh-a".to_string())].into();
        assert!(closed_until_synced(Some(&walled), "bh-b", ip(3), &[]));
        assert!(
            closed_until_synced(Some(&walled), "bh-a", ip(2), &[]),
            "its own chain from an earlier sync"
        );
        assert!(
            !closed_until_synced(Some(&walled), "bh-b", ip(2), &[]),
            "an address IPAM handed on before the previous owner's chains went"
        );
        assert!(
            !closed_until_synced(None, "bh-b", ip(3), &[]),
            "no sync yet (an agent that just started): nothing is known to hold"
        );
        let missing = [("FORWARD", "-i bh -j BE-bh".to_string())];
        assert!(
            !closed_until_synced(Some(&walled), "bh-b", ip(3), &missing),
            "a missing jump lets the bridge's traffic around the walls"
        );
    }

    #[test]
    fn only_a_sync_that_drops_a_kept_chain_lists_the_kernel_for_stale_ones() {
        let kept = ["BE-bh-a".to_string(), "BI-bh-a".to_string()];
        let grown = [
            kept[0].clone(),
            kept[1].clone(),
            "BE-bh-b".into(),
            "BI-bh-b".into(),
        ];
        assert!(needs_sweep(None, &grown, false), "the first sync sweeps");
        assert!(
            !needs_sweep(Some(&kept), &grown, false),
            "a start only adds"
        );
        assert!(!needs_sweep(Some(&kept), &kept, false));
        assert!(
            needs_sweep(Some(&kept), &kept, true),
            "the periodic resync sweeps"
        );
        assert!(needs_sweep(Some(&grown), &kept, false), "an instance left");
        assert!(needs_sweep(Some(&kept), &[], false));
    }

    #[test]
    fn bridge_netfilter_must_be_on() {
        assert!(bridge_netfilter_on("1\n"));
        assert!(!bridge_netfilter_on("0\n"));
        assert!(!bridge_netfilter_on(""), "module not loaded: no file");
        let e = WallsError::BridgeNetfilterOff {
            path: "/x",
            value: "0".into(),
        }
        .to_string();
        assert!(
            e.contains("sysctl -w net.bridge.bridge-nf-call-iptables=1"),
            "{e}"
        );
    }

    #[test]
    fn reads_attached_containers_and_their_veths_from_cni_results() {
        let dir = tempfile::tempdir().unwrap();
        let result = serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "bh5", "mac": "aa"},
                {"name": "veth0a1b2c3d", "mac": "bb"},
                {"name": "eth0", "mac": "cc", "sandbox": "/proc/7/ns/net"},
            ],
            "ips": [{"address": "10.90.5.7/24", "interface": 2}],
        });
        std::fs::write(dir.path().join("bh-u1.json"), result.to_string()).unwrap();
        std::fs::write(dir.path().join("bh-u2.json"), "not json").unwrap();
        assert_eq!(
            read_results(dir.path()),
            [(
                "bh-u1".to_string(),
                "10.90.5.7".parse().unwrap(),
                Some("veth0a1b2c3d".to_string())
            )]
        );
        assert!(read_results(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn the_pruned_instance_keeps_what_the_walls_plan_reads() {
        let mut i: Instance = serde_json::from_value(serde_json::json!({
            "apiVersion": "bulkhead.dev/v1alpha1", "kind": "Instance",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u1",
                         "labels": {"app": "web"}, "annotations": {"big": "x"},
                         "finalizers": ["bulkhead.dev/node-agent"]},
            "spec": {"hostName": "h1", "revision": "r1",
                     "template": {"image": "registry.local/web@sha256:0000000000000000000000000000000000000000000000000000000000000000",
                                  "command": ["/bin/server"]},
                     "isolation": {}},
            "status": {"phase": "Running", "podIP": "10.90.0.7", "containerID": "c1"},
        }))
        .unwrap();
        prune(&mut i);
        assert_eq!(
            (i.name_any(), i.namespace(), i.uid()),
            ("a".to_string(), Some("ns".into()), Some("u1".into()))
        );
        assert_eq!(i.labels().get("app").map(String::as_str), Some("web"));
        let status = i.status.as_ref().unwrap();
        assert_eq!(status.pod_ip.as_deref(), Some("10.90.0.7"));
        assert_eq!((status.phase, status.container_id.as_deref()), (None, None));
        assert!(i.spec.template.image.is_empty() && i.spec.template.command.is_empty());
        assert_eq!(i.metadata.annotations, None);
        assert_eq!(i.metadata.finalizers, None);
    }
}
