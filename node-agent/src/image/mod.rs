//! Pulling images into containerd's content store, verified blob by blob.
//!
//! containerd 1.6 has no server-side pull, so the agent fetches from the registry itself:
//! every blob is written with its expected digest and size, and containerd refuses to
//! commit anything else. Everything a pull writes is held by a containerd lease until the
//! image record exists; a pull that fails deletes its lease (synchronously garbage
//! collecting what it wrote), so nothing half-imported stays behind.

// The registry client, references, digests and bounds live in the `bulkhead-registry` crate,
// which the controller shares (it follows tags and verifies signatures with them).
pub use bulkhead_registry::{bounds, client as registry, digest, reference};

pub mod recent;

use std::collections::HashMap;

use containerd_client::types::Descriptor;
use futures::StreamExt;
use oci_spec::image::{ImageConfiguration, MediaType};
use sha2::{Digest, Sha256};

use crate::runtime::containerd::{Containerd, ContainerdError, WriteError};
pub use bulkhead_registry::Registry;
pub use reference::ImageRef;

/// An image ready to run: its manifest digest, config and the snapshot holding its layers.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The reference pinned to the manifest digest.
    pub pinned: String,
    /// The manifest digest (what `status.imageDigest` records).
    pub digest: String,
    /// The image configuration (entrypoint, cmd, env, user, ...).
    pub config: ImageConfiguration,
    /// The committed snapshot of the top layer (its chain ID).
    pub chain_id: String,
    /// Bytes fetched from the registry by this pull (0 when everything was present).
    pub fetched_bytes: u64,
}

pub use bulkhead_registry::PullError;

impl From<ContainerdError> for PullError {
    fn from(e: ContainerdError) -> Self {
        PullError::Store(Box::new(e))
    }
}

/// The chain IDs of a layer stack, as containerd and the OCI image spec define them:
/// chain(0) = diff(0), chain(n) = sha256(chain(n-1) + " " + diff(n)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => {
                format!(
                    "sha256:{}",
                    hex::encode(Sha256::digest(format!("{parent} {diff}")))
                )
            }
        };
        out.push(next);
    }
    out
}

fn descriptor(media_type: &MediaType, digest: &str, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.to_string(),
        digest: digest.into(),
        size: size as i64,
        annotations: HashMap::new(),
    }
}

/// Pulls `reference` into containerd (unless it is there already), verifying every manifest
/// and blob against its digest, and unpacks its layers into committed snapshots. The whole
/// pull is bounded by [`bounds::PULL_TIMEOUT`].
pub async fn pull(
    ctr: &Containerd,
    registry: &Registry,
    reference: &ImageRef,
    go_arch: &str,
) -> Result<PulledImage, PullError> {
    pull_within(ctr, registry, reference, go_arch, bounds::PULL_TIMEOUT).await
}

/// The image `reference` names when containerd holds all of it already (a tag is resolved
/// at the registry first, within [`bounds::PULL_TIMEOUT`], or taken from `recent`): what a
/// start runs without a pull. None when something is missing.
pub async fn present(
    ctr: &Containerd,
    (registry, recent): (&Registry, &recent::RecentTags),
    reference: &ImageRef,
    go_arch: &str,
) -> Result<Option<PulledImage>, PullError> {
    registry.check_allowed(reference)?;
    let name = reference.to_string();
    let digest = match &reference.digest {
        Some(digest) => {
            registry::check_digest(reference, digest)?;
            digest.clone()
        }
        None => match recent.get(&name, go_arch, std::time::Instant::now()) {
            Some(digest) => digest,
            None => {
                let digest = tokio::time::timeout(
                    bounds::PULL_TIMEOUT,
                    registry.resolve(reference, go_arch),
                )
                .await
                .map_err(|_| PullError::TimedOut {
                    reference: name.clone(),
                    seconds: bounds::PULL_TIMEOUT.as_secs(),
                })??
                .digest;
                recent.put(&name, go_arch, &digest, std::time::Instant::now());
                digest
            }
        },
    };
    local(ctr, reference, &digest).await
}

