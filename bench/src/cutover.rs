//! Item 3, blue/green cutover: how long after the last preview instance turns ready the
//! traffic switches, and whether a client notices.
//!
//! The scenario (bounded in count and time; every address is on the local system's bridge):
//! 1. in a fresh namespace, a BlueGreen Workload `web` ([`REPLICAS`] replicas of web:v1,
//!    readiness probe every second, `autoPromote: true`, `autoPromotionSeconds: 0`,
//!    `scaleDownDelaySeconds: 0`, so each round is a whole rollout) and its WorkloadService,
//!    on the local system's real controller and agent; wait until the active EndpointSlice
//!    lists every instance;
//! 2. the e2e suite's 20 ms client ([`bulkhead_e2e::traffic::Poller`]: it routes by the
//!    Service's EndpointSlice as kube-proxy would) runs through the whole scenario;
//! 3. each round changes the image (web:v2, web:v1, ...) and watches the `web` Instances and
//!    the active EndpointSlice `web`: the instant (of the watch event) the last preview
//!    Instance is Running with Ready=True and IsolationVerified=True, and the instant the
//!    slice lists exactly the preview instances' addresses. Their difference is the round's
//!    switch time. The round ends when only the new revision's instances exist;
//! 4. the baseline, interleaved with the rounds: the same switch done directly, the floor of
//!    what any controller could do. The benchmark server-side applies an EndpointSlice of its
//!    own (of a selectorless Service `direct` in the same namespace) from the old round's
//!    addresses to the new one's and back, and times the write until its own watch sees it.
//!
//! The controller's path between the two instants: the agent's status write is seen by the
//! Workload reconciler, which records the promotion (one status write) and then writes the
//! active EndpointSlice itself (one write, `controller/src/service/switch.rs`), seen by our
//! watch. The baseline is one write seen by one watch.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bulkhead_crds::{
    Instance, InstancePhase, LABEL_WORKLOAD,
    conditions::{self, types},
    workload::WorkloadPhase,
};
use bulkhead_e2e::{
    TestNamespace,
    agent::image,
    poll_until,
    rollout::{self, CONVERGE},
    traffic,
};
use futures::StreamExt;
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
    runtime::watcher,
};
use serde::{Deserialize, Serialize};

use crate::stats::{Summary, ratio};

/// Instances of the `web` Workload.
pub const REPLICAS: usize = 3;
/// The baseline's Service and EndpointSlice.
const DIRECT: &str = "direct";
/// Field manager of the baseline's writes.
const MANAGER: &str = "bulkhead-bench";

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Rollouts (the image alternates web:v2, web:v1, ...).
    pub rounds: usize,
    /// Direct switches of the baseline after each round.
    pub direct_per_round: usize,
    /// Longest one round may take.
    pub round_timeout: Duration,
}

/// One rollout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Round {
    /// The image rolled out, e.g. `web:v2`.
    pub image: String,
    /// Its revision.
    pub revision: String,
    /// Template changed → last preview instance Ready, seconds.
    pub preview_ready_s: f64,
    /// Last preview instance Ready → EndpointSlice switched, milliseconds.
    pub switch_ms: f64,
    /// Template changed → only the new revision's instances exist, seconds.
    pub done_s: f64,
}

/// Figures of a measured cutover.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Last preview Instance Ready → EndpointSlice switched, milliseconds, per rollout.
    pub switch_ms: Vec<f64>,
    /// Summary of `switch_ms`.
    pub switch: Option<Summary>,
    /// Requests of the polling load that failed.
    pub failed_requests: u64,
    /// Requests of the polling load.
    pub total_requests: u64,
    /// Instances of the Workload.
    #[serde(default)]
    pub replicas: usize,
    /// Each rollout.
    #[serde(default)]
    pub rounds: Vec<Round>,
    /// The baseline: EndpointSlice applied directly → seen by a watch, milliseconds.
    #[serde(default)]
    pub direct_ms: Vec<f64>,
    /// Summary of `direct_ms`.
    #[serde(default)]
    pub direct: Option<Summary>,
    /// The answers the client got, consecutive repeats removed (`v1, v2, v1, ...`).
    #[serde(default)]
    pub answers: Vec<String>,
    /// The first few failed requests, with why.
    #[serde(default)]
    pub failures: Vec<String>,
    /// Wall seconds of item 3.
    #[serde(default)]
    pub wall_s: f64,
}

