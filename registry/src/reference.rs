//! Image references: `[registry[:port]/]repository[:tag][@digest]`.
//!
//! Parsed with the same pattern the API server validates (`bulkhead_crds::patterns`), so a
//! reference that reached the agent always parses.

use std::{fmt, sync::LazyLock};

use regex::Regex;

static PATTERN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(bulkhead_crds::patterns::IMAGE_REFERENCE).expect("the image pattern compiles")
});

/// The registry used when a reference names none.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host and optional port, e.g. `localhost:5000`.
    pub registry: String,
    /// Repository path, e.g. `bulkhead/web`.
    pub repository: String,
    /// Tag, when given.
    pub tag: Option<String>,
    /// Digest (`sha256:...`), when given.
    pub digest: Option<String>,
}

/// A reference that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a valid image reference ([registry/]repository[:tag][@sha256:digest])")]
pub struct InvalidReference(pub String);

impl ImageRef {
    /// Parses a reference.
    pub fn parse(reference: &str) -> Result<Self, InvalidReference> {
        if !PATTERN.is_match(reference) {
            return Err(InvalidReference(reference.into()));
        }
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest.to_string())),
            None => (reference, None),
        };
        // A first component is a registry when it is localhost or has a dot or a port.
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first == "localhost" || first.contains('.') || first.contains(':') =>
            {
                (first.to_string(), path)
            }
            _ => (DEFAULT_REGISTRY.to_string(), rest),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) => (repo.to_string(), Some(tag.to_string())),
            None => (path.to_string(), None),
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".into())
        } else {
            tag
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host name of the registry, without port.
    pub fn registry_host(&self) -> &str {
        self.registry
            .rsplit_once(':')
            .map_or(self.registry.as_str(), |(h, _)| h)
    }

    /// The same image pinned to `digest`, without a tag.
    pub fn pinned(&self, digest: &str) -> Self {
        Self {
            digest: Some(digest.to_string()),
            tag: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_registry_repository_tag_and_digest() {
        let r = ImageRef::parse("localhost:5000/bulkhead/web:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost:5000", "bulkhead/web", Some("v1"))
        );
        assert_eq!(r.manifest_reference(), "v1");
        assert_eq!(r.registry_host(), "localhost");

        let r = ImageRef::parse(&format!("127.0.0.1:5000/web@{D}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/web@{D}"));
    }

    #[test]
    fn docker_hub_short_names() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r = ImageRef::parse("team/app:1").unwrap();
        assert_eq!(r.to_string(), "docker.io/team/app:1");
    }

    #[test]
    fn pinning_drops_the_tag() {
        let r = ImageRef::parse("localhost:5000/web:v1").unwrap().pinned(D);
        assert_eq!(r.to_string(), format!("localhost:5000/web@{D}"));
    }

    #[test]
    fn refuses_what_the_api_server_refuses() {
        for bad in ["Web:v1", "web app", "localhost:5000/Web:v1", ""] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}
