//! A WorkloadService's ClusterIP through the real kube-proxy datapath: the local system's
//! kube-proxy (iptables mode, `--masquerade-all`, in a network namespace of its own, see
//! docs/architecture.md "Services through kube-proxy") routes the ClusterIP to the active
//! revision's instances, the preview ClusterIP to the preview's, and a promotion switches the
//! ClusterIP under a 20 ms client with no failed request.
//!
//! Every address is on this machine: the ClusterIP is in the local system's service range,
//! routed by the host into kube-proxy's namespace only, and the instances are on the local
//! agent's bridge (host local-1, started by up.sh).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bulkhead_crds::{ANNOTATION_PROMOTE, InstancePhase, WorkloadService};
use bulkhead_e2e::{
    TestNamespace,
    agent::{exec, image},
    fixtures::{instance, wait_for_phase},
    poll_until,
    rollout::*,
    traffic,
};
use kube::{Api, ResourceExt};

/// The client must be able to fail: a ClusterIP whose Service has no endpoint (kube-proxy
/// rejects it), and a port the Service does not have (nothing routes it), are reported as
/// failures, not answers.
async fn assert_client_reports_failures(ns: &TestNamespace) {
    let preview = traffic::cluster_ip_endpoint(&ns.client, &ns.name, "web-preview")
        .await
        .unwrap();
    // Once kube-proxy has the Service (before, nothing routes it: unreachable), its REJECT
    // for a Service without endpoints: refused. Never an answer.
    let empty = poll_until(CONVERGE, || async {
        match traffic::get(&preview).await {
            Ok(body) => Some(Ok(body)),
            Err(e) if e.contains("refused") => Some(Err(e)),
            Err(_) => None,
        }
    })
    .await
    .expect("kube-proxy rejects the preview ClusterIP");
    assert!(
        empty.is_err(),
        "the preview ClusterIP {preview} has no endpoint yet, yet answered {empty:?}"
    );
    println!(
        "control: {preview} without endpoints: {}",
        empty.unwrap_err()
    );
    let active = traffic::cluster_ip_endpoint(&ns.client, &ns.name, "web")
        .await
        .unwrap();
    let wrong = format!("{}:81", active.rsplit_once(':').unwrap().0);
    let answer = traffic::get(&wrong).await;
    assert!(
        answer.is_err(),
        "{wrong} is no port of the Service, yet answered {answer:?}"
    );
    println!("control: {wrong} (wrong port): {}", answer.unwrap_err());
}

#[tokio::test]
async fn the_cluster_ip_answers_from_the_active_revision_and_switches_on_promotion() {
    let ns = TestNamespace::new("cluster-ip").await;
    let v1 = deploy_v1(&ns, false, 600).await;
    let active = traffic::cluster_ip_endpoint(&ns.client, &ns.name, "web")
        .await
        .unwrap();
    assert!(
        active.starts_with("10.96."),
        "the ClusterIP {active} is in the service range, not an instance address"
    );
    let poller = start_cluster_ip_traffic(&ns).await;
    // kube-proxy has synced web (it answers), and with it web-preview, created together.
    assert_client_reports_failures(&ns).await;
    set_template(&ns, serde_json::json!({"image": image("web:v2")})).await;
    let wl = wait_for(&ns, "the preview is ready and waits for promotion", |wl| {
        progressing_reason(wl) == "AwaitingPromotion"
    })
    .await;
    let v2 = status_of(&wl).preview_revision.unwrap();
    // The preview ClusterIP answers v2 once kube-proxy has its endpoints; the active one
    // still v1 (the poller records every answer).
    let preview = traffic::cluster_ip_endpoint(&ns.client, &ns.name, "web-preview")
        .await
        .unwrap();
    poll_until(CONVERGE, || async {
        (traffic::get(&preview).await.as_deref() == Ok("v2")).then_some(())
    })
    .await
    .expect("the preview ClusterIP answers from the preview revision");
    assert_eq!(
        poller.snapshot().sequence(),
        ["v1"],
        "no v2 on the active ClusterIP before promotion"
    );
    assert_eq!(
        status_of(&workload(&ns).await).active_revision.as_deref(),
        Some(v1.as_str())
    );

    annotate(&ns, ANNOTATION_PROMOTE, &v2);
    wait_settled_on(&ns, &v2, "v2 active and v1 retired").await;
    // A few more answers after v1's instances are gone.
    let after = poller.snapshot().samples.len() + 25;
    poll_until(CONVERGE, || async {
        (poller.snapshot().samples.len() >= after).then_some(())
    })
    .await
    .expect("the client keeps polling");
    let report = poller.stop().await;
    assert!(
        report.samples.iter().all(|s| s.endpoint == active),
        "every request went to the ClusterIP {active}"
    );
    println!(
        "through ClusterIP {active}: {} requests every {} ms, {} failed, answers {:?}, v2 first at {:.2}s",
        report.samples.len(),
        traffic::PERIOD.as_millis(),
        report.failed().len(),
        report.sequence(),
        report.first("v2").map(|d| d.as_secs_f64()).unwrap_or(-1.0)
    );
    assert_clean(&report, &["v1", "v2"]);
    ns.delete().await;
}

