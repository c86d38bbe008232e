//! The second kube-controller-manager baseline of item 2 (issue #16): kcm given
//! `--kube-api-qps 500 --kube-api-burst 1000`, so that Bulkhead is also compared with a kcm
//! whose client limits do not hold it back.
//!
//! For the duration the local system's kcm is stopped (SIGTERM to the PID up.sh recorded),
//! and a second one runs with exactly its command line (same binary, kubeconfigs,
//! certificates, every controller) but for the two limits and a secure port of its own (the
//! local one's plus one); it is stopped again by its PID and `e2e/hack/up.sh` starts the
//! local one again. Two controller managers at once would both act on the Deployment.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{argv, procfs};

/// `--kube-api-qps` of the tuned kcm.
pub const QPS: u32 = 500;
/// `--kube-api-burst` of the tuned kcm.
pub const BURST: u32 = 1000;

/// The tuned kcm's command line from the local one's: the same, with `--kube-api-qps`,
/// `--kube-api-burst` and `--secure-port` (the local one's plus one) set (pure).
pub fn tuned_args(local: &[String]) -> anyhow::Result<Vec<String>> {
    let port: u16 = argv::value(local, "--secure-port")
        .context("the local kube-controller-manager has no --secure-port flag (up.sh sets one)")?
        .parse()
        .context("the local kube-controller-manager's --secure-port is not a port number")?;
    let port = port
        .checked_add(1)
        .context("the local kube-controller-manager's --secure-port is the last port")?;
    let args = argv::with(local, "--secure-port", &port.to_string());
    let args = argv::with(&args, "--kube-api-qps", &QPS.to_string());
    Ok(argv::with(&args, "--kube-api-burst", &BURST.to_string()))
}

/// Runs `body` with the tuned kcm (its PID) in place of the local one, then puts the local
/// one back, whatever `body` returned.
pub async fn with_tuned<T, F, Fut>(state_dir: &Path, body: F) -> anyhow::Result<T>
where
    F: FnOnce(u32) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let local = procfs::component_pid(
        state_dir,
        "kube-controller-manager",
        "kube-controller-manager",
    )?;
    let args = tuned_args(&argv::read(local)?)?;
    stop(local, "the local kube-controller-manager").await?;
    let out = match spawn(state_dir, &args).await {
        Ok(mut child) => {
            let out = match child.id() {
                Some(pid) => body(pid).await,
                None => Err(anyhow::anyhow!("the tuned kube-controller-manager exited")),
            };
            if let Some(pid) = child.id() {
                let _ = stop(pid, "the tuned kube-controller-manager").await;
            }
            // Ours: reap it (SIGKILL first if SIGTERM was not enough).
            let _ = child.kill().await;
            out
        }
        Err(e) => Err(e),
    };
    let restored = restart_local(state_dir).await;
    let value = out?;
    restored?;
    Ok(value)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// SIGTERM to `pid`, then waits (≤ 30 s) until it is gone.
async fn stop(pid: u32, what: &str) -> anyhow::Result<()> {
    crate::cmd::run(
        "kill",
        &["-TERM", &pid.to_string()],
        Duration::from_secs(10),
    )
    .await
    .with_context(|| format!("stopping {what} (PID {pid})"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) {
        if Instant::now() > deadline {
            bail!("{what} (PID {pid}) still runs 30 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Starts the tuned kcm (output to logs/kube-controller-manager-tuned.log) and waits
/// (≤ 60 s) until its /healthz answers ok.
async fn spawn(state_dir: &Path, args: &[String]) -> anyhow::Result<tokio::process::Child> {
    let (program, rest) = args
        .split_first()
        .context("the local kube-controller-manager has an empty command line")?;
    let log_path = state_dir.join("logs/kube-controller-manager-tuned.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let port = argv::value(args, "--secure-port").unwrap_or_default();
    let url = format!("https://127.0.0.1:{port}/healthz");
    let ca = state_dir.join("pki/ca.crt");
    let ca = ca.to_string_lossy();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the tuned kube-controller-manager exited ({status}); see {}",
                log_path.display()
            );
        }
        let probe = [
            "--noproxy",
            "*",
            "-fsS",
            "--max-time",
            "3",
            "--cacert",
            &ca,
            &url,
        ];
        if let Ok((body, _)) = crate::cmd::run("curl", &probe, Duration::from_secs(5)).await
            && body.trim() == "ok"
        {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            bail!(
                "the tuned kube-controller-manager was not healthy at {url} within 60 s; see {}",
                log_path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Starts the local kcm again: up.sh starts what is missing (and reuses the rest).
async fn restart_local(state_dir: &Path) -> anyhow::Result<()> {
    let root = bulkhead_e2e::control_plane::repo_root();
    let up = root.join("e2e/hack/up.sh");
    let out = tokio::process::Command::new("bash")
        .arg(&up)
        .current_dir(&root)
        .env("BULKHEAD_STATE_DIR", state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .context(
            "e2e/hack/up.sh (starting the local kube-controller-manager again) took over 600 s",
        )??;
    if !out.status.success() {
        bail!(
            "e2e/hack/up.sh failed to start the local kube-controller-manager again ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    use crate::argv::owned as args;

    #[test]
    fn the_tuned_kcm_differs_from_the_local_one_only_in_limits_and_port() {
        let local = args(&[
            "/bin/kube-controller-manager",
            "--secure-port=14257",
            "--kubeconfig=/s/kcm.kubeconfig",
            "--controllers=*",
        ]);
        let tuned = tuned_args(&local).unwrap();
        assert_eq!(
            tuned,
            args(&[
                "/bin/kube-controller-manager",
                "--kubeconfig=/s/kcm.kubeconfig",
                "--controllers=*",
                "--secure-port=14258",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
            ])
        );
        // Limits the local one already had are replaced, not doubled.
        let mut given = local.clone();
        given.push("--kube-api-qps=20".into());
        let tuned = tuned_args(&given).unwrap();
        assert_eq!(
            tuned
                .iter()
                .filter(|a| a.starts_with("--kube-api-qps"))
                .count(),
            1
        );
    }

    #[test]
    fn a_local_kcm_without_a_port_is_refused_with_the_reason() {
        let e = tuned_args(&args(&["kcm", "--v=1"])).unwrap_err();
        assert!(e.to_string().contains("--secure-port"), "{e}");
        let e = tuned_args(&args(&["kcm", "--secure-port=65535"])).unwrap_err();
        assert!(e.to_string().contains("last port"), "{e}");
    }
}
