//! Network walls between instances, in the host's kernel: default deny across namespaces,
//! standard NetworkPolicy ingress and egress, walls that hold through an agent restart, and
//! network escape attempts from inside instances.
//!
//! Instances run the tools image's `/bin/probe` (e2e/images/probe.c): `serve` listens on TCP
//! and UDP ports, `connect` reports a real connect result (exit 1: connected, 0: not),
//! `hammer` connects every 20 ms. Every address is on this machine: the test agent's own
//! bridge and subnet, and the host's own addresses.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{net::TcpListener, time::Duration};

use bulkhead_crds::InstancePhase;
use bulkhead_e2e::{
    TestNamespace,
    agent::{Agent, exec, image, registry, start_agent, tasks, unique_host},
    fixtures::{instance, wait_for_phase},
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
};

const START: Duration = Duration::from_secs(120);
const CHANGE: Duration = Duration::from_secs(30);

/// A running instance of the tools image.
struct Probe {
    id: String,
    ip: String,
    pid: u32,
}

/// Creates `name` in `ns` on the agent's host running `probe <args>`, with `app=<name>`.
async fn run(agent: &Agent, ns: &TestNamespace, name: &str, args: &[&str]) -> Probe {
    let mut command = vec!["/bin/probe"];
    command.extend_from_slice(args);
    instance(name)
        .on(&agent.host)
        .image(&image("tools:v1"))
        .label("app", name)
        .command(&command)
        .create(ns)
        .await;
    let i = wait_for_phase(ns, name, InstancePhase::Running, START).await;
    let id = format!("bh-{}", i.uid().unwrap());
    let pid = tasks(&agent.namespace)
        .into_iter()
        .find(|t| t.0 == id)
        .unwrap()
        .1;
    Probe {
        id,
        ip: i
            .status
            .unwrap()
            .pod_ip
            .expect("a running instance has an IP"),
        pid,
    }
}

/// `probe <args>` inside `from`: (exit code, output).
fn probe(agent: &Agent, from: &Probe, args: &[&str]) -> (i32, String) {
    let mut cmd = vec!["/bin/probe"];
    cmd.extend_from_slice(args);
    exec(&agent.namespace, &from.id, &cmd)
}

/// Whether `from` can open a TCP connection to ip:port now.
fn connects(agent: &Agent, from: &Probe, ip: &str, port: u16) -> bool {
    let (code, out) = probe(agent, from, &["connect", ip, &port.to_string()]);
    assert!(code == 0 || code == 1, "probe connect failed to run: {out}");
    code == 1
}

/// Waits until `connects` gives `want` (the agent applies a policy change after its watch
/// sees it).
async fn until_connects(agent: &Agent, from: &Probe, ip: &str, port: u16, want: bool) -> bool {
    bulkhead_e2e::poll_until(CHANGE, || async {
        (connects(agent, from, ip, port) == want).then_some(())
    })
    .await
    .is_some()
}

/// The host answers every instance (probes): a server is up once the host connects to it.
async fn wait_serving(ip: &str, port: u16) {
    let up = bulkhead_e2e::poll_until(CHANGE, || async {
        let addr = format!("{ip}:{port}").parse().unwrap();
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .ok()
            .map(|_| ())
    })
    .await;
    assert!(up.is_some(), "{ip}:{port} never answered the host");
}

async fn create_policy(ns: &TestNamespace, policy: serde_json::Value) {
    let api: Api<NetworkPolicy> = Api::namespaced(ns.client.clone(), &ns.name);
    let policy: NetworkPolicy = serde_json::from_value(policy).unwrap();
    api.create(&PostParams::default(), &policy).await.unwrap();
}

