//! Seccomp user notification: how the agent observes system calls for Record, Complain and
//! counted denials.
//!
//! The filter the agent hands runc marks the system calls it wants to see with
//! `SCMP_ACT_NOTIFY` and names a `listenerPath`: a unix socket the agent listens on, one per
//! container. After loading the filter, runc (1.1, libseccomp ≥ 2.5, kernel ≥ 5.6 for
//! `pidfd_getfd`) connects to it and passes the filter's listener fd with SCM_RIGHTS, once
//! for the init process and once for every exec. A thread per listener fd receives each
//! notification, counts it by system call name and answers:
//!
//! - [`Mode::Record`] and [`Mode::Complain`]: CONTINUE (the kernel runs the call as if
//!   unfiltered);
//! - [`Mode::Enforce`]: the profile's errno (EPERM by default), so a refused call fails as it
//!   would under the kernel's own `SCMP_ACT_ERRNO`, and is counted.
//!
//! runc refuses NOTIFY as the default action and for `write` (it needs `write` to hand the
//! fd over), so the filters list every other known system call name explicitly with NOTIFY
//! and leave `write` to the default action: `write` is never observed.
//!
//! When the agent is gone, the listener fd is closed and the kernel fails every notifying
//! call with ENOSYS: an enforcing filter still refuses, a recording or complaining instance
//! breaks. A restarted agent listens again (new execs and task restarts reconnect) and
//! restarts the task of a recording or complaining instance; a recording's counts are
//! saved next to its socket every few seconds ([`Notifier::save`]) and read back.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::IoSliceMut,
    mem::MaybeUninit,
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use bulkhead_crds::syscalls::SYSCALL_NAMES;
use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscall, LinuxSyscallBuilder,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

/// What the agent answers to a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Observe every call and let it run.
    Record,
    /// Count the calls the profile would refuse and let them run.
    Complain,
    /// Count the calls the profile refuses and fail them with this errno.
    Enforce {
        /// The errno returned (positive, e.g. 1 for EPERM).
        errno: u32,
    },
}

impl Mode {
    /// The container label value naming the mode.
    pub fn label(self) -> String {
        match self {
            Mode::Record => "Record".into(),
            Mode::Complain => "Complain".into(),
            Mode::Enforce { errno } => format!("Enforce/{errno}"),
        }
    }

    /// The mode a container label names.
    pub fn from_label(label: &str) -> Option<Mode> {
        match label {
            "Record" => Some(Mode::Record),
            "Complain" => Some(Mode::Complain),
            other => other
                .strip_prefix("Enforce/")
                .and_then(|e| e.parse().ok())
                .map(|errno| Mode::Enforce { errno }),
        }
    }
}

/// The system calls the runtime itself may make between loading the filter and the
/// `execve` of the container's process, and so needs in every profile: runc 1.1's init
/// (`write` of the fd number, `read` of the parent's answer, opening and writing the exec
/// FIFO, closing descriptors, `execve`) and the Go runtime under it (futexes, signals,
/// scheduling, memory).
pub const RUNTIME_MINIMAL: &[&str] = &[
    "close",
    "epoll_pwait",
    "execve",
    "exit",
    "exit_group",
    "fcntl",
    "futex",
    "getpid",
    "gettid",
    "madvise",
    "mmap",
    "munmap",
    "nanosleep",
    "openat",
    "read",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_yield",
    "sigaltstack",
    "tgkill",
    "write",
];

/// Names runc never lets notify.
const NEVER_NOTIFY: &[&str] = &["write"];

fn notify_rule(names: Vec<String>) -> Option<LinuxSyscall> {
    if names.is_empty() {
        return None;
    }
    LinuxSyscallBuilder::default()
        .names(names)
        .action(LinuxSeccompAction::ScmpActNotify)
        .build()
        .ok()
}

/// Every known name the filter's rules do not mention, except those runc never notifies.
fn unmentioned(syscalls: &[LinuxSyscall]) -> Vec<String> {
    let named: BTreeSet<&str> = syscalls
        .iter()
        .flat_map(|r| r.names().iter().map(String::as_str))
        .collect();
    SYSCALL_NAMES
        .iter()
        .filter(|n| !named.contains(**n) && !NEVER_NOTIFY.contains(n))
        .map(|n| n.to_string())
        .collect()
}

