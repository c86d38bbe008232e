//! `status WL [--watch]`: a live tree of a Workload: revisions, each instance's host, phase,
//! Ready and IsolationVerified, the WorkloadService endpoints, and recent events.

use std::{fmt::Write, io::IsTerminal, time::Duration};

use bulkhead_crds::{Instance, Workload, WorkloadService, conditions::types};
use k8s_openapi::{api::events::v1::Event, jiff::Timestamp};
use kube::{ResourceExt, api::ListParams};
use serde::Serialize;

use crate::{args::StatusArgs, client::Kube, get, model, output};

/// Events shown under the tree.
const RECENT_EVENTS: usize = 8;

/// What the tree is drawn from.
#[derive(Serialize, Debug)]
pub struct Snapshot {
    /// The Workload.
    pub workload: Workload,
    /// Its instances (any revision).
    pub instances: Vec<Instance>,
    /// The WorkloadServices that route to it.
    pub services: Vec<WorkloadService>,
    /// Recent events about it and its instances, oldest first.
    pub events: Vec<EventLine>,
}

/// One event, reduced to what the tree prints.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct EventLine {
    /// Seconds since the epoch when it (last) happened.
    pub at: i64,
    /// Normal or Warning.
    pub type_: String,
    /// Its reason.
    pub reason: String,
    /// The object it is about, `Kind/name`.
    pub object: String,
    /// Its note.
    pub note: String,
}

/// Draws the tree as of `now`.
pub fn tree(s: &Snapshot, now: Timestamp) -> String {
    let wl = &s.workload;
    let st = wl.status.clone().unwrap_or_default();
    let mut out = String::new();
    let phase = st.phase.map_or_else(|| "-".into(), |p| format!("{p:?}"));
    let _ = writeln!(
        out,
        "Workload {}/{}   strategy {:?}   phase {phase}   replicas {}",
        wl.namespace().unwrap_or_default(),
        wl.name_any(),
        wl.spec.strategy.type_,
        wl.spec.replicas
    );
    if let Some(reason) = progressing_message(wl) {
        let _ = writeln!(out, "  {reason}");
    }
    if let Some(line) = image_updates_line(&st) {
        let _ = writeln!(out, "  {line}");
    }
    let name = wl.name_any();
    let ns = wl.namespace();
    let ours: Vec<&Instance> = s
        .instances
        .iter()
        .filter(|i| model::belongs_to(i, ns.as_deref(), &name))
        .collect();
    let mut revisions: Vec<String> = get::per_revision(wl, &s.instances)
        .into_iter()
        .map(|c| c.revision)
        .collect();
    for r in [&st.active_revision, &st.preview_revision]
        .into_iter()
        .flatten()
    {
        if !revisions.contains(r) {
            revisions.push(r.clone());
        }
    }
    for (i, rev) in revisions.iter().enumerate() {
        let last = i + 1 == revisions.len();
        let role = role(rev, &st);
        let members: Vec<&&Instance> = ours
            .iter()
            .filter(|inst| &inst.spec.revision == rev && !model::is_gone(inst))
            .collect();
        let ready = members.iter().filter(|i| model::is_ready(i)).count();
        let (branch, pipe) = if last {
            ("└─", "   ")
        } else {
            ("├─", "│  ")
        };
        let _ = writeln!(
            out,
            "{branch} revision {rev}{role}   {ready}/{} ready",
            members.len()
        );
        for (j, inst) in members.iter().enumerate() {
            let twig = if j + 1 == members.len() {
                "└─"
            } else {
                "├─"
            };
            let _ = writeln!(out, "{pipe}{twig} {}", instance_line(inst, now));
        }
    }
    services(&mut out, &s.services);
    events(&mut out, &s.events, now);
    out
}

