//! `bulkhead-node-agent preflight` on the real host: it passes with the local system's
//! settings, fails with a clear line for a subnet that an interface on this host already holds
//! and for containerd state under a directory a mapped UID cannot traverse, and the agent
//! refuses to start (and to register its Host) when a required check fails.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use bulkhead_e2e::{
    agent::{self, binary, containerd_socket, containerd_state_dir, unique_host},
    kubectl, state_dir,
};

fn thousands() -> u32 {
    std::env::var("BULKHEAD_PORT_OFFSET")
        .ok()
        .and_then(|o| o.parse::<u32>().ok())
        .map_or(0, |o| o / 1000)
}

/// The local agent's bridge and subnet (e2e/hack/lib.sh).
fn local_network() -> (String, String) {
    let n = thousands();
    (format!("bulkhead{n}"), format!("10.90.{n}.0/24"))
}

/// A /24 no test agent draws (they take 10.89.1–250.0/24), one per local system, inside the
/// range the harness guards with an unreachable route: its network and an address in it.
fn spare_subnet() -> (String, String) {
    let third = 251 + thousands() % 5;
    (format!("10.89.{third}.0/24"), format!("10.89.{third}.1/24"))
}

/// Preflight with the local system's settings, on `(bridge, subnet)`, with containerd's state
/// in `state`, and `extra` flags.
fn preflight_on(network: (String, String), state: &Path, extra: &[&str]) -> Output {
    bulkhead_e2e::ensure();
    let (bridge, subnet) = network;
    Command::new(binary("bulkhead-node-agent"))
        .arg("preflight")
        .arg("--containerd-address")
        .arg(containerd_socket())
        .arg("--containerd-state-dir")
        .arg(state)
        .arg("--allowed-registries")
        .arg(agent::registry())
        .args(["--cni-bridge", &bridge, "--instance-subnet", &subnet])
        .args(extra)
        .output()
        .unwrap()
}

/// Preflight with the local agent's own settings, and `extra` flags.
fn preflight(extra: &[&str]) -> Output {
    preflight_on(local_network(), &containerd_state_dir(), extra)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of check `name`.
fn line(out: &Output, name: &str) -> String {
    stdout(out)
        .lines()
        .find(|l| l[6..].starts_with(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} line in:\n{}", stdout(out)))
        .to_string()
}

/// A directory only root may enter, holding `containerd/state`; removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bh-pf-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("containerd/state")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        Self(dir)
    }

    fn state(&self) -> PathBuf {
        self.0.join("containerd/state")
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A bridge this test creates (the sandbox has no dummy interface type), holding an address;
/// deleted on drop.
struct Interface(String);

impl Interface {
    fn with_address(addr: &str) -> Self {
        let name = format!("bhpf{}", std::process::id() % 100_000);
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["link", "add", &name, "type", "bridge"]);
        let iface = Self(name);
        ip(&["addr", "add", addr, "dev", &iface.0]);
        iface
    }
}

impl Drop for Interface {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[test]
fn passes_on_the_local_system() {
    let out = preflight(&[]);
    assert!(out.status.success(), "preflight failed:\n{}", stdout(&out));
    for name in [
        "user namespaces",
        "seccomp",
        "cgroups",
        "runc",
        "containerd",
        "cni plugins",
        "runtime state reachable",
        "instance subnet",
        "registries",
    ] {
        assert!(line(&out, name).starts_with("ok  "), "{}", line(&out, name));
    }
    let json = preflight(&["-o", "json"]);
    let results: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(results.len(), stdout(&out).lines().count());
    assert!(
        results
            .iter()
            .all(|r| r["ok"] == true || r["required"] == false),
        "{results:#?}"
    );
}

#[test]
fn fails_for_a_subnet_an_interface_on_this_host_holds() {
    let (subnet, addr) = spare_subnet();
    let iface = Interface::with_address(&addr);
    let spare = || ("bhpf-none".to_string(), subnet.clone());
    let out = preflight_on(spare(), &containerd_state_dir(), &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let l = line(&out, "instance subnet");
    assert!(
        l.starts_with(&format!(
            "FAIL  instance subnet: {subnet} collides with {addr} on {}",
            iface.0
        )),
        "{l}"
    );
    assert!(
        l.contains(" -- fix: pass --instance-subnet with a /24"),
        "{l}"
    );

    drop(iface);
    let out = preflight_on(spare(), &containerd_state_dir(), &[]);
    assert!(
        line(&out, "instance subnet").starts_with("ok  "),
        "the interface was the collision:\n{}",
        stdout(&out)
    );
}

#[test]
fn fails_for_containerd_state_under_a_0700_directory() {
    let private = PrivateDir::new("state");
    let state = private.state();
    let out = preflight_on(local_network(), &state, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let l = line(&out, "runtime state reachable");
    assert!(
        l.starts_with(&format!(
            "FAIL  runtime state reachable: {} is not reachable by an instance's mapped uid 1000000000: {} has mode 0700",
            state.display(),
            private.0.display()
        )),
        "{l}"
    );
    assert!(
        l.contains(&format!("-- fix: chmod o+x {} ", private.0.display())),
        "{l}"
    );

    std::fs::set_permissions(&private.0, std::fs::Permissions::from_mode(0o711)).unwrap();
    let out = preflight_on(local_network(), &state, &[]);
    assert!(out.status.success(), "after the fix:\n{}", stdout(&out));
}

#[test]
fn the_agent_refuses_to_start_and_register_when_a_required_check_fails() {
    bulkhead_e2e::ensure();
    let private = PrivateDir::new("agent");
    let host = unique_host("pf");
    let (bridge, subnet) = local_network();
    let agent_state = private.0.join("agent");
    let mut child = Command::new(binary("bulkhead-node-agent"))
        .arg("--host-name")
        .arg(&host)
        .arg("--kubeconfig")
        .arg(state_dir().join("kubeconfig"))
        .arg("--containerd-address")
        .arg(containerd_socket())
        .arg("--containerd-namespace")
        .arg(format!("bulkhead-{host}"))
        .arg("--containerd-state-dir")
        .arg(private.state())
        .arg("--state-dir")
        .arg(&agent_state)
        .args(["--cni-bridge", &bridge, "--instance-subnet", &subnet])
        .args(["--metrics-address", "127.0.0.1:0", "--exit-with-parent"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent still runs 60 s after start despite a failed required check");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert!(
        stderr.contains("preflight: 1 required check(s) failed")
            && stderr.contains(&format!(
                "FAIL  runtime state reachable: {}",
                private.state().display()
            )),
        "{stderr}"
    );
    let get = kubectl(["get", "hosts.bulkhead.dev", &host]);
    assert!(
        String::from_utf8_lossy(&get.stderr).contains("NotFound"),
        "the Host was registered: {}",
        String::from_utf8_lossy(&get.stdout)
    );
    assert!(!Path::new(&agent_state).exists(), "it created no state");
}