/// The Record filter: every known system call but `write` notifies, anything else runs.
pub fn record_filter(listener: &Path) -> LinuxSeccomp {
    let mut b = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .listener_path(listener.to_path_buf());
    if let Some(rule) = notify_rule(unmentioned(&[])) {
        b = b.syscalls(vec![rule]);
    }
    // Only literal, valid values are set above.
    b.build().unwrap_or_default()
}

/// A profile's filter in Complain mode: what it would refuse (its default action and every
/// rule that does not allow or log) notifies instead, and runs once counted. Rules with
/// argument conditions keep them, so only the refused argument combinations are counted;
/// a call whose conditional rule does not match falls to the default, which now allows it
/// uncounted. `write` can only be allowed.
pub fn complain(filter: &LinuxSeccomp, listener: &Path) -> LinuxSeccomp {
    let refuses = |a: LinuxSeccompAction| {
        !matches!(
            a,
            LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
        )
    };
    let mut rules: Vec<LinuxSyscall> = Vec::new();
    let original = filter.syscalls().clone().unwrap_or_default();
    for rule in &original {
        if !refuses(rule.action()) {
            rules.push(rule.clone());
            continue;
        }
        let (never, notify): (Vec<String>, Vec<String>) = rule
            .names()
            .iter()
            .cloned()
            .partition(|n| NEVER_NOTIFY.contains(&n.as_str()));
        if !notify.is_empty() {
            let mut r = rule.clone();
            r.set_names(notify);
            r.set_action(LinuxSeccompAction::ScmpActNotify);
            r.set_errno_ret(None);
            rules.push(r);
        }
        if !never.is_empty() {
            let mut r = rule.clone();
            r.set_names(never);
            r.set_action(LinuxSeccompAction::ScmpActAllow);
            r.set_errno_ret(None);
            rules.push(r);
        }
    }
    if refuses(filter.default_action())
        && let Some(rule) = notify_rule(unmentioned(&original))
    {
        rules.push(rule);
    }
    let mut out = filter.clone();
    out.set_default_action(LinuxSeccompAction::ScmpActAllow);
    out.set_default_errno_ret(None);
    out.set_syscalls(Some(rules));
    out.set_listener_path(Some(listener.to_path_buf()));
    out
}

/// A profile's filter with its default refusal counted: when the default action is
/// `SCMP_ACT_ERRNO`, every known system call no rule names notifies, and the agent answers
/// with the same errno. Other filters are returned unchanged, with no listener.
pub fn count_denials(filter: &LinuxSeccomp, listener: &Path) -> (LinuxSeccomp, Option<Mode>) {
    if filter.default_action() != LinuxSeccompAction::ScmpActErrno {
        return (filter.clone(), None);
    }
    let mut rules = filter.syscalls().clone().unwrap_or_default();
    let Some(rule) = notify_rule(unmentioned(&rules)) else {
        return (filter.clone(), None);
    };
    rules.push(rule);
    let errno = filter.default_errno_ret().unwrap_or(1);
    let mut out = filter.clone();
    out.set_syscalls(Some(rules));
    out.set_listener_path(Some(listener.to_path_buf()));
    (out, Some(Mode::Enforce { errno }))
}

/// A system call seen for the first time by a session, for an Event.
#[derive(Debug, Clone)]
pub struct FirstSeen {
    /// The container.
    pub container: String,
    /// The system call name.
    pub syscall: String,
    /// The session's mode.
    pub mode: Mode,
}

/// Prometheus text for every session: calls by instance and system call, one family per
/// mode (denials of an enforced profile, complaints, recorded calls).
pub fn render_metrics(notifier: &Notifier) -> String {
    use std::fmt::Write;
    let sessions = notifier.sessions();
    let mut o = String::new();
    for (family, help, want) in [
        (
            "bulkhead_agent_seccomp_denials_total",
            "System calls an enforced SeccompProfile refused, by instance and system call.",
            "Enforce",
        ),
        (
            "bulkhead_agent_seccomp_complaints_total",
            "System calls a Complain-mode profile would have refused (they ran), by instance and system call.",
            "Complain",
        ),
        (
            "bulkhead_agent_seccomp_recorded_total",
            "System calls observed by Record mode, by instance and system call.",
            "Record",
        ),
    ] {
        let _ = writeln!(o, "# HELP {family} {help}\n# TYPE {family} counter");
        for (_, s) in &sessions {
            if !s.mode.label().starts_with(want) {
                continue;
            }
            for (syscall, n) in s.counts() {
                let _ = writeln!(
                    o,
                    "{family}{{instance=\"{}\",syscall=\"{syscall}\"}} {n}",
                    s.instance
                );
            }
        }
    }
    o
}