#[tokio::test]
async fn namespaces_are_walled_and_a_policy_opens_exactly_its_port_until_deleted() {
    let agent = start_agent("walls");
    let a = TestNamespace::new("walls-a").await;
    let b = TestNamespace::new("walls-b").await;
    let server = run(&agent, &b, "server", &["serve", "8080", "9090"]).await;
    let peer = run(&agent, &b, "peer", &["sleep"]).await;
    let client = run(&agent, &a, "client", &["sleep"]).await;
    wait_serving(&server.ip, 8080).await;

    // Walls hold from the start (applied before Running), not after a delay.
    assert!(
        !connects(&agent, &client, &server.ip, 8080),
        "an instance of {} reached one of {}",
        a.name,
        b.name
    );
    // Control: the same probe from the server's own namespace connects.
    assert!(connects(&agent, &peer, &server.ip, 8080));
    assert!(connects(&agent, &peer, &server.ip, 9090));

    create_policy(
        &b,
        serde_json::json!({
            "metadata": {"name": "from-a"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "server"}},
                "ingress": [{
                    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": a.name}}}],
                    "ports": [{"port": 8080}],
                }],
            },
        }),
    )
    .await;
    assert!(
        until_connects(&agent, &client, &server.ip, 8080, true).await,
        "the policy never opened 8080 to {}\n{}",
        a.name,
        agent.log_tail()
    );
    assert!(
        !connects(&agent, &client, &server.ip, 9090),
        "the policy opened more than its port"
    );
    // The applied walls are read back into the server's status.
    let network = bulkhead_e2e::poll_until(CHANGE, || async {
        let api: Api<bulkhead_crds::Instance> = b.api();
        let i = api.get("server").await.ok()?;
        let n = i.status?.isolation?.network?;
        (n.policies == [format!("{}/from-a", b.name)]).then_some(n)
    })
    .await
    .expect("status.isolation.network never named the policy");
    assert!(network.rules >= 4, "{network:?}");

    let api: Api<NetworkPolicy> = Api::namespaced(b.client.clone(), &b.name);
    api.delete("from-a", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        until_connects(&agent, &client, &server.ip, 8080, false).await,
        "deleting the policy did not close 8080 again"
    );
    assert!(connects(&agent, &peer, &server.ip, 8080), "control after");

    // An instance's walls go with it.
    assert_eq!(
        instance_chains(&agent.bridge),
        3,
        "one ingress chain per instance"
    );
    bulkhead_e2e::fixtures::delete_and_wait(&b, "server", START).await;
    let gone = bulkhead_e2e::poll_until(CHANGE, || async {
        (instance_chains(&agent.bridge) == 2).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the deleted instance's chains stayed");
}

/// How many per-instance ingress chains the bridge has in the kernel.
fn instance_chains(bridge: &str) -> usize {
    let out = std::process::Command::new("iptables")
        .args(["-w", "-t", "mangle", "-S"])
        .output()
        .unwrap();
    let prefix = format!("-N BI-{bridge}-");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .count()
}

/// The field manager of the walls' own reports (node-agent/src/walls/report.rs).
const WALLS_MANAGER: &str = "bulkhead-node-agent-walls";

/// `ip <family> -o addr show dev eth0 <filter>` in the network namespace of process `pid`,
/// run from the host.
fn eth0_addresses(pid: u32, family: &str, filter: &[&str]) -> String {
    let out = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ip", family, "-o", "addr"])
        .args(["show", "dev", "eth0"])
        .args(filter)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The IPv4 address of eth0 in the network namespace of process `pid`.
fn address_of(pid: u32) -> String {
    let text = eth0_addresses(pid, "-4", &[]);
    let cidr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_else(|| panic!("no IPv4 address on eth0 of {pid}: {text}"));
    cidr.split('/').next().unwrap().to_string()
}

#[tokio::test]
async fn a_process_started_beside_its_walls_is_closed_both_ways_until_they_hold() {
    // Every walls sync of this agent waits 10 s between its plan and its restore, so no sync
    // that knows the server has applied until 10 s after its CNI ADD: its process (started
    // right after the ADD) runs that long before its own chains exist, whatever else
    // triggers syncs meanwhile (such as the Instances of other tests).
    let agent = Agent::start_with_env(
        &unique_host("beside"),
        &["--allowed-registries", &registry()],
        &[("BULKHEAD_FAILPOINT_DELAYS", "walls-restore:10000")],
    );
    let ns = TestNamespace::new("beside").await;
    let peer = run(&agent, &ns, "peer", &["serve", "8081"]).await;
    wait_serving(&peer.ip, 8081).await;
    instance("server")
        .on(&agent.host)
        .image(&image("tools:v1"))
        .label("app", "server")
        .command(&["/bin/probe", "serve", "8080"])
        .create(&ns)
        .await;
    let api = ns.api::<bulkhead_crds::Instance>();
    let uid = api.get("server").await.unwrap().uid().unwrap();
    let id = format!("bh-{uid}");
    let pid = bulkhead_e2e::poll_until(START, || async {
        tasks(&agent.namespace)
            .into_iter()
            .find(|t| t.0 == id && t.2 == "RUNNING")
            .map(|t| t.1)
    })
    .await
    .expect("the server's process never ran");
    // Seen running at most a poll after its start, which follows its ADD at once.
    let seen = std::time::Instant::now();
    let server = Probe {
        id: id.clone(),
        ip: address_of(pid),
        pid,
    };
    // Control: the process serves (the host's own connections pass the walls).
    wait_serving(&server.ip, 8080).await;
    let reached = connects(&agent, &peer, &server.ip, 8080);
    let left = connects(&agent, &server, &peer.ip, 8081);
    let phase = api
        .get("server")
        .await
        .unwrap()
        .status
        .and_then(|s| s.phase);
    let within = seen.elapsed() < Duration::from_secs(8);
    assert!(
        within && phase != Some(InstancePhase::Running),
        "the checks ended {:?} after the process was seen running (phase {phase:?}): a sync \
         that knew it may have applied, so they prove nothing",
        seen.elapsed()
    );
    assert!(
        !reached,
        "a peer of its own namespace reached the process before its walls held"
    );
    assert!(!left, "the process reached a peer before its walls held");
    // Once it is reported Running its walls hold, and its own namespace gets through both
    // ways (the same probes, at once).
    wait_for_phase(&ns, "server", InstancePhase::Running, START).await;
    assert!(connects(&agent, &peer, &server.ip, 8080));
    assert!(connects(&agent, &server, &peer.ip, 8081));
    ns.delete().await;
}

/// `status.isolation.network.rules` of `name`, and whether the walls' own reporter has
/// written to it.
async fn walls_report(ns: &TestNamespace, name: &str) -> (i32, bool) {
    let api: Api<bulkhead_crds::Instance> = ns.api();
    let i = api.get(name).await.unwrap();
    let by_reporter = i
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|f| f.manager.as_deref() == Some(WALLS_MANAGER));
    let rules = i
        .status
        .and_then(|s| s.isolation?.network)
        .map_or(0, |n| n.rules);
    (rules, by_reporter)
}

/// A start's own Running write carries its walls, so the reporter sends nothing for it; a
/// neighbour's start adds one address to its chains, which the reporter writes (once, after
/// its deferral): the control that shows its writes would be seen.
#[tokio::test]
async fn a_start_carries_its_walls_report_and_a_neighbours_start_is_reported_later() {
    let agent = start_agent("walls-rep");
    let ns = TestNamespace::new("walls-rep").await;
    run(&agent, &ns, "first", &["sleep"]).await;
    let (rules, by_reporter) = walls_report(&ns, "first").await;
    assert!(
        rules >= 4,
        "the Running write carries the walls: {rules} rules"
    );
    // Longer than the reporter's deferral (2 s): a report of its own would be sent by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (after, by_reporter_later) = walls_report(&ns, "first").await;
    assert!(
        !by_reporter && !by_reporter_later && after == rules,
        "the reporter wrote the walls of a start that carried them ({rules} then {after} rules)"
    );

    run(&agent, &ns, "second", &["sleep"]).await;
    let reported = bulkhead_e2e::poll_until(CHANGE, || async {
        let (now, by_reporter) = walls_report(&ns, "first").await;
        (by_reporter && now == rules + 1).then_some(())
    })
    .await;
    assert!(
        reported.is_some(),
        "a neighbour's start never reached the first instance's status: {:?}\n{}",
        walls_report(&ns, "first").await,
        agent.log_tail()
    );
}

#[tokio::test]
async fn an_egress_policy_limits_an_instance_to_one_destination() {
    let agent = start_agent("walls-eg");
    let ns = TestNamespace::new("walls-eg").await;
    let allowed = run(&agent, &ns, "allowed", &["serve", "8080"]).await;
    let other = run(&agent, &ns, "other", &["serve", "8080"]).await;
    let src = run(&agent, &ns, "src", &["sleep"]).await;
    wait_serving(&other.ip, 8080).await;
    wait_serving(&allowed.ip, 8080).await;
    // Control: without an egress policy both are reachable (one namespace).
    assert!(connects(&agent, &src, &other.ip, 8080));

    create_policy(
        &ns,
        serde_json::json!({
            "metadata": {"name": "src-egress"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "src"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "allowed"}}}], "ports": [{"port": 8080}]}],
            },
        }),
    )
    .await;
    assert!(
        until_connects(&agent, &src, &other.ip, 8080, false).await,
        "the egress policy never closed the other destination\n{}",
        agent.log_tail()
    );
    assert!(connects(&agent, &src, &allowed.ip, 8080), "the allowed one");
    // Only src is limited: the other instance still reaches both.
    assert!(connects(&agent, &other, &allowed.ip, 8080));
}