/// [`pull`] with a deadline of its own.
pub async fn pull_within(
    ctr: &Containerd,
    registry: &Registry,
    reference: &ImageRef,
    go_arch: &str,
    deadline: std::time::Duration,
) -> Result<PulledImage, PullError> {
    registry.check_allowed(reference)?;
    if let Some(digest) = &reference.digest {
        registry::check_digest(reference, digest)?;
    }
    // A digest-pinned image that is fully present needs no registry at all.
    if let Some(digest) = &reference.digest
        && let Some(image) = local(ctr, reference, digest).await?
    {
        return Ok(image);
    }
    let timed_out = || PullError::TimedOut {
        reference: reference.to_string(),
        seconds: deadline.as_secs(),
    };
    let started = tokio::time::Instant::now();
    let resolved = tokio::time::timeout(deadline, registry.resolve(reference, go_arch))
        .await
        .map_err(|_| timed_out())??;
    let lock = registry.pull_lock(&resolved.digest);
    let _pulling = lock.lock().await;
    if let Some(image) = local(ctr, reference, &resolved.digest).await? {
        return Ok(image);
    }
    let lease = format!(
        "bulkhead-pull-{}",
        &resolved.digest["sha256:".len()..][..16]
    );
    ctr.create_lease(&lease, 3600).await.or_else(|e| {
        if e.is_already_exists() {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    let remaining = deadline.saturating_sub(started.elapsed());
    let result = tokio::time::timeout(
        remaining,
        fetch_and_unpack(ctr, registry, reference, &resolved, &lease),
    )
    .await
    .unwrap_or_else(|_| Err(timed_out()));
    // With the image record written the lease is no longer needed; without it, deleting
    // the lease synchronously collects whatever this pull wrote.
    ctr.delete_lease(&lease, result.is_err()).await?;
    result
}

/// The image as containerd already holds it, if complete.
async fn local(
    ctr: &Containerd,
    reference: &ImageRef,
    digest: &str,
) -> Result<Option<PulledImage>, PullError> {
    let pinned = reference.pinned(digest).to_string();
    if ctr.get_image(&pinned).await?.is_none() {
        return Ok(None);
    }
    let manifest_bytes = ctr.read_content(digest).await?;
    let manifest =
        oci_spec::image::ImageManifest::from_reader(manifest_bytes.as_slice()).map_err(|e| {
            PullError::InvalidManifest {
                reference: pinned.clone(),
                message: e.to_string(),
            }
        })?;
    let config_bytes = ctr
        .read_content(manifest.config().digest().as_ref())
        .await?;
    let config = parse_config(&pinned, &config_bytes)?;
    let chain = chain_ids(config.rootfs().diff_ids());
    let Some(top) = chain.last() else {
        return Ok(None);
    };
    if !ctr.snapshot_exists(top).await? {
        return Ok(None);
    }
    Ok(Some(PulledImage {
        pinned,
        digest: digest.into(),
        config,
        chain_id: top.clone(),
        fetched_bytes: 0,
    }))
}

/// Parses an image config; its diff IDs must be sha256 digests, as chain IDs are built
/// from them and name snapshots.
pub fn parse_config(reference: &str, bytes: &[u8]) -> Result<ImageConfiguration, PullError> {
    let config =
        ImageConfiguration::from_reader(bytes).map_err(|e| PullError::InvalidManifest {
            reference: reference.into(),
            message: format!("config: {e}"),
        })?;
    if let Some(bad) = config
        .rootfs()
        .diff_ids()
        .iter()
        .find(|d| digest::Algorithm::of(d) != Ok(digest::Algorithm::Sha256))
    {
        return Err(PullError::InvalidManifest {
            reference: reference.into(),
            message: format!(
                "config: diff ID {:?} is not sha256:<64 hex digits>",
                bad.chars().take(80).collect::<String>()
            ),
        });
    }
    Ok(config)
}

async fn fetch_and_unpack(
    ctr: &Containerd,
    registry: &Registry,
    reference: &ImageRef,
    resolved: &registry::ResolvedManifest,
    lease: &str,
) -> Result<PulledImage, PullError> {
    let pinned = reference.pinned(&resolved.digest).to_string();
    let manifest = &resolved.manifest;

    // 1. The config first: its diff IDs name the snapshots, which its GC label keeps alive.
    let config_digest = manifest.config().digest().to_string();
    let config_bytes = registry
        .config(reference, &config_digest, manifest.config().size())
        .await?;
    let mut fetched = config_bytes.len() as u64;
    let config = parse_config(&pinned, &config_bytes)?;
    let diff_ids = config.rootfs().diff_ids().clone();
    if diff_ids.len() != manifest.layers().len() {
        return Err(PullError::InvalidManifest {
            reference: pinned,
            message: format!(
                "{} layers but {} diff IDs",
                manifest.layers().len(),
                diff_ids.len()
            ),
        });
    }
    let chain = chain_ids(&diff_ids);

    // 2. Each layer's blob, then its snapshot.
    let pull = LayerPull {
        ctr,
        registry,
        reference,
        lease,
        pinned: &pinned,
    };
    for (i, layer) in manifest.layers().iter().enumerate() {
        fetched += pull.layer(i, layer, &chain, &diff_ids).await?;
    }
    let top = chain
        .last()
        .cloned()
        .ok_or_else(|| PullError::InvalidManifest {
            reference: pinned.clone(),
            message: "the image has no layers".into(),
        })?;
    crate::failpoint::hit("pull-after-layers");

    // 3. The config, the manifest and the image record, each blob holding what it names.
    record(
        ctr,
        lease,
        resolved,
        (&config_digest, config_bytes),
        &top,
        &pinned,
    )
    .await?;
    Ok(PulledImage {
        pinned,
        digest: resolved.digest.clone(),
        config,
        chain_id: top,
        fetched_bytes: fetched,
    })
}

/// What every layer of one pull shares.
struct LayerPull<'a> {
    ctr: &'a Containerd,
    registry: &'a Registry,
    reference: &'a ImageRef,
    lease: &'a str,
    pinned: &'a str,
}

impl LayerPull<'_> {
    /// Layer `i`: its blob written unless containerd has it (verified by containerd on
    /// commit), then applied onto the snapshot of the layers below unless its snapshot
    /// exists, the uncompressed digest checked against the config's diff ID. The bytes
    /// fetched.
    async fn layer(
        &self,
        i: usize,
        layer: &oci_spec::image::Descriptor,
        chain: &[String],
        diff_ids: &[String],
    ) -> Result<u64, PullError> {
        let ctr = self.ctr;
        let digest = layer.digest().to_string();
        let mut fetched = 0;
        if !ctr.content_exists(&digest).await? {
            fetched = write_blob(
                ctr,
                self.registry,
                self.reference,
                self.lease,
                &digest,
                layer.size(),
                HashMap::new(),
            )
            .await?;
        }
        if ctr.snapshot_exists(&chain[i]).await? {
            return Ok(fetched);
        }
        let parent = if i == 0 {
            String::new()
        } else {
            chain[i - 1].clone()
        };
        let key = format!(
            "extract-{}-{}",
            std::process::id(),
            &chain[i]["sha256:".len()..]
        );
        let _ = ctr.remove_snapshot(&key).await;
        let mounts = ctr
            .prepare_snapshot(Some(self.lease), &key, &parent, HashMap::new())
            .await?;
        let applied = ctr
            .apply_layer(
                descriptor(layer.media_type(), &digest, layer.size()),
                mounts,
            )
            .await;
        let applied = match applied {
            Ok(d) => d,
            Err(e) => {
                discard_snapshot(ctr, &key).await;
                return Err(e.into());
            }
        };
        if applied != diff_ids[i] {
            discard_snapshot(ctr, &key).await;
            return Err(PullError::DigestMismatch {
                what: format!("uncompressed layer {i} of {}", self.pinned),
                expected: diff_ids[i].clone(),
                actual: applied,
            });
        }
        ctr.commit_snapshot(Some(self.lease), &chain[i], &key, HashMap::new())
            .await?;
        Ok(fetched)
    }
}

/// Writes the config (labelled with the top snapshot), the manifest (labelled with the
/// config and every layer) and the image `pinned` naming the manifest: containerd's GC
/// keeps each as long as what names it.
async fn record(
    ctr: &Containerd,
    lease: &str,
    resolved: &registry::ResolvedManifest,
    (config_digest, config_bytes): (&str, Vec<u8>),
    top: &str,
    pinned: &str,
) -> Result<(), PullError> {
    let config_labels = HashMap::from([(
        format!(
            "containerd.io/gc.ref.snapshot.{}",
            crate::runtime::containerd::SNAPSHOTTER
        ),
        top.to_string(),
    )]);
    write_bytes(ctr, lease, config_digest, config_bytes, config_labels).await?;
    let mut manifest_labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        config_digest.to_string(),
    )]);
    for (i, layer) in resolved.manifest.layers().iter().enumerate() {
        manifest_labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            layer.digest().to_string(),
        );
    }
    write_bytes(
        ctr,
        lease,
        &resolved.digest,
        resolved.bytes.clone(),
        manifest_labels,
    )
    .await?;
    let media_type = if resolved.media_type.is_empty() {
        MediaType::ImageManifest.to_string()
    } else {
        resolved.media_type.clone()
    };
    let target = Descriptor {
        media_type,
        digest: resolved.digest.clone(),
        size: resolved.bytes.len() as i64,
        annotations: HashMap::new(),
    };
    ctr.put_image(pinned, target).await?;
    Ok(())
}

