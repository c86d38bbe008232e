//! WorkloadService: a stable way in to a Workload's active (and preview) revision.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{patterns, template::Protocol};

/// A stable way in to a Workload. The controller keeps a selectorless Service of the same
/// name and its EndpointSlice pointing at the ready instances of the active revision, and
/// `<name>-preview` for the preview revision of a blue/green rollout.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "WorkloadService",
    namespaced,
    status = "WorkloadServiceStatus",
    shortname = "wsvc",
    category = "bulkhead",
    derive = "PartialEq",
    doc = "A stable way in to a Workload: the controller publishes the ready instances of its active revision (and of a blue/green preview) as a native Service and EndpointSlice.",
    printcolumn(name = "Workload", type_ = "string", json_path = ".spec.workloadName"),
    printcolumn(
        name = "Active",
        type_ = "string",
        json_path = ".status.activeRevision"
    ),
    printcolumn(
        name = "Preview",
        type_ = "string",
        json_path = ".status.previewRevision"
    ),
    printcolumn(name = "Endpoints", type_ = "string", json_path = ".status.endpoints"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadServiceSpec {
    /// The Workload in the same namespace whose instances this service publishes.
    #[schemars(length(min = 1, max = 253), pattern(patterns::DNS_SUBDOMAIN))]
    pub workload_name: String,
    /// Ports the service exposes.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["port".into()]))]
    pub ports: Vec<ServicePort>,
    /// Also publish the preview revision of a blue/green rollout as `<name>-preview`.
    #[serde(default)]
    pub preview: bool,
}

/// A port of a WorkloadService.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port name, unique within the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15), pattern(patterns::PORT_NAME))]
    pub name: Option<String>,
    /// Port the Service listens on.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Port on the instance; the same as port when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<i32>,
    /// Transport protocol.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Observed state of a WorkloadService, written by the controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadServiceStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The revision that receives traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_revision: Option<String>,
    /// The revision published as `<name>-preview`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_revision: Option<String>,
    /// Ready instances of the active revision, as `IP:port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Ready instances of the preview revision, as `IP:port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preview_endpoints: Vec<String>,
    /// Ready: the Service and EndpointSlice exist and point at the active revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