#[tokio::test]
async fn an_agent_restart_never_lets_a_forbidden_connection_through() {
    let mut agent = start_agent("walls-rs");
    let a = TestNamespace::new("walls-rs-a").await;
    let b = TestNamespace::new("walls-rs-b").await;
    let server = run(&agent, &b, "server", &["serve", "8080", "9090"]).await;
    let client = run(&agent, &a, "client", &["sleep"]).await;
    wait_serving(&server.ip, 8080).await;
    create_policy(
        &b,
        serde_json::json!({
            "metadata": {"name": "from-a-8080"},
            "spec": {
                "podSelector": {},
                "ingress": [{
                    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": a.name}}}],
                    "ports": [{"port": 8080}],
                }],
            },
        }),
    )
    .await;
    assert!(until_connects(&agent, &client, &server.ip, 8080, true).await);

    // Hammer the forbidden port (and, as the control, the allowed one) from inside the
    // client while the agent is killed and started again.
    let hammer = |port: u16| {
        let (ns, id, ip) = (
            agent.namespace.clone(),
            client.id.clone(),
            server.ip.clone(),
        );
        std::thread::spawn(move || {
            exec(
                &ns,
                &id,
                &["/bin/probe", "hammer", &ip, &port.to_string(), "20"],
            )
        })
    };
    let forbidden = hammer(9090);
    let allowed = hammer(8080);
    let applied = std::fs::read_to_string(&agent.log)
        .unwrap_or_default()
        .matches("network walls applied")
        .count();
    agent.restart();
    // The restarted agent has replaced the walls (one transaction) at least once.
    agent
        .wait_for_log("network walls applied", applied + 1, START)
        .await;
    let (_, forbidden) = forbidden.join().unwrap();
    let (_, allowed) = allowed.join().unwrap();
    let counts = |out: &str| -> (u64, u64) {
        let words: Vec<&str> = out.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| *w == "attempts")
            .unwrap_or_else(|| panic!("{out}"));
        (
            words[at + 1].parse().unwrap(),
            words[at + 3].parse().unwrap(),
        )
    };
    let (tries, made) = counts(&forbidden);
    eprintln!("forbidden path during the restart: {tries} attempts, {made} connections");
    assert!(tries >= 50, "the hammer barely ran: {forbidden}");
    assert_eq!(made, 0, "a forbidden connection succeeded: {forbidden}");
    let (tries, made) = counts(&allowed);
    eprintln!("allowed path during the restart: {tries} attempts, {made} connections");
    assert!(
        made > 0,
        "control: the allowed path never connected: {allowed}"
    );
    assert!(
        connects(&agent, &client, &server.ip, 8080),
        "after the restart"
    );
    assert!(
        !connects(&agent, &client, &server.ip, 9090),
        "after the restart"
    );
}

