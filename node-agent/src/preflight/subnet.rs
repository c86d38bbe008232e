//! Whether the instance subnet collides with an address or route this host already has.
//!
//! Two devices routing one subnet make both unreachable in part: podman's `cni-podman0`
//! holds 10.88.0.1/16, so an agent bridge on 10.88.0.0/24 would take a slice of podman's
//! network (and podman's bridge the agent's instances) on a machine that ever ran podman.
//! The routes and addresses come from `ip -j` (the probe runs it); everything here is pure.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::Deserialize;

/// An IPv4 network, `a.b.c.d/n`, kept with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix: u8,
}

/// A subnet that is not `a.b.c.d/n`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an IPv4 network a.b.c.d/n (n from 0 to 32)")]
pub struct BadNet(pub String);

impl Ipv4Net {
    /// The network of `addr/prefix` (host bits cleared).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        let prefix = prefix.min(32);
        Self {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        }
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let m = mask(self.prefix.min(other.prefix));
        u32::from(self.network) & m == u32::from(other.network) & m
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl FromStr for Ipv4Net {
    type Err = BadNet;

    /// `a.b.c.d/n`, or `a.b.c.d` for a /32.
    fn from_str(s: &str) -> Result<Self, BadNet> {
        let bad = || BadNet(s.to_string());
        let (addr, prefix) = s.split_once('/').unwrap_or((s, "32"));
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Self::new(addr, prefix))
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// One entry of `ip -j -4 route show table main`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Route {
    /// "default", "a.b.c.d" or "a.b.c.d/n".
    pub dst: String,
    /// "unicast" when absent; "unreachable", "blackhole", "prohibit", ...
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The device, absent for reject routes.
    #[serde(default)]
    pub dev: Option<String>,
    /// The next hop, absent for directly connected networks.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// One interface of `ip -j -4 addr`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Interface {
    /// Its name.
    pub ifname: String,
    /// Its addresses.
    #[serde(default)]
    pub addr_info: Vec<AddrInfo>,
}

/// An address of an interface.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct AddrInfo {
    /// "inet" or "inet6".
    #[serde(default)]
    pub family: String,
    /// The address.
    pub local: String,
    /// Its prefix length.
    pub prefixlen: u8,
}

/// What the instance subnet collides with: `hard` breaks instances or another network on the
/// host (an address or a directly connected route on another device, a reject route inside
/// the subnet); `soft` is a route through a gateway whose destinations the subnet shadows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collisions {
    /// Each one as "10.88.0.1/16 on cni-podman0".
    pub hard: Vec<String>,
    /// Each one as "10.0.0.0/8 via 10.1.1.1 dev tun0".
    pub soft: Vec<String>,
}

/// The addresses and routes that collide with `subnet`, ignoring the agent's own `bridge`,
/// the default route, and reject routes that cover the whole subnet (the harness's
/// `unreachable` guard routes: the bridge's more specific route wins over them).
pub fn collisions(
    subnet: &Ipv4Net,
    bridge: &str,
    interfaces: &[Interface],
    routes: &[Route],
) -> Collisions {
    let mut out = Collisions::default();
    let mut named = Vec::new();
    for i in interfaces.iter().filter(|i| i.ifname != bridge) {
        for a in i.addr_info.iter().filter(|a| a.family == "inet") {
            let Ok(addr) = a.local.parse::<Ipv4Addr>() else {
                continue;
            };
            if Ipv4Net::new(addr, a.prefixlen).overlaps(subnet) {
                out.hard
                    .push(format!("{}/{} on {}", a.local, a.prefixlen, i.ifname));
                named.push(i.ifname.as_str());
            }
        }
    }
    for r in routes {
        let Some(dst) = route_dst(&r.dst) else {
            continue;
        };
        let dev = r.dev.as_deref().unwrap_or("");
        if dst.prefix() == 0 || dev == bridge || named.contains(&dev) || !dst.overlaps(subnet) {
            continue;
        }
        let kind = r.kind.as_deref().unwrap_or("unicast");
        match (kind, &r.gateway) {
            ("unicast", Some(gw)) => out.soft.push(format!("{dst} via {gw} dev {dev}")),
            ("unicast", None) => out.hard.push(format!("{dst} dev {dev}")),
            (_, _) if dst.prefix() > subnet.prefix() => out.hard.push(format!("{kind} {dst}")),
            _ => {}
        }
    }
    out
}

