//! Instance logs: `<state-dir>/logs/<namespace>_<name>_<uid>.log` and, once it reached the
//! cap, the previous file `<...>.log.1`.
//!
//! containerd's shim does not write the log itself: the task's stdout and stderr go to a
//! logging binary (containerd's `binary://` log URI), which is this agent's own binary run as
//! `log-writer`. It is a child of the shim, so it outlives agent restarts like the instance
//! does, and it holds the cap whatever the instance writes: before a write would take the
//! file past `max-bytes` the file is renamed to `.log.1` (replacing the previous one) and a
//! new one is started. An instance's logs are at most twice the cap, and are removed with
//! the Instance ([`remove`]).
//!
//! `bulkhead-node-agent logs <namespace>/<name>` prints the previous file, then the current.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

/// The subcommand name containerd runs the binary with (a query key of the log URI).
pub const WRITER_ARG: &str = "bulkhead-log-writer";
/// Default cap of one log file: 10 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// The previous (rotated) file of a log.
pub fn previous(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// Where and how the shim sends an instance's stdout and stderr.
#[derive(Debug, Clone)]
pub struct LogWriter {
    /// The binary containerd's shim runs (this agent's, under the state directory).
    pub binary: PathBuf,
    /// The cap of one file.
    pub max_bytes: u64,
}

impl LogWriter {
    /// The `binary://` URI for an instance whose log is `path`. containerd passes each query
    /// pair as two arguments, in no particular order ([`WriterArgs::parse`] takes any).
    pub fn uri(&self, path: &Path) -> String {
        format!(
            "binary://{}?{WRITER_ARG}=1&path={}&max-bytes={}",
            escape(&self.binary.display().to_string()),
            escape(&path.display().to_string()),
            self.max_bytes
        )
    }
}

/// Puts a copy of the running binary at `<state-dir>/bin/bulkhead-node-agent` for the shims
/// to run as the log writer: the state directory is the same path on the host and in the
/// agent's container (the chart mounts it so), the agent's own binary path may not be. A
/// hard link when the file system allows, else a copy; replaced by rename, so a writer that
/// runs the old one keeps running.
pub fn install_writer(state_dir: &Path) -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = state_dir.join("bin");
    std::fs::create_dir_all(&dir)?;
    let target = dir.join("bulkhead-node-agent");
    let tmp = dir.join(".bulkhead-node-agent.tmp");
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(&exe, &tmp).is_err() {
        std::fs::copy(&exe, &tmp)?;
    }
    std::fs::rename(&tmp, &target)?;
    Ok(target)
}

/// Percent-encodes what would end or split a URI's path or query value.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Removes an instance's log files (current and previous); missing files are fine.
pub fn remove(path: &Path) -> std::io::Result<()> {
    for p in [path.to_path_buf(), previous(path)] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// The arguments of the log writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterArgs {
    /// The log file.
    pub path: PathBuf,
    /// The cap of one file.
    pub max_bytes: u64,
}

impl WriterArgs {
    /// Parses the arguments containerd passes (query pairs, any order); None when this is
    /// not a log writer's command line.
    pub fn parse(args: &[String]) -> Option<Result<Self, String>> {
        if !args.iter().any(|a| a == WRITER_ARG) {
            return None;
        }
        let value = |key: &str| {
            args.iter()
                .position(|a| a == key)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let Some(path) = value("path").filter(|p| p.starts_with('/')) else {
            return Some(Err("log writer: give an absolute path".into()));
        };
        let max_bytes = match value("max-bytes").map(|m| m.parse::<u64>()) {
            Some(Ok(m)) if m >= 1024 => m,
            _ => return Some(Err("log writer: give max-bytes of at least 1024".into())),
        };
        Some(Ok(Self {
            path: PathBuf::from(path),
            max_bytes,
        }))
    }
}

/// A log file that is renamed to `.1` before it would pass the cap.
#[derive(Debug)]
pub struct Rotating {
    path: PathBuf,
    max_bytes: u64,
    file: File,
    size: u64,
}

impl Rotating {
    /// Opens (appends to) the log.
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes,
            file,
            size,
        })
    }

    /// Writes `data`, rotating first when it would not fit; a single write larger than the
    /// cap keeps only its end.
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let cap = usize::try_from(self.max_bytes).unwrap_or(usize::MAX);
        let data = &data[data.len().saturating_sub(cap)..];
        if self.size + data.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }
}

impl Rotating {
    /// Makes the current file the previous one and starts a new one, with the log's name
    /// never missing in between (a reader always finds it): the current file is linked to
    /// the previous name, and the new file renamed over the current one.
    fn rotate(&mut self) -> std::io::Result<()> {
        let prev = previous(&self.path);
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        std::fs::hard_link(&self.path, &tmp)?;
        std::fs::rename(&tmp, &prev)?;
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)?;
        std::fs::rename(&tmp, &self.path)?;
        self.file = file;
        self.size = 0;
        Ok(())
    }
}

