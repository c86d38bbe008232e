//! Table tests of [`check`]: a healthy host passes everything; each broken part fails its own
//! line, with a fix, and only that line.

use std::path::PathBuf;

use super::{reach::Meta, subnet::Interface, *};

const MAPPED: u32 = 1_000_000_000;

fn dir(path: &str, mode: u32) -> Ancestor {
    (
        PathBuf::from(path),
        Some(Meta {
            mode,
            uid: 0,
            gid: 0,
        }),
    )
}

fn healthy() -> Input {
    Input {
        user_namespaces: true,
        seccomp: true,
        seccomp_actions: vec!["errno".into(), "user_notif".into()],
        cgroup_version: 2,
        cgroup_controllers: ["cpuset", "cpu", "io", "memory", "pids"]
            .map(String::from)
            .to_vec(),
        runc: ("runc".into(), Ok("1.1.5".into())),
        containerd: (
            "/run/containerd/containerd.sock".into(),
            Ok("1.6.20".into()),
        ),
        cni: Some(CniInput {
            bin_dir: "/usr/lib/cni".into(),
            wanted: vec!["bridge".into(), "host-local".into()],
            present: vec!["bridge".into(), "host-local".into()],
            config_error: None,
        }),
        runtime_paths: vec![RuntimePath {
            flag: "--containerd-state-dir",
            ancestors: vec![
                dir("/", 0o755),
                dir("/run", 0o755),
                dir("/run/containerd", 0o711),
            ],
            mapped: (MAPPED, MAPPED),
        }],
        subnet: Some(SubnetInput {
            subnet: "10.89.0.0/24".into(),
            bridge: "bulkhead0".into(),
            interfaces: Ok(vec![]),
            routes: Ok(vec![]),
        }),
        registries: vec![("localhost:5000".into(), Ok(2))],
    }
}

/// The results that are not ok, as (name, status).
fn not_ok(input: &Input) -> Vec<(&'static str, &'static str)> {
    check(input)
        .iter()
        .filter(|r| !r.ok)
        .map(|r| (r.name, r.status()))
        .collect()
}

fn find(input: &Input, name: &str) -> CheckResult {
    check(input).into_iter().find(|r| r.name == name).unwrap()
}

#[test]
fn a_healthy_host_passes_every_check_one_line_each() {
    let results = check(&healthy());
    let names: Vec<&str> = results.iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        [
            "user namespaces",
            "seccomp",
            "seccomp user_notif",
            "cgroups",
            "runc",
            "containerd",
            "cni plugins",
            "runtime state reachable",
            "instance subnet",
            "registries"
        ]
    );
    assert!(
        results.iter().all(|r| r.ok && r.fix.is_none()),
        "{results:#?}"
    );
    assert!(failures(&results).is_empty());
    assert!(results.iter().all(|r| !r.line().contains('\n')));
}

#[test]
fn each_broken_kernel_feature_fails_its_own_line() {
    type Break = fn(&mut Input);
    let cases: [(&str, Break, &str); 5] = [
        ("user namespaces", |i| i.user_namespaces = false, "FAIL"),
        ("seccomp", |i| i.seccomp = false, "FAIL"),
        (
            "seccomp user_notif",
            |i| i.seccomp_actions = vec!["errno".into()],
            "warn",
        ),
        (
            "cgroups",
            |i| i.cgroup_controllers.retain(|c| c != "pids"),
            "FAIL",
        ),
        ("runc", |i| i.runc.1 = Err("not found".into()), "FAIL"),
    ];
    for (name, breaks, status) in cases {
        let mut input = healthy();
        breaks(&mut input);
        assert_eq!(not_ok(&input), [(name, status)], "{name}");
        assert!(find(&input, name).fix.is_some(), "{name} has a fix");
    }
}

#[test]
fn cgroups_name_the_missing_controller() {
    let mut input = healthy();
    input.cgroup_controllers = vec!["cpu".into(), "memory".into()];
    let r = find(&input, "cgroups");
    assert!(
        r.detail.starts_with("v2, controllers pids not enabled"),
        "{}",
        r.detail
    );
}

