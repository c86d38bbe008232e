//! Readiness and liveness probes (exec inside the instance, httpGet and tcpSocket on its IP).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use bulkhead_crds::{Instance, InstancePhase, conditions, template::RestartPolicy};
use bulkhead_e2e::{
    TestNamespace,
    agent::{Agent, exec, image, registry, unique_host},
    fixtures::{instance, probe, wait_for_phase},
};
use kube::{Api, ResourceExt};

const START: Duration = Duration::from_secs(120);

fn agent() -> Agent {
    Agent::start(
        &unique_host("probes"),
        &[
            "--allowed-registries",
            &registry(),
            "--restart-backoff-seconds",
            "2",
        ],
    )
}

async fn wait_ready(api: &Api<Instance>, name: &str, ready: bool) {
    let ok = bulkhead_e2e::poll_until(Duration::from_secs(30), || async {
        let s = api.get(name).await.ok()?.status?;
        (conditions::is_true(&s.conditions, conditions::types::READY) == ready).then_some(())
    })
    .await;
    assert!(
        ok.is_some(),
        "{name} did not become ready={ready}: {:?}",
        api.get(name).await.unwrap().status
    );
}

#[tokio::test]
async fn a_readiness_probe_failing_then_passing_flips_ready() {
    let agent = agent();
    let ns = TestNamespace::new("probes").await;
    instance("gate")
        .on(&agent.host)
        .image(&image("tools:v1"))
        .command(&["/bin/probe", "sleep"])
        .readiness(probe(
            "{exec: {command: [cat, /tmp/ready]}, periodSeconds: 1, failureThreshold: 1}",
        ))
        .create(&ns)
        .await;
    let inst = wait_for_phase(&ns, "gate", InstancePhase::Running, START).await;
    let api: Api<Instance> = ns.api();
    wait_ready(&api, "gate", false).await;
    let id = format!("bh-{}", inst.uid().unwrap());
    assert_eq!(
        exec(
            &agent.namespace,
            &id,
            &["/bin/busybox", "touch", "/tmp/ready"]
        )
        .0,
        0
    );
    wait_ready(&api, "gate", true).await;
    let (code, out) = exec(&agent.namespace, &id, &["/bin/busybox", "rm", "/tmp/ready"]);
    assert_eq!(code, 0, "{out}");
    wait_ready(&api, "gate", false).await;
    ns.delete().await;
}

#[tokio::test]
async fn an_http_readiness_probe_on_the_instance_ip_passes() {
    let agent = agent();
    let ns = TestNamespace::new("probes").await;
    instance("web")
        .on(&agent.host)
        .readiness(probe("{httpGet: {port: 8080, path: /}, periodSeconds: 1}"))
        .create(&ns)
        .await;
    wait_for_phase(&ns, "web", InstancePhase::Running, START).await;
    wait_ready(&ns.api(), "web", true).await;
    ns.delete().await;
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_instance() {
    let agent = agent();
    let ns = TestNamespace::new("probes").await;
    // Nothing listens on 9999 inside: the tcp liveness probe fails.
    instance("zombie")
        .on(&agent.host)
        .image(&image("tools:v1"))
        .command(&["/bin/probe", "sleep"])
        .restart(RestartPolicy::Always)
        .liveness(probe(
            "{tcpSocket: {port: 9999}, periodSeconds: 1, failureThreshold: 2}",
        ))
        .create(&ns)
        .await;
    wait_for_phase(&ns, "zombie", InstancePhase::Running, START).await;
    let api: Api<Instance> = ns.api();
    let restarted = bulkhead_e2e::poll_until(Duration::from_secs(60), || async {
        let s = api.get("zombie").await.ok()?.status?;
        (s.restart_count >= 1).then_some(s)
    })
    .await
    .unwrap_or_else(|| panic!("no restart after liveness failures: {:?}", agent.log_tail()));
    assert_eq!(
        restarted.last_exit.unwrap().exit_code,
        137,
        "killed with SIGKILL"
    );
    ns.delete().await;
}
