//! `logs INSTANCE [-f]`: an instance's stdout and stderr.
//!
//! The node agent writes them to `<state-dir>/logs/<namespace>_<name>_<uid>.log` on the
//! instance's host, and serves them nowhere else: this reads that file, so it works on the
//! host the instance runs on (the local system's included). Reading logs of a remote host is
//! not supported: that would need an authenticated endpoint on the agent, which does not exist.
//! Once the log reached the agent's `--log-max-bytes` it continues in a new file and the old
//! one is `<...>.log.1`: both are printed, the previous first, and `-f` follows the rotation.

use std::{
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use bulkhead_crds::Instance;
use kube::ResourceExt;

use crate::{args::LogsArgs, client::Kube, model};

/// The log file of one instance (by its UID) under an agent's state directory.
pub fn path(state_dir: &Path, inst: &Instance) -> Option<PathBuf> {
    let uid = inst.uid()?;
    let ns = inst.namespace()?;
    Some(
        state_dir
            .join("logs")
            .join(format!("{ns}_{}_{uid}.log", inst.name_any())),
    )
}

/// The error when the file is not on this machine: names the host and what to do.
pub fn not_here(inst: &Instance, file: &Path) -> String {
    let host = inst.spec.host_name.as_deref().unwrap_or("<unscheduled>");
    format!(
        "no log file {} on this machine: instance {} runs on host {host}; run this command on that host, or pass --agent-state-dir with its node agent's --state-dir (logs of remote hosts are not served)",
        file.display(),
        inst.name_any()
    )
}

/// Prints the log, and with `-f` keeps printing what is appended until the instance ends.
pub async fn run(kube: &Kube, args: &LogsArgs) -> anyhow::Result<()> {
    let inst: Instance = kube.get(&args.instance, "instance").await?;
    let file = path(&args.agent_state_dir, &inst)
        .ok_or_else(|| anyhow::anyhow!("instance {} has no uid or namespace", args.instance))?;
    let mut f = std::fs::File::open(&file).map_err(|_| anyhow::anyhow!(not_here(&inst, &file)))?;
    // The agent keeps one previous file once the log reached its cap: it comes first.
    if let Ok(mut prev) = std::fs::File::open(previous(&file)) {
        copy_new(&mut prev, 0)?;
    }
    let mut offset = copy_new(&mut f, 0)?;
    if !args.follow {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        offset = copy_new(&mut f, offset)?;
        // Rotated: what we read is now the previous file; go on with the new one.
        if rotated(&f, &file)
            && let Ok(next) = std::fs::File::open(&file)
        {
            f = next;
            offset = copy_new(&mut f, 0)?;
        }
        let now: Option<Instance> = kube.api::<Instance>().get_opt(&args.instance).await?;
        let ended = now
            .as_ref()
            .is_none_or(|i| i.uid() != inst.uid() || model::is_gone(i));
        if ended {
            copy_new(&mut f, offset)?;
            return Ok(());
        }
    }
}

/// The previous file of a log (`<file>.1`), as the node agent rotates it.
pub fn previous(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// Whether `path` is no longer the file `open` (the agent renamed it away).
fn rotated(open: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (open.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() != b.ino() || a.dev() != b.dev(),
        _ => false,
    }
}

/// Copies what the file holds past `offset` to stdout; returns the new offset.
fn copy_new(f: &mut std::fs::File, offset: u64) -> anyhow::Result<u64> {
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)?;
    out.flush()?;
    Ok(offset + buf.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use bulkhead_crds::InstancePhase;

    #[test]
    fn the_file_is_named_as_the_agent_names_it() {
        let mut inst = fixtures::instance("web-1", "r1", InstancePhase::Running, true);
        assert_eq!(path(Path::new("/s"), &inst), None, "no uid yet");
        inst.metadata.uid = Some("u-1".into());
        assert_eq!(
            path(Path::new("/s"), &inst).unwrap(),
            Path::new("/s/logs/shop_web-1_u-1.log")
        );
        assert_eq!(
            previous(&path(Path::new("/s"), &inst).unwrap()),
            Path::new("/s/logs/shop_web-1_u-1.log.1")
        );
        let msg = not_here(&inst, Path::new("/s/logs/x.log"));
        assert!(msg.contains("runs on host h1"), "{msg}");
    }
}
