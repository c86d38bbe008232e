//! A fresh namespace per test.

use bulkhead_crds::policy::LABEL_ISOLATION;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, ObjectMeta, PostParams},
};
use rand::Rng;
use serde::{Serialize, de::DeserializeOwned};

/// A namespace created for one test. Call [`TestNamespace::delete`] at the end of a passing
/// test; a failing test leaves its namespace behind for inspection (`make down` clears it).
#[derive(Clone)]
pub struct TestNamespace {
    /// The namespace name, `<prefix>-<random>`.
    pub name: String,
    /// An admin client.
    pub client: Client,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl TestNamespace {
    /// Creates `<prefix>-<random suffix>`, at the cluster's default isolation level (strict).
    pub async fn new(prefix: &str) -> Self {
        Self::create(prefix, None).await
    }

    /// Creates `<prefix>-<random suffix>` labelled `bulkhead.dev/isolation: <level>`, for
    /// tests of what only a relaxed level allows (seccomp Record, added capabilities).
    pub async fn with_isolation(prefix: &str, level: &str) -> Self {
        Self::create(prefix, Some(level)).await
    }

    async fn create(prefix: &str, level: Option<&str>) -> Self {
        let client = crate::client().await;
        let suffix: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(6)
            .map(|c| (c as char).to_ascii_lowercase())
            .collect();
        let name = format!("{prefix}-{suffix}");
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    [("bulkhead.dev/test".to_string(), prefix.to_string())]
                        .into_iter()
                        .chain(level.map(|l| (LABEL_ISOLATION.to_string(), l.to_string())))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        Self { name, client }
    }

    /// A namespaced API in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned,
        <K as Resource>::DynamicType: Default,
        K: Serialize + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace (and everything in it) without waiting.
    pub async fn delete(self) {
        let _ = Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::background())
            .await;
    }
}
