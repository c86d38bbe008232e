//! Running the CLIs the baselines use (`ctr`, `runc`), each bounded in time.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// Runs `program args`, waiting at most `timeout`; returns its stdout and the wall time.
/// A non-zero exit is an error carrying stderr.
pub async fn run(program: &str, args: &[&str], timeout: Duration) -> anyhow::Result<(String, f64)> {
    let t0 = Instant::now();
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .with_context(|| format!("{program} {args:?} took longer than {timeout:?}"))?
        .with_context(|| format!("waiting for {program}"))?;
    let wall = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), wall))
}

/// Runs `program args` with every stdio stream on /dev/null (for a process whose children
/// inherit its stdio and outlive it, such as `runc run -d`), waiting at most `timeout`;
/// returns the wall time. A non-zero exit is an error.
pub async fn run_detached(program: &str, args: &[&str], timeout: Duration) -> anyhow::Result<f64> {
    // A blocking waitpid on a thread: tokio's child watcher missed the exit of `runc run -d`
    // (whose container process it leaves behind) in testing.
    let t0 = Instant::now();
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let pid = child.id();
    let waited =
        tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || child.wait())).await;
    let status = match waited {
        Ok(joined) => joined.context("the waiting thread")??,
        Err(_) => {
            // Ours by PID: the child has not been reaped, so the PID is still its.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            bail!("{program} {args:?} took longer than {timeout:?}");
        }
    };
    let wall = t0.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{program} {args:?} failed ({status})");
    }
    Ok(wall)
}

/// `ctr` against the private containerd in one namespace.
#[derive(Debug, Clone)]
pub struct Ctr {
    /// containerd's socket.
    pub address: PathBuf,
    /// The containerd namespace.
    pub namespace: String,
}

impl Ctr {
    /// Runs `ctr --address … --namespace … args`.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<(String, f64)> {
        let address = self.address.to_string_lossy();
        let mut all = vec!["--address", &address, "--namespace", &self.namespace];
        all.extend_from_slice(args);
        run("ctr", &all, Duration::from_secs(60)).await
    }
}

/// `runc` with a root directory of the benchmark's own (never containerd's).
#[derive(Debug, Clone)]
pub struct Runc {
    /// runc's state root.
    pub root: PathBuf,
}

impl Runc {
    /// Runs `runc --root … args`.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<(String, f64)> {
        let root = self.root.to_string_lossy();
        let mut all = vec!["--root", &root];
        all.extend_from_slice(args);
        run("runc", &all, Duration::from_secs(60)).await
    }

    /// Runs `runc --root … --log <root>/runc.log args` with its stdio on /dev/null (the
    /// container inherits it); errors point at the log.
    pub async fn run_detached(&self, args: &[&str]) -> anyhow::Result<f64> {
        std::fs::create_dir_all(&self.root)?;
        let root = self.root.to_string_lossy();
        let log = self.root.join("runc.log");
        let log_s = log.to_string_lossy();
        let mut all = vec!["--root", &root, "--log", &log_s];
        all.extend_from_slice(args);
        run_detached("runc", &all, Duration::from_secs(60))
            .await
            .with_context(|| format!("see {}", log.display()))
    }
}

/// First line of `program --version`, for the machine description.
pub async fn version(program: &str, args: &[&str]) -> String {
    match run(program, args, Duration::from_secs(20)).await {
        Ok((out, _)) => out.lines().next().unwrap_or_default().trim().to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}
