use super::*;
use serde_json::json;

fn member(namespace: &str, name: &str, ip: &str, labels: &[(&str, &str)]) -> Member {
    Member {
        namespace: namespace.into(),
        name: name.into(),
        ip: ip.parse().unwrap(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn policy(namespace: &str, name: &str, spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn host(ip: &str) -> Option<Cidr> {
    Some(Cidr::host(ip.parse().unwrap()))
}

fn tcp(port: u16) -> PortMatch {
    PortMatch {
        protocol: Protocol::Tcp,
        ports: Some((port, port)),
    }
}

/// a1, a2 in namespace a (app=web / app=db); b1 in b (app=web); namespace b is team=blue.
fn cluster(policies: Vec<NetworkPolicy>) -> Input {
    Input {
        members: vec![
            member("a", "a1", "10.0.0.1", &[("app", "web")]),
            member("a", "a2", "10.0.0.2", &[("app", "db")]),
            member("b", "b1", "10.0.0.3", &[("app", "web")]),
        ],
        namespaces: [
            ("a".to_string(), Labels::new()),
            (
                "b".to_string(),
                [("team".to_string(), "blue".to_string())].into(),
            ),
        ]
        .into(),
        policies,
    }
}

fn only(allows: &[(Option<Cidr>, Vec<PortMatch>)]) -> Direction {
    Direction::Only(
        allows
            .iter()
            .map(|(peer, ports)| Allow {
                peer: *peer,
                ports: ports.clone(),
            })
            .collect(),
    )
}

#[test]
fn without_policies_only_the_own_namespace_gets_in_and_egress_is_open() {
    let input = cluster(vec![]);
    let walls = plan(&input, &input.members[0]);
    assert_eq!(
        walls.ingress,
        only(&[(host("10.0.0.1"), vec![]), (host("10.0.0.2"), vec![])])
    );
    assert_eq!(walls.egress, Direction::Open);
    assert!(walls.policies.is_empty());
    // b1 alone in b: only itself.
    assert_eq!(
        plan(&input, &input.members[2]).ingress,
        only(&[(host("10.0.0.3"), vec![])])
    );
}

#[test]
fn a_namespace_selector_opens_exactly_the_listed_port_to_that_namespace() {
    let p = policy(
        "b",
        "from-a",
        json!({
            "podSelector": {},
            "ingress": [{
                "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "a"}}}],
                "ports": [{"port": 8080}],
            }],
        }),
    );
    let mut input = cluster(vec![p]);
    input.namespaces.insert(
        "a".into(),
        [("kubernetes.io/metadata.name".to_string(), "a".to_string())].into(),
    );
    let walls = plan(&input, &input.members[2]);
    // Kubernetes semantics once selected: b's own members are not let in by default.
    assert_eq!(
        walls.ingress,
        only(&[
            (host("10.0.0.1"), vec![tcp(8080)]),
            (host("10.0.0.2"), vec![tcp(8080)])
        ])
    );
    assert_eq!(walls.policies, ["b/from-a"]);
    assert_eq!(walls.egress, Direction::Open, "an ingress-only policy");
    // a's members are not selected by a policy of b.
    assert_eq!(
        plan(&input, &input.members[0]).policies,
        Vec::<String>::new()
    );
}

#[test]
fn pod_and_namespace_selectors_together_are_an_and() {
    let p = policy(
        "b",
        "web-of-blue-and-a",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{
                "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]},
                "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]},
            }]}],
        }),
    );
    let input = cluster(vec![p]);
    assert_eq!(
        plan(&input, &input.members[2]).ingress,
        only(&[(host("10.0.0.2"), vec![])])
    );
}

#[test]
fn a_pod_selector_alone_stays_in_the_policys_namespace() {
    let p = policy(
        "a",
        "web-from-web",
        json!({
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
        }),
    );
    let input = cluster(vec![p]);
    // b1 is app=web too, but in another namespace.
    assert_eq!(
        plan(&input, &input.members[1]).ingress,
        only(&[(host("10.0.0.1"), vec![])])
    );
    // a1 is not selected: the default (own namespace) stays.
    assert_eq!(plan(&input, &input.members[0]).ingress.clone(), {
        let input = cluster(vec![]);
        plan(&input, &input.members[0]).ingress
    });
}