async fn write_bytes(
    ctr: &Containerd,
    lease: &str,
    digest: &str,
    bytes: Vec<u8>,
    labels: HashMap<String, String>,
) -> Result<(), PullError> {
    let size = bytes.len() as i64;
    let stream =
        futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(bytes))]);
    match ctr.write_content(lease, digest, size, labels, stream).await {
        Ok(()) => Ok(()),
        Err(WriteError::Containerd(e)) if e.is_already_exists() => Ok(()),
        Err(WriteError::Containerd(e)) => Err(e.into()),
        Err(WriteError::Source(never)) => match never {},
        Err(WriteError::Closed) => Err(closed(digest)),
    }
}

/// Streams one layer blob into containerd, never taking more than its descriptor's `size`
/// bytes from the registry; containerd verifies the digest on commit.
async fn write_blob(
    ctr: &Containerd,
    registry: &Registry,
    reference: &ImageRef,
    lease: &str,
    digest: &str,
    size: u64,
    labels: HashMap<String, String>,
) -> Result<u64, PullError> {
    let algorithm = registry::check_digest(reference, digest)?;
    let response = registry.blob(reference, digest).await?;
    let what = format!("layer blob {digest} of {reference} ({size} bytes by its descriptor)");
    let too_large = || PullError::TooLarge {
        registry: reference.registry.clone(),
        what: what.clone(),
        limit: size,
    };
    if response.content_length().is_some_and(|n| n > size) {
        return Err(too_large());
    }
    // Count and hash as the bytes pass, so a mismatch is reported with both digests.
    let mut hasher = algorithm.hasher();
    let mut count = 0u64;
    let stream = bounds::capped_stream(response.bytes_stream(), size).map(|chunk| {
        if let Ok(bytes) = &chunk {
            hasher.update(bytes);
            count += bytes.len() as u64;
        }
        chunk
    });
    let result = ctr
        .write_content(lease, digest, size as i64, labels, Box::pin(stream))
        .await;
    match result {
        Ok(()) => Ok(count),
        Err(WriteError::Containerd(e)) if e.is_already_exists() => Ok(count),
        Err(WriteError::Containerd(e)) => {
            let actual = hasher.finish();
            if actual != digest || count != size {
                Err(PullError::DigestMismatch {
                    what: format!("layer blob of {reference} ({count} of {size} bytes)"),
                    expected: digest.into(),
                    actual,
                })
            } else {
                Err(e.into())
            }
        }
        Err(WriteError::Source(bounds::BodyError::TooLarge { .. })) => Err(too_large()),
        Err(WriteError::Source(bounds::BodyError::Transfer(message))) => {
            Err(PullError::RegistryUnreachable {
                registry: reference.registry.clone(),
                message,
            })
        }
        Err(WriteError::Closed) => Err(closed(digest)),
    }
}

