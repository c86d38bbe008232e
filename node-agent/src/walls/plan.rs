//! The pure translation: NetworkPolicies, Instance labels and namespace labels → what each
//! local instance may receive and send.
//!
//! Defaults (documented in docs/security.md, "Network walls"):
//! - ingress, when no policy of its namespace selects an instance for Ingress: from instances
//!   of its own namespace only (across namespaces: denied). The host itself always reaches
//!   its instances (probes): host traffic never passes the walls' FORWARD chains.
//! - ingress, once a policy selects it for Ingress: exactly what the selecting policies allow
//!   (Kubernetes semantics; the same-namespace default no longer applies).
//! - egress, when no policy selects it for Egress: open (to other instances the receiving
//!   side's ingress still decides); once one does: exactly what the selecting policies allow.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec},
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::cidr::{Cidr, subtract};

/// Labels, as on an object.
pub type Labels = BTreeMap<String, String>;

/// An instance with an address, anywhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The Instance's labels.
    pub labels: Labels,
}

/// What the planner reads.
#[derive(Debug, Clone, Default)]
pub struct Input {
    /// Every instance with an address (local ones included).
    pub members: Vec<Member>,
    /// Namespace labels by namespace name.
    pub namespaces: BTreeMap<String, Labels>,
    /// Every NetworkPolicy.
    pub policies: Vec<NetworkPolicy>,
}

/// A transport protocol a port names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The name iptables takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// One port (range) of one protocol; `ports: None` is every port of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortMatch {
    /// Its protocol.
    pub protocol: Protocol,
    /// First and last port, inclusive.
    pub ports: Option<(u16, u16)>,
}

/// One allowed peer and port set: `peer: None` is any address, empty `ports` any port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Allow {
    /// The remote address range.
    pub peer: Option<Cidr>,
    /// The ports (of the receiving side).
    pub ports: Vec<PortMatch>,
}

/// What one direction lets through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direction {
    /// Everything.
    Open,
    /// Only these, everything else dropped.
    Only(Vec<Allow>),
}

/// The walls of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walls {
    /// Traffic to it.
    pub ingress: Direction,
    /// Traffic from it.
    pub egress: Direction,
    /// `namespace/name` of the policies that select it, sorted.
    pub policies: Vec<String>,
}

/// The walls of `me` (one of `input.members` or about to be).
pub fn plan(input: &Input, me: &Member) -> Walls {
    let selecting: Vec<&NetworkPolicy> = input
        .policies
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(me.namespace.as_str()))
        .filter(|p| {
            p.spec.as_ref().is_some_and(|s| {
                s.pod_selector
                    .as_ref()
                    .is_none_or(|sel| selects(sel, &me.labels))
            })
        })
        .collect();
    let mut policies: Vec<String> = selecting
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                me.namespace,
                p.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    policies.sort();
    let ingress_policies: Vec<_> = selecting
        .iter()
        .filter(|p| has_type(p, "Ingress"))
        .collect();
    let ingress = if ingress_policies.is_empty() {
        let own = input
            .members
            .iter()
            .filter(|m| m.namespace == me.namespace)
            .map(|m| Allow {
                peer: Some(Cidr::host(m.ip)),
                ports: vec![],
            })
            .collect();
        Direction::Only(normalize(own))
    } else {
        union(input, &ingress_policies, |s| {
            s.ingress
                .iter()
                .flatten()
                .map(|r| (r.from.as_deref(), &r.ports))
                .collect()
        })
    };
    let egress_policies: Vec<_> = selecting.iter().filter(|p| has_type(p, "Egress")).collect();
    let egress = if egress_policies.is_empty() {
        Direction::Open
    } else {
        union(input, &egress_policies, |s| {
            s.egress
                .iter()
                .flatten()
                .map(|r| (r.to.as_deref(), &r.ports))
                .collect()
        })
    };
    Walls {
        ingress,
        egress,
        policies,
    }
}

/// The peers and ports of one direction's rules of a policy.
type Rules<'a> = Vec<(
    Option<&'a [NetworkPolicyPeer]>,
    &'a Option<Vec<NetworkPolicyPort>>,
)>;

