//! Workload: what to run, how many copies, how isolated, and how to replace it.

use k8s_openapi::apimachinery::pkg::{
    apis::meta::v1::{Condition, Time},
    util::intstr::IntOrString,
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{isolation::Isolation, template::InstanceTemplate};

/// A set of identical, isolated instances of one image, kept at a number of replicas and
/// replaced revision by revision (blue/green or rolling) when the template or isolation changes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "bulkhead.dev",
    version = "v1alpha1",
    kind = "Workload",
    namespaced,
    status = "WorkloadStatus",
    shortname = "wl",
    category = "bulkhead",
    derive = "PartialEq",
    doc = "A set of identical, isolated instances of one image, kept at a number of replicas and replaced revision by revision (blue/green or rolling) when its template or isolation changes.",
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "desired instances"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "ready instances"
    ),
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy.type"),
    printcolumn(
        name = "Active",
        type_ = "string",
        json_path = ".status.activeRevision",
        description = "revision that receives traffic"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        priority = 1
    ),
    printcolumn(
        name = "Preview",
        type_ = "string",
        json_path = ".status.previewRevision",
        priority = 1
    ),
    printcolumn(
        name = "Tag",
        type_ = "string",
        json_path = ".status.imageUpdates.resolvedTag",
        description = "tag the accepted digest was found under (policy SemverRange)",
        priority = 1
    ),
    printcolumn(
        name = "Digest",
        type_ = "string",
        json_path = ".status.imageUpdates.digest",
        description = "digest accepted from the followed tag (spec.imageUpdates)",
        priority = 1
    ),
    printcolumn(
        name = "Pending",
        type_ = "string",
        json_path = ".status.imageUpdates.pendingDigest",
        description = "newer digest under the followed tag, waiting or not trusted",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("self.progressDeadlineSeconds > self.minReadySeconds")
        .message("progressDeadlineSeconds must be greater than minReadySeconds")
        .field_path(".progressDeadlineSeconds"),
    validation = kube::core::Rule::new("!has(self.imageUpdates) || !self.template.image.contains('@')")
        .message("imageUpdates follows a tag: template.image must name a tag, not a digest")
        .field_path(".imageUpdates")
)]
pub struct WorkloadSpec {
    /// The team or person responsible for this workload: who gets paged, who patches it.
    #[schemars(length(min = 1, max = 253))]
    pub owner: String,

    /// Number of instances to run.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 10000))]
    pub replicas: i32,

    /// Old revisions kept (scaled to zero) so that a rollout can be undone.
    #[serde(default = "default_history")]
    #[schemars(range(min = 0, max = 100))]
    pub revision_history_limit: i32,

    /// Seconds a rollout may go without progress before it is reported as failed
    /// (Progressing=False, reason ProgressDeadlineExceeded). A blue/green rollout aborts.
    #[serde(default = "default_progress_deadline")]
    #[schemars(range(min = 1, max = 86400))]
    pub progress_deadline_seconds: i32,

    /// Seconds an instance must be Ready before it counts as available.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub min_ready_seconds: i32,

    /// Stops rollouts where they are; replicas are still kept.
    #[serde(default)]
    pub paused: bool,

    /// What each instance runs.
    pub template: InstanceTemplate,

    /// How each instance is isolated. Omitted fields take the strictest defaults.
    #[serde(default)]
    pub isolation: Isolation,

    /// How instances of a new revision replace the old ones.
    #[serde(default)]
    pub strategy: Strategy,

    /// Follow the template's image tag: each new digest pushed under it becomes a new
    /// revision, rolled out by the strategy once its signature is verified. Omitted: the
    /// image is run as written and never followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_updates: Option<ImageUpdates>,
}

/// Following an image tag (see docs/image-updates.md).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.trustedKeys) != (has(self.allowUnsigned) && self.allowUnsigned)")
    .message("imageUpdates needs exactly one of trustedKeys (a ConfigMap of cosign public keys) or allowUnsigned: true")
    .field_path(".trustedKeys"))]
#[x_kube(validation = kube::core::Rule::new("(has(self.policy) && self.policy == 'SemverRange') == has(self.semverRange)")
    .message("semverRange is required with policy SemverRange and allowed only with it")
    .field_path(".semverRange"))]