fn role(rev: &str, st: &bulkhead_crds::WorkloadStatus) -> String {
    let mut roles = Vec::new();
    if st.active_revision.as_deref() == Some(rev) {
        roles.push("active");
    }
    if st.preview_revision.as_deref() == Some(rev) {
        roles.push("preview");
    }
    let bg = st.blue_green.clone().unwrap_or_default();
    if bg.previous_active_revision.as_deref() == Some(rev) && roles.is_empty() {
        roles.push("previous");
    }
    if bg.aborted_revision.as_deref() == Some(rev) {
        roles.push("aborted");
    }
    if roles.is_empty() {
        String::new()
    } else {
        format!(" ({})", roles.join(", "))
    }
}

/// The followed tag, the running digest and the pending one (spec.imageUpdates).
fn image_updates_line(st: &bulkhead_crds::WorkloadStatus) -> Option<String> {
    let u = st.image_updates.as_ref()?;
    let short = |d: &Option<String>| d.clone().unwrap_or_else(|| "-".into());
    // A semver range names the tag it picked: `running 1.3.0 sha256:...`.
    let running = match &u.resolved_tag {
        Some(tag) => format!("{tag} {}", short(&u.digest)),
        None => short(&u.digest),
    };
    let mut line = format!(
        "follows {}   running {running}   pending {}",
        u.tag,
        short(&u.pending_digest)
    );
    if let Some(c) = bulkhead_crds::conditions::find(&st.conditions, types::IMAGE_NOT_TRUSTED)
        .filter(|c| c.status == bulkhead_crds::conditions::status::TRUE)
    {
        let _ = write!(line, " (not trusted: {})", c.reason);
    }
    Some(line)
}

fn progressing_message(wl: &Workload) -> Option<String> {
    let st = wl.status.as_ref()?;
    let c = bulkhead_crds::conditions::find(&st.conditions, types::PROGRESSING)?;
    Some(format!(
        "Progressing={} {}: {}",
        c.status, c.reason, c.message
    ))
}

fn instance_line(inst: &Instance, now: Timestamp) -> String {
    let host = inst.spec.host_name.as_deref().unwrap_or("<unscheduled>");
    let age = inst.metadata.creation_timestamp.as_ref().map_or_else(
        || "-".into(),
        |t| model::age(now.as_second() - t.0.as_second()),
    );
    let mut line = format!(
        "{}   host {host}   {}   Ready={}   IsolationVerified={}   age {age}",
        inst.name_any(),
        model::phase(inst),
        model::condition(inst, types::READY),
        model::condition(inst, types::ISOLATION_VERIFIED),
    );
    if let Some(ip) = inst.status.as_ref().and_then(|s| s.pod_ip.as_ref()) {
        let _ = write!(line, "   ip {ip}");
    }
    line
}

fn services(out: &mut String, services: &[WorkloadService]) {
    for svc in services {
        let st = svc.status.clone().unwrap_or_default();
        let list = |e: &[String]| {
            if e.is_empty() {
                "none".to_string()
            } else {
                e.join(", ")
            }
        };
        let _ = writeln!(
            out,
            "Service {}   endpoints: {}",
            svc.name_any(),
            list(&st.endpoints)
        );
        if svc.spec.preview {
            let _ = writeln!(
                out,
                "Service {}-preview   endpoints: {}",
                svc.name_any(),
                list(&st.preview_endpoints)
            );
        }
    }
}

fn events(out: &mut String, events: &[EventLine], now: Timestamp) {
    if events.is_empty() {
        return;
    }
    let _ = writeln!(out, "Events:");
    for e in events.iter().rev().take(RECENT_EVENTS).rev() {
        let _ = writeln!(
            out,
            "  {:>4} ago   {:<7}  {:<16}  {}: {}",
            model::age(now.as_second() - e.at),
            e.type_,
            e.reason,
            e.object,
            e.note
        );
    }
}