/// What one container's listener has seen.
#[derive(Debug)]
pub struct Session {
    /// The answer policy.
    pub mode: Mode,
    /// `namespace/name` of the Instance, for metrics.
    pub instance: String,
    counts: Mutex<BTreeMap<String, u64>>,
    closed: AtomicBool,
    accept: Mutex<Option<tokio::task::AbortHandle>>,
    /// The last `bulkhead.dev/record` annotation value a recorded profile was written for.
    pub written_for: Mutex<Option<String>>,
}

impl Session {
    /// Calls seen so far, by system call name.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Counts one call; true when it is the first of its name.
    fn observe(&self, name: &str) -> bool {
        let Ok(mut c) = self.counts.lock() else {
            return false;
        };
        let n = c.entry(name.to_string()).or_insert(0);
        *n += 1;
        *n == 1
    }
}

/// The listeners of this agent, by container ID.
#[derive(Debug)]
pub struct Notifier {
    dir: PathBuf,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    first_seen: mpsc::UnboundedSender<FirstSeen>,
}

impl Notifier {
    /// Listeners live in `dir` (created when needed); first sightings go to `first_seen`.
    pub fn new(dir: PathBuf, first_seen: mpsc::UnboundedSender<FirstSeen>) -> Self {
        Self {
            dir,
            sessions: Mutex::new(HashMap::new()),
            first_seen,
        }
    }

    /// The socket runc hands a container's listener fds to: a short name (16 hex digits of
    /// the container ID's sha256) because a unix socket path has at most 107 bytes.
    pub fn socket_path(&self, container: &str) -> PathBuf {
        use sha2::{Digest, Sha256};
        let short = hex::encode(Sha256::digest(container.as_bytes()));
        self.dir.join(format!("{}.sock", &short[..16]))
    }

    /// The session of a container, if it is listened to.
    pub fn session(&self, container: &str) -> Option<Arc<Session>> {
        self.sessions.lock().ok()?.get(container).cloned()
    }

    /// Every session, by container ID.
    pub fn sessions(&self) -> Vec<(String, Arc<Session>)> {
        self.sessions
            .lock()
            .map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    fn counts_path(&self, container: &str) -> PathBuf {
        self.socket_path(container).with_extension("counts.json")
    }

    /// Saves the counts of every recording, so that a restarted agent goes on from them.
    pub fn save(&self) {
        for (id, s) in self.sessions() {
            if s.mode != Mode::Record {
                continue;
            }
            let path = self.counts_path(&id);
            let tmp = path.with_extension("tmp");
            let written = serde_json::to_vec(&s.counts())
                .map_err(std::io::Error::other)
                .and_then(|json| std::fs::write(&tmp, json))
                .and_then(|()| std::fs::rename(&tmp, &path));
            if let Err(e) = written {
                warn!(container = %id, error = %e, "saving the recorded counts failed");
            }
        }
    }

    /// Listens for a container's listener fds (again, after an agent restart). Idempotent:
    /// an existing session is returned as it is, with `false`; a new one with `true`. A new
    /// recording starts from the counts a previous agent saved.
    pub fn listen(
        &self,
        container: &str,
        instance: &str,
        mode: Mode,
    ) -> std::io::Result<(Arc<Session>, bool)> {
        if let Some(s) = self.session(container) {
            return Ok((s, false));
        }
        let saved: BTreeMap<String, u64> = match mode {
            Mode::Record => std::fs::read(self.counts_path(container))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
            _ => BTreeMap::new(),
        };
        std::fs::create_dir_all(&self.dir)?;
        let path = self.socket_path(container);
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)?;
        let session = Arc::new(Session {
            mode,
            instance: instance.to_string(),
            counts: Mutex::new(saved),
            closed: AtomicBool::new(false),
            accept: Mutex::new(None),
            written_for: Mutex::new(None),
        });
        let s = session.clone();
        let first_seen = self.first_seen.clone();
        let id = container.to_string();
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(container = %id, error = %e, "seccomp listener accept failed");
                        continue;
                    }
                };
                let (s, first_seen, id) = (s.clone(), first_seen.clone(), id.clone());
                let spawned = stream.into_std().and_then(|std_stream| {
                    std_stream.set_nonblocking(false)?;
                    std::thread::Builder::new()
                        .name(format!("seccomp-{}", &id[..id.len().min(10)]))
                        .spawn(move || serve(std_stream, &s, &first_seen, &id))
                });
                if let Err(e) = spawned {
                    warn!(error = %e, "cannot serve a seccomp listener connection");
                }
            }
        });
        if let Ok(mut a) = session.accept.lock() {
            *a = Some(task.abort_handle());
        }
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(container.to_string(), session.clone());
        }
        Ok((session, true))
    }

    /// Stops listening for a container and returns what its session saw. Threads serving
    /// fds end within a second.
    pub fn close(&self, container: &str) -> Option<Arc<Session>> {
        let session = self.sessions.lock().ok()?.remove(container)?;
        session.closed.store(true, Ordering::Relaxed);
        if let Ok(Some(a)) = session.accept.lock().map(|mut a| a.take()) {
            a.abort();
        }
        let _ = std::fs::remove_file(self.socket_path(container));
        let _ = std::fs::remove_file(self.counts_path(container));
        Some(session)
    }
}

