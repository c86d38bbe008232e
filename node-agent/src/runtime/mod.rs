//! The container runtime path: containerd and runc.

pub mod containerd;
pub mod rootfs;
