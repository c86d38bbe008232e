//! Choosing a host: filters, then scores (pure).

use std::collections::BTreeMap;

use bulkhead_crds::{
    InstanceSpec,
    host::{HostCapacity, HostFeatures, SELinuxHostMode},
    isolation::{SELinuxMode, SeccompType},
    policy::{self, IsolationLevel},
};

/// What an instance asks of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// SELinux must be enforcing.
    pub selinux_required: bool,
    /// A user namespace is needed.
    pub user_namespace: bool,
    /// A seccomp filter is needed.
    pub seccomp: bool,
    /// The isolation level it needs (each host's floor must allow it).
    pub isolation_level: IsolationLevel,
    /// The Workload it belongs to, for spreading.
    pub workload: Option<String>,
}

impl Requirements {
    /// Requirements of an Instance spec. Memory is what the agent enforces: the default when
    /// unset. A quantity that does not parse (too large for 64 bits) asks for everything, so it
    /// never fits anywhere, rather than nothing, which would fit everywhere.
    pub fn of(spec: &InstanceSpec, workload: Option<String>) -> Self {
        let r = &spec.template.resources;
        Self {
            cpu_millis: r.cpu.as_deref().map_or(0, |c| {
                bulkhead_crds::quantity::cpu_millis(c).unwrap_or(i64::MAX)
            }),
            memory_bytes: bulkhead_crds::quantity::memory_bytes(r.memory_or_default())
                .unwrap_or(i64::MAX),
            selinux_required: spec.isolation.selinux.mode == SELinuxMode::Required,
            user_namespace: spec.isolation.user_namespace,
            seccomp: spec.isolation.seccomp.type_ != SeccompType::Unconfined,
            isolation_level: policy::required_level(&spec.isolation),
            workload,
        }
    }
}

/// A host as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostView {
    /// Host name.
    pub name: String,
    /// Its Lease is fresh and its agent reports Ready.
    pub ready: bool,
    /// Cordoned.
    pub unschedulable: bool,
    /// Isolation features.
    pub features: HostFeatures,
    /// The weakest isolation level it runs (strict when it publishes none).
    pub isolation_floor: IsolationLevel,
    /// Capacity.
    pub capacity: HostCapacity,
    /// CPU reserved by bound instances. 128 bits: a sum of any number of 64-bit requests
    /// stays exact.
    pub used_cpu_millis: i128,
    /// Memory reserved by bound instances, exact in 128 bits.
    pub used_memory_bytes: i128,
    /// Instances bound to it.
    pub instances: i64,
    /// Instances per Workload bound to it.
    pub per_workload: BTreeMap<String, i64>,
}

impl HostView {
    /// Counts an instance bound to this host. The sums are 128-bit, so they never wrap into a
    /// host that looks empty (they saturate, far past any 64-bit capacity).
    pub fn reserve(&mut self, req: &Requirements) {
        self.used_cpu_millis = self
            .used_cpu_millis
            .saturating_add(i128::from(req.cpu_millis));
        self.used_memory_bytes = self
            .used_memory_bytes
            .saturating_add(i128::from(req.memory_bytes));
        self.instances = self.instances.saturating_add(1);
        if let Some(w) = &req.workload {
            let n = self.per_workload.entry(w.clone()).or_default();
            *n = n.saturating_add(1);
        }
    }
}

/// Why a host does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejection {
    /// Its agent is not renewing its Lease.
    NotReady,
    /// Cordoned.
    Unschedulable,
    /// SELinux is not enforcing.
    NoSelinux,
    /// No user namespaces.
    NoUserNamespaces,
    /// No seccomp.
    NoSeccomp,
    /// Its operator does not let it run isolation this weak.
    IsolationFloor,
    /// Not enough CPU left.
    InsufficientCpu,
    /// Not enough memory left.
    InsufficientMemory,
    /// Its instance limit is reached.
    TooManyInstances,
}

