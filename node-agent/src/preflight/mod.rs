//! Preflight: whether this host can run instances, one named check at a time, each failure
//! with the fix.
//!
//! [`probe::gather`] reads the host into an [`Input`]; [`check`] turns it into one
//! [`CheckResult`] per concern, without side effects. `bulkhead-node-agent preflight` prints
//! them; the agent runs the same checks at start and refuses to register its Host when a
//! required one fails, instead of failing every instance later.

pub mod probe;
pub mod reach;
pub mod subnet;

use std::path::PathBuf;

use serde::Serialize;

use self::{
    reach::{Ancestor, Reach},
    subnet::{Interface, Ipv4Net, Route},
};

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// What was checked ("user namespaces").
    pub name: &'static str,
    /// A failure makes the host unusable: the agent refuses to start.
    pub required: bool,
    /// Whether the check passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl CheckResult {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            required: true,
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            required: true,
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// A failure that does not stop the agent.
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::fail(name, detail, fix).optional()
    }

    /// A check whose failure is only a warning.
    fn optional(self) -> Self {
        Self {
            required: false,
            ..self
        }
    }

    /// `ok`, `FAIL` (required) or `warn`.
    pub fn status(&self) -> &'static str {
        match (self.ok, self.required) {
            (true, _) => "ok",
            (false, true) => "FAIL",
            (false, false) => "warn",
        }
    }

    /// One line: status, name, detail and the fix.
    pub fn line(&self) -> String {
        let mut s = format!("{:<4}  {}: {}", self.status(), self.name, self.detail);
        if let Some(fix) = &self.fix {
            s.push_str(" -- fix: ");
            s.push_str(fix);
        }
        s
    }
}

/// The required checks that failed.
pub fn failures(results: &[CheckResult]) -> Vec<&CheckResult> {
    results.iter().filter(|r| r.required && !r.ok).collect()
}

/// The error the agent stops with when a required check failed: each failure's line.
pub fn refusal(results: &[CheckResult]) -> Option<String> {
    let failed = failures(results);
    (!failed.is_empty()).then(|| {
        let lines: Vec<String> = failed.iter().map(|r| format!("  {}", r.line())).collect();
        format!(
            "preflight: {} required check(s) failed, so this host cannot run instances; not registering it:\n{}",
            failed.len(),
            lines.join("\n")
        )
    })
}

/// Everything the checks look at.
#[derive(Debug, Clone)]
pub struct Input {
    /// /proc/sys/user/max_user_namespaces > 0.
    pub user_namespaces: bool,
    /// Seccomp filters are supported.
    pub seccomp: bool,
    /// /proc/sys/kernel/seccomp/actions_avail.
    pub seccomp_actions: Vec<String>,
    /// 1 or 2.
    pub cgroup_version: i32,
    /// Enabled cgroup controllers.
    pub cgroup_controllers: Vec<String>,
    /// The runc binary and its version, or why there is none.
    pub runc: (PathBuf, Result<String, String>),
    /// containerd's socket and its version, or why it did not answer.
    pub containerd: (PathBuf, Result<String, String>),
    /// The CNI plugins the network needs; None without a network.
    pub cni: Option<CniInput>,
    /// Directories a container's mapped UID must reach (containerd's state directory).
    pub runtime_paths: Vec<RuntimePath>,
    /// The agent's own bridge network; None with a node CNI configuration or no network.
    pub subnet: Option<SubnetInput>,
    /// Each allowed registry and how many addresses its host resolves to.
    pub registries: Vec<(String, Result<usize, String>)>,
}

/// The CNI plugins the network needs and those found.
#[derive(Debug, Clone, Default)]
pub struct CniInput {
    /// --cni-bin-dir.
    pub bin_dir: PathBuf,
    /// Plugin types the network configuration uses.
    pub wanted: Vec<String>,
    /// Those of them that are executables in `bin_dir`.
    pub present: Vec<String>,
    /// Why the node's CNI configuration (--cni-conf-dir) could not be read.
    pub config_error: Option<String>,
}

/// A directory a mapped UID must reach, and its ancestors' modes.
#[derive(Debug, Clone)]
pub struct RuntimePath {
    /// The flag that names it ("--containerd-state-dir").
    pub flag: &'static str,
    /// `/` down to the (canonical) directory.
    pub ancestors: Vec<Ancestor>,
    /// The UID and GID an instance's root maps to (the first of the UID range pool).
    pub mapped: (u32, u32),
}

