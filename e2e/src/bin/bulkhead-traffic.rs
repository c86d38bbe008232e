//! `bulkhead-traffic`: the demo's client. It polls a WorkloadService every 20 ms, through its
//! ClusterIP (kube-proxy's datapath) with `--cluster-ip`, else through the endpoints its
//! EndpointSlice lists; prints a progress line every second, and on SIGTERM or SIGINT (or
//! after `--max-seconds`) a summary: requests served and failed, the answers in order, and
//! when each answer was first and last seen.
//!
//! Usage: bulkhead-traffic <namespace> <service> [--cluster-ip] [--max-seconds N]
//! (KUBECONFIG from the env)

use std::time::Duration;

use anyhow::{Context as _, bail};
use bulkhead_e2e::traffic::{MAX_RUN, Poller};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (ns, svc) = match args.as_slice() {
        [ns, svc, ..] => (ns.clone(), svc.clone()),
        _ => {
            bail!("usage: bulkhead-traffic <namespace> <service> [--cluster-ip] [--max-seconds N]")
        }
    };
    let max = match args.iter().position(|a| a == "--max-seconds") {
        Some(i) => Duration::from_secs(
            args.get(i + 1)
                .context("--max-seconds needs a value")?
                .parse()?,
        ),
        None => MAX_RUN,
    }
    .min(MAX_RUN);
    let client = kube::Client::try_default().await?;
    let poller = if args.iter().any(|a| a == "--cluster-ip") {
        Poller::cluster_ip(client, &ns, &svc)
            .await
            .map_err(anyhow::Error::msg)?
    } else {
        Poller::start(client, &ns, &svc)
    };
    let started = tokio::time::Instant::now();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                if started.elapsed() >= max {
                    break;
                }
                let r = poller.snapshot();
                let last = r.samples.last().map(|s| match &s.answer {
                    Ok(a) => format!("{} answered {a}", s.endpoint),
                    Err(e) => format!("FAILED: {e}"),
                });
                println!(
                    "[client] {:>5.1}s  requests {:>5}  failed {:>3}  last: {}",
                    started.elapsed().as_secs_f64(),
                    r.samples.len(),
                    r.failed().len(),
                    last.unwrap_or_else(|| "waiting for endpoints".into())
                );
            }
        }
    }
    let report = poller.stop().await;
    println!(
        "[client] summary: {} requests every {} ms, {} served, {} failed",
        report.samples.len(),
        bulkhead_e2e::traffic::PERIOD.as_millis(),
        report.served(),
        report.failed().len()
    );
    println!(
        "[client] answers in order: {}",
        report.sequence().join(" -> ")
    );
    for answer in report.sequence() {
        let seen: Vec<f64> = report
            .samples
            .iter()
            .filter(|s| s.answer.as_deref() == Ok(answer.as_str()))
            .map(|s| s.at.as_secs_f64())
            .collect();
        if let (Some(first), Some(last)) = (seen.first(), seen.last()) {
            println!(
                "[client] {answer}: {} answers, first at {first:.2}s, last at {last:.2}s",
                seen.len()
            );
        }
    }
    for f in report.failed().iter().take(5) {
        println!(
            "[client] failed at {:.2}s: {:?}",
            f.at.as_secs_f64(),
            f.answer
        );
    }
    Ok(())
}
