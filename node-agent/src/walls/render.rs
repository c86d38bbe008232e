//! The walls of one bridge as an `iptables-restore --noflush` transaction on the `mangle`
//! table (pure).
//!
//! Chains, all named after the bridge so that systems sharing the host never touch each
//! other's (names stay within iptables' 28 characters: bridge names are at most 15):
//! - `BE-<bridge>`, jumped to from `FORWARD -i <bridge>`: traffic sent by instances. Each
//!   instance's packets (its address *and* its veth, so a spoofed source matches nothing) go
//!   to `BE-<bridge>-<hash>`; any other source is dropped.
//! - `BI-<bridge>`, from `FORWARD -o <bridge>`: traffic to instances, to
//!   `BI-<bridge>-<hash>` by destination; an address with no chain (yet) is dropped.
//!   Traffic from a service proxy's address (`--service-proxy-address`: kube-proxy in its
//!   own network namespace, masquerading) passes first, like the host's own: a ClusterIP
//!   reaches every instance it routes to, whatever the walls between instances say.
//! - `BH-<bridge>`, from `INPUT -i <bridge>`: instances reaching the host itself: only
//!   replies (probes are the host's own connections).
//! - `BS-<bridge>-<hash>`: the rules several instances have in common (one direction), which
//!   their own chains go to instead of repeating them ([`shared`]).
//!
//! Replies of allowed connections pass first (conntrack). Per-instance chains RETURN what
//! is allowed and end in DROP; the dispatch chains reach them with `-g`, so a RETURN goes
//! on with the next FORWARD rule (egress first, then the receiver's ingress) and then the
//! filter table. Mangle runs before filter, so no ACCEPT elsewhere can bypass a wall.

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr};

use sha2::{Digest, Sha256};

use super::plan::{Allow, Direction, Walls};

/// One local instance to wall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// Its containerd container ID.
    pub id: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The host side of its veth, when known (binds the address to the port).
    pub veth: Option<String>,
    /// Its walls.
    pub walls: Walls,
}

/// The dispatch chains of a bridge: egress, ingress, host.
pub fn base_chains(bridge: &str) -> [String; 3] {
    [
        format!("BE-{bridge}"),
        format!("BI-{bridge}"),
        format!("BH-{bridge}"),
    ]
}

/// The per-instance chain of a container in one direction (`E` or `I`).
pub fn instance_chain(bridge: &str, dir: char, id: &str) -> String {
    let hash = hex::encode(&Sha256::digest(id.as_bytes())[..4]);
    format!("B{dir}-{bridge}-{hash}")
}

