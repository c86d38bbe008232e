//! Instance: one running copy of a Workload's revision on one host.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{isolation::Isolation, patterns, template::InstanceTemplate};

/// One isolated copy of a Workload revision, bound to a host. Created by the controller;
/// started, supervised, verified and reported by the node agent of its host.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "Instance",
    namespaced,
    status = "InstanceStatus",
    shortname = "inst",
    category = "bulkhead",
    derive = "PartialEq",
    selectable = ".spec.hostName",
    doc = "One isolated copy of a Workload revision, bound to a host. The controller creates it and binds it; the node agent of that host starts it, verifies what the kernel enforces, and reports.",
    printcolumn(name = "Host", type_ = "string", json_path = ".spec.hostName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "IP", type_ = "string", json_path = ".status.podIP"),
    printcolumn(name = "Revision", type_ = "string", json_path = ".spec.revision"),
    printcolumn(
        name = "MCS",
        type_ = "string",
        json_path = ".status.isolation.selinux.level",
        description = "SELinux MCS category pair"
    ),
    printcolumn(
        name = "UIDs",
        type_ = "string",
        json_path = ".status.isolation.userNamespace.range",
        description = "host UID range of the user namespace"
    ),
    printcolumn(
        name = "Restarts",
        type_ = "integer",
        json_path = ".status.restartCount",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(oldSelf.hostName) || (has(self.hostName) && self.hostName == oldSelf.hostName)"
).message("hostName cannot change once set").field_path(".hostName"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.imageSignature) || self.template.image.contains('@')"
).message("imageSignature requires template.image pinned by digest (registry/repository@sha256:...)").field_path(".imageSignature"))]
pub struct InstanceSpec {
    /// The Host this instance is bound to. Set once by the scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(patterns::DNS_SUBDOMAIN))]
    pub host_name: Option<String>,

    /// The Workload revision this instance runs (a hash of template and isolation).
    #[schemars(length(min = 1, max = 63), pattern(patterns::DNS_LABEL))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("revision is immutable"))]
    pub revision: String,

    /// What the instance runs, copied from the Workload revision.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("template is immutable: a new revision gets new instances"))]
    pub template: InstanceTemplate,

    /// How the instance is isolated, copied from the Workload revision.
    #[serde(default)]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("isolation is immutable: a new revision gets new instances"))]
    pub isolation: Isolation,

    /// The exact version of the SeccompProfile this instance runs with (seccomp type
    /// Localhost or Complain): `sha256:` and the hex digest of the profile's spec, see
    /// [`crate::SeccompProfileSpec::content_digest`]. Set by the controller from the
    /// profile when it created the instance; the agent refuses to start the instance when
    /// the profile no longer has this content. Unset: whatever the profile holds at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^sha256:[0-9a-f]{64}$"))]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("seccompProfileDigest is immutable: a new profile version gets a new revision"))]
    pub seccomp_profile_digest: Option<String>,

    /// The public keys the image's cosign signature must verify against. Set by the
    /// controller, for a Workload whose `imageUpdates` names trusted keys, from that
    /// ConfigMap when it created the instance; the agent verifies the signature of the
    /// pinned digest again before it starts the instance, and refuses it otherwise
    /// (`ImageNotTrusted`). Unset: no signature is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("imageSignature is immutable"))]
    pub image_signature: Option<ImageSignature>,
}

/// The keys an instance's image must be signed by (see [`InstanceSpec::image_signature`]).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageSignature {
    /// The trusted public keys, at least one: a valid signature by any of them suffices.
    #[schemars(length(min = 1, max = 8))]
    pub keys: Vec<SignatureKey>,
}

/// One trusted public key.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SignatureKey {
    /// Its name (the key of the ConfigMap it was copied from).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The PEM public key (the content of a `cosign.pub`).
    #[schemars(length(min = 1, max = 4096))]
    pub public_key: String,
}

/// Observed state of an Instance, written by the node agent of its host (the Scheduled
/// condition by the controller's scheduler).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Where the instance is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<InstancePhase>,
    /// A CamelCase reason for the phase, such as ImagePullFailed or CrashLoopBackOff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable explanation of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The instance's IP address on the host's instance network.
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    /// The containerd container ID.
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    /// The digest of the image manifest that runs, resolved once from the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// When the current process started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// Times the node agent restarted the process.
    #[serde(default)]
    pub restart_count: i32,
    /// How the previous process ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ExitStatus>,
    /// Seconds the agent waits after lastExit before restarting (CrashLoopBackOff).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_backoff_seconds: Option<i32>,
    /// Scheduled, Ready and IsolationVerified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// What the kernel enforces on the instance, read back from its running process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<IsolationStatus>,
}

