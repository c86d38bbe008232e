//! The OCI runtime spec of an instance: what runc is told to build, with every wall on.
//!
//! [`build`] is pure: it reads the template, the isolation settings, the image configuration
//! and what the agent allocated (UID range, MCS pair, seccomp filter, network namespace,
//! cgroup path) and returns the spec. Nothing here touches the host.

use std::collections::HashSet;
use std::path::Path;

use bulkhead_crds::isolation::{Capability, SeccompType};
use bulkhead_crds::quantity::{self, QuantityError};
use bulkhead_crds::{InstanceTemplate, Isolation};
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{
    Capability as OciCapability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxIdMapping, LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder,
    LinuxSeccomp, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use thiserror::Error;

use crate::isolation::userns::UidRangeError;
use crate::isolation::{McsPair, UidRange};

/// PATH when neither the image nor the template sets one (Docker's and containerd's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// CPU period in microseconds; the quota is `millicores * CPU_PERIOD_US / 1000`.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The smallest CPU quota the kernel accepts, in microseconds.
const MIN_CPU_QUOTA_US: i64 = 1000;

/// Files under /proc and /sys the instance must not read: hidden behind an empty bind
/// (files) or a read-only tmpfs (directories), as Docker does.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths under /proc the instance may read but never write, as Docker sets them.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Where writable paths may not go: the kernel filesystems the spec mounts itself.
const RESERVED_PREFIXES: &[&str] = &["/proc", "/sys", "/dev"];

/// Everything [`build`] needs to know about one instance.
#[derive(Debug)]
pub struct SpecInput<'a> {
    /// The containerd container ID.
    pub container_id: &'a str,
    /// The instance's name, used as its hostname.
    pub hostname: &'a str,
    /// What to run.
    pub template: &'a InstanceTemplate,
    /// How it is isolated.
    pub isolation: &'a Isolation,
    /// The image's configuration: entrypoint, cmd, env, working dir, user.
    pub image_config: &'a ImageConfiguration,
    /// The host ID range of the instance's user namespace; `Some` exactly when
    /// `isolation.user_namespace`.
    pub uid_range: Option<UidRange>,
    /// The instance's MCS pair.
    pub mcs: McsPair,
    /// Whether the host has SELinux enabled. runc refuses a labelled spec otherwise, so the
    /// labels are set only then.
    pub selinux_enabled: bool,
    /// The resolved seccomp filter; `None` exactly when the seccomp type is Unconfined.
    pub seccomp: Option<LinuxSeccomp>,
    /// A network namespace to join (the one CNI attached); `None` for a new private one.
    pub netns_path: Option<&'a Path>,
    /// The cgroup path, e.g. `/bulkhead/<container-id>` (cgroupfs driver).
    pub cgroups_path: &'a str,
}

/// Why no spec can be built for an instance.
#[derive(Debug, Error)]
pub enum SpecError {
    /// Neither the template nor the image names a program to run.
    #[error(
        "container {container_id}: nothing to run: the image has no ENTRYPOINT or CMD; set command in the template"
    )]
    NoCommand {
        /// The container.
        container_id: String,
    },
    /// The image's USER is a name, which would need the image's /etc/passwd to resolve.
    #[error(
        "image user {user:?} is not numeric; the node agent runs only numeric users (\"uid\" or \"uid:gid\"): rebuild the image with USER <uid>[:<gid>]"
    )]
    NonNumericUser {
        /// The image's USER.
        user: String,
    },
    /// The image's user is outside the 65536 IDs the user namespace maps.
    #[error(
        "image user {uid}:{gid} is outside the instance's user namespace, which maps IDs 0 to 65535; use a lower USER in the image or set userNamespace: false"
    )]
    UserOutsideNamespace {
        /// The user ID.
        uid: u32,
        /// The group ID.
        gid: u32,
    },
    /// A UID range is given without a user namespace, or the other way round.
    #[error("container {container_id}: userNamespace is {user_namespace} but a UID range was {}given", if *user_namespace { "not " } else { "" })]
    UidRangeMismatch {
        /// The container.
        container_id: String,
        /// `isolation.userNamespace`.
        user_namespace: bool,
    },
    /// A UID range that is not 65536 wide or reaches outside the usable host IDs.
    #[error("UID range {range}: {source}")]
    InvalidUidRange {
        /// The range, as `start:size`.
        range: String,
        /// What is wrong with it.
        source: UidRangeError,
    },
    /// A seccomp filter is given for Unconfined, or missing for any other type.
    #[error("container {container_id}: seccomp type {type_:?} {}", if *given { "takes no filter" } else { "needs a resolved filter" })]
    SeccompMismatch {
        /// The container.
        container_id: String,
        /// `isolation.seccomp.type`.
        type_: SeccompType,
        /// Whether a filter was given.
        given: bool,
    },
    /// A resources quantity that does not parse.
    #[error("resources.{field}: {source}")]
    Quantity {
        /// `cpu` or `memory`.
        field: &'static str,
        /// What is wrong with it.
        source: QuantityError,
    },
    /// A CPU limit of zero.
    #[error("resources.cpu {value:?} allows no CPU time; leave cpu unset for no limit")]
    ZeroCpu {
        /// The value given.
        value: String,
    },
    /// A writable path over a kernel filesystem the spec mounts itself.
    #[error(
        "writablePaths entry {path:?} is under /proc, /sys or /dev, which the node agent mounts itself"
    )]
    ReservedWritablePath {
        /// The path.
        path: String,
    },
    /// A capability oci-spec does not know.
    #[error("capability {name} is not known to the OCI runtime spec library")]
    UnknownCapability {
        /// The capability, with the CAP_ prefix.
        name: String,
    },
    /// oci-spec refused the result.
    #[error("cannot build the OCI spec: {0}")]
    Oci(#[from] oci_spec::OciSpecError),
}