#[test]
fn an_empty_ingress_list_denies_everything_and_an_empty_rule_allows_everything() {
    let deny = policy(
        "a",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    );
    let input = cluster(vec![deny]);
    assert_eq!(plan(&input, &input.members[0]).ingress, only(&[]));
    let allow = policy("a", "all", json!({"podSelector": {}, "ingress": [{}]}));
    let input = cluster(vec![allow]);
    assert_eq!(
        plan(&input, &input.members[0]).ingress,
        only(&[(None, vec![])])
    );
}

#[test]
fn egress_policies_limit_destinations_and_ip_blocks_honour_except() {
    let p = policy(
        "a",
        "egress",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 5432, "protocol": "TCP"}]},
                {"to": [{"ipBlock": {"cidr": "192.168.0.0/30", "except": ["192.168.0.1/32"]}}], "ports": [{"protocol": "UDP", "port": 53, "endPort": 54}]},
            ],
        }),
    );
    let input = cluster(vec![p]);
    let walls = plan(&input, &input.members[0]);
    let udp = PortMatch {
        protocol: Protocol::Udp,
        ports: Some((53, 54)),
    };
    assert_eq!(
        walls.egress,
        only(&[
            (host("10.0.0.2"), vec![tcp(5432)]),
            (host("192.168.0.0"), vec![udp]),
            (Some("192.168.0.2/31".parse().unwrap()), vec![udp]),
        ])
    );
    // policyTypes [Egress] only: ingress keeps the namespace default.
    assert_eq!(
        walls.ingress,
        only(&[(host("10.0.0.1"), vec![]), (host("10.0.0.2"), vec![])])
    );
}

#[test]
fn egress_is_implied_by_egress_rules_when_policy_types_is_absent() {
    let p = policy("a", "e", json!({"podSelector": {}, "egress": []}));
    let input = cluster(vec![p]);
    let walls = plan(&input, &input.members[0]);
    assert_eq!(walls.egress, only(&[]));
    assert_eq!(walls.ingress, only(&[]), "Ingress is always implied");
}

#[test]
fn named_ports_and_ipv6_blocks_match_nothing() {
    let p = policy(
        "a",
        "named",
        json!({
            "podSelector": {},
            "ingress": [
                {"ports": [{"port": "http"}]},
                {"from": [{"ipBlock": {"cidr": "fd00::/8"}}]},
            ],
        }),
    );
    let input = cluster(vec![p]);
    assert_eq!(plan(&input, &input.members[0]).ingress, only(&[]));
}

#[test]
fn policies_of_several_names_are_listed_sorted_and_their_allows_merged() {
    let p1 = policy(
        "a",
        "z",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
    );
    let p2 = policy(
        "a",
        "m",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}, {"port": 81}]}]}),
    );
    let input = cluster(vec![p1, p2]);
    let walls = plan(&input, &input.members[0]);
    assert_eq!(walls.policies, ["a/m", "a/z"]);
    assert_eq!(
        walls.ingress,
        only(&[(None, vec![tcp(80)]), (None, vec![tcp(80), tcp(81)])])
    );
}

#[test]
fn selectors_follow_the_label_selector_rules() {
    let labels: Labels = [("app".to_string(), "web".to_string())].into();
    let sel = |v: serde_json::Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
    assert!(selects(&sel(json!({})), &labels));
    assert!(selects(
        &sel(json!({"matchLabels": {"app": "web"}})),
        &labels
    ));
    assert!(!selects(
        &sel(json!({"matchLabels": {"app": "db"}})),
        &labels
    ));
    let expr = |op: &str, values: &[&str]| {
        sel(json!({"matchExpressions": [{"key": "app", "operator": op, "values": values}]}))
    };
    assert!(selects(&expr("In", &["web", "x"]), &labels));
    assert!(!selects(&expr("NotIn", &["web"]), &labels));
    assert!(selects(&expr("NotIn", &["db"]), &Labels::new()));
    assert!(selects(&expr("Exists", &[]), &labels));
    assert!(!selects(&expr("DoesNotExist", &[]), &labels));
    assert!(!selects(&expr("Gt", &["1"]), &labels));
}