impl Results {
    /// p50 of the switch over p50 of the direct switch.
    pub fn ratio(&self) -> Option<f64> {
        ratio(self.switch?.p50, self.direct?.p50)
    }
}

/// Whether item 3 ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Outcome {
    /// Not measured, and why.
    NotMeasured {
        /// Why not.
        reason: String,
    },
    /// The scenario failed; no figure is reported.
    Failed {
        /// Why.
        error: String,
    },
    /// Measured.
    Measured(Box<Results>),
}

/// Runs the blue/green cutover scenario (see the module documentation) in a fresh
/// namespace, which is deleted afterwards. The e2e helpers it reuses panic on failure; a
/// panic or an error becomes [`Outcome::Failed`], so the other items' results are kept.
pub async fn run(cfg: &Config) -> Outcome {
    let ns = match tokio::spawn(TestNamespace::new("bench-cutover")).await {
        Ok(ns) => ns,
        Err(e) => return failed(e),
    };
    eprintln!("[bench] cutover: namespace {}", ns.name);
    // The 20 ms client stops after MAX_RUN; the whole scenario fits in it.
    let bound = traffic::MAX_RUN;
    let mut task = tokio::spawn(scenario(ns.clone(), cfg.clone()));
    let outcome = match tokio::time::timeout(bound, &mut task).await {
        Ok(Ok(Ok(r))) => Outcome::Measured(Box::new(r)),
        Ok(Ok(Err(e))) => Outcome::Failed {
            error: format!("{e:#}"),
        },
        Ok(Err(e)) => failed(e),
        Err(_) => {
            task.abort();
            Outcome::Failed {
                error: format!("not finished within {bound:?}"),
            }
        }
    };
    ns.delete().await;
    outcome
}

/// A panicked task as a failure.
fn failed(e: tokio::task::JoinError) -> Outcome {
    let error = match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "panicked".into()),
        Err(e) => e.to_string(),
    };
    Outcome::Failed { error }
}

async fn scenario(ns: TestNamespace, cfg: Config) -> anyhow::Result<Results> {
    let t0 = Instant::now();
    let strategy = "autoPromote: true, autoPromotionSeconds: 0, scaleDownDelaySeconds: 0, \
         abortScaleDownDelaySeconds: 0";
    let yaml = rollout::blue_green_yaml(&image("web:v1"), REPLICAS as i32, 600, strategy);
    rollout::create(&ns, &yaml).await;
    let slices: Api<EndpointSlice> = ns.api();
    poll_until(CONVERGE, || async {
        let slice = slices.get_opt("web").await.ok()??;
        (traffic::addresses(&slice).len() == REPLICAS).then_some(())
    })
    .await
    .context("the active EndpointSlice never listed every web:v1 instance")?;
    let poller = rollout::start_traffic(&ns).await;
    eprintln!("[bench] cutover: web:v1 serves, the 20 ms client runs");

    let service: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": DIRECT},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }))?;
    ns.api::<Service>()
        .create(&PostParams::default(), &service)
        .await
        .context("creating the baseline's Service")?;

    let mut rounds = Vec::new();
    let mut direct_ms = Vec::new();
    for i in 0..cfg.rounds {
        let tag = if i % 2 == 0 { "web:v2" } else { "web:v1" };
        let (round, old, new) = run_round(&ns, tag, cfg.round_timeout)
            .await
            .with_context(|| format!("round {} ({tag})", i + 1))?;
        eprintln!(
            "[bench] cutover round {}: {tag} preview ready after {:.1} s, switched {:.1} ms later, done after {:.1} s",
            i + 1,
            round.preview_ready_s,
            round.switch_ms,
            round.done_s
        );
        rounds.push(round);
        if i == 0 {
            apply_direct(&slices, &old).await?;
        }
        direct_ms.extend(direct_switches(&slices, &old, &new, cfg.direct_per_round).await?);
    }
    // A moment for the client after the last switch.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = poller.stop().await;
    let failures = report.failed();
    let switch_ms: Vec<f64> = rounds.iter().map(|r| r.switch_ms).collect();
    Ok(Results {
        switch: Summary::of(&switch_ms),
        switch_ms,
        failed_requests: failures.len() as u64,
        total_requests: report.samples.len() as u64,
        replicas: REPLICAS,
        rounds,
        direct: Summary::of(&direct_ms),
        direct_ms,
        answers: report.sequence(),
        failures: failures
            .iter()
            .take(5)
            .map(|s| format!("at {:.3} s: {:?}", s.at.as_secs_f64(), s.answer))
            .collect(),
        wall_s: t0.elapsed().as_secs_f64(),
    })
}