/// Receives the listener fd runc sends on one connection and answers its notifications
/// until the filter has no more processes or the session is closed.
fn serve(
    stream: std::os::unix::net::UnixStream,
    session: &Session,
    first_seen: &mpsc::UnboundedSender<FirstSeen>,
    container: &str,
) {
    let fd = match receive_fd(&stream) {
        Ok(Some(fd)) => fd,
        Ok(None) => {
            warn!(container, "seccomp listener connection carried no fd");
            return;
        }
        Err(e) => {
            warn!(container, error = %e, "receiving a seccomp listener fd failed");
            return;
        }
    };
    drop(stream);
    debug!(container, "serving a seccomp listener fd");
    let timeout = rustix::event::Timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    while !session.closed.load(Ordering::Relaxed) {
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                warn!(container, error = %e, "polling a seccomp listener failed");
                break;
            }
        }
        let revents = fds[0].revents();
        if !revents.contains(rustix::event::PollFlags::IN) {
            // HUP: every process under this filter is gone.
            break;
        }
        // The caller may have died in between (ENOENT): nothing to answer.
        let Ok(req) = ScmpNotifReq::receive(fd.as_raw_fd()) else {
            continue;
        };
        let name = req
            .data
            .syscall
            .get_name_by_arch(req.data.arch)
            .unwrap_or_else(|_| format!("nr{}", i32::from(req.data.syscall)));
        if session.observe(&name) {
            let _ = first_seen.send(FirstSeen {
                container: container.to_string(),
                syscall: name.clone(),
                mode: session.mode,
            });
        }
        let resp = match session.mode {
            Mode::Record | Mode::Complain => {
                ScmpNotifResp::new_continue(req.id, ScmpNotifRespFlags::empty())
            }
            Mode::Enforce { errno } => ScmpNotifResp::new_error(
                req.id,
                -(errno.clamp(1, 4095) as i32),
                ScmpNotifRespFlags::empty(),
            ),
        };
        // A caller killed meanwhile makes the answer fail; that is fine.
        let _ = resp.respond(fd.as_raw_fd());
    }
    info!(container, "seccomp listener fd done");
}

/// Reads runc's message (the container state, unused) and the fd passed with it.
fn receive_fd(stream: &std::os::unix::net::UnixStream) -> std::io::Result<Option<OwnedFd>> {
    let mut data = vec![0u8; 64 * 1024];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(&mut data)];
    rustix::net::recvmsg(
        stream,
        &mut iov,
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut received = None;
    for msg in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(fds) = msg {
            for fd in fds {
                if received.is_none() {
                    received = Some(fd);
                }
            }
        }
    }
    Ok(received)
}

