//! `make up` is idempotent, works from a checkout under a 0700 directory, and `make down`
//! leaves nothing behind.
//!
//! Runs a second, independent local system (its own state directory and ports) beside the one
//! the other tests use, so that stopping it disturbs nothing. Its state directory is under a
//! 0700 directory, as a checkout in root's home is: an instance still runs, because what a
//! container must reach (containerd's root and state) is in the runtime directory.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    collections::BTreeMap,
    io::Write,
    net::TcpListener,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bulkhead_e2e::{fixtures::instance, repo_root};

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

fn kubectl(state: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("kubectl")
        .env("KUBECONFIG", state.join("kubeconfig"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pushes the test images to the second system's registry and runs one instance on its agent
/// until it is Running.
fn run_an_instance(state: &Path) {
    let status = Command::new("bash")
        .arg(repo_root().join("e2e/hack/images.sh"))
        .env("BULKHEAD_STATE_DIR", state)
        .env("BULKHEAD_PORT_OFFSET", offset().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "images.sh failed");
    kubectl(state, &["create", "namespace", "life"], None);
    let mut inst = instance("web")
        .on("local-1")
        .image(&format!("localhost:{}/bulkhead/web:v1", 5000 + offset()))
        .build();
    inst.metadata.namespace = Some("life".into());
    kubectl(
        state,
        &["apply", "-f", "-"],
        Some(&serde_json::to_string(&inst).unwrap()),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = String::new();
    while Instant::now() < deadline {
        seen = kubectl(
            state,
            &[
                "get",
                "inst",
                "web",
                "-n",
                "life",
                "-o",
                "jsonpath={.status.phase} {.status.reason} {.status.message}",
            ],
            None,
        );
        if seen.starts_with("Running") {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "the instance is not Running after 120 s: {seen}; agent log {}",
        state.join("logs/node-agent.log").display()
    );
}

#[test]
fn up_twice_reuses_runs_an_instance_under_a_0700_parent_and_down_leaves_nothing() {
    // A "home directory" only its owner may enter, and the checkout's state inside it.
    let home: PathBuf = std::env::temp_dir().join(format!("bh-life-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(home.join("checkout")).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let state = home.join("checkout/.bulkhead");

    script("up.sh", &state);
    let runtime = std::fs::read_link(state.join("runtime")).unwrap();
    assert!(
        runtime.starts_with("/var/lib/bulkhead-local/"),
        "{runtime:?}"
    );
    assert_eq!(
        std::fs::metadata(&runtime).unwrap().permissions().mode() & 0o7777,
        0o711
    );
    assert_eq!(
        std::fs::read_to_string(runtime.join(".bulkhead-runtime")).unwrap(),
        format!("{}\n", state.display())
    );
    assert!(
        std::fs::read_to_string(state.join("logs/preflight.log"))
            .unwrap()
            .contains("ok    runtime state reachable"),
        "up.sh ran the agent's preflight"
    );
    run_an_instance(&state);
    assert!(
        !mounts_under(&runtime).is_empty(),
        "the instance's root filesystem is mounted under the runtime directory"
    );
    let first = pids(&state);
    for component in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-proxy",
        "containerd",
        "registry",
    ] {
        assert!(
            first.contains_key(component),
            "{component} not started: {first:?}"
        );
        assert!(alive(first[component]), "{component} is not running");
    }
    let n = offset() / 1000;
    assert!(
        proxy_network(n).iter().all(|(_, present)| *present),
        "kube-proxy's network: {:?}",
        proxy_network(n)
    );
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
    assert!(!runtime.exists(), "runtime dir {runtime:?} left behind");
    assert!(mounts_under(&runtime).is_empty());
    assert!(
        proxy_network(n).iter().all(|(_, present)| !*present),
        "kube-proxy's network left behind: {:?}",
        proxy_network(n)
    );

    // up after down works, and down again cleans up again.
    script("up.sh", &state);
    let again = pids(&state);
    assert!(again.values().all(|p| alive(*p)));
    script("down.sh", &state);
    assert!(again.values().all(|p| !alive(*p)));
    assert!(!state.exists());
    assert!(!runtime.exists());
    std::fs::remove_dir_all(&home).unwrap();
}

/// Whether each part of system `n`'s kube-proxy network exists: its network namespace, its
/// veth, its route for the service range, and the host's iptables rules it marks.
fn proxy_network(n: u16) -> Vec<(&'static str, bool)> {
    let out = |args: &[&str]| {
        let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let netns = format!("bulkhead-kp{n}");
    let veth = format!("bhkp{n}");
    let comment = format!("bulkhead kube-proxy {netns}");
    vec![
        (
            "netns",
            out(&["ip", "netns", "list"])
                .lines()
                .any(|l| l.split_whitespace().next() == Some(netns.as_str())),
        ),
        (
            "veth",
            Command::new("ip")
                .args(["link", "show", &veth])
                .output()
                .unwrap()
                .status
                .success(),
        ),
        (
            "route",
            out(&["ip", "route", "show", &format!("10.96.{n}.0/24")]).contains(&veth),
        ),
        (
            "nat rules",
            out(&["iptables", "-w", "-t", "nat", "-S"]).contains(&comment),
        ),
        (
            "filter rule",
            out(&["iptables", "-w", "-S", "FORWARD"]).contains(&comment),
        ),
    ]
}