pub struct ImageUpdates {
    /// Follow: roll out whatever digest the template's tag points to. SemverRange: the
    /// newest tag of the template's repository within `semverRange` (the template's tag is
    /// then only the name of the repository's first version).
    #[serde(default)]
    pub policy: ImageUpdatePolicy,
    /// With policy SemverRange: the versions to pick from, such as `>=1.2.0 <2.0.0` or
    /// `~1.4` (comparators separated by spaces or commas, all of which must hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.matches('{}')", crate::patterns::SEMVER_RANGE))
        .message("semverRange must be semver comparators separated by spaces or commas, such as '>=1.2.0 <2.0.0' or '~1.4'"))]
    pub semver_range: Option<String>,
    /// Seconds between two looks at the registry. A push notification from the registry
    /// makes the controller look at once.
    #[serde(default = "default_check_interval")]
    #[schemars(range(min = 5, max = 86400))]
    pub check_interval_seconds: i32,
    /// The public keys a digest must be signed by (cosign's format) before it is rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_keys: Option<TrustedKeysRef>,
    /// Roll out digests without checking any signature. Off unless set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unsigned: bool,
}

fn default_check_interval() -> i32 {
    60
}

/// How a followed tag is resolved.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageUpdatePolicy {
    /// The digest the template's tag points to.
    #[default]
    Follow,
    /// The digest of the newest tag within `semverRange`.
    SemverRange,
}

/// Where the trusted public keys are.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrustedKeysRef {
    /// A ConfigMap in the Workload's namespace; every value is a PEM public key
    /// (the content of a `cosign.pub`).
    #[schemars(length(min = 1, max = 253), pattern(crate::patterns::DNS_SUBDOMAIN))]
    pub config_map_name: String,
}

fn one() -> i32 {
    1
}
fn default_history() -> i32 {
    10
}
fn default_progress_deadline() -> i32 {
    600
}

/// How a new revision replaces the old one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = kube::core::Rule::new("!has(self.blueGreen) || self.type == 'BlueGreen'")
        .message("blueGreen settings require strategy type BlueGreen")
        .field_path(".blueGreen"),
    validation = kube::core::Rule::new("!has(self.rollingUpdate) || self.type == 'RollingUpdate'")
        .message("rollingUpdate settings require strategy type RollingUpdate")
        .field_path(".rollingUpdate")
)]
pub struct Strategy {
    /// BlueGreen starts the new revision beside the old one and switches traffic in one step;
    /// RollingUpdate replaces instances a few at a time.
    #[serde(default, rename = "type")]
    pub type_: StrategyType,
    /// Settings of the BlueGreen strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreen>,
    /// Settings of the RollingUpdate strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

impl Default for Strategy {
    fn default() -> Self {
        Self {
            type_: StrategyType::RollingUpdate,
            blue_green: None,
            rolling_update: Some(RollingUpdate::default()),
        }
    }
}

/// The replacement strategy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StrategyType {
    /// Replace instances a few at a time within maxSurge and maxUnavailable.
    #[default]
    RollingUpdate,
    /// Run the new revision beside the old, check it, switch traffic at once, retire the old.
    BlueGreen,
}

/// Blue/green settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.autoPromotionSeconds) || self.autoPromote")
    .message("autoPromotionSeconds requires autoPromote: true")
    .field_path(".autoPromotionSeconds"))]
pub struct BlueGreen {
    /// Promote the preview revision on its own once every preview instance is Ready and its
    /// isolation verified. Otherwise promotion waits for a user.
    #[serde(default)]
    pub auto_promote: bool,
    /// Seconds to wait after the preview is ready before promoting automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 86400))]
    pub auto_promotion_seconds: Option<i32>,
    /// Preview instances to start; all replicas when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub preview_replicas: Option<i32>,
    /// Seconds the old revision keeps running after promotion, so that a rollback is instant.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_delay_seconds: i32,
    /// Seconds the preview keeps running after an abort, for inspection.
    #[serde(default = "default_scale_down_delay")]
    #[schemars(range(min = 0, max = 86400))]
    pub abort_scale_down_delay_seconds: i32,
}

fn default_scale_down_delay() -> i32 {
    30
}

impl Default for BlueGreen {
    fn default() -> Self {
        Self {
            auto_promote: false,
            auto_promotion_seconds: None,
            preview_replicas: None,
            scale_down_delay_seconds: default_scale_down_delay(),
            abort_scale_down_delay_seconds: default_scale_down_delay(),
        }
    }
}

const SURGE_RULE: &str = "type(self) == int ? self >= 0 : self.matches('^(100|[1-9]?[0-9])%$')";
const SURGE_MESSAGE: &str = "must be a non-negative integer or a percentage from 0% to 100%";

