//! The agent's own check of an image's cosign signature before it starts an instance that
//! requires one (`spec.imageSignature`, written by the controller from the Workload's trusted
//! keys): defense in depth, so that an Instance naming an unsigned digest (a controller bug, a
//! stale verdict, a key removed since) starts nothing. The keys travel in the Instance spec,
//! so the agent needs no access to ConfigMaps; the check is the controller's own code
//! (`bulkhead_registry::signature`) through the agent's bounded registry client.

use std::{ops::ControlFlow, time::Duration};

use bulkhead_crds::{Instance, InstancePhase, instance::ImageSignature};
use bulkhead_registry::{
    ImageRef,
    signature::{self, TrustedKeys, VerifyError},
};
use kube::{ResourceExt, runtime::controller::Action};
use tracing::{info, warn};

use super::{Context, Error, status};

/// The reason of an instance refused for its image's signature.
pub const NOT_TRUSTED: &str = "ImageNotTrusted";
/// The longest one signature check may take before it is retried.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(20);
/// The wait before a signature check that could not finish (registry) is tried again.
pub const RETRY: Duration = Duration::from_secs(10);

/// What must be verified: the pinned image, its digest and the keys.
#[derive(Debug)]
pub struct Check {
    /// The image (its repository holds the signature artefact).
    pub image: ImageRef,
    /// The pinned digest the signature must name.
    pub digest: String,
    /// The trusted keys.
    pub keys: TrustedKeys,
}

/// What the spec asks, decided without the registry: nothing to check, a check, or a
/// refusal (a message naming what is wrong).
pub fn plan(image: &str, required: Option<&ImageSignature>) -> Result<Option<Check>, String> {
    let Some(required) = required else {
        return Ok(None);
    };
    let image = ImageRef::parse(image).map_err(|e| e.to_string())?;
    let Some(digest) = image.digest.clone() else {
        return Err(format!(
            "image {image} must be pinned by digest (registry/repository@sha256:...) when spec.imageSignature requires a signature"
        ));
    };
    let keys = TrustedKeys::parse(
        required
            .keys
            .iter()
            .map(|k| (k.name.as_str(), k.public_key.as_str())),
    )
    .map_err(|e| format!("spec.imageSignature: {e}"))?;
    if keys.is_empty() {
        return Err("spec.imageSignature names no key; it needs at least one".into());
    }
    Ok(Some(Check {
        image,
        digest,
        keys,
    }))
}

/// Verifies the signature `instance` requires. Continue: start it. Break: it was refused
/// (Failed, `ImageNotTrusted`, never retried) or the registry could not answer (Pulling,
/// retried after [`RETRY`]).
pub async fn verify(
    instance: &Instance,
    ctx: &Context,
    s: &mut bulkhead_crds::InstanceStatus,
) -> Result<ControlFlow<Action>, Error> {
    let spec = &instance.spec;
    let check = match plan(&spec.template.image, spec.image_signature.as_ref()) {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(ControlFlow::Continue(())),
        Err(message) => return refuse(instance, ctx, message).await,
    };
    let checked = tokio::time::timeout(
        CHECK_TIMEOUT,
        signature::verify(&ctx.registry, &check.image, &check.digest, &check.keys),
    )
    .await;
    let failed = match checked {
        Ok(Ok(key)) => {
            info!(instance = %instance.name_any(), digest = %check.digest, key = %key, "image signature verified");
            return Ok(ControlFlow::Continue(()));
        }
        Ok(Err(VerifyError::Untrusted(u))) => {
            return refuse(instance, ctx, format!("{} ({})", u, u.reason())).await;
        }
        Ok(Err(VerifyError::Registry(e))) => e.to_string(),
        Err(_) => format!("the registry took longer than {CHECK_TIMEOUT:?}"),
    };
    warn!(instance = %instance.name_any(), error = %failed, "checking the image signature failed; will retry");
    status::phase(
        s,
        InstancePhase::Pulling,
        Some("SignatureCheckFailed"),
        Some(format!(
            "checking the signature of {} failed: {failed}; retrying",
            check.digest
        )),
    );
    status::write(ctx, instance, s).await?;
    Ok(ControlFlow::Break(Action::requeue(RETRY)))
}

async fn refuse(
    instance: &Instance,
    ctx: &Context,
    message: String,
) -> Result<ControlFlow<Action>, Error> {
    warn!(instance = %instance.name_any(), %message, "refusing an instance whose image signature does not verify");
    status::fail(ctx, instance, NOT_TRUSTED, message).await?;
    Ok(ControlFlow::Break(Action::await_change()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_crds::instance::SignatureKey;

    const PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEZMzrLKrbj2pNTJg31a1OvHm5+vaP
4uCbfJAiPm6sDHPjSbswcCPLwbdXCShkpwnQIfsPytXk6ciUQr188Cy70Q==
-----END PUBLIC KEY-----";
    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    fn keys(pem: &str) -> ImageSignature {
        ImageSignature {
            keys: vec![SignatureKey {
                name: "release.pub".into(),
                public_key: pem.into(),
            }],
        }
    }

    #[test]
    fn nothing_is_checked_unless_the_spec_requires_a_signature() {
        assert!(plan("localhost:5000/web:v1", None).unwrap().is_none());
    }

    #[test]
    fn a_pinned_image_with_keys_is_checked_against_its_digest() {
        let image = format!("localhost:5000/team/web@{DIGEST}");
        let check = plan(&image, Some(&keys(PEM))).unwrap().unwrap();
        assert_eq!(check.digest, DIGEST);
        assert_eq!(check.image.repository, "team/web");
    }

    #[test]
    fn a_tag_or_an_unusable_key_is_refused_naming_the_problem() {
        let err = plan("localhost:5000/web:v1", Some(&keys(PEM))).unwrap_err();
        assert!(err.contains("pinned by digest"), "{err}");
        let image = format!("localhost:5000/web@{DIGEST}");
        let err = plan(&image, Some(&keys("not a key"))).unwrap_err();
        assert!(
            err.contains("release.pub") && err.contains("cosign.pub"),
            "{err}"
        );
        let none = ImageSignature { keys: vec![] };
        let err = plan(&image, Some(&none)).unwrap_err();
        assert!(err.contains("at least one"), "{err}");
    }
}
