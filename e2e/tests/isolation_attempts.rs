//! Attempts to break out of an instance, each of which must be denied.
//!
//! One node agent runs two instances of the tools image (which carries `/bin/probe`, see
//! e2e/images/probe.c): `attacker`, inside which each attempt runs through `ctr tasks exec`
//! (with the instance's own user, capabilities, seccomp filter and no_new_privs), and
//! `victim`, a neighbour whose processes and files the attacker must not reach. The probe
//! exits 0 when the attempt was denied and 1 when it succeeded.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{sync::OnceLock, time::Duration};

use bulkhead_crds::{InstancePhase, template::RestartPolicy};
use bulkhead_e2e::{
    TestNamespace,
    agent::{self, Agent, exec, exec_as, image, start_agent, tasks},
    fixtures::{instance, wait_for_phase},
};
use kube::ResourceExt;

const START: Duration = Duration::from_secs(120);

struct Shared {
    agent: Agent,
    _ns: TestNamespace,
    attacker: String,
    victim_pid: u32,
}

/// The agent and the two instances, started once for the whole file. The agent runs with
/// --exit-with-parent from a thread that never ends, so it goes when the test process does.
fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let shared = rt.block_on(async {
                let agent = agent::Agent::start(
                    &agent::unique_host("isolation"),
                    &[
                        "--allowed-registries",
                        &agent::registry(),
                        "--exit-with-parent",
                    ],
                );
                let ns = TestNamespace::new("isolation").await;
                for name in ["attacker", "victim"] {
                    instance(name)
                        .on(&agent.host)
                        .image(&image("tools:v1"))
                        .command(&["/bin/probe", "sleep"])
                        .create(&ns)
                        .await;
                }
                let attacker = wait_for_phase(&ns, "attacker", InstancePhase::Running, START).await;
                let victim = wait_for_phase(&ns, "victim", InstancePhase::Running, START).await;
                let victim_id = format!("bh-{}", victim.uid().unwrap());
                let victim_pid = tasks(&agent.namespace)
                    .into_iter()
                    .find(|t| t.0 == victim_id)
                    .unwrap()
                    .1;
                Shared {
                    attacker: format!("bh-{}", attacker.uid().unwrap()),
                    agent,
                    _ns: ns,
                    victim_pid,
                }
            });
            tx.send(shared).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("setting up the isolation instances")
    })
}

/// Runs `probe <args>` in the attacker and asserts the attempt was denied.
fn assert_denied(args: &[&str]) -> String {
    let s = shared();
    let mut cmd = vec!["/bin/probe"];
    cmd.extend_from_slice(args);
    let (code, out) = exec(&s.agent.namespace, &s.attacker, &cmd);
    assert_eq!(code, 0, "`probe {}` was not denied: {out}", args.join(" "));
    assert!(out.contains("DENIED"), "{out}");
    out
}

macro_rules! denied {
    ($($name:ident => [$($arg:expr),+];)*) => {
        $(
            #[test]
            fn $name() {
                assert_denied(&[$($arg),+]);
            }
        )*
    };
}

denied! {
    mount_a_filesystem => ["mount"];
    mount_proc => ["mount-proc"];
    unshare_a_user_namespace => ["unshare-user"];
    unshare_a_mount_namespace => ["unshare-mount"];
    clone_with_namespace_flags => ["clone-newuser"];
    ptrace_another_process => ["ptrace", "1"];
    load_a_kernel_module => ["kernel-module"];
    write_proc_sys => ["write-proc-sys"];
    write_sys => ["write-sys"];
    read_proc_kcore => ["read-kcore"];
    reboot_the_machine => ["reboot"];
    mknod_a_block_device => ["mknod"];
    open_a_raw_socket => ["raw-socket"];
    write_the_root_filesystem => ["write-rootfs"];
    keyctl => ["keyctl"];
    bpf => ["bpf"];
    perf_event_open => ["perf-event-open"];
    set_the_clock => ["clock-settime"];
    swapon => ["swapon"];
    open_by_handle_at => ["open-by-handle"];
}

#[test]
fn set_the_host_name_the_host_sees() {
    let before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_denied(&["sethostname"]);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        before
    );
}

