//! Instance networking through CNI plugins.
//!
//! Each instance gets the network namespace runc creates for it (owned by its user
//! namespace); once the task is created and before it starts, the agent runs the CNI ADD of
//! its network against `/proc/<pid>/ns/net`, and DEL before the task is deleted. By default
//! the agent writes its own network: Debian's `bridge` plugin with `host-local` IPAM on a
//! bridge and subnet of its own. `--cni-conf-dir` uses a node's own configuration instead
//! (the first `*.conf`/`*.conflist` in it, as kubelet does).

pub mod cni;

pub use cni::{Cni, CniError};
