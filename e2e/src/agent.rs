//! Running a bulkhead-node-agent process for a test, as its own "host".
//!
//! Each test gets an agent with a host name, containerd namespace and state directory of
//! its own, talking to the shared private containerd, so tests on one machine behave like
//! separate hosts. The process is stopped by its PID when the handle drops.

use std::{
    fs::OpenOptions,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{repo_root, state_dir};

/// The registry the harness runs on loopback, and the images it pushes there.
/// `localhost:5000`, moved by BULKHEAD_PORT_OFFSET as up.sh moves it.
pub fn registry() -> String {
    format!("localhost:{}", 5000 + port_offset())
}

/// BULKHEAD_PORT_OFFSET: what the local system's ports are shifted by.
pub fn port_offset() -> u16 {
    std::env::var("BULKHEAD_PORT_OFFSET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// An image the harness built, e.g. `image("web:v1")`.
pub fn image(name_tag: &str) -> String {
    format!("{}/bulkhead/{name_tag}", registry())
}

/// The private containerd's socket.
pub fn containerd_socket() -> PathBuf {
    state_dir().join("containerd/containerd.sock")
}

/// The private containerd's state directory (in the runtime directory up.sh links as
/// `runtime`), which the agents' preflight checks a container's mapped UID can reach.
pub fn containerd_state_dir() -> PathBuf {
    let dir = state_dir().join("runtime/containerd/state");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// Path of a workspace binary built by `cargo build` (test.sh builds them first).
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A running node agent.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    /// The Host name it registers.
    pub host: String,
    /// Its containerd namespace.
    pub namespace: String,
    /// Its state directory (instance logs in `logs/`).
    pub state_dir: PathBuf,
    /// Its own log.
    pub log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Its own bridge and instance subnet, so concurrent agents never share addresses.
    pub bridge: String,
    /// Its instance subnet.
    pub subnet: String,
    /// Port of its /metrics and /healthz on 127.0.0.1.
    pub metrics_port: u16,
    /// The kubeconfig it talks to the API with (the admin's unless started with
    /// [`Agent::start_as`]).
    pub kubeconfig: PathBuf,
    /// Whether its Host registers schedulable (only [`Agent::start_as`] agents do).
    schedulable: bool,
}

/// A /24 of 10.89.0.0/16 (the range the harness guards with an unreachable route) for each
/// agent this process starts. Local systems on different BULKHEAD_PORT_OFFSETs (thousands 0–4)
/// draw from disjoint blocks of 50, so test runs side by side never share a subnet or bridge.
/// Within a block, a subnet some live bridge already routes is skipped.
fn next_subnet() -> (String, u32) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let block = std::env::var("BULKHEAD_PORT_OFFSET")
        .ok()
        .and_then(|o| o.parse::<u32>().ok())
        .map_or(0, |o| (o / 1000) % 5);
    let first = (std::process::id() * 17 + n) % 50;
    // Skip a /24 whose bridge an earlier test process of this local system left (bridges
    // stay until down.sh): two bridges with one subnet make both unreachable.
    let third = (0..50)
        .map(|k| 1 + block * 50 + (first + k * 7) % 50)
        .find(|t| !subnet_in_use(*t))
        .unwrap_or(1 + block * 50 + first);
    (format!("10.89.{third}.0/24"), third)
}

/// Whether a device on this host already routes 10.89.<third>.0/24.
fn subnet_in_use(third: u32) -> bool {
    Command::new("ip")
        .args([
            "-o",
            "route",
            "show",
            "exact",
            &format!("10.89.{third}.0/24"),
        ])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(" dev "))
}

impl Agent {
    /// Starts an agent for host `host` with extra flags.
    pub fn start(host: &str, extra: &[&str]) -> Self {
        Self::start_with_env(host, extra, &[])
    }

    /// Starts an agent with extra flags and environment variables, as the chart's node agent
    /// ServiceAccount bound to `host` (so node restriction applies to every test agent).
    pub fn start_with_env(host: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::build(
            host,
            extra,
            env,
            crate::chart::agent_kubeconfig(host),
            false,
        )
    }

    /// Starts an agent whose API identity is `kubeconfig`'s and whose Host registers
    /// schedulable, so that a controller places instances on it (the chart suite runs it as
    /// the chart's ServiceAccount).
    pub fn start_as(host: &str, kubeconfig: PathBuf, extra: &[&str]) -> Self {
        Self::build(host, extra, &[], kubeconfig, true)
    }

    fn build(
        host: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        kubeconfig: PathBuf,
        schedulable: bool,
    ) -> Self {
        crate::ensure();
        let dir = state_dir().join("agents").join(host);
        std::fs::create_dir_all(&dir).expect("agent state dir");
        let (subnet, third) = next_subnet();
        let bridge = format!("bh{third}-{}", std::process::id() % 100000);
        // down.sh removes the bridges listed here, also those of agents that were killed.
        std::fs::write(dir.join("bridge"), &bridge).expect("agent bridge file");
        let mut agent = Agent {
            child: None,
            host: host.to_string(),
            namespace: format!("bulkhead-{host}"),
            state_dir: dir,
            log: state_dir().join("logs").join(format!("agent-{host}.log")),
            args: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            bridge,
            subnet,
            metrics_port: 20000 + (third as u16) * 100 + (std::process::id() % 100) as u16,
            kubeconfig,
            schedulable,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let err = log.try_clone().expect("agent log");
        let mut cmd = Command::new(binary("bulkhead-node-agent"));
        // Test agents run only Instances bound to them by hand, never scheduled ones, unless
        // started schedulable.
        if !self.schedulable {
            cmd.arg("--register-unschedulable");
        }
        cmd.arg("--host-name")
            .arg(&self.host)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--containerd-address")
            .arg(containerd_socket())
            .arg("--containerd-namespace")
            .arg(&self.namespace)
            .arg("--containerd-state-dir")
            .arg(containerd_state_dir())
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--lease-renew-seconds")
            .arg("2")
            .arg("--lease-duration-seconds")
            .arg("8")
            .arg("--cni-bridge")
            .arg(&self.bridge)
            .arg("--instance-subnet")
            .arg(&self.subnet);
        // A test of the endpoints' exposure gives its own address.
        if !self.args.iter().any(|a| a.starts_with("--metrics-address")) {
            cmd.arg("--metrics-address")
                .arg(format!("127.0.0.1:{}", self.metrics_port));
        }
        // Test agents run what their test's namespace allows (isolation levels are tested in
        // admission_isolation.rs, with agents given a floor of their own).
        if !self.args.iter().any(|a| a.starts_with("--isolation-floor")) {
            cmd.arg("--isolation-floor").arg("privileged");
        }
        let child = cmd
            .args(&self.args)
            .env("RUST_LOG", "info,bulkhead_node_agent=debug,kube=warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("starting bulkhead-node-agent");
        self.child = Some(child);
    }

    /// Kills the agent with SIGKILL (a crash): containers keep running in their shims.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the agent again with the same flags.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Starts the agent again with the same flags and a new environment.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.restart();
    }

    /// Whether the process has exited (e.g. at a failpoint).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// The agent's log so far, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until `needle` appears `times` times in the agent's log (e.g. a start-up line
    /// after a restart).
    pub async fn wait_for_log(&self, needle: &str, times: usize, timeout: Duration) {
        let found = crate::poll_until(timeout, || async {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            (text.matches(needle).count() >= times).then_some(())
        })
        .await;
        assert!(
            found.is_some(),
            "{needle:?} did not appear {times}x in {}:\n{}",
            self.log.display(),
            self.log_tail()
        );
    }

    /// Path of an instance's log file (newest).
    pub fn instance_log(&self, namespace: &str, name: &str) -> Option<PathBuf> {
        let prefix = format!("{namespace}_{name}_");
        std::fs::read_dir(self.state_dir.join("logs"))
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop_process();
        // The bridge outlives the agent; remove it (its instances are gone or going).
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        remove_walls(&self.bridge);
    }
}

/// Removes the network walls of a bridge (the agent leaves them in the kernel on exit, so
/// that a restart has no open window): the jumps to its chains, then the chains, in the
/// IPv4 and IPv6 tables.
pub fn remove_walls(bridge: &str) {
    for binary in ["iptables", "ip6tables"] {
        remove_walls_of(binary, bridge);
    }
}

fn remove_walls_of(binary: &str, bridge: &str) {
    let iptables = |args: &[&str]| {
        Command::new(binary)
            .args(["-w", "-t", "mangle"])
            .args(args)
            .stderr(Stdio::null())
            .output()
    };
    let Ok(out) = iptables(&["-S"]) else { return };
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let ours = |chain: &str| {
        ["BE-", "BI-", "BH-", "BS-", "B6-"].iter().any(|p| {
            chain
                .strip_prefix(p)
                .and_then(|rest| rest.strip_prefix(bridge))
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
        })
    };
    for line in listing.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["-A", chain @ ("FORWARD" | "INPUT"), .., "-j", target] = words.as_slice()
            && ours(target)
        {
            let mut args = vec!["-D", *chain];
            args.extend(&words[2..]);
            let _ = iptables(&args);
        }
    }
    let chains: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .filter(|c| ours(c))
        .collect();
    for op in ["-F", "-X"] {
        for chain in &chains {
            let _ = iptables(&[op, chain]);
        }
    }
}

impl Agent {
    /// Stops the agent by its PID: SIGTERM, then SIGKILL if it lingers.
    pub fn stop_process(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM by PID, then SIGKILL if it lingers.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `ctr` (containerd's CLI) against the private containerd in `namespace`.
pub fn ctr(namespace: &str, args: &[&str]) -> String {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(containerd_socket())
        .arg("--namespace")
        .arg(namespace)
        .args(args)
        .output()
        .expect("ctr is installed with containerd");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A host name unique to this test run, so that concurrent tests never share an agent.
pub fn unique_host(prefix: &str) -> String {
    use rand::Rng;
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(5)
        .map(|c| (c as char).to_ascii_lowercase())
        .collect();
    format!("{prefix}-{suffix}")
}

/// Starts an agent on a fresh host name that may pull from the harness registry.
pub fn start_agent(prefix: &str) -> Agent {
    Agent::start(&unique_host(prefix), &["--allowed-registries", &registry()])
}

/// Tasks in a containerd namespace: (container id, host pid, status).
pub fn tasks(namespace: &str) -> Vec<(String, u32, String)> {
    ctr(namespace, &["tasks", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| {
                (
                    f[0].to_string(),
                    f[1].parse().unwrap_or(0),
                    f[2].to_string(),
                )
            })
        })
        .collect()
}

/// Container ids in a containerd namespace.
pub fn containers(namespace: &str) -> Vec<String> {
    ctr(namespace, &["containers", "ls", "-q"])
        .lines()
        .map(String::from)
        .collect()
}

/// Snapshot keys of the overlayfs snapshotter in a containerd namespace.
pub fn snapshots(namespace: &str) -> Vec<String> {
    ctr(namespace, &["snapshots", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// The real, effective, saved and filesystem UIDs of a host process.
pub fn host_uids(pid: u32) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs a command inside a running container (with the container's own process spec:
/// its user, capabilities, seccomp filter and no_new_privs). Returns (exit code, output).
pub fn exec(namespace: &str, container: &str, args: &[&str]) -> (i32, String) {
    exec_as(namespace, container, None, args)
}

/// Like [`exec`], as a given uid:gid inside the container.
///
/// `ctr tasks exec` can lose the output of a process that exits very quickly (its FIFO copy
/// races the exit) on a loaded machine. The probe binary always prints one line, so a probe
/// run that printed nothing is repeated, up to three times (probes change nothing, so a
/// repeat is harmless); other commands run once. The exit code is never retried away.
pub fn exec_as(
    namespace: &str,
    container: &str,
    user: Option<&str>,
    args: &[&str],
) -> (i32, String) {
    let repeatable = args
        .first()
        .is_some_and(|a| a.ends_with("/probe") || a.ends_with("/probe-suid"));
    let mut last = (-1, String::new());
    for _ in 0..if repeatable { 3 } else { 1 } {
        last = exec_once(namespace, container, user, args);
        if !last.1.trim().is_empty() {
            break;
        }
    }
    last
}

fn exec_once(namespace: &str, container: &str, user: Option<&str>, args: &[&str]) -> (i32, String) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let exec_id = format!(
        "e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut cmd = Command::new("ctr");
    cmd.arg("--address")
        .arg(containerd_socket())
        .arg("--namespace")
        .arg(namespace);
    cmd.args(["tasks", "exec", "--exec-id", &exec_id]);
    if let Some(user) = user {
        cmd.args(["--user", user]);
    }
    cmd.arg(container).args(args);
    let out = cmd.output().expect("ctr tasks exec");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}