impl Rejection {
    fn phrase(self, req: &Requirements) -> String {
        match self {
            Rejection::IsolationFloor => format!(
                "have an isolation floor stricter than {} (the agent's --isolation-floor)",
                req.isolation_level
            ),
            _ => self.fixed_phrase().to_string(),
        }
    }

    fn fixed_phrase(self) -> &'static str {
        match self {
            Rejection::IsolationFloor => "have a stricter isolation floor",
            Rejection::NotReady => "not ready",
            Rejection::Unschedulable => "unschedulable",
            Rejection::NoSelinux => "lack SELinux enforcing",
            Rejection::NoUserNamespaces => "lack user namespaces",
            Rejection::NoSeccomp => "lack seccomp",
            Rejection::InsufficientCpu => "insufficient cpu",
            Rejection::InsufficientMemory => "insufficient memory",
            Rejection::TooManyInstances => "too many instances",
        }
    }
}

fn reject(host: &HostView, req: &Requirements) -> Option<Rejection> {
    if !host.ready {
        return Some(Rejection::NotReady);
    }
    if host.unschedulable {
        return Some(Rejection::Unschedulable);
    }
    if req.selinux_required && host.features.selinux != SELinuxHostMode::Enforcing {
        return Some(Rejection::NoSelinux);
    }
    if req.user_namespace && !host.features.user_namespaces {
        return Some(Rejection::NoUserNamespaces);
    }
    if req.seccomp && !host.features.seccomp {
        return Some(Rejection::NoSeccomp);
    }
    if !host.isolation_floor.allows(req.isolation_level) {
        return Some(Rejection::IsolationFloor);
    }
    if !fits(
        host.used_cpu_millis,
        req.cpu_millis,
        host.capacity.cpu_millis,
    ) {
        return Some(Rejection::InsufficientCpu);
    }
    if !fits(
        host.used_memory_bytes,
        req.memory_bytes,
        host.capacity.memory_bytes,
    ) {
        return Some(Rejection::InsufficientMemory);
    }
    if host.instances >= host.capacity.instances {
        return Some(Rejection::TooManyInstances);
    }
    None
}

/// `used + asked <= capacity`, exactly: nothing wraps into "the host is empty".
fn fits(used: i128, asked: i64, capacity: i64) -> bool {
    used.saturating_add(i128::from(asked)) <= i128::from(capacity)
}

/// `(used + asked) / capacity` in millionths, saturating; 0 for a host that reports no
/// capacity.
fn allocated_fraction(used: i128, asked: i64, capacity: i64) -> u64 {
    if capacity <= 0 {
        return 0;
    }
    let total = used.saturating_add(i128::from(asked)).max(0);
    (total as f64 / capacity as f64 * 1e6) as u64
}