/// Builds the OCI runtime spec of one instance.
pub fn build(input: &SpecInput) -> Result<Spec, SpecError> {
    check_consistency(input)?;

    let user = image_user(input)?;
    let capabilities = capability_set(&input.isolation.capabilities.add)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(user.0)
                .gid(user.1)
                .additional_gids(Vec::<u32>::new())
                .build()?,
        )
        .args(process_args(input)?)
        .env(environment(input))
        .cwd(working_dir(input.image_config))
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(capabilities.clone())
                .effective(capabilities.clone())
                .permitted(capabilities)
                .inheritable(HashSet::new())
                .ambient(HashSet::new())
                .build()?,
        )
        .no_new_privileges(true)
        .rlimits(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(1024u64)
                .hard(1024u64)
                .build()?,
        ]);
    let process = if input.selinux_enabled {
        process.selinux_label(process_label(input.mcs))
    } else {
        process
    }
    .build()?;

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(input)?)
        .resources(resources(input)?)
        .devices(devices()?)
        .cgroups_path(input.cgroups_path)
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|p| (*p).to_owned())
                .collect::<Vec<_>>(),
        );
    if let Some(range) = input.uid_range {
        linux = linux
            .uid_mappings(vec![id_mapping(range)?])
            .gid_mappings(vec![id_mapping(range)?]);
    }
    if let Some(seccomp) = &input.seccomp {
        linux = linux.seccomp(seccomp.clone());
    }
    if input.selinux_enabled {
        linux = linux.mount_label(mount_label(input.mcs));
    }

    Ok(SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(input.isolation.read_only_root_filesystem)
                .build()?,
        )
        .hostname(input.hostname)
        .mounts(mounts(input, user)?)
        .process(process)
        .linux(linux.build()?)
        .build()?)
}

/// `system_u:system_r:container_t:<level>`, the label the instance's processes run with.
pub fn process_label(mcs: McsPair) -> String {
    format!("system_u:system_r:container_t:{}", mcs.level())
}

/// `system_u:object_r:container_file_t:<level>`, the label of the instance's mounts.
pub fn mount_label(mcs: McsPair) -> String {
    format!("system_u:object_r:container_file_t:{}", mcs.level())
}

fn check_consistency(input: &SpecInput) -> Result<(), SpecError> {
    let user_namespace = input.isolation.user_namespace;
    if user_namespace != input.uid_range.is_some() {
        return Err(SpecError::UidRangeMismatch {
            container_id: input.container_id.to_owned(),
            user_namespace,
        });
    }
    if let Some(range) = input.uid_range {
        range.check().map_err(|source| SpecError::InvalidUidRange {
            range: range.to_string(),
            source,
        })?;
    }
    let type_ = input.isolation.seccomp.type_;
    let given = input.seccomp.is_some();
    if given == (type_ == SeccompType::Unconfined) {
        return Err(SpecError::SeccompMismatch {
            container_id: input.container_id.to_owned(),
            type_,
            given,
        });
    }
    Ok(())
}

/// Kubernetes' rules: `command` replaces the image's ENTRYPOINT and `args` its CMD; `args`
/// alone run after the image's ENTRYPOINT; neither runs the image's own.
fn process_args(input: &SpecInput) -> Result<Vec<String>, SpecError> {
    let template = input.template;
    let config = input.image_config.config().as_ref();
    let entrypoint = config
        .and_then(|c| c.entrypoint().clone())
        .unwrap_or_default();
    let cmd = config.and_then(|c| c.cmd().clone()).unwrap_or_default();
    let args: Vec<String> = match (template.command.is_empty(), template.args.is_empty()) {
        (false, _) => [template.command.clone(), template.args.clone()].concat(),
        (true, false) => [entrypoint, template.args.clone()].concat(),
        (true, true) => [entrypoint, cmd].concat(),
    };
    if args.is_empty() {
        return Err(SpecError::NoCommand {
            container_id: input.container_id.to_owned(),
        });
    }
    Ok(args)
}

/// The image's environment, then HOSTNAME, then the template's variables, each replacing a
/// variable of the same name in place; PATH is added when nothing set it.
fn environment(input: &SpecInput) -> Vec<String> {
    let mut env: Vec<String> = input
        .image_config
        .config()
        .as_ref()
        .and_then(|c| c.env().clone())
        .unwrap_or_default();
    set_env(&mut env, "HOSTNAME", input.hostname);
    for var in &input.template.env {
        set_env(&mut env, &var.name, &var.value);
    }
    if !env.iter().any(|e| env_name(e) == "PATH") {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    env
}

fn env_name(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(name, _)| name)
}

