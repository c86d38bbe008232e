//! The network half of the `ctr run + CNI` start baseline: the local agent's own CNI chain,
//! run by hand for each baseline container.
//!
//! Debian's `ctr run --cni` (containerd 1.6) reads its configuration only from the fixed
//! default directories (`/etc/cni/net.d`, plugins in `/opt/cni/bin`), where another network
//! (podman's) may come first, so it cannot be pointed at the agent's network. The benchmark
//! does what it would do, in the same order: `ctr run` with an OCI `createRuntime` hook
//! (this binary again, [`hook_main`]) that ADDs the agent's chain for the container's own
//! network namespace (`/proc/<pid>/ns/net`, owned by its user namespace) after runc made it
//! and before the process starts, with the agent's own CNI code
//! ([`bulkhead_node_agent::network::Cni`]: the same configuration list, plugins,
//! environment and `prevResult` chaining). A namespace made beforehand (`ip netns add`)
//! cannot serve: it belongs to the host's user namespace, and runc then may not mount sysfs
//! from the container's. The network comes from the agent's command line
//! ([`AgentNetwork`]): its bridge and subnet, built by `Cni::bridge` with the `host-local`
//! IPAM directory linked to the agent's (so addresses never collide with running
//! instances), or the first file of its `--cni-conf-dir`. Each container's chain is DELed
//! by the ID this run gave it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use bulkhead_node_agent::network::Cni;
use serde_json::{Value, json};

use crate::argv;

/// Where the agent's network configuration comes from, read from its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentNetwork {
    /// The agent's own bridge network (`--cni-bridge`, `--instance-subnet`), IPAM state
    /// under `--state-dir`.
    Bridge {
        /// CNI plugin directory.
        bin_dir: PathBuf,
        /// The bridge.
        bridge: String,
        /// The instance subnet.
        subnet: String,
        /// The agent's state directory.
        state_dir: PathBuf,
    },
    /// The node's own configuration: the first file in `--cni-conf-dir`.
    ConfDir {
        /// CNI plugin directory.
        bin_dir: PathBuf,
        /// The configuration directory.
        dir: PathBuf,
    },
}