#[test]
fn setuid_to_root_as_an_unprivileged_user() {
    let s = shared();
    let (code, out) = exec_as(
        &s.agent.namespace,
        &s.attacker,
        Some("1000:1000"),
        &["/bin/probe", "setuid"],
    );
    assert_eq!(code, 0, "setuid(0) from uid 1000 was not denied: {out}");
}

#[test]
fn gain_root_through_a_setuid_binary() {
    let s = shared();
    let (code, out) = exec_as(
        &s.agent.namespace,
        &s.attacker,
        Some("1000:1000"),
        &["/bin/probe-suid", "euid"],
    );
    assert_eq!(code, 0, "a set-uid binary raised the effective uid: {out}");
}

#[test]
fn see_or_signal_a_process_of_another_instance() {
    let s = shared();
    let victim = s.victim_pid.to_string();
    // The neighbour's host PID does not exist in the attacker's PID namespace.
    assert_denied(&["kill", &victim]);
    let (_, ps) = exec(&s.agent.namespace, &s.attacker, &["ls", "/proc"]);
    let pids: Vec<&str> = ps
        .split_whitespace()
        .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert!(
        pids.len() < 10,
        "the attacker sees other processes: {pids:?}"
    );
    assert!(!pids.contains(&victim.as_str()));
}

#[test]
fn read_another_instances_files() {
    let s = shared();
    let path = format!("/proc/{}/root/www/index.html", s.victim_pid);
    assert_denied(&["read", &path]);
}

#[test]
fn capabilities_no_new_privs_and_seccomp_are_in_force() {
    let s = shared();
    let (_, status) = exec(
        &s.agent.namespace,
        &s.attacker,
        &["cat", "/proc/self/status"],
    );
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
            .unwrap()
    };
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("CapBnd:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    assert_eq!(field("Seccomp:"), "2", "seccomp filter mode");
}

/// The probe can tell success from denial: an allowed read succeeds.
#[test]
fn control_an_allowed_action_is_reported_as_succeeded() {
    let s = shared();
    let (code, out) = exec(
        &s.agent.namespace,
        &s.attacker,
        &["/bin/probe", "read", "/www/index.html"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("SUCCEEDED"), "{out}");
}

#[tokio::test]
async fn a_fork_bomb_is_contained_by_the_pids_limit() {
    let agent = start_agent("forkbomb");
    let ns = TestNamespace::new("forkbomb").await;
    instance("bomb")
        .on(&agent.host)
        .image(&image("tools:v1"))
        .pids(64)
        .command(&["/bin/probe", "sleep"])
        .create(&ns)
        .await;
    let inst = wait_for_phase(&ns, "bomb", InstancePhase::Running, START).await;
    let id = format!("bh-{}", inst.uid().unwrap());
    let cgroup = inst
        .status
        .clone()
        .unwrap()
        .isolation
        .unwrap()
        .cgroup
        .unwrap();
    assert_eq!(
        cgroup.pids_limit,
        Some(64),
        "the agent read the pids limit back from the cgroup"
    );
    let (code, out) = exec(&agent.namespace, &id, &["/bin/probe", "fork-bomb"]);
    assert_eq!(code, 0, "{out}");
    let forked: u32 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        forked < 64,
        "forked {forked} processes past a pids limit of 64: {out}"
    );
    // The instance survives its own fork bomb.
    wait_for_phase(&ns, "bomb", InstancePhase::Running, Duration::from_secs(5)).await;
    ns.delete().await;
}

#[tokio::test]
async fn a_memory_hog_is_oom_killed_and_recorded() {
    let agent = start_agent("oom");
    let ns = TestNamespace::new("oom").await;
    instance("hog")
        .on(&agent.host)
        .image(&image("tools:v1"))
        .memory("32Mi")
        .restart(RestartPolicy::Never)
        .command(&["/bin/probe", "hog", "512"])
        .create(&ns)
        .await;
    let inst = wait_for_phase(&ns, "hog", InstancePhase::Failed, START).await;
    let exit = inst.status.unwrap().last_exit.unwrap();
    assert!(
        exit.oom_killed,
        "lastExit should record the OOM kill: {exit:?}"
    );
    assert_eq!(exit.reason.as_deref(), Some("OOMKilled"));
    assert_eq!(exit.exit_code, 137, "{exit:?}");
    ns.delete().await;
}
