//! Labels on containerd containers: how a restarted agent knows what it runs.
//!
//! A container carries its Instance's identity and its allocations, so that the agent can
//! rebuild its allocators and adopt or tear down containers after a restart without any
//! state of its own.

use std::collections::HashMap;

/// UID of the Instance the container runs.
pub const INSTANCE_UID: &str = "bulkhead.dev/instance-uid";
/// `namespace/name` of the Instance.
pub const INSTANCE: &str = "bulkhead.dev/instance";
/// The host the container was started for.
pub const HOST: &str = "bulkhead.dev/host";
/// First host UID of the container's user namespace range.
pub const UID_START: &str = "bulkhead.dev/uid-start";
/// The container's MCS level.
pub const MCS: &str = "bulkhead.dev/mcs";
/// Manifest digest of the image.
pub const IMAGE_DIGEST: &str = "bulkhead.dev/image-digest";
/// Digest of the seccomp filter given to runc.
pub const SECCOMP_DIGEST: &str = "bulkhead.dev/seccomp-digest";
/// The seccomp profile name (RuntimeDefault@version or a SeccompProfile).
pub const SECCOMP_PROFILE: &str = "bulkhead.dev/seccomp-profile";
/// How the agent answers the container's seccomp notifications (see
/// `isolation::notify::Mode::label`); absent when its filter notifies nothing.
pub const SECCOMP_NOTIFY: &str = "bulkhead.dev/seccomp-notify";
/// The instance's IP address on the instance network (updated when a restart re-attaches it).
pub const IP: &str = "bulkhead.dev/ip";
/// The instance's log file.
pub const LOG_PATH: &str = "bulkhead.dev/log-path";

/// The containerd container ID of an Instance: derived from its UID, so that a second
/// attempt to create it collides instead of starting a twin.
pub fn container_id(instance_uid: &str) -> String {
    format!("bh-{instance_uid}")
}

/// What a container's labels say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerIdentity {
    /// Container ID.
    pub id: String,
    /// Instance UID.
    pub instance_uid: String,
    /// Instance namespace.
    pub namespace: String,
    /// Instance name.
    pub name: String,
    /// Host it was started for.
    pub host: String,
    /// User namespace range start, when it has one.
    pub uid_start: Option<u32>,
    /// MCS level.
    pub mcs: Option<String>,
}

impl ContainerIdentity {
    /// Reads the identity from a container's labels; None for containers Bulkhead did not
    /// create.
    pub fn from_labels(id: &str, labels: &HashMap<String, String>) -> Option<Self> {
        let (namespace, name) = labels.get(INSTANCE)?.split_once('/')?;
        Some(Self {
            id: id.to_string(),
            instance_uid: labels.get(INSTANCE_UID)?.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            host: labels.get(HOST).cloned().unwrap_or_default(),
            uid_start: labels.get(UID_START).and_then(|s| s.parse().ok()),
            mcs: labels.get(MCS).cloned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_through_labels() {
        let labels = HashMap::from([
            (INSTANCE_UID.to_string(), "u-1".to_string()),
            (INSTANCE.to_string(), "ns/web-1".to_string()),
            (HOST.to_string(), "host-a".to_string()),
            (UID_START.to_string(), "1000065536".to_string()),
            (MCS.to_string(), "s0:c1,c2".to_string()),
        ]);
        let id = ContainerIdentity::from_labels("bh-u-1", &labels).unwrap();
        assert_eq!((id.namespace.as_str(), id.name.as_str()), ("ns", "web-1"));
        assert_eq!(id.uid_start, Some(1_000_065_536));
        assert!(ContainerIdentity::from_labels("x", &HashMap::new()).is_none());
        assert_eq!(container_id("u-1"), "bh-u-1");
    }
}
