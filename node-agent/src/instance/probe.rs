//! Readiness and liveness probes, as kubelet runs them.
//!
//! One task per running process probes on its period: exec inside the instance (with its own
//! user, capabilities and seccomp filter), an HTTP GET or a TCP connect to its IP. Readiness
//! moves the Ready condition after successThreshold / failureThreshold consecutive results;
//! liveness kills the process after failureThreshold failures, and the restart policy decides
//! what follows. Probe state is per process and lives only in the agent, as in kubelet: a
//! restarted agent starts probing afresh.

use std::{sync::Arc, time::Duration};

use bulkhead_crds::{Instance, InstancePhase, conditions::types, template::Probe};
use kube::{Api, ResourceExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tracing::{info, warn};

use super::{Context, status};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Decides Ready.
    Readiness,
    /// Restarts the instance when it fails.
    Liveness,
}

/// Runs one probe once: success or a reason.
pub async fn run_once(
    ctx: &Context,
    probe: &Probe,
    container: &str,
    ip: Option<&str>,
    n: u64,
) -> Result<(), String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.max(1) as u64);
    if let Some(exec) = &probe.exec {
        let exec_id = format!("probe-{n}");
        return match ctx
            .containerd
            .exec(container, &exec_id, &exec.command, timeout)
            .await
        {
            Ok(Some(0)) => Ok(()),
            Ok(Some(code)) => Err(format!("exec {:?} exited with {code}", exec.command)),
            Ok(None) => Err(format!(
                "exec {:?} timed out after {timeout:?}",
                exec.command
            )),
            Err(e) => Err(e.to_string()),
        };
    }
    let ip = ip.ok_or("the instance has no IP address")?;
    if let Some(tcp) = &probe.tcp_socket {
        return match tokio::time::timeout(timeout, TcpStream::connect((ip, tcp.port as u16))).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("tcp {ip}:{}: {e}", tcp.port)),
            Err(_) => Err(format!("tcp {ip}:{} timed out", tcp.port)),
        };
    }
    if let Some(http) = &probe.http_get {
        let get = async {
            let mut s = TcpStream::connect((ip, http.port as u16))
                .await
                .map_err(|e| e.to_string())?;
            let request = format!(
                "GET {} HTTP/1.1\r\nHost: {ip}\r\nUser-Agent: bulkhead-probe\r\nConnection: close\r\n\r\n",
                http.path
            );
            s.write_all(request.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut head = vec![0u8; 64];
            let n = s.read(&mut head).await.map_err(|e| e.to_string())?;
            let line = String::from_utf8_lossy(&head[..n]).into_owned();
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!(
                    "http {ip}:{}{} answered {code}",
                    http.port, http.path
                ))
            }
        };
        return match tokio::time::timeout(timeout, get).await {
            Ok(r) => r,
            Err(_) => Err(format!("http {ip}:{}{} timed out", http.port, http.path)),
        };
    }
    Err("the probe has no handler".into())
}

/// Counts consecutive results and says when the state flips.
#[derive(Debug, Clone, Default)]
pub struct Threshold {
    passing: Option<bool>,
    successes: i32,
    failures: i32,
}

impl Threshold {
    /// Forgets the reported state, so the next result past a threshold flips again (a flip
    /// that could not be written).
    pub fn forget(&mut self) {
        self.passing = None;
    }

    /// Adds a result; returns the new state when it changed.
    pub fn observe(
        &mut self,
        ok: bool,
        success_threshold: i32,
        failure_threshold: i32,
    ) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let next = if self.successes >= success_threshold.max(1) {
            Some(true)
        } else if self.failures >= failure_threshold.max(1) {
            Some(false)
        } else {
            None
        };
        match next {
            Some(v) if self.passing != Some(v) => {
                self.passing = Some(v);
                Some(v)
            }
            _ => None,
        }
    }
}

/// Starts the probes of a running process unless they already run.
pub fn start(
    ctx: &Arc<Context>,
    instance: &Instance,
    container: &str,
    pid: u32,
    ip: Option<String>,
) {
    let spec = &instance.spec.template;
    let probes: Vec<(Kind, Probe)> = [
        (Kind::Readiness, spec.readiness_probe.clone()),
        (Kind::Liveness, spec.liveness_probe.clone()),
    ]
    .into_iter()
    .filter_map(|(k, p)| p.map(|p| (k, p)))
    .collect();
    if probes.is_empty() {
        return;
    }
    let key = format!("{container}/{pid}");
    {
        let Ok(mut running) = ctx.probing.lock() else {
            return;
        };
        // Probes of an earlier process of this container stop; those of this one run once.
        running.retain(|k, handle| {
            let same_container = k.starts_with(&format!("{container}/"));
            if same_container && *k != key {
                handle.abort();
            }
            !same_container || *k == key
        });
        if running.contains_key(&key) {
            return;
        }
        let namespace = instance.namespace().unwrap_or_default();
        let name = instance.name_any();
        let ctx2 = ctx.clone();
        let container = container.to_string();
        let handle = tokio::spawn(async move {
            let tasks = probes.into_iter().map(|(kind, probe)| {
                run(
                    ctx2.clone(),
                    namespace.clone(),
                    name.clone(),
                    container.clone(),
                    ip.clone(),
                    kind,
                    probe,
                )
            });
            futures::future::join_all(tasks).await;
        });
        running.insert(key, handle.abort_handle());
    }
}

