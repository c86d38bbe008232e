//! The agent's finalizer, added in the reconcile that first sees an Instance.
//!
//! kube-runtime's `finalizer()` adds a missing finalizer and ends the reconcile, leaving the
//! start to the reconcile that the patch's watch event triggers: a round trip through the
//! API server and the watch before anything starts. Here the same patch (a JSON patch that
//! `test`s the list it extends, so another writer's finalizer is never lost) is sent and the
//! start goes on beside it ([`Pending`]): the image, the seccomp filter, the allocations and
//! the snapshot are prepared while the patch is in flight, and its answer is awaited before
//! the container is created. The finalizer is still in place before any container exists.

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

/// A finalizer patch in flight beside a start, or none.
#[derive(Debug)]
pub struct Pending(tokio::sync::Mutex<Patched>);

#[derive(Debug)]
enum Patched {
    Sent(tokio::task::JoinHandle<Result<(), kube::Error>>),
    Done(Result<(), String>),
}

impl Pending {
    /// Nothing in flight: the Instance holds the finalizer (or is being deleted, and
    /// `finalizer()` decides).
    pub fn none() -> Self {
        Self(tokio::sync::Mutex::new(Patched::Done(Ok(()))))
    }

    /// Sends the patch adding `name` to `instance` when it lacks it and is not being
    /// deleted; None when there is nothing to add.
    pub fn send(api: &Api<Instance>, instance: &Instance, name: &str) -> Option<Self> {
        if instance.meta().deletion_timestamp.is_some() {
            return None;
        }
        let patch = add_patch(instance.finalizers(), name)?;
        let (api, object) = (api.clone(), instance.name_any());
        let sent = tokio::spawn(async move {
            if let Some(wait) = crate::failpoint::delay("finalizer-patch") {
                tokio::time::sleep(wait).await;
            }
            api.patch(
                &object,
                &PatchParams::default(),
                &KubePatch::<()>::Json(patch),
            )
            .await
            .map(|_| ())
        });
        Some(Self(tokio::sync::Mutex::new(Patched::Sent(sent))))
    }

    /// Waits for the patch's answer: Ok once the Instance holds the finalizer. A failure
    /// (the list changed meanwhile, the Instance is gone) stays a failure.
    pub async fn wait(&self) -> Result<(), String> {
        let mut state = self.0.lock().await;
        let answer = match std::mem::replace(&mut *state, Patched::Done(Ok(()))) {
            Patched::Sent(sent) => match sent.await {
                Ok(answer) => answer.map_err(|e| e.to_string()),
                Err(e) => Err(format!("the finalizer patch did not finish: {e}")),
            },
            Patched::Done(answer) => answer,
        };
        *state = Patched::Done(answer.clone());
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed patch stays failed for every later wait of the same start (nothing may be
    /// created after it), and a start with nothing in flight goes on.
    #[tokio::test]
    async fn a_failed_finalizer_patch_holds_every_wait() {
        assert_eq!(Pending::none().wait().await, Ok(()));
        let failed = Pending(tokio::sync::Mutex::new(Patched::Sent(tokio::spawn(
            async { Err(kube::Error::Service("the list changed".into())) },
        ))));
        let first = failed.wait().await;
        assert!(
            first
                .as_ref()
                .is_err_and(|e| e.contains("the list changed")),
            "{first:?}"
        );
        assert_eq!(failed.wait().await, first, "the failure is kept");
        let sent = Pending(tokio::sync::Mutex::new(Patched::Sent(tokio::spawn(
            async { Ok(()) },
        ))));
        assert_eq!(sent.wait().await, Ok(()));
        assert_eq!(sent.wait().await, Ok(()));
    }

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
