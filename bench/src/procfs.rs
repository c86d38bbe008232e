//! CPU time and memory of a process, read from `/proc/<pid>`, and a sampler that records
//! them over a window.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// Kernel clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// User plus system CPU seconds of `pid` so far (fields 14 and 15 of `/proc/<pid>/stat`).
pub fn cpu_seconds(pid: u32, ticks: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|t| t as f64 / ticks)
        .with_context(|| format!("parsing /proc/{pid}/stat"))
}

/// utime + stime from the text of `/proc/<pid>/stat`. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 → index 11, stime 15 → index 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident memory of `pid` now and its peak (VmRSS, VmHWM), in bytes.
pub fn rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    match (field_kib(&status, "VmRSS:"), field_kib(&status, "VmHWM:")) {
        (Some(now), Some(peak)) => Ok((now * 1024, peak * 1024)),
        _ => bail!("/proc/{pid}/status has no VmRSS/VmHWM"),
    }
}

fn field_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resets the peak RSS (VmHWM) of `pid` to its current RSS (`clear_refs` value 5), so a
/// later peak belongs to what happened after this call.
pub fn reset_peak(pid: u32) -> anyhow::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting the peak RSS of {pid}"))
}

/// The PID recorded by `up.sh` for a component, checked to still run `exe`.
pub fn component_pid(state_dir: &Path, component: &str, exe: &str) -> anyhow::Result<u32> {
    let file = state_dir.join("pids").join(format!("{component}.pid"));
    let pid: u32 = std::fs::read_to_string(&file)
        .with_context(|| format!("reading {}", file.display()))?
        .trim()
        .parse()
        .with_context(|| format!("{} holds no PID", file.display()))?;
    let path = exe_path(pid)?;
    if !path.ends_with(exe) {
        bail!("PID {pid} from {} runs {path}, not {exe}", file.display());
    }
    Ok(pid)
}

/// The executable `pid` runs (target of `/proc/<pid>/exe`).
pub fn exe_path(pid: u32) -> anyhow::Result<String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .with_context(|| format!("reading /proc/{pid}/exe"))?;
    Ok(exe
        .to_string_lossy()
        .trim_end_matches(" (deleted)")
        .to_string())
}

/// One sample of a process.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the window began.
    pub t: f64,
    /// CPU seconds used since the window began.
    pub cpu_s: f64,
    /// Resident memory, bytes.
    pub rss: u64,
}

/// CPU and memory of a process over a window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Wall seconds of the window.
    pub wall_s: f64,
    /// CPU seconds (user + system) used in the window.
    pub cpu_s: f64,
    /// Peak resident memory in the window (VmHWM after a reset at its start), bytes.
    pub peak_rss: u64,
    /// Mean of the RSS samples, bytes.
    pub mean_rss: u64,
    /// The samples.
    pub samples: Vec<Sample>,
}

impl Usage {
    /// CPU use as a percentage of one core.
    pub fn cpu_percent(&self) -> f64 {
        if self.wall_s > 0.0 {
            100.0 * self.cpu_s / self.wall_s
        } else {
            0.0
        }
    }
}

/// Samples a process every `every` until stopped; [`Sampler::finish`] returns the window.
#[derive(Debug)]
pub struct Sampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<Usage>>,
}

impl Sampler {
    /// Starts sampling `pid` (its peak RSS is reset first).
    pub fn start(pid: u32, every: Duration) -> anyhow::Result<Self> {
        let ticks = clock_ticks();
        reset_peak(pid)?;
        let cpu0 = cpu_seconds(pid, ticks)?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            let mut usage = Usage::default();
            loop {
                let (now, _) = rss(pid)?;
                usage.samples.push(Sample {
                    t: t0.elapsed().as_secs_f64(),
                    cpu_s: cpu_seconds(pid, ticks)? - cpu0,
                    rss: now,
                });
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => break,
                }
            }
            usage.wall_s = t0.elapsed().as_secs_f64();
            usage.cpu_s = cpu_seconds(pid, ticks)? - cpu0;
            usage.peak_rss = rss(pid)?.1;
            let n = usage.samples.len().max(1) as u64;
            usage.mean_rss = usage.samples.iter().map(|s| s.rss).sum::<u64>() / n;
            Ok(usage)
        });
        Ok(Self { stop, task })
    }

    /// Stops sampling and returns the window.
    pub async fn finish(self) -> anyhow::Result<Usage> {
        let _ = self.stop.send(true);
        self.task.await.context("the sampler task")?
    }
}

/// Samples `pid` for `window` and returns the window.
pub async fn sample_for(pid: u32, window: Duration) -> anyhow::Result<Usage> {
    let s = Sampler::start(pid, Duration::from_millis(500))?;
    tokio::time::sleep(window).await;
    s.finish().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis must not shift the fields.
        let stat =
            "1234 (tokio (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 5 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("1 (short) S 1"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        let (now, peak) = rss(pid).unwrap();
        assert!(now > 0 && peak >= now);
        assert!(cpu_seconds(pid, clock_ticks()).unwrap() >= 0.0);
    }
}