/// The instance subnet and what the host already routes.
#[derive(Debug, Clone)]
pub struct SubnetInput {
    /// --instance-subnet, as given.
    pub subnet: String,
    /// --cni-bridge.
    pub bridge: String,
    /// `ip -j -4 addr`, or why it could not be listed.
    pub interfaces: Result<Vec<Interface>, String>,
    /// `ip -j -4 route show table main`, or why it could not be listed.
    pub routes: Result<Vec<Route>, String>,
}

/// Controllers every instance's limits need.
pub const CGROUP_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// Every check, in a fixed order.
pub fn check(input: &Input) -> Vec<CheckResult> {
    let mut out = vec![
        user_namespaces(input),
        seccomp(input),
        user_notif(input),
        cgroups(input),
        runc(input),
        containerd(input),
    ];
    out.extend(input.cni.as_ref().map(cni));
    out.extend(input.runtime_paths.iter().map(runtime_path));
    out.extend(input.subnet.as_ref().map(subnet));
    out.push(registries(input));
    out
}

fn user_namespaces(input: &Input) -> CheckResult {
    const NAME: &str = "user namespaces";
    if input.user_namespaces {
        CheckResult::pass(NAME, "available")
    } else {
        CheckResult::fail(
            NAME,
            "unavailable (user.max_user_namespaces is 0), but every instance has its own",
            "sysctl -w user.max_user_namespaces=63000 (and persist it in /etc/sysctl.d/)",
        )
    }
}

fn seccomp(input: &Input) -> CheckResult {
    const NAME: &str = "seccomp";
    if input.seccomp {
        CheckResult::pass(NAME, "filters supported")
    } else {
        CheckResult::fail(
            NAME,
            "seccomp filters are not supported, but every instance runs under one",
            "boot a kernel built with CONFIG_SECCOMP_FILTER=y",
        )
    }
}

fn user_notif(input: &Input) -> CheckResult {
    const NAME: &str = "seccomp user_notif";
    if input.seccomp_actions.iter().any(|a| a == "user_notif") {
        CheckResult::pass(NAME, "available (seccomp Record and Complain)").optional()
    } else {
        CheckResult::warn(
            NAME,
            "missing from /proc/sys/kernel/seccomp/actions_avail: instances with seccomp Record or Complain cannot start here",
            "use a kernel 5.5 or newer with libseccomp 2.5 or newer",
        )
    }
}

fn cgroups(input: &Input) -> CheckResult {
    const NAME: &str = "cgroups";
    let missing: Vec<&str> = CGROUP_CONTROLLERS
        .into_iter()
        .filter(|c| !input.cgroup_controllers.iter().any(|have| have == c))
        .collect();
    let version = format!("v{}", input.cgroup_version);
    if missing.is_empty() {
        CheckResult::pass(
            NAME,
            format!("{version}, controllers {}", CGROUP_CONTROLLERS.join(" ")),
        )
    } else {
        CheckResult::fail(
            NAME,
            format!(
                "{version}, controllers {} not enabled (have: {})",
                missing.join(" "),
                input.cgroup_controllers.join(" ")
            ),
            "enable them (cgroup v2: add them to the parent's cgroup.subtree_control; boot with systemd.unified_cgroup_hierarchy=1)",
        )
    }
}

fn runc(input: &Input) -> CheckResult {
    const NAME: &str = "runc";
    let (path, version) = &input.runc;
    match version {
        Ok(v) => CheckResult::pass(NAME, format!("{} version {v}", path.display())),
        Err(e) => CheckResult::fail(
            NAME,
            format!("{}: {e}", path.display()),
            "install runc 1.1 or newer (apt-get install runc) or pass --runc with its path",
        ),
    }
}

fn containerd(input: &Input) -> CheckResult {
    const NAME: &str = "containerd";
    let (socket, version) = &input.containerd;
    match version {
        Ok(v) => CheckResult::pass(NAME, format!("{} answers, version {v}", socket.display())),
        Err(e) => CheckResult::fail(
            NAME,
            format!("{}: {e}", socket.display()),
            "start containerd 1.6 or newer, or pass --containerd-address with its socket",
        ),
    }
}

