//! Isolation levels: how far a namespace (or a host) lets an instance relax the default walls.
//!
//! This module is the one definition of the levels. The API server enforces them through the
//! ValidatingAdmissionPolicy that [`admission_policy_template`] writes into the chart (so the
//! CEL and this code cannot drift: `make crds` regenerates both and a test compares), the
//! scheduler places instances only on hosts whose floor accepts their level, and the node
//! agent refuses an instance below its own floor whatever the API said.
//!
//! - `strict`: every default wall. User namespace on, seccomp RuntimeDefault or a Localhost
//!   profile, no capability added, read-only root filesystem.
//! - `baseline`: `strict` plus a short list of relaxations that stay inside the instance's
//!   own user namespace: the capabilities in [`BASELINE_CAPABILITIES`], seccomp Record and
//!   Complain (the filter still runs and reports), and a writable root filesystem.
//! - `privileged`: anything the schema accepts, including no user namespace (root inside is
//!   root outside), seccomp Unconfined and every capability.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::isolation::{Capability, Isolation, SeccompType};

/// Namespace label that sets the namespace's isolation level.
pub const LABEL_ISOLATION: &str = "bulkhead.dev/isolation";

/// How much an instance may relax the default walls, weakest last.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
#[serde(rename_all = "lowercase")]
pub enum IsolationLevel {
    /// Every default wall.
    #[default]
    Strict,
    /// The named relaxations that stay inside the instance's user namespace.
    Baseline,
    /// Anything, including host root and no seccomp filter.
    Privileged,
}

impl IsolationLevel {
    /// Every level, strictest first.
    pub const ALL: [IsolationLevel; 3] = [Self::Strict, Self::Baseline, Self::Privileged];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Strict => "strict",
            Self::Baseline => "baseline",
            Self::Privileged => "privileged",
        }
    }

    /// Parses a label or flag value.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// Whether an instance that needs `needed` is allowed where this level is the limit.
    pub fn allows(self, needed: IsolationLevel) -> bool {
        needed <= self
    }
}

impl fmt::Display for IsolationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Capabilities `baseline` allows. Each acts only inside the instance's own user namespace
/// (which `baseline` keeps on): on files it owns and processes it runs, mapped to its own
/// unprivileged host range.
/// - NET_BIND_SERVICE: listen on ports below 1024 in its own network namespace.
/// - CHOWN, DAC_OVERRIDE, FOWNER, FSETID: manage its own files (package managers, entrypoints
///   that fix ownership); the image's files are read-only and owned outside the range.
/// - SETUID, SETGID: switch between the users of its own range (servers that drop root).
/// - KILL: signal its own processes across those users.
pub const BASELINE_CAPABILITIES: &[Capability] = &[
    Capability::CHOWN,
    Capability::DAC_OVERRIDE,
    Capability::FOWNER,
    Capability::FSETID,
    Capability::KILL,
    Capability::SETGID,
    Capability::SETUID,
    Capability::NET_BIND_SERVICE,
];

/// One way an isolation block is weaker than `strict`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relaxation {
    /// The field, as the API names it (`spec.isolation.userNamespace`).
    pub field: &'static str,
    /// What it asks for (`false`, `Unconfined`, `SYS_ADMIN`).
    pub value: String,
    /// The weakest level that allows it.
    pub level: IsolationLevel,
}

impl fmt::Display for Relaxation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} needs {}", self.field, self.value, self.level)
    }
}

/// The field paths, relative to the object.
mod fields {
    pub const USER_NAMESPACE: &str = "spec.isolation.userNamespace";
    pub const SECCOMP: &str = "spec.isolation.seccomp.type";
    pub const CAPABILITIES: &str = "spec.isolation.capabilities.add";
    pub const READ_ONLY_ROOT: &str = "spec.isolation.readOnlyRootFilesystem";
}

/// Every relaxation `iso` asks for, in field order.
pub fn relaxations(iso: &Isolation) -> Vec<Relaxation> {
    let mut out = Vec::new();
    if !iso.user_namespace {
        out.push(Relaxation {
            field: fields::USER_NAMESPACE,
            value: "false".into(),
            level: IsolationLevel::Privileged,
        });
    }
    let seccomp = match iso.seccomp.type_ {
        SeccompType::RuntimeDefault | SeccompType::Localhost => None,
        SeccompType::Record => Some(("Record", IsolationLevel::Baseline)),
        SeccompType::Complain => Some(("Complain", IsolationLevel::Baseline)),
        SeccompType::Unconfined => Some(("Unconfined", IsolationLevel::Privileged)),
    };
    if let Some((value, level)) = seccomp {
        out.push(Relaxation {
            field: fields::SECCOMP,
            value: value.into(),
            level,
        });
    }
    for cap in &iso.capabilities.add {
        let level = if BASELINE_CAPABILITIES.contains(cap) {
            IsolationLevel::Baseline
        } else {
            IsolationLevel::Privileged
        };
        out.push(Relaxation {
            field: fields::CAPABILITIES,
            value: cap.as_str().into(),
            level,
        });
    }
    if !iso.read_only_root_filesystem {
        out.push(Relaxation {
            field: fields::READ_ONLY_ROOT,
            value: "false".into(),
            level: IsolationLevel::Baseline,
        });
    }
    out
}

