//! A small OCI distribution client: resolve a manifest, fetch blobs, verify digests. The node
//! agent pulls with it; the controller resolves followed tags and reads signatures with it.
//!
//! Registries on loopback are spoken to over plain HTTP, every other one over HTTPS. What a
//! registry may send is bounded (see [`crate::bounds`]).
//! Anonymous access only for now; registries behind token auth are future work.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use oci_spec::image::{ImageIndex, ImageManifest};
use sha2::{Digest, Sha256};

use crate::{
    PullError,
    bounds::{self, BodyError},
    digest::Algorithm,
    reference::ImageRef,
};

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// A resolved, digest-verified image manifest.
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    /// Digest of `bytes`, computed here.
    pub digest: String,
    /// Media type as the registry declared it.
    pub media_type: String,
    /// The manifest exactly as served.
    pub bytes: Vec<u8>,
    /// The parsed manifest.
    pub manifest: ImageManifest,
    /// The index it was selected from, when the reference named an index.
    pub index: Option<(String, String, Vec<u8>)>,
}

/// The registry client.
#[derive(Debug, Clone)]
pub struct Registry {
    http: reqwest::Client,
    allowed: Vec<String>,
    pulls: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// sha256 digest of bytes, `sha256:<hex>`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Registry {
    /// A client that only talks to the registries in `allowed` (host[:port]); an empty list
    /// allows every registry.
    pub fn new(allowed: Vec<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(bounds::READ_TIMEOUT)
            .timeout(bounds::BLOB_REQUEST_TIMEOUT)
            // Redirects are followed by hand, and only within the registry's origin.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client with the process-wide TLS provider");
        Self {
            http,
            allowed,
            pulls: Arc::default(),
        }
    }

    /// A lock per image digest: concurrent starts of the same image pull it once, the others
    /// wait and then find it present.
    pub fn pull_lock(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut pulls = self
            .pulls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pulls.retain(|_, lock| Arc::strong_count(lock) > 1);
        pulls.entry(digest.to_string()).or_default().clone()
    }

    /// Refuses registries outside the allow-list.
    pub fn check_allowed(&self, image: &ImageRef) -> Result<(), PullError> {
        if self.allowed.is_empty() || self.allowed.iter().any(|a| a == &image.registry) {
            Ok(())
        } else {
            Err(PullError::RegistryNotAllowed {
                registry: image.registry.clone(),
                allowed: self.allowed.join(", "),
            })
        }
    }

