//! The instance template: what a Workload runs, copied verbatim into each Instance.

use kube::KubeSchema;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::patterns;

/// What to run in each instance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTemplate {
    /// Image reference. Either pinned by digest (`registry/repo@sha256:...`) or a tag that the
    /// node agent resolves to a digest once, on first pull, and records in the Instance status.
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = image_rule())]
    pub image: String,

    /// Entrypoint; replaces the image's ENTRYPOINT when set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub command: Vec<String>,

    /// Arguments to the entrypoint; replace the image's CMD when set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 4096)))]
    pub args: Vec<String>,

    /// Environment variables set in the instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,

    /// Ports the instance listens on. WorkloadServices route to these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["containerPort".into()]))]
    pub ports: Vec<ContainerPort>,

    /// Compute limits. CPU and memory are both what the scheduler reserves on a host and the
    /// cgroup limit the instance runs under.
    #[serde(default)]
    pub resources: Resources,

    /// Decides when the instance is Ready and receives traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,

    /// Restarts the instance when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,

    /// What the node agent does when the instance's process exits.
    #[serde(default)]
    pub restart_policy: RestartPolicy,

    /// Seconds between SIGTERM and SIGKILL when the instance is stopped.
    #[serde(default = "default_grace_period")]
    #[schemars(range(min = 0, max = 3600))]
    pub termination_grace_period_seconds: i64,

    /// Absolute paths mounted as private tmpfs, the only writable places besides /tmp and /run
    /// while the root filesystem is read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(max = 1024), pattern(patterns::ABSOLUTE_PATH))
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub writable_paths: Vec<String>,

    /// When a restart of every instance was last asked for (RFC 3339; `kubectl bulkhead
    /// restart` sets it). Nothing runs differently: a new value only makes a new revision,
    /// which the Workload's strategy rolls out like any other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub restarted_at: Option<String>,
}

/// The image reference check, as CEL so that the refusal explains the format instead of
/// printing the regular expression.
fn image_rule() -> kube::core::Rule {
    kube::core::Rule::new(format!("self.matches(r'{}')", patterns::IMAGE_REFERENCE)).message(
        "must be an image reference [registry[:port]/]repository[:tag][@sha256:digest] with a lower-case repository",
    )
}

fn default_grace_period() -> i64 {
    30
}

/// An environment variable.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct EnvVar {
    /// Variable name.
    #[schemars(length(min = 1, max = 256), pattern(patterns::ENV_NAME))]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub value: String,
}

/// A port the instance listens on.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Name a WorkloadService can refer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15), pattern(patterns::PORT_NAME))]
    pub name: Option<String>,
    /// Port number inside the instance's network namespace.
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i32,
    /// Transport protocol.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Transport protocol of a port.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    #[allow(missing_docs)]
    TCP,
    #[allow(missing_docs)]
    UDP,
}

/// Compute limits for one instance.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU, in cores (`0.5`) or millicores (`500m`). Unlimited when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "cpu_schema")]
    pub cpu: Option<String>,
    /// Memory with an optional suffix (`128Mi`, `1G`): the cgroup limit, the size of each
    /// tmpfs, and what the scheduler reserves. The API server stores 256Mi when unset.
    #[serde(default = "default_memory", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "memory_schema")]
    pub memory: Option<String>,
    /// Maximum number of processes and threads (the pids cgroup limit).
    #[serde(default = "default_pids")]
    #[schemars(range(min = 1, max = 4194304))]
    pub pids: i64,
}

/// The pids limit of an instance that sets none: enough for a real service, small enough that
/// a fork bomb stays inside its own cgroup.
pub const DEFAULT_PIDS_LIMIT: i64 = 1024;

/// The memory limit of an instance that sets none. The API server stores it on the object
/// (a schema default), so what the scheduler reserves and what the cgroup enforces agree.
pub const DEFAULT_MEMORY: &str = "256Mi";

/// The longest quantity string the API accepts: enough for any value that fits in 64 bits,
/// with room for a long fraction, and a bound on the parser's work.
pub const MAX_QUANTITY_LENGTH: u32 = 64;

fn default_pids() -> i64 {
    DEFAULT_PIDS_LIMIT
}

fn default_memory() -> Option<String> {
    Some(DEFAULT_MEMORY.to_owned())
}

fn cpu_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "CPU, in cores (`0.5`) or millicores (`500m`). Unlimited when unset.",
        "type": "string",
        "maxLength": MAX_QUANTITY_LENGTH,
        "pattern": patterns::CPU_QUANTITY,
    })
}

// Not nullable: the API server prunes a null and stores the default instead.
fn memory_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Memory with an optional suffix (`128Mi`, `1G`): the cgroup limit, the size of each tmpfs, and what the scheduler reserves. The API server stores 256Mi when unset.",
        "type": "string",
        "default": DEFAULT_MEMORY,
        "maxLength": MAX_QUANTITY_LENGTH,
        "pattern": patterns::MEMORY_QUANTITY,
    })
}

impl Resources {
    /// The memory limit as stored, or the default for an object stored before the default
    /// existed.
    pub fn memory_or_default(&self) -> &str {
        self.memory.as_deref().unwrap_or(DEFAULT_MEMORY)
    }
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu: None,
            memory: default_memory(),
            pids: DEFAULT_PIDS_LIMIT,
        }
    }
}

/// What happens when the instance's process exits.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart after any exit, with exponential back-off.
    #[default]
    Always,
    /// Restart only after a non-zero exit or a signal.
    OnFailure,
    /// Never restart; the instance ends Succeeded or Failed.
    Never,
}

/// A health check. Exactly one of exec, httpGet and tcpSocket is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.exec), has(self.httpGet), has(self.tcpSocket)].filter(x, x).size() == 1"
).message("exactly one of exec, httpGet or tcpSocket must be set"))]
pub struct Probe {
    /// Run a command inside the instance; exit code 0 is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// An HTTP GET against the instance IP; a 2xx or 3xx status is success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    /// A TCP connect to the instance IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    /// Seconds after start before the first probe.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub initial_delay_seconds: i32,
    /// Seconds between probes.
    #[serde(default = "default_period")]
    #[schemars(range(min = 1, max = 3600))]
    pub period_seconds: i32,
    /// Seconds after which a probe counts as failed.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    /// Consecutive successes that make a failing probe pass.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: i32,
    /// Consecutive failures that make a passing probe fail.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
}

fn default_period() -> i32 {
    10
}
fn one() -> i32 {
    1
}
fn default_failure_threshold() -> i32 {
    3
}

/// A command run inside the instance.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ExecAction {
    /// The command and its arguments; not run through a shell.
    #[schemars(length(min = 1, max = 64))]
    pub command: Vec<String>,
}

/// An HTTP GET probe.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HttpGetAction {
    /// Path to request.
    #[serde(default = "default_http_path")]
    #[schemars(length(min = 1, max = 2048), pattern(r"^/"))]
    pub path: String,
    /// Port on the instance IP.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

fn default_http_path() -> String {
    "/".into()
}

/// A TCP connect probe.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TcpSocketAction {
    /// Port on the instance IP.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_restarted_at_leaves_the_serialized_template_as_before() {
        let t: InstanceTemplate = serde_json::from_str(r#"{"image": "web:v1"}"#).unwrap();
        assert!(!serde_json::to_string(&t).unwrap().contains("restartedAt"));
        let restarted = InstanceTemplate {
            restarted_at: Some("2026-01-01T00:00:00Z".into()),
            ..t.clone()
        };
        assert_ne!(
            serde_json::to_string(&t).unwrap(),
            serde_json::to_string(&restarted).unwrap()
        );
    }
}
