//! The Helm chart against the local control plane: `helm` itself, kubeconfigs that
//! impersonate the chart's ServiceAccounts, and a [`ChartSystem`] whose controller and node
//! agent run as local processes under exactly the chart's RBAC.
//!
//! The local system's own controller and agent (started by up.sh as the admin) would act on
//! the same objects, so a [`ChartSystem`] pauses them for its lifetime: it stops the local
//! controller by its recorded PID and cordons the local host; dropping it undoes both (up.sh
//! starts the controller again). Tests that use one must therefore run one at a time.

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use crate::{
    agent::{Agent, binary, registry, unique_host},
    kubectl, repo_root, state_dir,
};

/// The namespace the chart installs into (the controller reads hosts' Leases there).
pub const NAMESPACE: &str = bulkhead_crds::SYSTEM_NAMESPACE;
/// The release name the suite installs.
pub const RELEASE: &str = "bulkhead";
/// The controller's ServiceAccount.
pub const CONTROLLER_SA: &str = "bulkhead-controller";
/// The node agent's ServiceAccount.
pub const AGENT_SA: &str = "bulkhead-node-agent";

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/bulkhead")
}

/// The helm binary e2e/hack/tools.sh builds (pinned in versions.env).
pub fn helm_binary() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("e2e/hack/tools.sh"))
        .arg("--print-bin-dir")
        .output()
        .expect("e2e/hack/tools.sh runs");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let helm = PathBuf::from(dir).join("helm");
    assert!(
        helm.exists(),
        "{} is missing: run e2e/hack/tools.sh",
        helm.display()
    );
    helm
}

