//! Tags resolved in the last few seconds: a burst of starts of one image (a fan-out, a
//! rollout's new revision) asks the registry what the tag means once, not once per start.
//!
//! A resolution is kept [`TAG_TTL`]; a tag moved at the registry within that window starts
//! the digest it named a moment before (a start is always pinned to one digest, recorded in
//! `status.imageDigest`). Workloads that follow tags are pinned to digests by the controller
//! and never resolve here. The cache holds at most [`MAX_TAGS`] entries.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long a tag's resolution is reused.
pub const TAG_TTL: Duration = Duration::from_secs(5);
/// Most tags kept (a tenant naming many tags only makes the cache forget sooner).
pub const MAX_TAGS: usize = 256;

/// Recent tag resolutions by (reference, architecture).
#[derive(Debug, Default)]
pub struct RecentTags(Mutex<HashMap<(String, String), (String, Instant)>>);

impl RecentTags {
    /// The digest `reference` resolved to within the last [`TAG_TTL`] on `arch`, if any.
    pub fn get(&self, reference: &str, arch: &str, now: Instant) -> Option<String> {
        let map = self.0.lock().ok()?;
        let (digest, at) = map.get(&(reference.to_string(), arch.to_string()))?;
        (now.saturating_duration_since(*at) < TAG_TTL).then(|| digest.clone())
    }

    /// Records a resolution made at `now`.
    pub fn put(&self, reference: &str, arch: &str, digest: &str, now: Instant) {
        let Ok(mut map) = self.0.lock() else {
            return;
        };
        if map.len() >= MAX_TAGS {
            map.retain(|_, (_, at)| now.saturating_duration_since(*at) < TAG_TTL);
            if map.len() >= MAX_TAGS {
                map.clear();
            }
        }
        map.insert(
            (reference.to_string(), arch.to_string()),
            (digest.to_string(), now),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resolution_is_reused_within_its_window_only() {
        let r = RecentTags::default();
        let t0 = Instant::now();
        r.put("reg/web:v1", "amd64", "sha256:a", t0);
        assert_eq!(
            r.get("reg/web:v1", "amd64", t0 + TAG_TTL / 2).as_deref(),
            Some("sha256:a")
        );
        assert_eq!(r.get("reg/web:v1", "amd64", t0 + TAG_TTL), None, "expired");
        assert_eq!(
            r.get("reg/web:v1", "arm64", t0),
            None,
            "another architecture"
        );
        assert_eq!(r.get("reg/web:v2", "amd64", t0), None, "another tag");
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let r = RecentTags::default();
        let t0 = Instant::now();
        for n in 0..MAX_TAGS * 3 {
            r.put(&format!("reg/web:{n}"), "amd64", "sha256:a", t0);
        }
        let len = r.0.lock().map(|m| m.len()).unwrap_or(usize::MAX);
        assert!(len <= MAX_TAGS, "{len} entries");
    }
}
