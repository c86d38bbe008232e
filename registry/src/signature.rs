//! cosign signatures, checked offline: the `sha256-<hex>.sig` artefact cosign pushes beside an
//! image in the same repository, each layer a simple-signing payload with its signature in the
//! `dev.cosignproject.cosign/signature` annotation, verified against public keys the user
//! trusts (ECDSA P-256, what `cosign generate-key-pair` makes). No transparency log, no TUF:
//! nothing beyond the registry is fetched, so verification cannot fail for want of a service.
//!
//! The RustCrypto `p256` crate does the cryptography. sigstore-rs does the same check but
//! brings an OCI client, TUF and Fulcio/Rekor clients of its own and a second TLS stack; this
//! module reuses the bounded registry client both binaries already have.

use base64::Engine as _;
use p256::{
    ecdsa::{DerSignature, VerifyingKey, signature::Verifier as _},
    pkcs8::DecodePublicKey as _,
};
use serde::Deserialize;

use crate::{ImageRef, PullError, Registry, digest::Algorithm};

/// The media type of a cosign simple-signing layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature of the payload.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a cosign image signature payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// The most signature layers looked at for one digest.
pub const MAX_SIGNATURES: usize = 16;
/// The largest payload read.
pub const MAX_PAYLOAD_BYTES: u64 = 64 << 10;

/// Public keys a user trusts, each with the name it was given (a ConfigMap key).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys(Vec<(String, VerifyingKey)>);

/// A key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "trusted key {name} is not a PEM ECDSA P-256 public key ({message}); put the content of cosign.pub there"
)]
pub struct KeyError {
    /// The key's name.
    pub name: String,
    /// What the parser said.
    pub message: String,
}

impl TrustedKeys {
    /// Parses named PEM public keys.
    pub fn parse<'a>(keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, KeyError> {
        let mut out = Vec::new();
        for (name, pem) in keys {
            let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| KeyError {
                name: name.to_string(),
                message: e.to_string(),
            })?;
            out.push((name.to_string(), key));
        }
        Ok(Self(out))
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a digest is not trusted. Each says which digest and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    /// No signature artefact exists for the digest.
    #[error(
        "image {digest} is not signed: no {tag} in the repository; sign it with cosign sign --key"
    )]
    Unsigned {
        /// The digest.
        digest: String,
        /// The tag looked for.
        tag: String,
    },
    /// Signatures exist, none verifies with a trusted key.
    #[error(
        "image {digest} has {count} signature(s), none valid for a trusted key; sign it with a trusted key or trust the key that signed it"
    )]
    NoTrustedSignature {
        /// The digest.
        digest: String,
        /// Signature layers looked at.
        count: usize,
    },
    /// A valid signature, but for another image.
    #[error("image {digest} carries a signature for another image ({signed}); sign this digest")]
    SignedForAnotherDigest {
        /// The digest.
        digest: String,
        /// What the payload names.
        signed: String,
    },
    /// The digest itself cannot be checked.
    #[error("{0}")]
    BadDigest(String),
}

impl Untrusted {
    /// A CamelCase reason for conditions and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Untrusted::Unsigned { .. } => "Unsigned",
            Untrusted::NoTrustedSignature { .. } => "NoTrustedSignature",
            Untrusted::SignedForAnotherDigest { .. } => "SignedForAnotherDigest",
            Untrusted::BadDigest(_) => "UnsupportedDigest",
        }
    }
}

/// Verification could not finish (the registry) or found the digest untrusted.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A verdict: the digest is not trusted.
    #[error(transparent)]
    Untrusted(#[from] Untrusted),
    /// No verdict: the registry failed; try again later.
    #[error("reading the signatures failed: {0}")]
    Registry(#[from] PullError),
}

/// The tag cosign stores the signatures of `digest` under: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> Result<String, Untrusted> {
    match Algorithm::of(digest) {
        Ok(_) => Ok(format!("{}.sig", digest.replacen(':', "-", 1))),
        Err(e) => Err(Untrusted::BadDigest(e.to_string())),
    }
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    #[serde(rename = "type")]
    type_: String,
    image: PayloadImage,
}

#[derive(Deserialize)]
struct PayloadImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// What one signature layer says about `digest`: the name of the key it verifies with, or
/// `None` when no trusted key made it; an error when a valid signature names another image.
/// The signature is checked before the payload is read, so a tampered payload never counts.
pub fn check_one(
    keys: &TrustedKeys,
    digest: &str,
    payload: &[u8],
    signature_b64: &str,
) -> Result<Option<String>, Untrusted> {
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(signature_b64.trim()) else {
        return Ok(None);
    };
    let Ok(signature) = DerSignature::from_bytes(&der) else {
        return Ok(None);
    };
    let Some((name, _)) = keys
        .0
        .iter()
        .find(|(_, key)| key.verify(payload, &signature).is_ok())
    else {
        return Ok(None);
    };
    let parsed: Option<Payload> = serde_json::from_slice(payload).ok();
    match parsed {
        Some(p)
            if p.critical.type_ == PAYLOAD_TYPE
                && p.critical.image.docker_manifest_digest == digest =>
        {
            Ok(Some(name.clone()))
        }
        Some(p) => Err(Untrusted::SignedForAnotherDigest {
            digest: digest.to_string(),
            signed: p.critical.image.docker_manifest_digest,
        }),
        None => Err(Untrusted::SignedForAnotherDigest {
            digest: digest.to_string(),
            signed: "an unreadable payload".into(),
        }),
    }
}

