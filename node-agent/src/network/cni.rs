//! Running CNI plugins: the spec's ADD and DEL over a network configuration (list).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// A CNI failure, with the plugin's own message.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// The configuration cannot be read.
    #[error("CNI configuration {path}: {message}")]
    Config {
        /// Where it was read.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A plugin failed.
    #[error("CNI plugin {plugin} {command} failed: {message}")]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// ADD or DEL.
        command: &'static str,
        /// Its error message.
        message: String,
    },
    /// The result of ADD holds no IP address.
    #[error("CNI ADD returned no IP address")]
    NoAddress,
}

/// A network to attach instances to.
#[derive(Debug, Clone)]
pub struct Cni {
    bin_dir: PathBuf,
    /// The network configuration list (cniVersion, name, plugins).
    list: Value,
    /// Where the result of each ADD is kept until its DEL, which passes it to every plugin as
    /// `prevResult` (CNI 1.0: the firewall plugin removes its rules by the addresses in it).
    results: PathBuf,
    /// The root the plugins run in (chroot), when it is not the agent's own.
    root: Option<PathBuf>,
}

impl Cni {
    /// The agent's own network: a bridge with host-local IPAM on `subnet` (IPAM state under
    /// `state_dir`), then `firewall` (lets the instance's traffic through the host's FORWARD
    /// chain), as Debian's containernetworking-plugins ship them. No `portmap`: the API has
    /// no host ports, and a plugin with nothing to map still costs each ADD a process and
    /// each DEL its iptables lookups.
    pub fn bridge(bin_dir: &Path, bridge: &str, subnet: &str, state_dir: &Path) -> Self {
        let list = json!({
            "cniVersion": "1.0.0",
            "name": "bulkhead",
            "plugins": [{
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "dataDir": state_dir.join("cni/ipam").display().to_string(),
                },
            }, {
                "type": "firewall",
                "backend": "iptables",
            }],
        });
        Self {
            bin_dir: bin_dir.to_path_buf(),
            list,
            results: state_dir.join("cni/results"),
            root: None,
        }
    }

    /// The first configuration in a node's CNI directory (sorted by name), as kubelet picks.
    pub fn from_conf_dir(
        bin_dir: &Path,
        conf_dir: &Path,
        state_dir: &Path,
    ) -> Result<Self, CniError> {
        let err = |message: String| CniError::Config {
            path: conf_dir.display().to_string(),
            message,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(conf_dir)
            .map_err(|e| err(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conf" | "conflist" | "json")
                )
            })
            .collect();
        files.sort();
        let path = files
            .first()
            .ok_or_else(|| err("no .conf or .conflist file".into()))?;
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let list = if value.get("plugins").is_some() {
            value
        } else {
            // A single .conf becomes a one-plugin list.
            json!({"cniVersion": value["cniVersion"], "name": value["name"], "plugins": [value]})
        };
        Ok(Self {
            bin_dir: bin_dir.to_path_buf(),
            list,
            results: state_dir.join("cni/results"),
            root: None,
        })
    }

    /// Runs the plugins chrooted into `root` (the node's root file system seen from a pod,
    /// /proc/1/root): they then find the node's iptables, plugin directory and state.
    pub fn with_root(mut self, root: Option<PathBuf>) -> Self {
        self.root = root;
        self
    }

    /// The plugin types the configuration runs, IPAM plugins included, each once (what
    /// preflight looks for in the plugin directory).
    pub fn plugin_types(&self) -> Vec<String> {
        let mut types: Vec<String> = Vec::new();
        for p in self.list["plugins"].as_array().into_iter().flatten() {
            for t in [&p["type"], &p["ipam"]["type"]] {
                if let Some(t) = t.as_str().filter(|t| !types.iter().any(|have| have == t)) {
                    types.push(t.to_string());
                }
            }
        }
        types
    }

    /// Attaches the network namespace at `netns` as `eth0` of `container_id`; returns the
    /// instance's IP address.
    pub async fn add(&self, container_id: &str, netns: &Path) -> Result<String, CniError> {
        let mut prev: Option<Value> = None;
        for plugin in self.plugins() {
            let result = self
                .exec("ADD", &plugin, container_id, Some(netns), prev.as_ref())
                .await?;
            prev = Some(result);
        }
        let result = prev.unwrap_or(Value::Null);
        let path = self.result_path(container_id);
        let keep = async {
            tokio::fs::create_dir_all(&self.results).await?;
            tokio::fs::write(&path, serde_json::to_vec(&result).unwrap_or_default()).await
        };
        keep.await.map_err(|e| CniError::Config {
            path: path.display().to_string(),
            message: format!("keeping the ADD result: {e}"),
        })?;
        first_ip(&result).ok_or(CniError::NoAddress)
    }

    /// Detaches `container_id` (its IP is released even when the namespace is gone), passing
    /// the result of its ADD, when one was kept, to every plugin.
    pub async fn del(&self, container_id: &str, netns: Option<&Path>) -> Result<(), CniError> {
        let path = self.result_path(container_id);
        let prev: Option<Value> = tokio::fs::read(&path)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        for plugin in self.plugins().into_iter().rev() {
            self.exec("DEL", &plugin, container_id, netns, prev.as_ref())
                .await?;
        }
        let _ = tokio::fs::remove_file(&path).await;
        Ok(())
    }

    fn result_path(&self, container_id: &str) -> PathBuf {
        self.results.join(format!("{container_id}.json"))
    }

    fn plugins(&self) -> Vec<Value> {
        let version = self.list["cniVersion"].clone();
        let name = self.list["name"].clone();
        self.list["plugins"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut p| {
                p["cniVersion"] = version.clone();
                p["name"] = name.clone();
                p
            })
            .collect()
    }

    async fn exec(
        &self,
        command: &'static str,
        plugin: &Value,
        container_id: &str,
        netns: Option<&Path>,
        prev: Option<&Value>,
    ) -> Result<Value, CniError> {
        let kind = plugin["type"].as_str().unwrap_or_default().to_string();
        let fail = |message: String| CniError::Plugin {
            plugin: kind.clone(),
            command,
            message,
        };
        let mut config = plugin.clone();
        if let Some(prev) = prev {
            config["prevResult"] = prev.clone();
        }
        let plugin_path = self.bin_dir.join(&kind);
        let mut cmd =
            node_command(self.root.as_deref(), &plugin_path).map_err(|e| fail(e.to_string()))?;
        let mut child = cmd
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env(
                "CNI_NETNS",
                netns.map(|p| p.display().to_string()).unwrap_or_default(),
            )
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.bin_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", plugin_path.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            let bytes = serde_json::to_vec(&config).unwrap_or_default();
            stdin
                .write_all(&bytes)
                .await
                .map_err(|e| fail(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            // Plugins report errors as JSON on stdout: {"code":..,"msg":..,"details":..}.
            let err: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let msg = err["msg"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned());
            let details = err["details"].as_str().unwrap_or_default();
            return Err(fail(format!("{msg} {details}").trim().to_string()));
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    }
}

/// The agent's first argument when it runs a program of the node in another root:
/// `bulkhead-node-agent cni-chroot <root> <program> [args...]`.
pub const CHROOT_EXEC: &str = "cni-chroot";

/// A command for `program` of the node: run directly, or, with `root` (the node's root file
/// system seen from a pod, /proc/1/root), through this binary again as
/// `cni-chroot <root> <program>` so that it finds the node's libraries, iptables and state.
pub fn node_command(
    root: Option<&Path>,
    program: impl AsRef<std::ffi::OsStr>,
) -> std::io::Result<tokio::process::Command> {
    Ok(match root {
        Some(root) => {
            let me = std::env::current_exe().map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot find the agent's own binary: {e}"))
            })?;
            let mut c = tokio::process::Command::new(me);
            c.arg(CHROOT_EXEC).arg(root).arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    })
}

