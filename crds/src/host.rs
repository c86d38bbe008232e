//! Host: a machine that runs instances, registered and kept fresh by its node agent.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A machine that runs instances. Its node agent registers it, reports what the kernel can
/// enforce, and renews a Lease in bulkhead-system; a Host whose Lease expires is not Ready.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "Host",
    status = "HostStatus",
    shortname = "bhost",
    category = "bulkhead",
    derive = "PartialEq",
    doc = "A machine that runs instances, registered by its node agent, with what its kernel can enforce. Liveness is a Lease in bulkhead-system.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Unschedulable",
        type_ = "boolean",
        json_path = ".spec.unschedulable"
    ),
    printcolumn(
        name = "Kernel",
        type_ = "string",
        json_path = ".status.nodeInfo.kernelVersion"
    ),
    printcolumn(
        name = "SELinux",
        type_ = "string",
        json_path = ".status.features.selinux"
    ),
    printcolumn(name = "Floor", type_ = "string", json_path = ".status.isolationFloor"),
    printcolumn(
        name = "Instances",
        type_ = "integer",
        json_path = ".status.allocations.instances"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    /// Cordon: no new instances are scheduled here; running ones stay.
    #[serde(default)]
    pub unschedulable: bool,
}

/// Observed state of a Host, written by its node agent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// What the host offers to instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<HostCapacity>,
    /// Versions of the kernel and runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_info: Option<NodeInfo>,
    /// Isolation features the kernel offers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<HostFeatures>,
    /// Allocations in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocations: Option<HostAllocations>,
    /// The weakest isolation level this host's operator lets it run (the agent's
    /// `--isolation-floor`): the agent refuses any instance that needs more, and the scheduler
    /// places none here. Absent means strict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_floor: Option<crate::policy::IsolationLevel>,
}

/// Capacity of a host.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostCapacity {
    /// CPU in millicores.
    pub cpu_millis: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Maximum number of instances (bounded by the UID range pool).
    pub instances: i64,
}

/// Software versions of a host.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// Kernel release (uname -r).
    pub kernel_version: String,
    /// CPU architecture.
    pub architecture: String,
    /// containerd version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containerd_version: Option<String>,
    /// OCI runtime (runc) version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runc_version: Option<String>,
    /// bulkhead-node-agent version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
}

/// Isolation features of a host's kernel.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostFeatures {
    /// 1 (legacy or hybrid hierarchy) or 2 (unified).
    pub cgroup_version: i32,
    /// Cgroup controllers available to instances.
    #[serde(default)]
    pub cgroup_controllers: Vec<String>,
    /// Whether seccomp filters are supported.
    pub seccomp: bool,
    /// Seccomp actions the kernel supports (from /proc/sys/kernel/seccomp/actions_avail).
    #[serde(default)]
    pub seccomp_actions: Vec<String>,
    /// SELinux mode.
    pub selinux: SELinuxHostMode,
    /// Whether AppArmor is enabled.
    pub apparmor: bool,
    /// Whether unprivileged user namespaces can be created.
    pub user_namespaces: bool,
    /// Whether the kernel supports idmapped mounts.
    #[serde(default)]
    pub idmapped_mounts: bool,
}

/// SELinux mode of a host.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SELinuxHostMode {
    /// SELinux is not enabled.
    #[default]
    Disabled,
    /// SELinux logs but does not deny.
    Permissive,
    /// SELinux denies.
    Enforcing,
}

/// Allocations in use on a host.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HostAllocations {
    /// Instances the agent runs.
    pub instances: i64,
    /// UID/GID ranges in use.
    pub uid_ranges: i64,
    /// MCS pairs in use.
    pub mcs_pairs: i64,
    /// CPU reserved by instances, in millicores.
    #[serde(default)]
    pub cpu_millis: i64,
    /// Memory reserved by instances, in bytes.
    #[serde(default)]
    pub memory_bytes: i64,
}
