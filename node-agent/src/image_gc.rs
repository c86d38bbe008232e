//! Image garbage collection: image records no instance of this host needs are deleted once
//! unused for a while, or sooner, oldest first, while the disk is above a threshold.
//! containerd's own garbage collection then removes their content and snapshots.
//!
//! An image is needed (never removed) when a container of the agent's runs it (its
//! `bulkhead.dev/image-digest` label), or an Instance bound to this host and not being
//! deleted names it: by its `status.imageDigest`, or, before it has one, by its repository
//! (every image of that repository is kept, so an image being pulled for it is too).
//! "Unused for a while" counts from when the agent last saw the image needed, or first saw
//! it at all: an agent restart starts the count again, so it errs on keeping.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bulkhead_crds::Instance;
use kube::{Api, api::ListParams};
use tracing::{info, warn};

use crate::{
    image::reference::ImageRef,
    instance::{Context, labels},
};

/// An image record: its name (`<registry>/<repository>@<digest>`), its size, and when it
/// was last needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The record's name.
    pub name: String,
    /// Bytes of its manifest's config and layers (shared layers are counted per image).
    pub size: u64,
    /// When it was last needed (or first seen).
    pub last_used: SystemTime,
}

/// What this host's instances need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needed {
    /// Image digests in use.
    pub digests: HashSet<String>,
    /// Repositories (`<registry>/<repository>`) of instances that have no digest yet.
    pub repositories: HashSet<String>,
}

impl Needed {
    /// Whether the image record `name` is needed.
    pub fn needs(&self, name: &str) -> bool {
        match name.split_once('@') {
            Some((repository, digest)) => {
                self.digests.contains(digest) || self.repositories.contains(repository)
            }
            // Not a record the agent wrote (they are all pinned): not the agent's to remove.
            None => true,
        }
    }
}

/// The disk the images are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disk {
    /// Bytes used.
    pub used: u64,
    /// Bytes in all.
    pub total: u64,
}

/// When images go.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Seconds between passes.
    pub period: Duration,
    /// An image unneeded this long is removed.
    pub unused_after: Duration,
    /// The file system containerd keeps images on (its root), for the thresholds.
    pub disk_path: Option<PathBuf>,
    /// Above this percentage of the disk used, unneeded images go, oldest first...
    pub high_percent: u8,
    /// ...until the estimate is at this percentage.
    pub low_percent: u8,
}

/// One pass's view.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    /// The image records.
    pub images: &'a [Image],
    /// What instances need.
    pub needed: &'a Needed,
    /// The time now.
    pub now: SystemTime,
    /// How long an image may stay unneeded.
    pub unused_after: Duration,
    /// The disk, when known.
    pub disk: Option<Disk>,
    /// High and low thresholds, in percent.
    pub thresholds: (u8, u8),
}

/// The image records to delete, oldest first: every unneeded one unused for
/// `unused_after`, then, while the disk is above the high threshold, more unneeded ones
/// until the estimate reaches the low one. A needed image is never in the list.
pub fn plan(input: &Input) -> Vec<String> {
    let mut candidates: Vec<&Image> = input
        .images
        .iter()
        .filter(|i| !input.needed.needs(&i.name))
        .collect();
    candidates.sort_by_key(|i| (i.last_used, i.name.clone()));
    let idle = |i: &Image| {
        input
            .now
            .duration_since(i.last_used)
            .is_ok_and(|d| d >= input.unused_after)
    };
    let mut remove = Vec::new();
    let mut freed = 0u64;
    let mut rest = Vec::new();
    for i in candidates {
        if idle(i) {
            freed = freed.saturating_add(i.size);
            remove.push(i.name.clone());
        } else {
            rest.push(i);
        }
    }
    if let Some(disk) = input.disk {
        let (high, low) = input.thresholds;
        let percent = |used: u64| u128::from(used) * 100 / u128::from(disk.total.max(1));
        if percent(disk.used) > u128::from(high) {
            for i in rest {
                if percent(disk.used.saturating_sub(freed)) <= u128::from(low) {
                    break;
                }
                freed = freed.saturating_add(i.size);
                remove.push(i.name.clone());
            }
        }
    }
    remove
}

