//! `get [-A]`: Workloads with strategy, phase, active/preview revision and ready per revision.

use std::collections::BTreeMap;

use bulkhead_crds::{Instance, Workload, workload::StrategyType};
use kube::{Api, ResourceExt, api::ListParams};
use serde::Serialize;

use crate::{args::GetArgs, client::Kube, model, output, table};

/// One Workload as `get` shows it.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// BlueGreen or RollingUpdate.
    pub strategy: String,
    /// Healthy, Progressing, Paused or Degraded.
    pub phase: String,
    /// Desired instances.
    pub replicas: i32,
    /// The revision with the traffic.
    pub active_revision: Option<String>,
    /// The revision in preview (BlueGreen).
    pub preview_revision: Option<String>,
    /// Per revision with live instances: ready and total.
    pub revisions: Vec<RevisionCount>,
}

/// Ready and live instances of one revision.
#[derive(Serialize, Debug, PartialEq)]
pub struct RevisionCount {
    /// The revision.
    pub revision: String,
    /// Instances that are Ready.
    pub ready: usize,
    /// Instances that are alive (not ended, not being deleted).
    pub total: usize,
}

/// The rows for `workloads`, counting `instances` per revision.
pub fn rows(workloads: &[Workload], instances: &[Instance]) -> Vec<Row> {
    workloads
        .iter()
        .map(|wl| {
            let status = wl.status.clone().unwrap_or_default();
            Row {
                namespace: wl.namespace().unwrap_or_default(),
                name: wl.name_any(),
                strategy: strategy(wl.spec.strategy.type_).into(),
                phase: status
                    .phase
                    .map_or_else(|| "-".into(), |p| format!("{p:?}")),
                replicas: wl.spec.replicas,
                active_revision: status.active_revision,
                preview_revision: status.preview_revision,
                revisions: per_revision(wl, instances),
            }
        })
        .collect()
}

fn strategy(t: StrategyType) -> &'static str {
    match t {
        StrategyType::BlueGreen => "BlueGreen",
        StrategyType::RollingUpdate => "RollingUpdate",
    }
}

/// Ready/total per revision of the Workload's live instances, in revision order.
pub fn per_revision(wl: &Workload, instances: &[Instance]) -> Vec<RevisionCount> {
    let mut counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let ns = wl.namespace();
    for inst in instances
        .iter()
        .filter(|i| model::belongs_to(i, ns.as_deref(), &wl.name_any()) && !model::is_gone(i))
    {
        let c = counts.entry(inst.spec.revision.clone()).or_default();
        c.0 += usize::from(model::is_ready(inst));
        c.1 += 1;
    }
    counts
        .into_iter()
        .map(|(revision, (ready, total))| RevisionCount {
            revision,
            ready,
            total,
        })
        .collect()
}

/// The table; with a NAMESPACE column when `all_namespaces`.
pub fn render(rows: &[Row], all_namespaces: bool) -> String {
    let mut headers = vec!["NAME", "STRATEGY", "PHASE", "ACTIVE", "PREVIEW", "READY"];
    if all_namespaces {
        headers.insert(0, "NAMESPACE");
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let ready = if r.revisions.is_empty() {
                format!("0/{}", r.replicas)
            } else {
                r.revisions
                    .iter()
                    .map(|c| format!("{}:{}/{}", c.revision, c.ready, c.total))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let mut row = vec![
                r.name.clone(),
                r.strategy.clone(),
                r.phase.clone(),
                r.active_revision.clone().unwrap_or_else(|| "-".into()),
                r.preview_revision.clone().unwrap_or_else(|| "-".into()),
                ready,
            ];
            if all_namespaces {
                row.insert(0, r.namespace.clone());
            }
            row
        })
        .collect();
    table::render(&headers, &cells)
}

/// Lists and prints.
pub async fn run(kube: &Kube, args: &GetArgs) -> anyhow::Result<()> {
    let (workloads, instances): (Api<Workload>, Api<Instance>) = if args.all_namespaces {
        (Api::all(kube.client.clone()), Api::all(kube.client.clone()))
    } else {
        (kube.api(), kube.api())
    };
    let lp = ListParams::default();
    let workloads = workloads.list(&lp).await?.items;
    let instances = instances.list(&lp).await?.items;
    let rows = rows(&workloads, &instances);
    if rows.is_empty() && args.output == output::Format::Table {
        let place = if args.all_namespaces {
            "any namespace".to_string()
        } else {
            format!("namespace {}", kube.namespace)
        };
        eprintln!("no Workloads in {place}");
        return Ok(());
    }
    output::print(args.output, &rows, || render(&rows, args.all_namespaces))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use bulkhead_crds::InstancePhase;

    #[test]
    fn a_blue_green_preview_shows_both_revisions_and_their_readiness() {
        let wl = fixtures::blue_green("aaa", Some("bbb"));
        let mut gone = fixtures::instance("web-5", "aaa", InstancePhase::Failed, false);
        gone.metadata.name = Some("web-5".into());
        let instances = vec![
            fixtures::instance("web-1", "aaa", InstancePhase::Running, true),
            fixtures::instance("web-2", "aaa", InstancePhase::Running, true),
            fixtures::instance("web-3", "bbb", InstancePhase::Running, true),
            fixtures::instance("web-4", "bbb", InstancePhase::Starting, false),
            gone,
        ];
        let rows = rows(&[wl, fixtures::rolling()], &instances);
        assert_eq!(
            render(&rows, false),
            "NAME   STRATEGY        PHASE     ACTIVE   PREVIEW   READY\n\
             web    BlueGreen       Paused    aaa      bbb       aaa:2/2 bbb:1/2\n\
             api    RollingUpdate   Healthy   a1       -         0/1\n"
        );
        assert!(render(&rows, true).starts_with("NAMESPACE   NAME"));
        assert!(render(&rows, true).contains("\nshop        web "));
    }
}