fn cni(input: &CniInput) -> CheckResult {
    const NAME: &str = "cni plugins";
    if let Some(e) = &input.config_error {
        return CheckResult::fail(
            NAME,
            e.clone(),
            "put the node's network configuration (.conflist) in --cni-conf-dir, or leave the flag out for the agent's own bridge",
        );
    }
    let missing: Vec<&str> = input
        .wanted
        .iter()
        .filter(|w| !input.present.contains(w))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        CheckResult::pass(
            NAME,
            format!("{} in {}", input.wanted.join(" "), input.bin_dir.display()),
        )
    } else {
        CheckResult::fail(
            NAME,
            format!(
                "{} missing from {}",
                missing.join(" "),
                input.bin_dir.display()
            ),
            "apt-get install containernetworking-plugins, or pass --cni-bin-dir with the plugins' directory",
        )
    }
}

fn runtime_path(input: &RuntimePath) -> CheckResult {
    const NAME: &str = "runtime state reachable";
    let Some((target, _)) = input.ancestors.last() else {
        return CheckResult::fail(NAME, format!("{} is empty", input.flag), "name a directory");
    };
    let (uid, gid) = input.mapped;
    match reach::first_blocker(&input.ancestors, uid, gid) {
        Reach::Reachable => CheckResult::pass(
            NAME,
            format!(
                "{} (mapped uid {uid} can traverse every directory to it)",
                target.display()
            ),
        ),
        Reach::Blocked { dir, mode } => CheckResult::fail(
            NAME,
            format!(
                "{} is not reachable by an instance's mapped uid {uid}: {} has mode {mode:04o}, so runc cannot mount the container's root filesystem (RuntimeCreateFailed: permission denied)",
                target.display(),
                dir.display()
            ),
            format!(
                "chmod o+x {} (lets others traverse, not list it), or move containerd's root and state to a directory every user can traverse and pass it as {}",
                dir.display(),
                input.flag
            ),
        ),
        Reach::Missing { dir } => CheckResult::warn(
            NAME,
            format!(
                "{} does not exist here, so it cannot be checked",
                dir.display()
            ),
            format!("pass {} with containerd's `state` directory", input.flag),
        ),
    }
}

fn subnet(input: &SubnetInput) -> CheckResult {
    const NAME: &str = "instance subnet";
    let fix_flag = "pass --instance-subnet with a /24 no device on this host uses (the default 10.89.0.0/24 avoids podman's 10.88.0.0/16)";
    let net: Ipv4Net = match input.subnet.parse() {
        Ok(n) => n,
        Err(e) => return CheckResult::fail(NAME, e.to_string(), fix_flag),
    };
    let (interfaces, routes) = match (&input.interfaces, &input.routes) {
        (Ok(i), Ok(r)) => (i, r),
        (Err(e), _) | (_, Err(e)) => {
            return CheckResult::warn(
                NAME,
                format!("{net}: cannot list this host's addresses and routes: {e}"),
                "install iproute2 (the `ip` command) so that the agent can check",
            );
        }
    };
    let c = subnet::collisions(&net, &input.bridge, interfaces, routes);
    if !c.hard.is_empty() {
        CheckResult::fail(
            NAME,
            format!(
                "{net} collides with {} (two devices for one subnet: instances and that network lose each other's addresses)",
                c.hard.join(", ")
            ),
            format!("{fix_flag}, or remove what holds it"),
        )
    } else if !c.soft.is_empty() {
        CheckResult::warn(
            NAME,
            format!(
                "{net} shadows part of {}: those addresses become unreachable from this host",
                c.soft.join(", ")
            ),
            fix_flag,
        )
    } else {
        CheckResult::pass(
            NAME,
            format!("{net} on bridge {}, no other device uses it", input.bridge),
        )
    }
}

fn registries(input: &Input) -> CheckResult {
    const NAME: &str = "registries";
    if input.registries.is_empty() {
        return CheckResult::pass(NAME, "no allow-list: images may come from any registry")
            .optional();
    }
    let bad: Vec<String> = input
        .registries
        .iter()
        .filter_map(|(r, res)| res.as_ref().err().map(|e| format!("{r} ({e})")))
        .collect();
    let all: Vec<&str> = input.registries.iter().map(|(r, _)| r.as_str()).collect();
    if bad.is_empty() {
        CheckResult::pass(NAME, format!("{} resolve", all.join(" "))).optional()
    } else {
        CheckResult::warn(
            NAME,
            format!("{} do not resolve: pulls from them fail", bad.join(", ")),
            "fix the names in --allowed-registries or this host's DNS (/etc/hosts, /etc/resolv.conf)",
        )
    }
}

#[cfg(test)]
mod tests;