/// Updates when each image was last needed: needed ones now, new ones now (first seen);
/// forgets records that are gone.
pub fn touch(
    last_used: &mut HashMap<String, SystemTime>,
    names: &[String],
    needed: &Needed,
    now: SystemTime,
) {
    last_used.retain(|n, _| names.contains(n));
    for n in names {
        if needed.needs(n) {
            last_used.insert(n.clone(), now);
        } else {
            last_used.entry(n.clone()).or_insert(now);
        }
    }
}

/// Runs a pass every `settings.period` until the agent ends.
pub async fn run(ctx: Arc<Context>, settings: Settings) {
    let mut last_used = HashMap::new();
    let mut tick = tokio::time::interval(settings.period);
    loop {
        tick.tick().await;
        if let Err(e) = pass(&ctx, &settings, &mut last_used).await {
            warn!(error = %e, "image garbage collection failed");
        }
    }
}

async fn pass(
    ctx: &Context,
    settings: &Settings,
    last_used: &mut HashMap<String, SystemTime>,
) -> Result<(), crate::instance::Error> {
    // What is needed is read before the images: an image recorded after this is kept
    // (first seen now), never judged against an older view.
    let needed = needed(ctx).await?;
    let records = ctx.containerd.list_images().await?;
    let names: Vec<String> = records.iter().map(|(n, _)| n.clone()).collect();
    let now = SystemTime::now();
    touch(last_used, &names, &needed, now);
    let mut images = Vec::with_capacity(records.len());
    for (name, target) in records {
        images.push(Image {
            size: image_size(ctx, &target).await,
            last_used: last_used.get(&name).copied().unwrap_or(now),
            name,
        });
    }
    let disk = settings.disk_path.as_deref().and_then(disk_usage);
    let remove = plan(&Input {
        images: &images,
        needed: &needed,
        now,
        unused_after: settings.unused_after,
        disk,
        thresholds: (settings.high_percent, settings.low_percent),
    });
    for name in remove {
        ctx.containerd.delete_image(&name, true).await?;
        last_used.remove(&name);
        info!(image = %name, ?disk, "removed an image no instance of this host needs");
    }
    Ok(())
}

/// What the host's containers and bound, undeleted Instances need.
async fn needed(ctx: &Context) -> Result<Needed, crate::instance::Error> {
    let mut needed = Needed::default();
    for c in ctx.containerd.list_containers(None).await? {
        if let Some(d) = c.labels.get(labels::IMAGE_DIGEST) {
            needed.digests.insert(d.clone());
        }
    }
    let bound = Api::<Instance>::all(ctx.client.clone())
        .list(&ListParams::default().fields(&format!("spec.hostName={}", ctx.host)))
        .await?;
    for i in bound
        .items
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
    {
        let digest = i.status.as_ref().and_then(|s| s.image_digest.clone());
        let Ok(r) = ImageRef::parse(&i.spec.template.image) else {
            continue;
        };
        match digest.or_else(|| r.digest.clone()) {
            Some(d) => needed.digests.insert(d),
            None => needed
                .repositories
                .insert(format!("{}/{}", r.registry, r.repository)),
        };
    }
    Ok(needed)
}

/// An image's bytes: its manifest's config and layers; the target's own size when the
/// manifest cannot be read.
async fn image_size(ctx: &Context, target: &containerd_client::types::Descriptor) -> u64 {
    let own = u64::try_from(target.size).unwrap_or(0);
    let Ok(bytes) = ctx.containerd.read_content(&target.digest).await else {
        return own;
    };
    match oci_spec::image::ImageManifest::from_reader(bytes.as_slice()) {
        Ok(m) => m
            .layers()
            .iter()
            .map(|l| l.size())
            .fold(own.saturating_add(m.config().size()), u64::saturating_add),
        Err(_) => own,
    }
}