/// Runs helm against the local control plane, as its admin.
pub fn helm(args: &[&str]) -> Output {
    crate::ensure();
    Command::new(helm_binary())
        .env("KUBECONFIG", state_dir().join("kubeconfig"))
        .env("HELM_CACHE_HOME", state_dir().join("helm/cache"))
        .env("HELM_CONFIG_HOME", state_dir().join("helm/config"))
        .env("HELM_DATA_HOME", state_dir().join("helm/data"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("helm runs")
}

/// Panics with helm's output unless it succeeded; returns its stdout.
pub fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    assert!(
        out.status.success(),
        "helm {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `helm upgrade --install` of the chart with the Deployment and DaemonSet disabled (there
/// is no kubelet here) and `extra` `--set` values.
pub fn install(extra: &[&str]) -> String {
    let chart = chart_dir().display().to_string();
    let mut args = vec![
        "upgrade",
        "--install",
        RELEASE,
        &chart,
        "--namespace",
        NAMESPACE,
        "--set",
        "controller.enabled=false",
        "--set",
        "agent.enabled=false",
    ];
    for value in extra {
        args.extend(["--set", value]);
    }
    helm_ok(&args)
}

/// A kubeconfig for the admin that impersonates `system:serviceaccount:bulkhead-system:<sa>`
/// (kubeconfig `as:`, which kube-rs and kubectl both honour). The API server then authorizes
/// every request as that ServiceAccount, with its groups.
pub fn service_account_kubeconfig(sa: &str) -> PathBuf {
    identity_kubeconfig(sa, None)
}

/// A kubeconfig for the node agent of `host`: the agent's ServiceAccount with the user extra
/// `authentication.kubernetes.io/node-name: [host]`, the identity a pod-bound token carries on
/// a real cluster, which the chart's node restriction policy keys on.
pub fn agent_kubeconfig(host: &str) -> PathBuf {
    identity_kubeconfig(AGENT_SA, Some(host))
}

/// A client for the node agent of `host`, with the identity [`agent_kubeconfig`] gives, built
/// in memory (no file per host): for the benchmark's simulated hosts.
pub async fn agent_client(host: &str) -> anyhow::Result<kube::Client> {
    let mut config =
        crate::control_plane::config_from(&crate::control_plane::kubeconfig_path()).await?;
    config.auth_info.impersonate = Some(service_account_user(AGENT_SA));
    config.auth_info.impersonate_user_extra =
        Some([(NODE_NAME_EXTRA.to_string(), vec![host.to_string()])].into());
    Ok(kube::Client::try_from(config)?)
}

/// The user extra a pod-bound token carries its node name in (the node restriction policy's key).
const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";

/// The user name of the chart's ServiceAccount `sa`.
fn service_account_user(sa: &str) -> String {
    format!("system:serviceaccount:{NAMESPACE}:{sa}")
}

/// A kubeconfig for the admin impersonating the plain user `user` (a tenant).
pub fn user_kubeconfig(user: &str) -> PathBuf {
    impersonating(user, None, &format!("kubeconfig-user-{user}"))
}

fn identity_kubeconfig(sa: &str, node: Option<&str>) -> PathBuf {
    let user = service_account_user(sa);
    let file = match node {
        Some(node) => format!("kubeconfig-{sa}-{node}"),
        None => format!("kubeconfig-{sa}"),
    };
    impersonating(&user, node, &file)
}

fn impersonating(user: &str, node: Option<&str>, file: &str) -> PathBuf {
    crate::ensure();
    let admin = state_dir().join("kubeconfig");
    let text = std::fs::read_to_string(&admin).expect("admin kubeconfig");
    let mut kc: serde_yaml::Value = serde_yaml::from_str(&text).expect("kubeconfig is YAML");
    let users = kc
        .get_mut("users")
        .and_then(|u| u.as_sequence_mut())
        .expect("kubeconfig has users");
    for u in users {
        if let Some(m) = u.get_mut("user").and_then(|v| v.as_mapping_mut()) {
            m.insert("as".into(), user.into());
            if let Some(node) = node {
                let extra: serde_yaml::Value =
                    serde_yaml::from_str(&format!("{NODE_NAME_EXTRA}: [{node}]"))
                        .expect("extra is YAML");
                m.insert("as-user-extra".into(), extra);
            }
        }
    }
    let path = state_dir().join(file);
    // Tests running at once write the same file: each renames a whole one into place.
    let tmp = state_dir().join(format!(
        ".{file}.{}.{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, serde_yaml::to_string(&kc).expect("kubeconfig YAML")).expect("write");
    std::fs::rename(&tmp, &path).expect("rename the kubeconfig into place");
    path
}

/// The local system's host name (up.sh's agent).
fn local_host() -> String {
    std::env::var("BULKHEAD_HOST_NAME").unwrap_or_else(|_| "local-1".into())
}

/// The PID of the local system's controller, if up.sh's record names a live
/// bulkhead-controller started on this state directory (as lib.sh decides what is ours).
fn local_controller_pid() -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(state_dir().join("pids/controller.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let ours = exe.file_name()? == "bulkhead-controller"
        && String::from_utf8_lossy(&cmdline).contains(&format!("{}/", state_dir().display()));
    ours.then_some(pid)
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// The local system's controller stopped and its host cordoned, until dropped (then up.sh
/// starts the controller again and the host is uncordoned).
#[derive(Debug)]
pub struct LocalSystemPaused;

impl LocalSystemPaused {
    /// Stops the local controller (by its recorded PID) and cordons the local host.
    pub fn pause() -> Self {
        let cordon = kubectl([
            "patch",
            "hosts.bulkhead.dev",
            &local_host(),
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"unschedulable":true}}"#,
        ]);
        assert!(
            cordon.status.success(),
            "cordoning the local host: {}",
            String::from_utf8_lossy(&cordon.stderr)
        );
        if let Some(pid) = local_controller_pid() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            for _ in 0..100 {
                if !pid_alive(pid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Its Lease would block the next leader for up to 15 s.
        release_leader_lease();
        Self
    }
}

impl Drop for LocalSystemPaused {
    fn drop(&mut self) {
        release_leader_lease();
        let _ = kubectl([
            "patch",
            "hosts.bulkhead.dev",
            &local_host(),
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"unschedulable":false}}"#,
        ]);
        // up.sh starts what is missing: the local controller.
        let _ = Command::new("bash")
            .arg(repo_root().join("e2e/hack/up.sh"))
            .current_dir(repo_root())
            .stdout(Stdio::null())
            .status();
    }
}

/// Deletes the leader Lease, so that the next controller leads at once instead of waiting
/// for the previous holder's lease to expire.
pub fn release_leader_lease() {
    let _ = kubectl([
        "delete",
        "lease",
        "bulkhead-controller",
        "-n",
        NAMESPACE,
        "--ignore-not-found",
    ]);
}

/// A bulkhead-controller process, stopped by its PID when dropped.
#[derive(Debug)]
pub struct ControllerProcess {
    child: Child,
    /// Its leader-election identity.
    pub identity: String,
    /// Its log.
    pub log: PathBuf,
    /// Port of its /metrics, /healthz and /readyz on 127.0.0.1.
    pub metrics_port: u16,
}

impl ControllerProcess {
    /// Starts the controller with `kubeconfig` as its API identity.
    pub fn start(kubeconfig: &std::path::Path, identity: &str) -> Self {
        let offset: u16 = std::env::var("BULKHEAD_PORT_OFFSET")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let metrics_port = 19470 + offset % 10000;
        let log = state_dir().join(format!("logs/controller-{identity}.log"));
        let file = std::fs::File::create(&log).expect("controller log");
        let child = Command::new(binary("bulkhead-controller"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "--identity",
                identity,
                "--metrics-address",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("controller log"))
            .stderr(file)
            .spawn()
            .expect("starting bulkhead-controller");
        Self {
            child,
            identity: identity.into(),
            log,
            metrics_port,
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A controller and a node agent as processes whose API identities are the chart's
/// ServiceAccounts (installed with [`install`] first), with the local system's own
/// controller stopped and its host cordoned, so that everything that happens to a Workload
/// is done under the chart's RBAC. Scenarios take a `&ChartSystem` and use an admin client
/// (the user) for their own requests.
#[derive(Debug)]
pub struct ChartSystem {
    /// The agent, on a fresh schedulable host, as `bulkhead-node-agent`.
    pub agent: Agent,
    /// The controller, as `bulkhead-controller`.
    pub controller: ControllerProcess,
    _paused: Option<LocalSystemPaused>,
}

impl ChartSystem {
    /// Pauses the local system and starts the controller and an agent under the chart's
    /// ServiceAccounts.
    pub fn start(prefix: &str) -> Self {
        let paused = LocalSystemPaused::pause();
        let mut system = Self::start_while_paused(&paused, prefix);
        system._paused = Some(paused);
        system
    }

    /// Starts the controller and an agent under the chart's ServiceAccounts while the caller
    /// keeps the local system paused (for many short-lived systems in a row).
    pub fn start_while_paused(_paused: &LocalSystemPaused, prefix: &str) -> Self {
        let host = unique_host(prefix);
        let controller_kc = service_account_kubeconfig(CONTROLLER_SA);
        let agent = Agent::start_as(
            &host,
            agent_kubeconfig(&host),
            &["--allowed-registries", &registry()],
        );
        let controller = ControllerProcess::start(&controller_kc, &unique_host(prefix));
        Self {
            agent,
            controller,
            _paused: None,
        }
    }

    /// Both components' logs, for failure messages and the RBAC proof.
    pub fn logs(&self) -> String {
        format!(
            "--- controller ({}):\n{}\n--- agent ({}):\n{}",
            self.controller.log.display(),
            self.controller.log_text(),
            self.agent.log.display(),
            std::fs::read_to_string(&self.agent.log).unwrap_or_default()
        )
    }
}

impl Drop for ChartSystem {
    fn drop(&mut self) {
        self.agent.stop_process();
        // Deleting the Host removes its Lease (owned by it), so no scheduler keeps a dead
        // host around as Ready.
        let _ = kubectl([
            "delete",
            "hosts.bulkhead.dev",
            &self.agent.host,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}
