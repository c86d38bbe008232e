//! Isolation settings: the walls the node agent puts around every instance.
//!
//! Every wall is on by default; a Workload can only ask for specific, named relaxations
//! (a capability to add, a seccomp profile to use instead of the default).

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::patterns;

/// How an instance is isolated. An empty block means the strictest defaults.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Isolation {
    /// The seccomp filter the instance's processes run under.
    #[serde(default)]
    pub seccomp: Seccomp,
    /// Run the instance in its own user namespace, with a 65536-wide host UID/GID range that
    /// no other live instance on the host shares. Root inside is an unprivileged UID outside.
    #[serde(default = "yes")]
    pub user_namespace: bool,
    /// SELinux multi-category separation.
    #[serde(default)]
    pub selinux: SELinux,
    /// Linux capabilities. Every capability is dropped unless listed in `add`.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Mount the image's root filesystem read-only; writable paths are tmpfs.
    #[serde(default = "yes")]
    pub read_only_root_filesystem: bool,
}

fn yes() -> bool {
    true
}

impl Default for Isolation {
    fn default() -> Self {
        Self {
            seccomp: Seccomp::default(),
            user_namespace: true,
            selinux: SELinux::default(),
            capabilities: Capabilities::default(),
            read_only_root_filesystem: true,
        }
    }
}

/// Seccomp settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "self.type == 'Localhost' || self.type == 'Complain' ? has(self.localhostProfile) : !has(self.localhostProfile)"
).message("localhostProfile must be set when type is Localhost or Complain, and only then").field_path(".localhostProfile"))]
pub struct Seccomp {
    /// Which filter to use.
    #[serde(default, rename = "type")]
    pub type_: SeccompType,
    /// Name of a SeccompProfile in the Workload's namespace; only with type Localhost or
    /// Complain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(patterns::DNS_SUBDOMAIN))]
    pub localhost_profile: Option<String>,
}

/// The kind of seccomp filter.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeccompType {
    /// Bulkhead's shipped allowlist: the syscalls ordinary programs need, EPERM for the rest.
    #[default]
    RuntimeDefault,
    /// A SeccompProfile resource, named in localhostProfile.
    Localhost,
    /// Run permissively while the node agent records every syscall the instance makes, then
    /// write a SeccompProfile `<workload>-recorded` from what it saw.
    Record,
    /// No filter. Only for debugging.
    Unconfined,
    /// Try the SeccompProfile named in localhostProfile without enforcing it: every system
    /// call the profile would refuse runs anyway and is counted per syscall (agent metrics
    /// and Events on the Instance).
    Complain,
}

/// SELinux settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct SELinux {
    /// Preferred: use an MCS label where the host enforces SELinux, run elsewhere too.
    /// Required: schedule only onto hosts where SELinux is enforcing.
    #[serde(default)]
    pub mode: SELinuxMode,
}

/// Whether SELinux enforcement is required.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SELinuxMode {
    /// Label the instance where SELinux is on; also run on hosts without it.
    #[default]
    Preferred,
    /// Run only on hosts with SELinux enforcing.
    Required,
}

/// Capabilities to keep. Everything else is dropped from every capability set.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Capabilities {
    /// Capabilities the instance needs, without the CAP_ prefix (e.g. NET_BIND_SERVICE).
    #[serde(default)]
    #[schemars(length(max = 41))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub add: Vec<Capability>,
}

macro_rules! capabilities {
    ($($name:ident),* $(,)?) => {
        /// A Linux capability, named without its CAP_ prefix.
        #[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(non_camel_case_types, missing_docs)]
        pub enum Capability {
            $($name,)*
        }

        impl Capability {
            /// Every capability, in the kernel's numbering order.
            pub const ALL: &'static [Capability] = &[$(Capability::$name,)*];

            /// The name without the CAP_ prefix.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Capability::$name => stringify!($name),)*
                }
            }

            /// The kernel's bit number for this capability.
            pub fn bit(self) -> u32 {
                self as u32
            }
        }
    };
}

// In the kernel's order, so that `bit()` is the capability number (include/uapi/linux/capability.h).
capabilities!(
    CHOWN,
    DAC_OVERRIDE,
    DAC_READ_SEARCH,
    FOWNER,
    FSETID,
    KILL,
    SETGID,
    SETUID,
    SETPCAP,
    LINUX_IMMUTABLE,
    NET_BIND_SERVICE,
    NET_BROADCAST,
    NET_ADMIN,
    NET_RAW,
    IPC_LOCK,
    IPC_OWNER,
    SYS_MODULE,
    SYS_RAWIO,
    SYS_CHROOT,
    SYS_PTRACE,
    SYS_PACCT,
    SYS_ADMIN,
    SYS_BOOT,
    SYS_NICE,
    SYS_RESOURCE,
    SYS_TIME,
    SYS_TTY_CONFIG,
    MKNOD,
    LEASE,
    AUDIT_WRITE,
    AUDIT_CONTROL,
    SETFCAP,
    MAC_OVERRIDE,
    MAC_ADMIN,
    SYSLOG,
    WAKE_ALARM,
    BLOCK_SUSPEND,
    AUDIT_READ,
    PERFMON,
    BPF,
    CHECKPOINT_RESTORE,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_bits_follow_the_kernel() {
        assert_eq!(Capability::CHOWN.bit(), 0);
        assert_eq!(Capability::NET_BIND_SERVICE.bit(), 10);
        assert_eq!(Capability::SYS_ADMIN.bit(), 21);
        assert_eq!(Capability::CHECKPOINT_RESTORE.bit(), 40);
        assert_eq!(Capability::ALL.len(), 41);
    }

    #[test]
    fn defaults_are_the_strict_ones() {
        let iso: Isolation = serde_json::from_str("{}").unwrap();
        assert_eq!(iso, Isolation::default());
        assert!(iso.user_namespace && iso.read_only_root_filesystem);
        assert_eq!(iso.seccomp.type_, SeccompType::RuntimeDefault);
        assert!(iso.capabilities.add.is_empty());
    }
}