/// `cni-chroot <root> <program> [args...]`: changes root to `root` and executes `program`
/// there with `args`, this process's environment, stdin and stdout (the CNI protocol passes
/// through). None when `args` (argv without argv[0]) is not that command; otherwise returns
/// only on failure.
pub fn chroot_exec(args: &[String]) -> Option<std::io::Error> {
    use std::os::unix::process::CommandExt;
    let [cmd, root, program, rest @ ..] = args else {
        return None;
    };
    if cmd != CHROOT_EXEC {
        return None;
    }
    if let Err(e) = std::os::unix::fs::chroot(root).and_then(|()| std::env::set_current_dir("/")) {
        return Some(std::io::Error::new(e.kind(), format!("chroot {root}: {e}")));
    }
    // A bare name is looked up in the new root's standard directories (the agent image's
    // PATH may lack the sbin ones).
    let mut cmd = std::process::Command::new(program);
    if !program.contains('/') {
        cmd.env("PATH", NODE_PATH);
    }
    Some(cmd.args(rest).exec())
}

/// Where `cni-chroot` looks for a program given by name.
const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The first IP address of a CNI result (`ips[].address`, "10.89.0.5/24").
pub fn first_ip(result: &Value) -> Option<String> {
    result["ips"]
        .as_array()?
        .iter()
        .find_map(|ip| ip["address"].as_str())
        .and_then(|a| a.split('/').next())
        .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_cni_chroot_command_is_taken_as_one() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(chroot_exec(&args(&["preflight"])).is_none());
        assert!(chroot_exec(&args(&["logs", "/", "/bin/true"])).is_none());
        assert!(chroot_exec(&args(&[CHROOT_EXEC, "/"])).is_none());
        // A root that does not exist fails before anything is executed, naming it.
        let err = chroot_exec(&args(&[CHROOT_EXEC, "/nonexistent-root", "/bin/true"]))
            .expect("the command is recognised");
        assert!(err.to_string().contains("/nonexistent-root"), "{err}");
    }

    #[test]
    fn reads_the_address_of_a_result() {
        let r = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.89.0.5/24", "gateway": "10.89.0.1"}]});
        assert_eq!(first_ip(&r).as_deref(), Some("10.89.0.5"));
        assert_eq!(first_ip(&json!({})), None);
    }

    #[test]
    fn a_single_conf_becomes_a_list_and_the_first_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("20-b.conf"),
            r#"{"cniVersion":"0.4.0","name":"b","type":"ptp"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"bridge"}"#,
        )
        .unwrap();
        let cni = Cni::from_conf_dir(Path::new("/usr/lib/cni"), dir.path(), dir.path()).unwrap();
        let plugins = cni.plugins();
        assert_eq!(plugins.len(), 1);
        assert_eq!(
            (plugins[0]["type"].as_str(), plugins[0]["name"].as_str()),
            (Some("bridge"), Some("a"))
        );
        assert!(
            Cni::from_conf_dir(Path::new("/x"), Path::new("/nonexistent"), Path::new("/x"))
                .is_err()
        );
    }

    #[test]
    fn the_agents_own_network_is_a_bridge_with_host_local_ipam() {
        let cni = Cni::bridge(
            Path::new("/usr/lib/cni"),
            "bh0",
            "10.89.3.0/24",
            Path::new("/var/lib/bulkhead"),
        );
        let types: Vec<String> = cni
            .plugins()
            .iter()
            .map(|p| p["type"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(types, ["bridge", "firewall"]);
        assert_eq!(cni.plugin_types(), ["bridge", "host-local", "firewall"]);
        let p = &cni.plugins()[0];
        assert_eq!(p["type"], "bridge");
        assert_eq!(p["ipam"]["ranges"][0][0]["subnet"], "10.89.3.0/24");
        assert_eq!(p["cniVersion"], "1.0.0");
    }
}
