//! What the Bulkhead controller and node agent both need from an OCI registry: references,
//! digests, a bounded and digest-verified client, and cosign signature verification against
//! offline public keys.

pub mod bounds;
pub mod client;
pub mod digest;
mod error;
pub mod reference;
pub mod signature;
pub mod tags;

pub use client::Registry;
pub use error::PullError;
pub use reference::ImageRef;