/// What a round's watches saw.
#[derive(Default)]
struct View {
    instances: HashMap<String, Instance>,
    init: Option<HashMap<String, Instance>>,
    instances_synced: bool,
    slice: Option<EndpointSlice>,
    slice_synced: bool,
}

enum Seen {
    Instance(Box<watcher::Event<Instance>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
}

impl View {
    fn apply(&mut self, seen: Seen) {
        match seen {
            Seen::Instance(e) => match *e {
                watcher::Event::Init => self.init = Some(HashMap::new()),
                watcher::Event::InitApply(i) => {
                    if let Some(m) = self.init.as_mut() {
                        m.insert(i.metadata.name.clone().unwrap_or_default(), i);
                    }
                }
                watcher::Event::InitDone => {
                    if let Some(m) = self.init.take() {
                        self.instances = m;
                    }
                    self.instances_synced = true;
                }
                watcher::Event::Apply(i) => {
                    self.instances
                        .insert(i.metadata.name.clone().unwrap_or_default(), i);
                }
                watcher::Event::Delete(i) => {
                    self.instances
                        .remove(i.metadata.name.as_deref().unwrap_or_default());
                }
            },
            Seen::Slice(e) => match *e {
                watcher::Event::Init => {}
                watcher::Event::InitApply(s) | watcher::Event::Apply(s) => self.slice = Some(s),
                watcher::Event::InitDone => self.slice_synced = true,
                watcher::Event::Delete(_) => self.slice = None,
            },
        }
    }