    pub(crate) fn base(image: &ImageRef) -> String {
        let host = image.registry_host();
        let scheme = if bounds::is_loopback(host) {
            "http"
        } else {
            "https"
        };
        let registry = if image.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &image.registry
        };
        format!("{scheme}://{registry}/v2/{}", image.repository)
    }

    /// GETs `url`, following redirects only within the registry's origin.
    pub(crate) async fn get(
        &self,
        image: &ImageRef,
        url: &str,
        accept: &str,
        timeout: Duration,
    ) -> Result<reqwest::Response, PullError> {
        let unreachable = |e: reqwest::Error| PullError::RegistryUnreachable {
            registry: image.registry.clone(),
            message: bounds::transfer_message(&e),
        };
        let mut current = reqwest::Url::parse(url).map_err(|e| PullError::InvalidManifest {
            reference: image.to_string(),
            message: format!("{url}: {e}"),
        })?;
        for _ in 0..=bounds::MAX_REDIRECTS {
            let response = self
                .http
                .get(current.clone())
                .header(reqwest::header::ACCEPT, accept)
                .timeout(timeout)
                .send()
                .await
                .map_err(unreachable)?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                current = bounds::redirect_target(&current, location).map_err(|location| {
                    PullError::RedirectRefused {
                        registry: image.registry.clone(),
                        location,
                    }
                })?;
                continue;
            }
            return match status {
                s if s.is_success() => Ok(response),
                reqwest::StatusCode::NOT_FOUND => Err(PullError::ImageNotFound {
                    reference: image.to_string(),
                }),
                s => Err(PullError::RegistryError {
                    registry: image.registry.clone(),
                    status: s.as_u16(),
                    url: current.to_string(),
                }),
            };
        }
        Err(PullError::TooManyRedirects {
            registry: image.registry.clone(),
            url: url.to_string(),
            limit: bounds::MAX_REDIRECTS,
        })
    }

    /// Reads a body of at most `limit` bytes.
    pub(crate) async fn read(
        &self,
        image: &ImageRef,
        what: &str,
        response: reqwest::Response,
        limit: u64,
    ) -> Result<Vec<u8>, PullError> {
        bounds::read_capped(response, limit)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge { limit } => PullError::TooLarge {
                    registry: image.registry.clone(),
                    what: what.to_string(),
                    limit,
                },
                BodyError::Transfer(message) => PullError::RegistryUnreachable {
                    registry: image.registry.clone(),
                    message,
                },
            })
    }

    /// A manifest by tag or digest, read through the size cap (`limit`, at most
    /// [`bounds::MAX_MANIFEST_BYTES`]) and verified: against the digest asked for, or else
    /// against the one the registry claims. Returns (sha256 digest, media type, bytes).
    async fn manifest_bytes(
        &self,
        image: &ImageRef,
        reference: &str,
        limit: u64,
    ) -> Result<(String, String, Vec<u8>), PullError> {
        let pinned = reference.contains(':');
        if pinned {
            check_digest(image, reference)?;
        }
        let url = format!("{}/manifests/{reference}", Self::base(image));
        let response = self
            .get(
                image,
                &url,
                &MANIFEST_TYPES.join(", "),
                bounds::SMALL_REQUEST_TIMEOUT,
            )
            .await?;
        let served_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let what = format!("manifest {reference} of {image}");
        let limit = limit.min(bounds::MAX_MANIFEST_BYTES);
        let bytes = self.read(image, &what, response, limit).await?;
        let expected = if pinned {
            Some(reference.to_string())
        } else {
            served_digest
        };
        if let Some(expected) = expected {
            verify(image, &what, &expected, &bytes)?;
        }
        Ok((sha256_digest(&bytes), media_type, bytes))
    }

    /// Resolves the reference to a single-platform manifest for `go_arch` (linux only),
    /// verifying every manifest against its digest.
    pub async fn resolve(
        &self,
        image: &ImageRef,
        go_arch: &str,
    ) -> Result<ResolvedManifest, PullError> {
        self.check_allowed(image)?;
        let (digest, media_type, bytes) = self
            .manifest_bytes(
                image,
                image.manifest_reference(),
                bounds::MAX_MANIFEST_BYTES,
            )
            .await?;
        let is_index = media_type.contains("index") || media_type.contains("manifest.list");
        if !is_index {
            let manifest = parse_manifest(image, &bytes)?;
            return Ok(ResolvedManifest {
                digest,
                media_type,
                bytes,
                manifest,
                index: None,
            });
        }
        let (child, child_size) = select_platform(image, &bytes, go_arch)?;
        let (child_digest, child_type, child_bytes) =
            self.manifest_bytes(image, &child, child_size).await?;
        let manifest = parse_manifest(image, &child_bytes)?;
        Ok(ResolvedManifest {
            digest: child_digest,
            media_type: child_type,
            bytes: child_bytes,
            manifest,
            index: Some((digest, media_type, bytes)),
        })
    }

    /// The digest `image`'s tag points to now: the top-level manifest or index, verified
    /// against what was served. This is what cosign signs and what a followed tag pins.
    pub async fn tag_digest(&self, image: &ImageRef) -> Result<String, PullError> {
        self.check_allowed(image)?;
        let (digest, _, _) = self
            .manifest_bytes(
                image,
                image.manifest_reference(),
                bounds::MAX_MANIFEST_BYTES,
            )
            .await?;
        Ok(digest)
    }

    /// A single-platform manifest by tag or digest (for artefacts such as cosign's
    /// `sha256-<hex>.sig`), verified and parsed.
    pub async fn manifest(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<ImageManifest, PullError> {
        self.check_allowed(image)?;
        let (_, _, bytes) = self
            .manifest_bytes(image, reference, bounds::MAX_MANIFEST_BYTES)
            .await?;
        parse_manifest(image, &bytes)
    }

    /// Starts fetching a blob; the caller streams it through a cap and verifies it.
    pub async fn blob(
        &self,
        image: &ImageRef,
        digest: &str,
    ) -> Result<reqwest::Response, PullError> {
        check_digest(image, digest)?;
        let url = format!("{}/blobs/{digest}", Self::base(image));
        self.get(image, &url, "*/*", bounds::BLOB_REQUEST_TIMEOUT)
            .await
    }

    /// A config blob: at most its descriptor's `size` (itself at most
    /// [`bounds::MAX_CONFIG_BYTES`]), verified against its digest.
    pub async fn config(
        &self,
        image: &ImageRef,
        digest: &str,
        size: u64,
    ) -> Result<Vec<u8>, PullError> {
        let what = format!("config blob {digest} of {image}");
        let too_large = |limit| PullError::TooLarge {
            registry: image.registry.clone(),
            what: what.clone(),
            limit,
        };
        if size > bounds::MAX_CONFIG_BYTES {
            return Err(too_large(bounds::MAX_CONFIG_BYTES));
        }
        check_digest(image, digest)?;
        let url = format!("{}/blobs/{digest}", Self::base(image));
        let response = self
            .get(image, &url, "*/*", bounds::SMALL_REQUEST_TIMEOUT)
            .await?;
        let bytes = self.read(image, &what, response, size).await?;
        verify(image, &what, digest, &bytes)?;
        Ok(bytes)
    }
}