/// The agent's network from its arguments, each flag falling back to its environment
/// variable and then to the agent's default, as its clap definition does (pure).
pub fn agent_network(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<AgentNetwork> {
    let setting = |flag: &str, var: &str| argv::value(args, flag).or_else(|| env(var));
    let on = |flag: &str, var: &str| {
        args.iter().any(|a| a == flag)
            || setting(flag, var).is_some_and(|v| v != "false" && !v.is_empty())
    };
    if on("--no-network", "BULKHEAD_NO_NETWORK") {
        bail!(
            "the local agent runs with --no-network, so it has no CNI chain to compare with: \
             start it without that flag (e2e/hack/up.sh does)"
        );
    }
    if setting("--cni-root", "BULKHEAD_CNI_ROOT").is_some() {
        bail!(
            "the local agent runs its CNI plugins under --cni-root, which the benchmark cannot \
             reproduce from the host: start it without that flag (e2e/hack/up.sh does)"
        );
    }
    let bin_dir = PathBuf::from(
        setting("--cni-bin-dir", "BULKHEAD_CNI_BIN_DIR").unwrap_or_else(|| "/usr/lib/cni".into()),
    );
    if let Some(dir) = setting("--cni-conf-dir", "BULKHEAD_CNI_CONF_DIR") {
        return Ok(AgentNetwork::ConfDir {
            bin_dir,
            dir: dir.into(),
        });
    }
    Ok(AgentNetwork::Bridge {
        bin_dir,
        bridge: setting("--cni-bridge", "BULKHEAD_CNI_BRIDGE")
            .unwrap_or_else(|| "bulkhead0".into()),
        subnet: setting("--instance-subnet", "BULKHEAD_INSTANCE_SUBNET")
            .unwrap_or_else(|| "10.89.0.0/24".into()),
        state_dir: setting("--state-dir", "BULKHEAD_STATE_DIR")
            .unwrap_or_else(|| "/var/lib/bulkhead".into())
            .into(),
    })
}

impl AgentNetwork {
    /// The words that name it to the hook (pure; [`AgentNetwork::from_words`] reads them).
    pub fn to_words(&self) -> Vec<String> {
        let p = |p: &Path| p.to_string_lossy().into_owned();
        match self {
            AgentNetwork::Bridge {
                bin_dir,
                bridge,
                subnet,
                state_dir,
            } => vec![
                "bridge".into(),
                p(bin_dir),
                bridge.clone(),
                subnet.clone(),
                p(state_dir),
            ],
            AgentNetwork::ConfDir { bin_dir, dir } => vec!["conf-dir".into(), p(bin_dir), p(dir)],
        }
    }

    /// The network [`AgentNetwork::to_words`] named (pure).
    pub fn from_words(words: &[String]) -> anyhow::Result<Self> {
        Ok(match words {
            [kind, bin, bridge, subnet, state] if kind == "bridge" => AgentNetwork::Bridge {
                bin_dir: bin.into(),
                bridge: bridge.clone(),
                subnet: subnet.clone(),
                state_dir: state.into(),
            },
            [kind, bin, dir] if kind == "conf-dir" => AgentNetwork::ConfDir {
                bin_dir: bin.into(),
                dir: dir.into(),
            },
            _ => bail!(
                "the CNI hook's network is \"bridge <bin dir> <bridge> <subnet> <state dir>\" or \
                 \"conf-dir <bin dir> <dir>\", not {words:?}"
            ),
        })
    }

    /// The agent's chain, built by the agent's own code, with the ADD results kept under
    /// `work` (never in the agent's state, whose network walls read its own). The bridge
    /// network's `host-local` IPAM directory, `<work>/cni/ipam`, is a link to the agent's,
    /// so that addresses come from the same pool under the same lock.
    pub fn cni(&self, work: &Path) -> anyhow::Result<Cni> {
        match self {
            AgentNetwork::ConfDir { bin_dir, dir } => Ok(Cni::from_conf_dir(bin_dir, dir, work)?),
            AgentNetwork::Bridge {
                bin_dir,
                bridge,
                subnet,
                state_dir,
            } => {
                let agents = state_dir.join("cni/ipam");
                std::fs::create_dir_all(&agents)
                    .with_context(|| format!("creating {}", agents.display()))?;
                let link = work.join("cni/ipam");
                if std::fs::read_link(&link).ok().as_deref() != Some(agents.as_path()) {
                    std::fs::create_dir_all(work.join("cni"))?;
                    let _ = std::fs::remove_file(&link);
                    std::os::unix::fs::symlink(&agents, &link).with_context(|| {
                        format!("linking {} to {}", link.display(), agents.display())
                    })?;
                }
                Ok(Cni::bridge(bin_dir, bridge, subnet, work))
            }
        }
    }
}

/// The agent's CNI chain, ADDed by an OCI `createRuntime` hook ([`hook_main`]) for each
/// baseline container's own network namespace, DELed by [`Baseline::remove_all`].
#[derive(Debug)]
pub struct Baseline {
    cni: Cni,
    /// The hook's arguments after the program: where it finds the chain.
    hook_args: Vec<String>,
    /// Containers given the hook by this run (each also a CNI container ID).
    attached: Vec<String>,
    /// Where the ADD results are kept (as the agent's `Cni` keeps them under `work`).
    results: PathBuf,
}

impl Baseline {
    /// The chain of `net` ([`AgentNetwork::cni`]), results kept under `work`.
    pub fn new(net: &AgentNetwork, work: &Path) -> anyhow::Result<Self> {
        let mut hook_args = vec![HOOK_COMMAND.to_string(), path_arg(work)];
        hook_args.extend(net.to_words());
        Ok(Self {
            cni: net.cni(work)?,
            hook_args,
            attached: Vec::new(),
            results: work.join("cni/results"),
        })
    }

    /// Adds the hook that ADDs the chain to the spec of container `id` (remembered for
    /// [`Baseline::remove_all`]).
    pub fn attach(&mut self, spec: &mut Value, id: &str) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("finding bulkhead-bench's own binary")?;
        with_hook(spec, &exe, &self.hook_args);
        self.attached.push(id.to_string());
        Ok(())
    }

    /// The address the hook's ADD gave container `id` (from the result kept for its DEL):
    /// proof that the measured start did attach the network.
    pub fn address(&self, id: &str) -> anyhow::Result<String> {
        let path = self.results.join(format!("{id}.json"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "container {id} started without the CNI hook's result {}",
                path.display()
            )
        })?;
        let result: Value = serde_json::from_str(&text).context("the CNI hook's result")?;
        bulkhead_node_agent::network::cni::first_ip(&result)
            .with_context(|| format!("the CNI result of container {id} holds no address"))
    }

    /// DELs the chain of every container [`Baseline::attach`] named (their tasks already
    /// removed: the bridge plugin then only releases the address, the firewall plugin
    /// removes its rules), reporting, not stopping at, failures.
    pub async fn remove_all(&mut self) {
        for id in self.attached.drain(..) {
            if let Err(e) = self.cni.del(&id, None).await {
                eprintln!("[bench] CNI DEL of {id}: {e}");
            }
        }
    }
}

