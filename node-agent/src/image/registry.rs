//! A small OCI distribution client: resolve a manifest, fetch blobs, verify digests.
//!
//! Registries on loopback are spoken to over plain HTTP, every other one over HTTPS.
//! Anonymous access only for now; registries behind token auth are future work.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use oci_spec::image::{ImageIndex, ImageManifest};
use sha2::{Digest, Sha256};

use super::{PullError, reference::ImageRef};

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Upper bound for a manifest body; anything larger is not a manifest.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

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
            .timeout(Duration::from_secs(600))
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

    fn base(image: &ImageRef) -> String {
        let host = image.registry_host();
        let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
        let scheme = if loopback { "http" } else { "https" };
        let registry = if image.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &image.registry
        };
        format!("{scheme}://{registry}/v2/{}", image.repository)
    }

    async fn get(
        &self,
        image: &ImageRef,
        url: &str,
        accept: &str,
    ) -> Result<reqwest::Response, PullError> {
        let response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .await
            .map_err(|e| PullError::RegistryUnreachable {
                registry: image.registry.clone(),
                message: e.to_string(),
            })?;
        match response.status() {
            s if s.is_success() => Ok(response),
            reqwest::StatusCode::NOT_FOUND => Err(PullError::ImageNotFound {
                reference: image.to_string(),
            }),
            s => Err(PullError::RegistryError {
                registry: image.registry.clone(),
                status: s.as_u16(),
                url: url.to_string(),
            }),
        }
    }

    async fn manifest_bytes(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<(String, String, Vec<u8>), PullError> {
        let url = format!("{}/manifests/{reference}", Self::base(image));
        let response = self.get(image, &url, &MANIFEST_TYPES.join(", ")).await?;
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
        let bytes = response
            .bytes()
            .await
            .map_err(|e| PullError::RegistryUnreachable {
                registry: image.registry.clone(),
                message: e.to_string(),
            })?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(PullError::InvalidManifest {
                reference: image.to_string(),
                message: format!("manifest of {} bytes is too large", bytes.len()),
            });
        }
        let digest = sha256_digest(&bytes);
        // The digest asked for, or else the one the registry claims, must be what arrived.
        let expected = if reference.starts_with("sha256:") {
            Some(reference.to_string())
        } else {
            served_digest
        };
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(PullError::DigestMismatch {
                what: format!("manifest of {image}"),
                expected,
                actual: digest,
            });
        }
        Ok((digest, media_type, bytes.to_vec()))
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
            .manifest_bytes(image, image.manifest_reference())
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
        let index =
            ImageIndex::from_reader(bytes.as_slice()).map_err(|e| PullError::InvalidManifest {
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
        let child = chosen.digest().to_string();
        let (child_digest, child_type, child_bytes) = self.manifest_bytes(image, &child).await?;
        let manifest = parse_manifest(image, &child_bytes)?;
        Ok(ResolvedManifest {
            digest: child_digest,
            media_type: child_type,
            bytes: child_bytes,
            manifest,
            index: Some((digest, media_type, bytes)),
        })
    }

    /// Starts fetching a blob; the caller streams and verifies it.
    pub async fn blob(
        &self,
        image: &ImageRef,
        digest: &str,
    ) -> Result<reqwest::Response, PullError> {
        let url = format!("{}/blobs/{digest}", Self::base(image));
        self.get(image, &url, "*/*").await
    }
}

fn parse_manifest(image: &ImageRef, bytes: &[u8]) -> Result<ImageManifest, PullError> {
    ImageManifest::from_reader(bytes).map_err(|e| PullError::InvalidManifest {
        reference: image.to_string(),
        message: e.to_string(),
    })
}