fn set_env(env: &mut Vec<String>, name: &str, value: &str) {
    let entry = format!("{name}={value}");
    match env.iter_mut().find(|e| env_name(e) == name) {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

/// The image's WORKDIR, relative ones taken from /, or / when unset.
fn working_dir(config: &ImageConfiguration) -> String {
    match config
        .config()
        .as_ref()
        .and_then(|c| c.working_dir().as_deref())
    {
        Some(dir) if dir.starts_with('/') => dir.to_owned(),
        Some(dir) if !dir.is_empty() => format!("/{dir}"),
        _ => "/".to_owned(),
    }
}

/// The image's USER as `(uid, gid)`: empty is root, `uid` alone has gid 0 (what containerd
/// gives a UID without a passwd entry; the agent reads no files of the image), names are
/// refused.
fn image_user(input: &SpecInput) -> Result<(u32, u32), SpecError> {
    let user = input
        .image_config
        .config()
        .as_ref()
        .and_then(|c| c.user().as_deref())
        .unwrap_or("")
        .trim();
    let non_numeric = || SpecError::NonNumericUser {
        user: user.to_owned(),
    };
    let number = |s: &str| -> Result<u32, SpecError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(non_numeric());
        }
        s.parse().map_err(|_| non_numeric())
    };
    let (uid, gid) = match user.split_once(':') {
        _ if user.is_empty() => (0, 0),
        Some((uid, gid)) => (number(uid)?, number(gid)?),
        None => (number(user)?, 0),
    };
    if input.uid_range.is_some() && (uid >= 65536 || gid >= 65536) {
        return Err(SpecError::UserOutsideNamespace { uid, gid });
    }
    Ok((uid, gid))
}

fn capability_set(add: &[Capability]) -> Result<HashSet<OciCapability>, SpecError> {
    add.iter()
        .map(|cap| {
            let name = format!("CAP_{}", cap.as_str());
            serde_json::from_value(serde_json::Value::String(name.clone()))
                .map_err(|_| SpecError::UnknownCapability { name })
        })
        .collect()
}

fn namespaces(input: &SpecInput) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut namespaces = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ] {
        namespaces.push(LinuxNamespaceBuilder::default().typ(typ).build()?);
    }
    let network = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
    namespaces.push(match input.netns_path {
        Some(path) => network.path(path).build()?,
        None => network.build()?,
    });
    if input.uid_range.is_some() {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::User)
                .build()?,
        );
    }
    Ok(namespaces)
}

fn id_mapping(range: UidRange) -> Result<LinuxIdMapping, SpecError> {
    Ok(LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(range.start)
        .size(range.size)
        .build()?)
}

fn mounts(input: &SpecInput, (uid, gid): (u32, u32)) -> Result<Vec<Mount>, SpecError> {
    let mount = |destination: &str, typ: &str, source: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
            .build()
    };

    // gid=5 (tty) would name a group that may not exist inside a user namespace; without it
    // the pty's group is the opener's.
    let mut devpts = vec![
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ];
    if input.uid_range.is_none() {
        devpts.push("gid=5");
    }

    // Each writable tmpfs is at most the instance's memory limit (the kernel's default is
    // half the host's RAM). Its pages are charged to the memory cgroup of the writer, so
    // together they stay inside the limit too.
    let size = format!("size={}", memory_limit(input)?);

    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount("/dev/pts", "devpts", "devpts", &devpts)?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
        mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", &size],
        )?,
    ];

    // Writable paths are owned by the instance's user, so that a non-root image can write
    // there. /run is one of them when listed; /tmp is writable by everyone already.
    let owner = [format!("uid={uid}"), format!("gid={gid}")];
    let writable_options = ["nosuid", "nodev", "mode=755", &size, &owner[0], &owner[1]];
    let mut writable: Vec<&str> = input
        .template
        .writable_paths
        .iter()
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| !p.is_empty() && *p != "/tmp")
        .collect();
    let run_options: &[&str] = if writable.contains(&"/run") {
        &writable_options
    } else {
        &["nosuid", "nodev", "mode=755", &size]
    };
    mounts.push(mount("/run", "tmpfs", "tmpfs", run_options)?);
    writable.retain(|p| *p != "/run");

    // Parents before children, so that a child is not hidden by its parent's tmpfs.
    writable.sort_by_key(|p| (p.matches('/').count(), *p));
    writable.dedup();
    for path in writable {
        if RESERVED_PREFIXES
            .iter()
            .any(|r| path == *r || path.starts_with(&format!("{r}/")))
        {
            return Err(SpecError::ReservedWritablePath {
                path: path.to_owned(),
            });
        }
        mounts.push(mount(path, "tmpfs", "tmpfs", &writable_options)?);
    }
    Ok(mounts)
}

/// The memory limit in bytes: as set, or the default for an object stored before the schema
/// had one. Every instance has one.
fn memory_limit(input: &SpecInput) -> Result<i64, SpecError> {
    quantity::memory_bytes(input.template.resources.memory_or_default()).map_err(|source| {
        SpecError::Quantity {
            field: "memory",
            source,
        }
    })
}

fn resources(input: &SpecInput) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let limits = &input.template.resources;
    let mut resources = LinuxResourcesBuilder::default()
        .devices(device_rules()?)
        .pids(LinuxPidsBuilder::default().limit(limits.pids).build()?);
    let bytes = memory_limit(input)?;
    resources = resources.memory(LinuxMemoryBuilder::default().limit(bytes).build()?);
    if let Some(cpu) = &limits.cpu {
        let millis = quantity::cpu_millis(cpu).map_err(|source| SpecError::Quantity {
            field: "cpu",
            source,
        })?;
        if millis == 0 {
            return Err(SpecError::ZeroCpu { value: cpu.clone() });
        }
        let quota = millis
            .checked_mul(CPU_PERIOD_US as i64 / 1000)
            .ok_or_else(|| SpecError::Quantity {
                field: "cpu",
                source: QuantityError::TooLarge {
                    kind: "cpu",
                    value: cpu.clone(),
                },
            })?
            .max(MIN_CPU_QUOTA_US);
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(CPU_PERIOD_US)
                .quota(quota)
                .build()?,
        );
    }
    Ok(resources.build()?)
}

