//! The agent's /metrics and /healthz: closed to its instances even when bound to every
//! address, and answering /healthz while a slow-loris client holds many connections.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::Command,
    time::Duration,
};

use bulkhead_crds::InstancePhase;
use bulkhead_e2e::{
    TestNamespace,
    agent::{Agent, exec, image, registry, start_agent, unique_host},
    fixtures::{instance, wait_for_phase},
    poll_until,
};
use kube::ResourceExt;

const START: Duration = Duration::from_secs(120);

fn curl(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "5", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What an HTTP GET of `path` on `ip:port` from inside the container returns (busybox nc).
fn get_from_instance(agent: &Agent, container: &str, ip: &str, port: u16, path: &str) -> String {
    let script = format!("printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}; true");
    exec(&agent.namespace, container, &["sh", "-c", &script]).1
}

#[tokio::test]
async fn instances_cannot_reach_the_agents_endpoints() {
    // The agent on every address, as exposed as it can be: the node's address the chart
    // binds is reachable from instances the same way as the bridge's.
    let port = free_port();
    let address = format!("0.0.0.0:{port}");
    let agent = Agent::start(
        &unique_host("endpoints"),
        &[
            "--allowed-registries",
            &registry(),
            "--metrics-address",
            &address,
            // The agent's own refusal is under test here, behind the network walls (which
            // drop every connection from an instance to the host: network_walls.rs).
            "--no-network-walls",
        ],
    );
    let ns = TestNamespace::new("endpoints").await;
    instance("tools")
        .on(&agent.host)
        .image(&image("tools:v1"))
        .create(&ns)
        .await;
    let inst = wait_for_phase(&ns, "tools", InstancePhase::Running, START).await;
    let container = format!("bh-{}", inst.uid().unwrap());
    // The bridge's own address, the instances' gateway: 10.89.T.1.
    let gateway = agent.subnet.replace(".0/24", ".1");

    // Controls: the agent answers on that port (from the host, over loopback: a connection
    // from the host to the bridge's address has the bridge's address as its source, which is
    // in the instance subnet), and the instance reaches a listener on the bridge's address,
    // so the path and the probe work.
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let from_host = poll_until(Duration::from_secs(30), || {
        std::future::ready(curl(&healthz))
    })
    .await;
    assert_eq!(
        from_host.as_deref(),
        Some("ok\n"),
        "the host cannot reach {healthz}"
    );
    let control = TcpListener::bind(format!("{gateway}:0")).unwrap();
    let control_port = control.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = control.accept().unwrap();
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.0 200 OK\r\n\r\ncontrol\n").unwrap();
    });
    let reached = get_from_instance(&agent, &container, &gateway, control_port, "/");
    assert!(
        reached.contains("control"),
        "the instance reached no listener: {reached:?}"
    );
    server.join().unwrap();

    // The agent's port from the instance: closed unanswered.
    for path in ["/healthz", "/metrics"] {
        let got = get_from_instance(&agent, &container, &gateway, port, path);
        assert!(
            !got.contains("HTTP/1.1"),
            "the instance got an answer from the agent's {path}: {got:?}"
        );
    }
    ns.delete().await;
}

#[tokio::test]
async fn healthz_answers_while_a_slow_loris_holds_many_connections() {
    let agent = start_agent("loris");
    let addr = format!("127.0.0.1:{}", agent.metrics_port);
    let url = format!("http://{addr}/healthz");
    let up = poll_until(Duration::from_secs(60), || std::future::ready(curl(&url))).await;
    assert_eq!(up.as_deref(), Some("ok\n"), "{}", agent.log_tail());
    // 500 connections, each with the start of a request and then nothing.
    let held: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let answered = poll_until(Duration::from_secs(30), || std::future::ready(curl(&url))).await;
    assert_eq!(
        answered.as_deref(),
        Some("ok\n"),
        "/healthz did not answer while {} connections were held",
        held.len()
    );
    // The agent keeps at most its cap of them: the others it closed (printed as a measure;
    // the deadline per connection closes the rest too, so it is not asserted).
    let closed = held
        .iter()
        .filter(|s| {
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let mut buf = [0u8; 16];
            match (&**s).read(&mut buf) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            }
        })
        .count();
    println!(
        "{closed} of {} held connections closed by the agent",
        held.len()
    );
    drop(held);
}