    /// The addresses (no port) the active slice routes to.
    fn routed(&self) -> BTreeSet<String> {
        self.slice.as_ref().map_or_else(BTreeSet::new, ips)
    }
}

/// The IPs of a slice's ready endpoints.
fn ips(slice: &EndpointSlice) -> BTreeSet<String> {
    traffic::addresses(slice)
        .into_iter()
        .map(|a| {
            a.rsplit_once(':')
                .map_or(a.clone(), |(ip, _)| ip.to_string())
        })
        .collect()
}

/// Running, Ready=True and IsolationVerified=True, with an address.
fn ready(i: &Instance) -> bool {
    let Some(s) = &i.status else { return false };
    s.phase == Some(InstancePhase::Running)
        && s.pod_ip.is_some()
        && conditions::is_true(&s.conditions, types::READY)
        && conditions::is_true(&s.conditions, types::ISOLATION_VERIFIED)
}

/// The preview (every live instance not of `old`): its revision and addresses once all
/// [`REPLICAS`] are ready.
fn preview_ready(
    instances: &HashMap<String, Instance>,
    old: &str,
) -> Option<(String, BTreeSet<String>)> {
    let preview: Vec<&Instance> = instances
        .values()
        .filter(|i| i.metadata.deletion_timestamp.is_none() && i.spec.revision != old)
        .collect();
    if preview.len() != REPLICAS || !preview.iter().all(|i| ready(i)) {
        return None;
    }
    let revision = preview.first()?.spec.revision.clone();
    if preview.iter().any(|i| i.spec.revision != revision) {
        return None;
    }
    let ips = preview
        .iter()
        .filter_map(|i| i.status.as_ref()?.pod_ip.clone())
        .collect();
    Some((revision, ips))
}

/// One rollout to `tag`: returns the round and the old and new addresses.
async fn run_round(
    ns: &TestNamespace,
    tag: &str,
    timeout: Duration,
) -> anyhow::Result<(Round, BTreeSet<String>, BTreeSet<String>)> {
    let old = rollout::status_of(&rollout::workload(ns).await)
        .active_revision
        .context("the Workload has no active revision")?;
    let instances = watcher(
        ns.api::<Instance>(),
        watcher::Config::default().labels(&format!("{LABEL_WORKLOAD}=web")),
    )
    .map(|e| e.map(|e| Seen::Instance(Box::new(e))));
    let slice = watcher(
        ns.api::<EndpointSlice>(),
        watcher::Config::default().fields("metadata.name=web"),
    )
    .map(|e| e.map(|e| Seen::Slice(Box::new(e))));
    let mut events = futures::stream::select(instances, slice).boxed();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut view = View::default();
    let mut next = async |view: &mut View| -> anyhow::Result<Instant> {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(Ok(seen))) => {
                let at = Instant::now();
                view.apply(seen);
                Ok(at)
            }
            Ok(Some(Err(e))) => {
                eprintln!("[bench] cutover: watch error (it retries): {e}");
                Ok(Instant::now())
            }
            Ok(None) => bail!("the watches ended"),
            Err(_) => bail!("not finished within {timeout:?}"),
        }
    };
    while !(view.instances_synced && view.slice_synced) {
        next(&mut view).await?;
    }
    let old_ips = view.routed();
    let started = Instant::now();
    rollout::set_template(ns, serde_json::json!({"image": image(tag)})).await;

    let mut ready_at: Option<Instant> = None;
    let mut switched_at: Option<Instant> = None;
    let mut preview: Option<(String, BTreeSet<String>)> = None;
    // When the slice took its current addresses: should the slice's event arrive before the
    // last instance's, the switch keeps its own instant (and the round a negative figure).
    let mut routed = old_ips.clone();
    let mut routed_since = started;
    let done_at = loop {
        let at = next(&mut view).await?;
        let now_routed = view.routed();
        if now_routed != routed {
            routed = now_routed;
            routed_since = at;
        }
        if switched_at.is_none() {
            preview = preview_ready(&view.instances, &old);
            ready_at = match (&preview, ready_at) {
                (Some(_), None) => Some(at),
                (Some(_), kept) => kept,
                (None, _) => None,
            };
        }
        let Some((revision, ips)) = &preview else {
            continue;
        };
        if switched_at.is_none() && routed == *ips {
            switched_at = Some(routed_since);
        }
        let only_new = view.instances.len() == REPLICAS
            && view
                .instances
                .values()
                .all(|i| i.spec.revision == *revision);
        if switched_at.is_some() && only_new {
            break at;
        }
    };
    let (Some((revision, new_ips)), Some(ready_at), Some(switched_at)) =
        (preview, ready_at, switched_at)
    else {
        bail!("the round ended without a switch");
    };
    let rev = revision.clone();
    rollout::wait_for(
        ns,
        "the Workload reports the new revision Healthy",
        move |wl| {
            let s = rollout::status_of(wl);
            s.active_revision.as_deref() == Some(rev.as_str())
                && s.phase == Some(WorkloadPhase::Healthy)
        },
    )
    .await;
    let signed_ms = |a: Instant, b: Instant| match b.checked_duration_since(a) {
        Some(d) => d.as_secs_f64() * 1e3,
        None => -(a.duration_since(b).as_secs_f64() * 1e3),
    };
    Ok((
        Round {
            image: tag.to_string(),
            revision,
            preview_ready_s: ready_at.duration_since(started).as_secs_f64(),
            switch_ms: signed_ms(ready_at, switched_at),
            done_s: done_at.duration_since(started).as_secs_f64(),
        },
        old_ips,
        new_ips,
    ))
}

