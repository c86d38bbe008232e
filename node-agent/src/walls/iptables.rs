//! The thin executor: the standard `iptables` binaries (the same backend as the CNI
//! firewall plugin and kube-proxy use on the host).

use std::{path::Path, process::Stdio};

use tokio::io::AsyncWriteExt;

use super::WallsError;

/// IPv4 or IPv6: the binaries of one family.
#[derive(Debug, Clone, Copy)]
pub enum Family {
    /// `iptables`, `iptables-restore`.
    V4,
    /// `ip6tables`, `ip6tables-restore`.
    V6,
}

impl Family {
    fn tables(self) -> &'static str {
        match self {
            Self::V4 => "iptables",
            Self::V6 => "ip6tables",
        }
    }

    fn restore(self) -> &'static str {
        match self {
            Self::V4 => "iptables-restore",
            Self::V6 => "ip6tables-restore",
        }
    }
}

/// `program` of the node: in the agent's root, or in `root` (--cni-root, the node's root seen
/// from a pod whose image has no iptables).
fn command(root: Option<&Path>, program: &str) -> std::io::Result<tokio::process::Command> {
    crate::network::cni::node_command(root, program)
}

/// Which of `jumps` are not in the kernel (checked at the same time).
pub async fn missing_jumps(
    root: Option<&Path>,
    family: Family,
    jumps: [(&'static str, String); 3],
) -> Vec<(&'static str, String)> {
    let checks = jumps.map(|(chain, rule)| async move {
        let mut args = vec!["-w", "-t", "mangle", "-C", chain];
        args.extend(rule.split_whitespace());
        let present = match command(root, family.tables()) {
            Ok(mut c) => c
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success()),
            Err(_) => false,
        };
        (!present).then_some((chain, rule))
    });
    futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Applies one transaction (all or nothing: `iptables-restore` commits it at once).
pub async fn restore(root: Option<&Path>, family: Family, text: &str) -> Result<(), WallsError> {
    let fail = |message: String| WallsError::Iptables {
        command: family.restore(),
        message,
    };
    let mut child = command(root, family.restore())
        .map_err(|e| fail(e.to_string()))?
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            fail(format!(
                "cannot run {}: {e} (install iptables)",
                family.restore()
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

/// Deletes the bridge's per-instance chains not in `keep` (after a restore nothing jumps
/// to them any more).
pub async fn remove_stale(
    root: Option<&Path>,
    bridge: &str,
    keep: &[String],
) -> Result<(), WallsError> {
    let fail = |e: std::io::Error| WallsError::Iptables {
        command: "iptables -S",
        message: e.to_string(),
    };
    let out = command(root, "iptables")
        .map_err(fail)?
        .args(["-w", "-t", "mangle", "-S"])
        .output()
        .await
        .map_err(fail)?;
    let text = String::from_utf8_lossy(&out.stdout);
    for chain in stale(&text, bridge, keep) {
        for op in ["-F", "-X"] {
            if let Ok(mut c) = command(root, "iptables") {
                let _ = c.args(["-w", "-t", "mangle", op, &chain]).status().await;
            }
        }
    }
    Ok(())
}

/// The per-instance and shared chains of `bridge` in an `iptables -S` listing that are not
/// in `keep`.
fn stale(listing: &str, bridge: &str, keep: &[String]) -> Vec<String> {
    let prefixes = [
        format!("BE-{bridge}-"),
        format!("BI-{bridge}-"),
        format!("BS-{bridge}-"),
    ];
    listing
        .lines()
        .filter_map(|l| l.strip_prefix("-N "))
        .filter(|c| prefixes.iter().any(|p| c.starts_with(p.as_str())))
        .filter(|c| !keep.iter().any(|k| k == c))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_bridges_unkept_instance_chains_are_stale() {
        let listing = "-P PREROUTING ACCEPT\n-N BE-bh1\n-N BE-bh1-aaaa\n-N BI-bh1-bbbb\n\
                       -N BI-bh12-cccc\n-N BI-bh1-dddd\n-N BS-bh1-eeee\n-N BS-bh1-ffff\n\
                       -A BE-bh1 -j DROP\n";
        assert_eq!(
            stale(
                listing,
                "bh1",
                &["BI-bh1-dddd".to_string(), "BS-bh1-ffff".to_string()]
            ),
            ["BE-bh1-aaaa", "BI-bh1-bbbb", "BS-bh1-eeee"]
        );
    }
}