/// Rolling update settings. Percentages are of replicas; maxSurge rounds up and
/// maxUnavailable rounds down, as for a Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!((type(self.maxSurge) == int ? self.maxSurge == 0 : self.maxSurge == '0%') && (type(self.maxUnavailable) == int ? self.maxUnavailable == 0 : self.maxUnavailable == '0%'))"
).message("maxSurge and maxUnavailable cannot both be 0").field_path(".maxSurge"))]
pub struct RollingUpdate {
    /// Instances that may exist above replicas during a rollout (integer or percentage).
    #[serde(default = "default_max_surge")]
    #[x_kube(validation = kube::core::Rule::new(SURGE_RULE).message(SURGE_MESSAGE))]
    pub max_surge: IntOrString,
    /// Instances that may be unavailable below replicas during a rollout (integer or percentage).
    #[serde(default = "default_max_unavailable")]
    #[x_kube(validation = kube::core::Rule::new(SURGE_RULE).message(SURGE_MESSAGE))]
    pub max_unavailable: IntOrString,
}

fn default_max_surge() -> IntOrString {
    IntOrString::String("25%".into())
}
fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(0)
}

impl Default for RollingUpdate {
    fn default() -> Self {
        Self {
            max_surge: default_max_surge(),
            max_unavailable: default_max_unavailable(),
        }
    }
}

/// Observed state of a Workload, written by the controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Instances that exist, of any revision.
    #[serde(default)]
    pub replicas: i32,
    /// Instances that are Ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Instances that have been Ready for minReadySeconds.
    #[serde(default)]
    pub available_replicas: i32,
    /// Instances of the update revision.
    #[serde(default)]
    pub updated_replicas: i32,
    /// The revision the instances ran before the current rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// The revision of the current spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_revision: Option<String>,
    /// The revision that receives traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_revision: Option<String>,
    /// The revision under test beside the active one (BlueGreen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_revision: Option<String>,
    /// A one-word summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<WorkloadPhase>,
    /// When the rollout last made progress (an instance of the update revision was created
    /// or became available); progressDeadlineSeconds counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<Time>,
    /// Where a blue/green rollout stands (BlueGreen only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blue_green: Option<BlueGreenStatus>,
    /// The followed tag and the digests seen under it (spec.imageUpdates only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_updates: Option<ImageUpdatesStatus>,
    /// Available, Progressing and Degraded, as for a Deployment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// Where a blue/green rollout stands. Everything the controller needs to carry on after a
/// restart is here: the instances and this record are the whole state of a rollout.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenStatus {
    /// When the instances of the preview revision were first created; an abort at
    /// progressDeadlineSeconds counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_started_time: Option<Time>,
    /// When every preview instance became Ready with its isolation verified;
    /// autoPromotionSeconds counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_ready_time: Option<Time>,
    /// Promotion was decided (automatically or by the `bulkhead.dev/promote` annotation); the
    /// preview is brought to full replicas and traffic switches once they are all ready.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promoting: bool,
    /// When traffic last switched from one revision to another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched_time: Option<Time>,
    /// The revision that had traffic before the last switch. Its instances stay warm for
    /// scaleDownDelaySeconds, so that going back to it switches at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_active_revision: Option<String>,
    /// A preview revision that was aborted. It is not previewed again until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_revision: Option<String>,
    /// When the abort happened; the preview is scaled down abortScaleDownDelaySeconds later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_time: Option<Time>,
    /// Why the preview was aborted (AbortRequested or ProgressDeadlineExceeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_reason: Option<String>,
}

/// A one-word summary of a Workload.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadPhase {
    /// Every replica runs the current revision and is available.
    Healthy,
    /// A rollout or scale is under way.
    Progressing,
    /// spec.paused is set.
    Paused,
    /// A rollout failed or was aborted, or replicas are missing.
    Degraded,
}

/// The followed tag, the digest rolled out from it and the verdicts on the digests seen.
/// With the instances, this is all a restarted controller needs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageUpdatesStatus {
    /// The followed reference, `registry/repository:tag`.
    pub tag: String,
    /// The accepted digest: instances of the update revision run `registry/repository@digest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// A newer digest under the tag that is not rolled out yet: it waits for the rollout in
    /// progress, or it is not trusted (see the ImageNotTrusted condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_digest: Option<String>,
    /// The tag the accepted digest was found under (policy SemverRange: the newest tag in
    /// the range).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_tag: Option<String>,
    /// When the registry was last asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_time: Option<Time>,
    /// When the accepted digest last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_time: Option<Time>,
    /// Failed looks at the registry in a row; the next look backs off accordingly.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: i32,
    /// Verdicts on the digests seen under the tag, newest first (at most 10). A digest is
    /// verified once; its verdict is kept here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<DigestVerdict>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// What was decided about one digest.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DigestVerdict {
    /// The digest.
    pub digest: String,
    /// Trusted, Unsigned, NoTrustedSignature, SignedForAnotherDigest or AllowUnsigned.
    pub verdict: String,
    /// The tag it was found under (policy SemverRange).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When it was decided.
    pub time: Time,
}