/// Whether the tools instance (container `id` in the local agent's containerd namespace)
/// opens a TCP connection to `ip:port` (its `/bin/probe connect`: exit 1 connected, 0 not).
fn connects(id: &str, ip: &str, port: u16) -> bool {
    let (code, out) = exec(
        "bulkhead",
        id,
        &["/bin/probe", "connect", ip, &port.to_string()],
    );
    assert!(code == 0 || code == 1, "probe connect failed to run: {out}");
    code == 1
}

/// The walls still hold beside the proxy: the host reaches the ClusterIP, but an instance of
/// another namespace on the same bridge reaches neither the web instances (walled across
/// namespaces) nor the ClusterIP nor kube-proxy itself (no route beyond its subnet).
#[tokio::test]
async fn the_walls_hold_beside_the_proxy_for_instances_of_other_namespaces() {
    let ns = TestNamespace::new("cluster-ip-walls").await;
    let other = TestNamespace::new("cluster-ip-other").await;
    deploy_v1(&ns, false, 600).await;
    let active = traffic::cluster_ip_endpoint(&ns.client, &ns.name, "web")
        .await
        .unwrap();
    poll_until(CONVERGE, || async {
        (traffic::get(&active).await.as_deref() == Ok("v1")).then_some(())
    })
    .await
    .expect("the host reaches the ClusterIP");
    let services: Api<WorkloadService> = ns.api();
    let endpoints = services.get("web").await.unwrap().status.unwrap().endpoints;
    instance("tools")
        .on("local-1")
        .image(&image("tools:v1"))
        .command(&["/bin/probe", "serve", "9000"])
        .create(&other)
        .await;
    let tools = wait_for_phase(&other, "tools", InstancePhase::Running, CONVERGE).await;
    let id = format!("bh-{}", tools.uid().unwrap());
    let offset: u16 = std::env::var("BULKHEAD_PORT_OFFSET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let proxy = format!("10.95.{}.2", offset / 1000);
    let (cluster_ip, port) = active.rsplit_once(':').unwrap();
    let mut targets: Vec<(String, u16)> = endpoints
        .iter()
        .map(|e| {
            let (ip, port) = e.rsplit_once(':').unwrap();
            (ip.to_string(), port.parse().unwrap())
        })
        .collect();
    targets.push((cluster_ip.to_string(), port.parse().unwrap()));
    targets.push((proxy, 10256));
    // The probe can report a connection: to the instance's own server.
    let own = tools.status.clone().unwrap().pod_ip.unwrap();
    poll_until(CONVERGE, || async {
        connects(&id, &own, 9000).then_some(())
    })
    .await
    .expect("the tools instance connects to its own server");
    for (ip, port) in &targets {
        assert!(
            !connects(&id, ip, *port),
            "an instance of another namespace reached {ip}:{port}"
        );
    }
    println!("from another namespace's instance, refused: {targets:?}");
    other.delete().await;
    ns.delete().await;
}