/// Stops the probes of a container.
pub fn stop(ctx: &Context, container: &str) {
    if let Ok(mut running) = ctx.probing.lock() {
        running.retain(|k, handle| {
            let mine = k.starts_with(&format!("{container}/"));
            if mine {
                handle.abort();
            }
            !mine
        });
    }
}

/// Every how many readiness probes the reported state is checked against the API.
const REASSERT_EVERY: u64 = 10;

async fn run(
    ctx: Arc<Context>,
    namespace: String,
    name: String,
    container: String,
    ip: Option<String>,
    kind: Kind,
    probe: Probe,
) {
    tokio::time::sleep(Duration::from_secs(
        probe.initial_delay_seconds.max(0) as u64
    ))
    .await;
    let mut threshold = Threshold::default();
    let mut n = 0u64;
    let api: Api<Instance> = Api::namespaced(ctx.client.clone(), &namespace);
    loop {
        n += 1;
        if kind == Kind::Readiness && n.is_multiple_of(REASSERT_EVERY) {
            // A status write from a copy read before the flip (a reconcile of the instance's
            // start) may have put ReadinessProbePending back: the state is checked against
            // the API again (a GET; nothing is written when it holds).
            threshold.forget();
        }
        let result = run_once(&ctx, &probe, &container, ip.as_deref(), n).await;
        ctx.metrics.probe(
            if kind == Kind::Readiness {
                "readiness"
            } else {
                "liveness"
            },
            result.is_ok(),
        );
        let flip = threshold.observe(
            result.is_ok(),
            probe.success_threshold,
            probe.failure_threshold,
        );
        if let Some(passing) = flip {
            let Ok(instance) = api.get(&name).await else {
                return;
            };
            let running =
                instance.status.as_ref().and_then(|s| s.phase) == Some(InstancePhase::Running);
            match kind {
                Kind::Readiness if running => {
                    let mut s = status::current(&ctx, &instance);
                    let before = s.clone();
                    let (reason, message) = match &result {
                        Ok(()) => (
                            "ReadinessProbePassed",
                            "the readiness probe passes".to_string(),
                        ),
                        Err(e) => ("ReadinessProbeFailed", e.clone()),
                    };
                    status::set_condition(
                        &mut s,
                        types::READY,
                        passing,
                        reason,
                        &message,
                        instance.metadata.generation,
                    );
                    if let Err(e) = status::write(&ctx, &instance, &s).await {
                        warn!(instance = %name, error = %e, "writing readiness failed");
                        threshold.forget();
                    } else if s != before {
                        info!(instance = %name, ready = passing, "readiness changed");
                    }
                }
                // Not Running yet (its start is still being written, and that write says
                // ReadinessProbePending): the flip is reported at the next probe instead of
                // being lost.
                Kind::Readiness => threshold.forget(),
                Kind::Liveness if !passing => {
                    warn!(instance = %name, error = ?result.err(), "liveness probe failed; killing the process");
                    let _ = ctx.containerd.kill_task(&container, 9).await;
                    return;
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_secs(probe.period_seconds.max(1) as u64)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_flip_flips_again_at_the_next_result() {
        let mut t = Threshold::default();
        assert_eq!(t.observe(true, 1, 3), Some(true));
        assert_eq!(t.observe(true, 1, 3), None);
        t.forget();
        assert_eq!(t.observe(true, 1, 3), Some(true));
    }

    #[test]
    fn thresholds_flip_only_after_consecutive_results() {
        let mut t = Threshold::default();
        assert_eq!(t.observe(false, 1, 3), None);
        assert_eq!(t.observe(false, 1, 3), None);
        assert_eq!(t.observe(false, 1, 3), Some(false));
        assert_eq!(t.observe(false, 1, 3), None, "no repeated flip");
        assert_eq!(t.observe(true, 2, 3), None, "one success of two");
        assert_eq!(t.observe(true, 2, 3), Some(true));
        assert_eq!(t.observe(false, 2, 3), None);
        assert_eq!(
            t.observe(true, 2, 3),
            None,
            "a failure resets the successes"
        );
    }
}