/// Checks that `digest` in `image`'s repository carries a valid cosign signature from one of
/// `keys`. Returns the name of the key that signed it.
pub async fn verify(
    registry: &Registry,
    image: &ImageRef,
    digest: &str,
    keys: &TrustedKeys,
) -> Result<String, VerifyError> {
    let tag = signature_tag(digest)?;
    let manifest = match registry.manifest(image, &tag).await {
        Ok(m) => m,
        Err(PullError::ImageNotFound { .. }) => {
            return Err(Untrusted::Unsigned {
                digest: digest.to_string(),
                tag,
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let mut count = 0;
    let mut another = None;
    for layer in manifest.layers().iter().take(MAX_SIGNATURES) {
        let Some(signature) = layer
            .annotations()
            .as_ref()
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        else {
            continue;
        };
        count += 1;
        let size = layer.size();
        if size > MAX_PAYLOAD_BYTES {
            continue;
        }
        let payload = registry
            .config(image, layer.digest().as_ref(), size)
            .await?;
        match check_one(keys, digest, &payload, signature) {
            Ok(Some(key)) => return Ok(key),
            Ok(None) => {}
            Err(e) => another = Some(e),
        }
    }
    Err(another
        .unwrap_or(Untrusted::NoTrustedSignature {
            digest: digest.to_string(),
            count,
        })
        .into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::{
        ecdsa::{SigningKey, signature::Signer as _},
        pkcs8::EncodePublicKey as _,
    };

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const OTHER: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_slice(&[seed; 32]).unwrap()
    }

    fn trusted(k: &SigningKey) -> TrustedKeys {
        let pem = k
            .verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap();
        TrustedKeys::parse([("cosign.pub", pem.as_str())]).unwrap()
    }

    fn payload(digest: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"critical": {
            "identity": {"docker-reference": "localhost:5000/bulkhead/web"},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE}, "optional": null}))
        .unwrap()
    }

    fn sign(k: &SigningKey, payload: &[u8]) -> String {
        let sig: p256::ecdsa::Signature = k.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }

    #[test]
    fn a_signature_by_a_trusted_key_for_this_digest_is_accepted() {
        let k = key(7);
        let p = payload(DIGEST);
        assert_eq!(
            check_one(&trusted(&k), DIGEST, &p, &sign(&k, &p)),
            Ok(Some("cosign.pub".into()))
        );
    }

    #[test]
    fn an_unknown_key_a_tampered_payload_and_garbage_do_not_count() {
        let (k, stranger) = (key(7), key(9));
        let p = payload(DIGEST);
        let keys = trusted(&k);
        assert_eq!(check_one(&keys, DIGEST, &p, &sign(&stranger, &p)), Ok(None));
        let mut tampered = p.clone();
        tampered[3] ^= 1;
        assert_eq!(check_one(&keys, DIGEST, &tampered, &sign(&k, &p)), Ok(None));
        assert_eq!(check_one(&keys, DIGEST, &p, "not base64!"), Ok(None));
        assert_eq!(check_one(&keys, DIGEST, &p, "AAAA"), Ok(None));
    }

    #[test]
    fn a_valid_signature_for_another_digest_is_refused_with_that_digest() {
        let k = key(7);
        let p = payload(OTHER);
        let err = check_one(&trusted(&k), DIGEST, &p, &sign(&k, &p)).unwrap_err();
        assert_eq!(err.reason(), "SignedForAnotherDigest");
        assert!(err.to_string().contains(OTHER), "{err}");
    }

    #[test]
    fn keys_that_are_not_p256_public_keys_are_refused_by_name() {
        let err = TrustedKeys::parse([(
            "team.pub",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        )])
        .unwrap_err();
        assert_eq!(err.name, "team.pub");
        assert!(err.to_string().contains("cosign.pub"), "{err}");
    }

    #[test]
    fn the_signature_tag_is_cosigns() {
        assert_eq!(
            signature_tag(DIGEST).unwrap(),
            format!("sha256-{}.sig", "a".repeat(64))
        );
        assert_eq!(
            signature_tag("sha256:../x").unwrap_err().reason(),
            "UnsupportedDigest"
        );
    }
}