/// The profile written from a recording: the observed calls and [`RUNTIME_MINIMAL`] allowed,
/// EPERM for everything else.
pub fn recorded_profile(
    counts: &BTreeMap<String, u64>,
) -> bulkhead_crds::seccomp::SeccompProfileSpec {
    let names: BTreeSet<String> = counts
        .keys()
        .filter(|n| SYSCALL_NAMES.contains(&n.as_str()))
        .cloned()
        .chain(RUNTIME_MINIMAL.iter().map(|s| s.to_string()))
        .collect();
    bulkhead_crds::seccomp::SeccompProfileSpec::allowlist(names, "recorded by bulkhead-node-agent")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(f: &LinuxSeccomp, action: LinuxSeccompAction) -> BTreeSet<String> {
        f.syscalls()
            .clone()
            .unwrap_or_default()
            .iter()
            .filter(|r| r.action() == action)
            .flat_map(|r| r.names().clone())
            .collect()
    }

    fn allow(list: &[&str], default: LinuxSeccompAction) -> LinuxSeccomp {
        LinuxSeccompBuilder::default()
            .default_action(default)
            .syscalls(vec![
                LinuxSyscallBuilder::default()
                    .names(list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .action(LinuxSeccompAction::ScmpActAllow)
                    .build()
                    .unwrap(),
                LinuxSyscallBuilder::default()
                    .names(vec!["mount".to_string(), "write".to_string()])
                    .action(LinuxSeccompAction::ScmpActErrno)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap()
    }

    #[test]
    fn record_notifies_everything_runc_allows_and_defaults_to_allow() {
        let f = record_filter(Path::new("/run/x.sock"));
        assert_eq!(f.default_action(), LinuxSeccompAction::ScmpActAllow);
        let n = names(&f, LinuxSeccompAction::ScmpActNotify);
        assert!(n.contains("openat") && n.contains("mkdir") && n.contains("execve"));
        assert!(!n.contains("write"), "runc refuses NOTIFY on write");
        assert_eq!(n.len(), SYSCALL_NAMES.len() - 1);
        assert_eq!(f.listener_path().as_deref(), Some(Path::new("/run/x.sock")));
    }

    #[test]
    fn complain_turns_refusals_into_notifications_and_allows_by_default() {
        let f = complain(
            &allow(&["read", "openat"], LinuxSeccompAction::ScmpActErrno),
            Path::new("/s"),
        );
        assert_eq!(f.default_action(), LinuxSeccompAction::ScmpActAllow);
        let notify = names(&f, LinuxSeccompAction::ScmpActNotify);
        let allowed = names(&f, LinuxSeccompAction::ScmpActAllow);
        assert!(allowed.contains("read") && allowed.contains("openat"));
        assert!(notify.contains("mount"), "an explicit refusal is counted");
        assert!(notify.contains("mkdir"), "the default refusal is counted");
        assert!(!notify.contains("read") && !notify.contains("write"));
        assert!(allowed.contains("write"), "write can only be allowed");
        assert!(f.listener_path().is_some());
    }

    #[test]
    fn count_denials_only_for_an_errno_default() {
        let (f, mode) = count_denials(
            &allow(&["read"], LinuxSeccompAction::ScmpActErrno),
            Path::new("/s"),
        );
        assert_eq!(mode, Some(Mode::Enforce { errno: 1 }));
        assert_eq!(f.default_action(), LinuxSeccompAction::ScmpActErrno);
        let notify = names(&f, LinuxSeccompAction::ScmpActNotify);
        assert!(notify.contains("mkdir"));
        assert!(!notify.contains("read") && !notify.contains("mount") && !notify.contains("write"));
        let (g, mode) = count_denials(
            &allow(&["read"], LinuxSeccompAction::ScmpActKillProcess),
            Path::new("/s"),
        );
        assert_eq!(mode, None);
        assert!(g.listener_path().is_none());
    }

    #[test]
    fn recorded_profile_is_observed_plus_runtime_minimal() {
        let counts = BTreeMap::from([
            ("accept4".to_string(), 10),
            ("read".to_string(), 3),
            ("nr9999".to_string(), 1),
        ]);
        let p = recorded_profile(&counts);
        let names = &p.syscalls[0].names;
        assert!(names.contains(&"accept4".to_string()));
        assert!(!names.iter().any(|n| n == "nr9999"));
        let expected: BTreeSet<&str> = RUNTIME_MINIMAL
            .iter()
            .copied()
            .chain(["accept4", "read"])
            .collect();
        assert_eq!(names.len(), expected.len());
        assert_eq!(
            p.default_action,
            bulkhead_crds::seccomp::SeccompAction::SCMP_ACT_ERRNO
        );
    }

    #[test]
    fn mode_labels_round_trip() {
        for m in [Mode::Record, Mode::Complain, Mode::Enforce { errno: 1 }] {
            assert_eq!(Mode::from_label(&m.label()), Some(m));
        }
        assert_eq!(Mode::from_label("x"), None);
    }
}