/// Picks a host: among those that fit, the one with fewest instances of the same Workload,
/// then the least allocated (CPU and memory fractions), then by name. Otherwise the
/// message that explains why no host fits.
pub fn choose(req: &Requirements, hosts: &[HostView]) -> Result<String, String> {
    let mut rejected: BTreeMap<Rejection, usize> = BTreeMap::new();
    let mut best: Option<(i64, u64, &str)> = None;
    for h in hosts {
        if let Some(r) = reject(h, req) {
            *rejected.entry(r).or_default() += 1;
            continue;
        }
        let same = req
            .workload
            .as_ref()
            .and_then(|w| h.per_workload.get(w))
            .copied()
            .unwrap_or(0);
        let allocated =
            allocated_fraction(h.used_cpu_millis, req.cpu_millis, h.capacity.cpu_millis)
                .saturating_add(allocated_fraction(
                    h.used_memory_bytes,
                    req.memory_bytes,
                    h.capacity.memory_bytes,
                ));
        let key = (same, allocated, h.name.as_str());
        if best.is_none_or(|b| key < b) {
            best = Some(key);
        }
    }
    match best {
        Some((_, _, name)) => Ok(name.to_string()),
        None => {
            let reasons: Vec<String> = rejected
                .iter()
                .map(|(r, n)| format!("{n} {}", r.phrase(req)))
                .collect();
            let detail = if reasons.is_empty() {
                "no hosts registered".to_string()
            } else {
                reasons.join(", ")
            };
            Err(format!("0/{} hosts: {detail}", hosts.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> HostView {
        HostView {
            name: name.into(),
            ready: true,
            unschedulable: false,
            features: HostFeatures {
                seccomp: true,
                user_namespaces: true,
                ..Default::default()
            },
            isolation_floor: IsolationLevel::Strict,
            capacity: HostCapacity {
                cpu_millis: 2000,
                memory_bytes: 1 << 30,
                instances: 10,
            },
            used_cpu_millis: 0,
            used_memory_bytes: 0,
            instances: 0,
            per_workload: BTreeMap::new(),
        }
    }

    fn req() -> Requirements {
        Requirements {
            cpu_millis: 500,
            memory_bytes: 64 << 20,
            selinux_required: false,
            user_namespace: true,
            seccomp: true,
            isolation_level: IsolationLevel::Strict,
            workload: Some("web".into()),
        }
    }

    #[test]
    fn spreads_a_workload_then_prefers_the_least_allocated() {
        let mut a = host("a");
        a.per_workload.insert("web".into(), 1);
        let b = host("b");
        assert_eq!(choose(&req(), &[a.clone(), b.clone()]), Ok("b".into()));
        let mut b2 = b.clone();
        b2.per_workload.insert("web".into(), 1);
        b2.used_cpu_millis = 1000;
        assert_eq!(
            choose(&req(), &[a, b2]),
            Ok("a".into()),
            "equal spread: least allocated wins"
        );
    }

    #[test]
    fn explains_why_nothing_fits() {
        let mut a = host("a");
        a.used_memory_bytes = 1 << 30;
        let b = host("b");
        let c = host("c");
        let mut r = req();
        r.selinux_required = true;
        let mut enforcing = host("d");
        enforcing.features.selinux = SELinuxHostMode::Enforcing;
        enforcing.used_memory_bytes = 1 << 30;
        assert_eq!(
            choose(&r, &[a, b, c, enforcing]),
            Err("0/4 hosts: 3 lack SELinux enforcing, 1 insufficient memory".into())
        );
    }

    #[test]
    fn filters_each_requirement() {
        let mut not_ready = host("n");
        not_ready.ready = false;
        let mut cordoned = host("c");
        cordoned.unschedulable = true;
        let mut full = host("f");
        full.instances = 10;
        let mut no_userns = host("u");
        no_userns.features.user_namespaces = false;
        let mut busy = host("b");
        busy.used_cpu_millis = 1800;
        assert_eq!(
            choose(&req(), &[not_ready, cordoned, full, no_userns, busy]),
            Err("0/5 hosts: 1 not ready, 1 unschedulable, 1 lack user namespaces, 1 insufficient cpu, 1 too many instances".into())
        );
        assert_eq!(
            choose(&req(), &[]),
            Err("0/0 hosts: no hosts registered".into())
        );
    }

    #[test]
    fn a_relaxed_instance_goes_only_where_the_floor_allows_it() {
        let mut r = req();
        r.isolation_level = IsolationLevel::Privileged;
        let strict = host("a");
        let mut baseline = host("b");
        baseline.isolation_floor = IsolationLevel::Baseline;
        let err = choose(&r, &[strict.clone(), baseline.clone()]).unwrap_err();
        assert_eq!(
            err,
            "0/2 hosts: 2 have an isolation floor stricter than privileged (the agent's --isolation-floor)"
        );
        let mut privileged = host("c");
        privileged.isolation_floor = IsolationLevel::Privileged;
        assert_eq!(
            choose(&r, &[strict.clone(), baseline.clone(), privileged]).unwrap(),
            "c"
        );
        r.isolation_level = IsolationLevel::Baseline;
        assert_eq!(choose(&r, &[strict, baseline]).unwrap(), "b");
    }

    #[test]
    fn unset_memory_reserves_the_default_and_huge_quantities_never_fit() {
        let mut spec = InstanceSpec {
            host_name: None,
            revision: "r1".into(),
            template: Default::default(),
            isolation: Default::default(),
            seccomp_profile_digest: None,
            image_signature: None,
        };
        spec.template.resources.memory = None;
        assert_eq!(
            Requirements::of(&spec, None).memory_bytes,
            256 << 20,
            "what the agent enforces"
        );
        spec.template.resources = Default::default();
        assert_eq!(Requirements::of(&spec, None).memory_bytes, 256 << 20);
        spec.template.resources.memory = Some("9223372036854775807".into());
        spec.template.resources.cpu = Some("9223372036854775807".into());
        let r = Requirements::of(&spec, None);
        assert_eq!((r.cpu_millis, r.memory_bytes), (i64::MAX, i64::MAX));
        let mut big = host("big");
        big.capacity.memory_bytes = i64::MAX;
        big.capacity.cpu_millis = i64::MAX;
        big.used_memory_bytes = 1;
        big.used_cpu_millis = 1;
        let mut r = req();
        r.memory_bytes = i64::MAX;
        assert_eq!(
            choose(&r, &[big]),
            Err("0/1 hosts: 1 insufficient memory".into()),
            "1 + i64::MAX must not wrap into a fit"
        );
    }

    #[test]
    fn reserving_never_wraps() {
        let mut h = host("a");
        let mut r = req();
        r.memory_bytes = i64::MAX;
        r.cpu_millis = i64::MAX;
        h.reserve(&r);
        h.reserve(&r);
        assert_eq!(h.used_memory_bytes, 2 * i128::from(i64::MAX));
        assert_eq!(h.used_cpu_millis, 2 * i128::from(i64::MAX));
        assert_eq!(h.per_workload.get("web"), Some(&2));
        h.capacity.memory_bytes = i64::MAX;
        h.capacity.cpu_millis = i64::MAX;
        let mut small = req();
        small.memory_bytes = 1;
        small.cpu_millis = 0;
        assert!(choose(&small, &[h]).is_err(), "a full host stays full");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn extreme() -> impl Strategy<Value = i64> {
            prop_oneof![
                Just(0i64),
                Just(1),
                Just(i64::MAX),
                Just(i64::MAX - 1),
                Just(i64::MAX / 2),
                Just(i64::MAX / 2 + 1),
                0i64..=i64::MAX,
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            /// A host is chosen only when what is bound plus what is asked fits in exact
            /// (128-bit) arithmetic, whatever the values.
            #[test]
            fn chosen_only_when_it_really_fits(
                reserved in proptest::collection::vec((extreme(), extreme()), 0..4),
                asked in (extreme(), extreme()),
                capacity in (extreme(), extreme()),
            ) {
                let mut h = host("a");
                h.capacity.cpu_millis = capacity.0;
                h.capacity.memory_bytes = capacity.1;
                h.capacity.instances = i64::MAX;
                let mut exact = (0i128, 0i128);
                for (cpu, memory) in &reserved {
                    let mut r = req();
                    r.cpu_millis = *cpu;
                    r.memory_bytes = *memory;
                    h.reserve(&r);
                    exact.0 += i128::from(*cpu);
                    exact.1 += i128::from(*memory);
                }
                prop_assert!(h.used_cpu_millis >= 0 && h.used_memory_bytes >= 0);
                let mut r = req();
                r.cpu_millis = asked.0;
                r.memory_bytes = asked.1;
                let really_fits = exact.0 + i128::from(asked.0) <= i128::from(capacity.0)
                    && exact.1 + i128::from(asked.1) <= i128::from(capacity.1);
                prop_assert_eq!(choose(&r, &[h]).is_ok(), really_fits);
            }
        }
    }
}