/// The baseline's EndpointSlice listing `ips`, as one server-side apply.
async fn apply_direct(slices: &Api<EndpointSlice>, ips: &BTreeSet<String>) -> anyhow::Result<()> {
    let endpoints: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| serde_json::json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    let slice = serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": DIRECT,
            "labels": {
                "kubernetes.io/service-name": DIRECT,
                "endpointslice.kubernetes.io/managed-by": "bench.bulkhead.dev",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    });
    slices
        .patch(
            DIRECT,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&slice),
        )
        .await
        .context("applying the baseline's EndpointSlice")?;
    Ok(())
}

/// `n` direct switches of the baseline's slice between `a` and `b` (starting with `b`),
/// each timed from the apply request to the event of a watch started before them.
async fn direct_switches(
    slices: &Api<EndpointSlice>,
    a: &BTreeSet<String>,
    b: &BTreeSet<String>,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut events = watcher(
        slices.clone(),
        watcher::Config::default().fields(&format!("metadata.name={DIRECT}")),
    )
    .boxed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut next = async || match tokio::time::timeout_at(deadline, events.next()).await {
        Ok(Some(Ok(e))) => Ok(Some(e)),
        Ok(Some(Err(e))) => {
            eprintln!("[bench] cutover: baseline watch error (it retries): {e}");
            Ok(None)
        }
        Ok(None) => bail!("the baseline's watch ended"),
        Err(_) => bail!("the baseline's switches took over 60 s"),
    };
    while !matches!(next().await?, Some(watcher::Event::InitDone)) {}
    let mut out = Vec::with_capacity(n);
    for k in 0..n {
        let to = if k % 2 == 0 { b } else { a };
        let started = Instant::now();
        apply_direct(slices, to).await?;
        loop {
            if let Some(watcher::Event::Apply(s)) = next().await?
                && ips(&s) == *to
            {
                break;
            }
        }
        out.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    fn slice(endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            ports: Some(vec![EndpointPort {
                port: Some(8080),
                ..Default::default()
            }]),
            endpoints: endpoints
                .iter()
                .map(|(ip, ready)| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn ips_are_the_routable_addresses_without_port() {
        let s = slice(&[
            ("10.89.0.3", Some(true)),
            ("10.89.0.4", Some(false)),
            ("10.89.0.5", None),
        ]);
        assert_eq!(
            ips(&s).into_iter().collect::<Vec<_>>(),
            ["10.89.0.3", "10.89.0.5"]
        );
    }

    fn instance(name: &str, revision: &str, ip: &str, ready_status: &str) -> Instance {
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let mut i: Instance = serde_json::from_value(serde_json::json!({
            "apiVersion": "bulkhead.dev/v1alpha1",
            "kind": "Instance",
            "metadata": {"name": name},
            "spec": {"owner": "team", "revision": revision, "template": {"image": "x"}},
        }))
        .unwrap();
        let mut status = bulkhead_crds::InstanceStatus {
            phase: Some(InstancePhase::Running),
            pod_ip: Some(ip.into()),
            ..Default::default()
        };
        for t in [types::READY, types::ISOLATION_VERIFIED] {
            status
                .conditions
                .push(conditions::new(t, ready_status, "R", "", None, now.clone()));
        }
        i.status = Some(status);
        i
    }

    #[test]
    fn the_preview_is_ready_only_when_every_instance_is() {
        let mut m: HashMap<String, Instance> = HashMap::new();
        for (n, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
            m.insert(n.into(), instance(n, "old", ip, "True"));
        }
        assert_eq!(preview_ready(&m, "old"), None, "no preview yet");
        for (n, ip) in [("d", "10.0.0.4"), ("e", "10.0.0.5")] {
            m.insert(n.into(), instance(n, "new", ip, "True"));
        }
        m.insert("f".into(), instance("f", "new", "10.0.0.6", "False"));
        assert_eq!(preview_ready(&m, "old"), None, "f is not ready");
        m.insert("f".into(), instance("f", "new", "10.0.0.6", "True"));
        let (rev, ips) = preview_ready(&m, "old").unwrap();
        assert_eq!(rev, "new");
        assert_eq!(
            ips.into_iter().collect::<Vec<_>>(),
            ["10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
    }
}
