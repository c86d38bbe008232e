//! Why fetching from a registry failed.

use crate::digest;

/// Why a pull failed. Each variant is a reason a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry is not in the agent's allow-list.
    #[error(
        "registry {registry} is not allowed on this host (allowed: {allowed}); push the image to an allowed registry"
    )]
    RegistryNotAllowed {
        /// The registry asked for.
        registry: String,
        /// The allow-list.
        allowed: String,
    },
    /// The registry could not be reached.
    #[error("registry {registry} is unreachable: {message}")]
    RegistryUnreachable {
        /// The registry.
        registry: String,
        /// The connection error.
        message: String,
    },
    /// The registry answered with an unexpected status.
    #[error("registry {registry} answered {status} for {url}")]
    RegistryError {
        /// The registry.
        registry: String,
        /// HTTP status.
        status: u16,
        /// What was asked for.
        url: String,
    },
    /// No such repository, tag or digest.
    #[error("image {reference} was not found in its registry; check the repository, tag or digest")]
    ImageNotFound {
        /// The reference.
        reference: String,
    },
    /// Content did not match its digest.
    #[error(
        "{what} does not match its digest: expected {expected}, got {actual}; the registry served different content than the reference names"
    )]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// The manifest or config cannot be used.
    #[error("image {reference} has an unusable manifest or config: {message}")]
    InvalidManifest {
        /// The reference.
        reference: String,
        /// What is wrong.
        message: String,
    },
    /// A multi-platform image without this host's platform.
    #[error("image {reference} has no manifest for {platform}")]
    NoMatchingPlatform {
        /// The reference.
        reference: String,
        /// This host's platform.
        platform: String,
    },
    /// The registry sent (or announced) more than the bound for what was asked.
    #[error(
        "registry {registry} sent more than {limit} bytes for {what}; the image is larger than this agent accepts or the registry is broken"
    )]
    TooLarge {
        /// The registry.
        registry: String,
        /// What was fetched.
        what: String,
        /// The bound.
        limit: u64,
    },
    /// The registry redirected to another origin.
    #[error(
        "registry {registry} redirected to {location}; only redirects within the registry itself are followed, serve the image from {registry} directly"
    )]
    RedirectRefused {
        /// The registry.
        registry: String,
        /// Where it pointed.
        location: String,
    },
    /// The registry redirected within itself more often than allowed.
    #[error(
        "registry {registry} redirected {url} more than {limit} times; fix the registry's redirects"
    )]
    TooManyRedirects {
        /// The registry.
        registry: String,
        /// What was asked for.
        url: String,
        /// The bound.
        limit: usize,
    },
    /// A digest in the reference, manifest or index that cannot be verified.
    #[error("image {reference}: {source}")]
    UnsupportedDigest {
        /// The reference.
        reference: String,
        /// The digest refused.
        source: digest::UnsupportedDigest,
    },
    /// The pull did not finish in time.
    #[error(
        "pulling {reference} took longer than {seconds} s; the registry is too slow or stalled"
    )]
    TimedOut {
        /// The reference.
        reference: String,
        /// The bound.
        seconds: u64,
    },
    /// Storing what was fetched failed (containerd, on the agent).
    #[error(transparent)]
    Store(Box<dyn std::error::Error + Send + Sync>),
}

impl PullError {
    /// A CamelCase reason for `Instance.status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            PullError::RegistryNotAllowed { .. } => "RegistryNotAllowed",
            PullError::RegistryUnreachable { .. } => "RegistryUnreachable",
            PullError::RegistryError { .. } => "RegistryError",
            PullError::ImageNotFound { .. } => "ImageNotFound",
            PullError::DigestMismatch { .. } => "ImageDigestMismatch",
            PullError::InvalidManifest { .. } => "InvalidImage",
            PullError::NoMatchingPlatform { .. } => "NoMatchingPlatform",
            PullError::TooLarge { .. } => "ImageTooLarge",
            PullError::RedirectRefused { .. } => "RegistryRedirectRefused",
            PullError::TooManyRedirects { .. } => "RegistryRedirectLoop",
            PullError::UnsupportedDigest { .. } => "UnsupportedDigest",
            PullError::TimedOut { .. } => "ImagePullTimedOut",
            PullError::Store(_) => "ImagePullFailed",
        }
    }

    /// Whether trying again later may succeed (the registry was down), as opposed to a
    /// failure that needs a change to the Workload or the registry.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PullError::RegistryUnreachable { .. }
                | PullError::RegistryError { .. }
                | PullError::TimedOut { .. }
        )
    }
}
