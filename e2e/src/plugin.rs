//! Running the `kubectl-bulkhead` binary against the local system.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use crate::{agent::binary, control_plane::kubeconfig_path, state_dir};

/// How a run of the plugin ended.
#[derive(Debug)]
pub struct Run {
    /// Its exit code (-1 when killed by a signal).
    pub code: i32,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl Run {
    /// Panics with both streams unless it exited 0; returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "kubectl-bulkhead failed: {self:#?}");
        self.stdout
    }

    /// Panics unless it exited non-zero; returns stderr.
    pub fn err(self) -> String {
        assert_ne!(
            self.code, 0,
            "kubectl-bulkhead should have failed: {self:#?}"
        );
        self.stderr
    }
}

fn command(args: &[&str]) -> Command {
    crate::ensure();
    let mut cmd = Command::new(binary("kubectl-bulkhead"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .env_remove("BULKHEAD_AGENT_STATE_DIR")
        .stdin(Stdio::null());
    cmd
}

/// Runs `kubectl-bulkhead --kubeconfig <local system> ARGS` to the end.
pub fn run(args: &[&str]) -> Run {
    let out = command(args).output().expect("kubectl-bulkhead runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Starts it with stdout going to `out` (a long-running `status --watch` or `logs -f`).
/// The caller ends it by its PID ([`Child::kill`]) or waits for it.
pub fn spawn(args: &[&str], out: &Path) -> Child {
    let file = std::fs::File::create(out).expect("the output file");
    command(args)
        .stdout(file)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("kubectl-bulkhead starts")
}

/// The local system's own node agent (host `local-1`) keeps its state, and so instance logs, here.
pub fn local_agent_state_dir() -> PathBuf {
    state_dir().join("agent")
}

/// The Host name of the local system's own node agent (`local-1` unless up.sh was told
/// otherwise).
pub fn local_host() -> String {
    std::env::var("BULKHEAD_HOST_NAME").unwrap_or_else(|_| "local-1".into())
}
