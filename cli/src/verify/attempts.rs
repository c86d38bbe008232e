//! The isolation attempts: the escape attempts of e2e/tests/isolation_attempts.rs that make
//! sense as an instance's own first process, run by the probe program (e2e/images/probe.c).
//! The probe exits 0 when the attempt was denied and 1 when it succeeded.

/// One attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Its name, also the suffix of its Instance's name.
    pub name: &'static str,
    /// The probe's arguments.
    pub args: &'static [&'static str],
    /// The wall it tests.
    pub wall: &'static str,
    /// A control: an allowed action that must succeed, so the suite shows it can tell.
    pub control: bool,
}

const fn attempt(name: &'static str, args: &'static [&'static str], wall: &'static str) -> Attempt {
    Attempt {
        name,
        args,
        wall,
        control: false,
    }
}

/// Every attempt, the control last.
pub const ALL: &[Attempt] = &[
    attempt("mount", &["mount"], "capabilities, seccomp"),
    attempt("mount-proc", &["mount-proc"], "capabilities, seccomp"),
    attempt("unshare-user", &["unshare-user"], "seccomp, user namespace"),
    attempt("unshare-mount", &["unshare-mount"], "capabilities, seccomp"),
    attempt(
        "clone-newuser",
        &["clone-newuser"],
        "seccomp, user namespace",
    ),
    attempt("kernel-module", &["kernel-module"], "capabilities, seccomp"),
    attempt("write-proc-sys", &["write-proc-sys"], "read-only /proc/sys"),
    attempt("write-sys", &["write-sys"], "read-only /sys"),
    attempt("read-kcore", &["read-kcore"], "masked /proc paths"),
    attempt("reboot", &["reboot"], "capabilities, seccomp"),
    attempt("mknod", &["mknod"], "capabilities"),
    attempt(
        "sethostname",
        &["sethostname"],
        "capabilities, uts namespace",
    ),
    attempt("raw-socket", &["raw-socket"], "capabilities"),
    attempt(
        "write-rootfs",
        &["write-rootfs"],
        "read-only root filesystem",
    ),
    attempt("keyctl", &["keyctl"], "seccomp"),
    attempt("bpf", &["bpf"], "capabilities, seccomp"),
    attempt("perf-event-open", &["perf-event-open"], "seccomp"),
    attempt("clock-settime", &["clock-settime"], "capabilities, seccomp"),
    attempt("swapon", &["swapon"], "capabilities, seccomp"),
    attempt(
        "open-by-handle",
        &["open-by-handle"],
        "capabilities, seccomp",
    ),
    Attempt {
        name: "control-read",
        args: &["read", "/www/index.html"],
        wall: "none: an allowed read that must succeed",
        control: true,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_dns_labels_and_one_control_comes_last() {
        let mut names: Vec<&str> = ALL.iter().map(|a| a.name).collect();
        assert!(
            names
                .iter()
                .all(|n| n.len() <= 20 && n.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        );
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert_eq!(ALL.iter().filter(|a| a.control).count(), 1);
        assert!(ALL.last().is_some_and(|a| a.control));
    }
}
