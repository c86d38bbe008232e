//! The command lines of the local system's processes (`/proc/<pid>/cmdline`), read so that a
//! baseline uses exactly the flags the measured component runs with.

use anyhow::Context;

/// The arguments of `pid`, its program first.
pub fn read(pid: u32) -> anyhow::Result<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))
        .with_context(|| format!("reading /proc/{pid}/cmdline"))?;
    Ok(split_nul(&raw))
}

/// One environment variable of `pid` (`/proc/<pid>/environ`), if set.
pub fn env(pid: u32, name: &str) -> anyhow::Result<Option<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))
        .with_context(|| format!("reading /proc/{pid}/environ"))?;
    let prefix = format!("{name}=");
    Ok(split_nul(&raw)
        .into_iter()
        .find_map(|kv| kv.strip_prefix(&prefix).map(String::from)))
}

fn split_nul(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The value of `flag` (`--flag value` or `--flag=value`; the last one wins, as clap and
/// pflag take it).
pub fn value(args: &[String], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == flag {
            found = it.next().cloned();
        } else if let Some(v) = a.strip_prefix(&eq) {
            found = Some(v.to_string());
        }
    }
    found
}

/// `args` with every `flag` removed and `--flag=value` appended (only for flags written
/// `--flag=value`, as up.sh writes kube-controller-manager's).
pub fn with(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let eq = format!("{flag}=");
    let mut out: Vec<String> = args
        .iter()
        .filter(|a| *a != flag && !a.starts_with(&eq))
        .cloned()
        .collect();
    out.push(format!("{flag}={value}"));
    out
}

/// Owned arguments from string slices (for building and testing command lines).
pub fn owned(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use owned as args;

    #[test]
    fn a_flag_is_read_in_either_form_and_the_last_wins() {
        let a = args(&["bin", "--cni-bridge", "bulkhead4", "--x=1", "--x=2", "--y"]);
        assert_eq!(value(&a, "--cni-bridge").as_deref(), Some("bulkhead4"));
        assert_eq!(value(&a, "--x").as_deref(), Some("2"));
        assert_eq!(value(&a, "--y"), None, "a flag without its value");
        assert_eq!(value(&a, "--cni"), None, "a prefix is not the flag");
    }

    #[test]
    fn with_replaces_a_flag_and_keeps_the_rest_in_order() {
        let a = args(&["kcm", "--secure-port=14257", "--v=1"]);
        assert_eq!(
            with(&a, "--secure-port", "14258"),
            args(&["kcm", "--v=1", "--secure-port=14258"])
        );
        assert_eq!(
            with(&a, "--kube-api-qps", "500"),
            args(&["kcm", "--secure-port=14257", "--v=1", "--kube-api-qps=500"])
        );
    }

    #[test]
    fn the_command_line_splits_at_nul_bytes() {
        assert_eq!(split_nul(b"a\0--b=c\0\0"), args(&["a", "--b=c"]));
        let own = read(std::process::id()).unwrap_or_default();
        assert!(!own.is_empty(), "this test's own command line");
    }
}
