//! The trusted keys of a Workload that follows a tag: read from the ConfigMap its
//! `imageUpdates.trustedKeys` names, to verify a new digest (see [`super::follow`]) and to be
//! copied into each Instance it creates (`spec.imageSignature`), so that the node agent
//! verifies the signature again before it starts the instance without reading ConfigMaps.

use std::collections::BTreeMap;

use bulkhead_crds::{
    Workload,
    instance::{ImageSignature, SignatureKey},
};
use bulkhead_registry::signature::TrustedKeys;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, ResourceExt};
use tracing::warn;

use crate::Context;

/// The most keys an Instance carries (the CRD's bound).
pub const MAX_KEYS: usize = 8;
/// The longest PEM an Instance carries (the CRD's bound; a P-256 cosign.pub is 178 bytes).
pub const MAX_PEM_BYTES: usize = 4096;

/// Whether instances of `wl` must run a signed image.
pub fn signature_required(wl: &Workload) -> bool {
    wl.spec
        .image_updates
        .as_ref()
        .is_some_and(|u| !u.allow_unsigned && u.trusted_keys.is_some())
}

/// The keys of the ConfigMap the Workload names, parsed, or why there are none.
pub async fn trusted_keys(ctx: &Context, wl: &Workload) -> Result<TrustedKeys, String> {
    let (source, data) = key_data(ctx, wl).await?;
    parse(&source, &data)
}

/// What the Instances of `wl` carry in `spec.imageSignature`: `None` when no signature is
/// required, else the trusted keys, bounded, or why they cannot be given.
pub async fn instance_signature(
    ctx: &Context,
    wl: &Workload,
) -> Result<Option<ImageSignature>, String> {
    if !signature_required(wl) {
        return Ok(None);
    }
    let (source, data) = key_data(ctx, wl).await?;
    parse(&source, &data)?;
    to_instance(&source, &data).map(Some)
}

/// The keys as an Instance carries them, within the CRD's bounds.
pub fn to_instance(
    source: &str,
    data: &BTreeMap<String, String>,
) -> Result<ImageSignature, String> {
    if data.len() > MAX_KEYS {
        return Err(format!(
            "{source} holds {} keys; at most {MAX_KEYS} can be trusted, remove the others",
            data.len()
        ));
    }
    let mut keys = Vec::with_capacity(data.len());
    for (name, pem) in data {
        let pem = pem.trim();
        if pem.len() > MAX_PEM_BYTES {
            return Err(format!(
                "{source}: key {name} is {} bytes, more than {MAX_PEM_BYTES}; put the content of cosign.pub there",
                pem.len()
            ));
        }
        keys.push(SignatureKey {
            name: name.clone(),
            public_key: pem.to_string(),
        });
    }
    Ok(ImageSignature { keys })
}

fn parse(source: &str, data: &BTreeMap<String, String>) -> Result<TrustedKeys, String> {
    let keys = TrustedKeys::parse(data.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| format!("{source}: {e}"))?;
    if keys.is_empty() {
        return Err(format!(
            "{source} holds no public key; add the content of cosign.pub"
        ));
    }
    Ok(keys)
}

/// The ConfigMap's data, with the name to report it by (`configmap ns/name`).
async fn key_data(
    ctx: &Context,
    wl: &Workload,
) -> Result<(String, BTreeMap<String, String>), String> {
    let Some(name) = wl
        .spec
        .image_updates
        .as_ref()
        .and_then(|u| u.trusted_keys.as_ref())
        .map(|k| k.config_map_name.clone())
    else {
        return Err("spec.imageUpdates names no trustedKeys".into());
    };
    let ns = wl.namespace().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    match api.get_opt(&name).await {
        Ok(Some(cm)) => Ok((
            format!("configmap {ns}/{name}"),
            cm.data.unwrap_or_default(),
        )),
        Ok(None) => Err(format!(
            "configmap {ns}/{name} (spec.imageUpdates.trustedKeys) does not exist; create it with the cosign public keys"
        )),
        Err(e) => {
            warn!(workload = %wl.name_any(), namespace = %ns, error = %e, "reading the trusted keys failed");
            Err(format!("reading configmap {ns}/{name}: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, pem: &str) -> BTreeMap<String, String> {
        (0..n)
            .map(|i| (format!("k{i}.pub"), pem.to_string()))
            .collect()
    }

    #[test]
    fn keys_are_copied_trimmed_with_their_names() {
        let sig = to_instance("configmap a/b", &data(2, "  PEM\n")).unwrap();
        assert_eq!(sig.keys.len(), 2);
        assert_eq!(sig.keys[0].name, "k0.pub");
        assert_eq!(sig.keys[1].public_key, "PEM");
    }

    #[test]
    fn too_many_or_too_large_keys_are_refused_naming_the_configmap() {
        let err = to_instance("configmap a/b", &data(MAX_KEYS + 1, "PEM")).unwrap_err();
        assert!(err.contains("configmap a/b holds 9 keys"), "{err}");
        let big = "x".repeat(MAX_PEM_BYTES + 1);
        let err = to_instance("configmap a/b", &data(1, &big)).unwrap_err();
        assert!(err.contains("key k0.pub is 4097 bytes"), "{err}");
    }
}