fn disk_usage(path: &std::path::Path) -> Option<Disk> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let block = s.fragment_size();
    let total = s.blocks().saturating_mul(block);
    let free = s.blocks_available().saturating_mul(block);
    Some(Disk {
        used: total.saturating_sub(free),
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(hours_ago: u64, now: SystemTime) -> SystemTime {
        now - HOUR * u32::try_from(hours_ago).unwrap_or(0)
    }

    fn image(name: &str, size: u64, hours_ago: u64, now: SystemTime) -> Image {
        Image {
            name: name.into(),
            size,
            last_used: at(hours_ago, now),
        }
    }

    fn needed(digests: &[&str], repositories: &[&str]) -> Needed {
        Needed {
            digests: digests.iter().map(|s| s.to_string()).collect(),
            repositories: repositories.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn input<'a>(images: &'a [Image], needed: &'a Needed, now: SystemTime) -> Input<'a> {
        Input {
            images,
            needed,
            now,
            unused_after: 24 * HOUR,
            disk: None,
            thresholds: (85, 80),
        }
    }

    #[test]
    fn unused_images_go_after_the_interval_needed_ones_never() {
        let now = SystemTime::now();
        let images = [
            image("r/web@sha256:a", 10, 48, now),
            image("r/web@sha256:b", 10, 48, now),
            image("r/tools@sha256:c", 10, 30, now),
            image("r/api@sha256:d", 10, 2, now),
            image("r/db@sha256:e", 10, 100, now),
            image("r/unpinned:latest", 10, 100, now),
        ];
        let n = needed(&["sha256:a"], &["r/db"]);
        assert_eq!(
            plan(&input(&images, &n, now)),
            vec!["r/web@sha256:b".to_string(), "r/tools@sha256:c".into()]
        );
    }

    #[test]
    fn above_the_threshold_more_go_oldest_first_down_to_the_low_mark() {
        let now = SystemTime::now();
        let images = [
            image("r/a@sha256:1", 50, 1, now),
            image("r/b@sha256:2", 50, 3, now),
            image("r/c@sha256:3", 50, 2, now),
            image("r/d@sha256:4", 500, 5, now),
        ];
        let n = needed(&["sha256:4"], &[]);
        let mut i = input(&images, &n, now);
        i.disk = Some(Disk {
            used: 900,
            total: 1000,
        });
        // 90% used: b (oldest unneeded) brings it to 85%, c to 80%; d is needed.
        assert_eq!(
            plan(&i),
            vec!["r/b@sha256:2".to_string(), "r/c@sha256:3".into()]
        );
        // Below the high mark nothing recent goes.
        i.disk = Some(Disk {
            used: 800,
            total: 1000,
        });
        assert!(plan(&i).is_empty());
        // Even at a full disk a needed image stays.
        i.disk = Some(Disk {
            used: 1000,
            total: 1000,
        });
        assert!(!plan(&i).contains(&"r/d@sha256:4".to_string()));
        assert_eq!(plan(&i).len(), 3);
    }

    #[test]
    fn extreme_inputs_do_not_overflow() {
        let now = SystemTime::now();
        let images = [
            image("r/a@sha256:1", u64::MAX, 48, now),
            image("r/b@sha256:2", u64::MAX, 1, now),
        ];
        let n = Needed::default();
        let mut i = input(&images, &n, now);
        i.disk = Some(Disk {
            used: u64::MAX,
            total: 0,
        });
        // The idle one goes; what it frees covers the (nonsense) usage, so the other stays.
        assert_eq!(plan(&i), vec!["r/a@sha256:1".to_string()]);
        // A clock gone backwards (last used in the future) is not idle.
        let future = [Image {
            name: "r/f@sha256:9".into(),
            size: 1,
            last_used: now + HOUR,
        }];
        assert!(plan(&input(&future, &n, now)).is_empty());
    }

    #[test]
    fn touch_counts_from_the_last_need_or_first_sight() {
        let now = SystemTime::now();
        let earlier = at(10, now);
        let mut last = HashMap::from([
            ("r/a@sha256:1".to_string(), earlier),
            ("r/gone@sha256:2".to_string(), earlier),
            ("r/b@sha256:3".to_string(), earlier),
        ]);
        let names = vec![
            "r/a@sha256:1".to_string(),
            "r/b@sha256:3".to_string(),
            "r/new@sha256:4".to_string(),
        ];
        touch(&mut last, &names, &needed(&["sha256:1"], &[]), now);
        assert_eq!(last.len(), 3);
        assert_eq!(last["r/a@sha256:1"], now);
        assert_eq!(last["r/b@sha256:3"], earlier);
        assert_eq!(last["r/new@sha256:4"], now);
    }
}
