//! Running the Instances bound to this host.
//!
//! A kube-runtime Controller watches only `spec.hostName=<this host>`. Each reconcile is
//! observe → act → report: look at containerd (the container named after the Instance's UID
//! and its task), take the one step that is missing, write the status. Nothing is kept only
//! in memory: allocations are rebuilt from container labels at start-up, so a restarted
//! agent adopts what runs and starts nothing twice.

pub mod backoff;
pub mod finalizer;
pub mod labels;
pub mod probe;
pub mod record;
pub mod restart;
pub mod running;
pub mod signature;
pub mod start;
pub mod status;
pub mod steps;
pub mod stop;
pub mod sweep;

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use bulkhead_crds::{FINALIZER_NODE_AGENT, Instance, host::HostFeatures};
use futures::{StreamExt, channel::mpsc};
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller,
        controller::Action,
        finalizer::{Event, finalizer},
        reflector::ObjectRef,
        watcher,
    },
};
use tracing::{debug, info, warn};

use crate::{
    image::Registry,
    isolation::{mcs::McsAllocator, userns::UidRangePool},
    runtime::containerd::{Containerd, ContainerdError},
};

/// What a reconcile can fail with. Failures of one Instance never stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// containerd failed.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    /// The Instance lacks a field the API always sets.
    #[error("instance is missing {0}")]
    MissingObjectKey(&'static str),
    /// Something on the host failed.
    #[error("{0}")]
    Host(String),
}

/// Allocators of this host, rebuilt from containerd at start-up.
#[derive(Debug)]
pub struct Allocations {
    /// Host UID/GID ranges.
    pub uids: UidRangePool,
    /// SELinux MCS pairs.
    pub mcs: McsAllocator,
}

/// Everything a reconcile needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// This host's name.
    pub host: String,
    /// containerd in the agent's namespace.
    pub containerd: Containerd,
    /// Registry client with the allow-list.
    pub registry: Registry,
    /// Tags resolved in the last few seconds.
    pub recent_tags: crate::image::recent::RecentTags,
    /// Allocators.
    pub allocations: Mutex<Allocations>,
    /// The host's isolation features.
    pub features: HostFeatures,
    /// The weakest isolation level this host runs (`--isolation-floor`).
    pub isolation_floor: bulkhead_crds::policy::IsolationLevel,
    /// Agent state directory (instance logs live in `logs/`).
    pub state_dir: PathBuf,
    /// Containers whose exit is being waited for.
    pub supervised: Mutex<HashSet<String>>,
    /// Wakes the controller for an Instance whose task exited.
    pub wake: mpsc::UnboundedSender<ObjectRef<Instance>>,
    /// First restart back-off, in seconds (doubles up to 5 minutes).
    pub restart_backoff_base: i32,
    /// How long a Ready instance being deleted keeps serving before SIGTERM.
    pub deregistration: Duration,
    /// The instance network; None runs instances without one (an empty network namespace).
    pub cni: Option<crate::network::Cni>,
    /// Network walls on the agent's own bridge (None with `--cni-conf-dir` or no network).
    pub walls: Option<std::sync::Arc<crate::walls::Walls>>,
    /// Metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Probe loops by `<container>/<pid>`.
    pub probing: Mutex<std::collections::HashMap<String, tokio::task::AbortHandle>>,
    /// Seccomp notification listeners (Record, Complain, counted denials).
    pub notifier: crate::isolation::notify::Notifier,
    /// Where the shims send instances' stdout and stderr.
    pub log_writer: crate::logs::LogWriter,
    /// Publishes Events on Instances.
    pub recorder: kube::runtime::events::Recorder,
    /// The node's root seen from the agent (--cni-root, when it runs in a pod): where the
    /// node's paths that containerd hands out (snapshot directories) are found.
    pub node_root: Option<PathBuf>,
    /// Delays between failed start attempts, by Instance UID.
    pub start_backoff: Mutex<backoff::Backoff>,
    /// The agent's last status write per Instance, until the watch shows it.
    pub written: status::Written,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("host", &self.host)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

impl Context {
    /// The start back-off, locked (None only if a panic poisoned it).
    pub fn backoff(&self) -> Option<std::sync::MutexGuard<'_, backoff::Backoff>> {
        self.start_backoff.lock().ok()
    }

    /// Where an instance's stdout and stderr go.
    pub fn log_path(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.state_dir
            .join("logs")
            .join(format!("{namespace}_{name}_{uid}.log"))
    }
}

/// Runs the Instance controller until a shutdown signal.
pub async fn run(ctx: Arc<Context>, wake: mpsc::UnboundedReceiver<ObjectRef<Instance>>) {
    let api: Api<Instance> = Api::all(ctx.client.clone());
    let selector = format!("spec.hostName={}", ctx.host);
    Controller::new(api, watcher::Config::default().fields(&selector))
        .reconcile_on(wake)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "reconcile failed");
            }
        })
        .await;
    info!("instance controller stopped");
}

use self::finalizer::Pending;

async fn reconcile(
    instance: Arc<Instance>,
    ctx: Arc<Context>,
) -> Result<Action, kube::runtime::finalizer::Error<Error>> {
    let namespace = instance.namespace().unwrap_or_default();
    debug!(instance = %instance.name_any(), %namespace, resource_version = ?instance.resource_version(), "reconciling");
    let api: Api<Instance> = Api::namespaced(ctx.client.clone(), &namespace);
    // An Instance bound elsewhere is never touched (the field selector should not deliver it).
    if instance.spec.host_name.as_deref() != Some(ctx.host.as_str()) {
        return Ok(Action::await_change());
    }
    // The finalizer is added here rather than by `finalizer()`, which would end this
    // reconcile and start the instance only in the next one: the start goes on beside the
    // patch and waits for it before the container is created (see [`self::finalizer`]).
    if let Some(pending) = self::finalizer::Pending::send(&api, &instance, FINALIZER_NODE_AGENT) {
        return start::apply(&instance, &ctx, &pending)
            .await
            .map_err(kube::runtime::finalizer::Error::ApplyFailed);
    }
    finalizer(&api, FINALIZER_NODE_AGENT, instance, |event| async {
        match event {
            Event::Apply(instance) => start::apply(&instance, &ctx, &Pending::none()).await,
            Event::Cleanup(instance) => stop::cleanup(&instance, &ctx).await,
        }
    })
    .await
}

fn error_policy(
    instance: Arc<Instance>,
    error: &kube::runtime::finalizer::Error<Error>,
    _ctx: Arc<Context>,
) -> Action {
    warn!(instance = %instance.name_any(), namespace = ?instance.namespace(), %error, "instance reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}
