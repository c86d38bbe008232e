//! Two controller processes never both act: a second one waits for the leader Lease.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use bulkhead_e2e::{agent::binary, state_dir};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

/// `HTTP/1.1 <code>` and the body of a GET, through curl.
fn get(port: u16, path: &str) -> Option<String> {
    let out = Command::new("curl")
        .args([
            "-s",
            "-i",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (!text.is_empty()).then_some(text)
}

/// A child process killed (by its PID) and reaped when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_second_controller_waits_while_the_first_leads() {
    let client = bulkhead_e2e::client().await;
    let leases: Api<Lease> = Api::namespaced(client, bulkhead_crds::SYSTEM_NAMESPACE);
    let leader = leases
        .get("bulkhead-controller")
        .await
        .expect("the local system's controller leads");
    let holder = leader.spec.unwrap().holder_identity.unwrap();

    let port = 19464;
    let log = std::fs::File::create(state_dir().join("logs/controller-standby.log")).unwrap();
    let standby = Command::new(binary("bulkhead-controller"))
        .arg("--kubeconfig")
        .arg(state_dir().join("kubeconfig"))
        .args([
            "--identity",
            "standby",
            "--metrics-address",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Stopped by its PID when the test ends, also when an assertion fails.
    let _standby = KillOnDrop(standby);
    let served =
        bulkhead_e2e::poll_until(Duration::from_secs(20), || async { get(port, "/healthz") }).await;
    assert!(
        served.is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "the standby serves /healthz"
    );
    // Over several renew periods the standby never becomes ready (leading) and the lease
    // keeps its holder.
    for _ in 0..10 {
        let ready = get(port, "/readyz").unwrap();
        assert!(
            ready.starts_with("HTTP/1.1 503"),
            "the standby claims to lead: {ready}"
        );
        let now = leases.get("bulkhead-controller").await.unwrap();
        assert_eq!(now.spec.unwrap().holder_identity.unwrap(), holder);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let metrics = get(port, "/metrics").unwrap();
    assert!(
        !metrics.contains("kind=\"Workload\""),
        "the standby reconciled: {metrics}"
    );
}