fn closed(digest: &str) -> PullError {
    PullError::from(ContainerdError {
        op: "write content",
        object: digest.into(),
        source: containerd_client::tonic::Status::unavailable("stream closed"),
    })
}

/// Removes an extraction snapshot of a failed pull, trying again a few times (containerd
/// may still hold the mount the apply used); what stays is left to the lease's collection.
async fn discard_snapshot(ctr: &Containerd, key: &str) {
    for attempt in 1..=5u32 {
        match ctr.remove_snapshot(key).await {
            Ok(()) => return,
            Err(e) if attempt == 5 => {
                tracing::warn!(snapshot = key, error = %e, "removing the extraction snapshot of a failed pull failed");
            }
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(100 * u64::from(attempt))).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = "sha256:aaaa".to_string();
        let b = "sha256:bbbb".to_string();
        let chain = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(chain[0], a, "the first chain ID is the first diff ID");
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest("sha256:aaaa sha256:bbbb"))
        );
        assert_eq!(chain[1], expected);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn a_config_whose_diff_ids_are_not_digests_is_refused() {
        let config = |diff: &str| {
            serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [diff]}}))
            .unwrap()
        };
        parse_config("web", &config(&format!("sha256:{}", "a".repeat(64)))).unwrap();
        for bad in ["x", "sha512:00", "sha256:../../snapshots"] {
            let err = parse_config("web", &config(bad)).unwrap_err();
            assert!(
                err.to_string().contains("is not sha256:<64 hex digits>"),
                "{err}"
            );
        }
    }
}
