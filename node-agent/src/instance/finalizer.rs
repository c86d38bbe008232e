//! The agent's finalizer, added in the reconcile that first sees an Instance.
//!
//! kube-runtime's `finalizer()` adds a missing finalizer and ends the reconcile, leaving the
//! start to the reconcile that the patch's watch event triggers: a round trip through the
//! API server and the watch before anything starts. Here the same patch (a JSON patch that
//! `test`s the list it extends, so another writer's finalizer is never lost) is sent first
//! and its answer, which holds the finalizer, goes on to `finalizer()` as an Apply at once.
//! The finalizer is still in place before any container exists.

use std::sync::Arc;

use bulkhead_crds::Instance;
use json_patch::{AddOperation, Patch, PatchOperation, TestOperation, jsonptr::PointerBuf};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch as KubePatch, PatchParams},
};

/// The JSON patch that adds `name` to `existing`, failing if the list changed meanwhile;
/// None when `name` is there already.
pub fn add_patch(existing: &[String], name: &str) -> Option<Patch> {
    if existing.iter().any(|f| f == name) {
        return None;
    }
    let ops = if existing.is_empty() {
        vec![
            PatchOperation::Test(TestOperation {
                path: PointerBuf::from_tokens(["metadata", "finalizers"]),
                value: serde_json::Value::Null,
            }),
            PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["metadata", "finalizers"]),
                value: serde_json::json!([name]),
            }),
        ]
    } else {
        vec![
            PatchOperation::Test(TestOperation {
                path: PointerBuf::from_tokens(["metadata", "finalizers"]),
                value: serde_json::json!(existing),
            }),
            PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens(["metadata", "finalizers", "-"]),
                value: serde_json::json!(name),
            }),
        ]
    };
    Some(Patch(ops))
}

/// `instance` with finalizer `name`: as it is when it has it or is being deleted (then
/// `finalizer()` decides), else as the API returns it after adding it.
pub async fn ensure(
    api: &Api<Instance>,
    instance: Arc<Instance>,
    name: &str,
) -> Result<Arc<Instance>, kube::Error> {
    if instance.meta().deletion_timestamp.is_some() {
        return Ok(instance);
    }
    let Some(patch) = add_patch(instance.finalizers(), name) else {
        return Ok(instance);
    };
    let patched = api
        .patch(
            &instance.name_any(),
            &PatchParams::default(),
            &KubePatch::<()>::Json(patch),
        )
        .await?;
    Ok(Arc::new(patched))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(doc: serde_json::Value, patch: &Patch) -> Result<serde_json::Value, String> {
        let mut doc = doc;
        json_patch::patch(&mut doc, patch).map_err(|e| e.to_string())?;
        Ok(doc)
    }

    #[test]
    fn adds_to_an_empty_list_and_fails_if_someone_added_one_meanwhile() {
        let p = add_patch(&[], "bulkhead.dev/node-agent").unwrap();
        // The API server's JSON patch reads a missing list as null, which the test op asks.
        let done = apply(serde_json::json!({"metadata": {"finalizers": null}}), &p).unwrap();
        assert_eq!(
            done["metadata"]["finalizers"],
            serde_json::json!(["bulkhead.dev/node-agent"])
        );
        let raced = serde_json::json!({"metadata": {"finalizers": ["other"]}});
        assert!(apply(raced, &p).is_err());
    }

    #[test]
    fn appends_to_the_list_it_saw_and_never_drops_another_finalizer() {
        let seen = vec!["other".to_string()];
        let p = add_patch(&seen, "bulkhead.dev/node-agent").unwrap();
        let done = apply(
            serde_json::json!({"metadata": {"finalizers": ["other"]}}),
            &p,
        )
        .unwrap();
        assert_eq!(
            done["metadata"]["finalizers"],
            serde_json::json!(["other", "bulkhead.dev/node-agent"])
        );
        let changed = serde_json::json!({"metadata": {"finalizers": ["other", "third"]}});
        assert!(apply(changed, &p).is_err());
    }

    #[test]
    fn nothing_to_do_when_it_is_there() {
        assert!(
            add_patch(
                &["bulkhead.dev/node-agent".to_string()],
                "bulkhead.dev/node-agent"
            )
            .is_none()
        );
    }
}