/// Where an Instance is in its life.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstancePhase {
    /// Not yet bound to a host.
    Pending,
    /// Bound to a host whose agent has not started on it yet.
    Scheduled,
    /// The image is being fetched and verified.
    Pulling,
    /// The container is being created and started.
    Starting,
    /// The process runs.
    Running,
    /// The process exited 0 and will not be restarted.
    Succeeded,
    /// The instance failed and will not be restarted; reason says why.
    Failed,
    /// The instance is being stopped.
    Terminating,
    /// Its host stopped reporting; the instance is presumed gone.
    Lost,
}

/// How a process ended.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExitStatus {
    /// Exit code; 128+N when killed by signal N.
    pub exit_code: i32,
    /// The signal that killed the process, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it (memory.events oom_kill went up).
    #[serde(default, rename = "oomKilled")]
    pub oom_killed: bool,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// A CamelCase summary: Completed, Error, OOMKilled, LivenessProbeFailed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the kernel enforces on a running instance, as read back by the node agent.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IsolationStatus {
    /// SELinux label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selinux: Option<SELinuxStatus>,
    /// User namespace and its host UID/GID range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<UserNamespaceStatus>,
    /// Seccomp mode and profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<SeccompStatus>,
    /// Capability sets of the init process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<CapabilityStatus>,
    /// The no_new_privs bit of the init process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_new_privs: Option<bool>,
    /// The namespaces the init process is in, and whether each is its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<NamespaceStatus>,
    /// The cgroup and its limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<CgroupStatus>,
    /// Whether the root filesystem is mounted read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    /// The network walls the kernel holds for the instance on its host's bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStatus>,
    /// When the agent read these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<Time>,
}

/// An instance's network walls as applied (iptables rules on its host's bridge).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkStatus {
    /// Rules in the kernel for this instance (its ingress and egress chains and dispatch).
    pub rules: i32,
    /// `namespace/name` of the NetworkPolicies selecting it; empty: the defaults (only its
    /// own namespace gets in, egress open).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

/// The SELinux label of an instance.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SELinuxStatus {
    /// The MCS level allocated to the instance, `s0:cX,cY`.
    pub level: String,
    /// Whether the host's SELinux enforces the label. Where SELinux is disabled the pair is
    /// allocated and recorded, but nothing enforces it.
    pub enforced: bool,
}

/// The user namespace of an instance.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UserNamespaceStatus {
    /// First host UID of the range; container UID 0 maps to it.
    #[serde(rename = "hostUID")]
    pub host_uid: i64,
    /// First host GID of the range.
    #[serde(rename = "hostGID")]
    pub host_gid: i64,
    /// Size of the range.
    pub size: i64,
    /// The range for display, `first-last`.
    pub range: String,
}

/// Seccomp as enforced.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeccompStatus {
    /// The kernel's seccomp mode of the init process: disabled, strict or filter.
    pub mode: String,
    /// Number of filters attached, as the kernel reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<i32>,
    /// The profile: RuntimeDefault@<version>, or the SeccompProfile name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// sha256 of the profile as given to the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_digest: Option<String>,
}

/// Capability sets, by name.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct CapabilityStatus {
    /// Effective set.
    #[serde(default)]
    pub effective: Vec<String>,
    /// Bounding set.
    #[serde(default)]
    pub bounding: Vec<String>,
}

/// One namespace of the init process.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct NamespaceStatus {
    /// Namespace type: cgroup, ipc, mnt, net, pid, user, uts.
    #[serde(rename = "type")]
    pub type_: String,
    /// The namespace inode.
    pub inode: i64,
    /// True when it differs from the host's namespace of that type.
    pub private: bool,
}

/// The cgroup of an instance, with limits as read from the cgroup files.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CgroupStatus {
    /// Path of the cgroup.
    pub path: String,
    /// memory limit in bytes, absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<i64>,
    /// CPU quota in microseconds per period, absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_quota_micros: Option<i64>,
    /// CPU period in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_period_micros: Option<i64>,
    /// pids limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
}
