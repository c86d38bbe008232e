//! The agent's /metrics parse as the Prometheus text format and move with the work.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{collections::BTreeMap, process::Command, time::Duration};

use bulkhead_crds::InstancePhase;
use bulkhead_e2e::{
    TestNamespace,
    agent::start_agent,
    fixtures::{instance, wait_for_phase},
};

fn get(port: u16, path: &str) -> Option<String> {
    let out = Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A strict reader of the Prometheus text exposition format (0.0.4): every line is a
/// `# HELP`/`# TYPE` comment or `name{label="value",...} number`, every sample's family has
/// a TYPE, and histogram buckets are cumulative. Returns samples by `name{labels}`.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut f = rest.splitn(3, ' ');
            let (kind, name, value) =
                (f.next().unwrap(), f.next().unwrap(), f.next().unwrap_or(""));
            assert!(kind == "HELP" || kind == "TYPE", "bad comment: {line}");
            if kind == "TYPE" {
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&value),
                    "{line}"
                );
                types.insert(name.to_string(), value.to_string());
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name)
            && !labels.is_empty()
        {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{line}"));
            for pair in inner.split(',') {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                assert!(
                    !k.is_empty() && v.starts_with('"') && v.ends_with('"'),
                    "bad label: {line}"
                );
            }
        }
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        assert!(
            types.contains_key(family) || types.contains_key(name),
            "no TYPE for {name}"
        );
        samples.insert(series.to_string(), value);
    }
    samples
}

#[tokio::test]
async fn metrics_parse_and_move_when_instances_start() {
    let agent = start_agent("metrics");
    let port = agent.metrics_port;
    let before =
        bulkhead_e2e::poll_until(Duration::from_secs(30), || async { get(port, "/metrics") })
            .await
            .expect("/metrics");
    assert_eq!(get(port, "/healthz").as_deref(), Some("ok\n"));
    let before = parse(&before);
    let ns = TestNamespace::new("metrics").await;
    instance("web").on(&agent.host).create(&ns).await;
    wait_for_phase(&ns, "web", InstancePhase::Running, Duration::from_secs(120)).await;
    let after = parse(&get(port, "/metrics").unwrap());
    let moved =
        |k: &str| after.get(k).copied().unwrap_or(0.0) - before.get(k).copied().unwrap_or(0.0);
    assert_eq!(
        moved("bulkhead_agent_start_latency_seconds_count"),
        1.0,
        "{after:#?}"
    );
    assert_eq!(moved("bulkhead_agent_instances{phase=\"Running\"}"), 1.0);
    assert_eq!(
        moved("bulkhead_agent_allocations_in_use{pool=\"uid-ranges\"}"),
        1.0
    );
    assert!(moved("bulkhead_agent_pulls_total{result=\"success\"}") >= 1.0);
    // Histogram buckets are cumulative.
    let mut buckets: Vec<(f64, f64)> = after
        .iter()
        .filter_map(|(k, v)| {
            let le = k
                .strip_prefix("bulkhead_agent_start_latency_seconds_bucket{le=\"")?
                .strip_suffix("\"}")?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                },
                *v,
            ))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        buckets.len() > 2 && buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "{buckets:?}"
    );
    ns.delete().await;
}