/// Reduces the events about `name` (kind Workload) and `instances`, oldest first.
pub fn event_lines(events: &[Event], workload: &str, instances: &[String]) -> Vec<EventLine> {
    let mut lines: Vec<EventLine> = events
        .iter()
        .filter_map(|e| {
            let r = e.regarding.as_ref()?;
            let (kind, name) = (r.kind.as_deref()?, r.name.as_deref()?);
            let about = (kind == "Workload" && name == workload)
                || (kind == "Instance" && instances.iter().any(|i| i == name));
            about.then(|| EventLine {
                at: event_time(e),
                type_: e.type_.clone().unwrap_or_default(),
                reason: e.reason.clone().unwrap_or_default(),
                object: format!("{kind}/{name}"),
                note: e.note.clone().unwrap_or_default(),
            })
        })
        .collect();
    lines.sort_by_key(|l| l.at);
    lines
}

fn event_time(e: &Event) -> i64 {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0.as_second())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.as_second()))
        .or_else(|| {
            e.deprecated_last_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
        })
        .unwrap_or(0)
}

/// Reads everything the tree shows.
pub async fn observe(kube: &Kube, name: &str) -> anyhow::Result<Snapshot> {
    let workload = kube.workload(name).await?;
    let lp = ListParams::default().labels(&format!("{}={name}", bulkhead_crds::LABEL_WORKLOAD));
    let instances = kube.api::<Instance>().list(&lp).await?.items;
    let services: Vec<WorkloadService> = kube
        .api::<WorkloadService>()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|s| s.spec.workload_name == name)
        .collect();
    let names: Vec<String> = instances.iter().map(|i| i.name_any()).collect();
    let events = kube
        .api::<Event>()
        .list(&ListParams::default())
        .await?
        .items;
    Ok(Snapshot {
        workload,
        events: event_lines(&events, name, &names),
        instances,
        services,
    })
}

