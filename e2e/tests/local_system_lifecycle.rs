//! `make up` is idempotent and `make down` leaves nothing behind.
//!
//! Runs a second, independent local system (its own state directory and ports, no test
//! images) beside the one the other tests use, so that stopping it disturbs nothing.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

use bulkhead_e2e::repo_root;

/// Ports of the second system: 2000 above those of the system the other tests use.
fn offset() -> u16 {
    2000 + std::env::var("BULKHEAD_PORT_OFFSET")
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
        .unwrap_or(0)
}
const PORTS: [u16; 7] = [12379, 12380, 16443, 10257, 5000, 9464, 9465];

fn script(name: &str, state: &Path) {
    let status = Command::new("bash")
        .arg(repo_root().join("e2e/hack").join(name))
        .env("BULKHEAD_STATE_DIR", state)
        .env("BULKHEAD_PORT_OFFSET", offset().to_string())
        .env("BULKHEAD_SKIP_IMAGES", "1")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{name} failed; logs in {}/logs",
        state.display()
    );
}

/// component → PID, from the pid files.
fn pids(state: &Path) -> BTreeMap<String, u32> {
    std::fs::read_dir(state.join("pids"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (
                name,
                std::fs::read_to_string(&p).unwrap().trim().parse().unwrap(),
            )
        })
        .collect()
}

/// Alive and not a zombie (this sandbox's init reaps late).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Processes whose command line mentions the state directory.
fn processes_of(state: &Path) -> Vec<u32> {
    let needle = state.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .filter(|pid| alive(*pid))
        .collect()
}

fn mounts_under(state: &Path) -> Vec<String> {
    let prefix = state.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(String::from))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[test]
fn up_twice_reuses_and_down_leaves_no_process_mount_or_port() {
    let state: PathBuf = std::env::temp_dir().join(format!("bh-life-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);

    script("up.sh", &state);
    let first = pids(&state);
    for component in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "containerd",
        "registry",
    ] {
        assert!(
            first.contains_key(component),
            "{component} not started: {first:?}"
        );
        assert!(alive(first[component]), "{component} is not running");
    }
    script("up.sh", &state);
    assert_eq!(pids(&state), first, "a second up started new processes");
    let apiservers = processes_of(&state)
        .into_iter()
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|e| e.ends_with("kube-apiserver"))
        })
        .count();
    assert_eq!(
        apiservers, 1,
        "exactly one kube-apiserver for this state dir"
    );
    let kubeconfig = state.join("kubeconfig");
    let ns = Command::new("kubectl")
        .env("KUBECONFIG", &kubeconfig)
        .args(["get", "ns", "bulkhead-system"])
        .output()
        .unwrap();
    assert!(
        ns.status.success(),
        "the second system serves: {}",
        String::from_utf8_lossy(&ns.stderr)
    );

    script("down.sh", &state);
    for (component, pid) in &first {
        assert!(!alive(*pid), "{component} (pid {pid}) survived down");
    }
    assert!(
        processes_of(&state).is_empty(),
        "processes left: {:?}",
        processes_of(&state)
    );
    assert!(
        mounts_under(&state).is_empty(),
        "mounts left: {:?}",
        mounts_under(&state)
    );
    for port in PORTS {
        assert!(
            port_free(port + offset()),
            "port {} still in use",
            port + offset()
        );
    }
    assert!(!state.exists(), "state dir left behind");

    // up after down works, and down again cleans up again.
    script("up.sh", &state);
    let again = pids(&state);
    assert!(again.values().all(|p| alive(*p)));
    script("down.sh", &state);
    assert!(again.values().all(|p| !alive(*p)));
    assert!(!state.exists());
}
