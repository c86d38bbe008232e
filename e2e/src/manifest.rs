//! Creating Bulkhead objects from YAML, as a user's `kubectl create` would.

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, PostParams},
    core::Status,
};

/// The ApiResource of a Bulkhead kind.
pub fn api_resource(kind: &str) -> ApiResource {
    use bulkhead_crds::*;
    match kind {
        "Workload" => ApiResource::erase::<Workload>(&()),
        "Instance" => ApiResource::erase::<Instance>(&()),
        "WorkloadService" => ApiResource::erase::<WorkloadService>(&()),
        "Host" => ApiResource::erase::<Host>(&()),
        "SeccompProfile" => ApiResource::erase::<SeccompProfile>(&()),
        other => panic!("{other} is not a bulkhead.dev kind"),
    }
}

fn parse(yaml: &str) -> (DynamicObject, ApiResource) {
    let obj: DynamicObject =
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("test manifest is not YAML: {e}"));
    let kind = obj
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default();
    (obj, api_resource(&kind))
}

fn api(client: &Client, namespace: &str, ar: &ApiResource) -> Api<DynamicObject> {
    if ar.kind == "Host" {
        Api::all_with(client.clone(), ar)
    } else {
        Api::namespaced_with(client.clone(), namespace, ar)
    }
}

/// Creates the object in `namespace` (Hosts are cluster-scoped and ignore it).
pub async fn create(
    client: &Client,
    namespace: &str,
    yaml: &str,
) -> Result<DynamicObject, kube::Error> {
    let (obj, ar) = parse(yaml);
    api(client, namespace, &ar)
        .create(&PostParams::default(), &obj)
        .await
}

/// The API server's refusal, or a panic naming what was accepted instead.
pub fn refusal(result: Result<DynamicObject, kube::Error>) -> Status {
    match result {
        Ok(obj) => panic!(
            "the API server accepted an invalid object: {}",
            serde_json::to_string_pretty(&obj).unwrap_or_default()
        ),
        Err(kube::Error::Api(status)) => *status,
        Err(other) => panic!("expected a validation error from the API server, got {other}"),
    }
}

/// Replaces the stored object with `yaml` (a PUT at the current resourceVersion), so that
/// fields missing from `yaml` are removed.
pub async fn replace(
    client: &Client,
    namespace: &str,
    yaml: &str,
) -> Result<DynamicObject, kube::Error> {
    let (mut obj, ar) = parse(yaml);
    let name = obj.metadata.name.clone().expect("test manifest has a name");
    let api = api(client, namespace, &ar);
    let current = api.get(&name).await?;
    obj.metadata.resource_version = current.metadata.resource_version;
    api.replace(&name, &PostParams::default(), &obj).await
}