/// Runs as containerd's logging binary: copies fd 3 (stdout) and fd 4 (stderr) into the
/// rotating log until both end, after closing fd 5 to tell the shim it is ready.
pub fn run_writer(args: &WriterArgs) -> std::io::Result<()> {
    let log = Arc::new(Mutex::new(Rotating::open(&args.path, args.max_bytes)?));
    let inputs = [
        File::open("/proc/self/fd/3")?,
        File::open("/proc/self/fd/4")?,
    ];
    // Our copies of the pipes are open: the inherited descriptors can go, and closing fd 5
    // is the ready signal. SIGTERM from the shim ends the copy only when the pipes end.
    for fd in [3, 4, 5] {
        let _ = nix::unistd::close(fd);
    }
    let _ = ignore_sigterm();
    let threads: Vec<_> = inputs
        .into_iter()
        .map(|mut input| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match input.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            if let Ok(mut l) = log.lock() {
                                // A full disk loses output; the instance never blocks on it.
                                let _ = l.write(&buf[..n]);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Blocks SIGTERM (before the copy threads start, so they inherit the mask): it stays
/// pending and the writer ends when its pipes do.
fn ignore_sigterm() -> nix::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.thread_block()
}

/// The log files of the newest instance named `<namespace>/<name>` under `state_dir`:
/// previous (if any) then current.
pub fn files(state_dir: &Path, namespace: &str, name: &str) -> Result<Vec<PathBuf>, String> {
    let dir = state_dir.join("logs");
    let prefix = format!("{namespace}_{name}_");
    let newest = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(&prefix) && n.ends_with(".log")
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .ok_or_else(|| {
            format!(
                "no log for instance {namespace}/{name} in {} (is --state-dir right?)",
                dir.display()
            )
        })?
        .path();
    let prev = previous(&newest);
    Ok([prev, newest].into_iter().filter(|p| p.exists()).collect())
}

/// Prints the instance's log: the previous file, then the current one.
pub fn print(state_dir: &Path, instance: &str) -> anyhow::Result<()> {
    let (namespace, name) = instance
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("give the instance as <namespace>/<name>"))?;
    let mut out = std::io::stdout().lock();
    for f in files(state_dir, namespace, name).map_err(anyhow::Error::msg)? {
        // The writer may rotate between listing and reading: a vanished file is skipped.
        if let Ok(text) = std::fs::read(&f) {
            out.write_all(&text)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_pairs_in_any_order() {
        let want = WriterArgs {
            path: "/s/logs/a_b_c.log".into(),
            max_bytes: 4096,
        };
        for a in [
            args(&[
                "max-bytes",
                "4096",
                WRITER_ARG,
                "1",
                "path",
                "/s/logs/a_b_c.log",
            ]),
            args(&[
                "path",
                "/s/logs/a_b_c.log",
                "max-bytes",
                "4096",
                WRITER_ARG,
                "1",
            ]),
        ] {
            assert_eq!(WriterArgs::parse(&a), Some(Ok(want.clone())));
        }
        assert_eq!(WriterArgs::parse(&args(&["logs", "a/b"])), None);
        assert!(matches!(
            WriterArgs::parse(&args(&[
                WRITER_ARG,
                "1",
                "path",
                "rel",
                "max-bytes",
                "4096"
            ])),
            Some(Err(_))
        ));
        assert!(matches!(
            WriterArgs::parse(&args(&[WRITER_ARG, "1", "path", "/a", "max-bytes", "0"])),
            Some(Err(_))
        ));
    }

    #[test]
    fn uri_escapes_what_would_split_it() {
        let w = LogWriter {
            binary: "/var/lib/bulkhead/bin/bulkhead-node-agent".into(),
            max_bytes: 2048,
        };
        assert_eq!(
            w.uri(Path::new("/x y/a&b=c.log")),
            "binary:///var/lib/bulkhead/bin/bulkhead-node-agent?bulkhead-log-writer=1&path=/x%20y/a%26b%3Dc.log&max-bytes=2048"
        );
    }

    #[test]
    fn rotation_holds_the_cap_and_keeps_one_previous_file() {
        let state = tempfile::tempdir().unwrap();
        let dir = state.path().join("logs");
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("ns_a_u.log");
        let mut log = Rotating::open(&path, 1000).unwrap();
        for i in 0..100u8 {
            log.write(&[b'a' + i % 26; 64]).unwrap();
        }
        log.write(&[b'z'; 5000]).unwrap();
        log.write(b"end\n").unwrap();
        let cur = std::fs::metadata(&path).unwrap().len();
        let prev = std::fs::metadata(previous(&path)).unwrap().len();
        assert!(cur <= 1000 && prev <= 1000, "{cur} {prev}");
        assert_eq!(std::fs::read(&path).unwrap(), b"end\n");
        assert_eq!(std::fs::read(previous(&path)).unwrap(), vec![b'z'; 1000]);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
        assert_eq!(
            files(state.path(), "ns", "a").unwrap(),
            vec![previous(&path), path.clone()]
        );
        remove(&path).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert!(files(state.path(), "ns", "a").is_err());
    }
}