/// The strictest level that allows `iso`.
pub fn required_level(iso: &Isolation) -> IsolationLevel {
    relaxations(iso)
        .iter()
        .map(|r| r.level)
        .max()
        .unwrap_or(IsolationLevel::Strict)
}

/// The relaxations of `iso` that `limit` does not allow.
pub fn beyond(iso: &Isolation, limit: IsolationLevel) -> Vec<Relaxation> {
    relaxations(iso)
        .into_iter()
        .filter(|r| !limit.allows(r.level))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolation::{Capabilities, Seccomp};

    fn iso() -> Isolation {
        Isolation::default()
    }

    #[test]
    fn the_defaults_are_strict() {
        assert!(relaxations(&iso()).is_empty());
        assert_eq!(required_level(&iso()), IsolationLevel::Strict);
    }

    #[test]
    fn each_relaxation_needs_its_level() {
        let cases: Vec<(Isolation, &str, IsolationLevel)> = vec![
            (
                Isolation {
                    user_namespace: false,
                    ..iso()
                },
                fields::USER_NAMESPACE,
                IsolationLevel::Privileged,
            ),
            (
                Isolation {
                    read_only_root_filesystem: false,
                    ..iso()
                },
                fields::READ_ONLY_ROOT,
                IsolationLevel::Baseline,
            ),
            (
                Isolation {
                    seccomp: Seccomp {
                        type_: SeccompType::Unconfined,
                        localhost_profile: None,
                    },
                    ..iso()
                },
                fields::SECCOMP,
                IsolationLevel::Privileged,
            ),
            (
                Isolation {
                    seccomp: Seccomp {
                        type_: SeccompType::Record,
                        localhost_profile: None,
                    },
                    ..iso()
                },
                fields::SECCOMP,
                IsolationLevel::Baseline,
            ),
            (
                Isolation {
                    seccomp: Seccomp {
                        type_: SeccompType::Complain,
                        localhost_profile: Some("p".into()),
                    },
                    ..iso()
                },
                fields::SECCOMP,
                IsolationLevel::Baseline,
            ),
        ];
        for (iso, field, level) in cases {
            let r = relaxations(&iso);
            assert_eq!(r.len(), 1, "{iso:?}");
            assert_eq!(r[0].field, field);
            assert_eq!(r[0].level, level);
            assert_eq!(required_level(&iso), level);
        }
    }

    #[test]
    fn every_capability_outside_the_baseline_list_is_privileged() {
        for cap in Capability::ALL {
            let iso = Isolation {
                capabilities: Capabilities { add: vec![*cap] },
                ..iso()
            };
            let expected = if BASELINE_CAPABILITIES.contains(cap) {
                IsolationLevel::Baseline
            } else {
                IsolationLevel::Privileged
            };
            assert_eq!(required_level(&iso), expected, "{cap:?}");
        }
        assert!(!BASELINE_CAPABILITIES.contains(&Capability::SYS_ADMIN));
        assert!(!BASELINE_CAPABILITIES.contains(&Capability::NET_RAW));
    }

    #[test]
    fn beyond_names_only_what_the_limit_refuses() {
        let iso = Isolation {
            read_only_root_filesystem: false,
            capabilities: Capabilities {
                add: vec![Capability::NET_BIND_SERVICE, Capability::SYS_ADMIN],
            },
            ..iso()
        };
        let b = beyond(&iso, IsolationLevel::Baseline);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].value, "SYS_ADMIN");
        assert_eq!(beyond(&iso, IsolationLevel::Strict).len(), 3);
        assert!(beyond(&iso, IsolationLevel::Privileged).is_empty());
    }

    #[test]
    fn levels_order_and_parse() {
        assert!(IsolationLevel::Privileged.allows(IsolationLevel::Baseline));
        assert!(!IsolationLevel::Strict.allows(IsolationLevel::Baseline));
        for l in IsolationLevel::ALL {
            assert_eq!(IsolationLevel::parse(l.as_str()), Some(l));
        }
        assert_eq!(IsolationLevel::parse("Strict"), None);
    }
}
