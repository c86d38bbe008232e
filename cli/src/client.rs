//! The API client, built the way kubectl finds its cluster.

use anyhow::Context;
use bulkhead_crds::Workload;
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::args::Global;

/// A client and the namespace the command acts in.
#[derive(Clone)]
pub struct Kube {
    /// The API client.
    pub client: Client,
    /// `-n`, or the context's namespace.
    pub namespace: String,
}

impl std::fmt::Debug for Kube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kube")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl Kube {
    /// Connects with `--kubeconfig`/`--context`, else $KUBECONFIG, ~/.kube/config or in-cluster.
    pub async fn connect(global: &Global) -> anyhow::Result<Self> {
        let options = KubeConfigOptions {
            context: global.context.clone(),
            ..Default::default()
        };
        let config = match (&global.kubeconfig, &global.context) {
            (Some(path), _) => {
                let kc = Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
                Config::from_custom_kubeconfig(kc, &options).await?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options).await?,
            (None, None) => Config::infer().await.context(
                "no cluster to talk to: set KUBECONFIG, pass --kubeconfig, or run inside a cluster",
            )?,
        };
        let namespace = global
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        Ok(Self {
            client: Client::try_from(config)?,
            namespace,
        })
    }

    /// A namespaced API in the command's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The named Workload, or an error that says where it was looked for.
    pub async fn workload(&self, name: &str) -> anyhow::Result<Workload> {
        self.get(name, "workload").await
    }

    /// A namespaced object by name; a 404 becomes "<what> NAME not found in namespace NS".
    pub async fn get<K>(&self, name: &str, what: &str) -> anyhow::Result<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        match self.api::<K>().get(name).await {
            Ok(obj) => Ok(obj),
            Err(kube::Error::Api(e)) if e.code == 404 => anyhow::bail!(
                "{what} {name} not found in namespace {} (pass -n to look elsewhere)",
                self.namespace
            ),
            Err(e) => Err(e).with_context(|| format!("reading {what} {name}")),
        }
    }
}

impl Kube {
    /// Sets an annotation on the Workload (a merge patch: nothing else changes).
    pub async fn annotate_workload(
        &self,
        name: &str,
        key: &str,
        value: &str,
    ) -> anyhow::Result<()> {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        self.api::<Workload>()
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .with_context(|| format!("annotating workload {name}"))?;
        Ok(())
    }
}
