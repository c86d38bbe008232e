//! The local control plane harness for Bulkhead's integration and end-to-end tests.
//!
//! One control plane (etcd, kube-apiserver, kube-controller-manager built from pinned Go
//! modules, see `e2e/hack/`) serves a whole test run; each test gets a fresh namespace.
//! [`ensure`] starts it, or reuses the one that runs, and installs the CRDs once per
//! process. When a test fails, the panic message says where the component logs are.

pub mod agent;
pub mod chart;
pub mod control_plane;
pub mod controller;
pub mod fixtures;
pub mod manifest;
pub mod namespace;
pub mod plugin;
pub mod rollout;
pub mod signing;
pub mod traffic;
pub mod wait;

pub use control_plane::{client, client_for, ensure, kubectl, repo_root, state_dir};
pub use namespace::TestNamespace;
pub use wait::{await_condition, poll_until};