/// `bulkhead-bench <HOOK_COMMAND> <work dir> <network words>`: the hook's command.
pub const HOOK_COMMAND: &str = "cni-hook";

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Appends a `createRuntime` hook running `exe args…` to the spec (pure). runc runs it once
/// the container's namespaces exist and before its process starts, as `ctr run --cni` and
/// the agent run the ADD.
pub fn with_hook(spec: &mut Value, exe: &Path, args: &[String]) {
    let mut argv = vec![path_arg(exe)];
    argv.extend_from_slice(args);
    let hook = json!({"path": path_arg(exe), "args": argv, "timeout": 60});
    match spec["hooks"]["createRuntime"].as_array_mut() {
        Some(list) => list.push(hook),
        None => spec["hooks"]["createRuntime"] = json!([hook]),
    }
}

/// The container ID and network namespace path named by the OCI state runc gives a hook on
/// stdin (pure).
pub fn hook_target(state: &str) -> anyhow::Result<(String, PathBuf)> {
    let v: Value = serde_json::from_str(state).context("the OCI state on the hook's stdin")?;
    let id = v["id"].as_str().context("the OCI state has no id")?;
    let pid = v["pid"]
        .as_u64()
        .filter(|p| *p > 0)
        .context("the OCI state has no pid")?;
    Ok((id.to_string(), PathBuf::from(format!("/proc/{pid}/ns/net"))))
}

