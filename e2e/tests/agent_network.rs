//! Instance networking through CNI: addresses, reachability from the host, and teardown.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{process::Command, time::Duration};

use bulkhead_crds::InstancePhase;
use bulkhead_e2e::{
    TestNamespace,
    agent::start_agent,
    fixtures::{delete_and_wait, instance, wait_for_phase},
};
use kube::ResourceExt;

const START: Duration = Duration::from_secs(120);

/// GET http://ip:port/ from the host, bounded in time.
fn http_get(ip: &str, port: u16) -> Option<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "2", &format!("http://{ip}:{port}/")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn ports_of(bridge: &str) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn instances_get_their_own_addresses_reachable_from_the_host() {
    let agent = start_agent("net");
    let ns = TestNamespace::new("net").await;
    for name in ["web-a", "web-b"] {
        instance(name).on(&agent.host).create(&ns).await;
    }
    let a = wait_for_phase(&ns, "web-a", InstancePhase::Running, START).await;
    let b = wait_for_phase(&ns, "web-b", InstancePhase::Running, START).await;
    let ip_a = a.status.clone().unwrap().pod_ip.expect("web-a has an IP");
    let ip_b = b.status.clone().unwrap().pod_ip.expect("web-b has an IP");
    assert_ne!(ip_a, ip_b);
    let prefix = agent.subnet.trim_end_matches(".0/24");
    assert!(
        ip_a.starts_with(prefix) && ip_b.starts_with(prefix),
        "{ip_a} {ip_b} outside {}",
        agent.subnet
    );
    assert_eq!(
        ports_of(&agent.bridge).len(),
        2,
        "one veth per instance on {}",
        agent.bridge
    );

    // web:v1 is busybox httpd serving "v1" on 8080.
    let body =
        bulkhead_e2e::poll_until(Duration::from_secs(20), || async { http_get(&ip_a, 8080) }).await;
    assert_eq!(
        body.as_deref(),
        Some("v1"),
        "HTTP from the host to {ip_a}:8080"
    );

    // The firewall plugin let each instance's traffic through the host's FORWARD chain.
    let forward_rules = || {
        let out = std::process::Command::new("iptables")
            .args(["-S", "CNI-FORWARD"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for ip in [&ip_a, &ip_b] {
        assert!(
            forward_rules().contains(&format!("{ip}/32")),
            "no CNI-FORWARD rule for {ip}:\n{}",
            forward_rules()
        );
    }
    let pid_a = bulkhead_e2e::agent::tasks(&agent.namespace)
        .into_iter()
        .find(|t| t.0 == format!("bh-{}", a.uid().unwrap()))
        .unwrap()
        .1;
    let netns = std::fs::read_link(format!("/proc/{pid_a}/ns/net")).unwrap();
    delete_and_wait(&ns, "web-a", Duration::from_secs(60)).await;
    assert_eq!(ports_of(&agent.bridge).len(), 1, "web-a's veth is gone");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid_a}")).exists(),
        "web-a's process (and its netns {netns:?}) is gone"
    );
    assert!(http_get(&ip_a, 8080).is_none(), "{ip_a} still answers");
    // The address went back to the pool: host-local keeps no reservation for web-a.
    let ipam = agent.state_dir.join("cni/ipam/bulkhead");
    let reserved: Vec<String> = std::fs::read_dir(&ipam)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !reserved.contains(&ip_a),
        "{ip_a} still reserved in {}: {reserved:?}",
        ipam.display()
    );
    assert!(reserved.contains(&ip_b));
    // DEL handed the firewall plugin web-a's ADD result: its rules went with it.
    let rules = forward_rules();
    assert!(
        !rules.contains(&format!("{ip_a}/32")),
        "{ip_a} rules left:\n{rules}"
    );
    assert!(rules.contains(&format!("{ip_b}/32")));
    ns.delete().await;
}