#[test]
fn containerd_and_cni_failures_name_the_socket_and_the_plugins() {
    let mut input = healthy();
    input.containerd.1 = Err("connection refused".into());
    input.cni.as_mut().unwrap().present = vec!["bridge".into()];
    assert_eq!(
        not_ok(&input),
        [("containerd", "FAIL"), ("cni plugins", "FAIL")]
    );
    assert_eq!(
        find(&input, "containerd").detail,
        "/run/containerd/containerd.sock: connection refused"
    );
    assert_eq!(
        find(&input, "cni plugins").detail,
        "host-local missing from /usr/lib/cni"
    );
    input.cni = None;
    assert_eq!(
        not_ok(&input),
        [("containerd", "FAIL")],
        "no network, no plugins"
    );
}

#[test]
fn a_0700_ancestor_of_the_runtime_state_fails_naming_it_and_the_chmod() {
    let mut input = healthy();
    input.runtime_paths[0].ancestors = vec![
        dir("/", 0o755),
        dir("/root", 0o700),
        dir("/root/src/bulkhead/.bulkhead/containerd/state", 0o711),
    ];
    let r = find(&input, "runtime state reachable");
    assert_eq!(r.status(), "FAIL");
    assert!(r.detail.contains("/root has mode 0700"), "{}", r.detail);
    assert!(r.detail.contains(&format!("mapped uid {MAPPED}")));
    assert!(r.fix.unwrap().starts_with("chmod o+x /root "));
}

#[test]
fn a_runtime_state_dir_not_visible_here_is_a_warning() {
    let mut input = healthy();
    input.runtime_paths[0].ancestors = vec![dir("/", 0o755), (PathBuf::from("/run"), None)];
    assert_eq!(not_ok(&input), [("runtime state reachable", "warn")]);
}

#[test]
fn a_subnet_held_by_another_interface_fails_a_gateway_route_over_it_warns() {
    let mut input = healthy();
    let podman: Interface = serde_json::from_str(
        r#"{"ifname":"cni-podman0","addr_info":[{"family":"inet","local":"10.88.0.1","prefixlen":16}]}"#,
    )
    .unwrap();
    let s = input.subnet.as_mut().unwrap();
    s.subnet = "10.88.0.0/24".into();
    s.interfaces = Ok(vec![podman]);
    let r = find(&input, "instance subnet");
    assert_eq!(r.status(), "FAIL");
    assert!(
        r.detail
            .starts_with("10.88.0.0/24 collides with 10.88.0.1/16 on cni-podman0"),
        "{}",
        r.detail
    );

    let s = input.subnet.as_mut().unwrap();
    s.interfaces = Ok(vec![]);
    s.routes = Ok(serde_json::from_str(
        r#"[{"dst":"10.0.0.0/8","gateway":"10.1.1.1","dev":"tun0"}]"#,
    )
    .unwrap());
    assert_eq!(not_ok(&input), [("instance subnet", "warn")]);
}

#[test]
fn a_malformed_subnet_fails_and_an_unlistable_host_warns() {
    let mut input = healthy();
    input.subnet.as_mut().unwrap().subnet = "10.89.0.0/33".into();
    let r = find(&input, "instance subnet");
    assert_eq!(r.status(), "FAIL");
    assert!(r.detail.contains("\"10.89.0.0/33\" is not an IPv4 network"));

    let mut input = healthy();
    input.subnet.as_mut().unwrap().routes = Err("ip: not found".into());
    assert_eq!(not_ok(&input), [("instance subnet", "warn")]);
}

#[test]
fn registries_that_do_not_resolve_warn_and_no_allow_list_passes() {
    let mut input = healthy();
    input
        .registries
        .push(("registry.invalid".into(), Err("failed to lookup".into())));
    let r = find(&input, "registries");
    assert_eq!(r.status(), "warn");
    assert!(r.detail.starts_with("registry.invalid (failed to lookup)"));
    input.registries.clear();
    assert!(find(&input, "registries").ok);
}

#[test]
fn lines_and_json_carry_status_detail_and_fix() {
    let mut input = healthy();
    input.user_namespaces = false;
    let r = find(&input, "user namespaces");
    assert!(r.line().starts_with("FAIL  user namespaces: unavailable"));
    assert!(
        r.line()
            .contains(" -- fix: sysctl -w user.max_user_namespaces=")
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["required"], true);
    assert_eq!(json["ok"], false);
    assert!(json["fix"].is_string());
    let ok = serde_json::to_value(find(&healthy(), "seccomp")).unwrap();
    assert!(ok.get("fix").is_none());
}