/// The hook: ADDs the chain of the network `args` name (`<work dir>` then
/// [`AgentNetwork::to_words`]) for the container the OCI `state` names, in its own network
/// namespace.
pub async fn hook_main(args: &[String], state: &str) -> anyhow::Result<()> {
    let Some((work, words)) = args.split_first() else {
        bail!(
            "usage: bulkhead-bench {HOOK_COMMAND} <work dir> <network> (an OCI hook: the state on stdin)"
        );
    };
    let (id, netns) = hook_target(state)?;
    let cni = AgentNetwork::from_words(words)?.cni(Path::new(work))?;
    cni.add(&id, &netns)
        .await
        .with_context(|| format!("CNI ADD for container {id}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    use crate::argv::owned as args;

    #[test]
    fn the_hook_is_given_the_network_it_was_read_as() {
        for net in [
            AgentNetwork::Bridge {
                bin_dir: "/usr/lib/cni".into(),
                bridge: "bulkhead4".into(),
                subnet: "10.90.4.0/24".into(),
                state_dir: "/s/agent".into(),
            },
            AgentNetwork::ConfDir {
                bin_dir: "/opt/cni/bin".into(),
                dir: "/etc/cni/net.d".into(),
            },
        ] {
            assert_eq!(AgentNetwork::from_words(&net.to_words()).unwrap(), net);
        }
        let e = AgentNetwork::from_words(&args(&["bridge", "/b"])).unwrap_err();
        assert!(e.to_string().contains("bridge <bin dir>"), "{e}");
    }

    #[test]
    fn the_bridge_chain_keeps_results_here_and_addresses_in_the_agents_pool() {
        let dir = std::env::temp_dir().join(format!("bench-cni-test-{}", std::process::id()));
        let net = AgentNetwork::Bridge {
            bin_dir: "/usr/lib/cni".into(),
            bridge: "bulkhead4".into(),
            subnet: "10.90.4.0/24".into(),
            state_dir: dir.join("agent"),
        };
        let work = dir.join("work");
        net.cni(&work).unwrap();
        // Twice: the link is kept, not an error.
        net.cni(&work).unwrap();
        std::fs::write(dir.join("agent/cni/ipam/marker"), "x").unwrap();
        let through_link = std::fs::read_to_string(work.join("cni/ipam/marker")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(through_link, "x");
    }

    #[test]
    fn the_hook_runs_after_the_namespaces_exist_and_keeps_other_hooks() {
        let mut spec = json!({"hooks": {"createRuntime": [{"path": "/other"}]}});
        let args = [HOOK_COMMAND.to_string(), "/conf".into()];
        with_hook(&mut spec, Path::new("/bin/bench"), &args);
        assert_eq!(
            spec["hooks"]["createRuntime"],
            json!([{"path": "/other"}, {"path": "/bin/bench", "args": ["/bin/bench", "cni-hook", "/conf"], "timeout": 60}])
        );
        let mut bare = json!({"linux": {}});
        with_hook(&mut bare, Path::new("/b"), &[]);
        assert_eq!(bare["hooks"]["createRuntime"][0]["path"], "/b");
    }

    #[test]
    fn the_hook_attaches_the_network_namespace_of_the_containers_process() {
        let (id, netns) =
            hook_target(r#"{"ociVersion":"1.0.2","id":"bench-cni-7-0","status":"creating","pid":4242,"bundle":"/b"}"#)
                .unwrap();
        assert_eq!(
            (id.as_str(), netns.as_path()),
            ("bench-cni-7-0", Path::new("/proc/4242/ns/net"))
        );
        let e = hook_target(r#"{"id":"x","pid":0}"#).unwrap_err();
        assert!(e.to_string().contains("no pid"), "{e}");
    }

    #[test]
    fn the_agents_flags_name_its_network() {
        let a = args(&[
            "bulkhead-node-agent",
            "--state-dir",
            "/s/agent",
            "--cni-bridge",
            "bulkhead4",
            "--instance-subnet=10.90.4.0/24",
        ]);
        let net = agent_network(&a, |v| (v == "BULKHEAD_CNI_BIN_DIR").then(|| "/cni".into()));
        assert_eq!(
            net.unwrap(),
            AgentNetwork::Bridge {
                bin_dir: "/cni".into(),
                bridge: "bulkhead4".into(),
                subnet: "10.90.4.0/24".into(),
                state_dir: "/s/agent".into(),
            }
        );
        let defaults = agent_network(&args(&["agent"]), |_| None).unwrap();
        assert!(
            matches!(&defaults, AgentNetwork::Bridge { bridge, subnet, .. }
                if bridge == "bulkhead0" && subnet == "10.89.0.0/24"),
            "{defaults:?}"
        );
        let conf = agent_network(&args(&["agent", "--cni-conf-dir=/etc/cni/net.d"]), |_| None);
        assert!(
            matches!(conf.unwrap(), AgentNetwork::ConfDir { dir, .. } if dir == Path::new("/etc/cni/net.d"))
        );
    }

    #[test]
    fn an_agent_without_a_comparable_network_is_refused_with_the_reason() {
        let e = agent_network(&args(&["agent", "--no-network"]), |_| None).unwrap_err();
        assert!(e.to_string().contains("--no-network"), "{e}");
        let e = agent_network(&args(&["agent"]), |v| {
            (v == "BULKHEAD_CNI_ROOT").then(|| "/proc/1/root".into())
        })
        .unwrap_err();
        assert!(e.to_string().contains("--cni-root"), "{e}");
    }
}
