//! What a registry may send: every body is read through a size cap (counted as it streams,
//! never read whole first), redirects stay on the registry's own origin, and every request
//! and every pull has a deadline. A registry that streams gigabytes, trickles forever or
//! points elsewhere fails the one pull that asked it, not the agent.

use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::Url;

/// The largest manifest or index body; anything larger is not a manifest.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest image config body.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// The most layers an image may have (overlayfs stacks at most 128 lower directories).
pub const MAX_LAYERS: usize = 128;
/// The largest page of a tag list read.
pub const MAX_TAG_PAGE_BYTES: u64 = 1 << 20;
/// The most pages of a tag list followed.
pub const MAX_TAG_PAGES: usize = 10;
/// The most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;
/// The longest a manifest or config request may take, body included.
pub const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a blob request may take, body included.
pub const BLOB_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// The longest the registry may be silent in the middle of a body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest one pull (resolve, fetch and unpack) may take.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(1800);

/// A body larger than its bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// More bytes than allowed arrived (or were announced).
    #[error("more than {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: u64,
    },
    /// The transfer failed.
    #[error("{0}")]
    Transfer(String),
}

/// Reads a whole body of at most `limit` bytes, refusing as soon as the announced length or
/// the bytes counted so far exceed it: memory stays at `limit` plus one chunk.
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut out = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| BodyError::Transfer(transfer_message(&e)))?;
        let Some(chunk) = chunk else {
            return Ok(out);
        };
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(BodyError::TooLarge { limit });
        }
        out.extend_from_slice(&chunk);
    }
}

/// The chunks of a body, ending in an error at the first byte past `limit`: a layer is never
/// taken beyond its descriptor's size.
pub fn capped_stream<E: std::fmt::Display>(
    chunks: impl Stream<Item = Result<Bytes, E>>,
    limit: u64,
) -> impl Stream<Item = Result<Bytes, BodyError>> {
    let mut seen = 0u64;
    chunks
        .map(move |chunk| {
            let chunk = chunk.map_err(|e| BodyError::Transfer(e.to_string()))?;
            seen += chunk.len() as u64;
            if seen > limit {
                Err(BodyError::TooLarge { limit })
            } else {
                Ok(chunk)
            }
        })
        // Stop at the first error: nothing past the bound is even polled for.
        .scan(false, |failed, item| {
            if *failed {
                return futures::future::ready(None);
            }
            *failed = item.is_err();
            futures::future::ready(Some(item))
        })
}

/// A reqwest error with its causes, so a timeout or reset says so.
pub fn transfer_message(e: &reqwest::Error) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// Whether a registry host (without port) is this machine: `localhost`, or an IP literal in
/// 127.0.0.0/8 or `::1`. A name such as `127.example.com` is not.
pub fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    literal.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Where a redirect from `from` to `location` leads, when it stays on `from`'s origin (same
/// scheme, host and port); otherwise the location refused, for the error message.
pub fn redirect_target(from: &Url, location: &str) -> Result<Url, String> {
    let to = from.join(location).map_err(|_| location.to_string())?;
    let same_origin = to.scheme() == from.scheme()
        && to.host_str() == from.host_str()
        && to.port_or_known_default() == from.port_or_known_default();
    if same_origin {
        Ok(to)
    } else {
        Err(to.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_exact() {
        for host in ["localhost", "127.0.0.1", "127.4.5.6", "[::1]", "::1"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "127.example.com",
            "127.0.0.1.nip.io",
            "localhost.example.com",
            "128.0.0.1",
            "10.0.0.1",
            "[::2]",
            "127.0.0.256",
            "",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn redirects_stay_on_the_registry_origin() {
        let from = Url::parse("http://127.0.0.7:5000/v2/web/blobs/sha256:aa").unwrap();
        assert_eq!(
            redirect_target(&from, "/v2/web/blobs/other")
                .unwrap()
                .as_str(),
            "http://127.0.0.7:5000/v2/web/blobs/other"
        );
        assert!(redirect_target(&from, "other").is_ok());
        for away in [
            "http://127.0.0.8:5000/v2/web/blobs/sha256:aa",
            "http://127.0.0.7:5001/v2/web/blobs/sha256:aa",
            "https://127.0.0.7:5000/v2/web/blobs/sha256:aa",
            "//evil.example/x",
            "http://evil.example/x",
        ] {
            assert!(redirect_target(&from, away).is_err(), "{away}");
        }
    }

    #[tokio::test]
    async fn a_stream_stops_at_the_first_byte_past_its_bound() {
        let chunks = futures::stream::iter(
            (0..1000).map(|_| Ok::<_, std::convert::Infallible>(Bytes::from(vec![0u8; 10]))),
        );
        let out: Vec<_> = capped_stream(chunks, 25).collect().await;
        assert_eq!(out.len(), 3, "two chunks within the bound, then the error");
        assert_eq!(out[2], Err(BodyError::TooLarge { limit: 25 }));
        let exact: Vec<_> = capped_stream(
            futures::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from_static(
                b"12345",
            ))]),
            5,
        )
        .collect()
        .await;
        assert_eq!(exact, vec![Ok(Bytes::from_static(b"12345"))]);
    }
}