/// The rules in built-in chains that send the bridge's traffic to its walls, as
/// `(chain, match and target)`.
pub fn jumps(bridge: &str) -> [(&'static str, String); 3] {
    let [e, i, h] = base_chains(bridge);
    [
        ("FORWARD", format!("-i {bridge} -j {e}")),
        ("FORWARD", format!("-o {bridge} -j {i}")),
        ("INPUT", format!("-i {bridge} -j {h}")),
    ]
}

/// The IPv6 wall of a bridge: the instance network is IPv4 only, so every IPv6 packet
/// from or to an instance is dropped (otherwise link-local addresses, which every interface
/// gets, would be a way around the IPv4 walls), except replies to the host's own
/// connections.
pub fn ipv6_chain(bridge: &str) -> String {
    format!("B6-{bridge}")
}

/// The jumps to the IPv6 wall.
pub fn jumps6(bridge: &str) -> [(&'static str, String); 3] {
    let c = ipv6_chain(bridge);
    [
        ("FORWARD", format!("-i {bridge} -j {c}")),
        ("FORWARD", format!("-o {bridge} -j {c}")),
        ("INPUT", format!("-i {bridge} -j {c}")),
    ]
}

/// The `ip6tables-restore --noflush` transaction of the IPv6 wall.
pub fn render6(bridge: &str, missing: &[(&str, String)]) -> String {
    let c = ipv6_chain(bridge);
    let mut out = format!(
        "*mangle\n:{c} - [0:0]\n-A {c} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n-A {c} -j DROP\n"
    );
    for (chain, rule) in missing {
        let _ = writeln!(out, "-A {chain} {rule}");
    }
    out.push_str("COMMIT\n");
    out
}

/// The chain that holds the rules of one direction (`E` or `I`) shared by several of a
/// bridge's instances, named after the first of them (by container ID), so that it keeps
/// its name while members come and go and only its rules change.
pub fn shared_chain(bridge: &str, dir: char, first: &str) -> String {
    let hash = hex::encode(&Sha256::digest(format!("{dir}/{first}").as_bytes())[..4]);
    format!("BS-{bridge}-{hash}")
}

/// The shared chain each `(direction, container ID)` goes to.
pub type Gotos = BTreeMap<(char, String), String>;
/// Shared chains and their rules (matches, each to RETURN; a DROP follows).
pub type SharedChains = BTreeMap<String, Vec<String>>;

/// The rules of one direction of each instance that have the same rules as another
/// instance's: one shared chain per set of identical rules (the members of a namespace all
/// admit the same peers), so a bridge's rules grow with its instances, not with their
/// square (`iptables-restore` of 50 instances of one namespace: 39 ms each way before,
/// 18 ms shared). Returns, per `(direction, container ID)`, the shared chain to go to, and
/// the shared chains with their rules.
pub fn shared(bridge: &str, locals: &[Local]) -> (Gotos, SharedChains) {
    let mut groups: BTreeMap<(char, Vec<String>), Vec<&str>> = BTreeMap::new();
    for l in locals {
        for (dir, d, peer) in [('E', &l.walls.egress, "-d"), ('I', &l.walls.ingress, "-s")] {
            if let Direction::Only(allows) = d {
                let body = allows.iter().flat_map(|a| matches(a, peer)).collect();
                groups.entry((dir, body)).or_default().push(&l.id);
            }
        }
    }
    let mut goto = BTreeMap::new();
    let mut chains = BTreeMap::new();
    for ((dir, body), mut ids) in groups {
        if ids.len() < 2 {
            continue;
        }
        ids.sort_unstable();
        let chain = shared_chain(bridge, dir, ids[0]);
        for id in ids {
            goto.insert((dir, id.to_string()), chain.clone());
        }
        chains.insert(chain, body);
    }
    (goto, chains)
}

/// The transaction: every chain of the bridge rewritten at once, plus the jumps in
/// `missing` (those not in the kernel yet). `proxies` are the service proxies' addresses,
/// let through to every instance like the host.
pub fn render(
    bridge: &str,
    locals: &[Local],
    proxies: &[Ipv4Addr],
    missing: &[(&str, String)],
) -> String {
    let [be, bi, bh] = base_chains(bridge);
    let mut chains = vec![be.clone(), bi.clone(), bh.clone()];
    let mut rules = vec![];
    let established = "-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN";
    for base in [&be, &bi, &bh] {
        rules.push(format!("-A {base} {established}"));
    }
    for p in proxies {
        rules.push(format!("-A {bi} -s {p}/32 -j RETURN"));
    }
    let (goto, shared) = shared(bridge, locals);
    for (chain, body) in &shared {
        for m in body {
            rules.push(format!("-A {chain}{m} -j RETURN"));
        }
        rules.push(format!("-A {chain} -j DROP"));
        chains.push(chain.clone());
    }
    for l in locals {
        let (ce, ci) = (
            instance_chain(bridge, 'E', &l.id),
            instance_chain(bridge, 'I', &l.id),
        );
        let port = l
            .veth
            .as_ref()
            .map(|v| format!(" -m physdev --physdev-in {v}"))
            .unwrap_or_default();
        rules.push(format!("-A {be} -s {}/32{port} -g {ce}", l.ip));
        rules.push(format!("-A {bi} -d {}/32 -g {ci}", l.ip));
        for (dir, chain, walls, peer) in [
            ('E', &ce, &l.walls.egress, "-d"),
            ('I', &ci, &l.walls.ingress, "-s"),
        ] {
            match goto.get(&(dir, l.id.clone())) {
                Some(to) => rules.push(format!("-A {chain} -g {to}")),
                None => direction(&mut rules, chain, walls, peer),
            }
        }
        chains.push(ce);
        chains.push(ci);
    }
    for base in [&be, &bi, &bh] {
        rules.push(format!("-A {base} -j DROP"));
    }
    let mut out = String::from("*mangle\n");
    for c in &chains {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    for r in rules {
        let _ = writeln!(out, "{r}");
    }
    for (chain, rule) in missing {
        let _ = writeln!(out, "-A {chain} {rule}");
    }
    out.push_str("COMMIT\n");
    out
}

/// The rules of one per-instance chain; `peer` is `-s` (ingress) or `-d` (egress).
fn direction(rules: &mut Vec<String>, chain: &str, dir: &Direction, peer: &str) {
    match dir {
        Direction::Open => rules.push(format!("-A {chain} -j RETURN")),
        Direction::Only(allows) => {
            for a in allows {
                for m in matches(a, peer) {
                    rules.push(format!("-A {chain}{m} -j RETURN"));
                }
            }
            rules.push(format!("-A {chain} -j DROP"));
        }
    }
}

/// The iptables matches of one allow (one per port entry).
fn matches(a: &Allow, peer: &str) -> Vec<String> {
    let addr = a.peer.map(|c| format!(" {peer} {c}")).unwrap_or_default();
    if a.ports.is_empty() {
        return vec![addr];
    }
    a.ports
        .iter()
        .map(|p| {
            let proto = p.protocol.name();
            match p.ports {
                None => format!("{addr} -p {proto}"),
                Some((f, l)) if f == l => format!("{addr} -p {proto} -m {proto} --dport {f}"),
                Some((f, l)) => format!("{addr} -p {proto} -m {proto} --dport {f}:{l}"),
            }
        })
        .collect()
}

/// The number of rules the kernel holds for one instance (its two chains, or the shared
/// chain holding the same rules, and the two dispatch rules), for the status.
pub fn rule_count(l: &Local) -> usize {
    let count = |dir: &Direction| match dir {
        Direction::Open => 1,
        Direction::Only(allows) => 1 + allows.iter().map(|a| a.ports.len().max(1)).sum::<usize>(),
    };
    2 + count(&l.walls.egress) + count(&l.walls.ingress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::walls::{
        cidr::Cidr,
        plan::{PortMatch, Protocol},
    };

    fn local(ingress: Direction, egress: Direction) -> Local {
        Local {
            id: "bh-1".into(),
            ip: "10.90.5.2".parse().unwrap(),
            veth: Some("veth1234".into()),
            walls: Walls {
                ingress,
                egress,
                policies: vec![],
            },
        }
    }

    #[test]
    fn chain_names_fit_iptables_and_differ_per_bridge_and_container() {
        let a = instance_chain("bh250-99999", 'I', "bh-0f1e2d3c-aaaa");
        assert!(a.len() <= 28, "{a}");
        assert_ne!(a, instance_chain("bh250-99998", 'I', "bh-0f1e2d3c-aaaa"));
        assert_ne!(a, instance_chain("bh250-99999", 'I', "bh-0f1e2d3c-aaab"));
    }

    #[test]
    fn ipv6_is_dropped_both_ways_but_for_replies() {
        let missing: Vec<(&str, String)> = jumps6("bh1").into_iter().collect();
        assert_eq!(
            render6("bh1", &missing),
            "*mangle\n:B6-bh1 - [0:0]\n\
             -A B6-bh1 -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n-A B6-bh1 -j DROP\n\
             -A FORWARD -i bh1 -j B6-bh1\n-A FORWARD -o bh1 -j B6-bh1\n-A INPUT -i bh1 -j B6-bh1\n\
             COMMIT\n"
        );
    }

    /// Admits exactly `peers` (host addresses), any port.
    fn only(peers: &[&str]) -> Direction {
        Direction::Only(
            peers
                .iter()
                .map(|p| Allow {
                    peer: Some(Cidr::host(p.parse().unwrap())),
                    ports: vec![],
                })
                .collect(),
        )
    }

    fn member(id: &str, ip: &str, ingress: Direction) -> Local {
        Local {
            id: id.into(),
            ip: ip.parse().unwrap(),
            ..local(ingress, Direction::Open)
        }
    }

    #[test]
    fn instances_with_the_same_rules_go_to_one_shared_chain_that_keeps_its_name() {
        let ns = ["10.90.5.2", "10.90.5.3", "10.90.5.4"];
        let a = member("bh-a", ns[0], only(&ns[..2]));
        let b = member("bh-b", ns[1], only(&ns[..2]));
        // Control: different rules stay in the instance's own chain.
        let c = member("bh-c", "10.90.5.9", only(&["10.90.5.9"]));
        let text = render("bh1", &[a.clone(), b.clone(), c.clone()], &[], &[]);
        let common = shared_chain("bh1", 'I', "bh-a");
        assert!(common.len() <= 28, "{common}");
        for want in [
            format!(":{common} - [0:0]"),
            format!("-A {common} -s 10.90.5.2/32 -j RETURN"),
            format!("-A {common} -s 10.90.5.3/32 -j RETURN"),
            format!("-A {common} -j DROP"),
            format!("-A {} -g {common}", instance_chain("bh1", 'I', "bh-a")),
            format!("-A {} -g {common}", instance_chain("bh1", 'I', "bh-b")),
            format!(
                "-A {} -s 10.90.5.9/32 -j RETURN",
                instance_chain("bh1", 'I', "bh-c")
            ),
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "missing {want:?} in\n{text}"
            );
        }
        // Each peer rule once, not once per member; open egress is not shared.
        assert_eq!(
            text.matches("-s 10.90.5.2/32 -j RETURN").count(),
            1,
            "{text}"
        );
        assert!(!text.contains(&shared_chain("bh1", 'E', "bh-a")));
        // A third member (a later ID) changes the shared rules, not the chain's name.
        let d = member("bh-d", ns[2], only(&ns));
        let members = [
            member("bh-a", ns[0], only(&ns)),
            member("bh-b", ns[1], only(&ns)),
            d,
        ];
        let (goto, chains) = shared("bh1", &members);
        assert_eq!(chains.keys().collect::<Vec<_>>(), [&common]);
        assert_eq!(chains[&common].len(), 3);
        assert_eq!(goto.len(), 3);
        // Alone again: no shared chain.
        assert!(shared("bh1", &[a]).1.is_empty());
    }

    #[test]
    fn an_empty_bridge_drops_everything_but_replies() {
        let text = render("bh1", &[], &[], &[]);
        assert_eq!(
            text,
            "*mangle\n:BE-bh1 - [0:0]\n:BI-bh1 - [0:0]\n:BH-bh1 - [0:0]\n\
             -A BE-bh1 -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n\
             -A BI-bh1 -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n\
             -A BH-bh1 -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN\n\
             -A BE-bh1 -j DROP\n-A BI-bh1 -j DROP\n-A BH-bh1 -j DROP\nCOMMIT\n"
        );
    }

    #[test]
    fn an_instance_gets_dispatch_rules_bound_to_its_veth_and_ordered_chains() {
        let allow = Allow {
            peer: Some(Cidr::host("10.90.5.3".parse().unwrap())),
            ports: vec![
                PortMatch {
                    protocol: Protocol::Tcp,
                    ports: Some((8080, 8080)),
                },
                PortMatch {
                    protocol: Protocol::Udp,
                    ports: Some((53, 60)),
                },
            ],
        };
        let l = local(Direction::Only(vec![allow]), Direction::Open);
        let missing: Vec<(&str, String)> = jumps("bh1").into_iter().collect();
        let text = render("bh1", std::slice::from_ref(&l), &[], &missing);
        let ci = instance_chain("bh1", 'I', "bh-1");
        let ce = instance_chain("bh1", 'E', "bh-1");
        for want in [
            format!("-A BE-bh1 -s 10.90.5.2/32 -m physdev --physdev-in veth1234 -g {ce}"),
            format!("-A BI-bh1 -d 10.90.5.2/32 -g {ci}"),
            format!("-A {ci} -s 10.90.5.3/32 -p tcp -m tcp --dport 8080 -j RETURN"),
            format!("-A {ci} -s 10.90.5.3/32 -p udp -m udp --dport 53:60 -j RETURN"),
            format!("-A {ci} -j DROP"),
            format!("-A {ce} -j RETURN"),
            "-A FORWARD -i bh1 -j BE-bh1".to_string(),
            "-A INPUT -i bh1 -j BH-bh1".to_string(),
        ] {
            assert!(
                text.contains(&format!("{want}\n")),
                "{want} missing in\n{text}"
            );
        }
        // The instance's rules come before the dispatch chain's final DROP.
        let drop = text.find("-A BI-bh1 -j DROP").unwrap();
        assert!(text.find(&format!("-g {ci}")).unwrap() < drop);
        assert!(text.ends_with("COMMIT\n"));
        assert_eq!(rule_count(&l), 2 + 1 + 3);
    }

    #[test]
    fn a_closed_direction_is_a_lone_drop_and_any_peer_has_no_address_match() {
        let l = local(
            Direction::Only(vec![]),
            Direction::Only(vec![Allow {
                peer: None,
                ports: vec![],
            }]),
        );
        let text = render("bh1", std::slice::from_ref(&l), &[], &[]);
        let ce = instance_chain("bh1", 'E', "bh-1");
        let ci = instance_chain("bh1", 'I', "bh-1");
        assert!(text.contains(&format!("-A {ce} -j RETURN\n-A {ce} -j DROP\n")));
        assert!(text.contains(&format!("-A {ci} -j DROP\n")));
        assert!(!text.contains(&format!("-A {ci} -j RETURN")));
    }

    #[test]
    fn a_service_proxy_passes_to_every_instance_before_the_instance_chains_but_sends_nothing() {
        let l = local(Direction::Only(vec![]), Direction::Only(vec![]));
        let proxy: Ipv4Addr = "10.95.4.2".parse().unwrap();
        let text = render("bh1", std::slice::from_ref(&l), &[proxy], &[]);
        let pass = "-A BI-bh1 -s 10.95.4.2/32 -j RETURN\n";
        assert!(text.contains(pass), "{text}");
        let ci = instance_chain("bh1", 'I', "bh-1");
        assert!(text.find(pass).unwrap() < text.find(&format!("-g {ci}")).unwrap());
        // Only towards instances: the proxy's address opens nothing the instances send, nor
        // the host.
        assert_eq!(text.matches("10.95.4.2").count(), 1, "{text}");
    }
}