/// `(path, major, minor)` of the character devices every instance gets.
const STANDARD_DEVICES: &[(&str, i64, i64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/tty", 5, 0),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
];

/// The device cgroup: deny everything, then allow the standard devices and the instance's
/// own pseudo-terminals (/dev/pts/ptmx 5:2 and the ptys it hands out, 136:*).
fn device_rules() -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    let rule = |allow: bool, typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>| {
        let mut builder = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access("rwm");
        if allow {
            builder = builder.typ(typ);
        }
        if let Some(major) = major {
            builder = builder.major(major);
        }
        if let Some(minor) = minor {
            builder = builder.minor(minor);
        }
        builder.build()
    };
    let mut rules = vec![rule(false, LinuxDeviceType::A, None, None)?];
    for (_, major, minor) in STANDARD_DEVICES {
        rules.push(rule(true, LinuxDeviceType::C, Some(*major), Some(*minor))?);
    }
    rules.push(rule(true, LinuxDeviceType::C, Some(5), Some(2))?);
    rules.push(rule(true, LinuxDeviceType::C, Some(136), None)?);
    Ok(rules)
}

/// The device nodes runc creates (or, in a user namespace, bind-mounts) in /dev.
fn devices() -> Result<Vec<LinuxDevice>, SpecError> {
    STANDARD_DEVICES
        .iter()
        .map(|(path, major, minor)| {
            Ok(LinuxDeviceBuilder::default()
                .path(*path)
                .typ(LinuxDeviceType::C)
                .major(*major)
                .minor(*minor)
                .file_mode(0o666u32)
                .uid(0u32)
                .gid(0u32)
                .build()?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_crds::isolation::Seccomp;
    use bulkhead_crds::template::{EnvVar, Resources};
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};
    use oci_spec::runtime::LinuxSeccompBuilder;
    use std::path::PathBuf;

    /// A test instance; fields are set directly by each test.
    struct Fixture {
        template: InstanceTemplate,
        isolation: Isolation,
        image: ImageConfiguration,
        uid_range: Option<UidRange>,
        selinux_enabled: bool,
        netns: Option<PathBuf>,
        seccomp: Option<LinuxSeccomp>,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                template: InstanceTemplate {
                    image: "localhost:5000/web@sha256:0123".into(),
                    ..InstanceTemplate::default()
                },
                isolation: Isolation::default(),
                image: image(
                    Some(vec!["/bin/web"]),
                    Some(vec!["--serve"]),
                    None,
                    None,
                    None,
                ),
                uid_range: Some(UidRange::new(1_000_065_536).unwrap()),
                selinux_enabled: false,
                netns: None,
                seccomp: Some(LinuxSeccompBuilder::default().build().unwrap()),
            }
        }

        fn without_userns(mut self) -> Self {
            self.isolation.user_namespace = false;
            self.uid_range = None;
            self
        }

        fn build(&self) -> Result<Spec, SpecError> {
            build(&SpecInput {
                container_id: "c-123",
                hostname: "web-7f9c-abcde",
                template: &self.template,
                isolation: &self.isolation,
                image_config: &self.image,
                uid_range: self.uid_range,
                mcs: McsPair::new(12, 345).unwrap(),
                selinux_enabled: self.selinux_enabled,
                seccomp: self.seccomp.clone(),
                netns_path: self.netns.as_deref(),
                cgroups_path: "/bulkhead/c-123",
            })
        }

        fn spec(&self) -> Spec {
            self.build().unwrap()
        }
    }

    fn image(
        entrypoint: Option<Vec<&str>>,
        cmd: Option<Vec<&str>>,
        env: Option<Vec<&str>>,
        user: Option<&str>,
        workdir: Option<&str>,
    ) -> ImageConfiguration {
        let strings = |v: Vec<&str>| v.into_iter().map(String::from).collect::<Vec<_>>();
        let mut config = ConfigBuilder::default();
        if let Some(e) = entrypoint {
            config = config.entrypoint(strings(e));
        }
        if let Some(c) = cmd {
            config = config.cmd(strings(c));
        }
        if let Some(e) = env {
            config = config.env(strings(e));
        }
        if let Some(u) = user {
            config = config.user(u);
        }
        if let Some(w) = workdir {
            config = config.working_dir(w);
        }
        ImageConfigurationBuilder::default()
            .config(config.build().unwrap())
            .build()
            .unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn mount<'a>(spec: &'a Spec, destination: &str) -> Option<&'a Mount> {
        spec.mounts()
            .iter()
            .flatten()
            .find(|m| m.destination() == Path::new(destination))
    }

    fn options(m: &Mount) -> Vec<&str> {
        m.options().iter().flatten().map(String::as_str).collect()
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        // (image ENTRYPOINT, image CMD, template command, template args) → process args
        type Case<'a> = (
            Option<Vec<&'a str>>,
            Option<Vec<&'a str>>,
            &'a [&'a str],
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            (
                Some(vec!["/ep"]),
                Some(vec!["cmd"]),
                &[],
                &[],
                &["/ep", "cmd"],
            ),
            (
                Some(vec!["/ep"]),
                Some(vec!["cmd"]),
                &["/cmd"],
                &[],
                &["/cmd"],
            ),
            (
                Some(vec!["/ep"]),
                Some(vec!["cmd"]),
                &[],
                &["a", "b"],
                &["/ep", "a", "b"],
            ),
            (
                Some(vec!["/ep"]),
                Some(vec!["cmd"]),
                &["/cmd"],
                &["a"],
                &["/cmd", "a"],
            ),
            (
                None,
                Some(vec!["/bin/sh", "-c", "x"]),
                &[],
                &[],
                &["/bin/sh", "-c", "x"],
            ),
            (None, Some(vec!["/bin/sh"]), &[], &["/x"], &["/x"]),
            (Some(vec!["/ep"]), None, &[], &[], &["/ep"]),
            (None, None, &["/cmd"], &["a"], &["/cmd", "a"]),
        ];
        for (entrypoint, cmd, command, args, expected) in cases {
            let mut f = Fixture::new();
            f.image = image(entrypoint.clone(), cmd.clone(), None, None, None);
            f.template.command = strings(command);
            f.template.args = strings(args);
            let spec = f.spec();
            assert_eq!(
                spec.process().as_ref().unwrap().args().as_deref(),
                Some(&strings(expected)[..]),
                "{entrypoint:?} {cmd:?} {command:?} {args:?}"
            );
        }
    }

    #[test]
    fn nothing_to_run_is_an_error() {
        let mut f = Fixture::new();
        f.image = image(None, None, None, None, None);
        assert!(matches!(f.build(), Err(SpecError::NoCommand { .. })));
        f.image = ImageConfiguration::default();
        assert!(matches!(f.build(), Err(SpecError::NoCommand { .. })));
    }

    #[test]
    fn environment_overlays_the_image() {
        let mut f = Fixture::new();
        f.image = image(
            Some(vec!["/x"]),
            None,
            Some(vec![
                "PATH=/opt/bin",
                "LANG=C",
                "HOSTNAME=image",
                "MODE=image",
            ]),
            None,
            None,
        );
        f.template.env = vec![
            EnvVar {
                name: "MODE".into(),
                value: "template".into(),
            },
            EnvVar {
                name: "EXTRA".into(),
                value: "a=b".into(),
            },
        ];
        let spec = f.spec();
        assert_eq!(
            spec.process().as_ref().unwrap().env().as_deref(),
            Some(
                &strings(&[
                    "PATH=/opt/bin",
                    "LANG=C",
                    "HOSTNAME=web-7f9c-abcde",
                    "MODE=template",
                    "EXTRA=a=b"
                ])[..]
            )
        );

        f.image = image(Some(vec!["/x"]), None, None, None, None);
        f.template.env = vec![];
        let spec = f.spec();
        assert_eq!(
            spec.process().as_ref().unwrap().env().as_deref(),
            Some(&strings(&[&format!("PATH={DEFAULT_PATH}"), "HOSTNAME=web-7f9c-abcde"])[..])
        );

        // A template may set HOSTNAME itself.
        f.template.env = vec![EnvVar {
            name: "HOSTNAME".into(),
            value: "mine".into(),
        }];
        let env = f.spec().process().as_ref().unwrap().env().clone().unwrap();
        assert!(env.contains(&"HOSTNAME=mine".to_owned()));
    }

    #[test]
    fn working_dir_defaults_to_root() {
        let mut f = Fixture::new();
        assert_eq!(f.spec().process().as_ref().unwrap().cwd(), Path::new("/"));
        f.image = image(Some(vec!["/x"]), None, None, None, Some("/srv/app"));
        assert_eq!(
            f.spec().process().as_ref().unwrap().cwd(),
            Path::new("/srv/app")
        );
        f.image = image(Some(vec!["/x"]), None, None, None, Some("app"));
        assert_eq!(
            f.spec().process().as_ref().unwrap().cwd(),
            Path::new("/app")
        );
    }

    #[test]
    fn user_is_numeric() {
        let user_of = |u: Option<&str>| {
            let mut f = Fixture::new();
            f.image = image(Some(vec!["/x"]), None, None, u, None);
            f.build().map(|spec| {
                let user = spec.process().as_ref().unwrap().user().clone();
                (user.uid(), user.gid())
            })
        };
        assert_eq!(user_of(None).unwrap(), (0, 0));
        assert_eq!(user_of(Some("")).unwrap(), (0, 0));
        assert_eq!(user_of(Some("1000")).unwrap(), (1000, 0));
        assert_eq!(user_of(Some("1000:2000")).unwrap(), (1000, 2000));
        assert_eq!(user_of(Some("65534:65534")).unwrap(), (65534, 65534));
        for name in [
            "nginx",
            "www-data:www-data",
            "1000:staff",
            "app:1000",
            "1000:",
            ":1000",
        ] {
            let err = user_of(Some(name)).unwrap_err();
            assert!(
                matches!(&err, SpecError::NonNumericUser { user } if user == name),
                "{name}"
            );
            assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
        }
        assert!(matches!(
            user_of(Some("70000")),
            Err(SpecError::UserOutsideNamespace { uid: 70000, gid: 0 })
        ));
        // Without a user namespace any host ID is the instance's own.
        let mut f = Fixture::new().without_userns();
        f.image = image(Some(vec!["/x"]), None, None, Some("70000:70000"), None);
        assert_eq!(f.spec().process().as_ref().unwrap().user().uid(), 70000);
    }

    #[test]
    fn capabilities_are_exactly_the_added_ones() {
        let mut f = Fixture::new();
        let caps = |spec: &Spec| {
            spec.process()
                .as_ref()
                .unwrap()
                .capabilities()
                .clone()
                .unwrap()
        };

        let none = caps(&f.spec());
        for set in [
            none.bounding(),
            none.effective(),
            none.permitted(),
            none.inheritable(),
            none.ambient(),
        ] {
            assert_eq!(set.as_ref().map(HashSet::len), Some(0));
        }

        f.isolation.capabilities.add = vec![Capability::NET_BIND_SERVICE, Capability::CHOWN];
        let some = caps(&f.spec());
        let expected = HashSet::from([OciCapability::NetBindService, OciCapability::Chown]);
        for set in [some.bounding(), some.effective(), some.permitted()] {
            assert_eq!(set.as_ref(), Some(&expected));
        }
        assert_eq!(some.inheritable().as_ref().map(HashSet::len), Some(0));
        assert_eq!(some.ambient().as_ref().map(HashSet::len), Some(0));
        let json = serde_json::to_string(&some).unwrap();
        assert!(
            !json.contains("CAP_SYS_ADMIN") && !json.contains("CAP_KILL"),
            "{json}"
        );
        assert!(json.contains("\"CAP_NET_BIND_SERVICE\""));
    }

    #[test]
    fn every_capability_converts() {
        let all = capability_set(Capability::ALL).unwrap();
        assert_eq!(all.len(), Capability::ALL.len());
    }

    #[test]
    fn process_is_locked_down() {
        let spec = Fixture::new().spec();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(process.terminal(), Some(false));
        let rlimits = process.rlimits().as_ref().unwrap();
        assert_eq!(rlimits.len(), 1);
        assert_eq!(rlimits[0].typ(), PosixRlimitType::RlimitNofile);
        assert_eq!((rlimits[0].soft(), rlimits[0].hard()), (1024, 1024));
        assert_eq!(process.apparmor_profile(), &None);
        assert_eq!(spec.hostname().as_deref(), Some("web-7f9c-abcde"));
        assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("rootfs"));
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    }

    #[test]
    fn root_is_writable_only_when_asked() {
        let mut f = Fixture::new();
        f.isolation.read_only_root_filesystem = false;
        assert_eq!(f.spec().root().as_ref().unwrap().readonly(), Some(false));
    }

    #[test]
    fn standard_mounts() {
        let spec = Fixture::new().spec();
        let expect = |dest: &str, typ: &str, opts: &[&str]| {
            let m = mount(&spec, dest).unwrap_or_else(|| panic!("{dest} is mounted"));
            assert_eq!(m.typ().as_deref(), Some(typ), "{dest}");
            assert_eq!(options(m), opts, "{dest}");
        };
        expect("/proc", "proc", &["nosuid", "noexec", "nodev"]);
        expect(
            "/dev",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        );
        expect(
            "/dev/pts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        );
        expect(
            "/dev/shm",
            "tmpfs",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        );
        expect("/dev/mqueue", "mqueue", &["nosuid", "noexec", "nodev"]);
        expect("/sys", "sysfs", &["nosuid", "noexec", "nodev", "ro"]);
        expect(
            "/sys/fs/cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        );
        // The default memory limit, 256Mi, bounds each writable tmpfs.
        expect(
            "/tmp",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", "size=268435456"],
        );
        expect(
            "/run",
            "tmpfs",
            &["nosuid", "nodev", "mode=755", "size=268435456"],
        );
        assert_eq!(spec.mounts().as_ref().unwrap().len(), 9);
    }

    #[test]
    fn devpts_names_the_tty_group_only_without_a_user_namespace() {
        let with = Fixture::new().spec();
        assert!(!options(mount(&with, "/dev/pts").unwrap()).contains(&"gid=5"));
        let without = Fixture::new().without_userns().spec();
        assert!(options(mount(&without, "/dev/pts").unwrap()).contains(&"gid=5"));
    }

    #[test]
    fn writable_paths_become_tmpfs_owned_by_the_user() {
        let mut f = Fixture::new();
        f.image = image(Some(vec!["/x"]), None, None, Some("1000:1000"), None);
        f.template.writable_paths = vec![
            "/var/cache/app/deep".into(),
            "/var/cache".into(),
            "/tmp".into(),
            "/home/app/.cache".into(),
            "/var/cache".into(),
        ];
        let spec = f.spec();
        let destinations: Vec<&Path> = spec
            .mounts()
            .iter()
            .flatten()
            .skip(9)
            .map(|m| m.destination().as_path())
            .collect();
        assert_eq!(
            destinations,
            [
                Path::new("/var/cache"),
                Path::new("/home/app/.cache"),
                Path::new("/var/cache/app/deep")
            ],
            "parents first, duplicates and /tmp dropped"
        );
        // /run is not listed: it stays root's.
        assert_eq!(
            options(mount(&spec, "/run").unwrap()),
            ["nosuid", "nodev", "mode=755", "size=268435456"]
        );
        let m = mount(&spec, "/var/cache").unwrap();
        assert_eq!(m.typ().as_deref(), Some("tmpfs"));
        assert_eq!(
            options(m),
            [
                "nosuid",
                "nodev",
                "mode=755",
                "size=268435456",
                "uid=1000",
                "gid=1000"
            ]
        );
    }

    #[test]
    fn a_listed_run_belongs_to_the_user() {
        let mut f = Fixture::new();
        f.image = image(Some(vec!["/x"]), None, None, Some("1000"), None);
        f.template.writable_paths = vec!["/run".into(), "/tmp".into()];
        let spec = f.spec();
        assert_eq!(
            spec.mounts().as_ref().unwrap().len(),
            9,
            "no second /run or /tmp"
        );
        assert_eq!(
            options(mount(&spec, "/run").unwrap()),
            [
                "nosuid",
                "nodev",
                "mode=755",
                "size=268435456",
                "uid=1000",
                "gid=0"
            ]
        );
        assert_eq!(
            options(mount(&spec, "/tmp").unwrap()),
            ["nosuid", "nodev", "mode=1777", "size=268435456"]
        );
    }

    #[test]
    fn writable_paths_may_not_cover_kernel_filesystems() {
        for path in ["/proc/sys", "/sys", "/dev/shm"] {
            let mut f = Fixture::new();
            f.template.writable_paths = vec![path.into()];
            assert!(
                matches!(f.build(), Err(SpecError::ReservedWritablePath { .. })),
                "{path}"
            );
        }
        let mut f = Fixture::new();
        f.template.writable_paths = vec!["/devices".into(), "/system".into()];
        assert!(f.build().is_ok(), "only whole components are reserved");
    }

    #[test]
    fn masked_and_readonly_paths() {
        let spec = Fixture::new().spec();
        let linux = spec.linux().as_ref().unwrap();
        let masked = linux.masked_paths().clone().unwrap();
        for p in [
            "/proc/acpi",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/proc/scsi",
            "/sys/firmware",
            "/sys/devices/virtual/powercap",
        ] {
            assert!(masked.contains(&p.to_owned()), "{p} masked");
        }
        assert_eq!(
            linux.readonly_paths().as_deref(),
            Some(
                &strings(&[
                    "/proc/bus",
                    "/proc/fs",
                    "/proc/irq",
                    "/proc/sys",
                    "/proc/sysrq-trigger"
                ])[..]
            )
        );
        // /proc/asound is masked as Docker does.
        assert!(masked.contains(&"/proc/asound".to_owned()));
    }

    fn namespace_types(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
        spec.linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .iter()
            .flatten()
            .map(|n| (n.typ(), n.path().clone()))
            .collect()
    }

    #[test]
    fn namespaces_with_a_user_namespace() {
        let mut f = Fixture::new();
        f.netns = Some(PathBuf::from("/var/run/netns/bulkhead-c-123"));
        let spec = f.spec();
        assert_eq!(
            namespace_types(&spec),
            [
                (LinuxNamespaceType::Pid, None),
                (LinuxNamespaceType::Ipc, None),
                (LinuxNamespaceType::Uts, None),
                (LinuxNamespaceType::Mount, None),
                (LinuxNamespaceType::Cgroup, None),
                (
                    LinuxNamespaceType::Network,
                    Some(PathBuf::from("/var/run/netns/bulkhead-c-123"))
                ),
                (LinuxNamespaceType::User, None),
            ]
        );
        let linux = spec.linux().as_ref().unwrap();
        for mappings in [linux.uid_mappings(), linux.gid_mappings()] {
            let mappings = mappings.as_ref().unwrap();
            assert_eq!(mappings.len(), 1);
            assert_eq!(
                (
                    mappings[0].container_id(),
                    mappings[0].host_id(),
                    mappings[0].size()
                ),
                (0, 1_000_065_536, 65536)
            );
        }
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json["linux"]["uidMappings"],
            serde_json::json!([{"containerID": 0, "hostID": 1_000_065_536u32, "size": 65536}])
        );
    }

    #[test]
    fn no_user_namespace_means_no_mappings() {
        let spec = Fixture::new().without_userns().spec();
        let types = namespace_types(&spec);
        assert!(!types.iter().any(|(t, _)| *t == LinuxNamespaceType::User));
        assert!(
            types.contains(&(LinuxNamespaceType::Network, None)),
            "a new private netns"
        );
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.uid_mappings(), &None);
        assert_eq!(linux.gid_mappings(), &None);
    }

    #[test]
    fn uid_range_must_match_the_user_namespace_setting() {
        let mut f = Fixture::new();
        f.uid_range = None;
        assert!(matches!(
            f.build(),
            Err(SpecError::UidRangeMismatch {
                user_namespace: true,
                ..
            })
        ));
        let mut f = Fixture::new();
        f.isolation.user_namespace = false;
        assert!(matches!(
            f.build(),
            Err(SpecError::UidRangeMismatch {
                user_namespace: false,
                ..
            })
        ));
    }

    #[test]
    fn memory_and_cpu_limits() {
        let mut f = Fixture::new();
        f.template.resources = Resources {
            cpu: Some("250m".into()),
            memory: Some("64Mi".into()),
            pids: 100,
        };
        let spec = f.spec();
        let resources = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        assert_eq!(
            resources.memory().as_ref().unwrap().limit(),
            Some(67_108_864)
        );
        let cpu = resources.cpu().as_ref().unwrap();
        assert_eq!((cpu.period(), cpu.quota()), (Some(100_000), Some(25_000)));
        assert_eq!(resources.pids().as_ref().unwrap().limit(), 100);

        for (cpu, quota) in [
            ("2", 200_000),
            ("0.5", 50_000),
            ("1m", 1000),
            ("2.125", 212_500),
        ] {
            f.template.resources.cpu = Some(cpu.into());
            let spec = f.spec();
            let resources = spec.linux().as_ref().unwrap().resources().clone().unwrap();
            assert_eq!(
                resources.cpu().as_ref().unwrap().quota(),
                Some(quota),
                "{cpu}"
            );
        }
        f.template.resources.cpu = Some("0".into());
        assert!(matches!(f.build(), Err(SpecError::ZeroCpu { .. })));
        f.template.resources.cpu = None;
        f.template.resources.memory = Some("lots".into());
        let err = f.build().unwrap_err();
        assert!(err.to_string().starts_with("resources.memory: "), "{err}");
    }

    #[test]
    fn default_pids_limit_without_resources() {
        let spec = Fixture::new().spec();
        let resources = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        assert_eq!(
            resources.pids().as_ref().unwrap().limit(),
            bulkhead_crds::template::DEFAULT_PIDS_LIMIT
        );
        assert_eq!(
            resources.memory().as_ref().unwrap().limit(),
            Some(256 << 20),
            "every instance has a memory limit"
        );
        assert_eq!(resources.cpu(), &None);
        // An object stored before the schema default: the same limit.
        let mut f = Fixture::new();
        f.template.resources.memory = None;
        let spec = f.spec();
        let resources = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        assert_eq!(
            resources.memory().as_ref().unwrap().limit(),
            Some(256 << 20)
        );
    }

    #[test]
    fn every_writable_tmpfs_is_sized_to_the_memory_limit() {
        let mut f = Fixture::new();
        f.template.resources.memory = Some("64Mi".into());
        f.template.writable_paths = vec!["/run".into(), "/var/cache".into()];
        let spec = f.spec();
        for path in ["/tmp", "/run", "/var/cache"] {
            let m = mount(&spec, path).unwrap();
            assert!(
                options(m).contains(&"size=67108864"),
                "{path}: {:?}",
                options(m)
            );
        }
        // No tmpfs anywhere without a size: the kernel's default is half the host's RAM.
        for m in spec.mounts().iter().flatten() {
            if m.typ().as_deref() == Some("tmpfs") {
                assert!(
                    options(m).iter().any(|o| o.starts_with("size=")),
                    "{:?} has no size",
                    m.destination()
                );
            }
        }
    }

    #[test]
    fn devices_deny_all_then_allow_the_standard_ones() {
        let spec = Fixture::new().spec();
        let linux = spec.linux().as_ref().unwrap();
        let rules = linux
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert!(!rules[0].allow());
        assert_eq!(rules[0].access().as_deref(), Some("rwm"));
        assert_eq!((rules[0].major(), rules[0].minor()), (None, None));
        let allowed: Vec<(i64, Option<i64>)> = rules[1..]
            .iter()
            .map(|r| {
                assert!(r.allow() && r.typ() == Some(LinuxDeviceType::C));
                assert_eq!(r.access().as_deref(), Some("rwm"));
                (r.major().unwrap(), r.minor())
            })
            .collect();
        assert_eq!(
            allowed,
            [
                (1, Some(3)),
                (1, Some(5)),
                (1, Some(7)),
                (5, Some(0)),
                (1, Some(8)),
                (1, Some(9)),
                (5, Some(2)),
                (136, None)
            ]
        );
        let nodes: Vec<(&Path, i64, i64)> = linux
            .devices()
            .iter()
            .flatten()
            .map(|d| (d.path().as_path(), d.major(), d.minor()))
            .collect();
        assert_eq!(
            nodes,
            [
                (Path::new("/dev/null"), 1, 3),
                (Path::new("/dev/zero"), 1, 5),
                (Path::new("/dev/full"), 1, 7),
                (Path::new("/dev/tty"), 5, 0),
                (Path::new("/dev/random"), 1, 8),
                (Path::new("/dev/urandom"), 1, 9),
            ]
        );
    }

    #[test]
    fn seccomp_and_cgroup_path_are_passed_through() {
        let mut f = Fixture::new();
        let filter = LinuxSeccompBuilder::default()
            .default_errno_ret(1u32)
            .build()
            .unwrap();
        f.seccomp = Some(filter.clone());
        let spec = f.spec();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.seccomp().as_ref(), Some(&filter));
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/bulkhead/c-123"))
        );

        f.isolation.seccomp = Seccomp {
            type_: SeccompType::Unconfined,
            localhost_profile: None,
        };
        assert!(matches!(
            f.build(),
            Err(SpecError::SeccompMismatch { given: true, .. })
        ));
        f.seccomp = None;
        assert_eq!(f.spec().linux().as_ref().unwrap().seccomp(), &None);
        f.isolation.seccomp.type_ = SeccompType::RuntimeDefault;
        assert!(matches!(
            f.build(),
            Err(SpecError::SeccompMismatch { given: false, .. })
        ));
    }

    #[test]
    fn selinux_labels_only_when_enabled() {
        let mut f = Fixture::new();
        let spec = f.spec();
        assert_eq!(spec.process().as_ref().unwrap().selinux_label(), &None);
        assert_eq!(spec.linux().as_ref().unwrap().mount_label(), &None);
        let json = serde_json::to_string(&spec).unwrap();
        assert!(
            !json.contains("container_t") && !json.contains("s0:c"),
            "{json}"
        );

        f.selinux_enabled = true;
        let spec = f.spec();
        assert_eq!(
            spec.process().as_ref().unwrap().selinux_label().as_deref(),
            Some("system_u:system_r:container_t:s0:c12,c345")
        );
        assert_eq!(
            spec.linux().as_ref().unwrap().mount_label().as_deref(),
            Some("system_u:object_r:container_file_t:s0:c12,c345")
        );
    }

    #[test]
    fn nothing_else_leaks_in_from_library_defaults() {
        let spec = Fixture::new().spec();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["ociVersion"], "1.0.2");
        assert!(json["hostname"] != "youki");
        let linux = &json["linux"];
        assert!(linux.get("sysctl").is_none() && linux.get("rootfsPropagation").is_none());
        assert!(json.get("hooks").is_none());
        assert!(json["process"].get("apparmorProfile").is_none());
    }
}