/// Runs the instance's own probe binary on the host, as root (the control that the probe
/// can succeed where the instance's lack of a capability is what stops it).
fn probe_on_host(p: &Probe, args: &[&str]) -> i32 {
    let out = std::process::Command::new(format!("/proc/{}/root/bin/probe", p.pid))
        .args(args)
        .output()
        .unwrap();
    out.status.code().unwrap_or(-1)
}

#[tokio::test]
async fn network_escape_attempts_from_inside_an_instance_all_fail() {
    let agent = start_agent("walls-esc");
    let a = TestNamespace::new("walls-esc-a").await;
    let b = TestNamespace::new("walls-esc-b").await;
    let victim = run(&agent, &b, "victim", &["serve", "8080", "9090"]).await;
    let peer = run(&agent, &b, "peer", &["serve", "7070"]).await;
    let attacker = run(&agent, &a, "attacker", &["sleep"]).await;
    wait_serving(&victim.ip, 8080).await;
    let gateway = agent.subnet.replace(".0/24", ".1");
    // A host service on every address (the host's "other ports").
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || for _ in listener.incoming() {});
    let other_host_ip = host_address_outside(&agent.subnet);
    let mut attempts = 0;

    // 1, 2: another namespace's instance, on each port it serves. Control: its neighbour.
    for port in [8080, 9090] {
        assert!(connects(&agent, &peer, &victim.ip, port), "control {port}");
        assert!(
            !connects(&agent, &attacker, &victim.ip, port),
            "victim:{port}"
        );
        attempts += 1;
    }
    // 3, 4: the host's own services, on the bridge's address and on another of its
    // addresses. Control: the host reaches them.
    for ip in [gateway.as_str(), other_host_ip.as_str()] {
        let addr = format!("{ip}:{host_port}").parse().unwrap();
        assert!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok(),
            "control: the host reaches {addr}"
        );
        assert!(!connects(&agent, &attacker, ip, host_port), "host {addr}");
        attempts += 1;
    }
    // 5: the agent's metrics port through the bridge's address: dropped by the wall (a
    // timeout), where without it the host would answer (a refusal, the port listens on
    // 127.0.0.1 only).
    let (code, out) = probe(
        &agent,
        &attacker,
        &["connect", &gateway, &agent.metrics_port.to_string()],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("errno 110"), "not dropped by the wall: {out}");
    attempts += 1;
    // 6, 7, 8: raw IP and packet (ARP spoofing) sockets and IP_TRANSPARENT (any source
    // address), which need capabilities the instance was not granted. Control: the same
    // binary as root on the host.
    for attempt in ["raw-socket", "packet-socket", "ip-transparent"] {
        assert_eq!(probe_on_host(&attacker, &[attempt]), 1, "control {attempt}");
        let (code, out) = probe(&agent, &attacker, &[attempt]);
        assert_eq!(code, 0, "{attempt}: {out}");
        attempts += 1;
    }
    // 9: spoofing the victim's neighbour (a source the victim's namespace lets in) with
    // IP_FREEBIND, which needs no capability: the kernel does not route a foreign source.
    let (_, out) = probe(
        &agent,
        &attacker,
        &["udp-send", &peer.ip, &victim.ip, "8080", "spoofed"],
    );
    assert!(out.contains("DENIED"), "{out}");
    // 10: the same from an instance that has CAP_NET_ADMIN in its network namespace (the
    // host's root entering it): the spoofed datagram leaves, and the wall (source address
    // bound to the veth) drops it. 11: a plain datagram across namespaces. Control: the
    // neighbour's own datagram arrives, after both.
    let out = std::process::Command::new("nsenter")
        .args(["-t", &attacker.pid.to_string(), "-n"])
        .arg(format!("/proc/{}/root/bin/probe", attacker.pid))
        .args([
            "udp-send",
            &peer.ip,
            &victim.ip,
            "8080",
            "spoofed-with-caps",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("SUCCEEDED send"),
        "the spoofed datagram left: {out}"
    );
    let (_, out) = probe(
        &agent,
        &attacker,
        &["udp-send", "-", &victim.ip, "8080", "across"],
    );
    assert!(out.contains("SUCCEEDED send"), "{out}");
    attempts += 3;
    // 12: around the IPv4 walls over IPv6: every interface has a link-local address, and
    // the victim's server listens on IPv6 too. Control: the victim reaches itself there.
    let link_local = format!("{}%eth0", link_local(&victim));
    let (code, out) = probe(&agent, &victim, &["connect", &link_local, "8080"]);
    assert_eq!(code, 1, "control: the victim over IPv6: {out}");
    assert!(
        !connects(&agent, &attacker, &link_local, 8080),
        "IPv6 link-local reached the victim"
    );
    attempts += 1;
    let (_, out) = probe(
        &agent,
        &peer,
        &["udp-send", "-", &victim.ip, "8080", "genuine"],
    );
    assert!(out.contains("SUCCEEDED send"), "{out}");
    let log = bulkhead_e2e::poll_until(CHANGE, || async {
        let path = agent.instance_log(&b.name, "victim")?;
        let text = std::fs::read_to_string(path).ok()?;
        text.contains("genuine").then_some(text)
    })
    .await
    .expect("control: the neighbour's datagram never arrived");
    assert!(
        !log.contains("spoofed"),
        "a spoofed datagram got in:\n{log}"
    );
    assert!(
        !log.contains("across"),
        "a datagram crossed namespaces:\n{log}"
    );
    eprintln!("{attempts} network escape attempts, all failed");
    assert!(attempts >= 8);
}

/// The IPv6 link-local address of an instance's eth0.
fn link_local(p: &Probe) -> String {
    let text = eth0_addresses(p.pid, "-6", &["scope", "link"]);
    text.split_whitespace()
        .find(|w| w.starts_with("fe80:"))
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no link-local address on eth0: {text}"))
        .to_string()
}

/// An IPv4 address of this host outside the agent's subnet (the loopback if none).
fn host_address_outside(subnet: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    let prefix = subnet.trim_end_matches("0/24");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.split('/').next())
        .find(|a| !a.starts_with(prefix))
        .unwrap_or("127.0.0.1")
        .to_string()
}
