//! Content digests: every algorithm the API accepts in a pin (sha256, sha512) is verified
//! here, and a digest in any other form is refused before it reaches a URL or containerd.

use sha2::{Digest as _, Sha256, Sha512};

/// A digest algorithm the agent can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `sha256:<64 hex>`.
    Sha256,
    /// `sha512:<128 hex>`.
    Sha512,
}

/// A digest that is not `sha256:<64 lower hex>` or `sha512:<128 lower hex>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "digest {0:?} is not one this agent can verify; use sha256:<64 hex digits> or sha512:<128 hex digits>"
)]
pub struct UnsupportedDigest(pub String);

impl Algorithm {
    /// The algorithm of a well-formed digest, or why it is refused.
    pub fn of(digest: &str) -> Result<Self, UnsupportedDigest> {
        let refuse = || UnsupportedDigest(digest.chars().take(200).collect());
        let (algorithm, hex) = digest.split_once(':').ok_or_else(refuse)?;
        let (algorithm, len) = match algorithm {
            "sha256" => (Algorithm::Sha256, 64),
            "sha512" => (Algorithm::Sha512, 128),
            _ => return Err(refuse()),
        };
        let well_formed =
            hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if well_formed {
            Ok(algorithm)
        } else {
            Err(refuse())
        }
    }

    /// A hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        match self {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    /// The digest of `bytes` in this algorithm, `<algorithm>:<hex>`.
    pub fn digest(self, bytes: &[u8]) -> String {
        let mut hasher = self.hasher();
        hasher.update(bytes);
        hasher.finish()
    }
}

/// A running hash in one of the supported algorithms.
#[derive(Debug, Clone)]
pub enum Hasher {
    /// sha256.
    Sha256(Sha256),
    /// sha512.
    Sha512(Sha512),
}

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything added, `<algorithm>:<hex>`.
    pub fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// Whether `bytes` are what `expected` names: `Ok(None)` when they are, `Ok(Some(actual))`
/// (in `expected`'s algorithm) when they are not.
pub fn mismatch(expected: &str, bytes: &[u8]) -> Result<Option<String>, UnsupportedDigest> {
    let actual = Algorithm::of(expected)?.digest(bytes);
    Ok((actual != expected).then_some(actual))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_and_sha512_are_verified() {
        let s256 = Algorithm::Sha256.digest(b"hello");
        let s512 = Algorithm::Sha512.digest(b"hello");
        assert_eq!(
            s256,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(s512.starts_with("sha512:9b71d224bd62f378"), "{s512}");
        assert_eq!(mismatch(&s256, b"hello"), Ok(None));
        assert_eq!(mismatch(&s512, b"hello"), Ok(None));
        assert_eq!(
            mismatch(&s512, b"other"),
            Ok(Some(Algorithm::Sha512.digest(b"other")))
        );
    }

    #[test]
    fn malformed_digests_are_refused_before_they_reach_a_url() {
        let hex64 = "a".repeat(64);
        for bad in [
            "".to_string(),
            "sha256".to_string(),
            format!("md5:{hex64}"),
            format!("sha384:{hex64}"),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{hex64}0"),
            format!("sha512:{hex64}"),
            "sha256:../../../v2/other/manifests/latest".to_string(),
            format!("sha256:{}?x=1", &hex64[..58]),
        ] {
            let err = Algorithm::of(&bad).unwrap_err();
            assert!(err.to_string().contains("sha256:<64 hex digits>"), "{err}");
        }
    }
}
