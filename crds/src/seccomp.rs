//! SeccompProfile: a seccomp filter in the OCI / Docker JSON format.
//!
//! The spec is the profile itself, so an existing Docker or OCI profile applies unchanged
//! under `spec:`, including Docker's full form (archMap, includes/excludes by capability,
//! architecture and kernel version).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::syscalls::SYSCALL_NAMES;

/// A seccomp filter, in the OCI / Docker profile format, that Workloads reference with
/// isolation.seccomp.type Localhost. Recorded profiles are written by the node agent.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "SeccompProfile",
    namespaced,
    status = "SeccompProfileStatus",
    shortname = "scp",
    category = "bulkhead",
    derive = "PartialEq",
    doc = "A seccomp filter in the OCI / Docker JSON profile format. Workloads use it with isolation.seccomp.type Localhost; the node agent writes recorded profiles.",
    printcolumn(name = "Default", type_ = "string", json_path = ".spec.defaultAction"),
    printcolumn(
        name = "Syscalls",
        type_ = "integer",
        json_path = ".status.syscallCount"
    ),
    printcolumn(
        name = "Digest",
        type_ = "string",
        json_path = ".status.digest",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SeccompProfileSpec {
    /// Action for a system call that no rule matches.
    pub default_action: SeccompAction,
    /// errno returned by defaultAction SCMP_ACT_ERRNO (EPERM when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4095))]
    pub default_errno_ret: Option<u32>,
    /// Architectures the filter accepts; the host's own when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub architectures: Vec<Arch>,
    /// Docker's form: for each native architecture, the sub-architectures it also accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub arch_map: Vec<ArchMap>,
    /// Seccomp filter flags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub flags: Vec<FilterFlag>,
    /// Rules, evaluated in order; the first whose names and conditions match decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 512))]
    pub syscalls: Vec<SyscallRule>,
}

impl SeccompProfileSpec {
    /// A profile that allows exactly `names` and refuses everything else with EPERM.
    pub fn allowlist(names: impl IntoIterator<Item = String>, comment: &str) -> Self {
        Self {
            default_action: SeccompAction::SCMP_ACT_ERRNO,
            default_errno_ret: None,
            architectures: vec![],
            arch_map: vec![],
            flags: vec![],
            syscalls: vec![SyscallRule {
                names: names.into_iter().collect(),
                action: SeccompAction::SCMP_ACT_ALLOW,
                errno_ret: None,
                args: vec![],
                comment: comment.to_string(),
                includes: None,
                excludes: None,
            }],
        }
    }

    /// The number of distinct system call names the rules name, whatever their action.
    pub fn syscall_count(&self) -> usize {
        self.syscalls
            .iter()
            .flat_map(|rule| rule.names.iter())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }

    /// The version of this profile: `sha256:` and the hex sha256 of the spec's JSON. Equal
    /// specs give equal digests in any process (struct fields serialize in a fixed order).
    pub fn content_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("sha256:{}", hex::encode(Sha256::digest(json)))
    }
}

/// An action of a seccomp rule.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types, missing_docs)]
pub enum SeccompAction {
    SCMP_ACT_KILL,
    SCMP_ACT_KILL_PROCESS,
    SCMP_ACT_KILL_THREAD,
    SCMP_ACT_TRAP,
    SCMP_ACT_ERRNO,
    SCMP_ACT_TRACE,
    SCMP_ACT_ALLOW,
    SCMP_ACT_LOG,
    SCMP_ACT_NOTIFY,
}