fn route_dst(dst: &str) -> Option<Ipv4Net> {
    if dst == "default" {
        return Some(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0));
    }
    dst.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn routes(json: &str) -> Vec<Route> {
        serde_json::from_str(json).unwrap()
    }

    fn interfaces(json: &str) -> Vec<Interface> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn parses_networks_and_clears_host_bits() {
        assert_eq!(net("10.88.0.1/16").to_string(), "10.88.0.0/16");
        assert_eq!(net("10.0.0.5").to_string(), "10.0.0.5/32");
        for bad in ["10.88.0.0/33", "10.88.0/24", "x", "10.88.0.0/"] {
            assert_eq!(bad.parse::<Ipv4Net>(), Err(BadNet(bad.into())), "{bad}");
        }
    }

    #[test]
    fn overlap_is_symmetric_and_prefix_aware() {
        assert!(net("10.88.0.0/16").overlaps(&net("10.88.3.0/24")));
        assert!(net("10.88.3.0/24").overlaps(&net("10.88.0.0/16")));
        assert!(!net("10.88.0.0/16").overlaps(&net("10.89.0.0/24")));
        assert!(net("0.0.0.0/0").overlaps(&net("192.0.2.0/24")));
    }

    /// This machine's `ip -j` output with a podman bridge, the harness's guard routes and
    /// the agent's own bridge.
    const ROUTES: &str = r#"[
        {"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]},
        {"type":"unreachable","dst":"10.88.0.0/15","metric":4242,"flags":[]},
        {"dst":"10.88.0.0/16","dev":"cni-podman0","protocol":"kernel","scope":"link","prefsrc":"10.88.0.1","flags":[]},
        {"dst":"10.90.3.0/24","dev":"bulkhead3","protocol":"kernel","scope":"link","prefsrc":"10.90.3.1","flags":[]},
        {"type":"unreachable","dst":"10.90.0.0/16","metric":4242,"flags":[]},
        {"dst":"192.0.2.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"192.0.2.2","flags":[]}
    ]"#;
    const ADDRS: &str = r#"[
        {"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
        {"ifindex":4,"ifname":"eth0","addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24},{"family":"inet6","local":"fd00::2","prefixlen":64}]},
        {"ifindex":7,"ifname":"cni-podman0","addr_info":[{"family":"inet","local":"10.88.0.1","prefixlen":16}]},
        {"ifindex":9,"ifname":"bulkhead3","addr_info":[{"family":"inet","local":"10.90.3.1","prefixlen":24}]}
    ]"#;

    #[test]
    fn podmans_network_collides_with_a_subnet_inside_it_once_per_device() {
        let c = collisions(
            &net("10.88.0.0/24"),
            "bulkhead0",
            &interfaces(ADDRS),
            &routes(ROUTES),
        );
        assert_eq!(c.hard, ["10.88.0.1/16 on cni-podman0"]);
        assert!(c.soft.is_empty());
    }

    #[test]
    fn own_bridge_guard_routes_and_default_route_do_not_collide() {
        let c = collisions(
            &net("10.90.3.0/24"),
            "bulkhead3",
            &interfaces(ADDRS),
            &routes(ROUTES),
        );
        assert_eq!(c, Collisions::default());
    }

    #[test]
    fn another_bridge_on_the_same_subnet_collides() {
        let c = collisions(
            &net("10.90.3.0/24"),
            "bulkhead5",
            &interfaces(ADDRS),
            &routes(ROUTES),
        );
        assert_eq!(c.hard, ["10.90.3.1/24 on bulkhead3"]);
    }

    #[test]
    fn a_route_without_an_address_collides_too() {
        let r = routes(r#"[{"dst":"10.90.3.128/25","dev":"wg0","scope":"link","flags":[]}]"#);
        let c = collisions(&net("10.90.3.0/24"), "bulkhead3", &[], &r);
        assert_eq!(c.hard, ["10.90.3.128/25 dev wg0"]);
    }

    #[test]
    fn a_reject_route_inside_the_subnet_collides_but_one_around_it_does_not() {
        let r = routes(
            r#"[{"type":"blackhole","dst":"10.90.3.0/26","flags":[]},
                {"type":"unreachable","dst":"10.90.3.0/24","flags":[]}]"#,
        );
        let c = collisions(&net("10.90.3.0/24"), "bulkhead3", &[], &r);
        assert_eq!(c.hard, ["blackhole 10.90.3.0/26"]);
    }

    #[test]
    fn a_gateway_route_over_the_subnet_is_soft() {
        let r = routes(r#"[{"dst":"10.0.0.0/8","gateway":"10.1.1.1","dev":"tun0","flags":[]}]"#);
        let c = collisions(&net("10.90.3.0/24"), "bulkhead3", &[], &r);
        assert!(c.hard.is_empty());
        assert_eq!(c.soft, ["10.0.0.0/8 via 10.1.1.1 dev tun0"]);
    }
}