/// Prints once, or redraws in place until Ctrl-C with `--watch`.
pub async fn run(kube: &Kube, args: &StatusArgs) -> anyhow::Result<()> {
    if !args.watch || args.output != output::Format::Table {
        let s = observe(kube, &args.workload).await?;
        return output::print(args.output, &s, || tree(&s, Timestamp::now()));
    }
    let terminal = std::io::stdout().is_terminal();
    let mut previous = String::new();
    loop {
        let drawn = tree(&observe(kube, &args.workload).await?, Timestamp::now());
        if drawn != previous {
            redraw(&previous, &drawn, terminal);
            previous = drawn;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// On a terminal, moves up over the previous drawing and clears it; elsewhere (a pipe, a
/// file) each drawing follows the last, separated by a blank line.
fn redraw(previous: &str, next: &str, terminal: bool) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let lines = previous.lines().count();
    if terminal && lines > 0 {
        let _ = write!(stdout, "\x1b[{lines}F\x1b[0J");
    } else if lines > 0 {
        let _ = writeln!(stdout);
    }
    let _ = write!(stdout, "{next}");
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use bulkhead_crds::{WorkloadServiceStatus, service::WorkloadServiceSpec};
    use k8s_openapi::api::core::v1::ObjectReference;

    fn service() -> WorkloadService {
        let spec: WorkloadServiceSpec = serde_json::from_value(serde_json::json!({
            "workloadName": "web", "preview": true, "ports": [{"port": 80}]
        }))
        .unwrap();
        let mut svc = WorkloadService::new("web", spec);
        svc.status = Some(WorkloadServiceStatus {
            endpoints: vec!["10.88.0.2:8080".into(), "10.88.0.3:8080".into()],
            ..Default::default()
        });
        svc
    }

    fn event(kind: &str, name: &str, reason: &str, ago: i64) -> Event {
        Event {
            regarding: Some(ObjectReference {
                kind: Some(kind.into()),
                name: Some(name.into()),
                ..Default::default()
            }),
            reason: Some(reason.into()),
            type_: Some("Normal".into()),
            note: Some(format!("{reason} happened")),
            deprecated_last_timestamp: Some(fixtures::ago(ago)),
            ..Default::default()
        }
    }

    #[test]
    fn a_preview_in_progress_is_drawn_as_a_tree() {
        use bulkhead_crds::InstancePhase::{Running, Starting};
        let instances = vec![
            fixtures::instance("web-a1", "aaa", Running, true),
            fixtures::instance("web-b1", "bbb", Starting, false),
        ];
        let names = vec!["web-a1".to_string()];
        let events = vec![
            event("Workload", "web", "PreviewStarted", 30),
            event("Workload", "other", "Promoted", 20),
            event("Instance", "web-a1", "Started", 80),
        ];
        let s = Snapshot {
            workload: fixtures::blue_green("aaa", Some("bbb")),
            instances,
            services: vec![service()],
            events: event_lines(&events, "web", &names),
        };
        let drawn = tree(&s, fixtures::now());
        let expected = "\
Workload shop/web   strategy BlueGreen   phase Paused   replicas 2
├─ revision aaa (active)   1/1 ready
│  └─ web-a1   host h1   Running   Ready=True   IsolationVerified=True   age 1m
└─ revision bbb (preview)   0/1 ready
   └─ web-b1   host h1   Starting   Ready=False   IsolationVerified=True   age 1m
Service web   endpoints: 10.88.0.2:8080, 10.88.0.3:8080
Service web-preview   endpoints: none
Events:
    1m ago   Normal   Started           Instance/web-a1: Started happened
   30s ago   Normal   PreviewStarted    Workload/web: PreviewStarted happened
";
        assert_eq!(drawn, expected);
    }

    #[test]
    fn an_active_revision_without_instances_still_shows() {
        let s = Snapshot {
            workload: fixtures::blue_green("aaa", None),
            instances: vec![],
            services: vec![],
            events: vec![],
        };
        assert!(tree(&s, fixtures::now()).contains("└─ revision aaa (active)   0/0 ready\n"));
    }

    #[test]
    fn a_followed_tag_shows_the_running_and_the_refused_pending_digest() {
        let mut workload = fixtures::blue_green("aaa", None);
        let st = workload.status.get_or_insert_with(Default::default);
        st.image_updates = Some(bulkhead_crds::workload::ImageUpdatesStatus {
            tag: "localhost:5000/shop/web:live".into(),
            digest: Some("sha256:d1".into()),
            pending_digest: Some("sha256:d2".into()),
            ..Default::default()
        });
        st.conditions.push(bulkhead_crds::conditions::new(
            types::IMAGE_NOT_TRUSTED,
            "True",
            "Unsigned",
            "",
            None,
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(fixtures::now()),
        ));
        let s = Snapshot {
            workload,
            instances: vec![],
            services: vec![],
            events: vec![],
        };
        assert!(
            tree(&s, fixtures::now()).contains(
                "  follows localhost:5000/shop/web:live   running sha256:d1   pending sha256:d2 (not trusted: Unsigned)\n"
            ),
            "{}",
            tree(&s, fixtures::now())
        );
    }

    #[test]
    fn a_semver_range_shows_the_tag_it_picked() {
        let mut workload = fixtures::blue_green("aaa", None);
        let st = workload.status.get_or_insert_with(Default::default);
        st.image_updates = Some(bulkhead_crds::workload::ImageUpdatesStatus {
            tag: "localhost:5000/shop/web (semver ~1.4)".into(),
            digest: Some("sha256:d1".into()),
            resolved_tag: Some("1.4.2".into()),
            ..Default::default()
        });
        let s = Snapshot {
            workload,
            instances: vec![],
            services: vec![],
            events: vec![],
        };
        let out = tree(&s, fixtures::now());
        assert!(
            out.contains("follows localhost:5000/shop/web (semver ~1.4)   running 1.4.2 sha256:d1   pending -\n"),
            "{out}"
        );
    }
}