/// A seccomp architecture.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types, missing_docs)]
pub enum Arch {
    SCMP_ARCH_NATIVE,
    SCMP_ARCH_X86,
    SCMP_ARCH_X86_64,
    SCMP_ARCH_X32,
    SCMP_ARCH_ARM,
    SCMP_ARCH_AARCH64,
    SCMP_ARCH_MIPS,
    SCMP_ARCH_MIPS64,
    SCMP_ARCH_MIPS64N32,
    SCMP_ARCH_MIPSEL,
    SCMP_ARCH_MIPSEL64,
    SCMP_ARCH_MIPSEL64N32,
    SCMP_ARCH_PPC,
    SCMP_ARCH_PPC64,
    SCMP_ARCH_PPC64LE,
    SCMP_ARCH_S390,
    SCMP_ARCH_S390X,
    SCMP_ARCH_PARISC,
    SCMP_ARCH_PARISC64,
    SCMP_ARCH_RISCV64,
    SCMP_ARCH_LOONGARCH64,
    SCMP_ARCH_M68K,
    SCMP_ARCH_SH,
    SCMP_ARCH_SHEB,
}

/// A native architecture and the sub-architectures it also runs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    /// The native architecture.
    pub architecture: Arch,
    /// Architectures whose system calls the native one also accepts (e.g. x86 on x86_64).
    #[serde(default, deserialize_with = "null_as_empty")]
    #[schemars(length(max = 8))]
    pub sub_architectures: Vec<Arch>,
}

/// Docker's profiles write `null` for an empty list.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A seccomp filter flag.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, missing_docs)]
pub enum FilterFlag {
    SECCOMP_FILTER_FLAG_TSYNC,
    SECCOMP_FILTER_FLAG_LOG,
    SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}

/// One rule: system call names, the action, and optional argument conditions.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyscallRule {
    /// System call names this rule matches.
    #[schemars(schema_with = "syscall_names_schema")]
    pub names: Vec<String>,
    /// What happens when the rule matches.
    pub action: SeccompAction,
    /// errno returned by SCMP_ACT_ERRNO (defaultErrnoRet, or EPERM, when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4095))]
    pub errno_ret: Option<u32>,
    /// Conditions on the arguments; all must hold. At most 6, one per argument register.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6))]
    pub args: Vec<SyscallArg>,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 1024))]
    pub comment: String,
    /// The rule applies only when these hold (Docker's form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub includes: Option<RuleFilter>,
    /// The rule does not apply when any of these hold (Docker's form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excludes: Option<RuleFilter>,
}

fn syscall_names_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 512,
        "items": { "type": "string", "minLength": 1, "maxLength": 64, "enum": SYSCALL_NAMES },
    })
}

/// A condition on one system call argument.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyscallArg {
    /// Argument position, 0 to 5.
    #[schemars(range(max = 5))]
    pub index: u32,
    /// Value compared with the argument.
    pub value: u64,
    /// Second value: the expected result for SCMP_CMP_MASKED_EQ, where value is the mask.
    #[serde(default)]
    pub value_two: u64,
    /// Comparison.
    pub op: ArgOp,
}

/// A comparison operator of an argument condition.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, missing_docs)]
pub enum ArgOp {
    SCMP_CMP_NE,
    SCMP_CMP_LT,
    SCMP_CMP_LE,
    SCMP_CMP_EQ,
    SCMP_CMP_GE,
    SCMP_CMP_GT,
    SCMP_CMP_MASKED_EQ,
}

/// Conditions on where a rule applies (Docker's includes / excludes).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RuleFilter {
    /// Capabilities the instance holds, with the CAP_ prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 41), inner(pattern(r"^CAP_[A-Z_]+$")))]
    pub caps: Vec<String>,
    /// Architectures, in Go's naming (amd64, arm64, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(pattern(r"^[a-z0-9]+$")))]
    pub arches: Vec<String>,
    /// Minimum kernel version, `major.minor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+\.[0-9]+$"))]
    pub min_kernel: Option<String>,
}

/// Observed state of a SeccompProfile.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeccompProfileStatus {
    /// sha256 of the profile as the runtime receives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Number of distinct system call names the profile names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall_count: Option<i32>,
    /// Where a recorded profile came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_from: Option<RecordedFrom>,
    /// Conditions of the profile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// The run a recorded profile came from.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecordedFrom {
    /// The Workload.
    pub workload: String,
    /// The Instance observed.
    pub instance: String,
    /// When recording ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<Time>,
}