/// Refuses a digest this agent cannot verify (or that could smuggle a path into a URL).
pub fn check_digest(image: &ImageRef, digest: &str) -> Result<Algorithm, PullError> {
    Algorithm::of(digest).map_err(|source| PullError::UnsupportedDigest {
        reference: image.to_string(),
        source,
    })
}

/// Checks `bytes` against `expected` in `expected`'s algorithm.
fn verify(image: &ImageRef, what: &str, expected: &str, bytes: &[u8]) -> Result<(), PullError> {
    check_digest(image, expected)?;
    match crate::digest::mismatch(expected, bytes) {
        Ok(None) => Ok(()),
        Ok(Some(actual)) => Err(PullError::DigestMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        }),
        Err(source) => Err(PullError::UnsupportedDigest {
            reference: image.to_string(),
            source,
        }),
    }
}

/// The digest and size of the linux/`go_arch` manifest an index names.
pub fn select_platform(
    image: &ImageRef,
    index: &[u8],
    go_arch: &str,
) -> Result<(String, u64), PullError> {
    let index = ImageIndex::from_reader(index).map_err(|e| PullError::InvalidManifest {
        reference: image.to_string(),
        message: e.to_string(),
    })?;
    let chosen = index
        .manifests()
        .iter()
        .find(|m| {
            m.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == "linux" && p.architecture().to_string() == go_arch
            })
        })
        .ok_or_else(|| PullError::NoMatchingPlatform {
            reference: image.to_string(),
            platform: format!("linux/{go_arch}"),
        })?;
    let digest = chosen.digest().to_string();
    check_digest(image, &digest)?;
    if chosen.size() > bounds::MAX_MANIFEST_BYTES {
        return Err(PullError::TooLarge {
            registry: image.registry.clone(),
            what: format!("manifest {digest} of {image}"),
            limit: bounds::MAX_MANIFEST_BYTES,
        });
    }
    Ok((digest, chosen.size()))
}