/// What the rules (of one direction) of the selecting policies allow, together.
fn union(
    input: &Input,
    policies: &[&&NetworkPolicy],
    rules: impl for<'a> Fn(&'a NetworkPolicySpec) -> Rules<'a>,
) -> Direction {
    let mut allows = vec![];
    for p in policies {
        for (peers, ports) in p.spec.iter().flat_map(&rules) {
            allows.extend(rule_allows(input, p, peers, ports));
        }
    }
    Direction::Only(normalize(allows))
}

/// Whether a policy applies to a direction: `policyTypes`, or when it is absent Ingress
/// always and Egress when the policy has egress rules (as the API documents).
fn has_type(p: &NetworkPolicy, kind: &str) -> bool {
    let Some(spec) = &p.spec else { return false };
    match &spec.policy_types {
        Some(types) => types.iter().any(|t| t == kind),
        None => kind == "Ingress" || spec.egress.is_some(),
    }
}

/// The allows of one rule: its peers (none listed: any) times its ports (none: any).
fn rule_allows(
    input: &Input,
    policy: &NetworkPolicy,
    peers: Option<&[NetworkPolicyPeer]>,
    ports: &Option<Vec<NetworkPolicyPort>>,
) -> Vec<Allow> {
    let Some(ports) = port_matches(ports) else {
        return vec![];
    };
    let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
    let cidrs: Vec<Option<Cidr>> = match peers {
        None | Some([]) => vec![None],
        Some(peers) => peers
            .iter()
            .flat_map(|peer| peer_cidrs(input, namespace, peer))
            .map(Some)
            .collect(),
    };
    cidrs
        .into_iter()
        .map(|peer| Allow {
            peer,
            ports: ports.clone(),
        })
        .collect()
}

/// A rule's ports: `Some(vec![])` for any port; `None` when every listed port is a named
/// one (container ports have no names here, so such a rule matches nothing).
fn port_matches(ports: &Option<Vec<NetworkPolicyPort>>) -> Option<Vec<PortMatch>> {
    let Some(ports) = ports.as_ref().filter(|p| !p.is_empty()) else {
        return Some(vec![]);
    };
    let out: Vec<PortMatch> = ports
        .iter()
        .filter_map(|p| {
            let protocol = match p.protocol.as_deref() {
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                _ => Protocol::Tcp,
            };
            let ports = match &p.port {
                None => None,
                Some(IntOrString::Int(n)) => {
                    let first = u16::try_from(*n).ok()?;
                    let last = p
                        .end_port
                        .and_then(|e| u16::try_from(e).ok())
                        .filter(|e| *e >= first)
                        .unwrap_or(first);
                    Some((first, last))
                }
                Some(IntOrString::String(_)) => return None,
            };
            Some(PortMatch { protocol, ports })
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

/// The addresses one peer names.
fn peer_cidrs(input: &Input, namespace: &str, peer: &NetworkPolicyPeer) -> Vec<Cidr> {
    if let Some(block) = &peer.ip_block {
        let Ok(cidr) = block.cidr.parse::<Cidr>() else {
            return vec![]; // IPv6 or malformed: the instance network is IPv4
        };
        let except: Vec<Cidr> = block
            .except
            .iter()
            .flatten()
            .filter_map(|e| e.parse().ok())
            .collect();
        return subtract(cidr, &except);
    }
    let in_namespace = |ns: &str| match &peer.namespace_selector {
        None => ns == namespace,
        Some(sel) => {
            let empty = Labels::new();
            selects(sel, input.namespaces.get(ns).unwrap_or(&empty))
        }
    };
    input
        .members
        .iter()
        .filter(|m| in_namespace(&m.namespace))
        .filter(|m| {
            peer.pod_selector
                .as_ref()
                .is_none_or(|sel| selects(sel, &m.labels))
        })
        .map(|m| Cidr::host(m.ip))
        .collect()
}

/// Whether a label selector selects `labels` (the empty selector selects everything; an
/// unknown operator selects nothing).
pub fn selects(sel: &LabelSelector, labels: &Labels) -> bool {
    let by_label = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_label && by_expression
}

/// Sorted, without duplicates (so that equal inputs render equal rule sets).
fn normalize(mut allows: Vec<Allow>) -> Vec<Allow> {
    for a in &mut allows {
        a.ports.sort();
        a.ports.dedup();
    }
    allows.sort();
    allows.dedup();
    allows
}

/// An address as the planner takes it: IPv4 only.
pub fn ipv4(ip: &str) -> Option<Ipv4Addr> {
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
