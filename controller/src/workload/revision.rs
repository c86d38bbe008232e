//! Revisions: a stable hash of what an instance runs.

use bulkhead_crds::{InstanceTemplate, Isolation};
use sha2::{Digest, Sha256};

/// The revision of a template and isolation: the first 10 hex digits of the sha256 of their
/// JSON. Equal inputs give equal revisions in any process, so rolling back to an earlier
/// template finds the instances (and history) of that revision again.
pub fn revision(template: &InstanceTemplate, isolation: &Isolation) -> String {
    let json = serde_json::to_vec(&(template, isolation)).unwrap_or_default();
    hex::encode(Sha256::digest(json))[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_sensitive() {
        let t = InstanceTemplate {
            image: "web:v1".into(),
            ..Default::default()
        };
        let i = Isolation::default();
        assert_eq!(revision(&t, &i), revision(&t.clone(), &i.clone()));
        let t2 = InstanceTemplate {
            image: "web:v2".into(),
            ..Default::default()
        };
        assert_ne!(revision(&t, &i), revision(&t2, &i));
        let i2 = Isolation {
            read_only_root_filesystem: false,
            ..Default::default()
        };
        assert_ne!(revision(&t, &i), revision(&t, &i2));
        assert_eq!(revision(&t, &i).len(), 10);
    }
}