/// Parses a single-platform manifest and checks what the pull will rely on: at most
/// [`bounds::MAX_LAYERS`] layers, and digests this agent can verify.
pub fn parse_manifest(image: &ImageRef, bytes: &[u8]) -> Result<ImageManifest, PullError> {
    let manifest = ImageManifest::from_reader(bytes).map_err(|e| PullError::InvalidManifest {
        reference: image.to_string(),
        message: e.to_string(),
    })?;
    if manifest.layers().len() > bounds::MAX_LAYERS {
        return Err(PullError::InvalidManifest {
            reference: image.to_string(),
            message: format!(
                "{} layers, more than the {} this agent accepts",
                manifest.layers().len(),
                bounds::MAX_LAYERS
            ),
        });
    }
    check_digest(image, manifest.config().digest().as_ref())?;
    for layer in manifest.layers() {
        check_digest(image, layer.digest().as_ref())?;
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageRef {
        ImageRef::parse("127.0.0.1:5000/web:v1").unwrap()
    }

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn manifest(config_digest: &str, layers: &[String]) -> Vec<u8> {
        let layers: Vec<_> = layers
            .iter()
            .map(|digest| {
                serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": digest, "size": 10})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest, "size": 10},
            "layers": layers,
        }))
        .unwrap()
    }

    fn index(digest: &str, size: u64) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest, "size": size,
                "platform": {"os": "linux", "architecture": "amd64"}}],
        }))
        .unwrap()
    }

    #[test]
    fn a_manifest_within_bounds_parses() {
        let m = parse_manifest(&image(), &manifest(&d('a'), &[d('b'), d('c')])).unwrap();
        assert_eq!(m.layers().len(), 2);
        assert_eq!(
            select_platform(&image(), &index(&d('e'), 900), "amd64").unwrap(),
            (d('e'), 900)
        );
    }

    #[test]
    fn a_manifest_with_too_many_layers_is_refused_before_any_fetch() {
        let layers = vec![d('b'); bounds::MAX_LAYERS + 1];
        let err = parse_manifest(&image(), &manifest(&d('a'), &layers)).unwrap_err();
        assert_eq!(err.reason(), "InvalidImage");
        assert!(err.to_string().contains("129 layers"), "{err}");
    }

    #[test]
    fn digests_that_could_not_be_verified_or_would_bend_a_url_are_refused() {
        // A path in a digest: refused as it parses (oci-spec checks the digest grammar).
        let path = "sha256:../../../other/manifests/latest".to_string();
        let err = parse_manifest(&image(), &manifest(&path, &[d('b')])).unwrap_err();
        assert_eq!(err.reason(), "InvalidImage", "{err}");
        let err = select_platform(&image(), &index(&path, 10), "amd64").unwrap_err();
        assert_eq!(err.reason(), "InvalidImage", "{err}");
        // Well-formed, but an algorithm this agent does not verify.
        let sha384 = format!("sha384:{}", "0".repeat(96));
        for m in [
            manifest(&sha384, &[d('b')]),
            manifest(&d('a'), &[d('b'), sha384.clone()]),
        ] {
            let err = parse_manifest(&image(), &m).unwrap_err();
            assert_eq!(err.reason(), "UnsupportedDigest", "{err}");
        }
        let err = select_platform(&image(), &index(&sha384, 10), "amd64").unwrap_err();
        assert_eq!(err.reason(), "UnsupportedDigest", "{err}");
    }

    #[test]
    fn an_index_naming_a_huge_manifest_is_refused_before_it_is_fetched() {
        let err = select_platform(&image(), &index(&d('e'), 1 << 40), "amd64").unwrap_err();
        assert_eq!(err.reason(), "ImageTooLarge");
        assert!(err.to_string().contains("more than 4194304 bytes"), "{err}");
    }

    #[test]
    fn a_sha512_pin_is_verified_against_the_body() {
        let body = b"{\"schemaVersion\":2}";
        let good = Algorithm::Sha512.digest(body);
        verify(&image(), "manifest", &good, body).unwrap();
        let err = verify(&image(), "manifest", &good, b"something else").unwrap_err();
        assert_eq!(err.reason(), "ImageDigestMismatch");
        assert!(err.to_string().contains("got sha512:"), "{err}");
    }
}
