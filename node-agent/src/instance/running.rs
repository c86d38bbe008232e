//! The Running report of a started or adopted instance, in one status write: the address,
//! the phase, what the container's labels record of its isolation, what the kernel really
//! enforces (read back from the process; an instance with less than it asked for is
//! stopped and failed), its network walls and its readiness.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bulkhead_crds::{
    Instance, InstancePhase, InstanceStatus,
    conditions::{self, types},
    host::SELinuxHostMode,
    instance::{IsolationStatus, SELinuxStatus, SeccompStatus, UserNamespaceStatus},
};
use containerd_client::services::v1::Container;
use kube::ResourceExt;
use tracing::warn;

use super::{Context, Error, labels, probe, start::mcs_of, status, steps::Steps};
use crate::{
    isolation::{userns::UidRange, verify},
    spec,
};

/// Writes the Running status of `container`, whose task runs as `pid`, from what its labels
/// record and what the kernel enforces.
pub(super) async fn report_running(
    instance: &Instance,
    ctx: &Arc<Context>,
    container: &Container,
    pid: u32,
    restarted: bool,
    ip: Option<String>,
    steps: &mut Steps,
) -> Result<(), Error> {
    let generation = instance.metadata.generation;
    let mut s = status::current(ctx, instance);
    // 1. The address and the phase.
    s.pod_ip = record_ip(ctx, container, ip, steps).await?;
    let was_running = running_phase(ctx, instance, &mut s, container, restarted);

    // 2. What was asked of the runtime, then what the kernel enforces. An instance is never
    //    left running with less than was asked: it is stopped and failed, naming the
    //    difference.
    let l = &container.labels;
    let mut iso = claimed(
        s.isolation.take().unwrap_or_default(),
        l,
        ctx.features.selinux,
    );
    // Where SELinux enforces, the label is read back like every other wall: only a process
    // running with exactly its allocated pair counts as enforced.
    let selinux_label = mcs_of(l)
        .filter(|_| ctx.features.selinux == SELinuxHostMode::Enforcing)
        .map(spec::process_label);
    let uid_start = l.get(labels::UID_START).and_then(|v| v.parse().ok());
    let observed = read_back(instance, pid, uid_start, selinux_label.clone()).await;
    steps.mark("read-back");
    match observed {
        ReadBack::Verified(o) => enforced(&mut s, &mut iso, &o, selinux_label, generation),
        ReadBack::Gone => {}
        ReadBack::Weaker(differences) => {
            return stop_weaker(instance, ctx, container, &differences).await;
        }
    }

    // 3. The walls' figures ride on this write.
    let walled = ctx
        .walls
        .as_ref()
        .and_then(|w| Some((w, w.applied(&container.id)?)));
    if let Some((_, a)) = &walled {
        iso.network = Some(crate::walls::network_status(a));
    }
    s.isolation = Some(iso);

    // 4. Readiness, the write, and the probe from here on.
    readiness(&mut s, instance, was_running, generation);
    let ip = s.pod_ip.clone();
    status::write(ctx, instance, &s).await?;
    steps.mark("status-running");
    // This write carried the walls' figures: their own report of them is not sent.
    if let (Some((walls, a)), Some(namespace)) = (&walled, instance.namespace()) {
        walls.claim(&namespace, &instance.name_any(), a);
    }
    probe::start(ctx, instance, &container.id, pid, ip);
    Ok(())
}

/// The instance's address: `ip` (from the network attachment just made) is recorded on the
/// container first, so that a report from a stale view of the Instance never loses it;
/// without one, the address the container recorded earlier.
async fn record_ip(
    ctx: &Context,
    container: &Container,
    ip: Option<String>,
    steps: &mut Steps,
) -> Result<Option<String>, Error> {
    if let Some(ip) = &ip
        && container.labels.get(labels::IP) != Some(ip)
    {
        ctx.containerd
            .set_label(&container.id, labels::IP, ip)
            .await?;
        steps.mark("label-ip");
    }
    Ok(ip.or_else(|| container.labels.get(labels::IP).cloned()))
}

/// Sets the Running phase for `container`; whether the status said so already. A first
/// start records its latency since the Instance was created.
fn running_phase(
    ctx: &Context,
    instance: &Instance,
    s: &mut InstanceStatus,
    container: &Container,
    restarted: bool,
) -> bool {
    if restarted {
        s.restart_count += 1;
    }
    let was_running =
        s.phase == Some(InstancePhase::Running) && s.container_id.as_deref() == Some(&container.id);
    status::phase(s, InstancePhase::Running, None, None);
    s.container_id = Some(container.id.clone());
    s.image_digest = container.labels.get(labels::IMAGE_DIGEST).cloned();
    if !was_running {
        s.started_at = Some(status::now());
        if s.restart_count == 0
            && let Some(created) = &instance.metadata.creation_timestamp
        {
            let latency = k8s_openapi::jiff::Timestamp::now().duration_since(created.0);
            ctx.metrics
                .started(Duration::try_from(latency).unwrap_or_default());
        }
    }
    was_running
}

/// The isolation the container's labels record (what the runtime was asked for): the MCS
/// pair, the user namespace's host range, the seccomp profile and its digest. Enforcement
/// is what [`enforced`] adds from the read-back.
fn claimed(
    mut iso: IsolationStatus,
    l: &HashMap<String, String>,
    selinux: SELinuxHostMode,
) -> IsolationStatus {
    iso.selinux = l.get(labels::MCS).map(|level| SELinuxStatus {
        level: level.clone(),
        enforced: selinux == SELinuxHostMode::Enforcing,
    });
    iso.user_namespace = l
        .get(labels::UID_START)
        .and_then(|v| v.parse::<i64>().ok())
        .map(|start| {
            let size = i64::from(UidRange::SIZE);
            UserNamespaceStatus {
                host_uid: start,
                host_gid: start,
                size,
                range: format!("{start}-{}", start + size - 1),
            }
        });
    iso.seccomp = Some(SeccompStatus {
        mode: if l.contains_key(labels::SECCOMP_DIGEST) {
            "filter".into()
        } else {
            "disabled".into()
        },
        filters: None,
        profile: l.get(labels::SECCOMP_PROFILE).cloned(),
        profile_digest: l.get(labels::SECCOMP_DIGEST).cloned(),
    });
    iso
}

/// What the kernel was read to enforce, over what was claimed, and `IsolationVerified`.
fn enforced(
    s: &mut InstanceStatus,
    iso: &mut IsolationStatus,
    o: &verify::Observed,
    selinux_label: Option<String>,
    generation: Option<i64>,
) {
    if let Some(selinux) = iso.selinux.as_mut() {
        selinux.enforced = selinux_label.is_some() && o.selinux_label == selinux_label;
    }
    let (capabilities, namespaces) = verify::status_parts(o);
    if let Some(seccomp) = iso.seccomp.as_mut() {
        seccomp.mode = match o.seccomp_mode {
            2 => "filter",
            1 => "strict",
            _ => "disabled",
        }
        .into();
        seccomp.filters = Some(o.seccomp_filters);
    }
    iso.capabilities = Some(capabilities);
    iso.no_new_privs = Some(o.no_new_privs);
    iso.namespaces = namespaces;
    iso.cgroup = Some(o.cgroup.clone());
    iso.read_only_root_filesystem = Some(o.read_only_root);
    if !conditions::is_true(&s.conditions, types::ISOLATION_VERIFIED) {
        iso.verified_at = Some(status::now());
    }
    status::set_condition(
        s,
        types::ISOLATION_VERIFIED,
        true,
        "Verified",
        "the kernel enforces every isolation setting asked for",
        generation,
    );
}

/// Stops an instance whose kernel view is weaker than asked and fails it, naming each
/// difference.
async fn stop_weaker(
    instance: &Instance,
    ctx: &Arc<Context>,
    container: &Container,
    differences: &[String],
) -> Result<(), Error> {
    let mut s = status::current(ctx, instance);
    let message = refuse(&mut s, differences, instance.metadata.generation);
    warn!(instance = %instance.name_any(), container = %container.id, %message, "stopping an instance whose isolation is weaker than asked");
    let uid = instance.uid().unwrap_or_default();
    super::stop::teardown(ctx, &container.id, &uid, Duration::ZERO).await?;
    status::write(ctx, instance, &s).await
}

/// `Ready`: true once the process runs when there is no readiness probe; otherwise false
/// on a (re)start, after which the probe decides.
fn readiness(
    s: &mut InstanceStatus,
    instance: &Instance,
    was_running: bool,
    generation: Option<i64>,
) {
    if instance.spec.template.readiness_probe.is_none() {
        status::set_condition(
            s,
            types::READY,
            true,
            "Running",
            "the instance's process runs",
            generation,
        );
    } else if !was_running {
        status::set_condition(
            s,
            types::READY,
            false,
            "ReadinessProbePending",
            "waiting for the readiness probe to pass",
            generation,
        );
    }
}

/// The outcome of reading back an instance's isolation.
enum ReadBack {
    /// Everything asked for is enforced.
    Verified(verify::Observed),
    /// The process is gone (it exited); its exit is handled elsewhere.
    Gone,
    /// The kernel enforces less than asked.
    Weaker(Vec<String>),
}

/// The status of an instance refused because the kernel enforces less than asked: Failed,
/// `IsolationVerified=False`, both with reason `IsolationNotEnforced` and a message naming
/// every difference (returned).
fn refuse(
    s: &mut bulkhead_crds::InstanceStatus,
    differences: &[String],
    generation: Option<i64>,
) -> String {
    let message = format!(
        "the kernel enforces less than asked: {}",
        differences.join("; ")
    );
    status::set_condition(
        s,
        types::ISOLATION_VERIFIED,
        false,
        "IsolationNotEnforced",
        &message,
        generation,
    );
    status::ended(
        s,
        InstancePhase::Failed,
        "IsolationNotEnforced",
        message.clone(),
        generation,
    );
    message
}

/// How long a new task's isolation is read before it is judged weaker than asked.
const READ_BACK_FOR: Duration = Duration::from_secs(2);
/// Reads at most (a bound on the loop beside the time).
const READ_BACK_TRIES: usize = 200;

/// The pause after read `attempt` (from 0): 1 ms for the first 50 reads, as runc's init
/// usually execs the program within a few milliseconds of the start, then 20 ms.
fn read_back_pause(attempt: usize) -> Duration {
    if attempt < 50 {
        Duration::from_millis(1)
    } else {
        Duration::from_millis(20)
    }
}

/// Reads the kernel's view of `pid`. runc applies the seccomp filter and drops capabilities
/// in the container's init just before it execs the program, which can be a moment after
/// the task started, so a weaker reading is retried for up to two seconds.
async fn read_back(
    instance: &Instance,
    pid: u32,
    uid_start: Option<u32>,
    selinux_label: Option<String>,
) -> ReadBack {
    let reader = verify::ProcReader::default();
    let spec = &instance.spec;
    let expected = verify::Expected {
        isolation: &spec.isolation,
        resources: &spec.template.resources,
        uid_start: uid_start.filter(|_| spec.isolation.user_namespace),
        selinux_label,
    };
    let mut last = Vec::new();
    let deadline = std::time::Instant::now() + READ_BACK_FOR;
    for attempt in 0..READ_BACK_TRIES {
        match reader.observe(pid) {
            Err(_) => return ReadBack::Gone,
            Ok(o) => {
                last = verify::differences(&expected, &o);
                if last.is_empty() {
                    return ReadBack::Verified(o);
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(read_back_pause(attempt)).await;
    }
    ReadBack::Weaker(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture_fs::write;

    #[test]
    fn the_read_back_polls_fast_first_and_stays_within_its_bound() {
        let planned: Duration = (0..READ_BACK_TRIES).map(read_back_pause).sum();
        assert!(read_back_pause(0) <= Duration::from_millis(1));
        assert!(
            planned >= READ_BACK_FOR,
            "the tries cover the whole bound: {planned:?}"
        );
        assert!(planned <= READ_BACK_FOR * 2, "{planned:?}");
    }

    /// What the labels record is what the status claims, before any read-back: the MCS
    /// level (enforced only where SELinux enforces), the host UID range, the seccomp
    /// profile; without a digest label the filter is reported disabled.
    #[test]
    fn the_claimed_isolation_is_what_the_container_labels_record() {
        let l = HashMap::from([
            (labels::MCS.to_string(), "s0:c10,c20".to_string()),
            (labels::UID_START.to_string(), "1000000000".to_string()),
            (
                labels::SECCOMP_PROFILE.to_string(),
                "RuntimeDefault@3".to_string(),
            ),
            (labels::SECCOMP_DIGEST.to_string(), "sha256:ab".to_string()),
        ]);
        let iso = claimed(IsolationStatus::default(), &l, SELinuxHostMode::Disabled);
        let selinux = iso.selinux.unwrap();
        assert_eq!(
            (selinux.level.as_str(), selinux.enforced),
            ("s0:c10,c20", false)
        );
        let userns = iso.user_namespace.unwrap();
        assert_eq!(userns.host_uid, 1_000_000_000);
        assert_eq!(
            userns.range,
            format!(
                "1000000000-{}",
                1_000_000_000 + i64::from(UidRange::SIZE) - 1
            )
        );
        let seccomp = iso.seccomp.unwrap();
        assert_eq!(seccomp.mode, "filter");
        assert_eq!(seccomp.profile_digest.as_deref(), Some("sha256:ab"));

        let enforcing = claimed(IsolationStatus::default(), &l, SELinuxHostMode::Enforcing);
        assert!(enforcing.selinux.unwrap().enforced);
        let bare = claimed(
            IsolationStatus::default(),
            &HashMap::new(),
            SELinuxHostMode::Enforcing,
        );
        assert!(bare.selinux.is_none() && bare.user_namespace.is_none());
        assert_eq!(bare.seccomp.unwrap().mode, "disabled");
    }

    /// The refusal path, driven through the read-back seam: a fake /proc where the process
    /// kept CAP_SYS_ADMIN and lost no_new_privs, though nothing was asked for.
    #[test]
    fn a_weaker_kernel_view_fails_the_instance_naming_each_difference() {
        let dir = tempfile::tempdir().unwrap();
        verify::tests::fixture(dir.path());
        write(
            dir.path(),
            "/proc/42/status",
            "Name:\tsh\nCapEff:\t0000000000200000\nCapBnd:\t0000000000200400\nNoNewPrivs:\t0\nSeccomp:\t2\nSeccomp_filters:\t1\n",
        );
        let observed = verify::ProcReader::at(dir.path()).observe(42).unwrap();
        let (isolation, resources) = (Default::default(), Default::default());
        let expected = verify::Expected {
            isolation: &isolation,
            resources: &resources,
            uid_start: Some(1_000_000_000),
            selinux_label: None,
        };
        let differences = verify::differences(&expected, &observed);
        assert!(!differences.is_empty());

        let mut s = InstanceStatus {
            phase: Some(InstancePhase::Running),
            ..Default::default()
        };
        let message = refuse(&mut s, &differences, Some(3));
        assert_eq!(s.phase, Some(InstancePhase::Failed));
        assert_eq!(s.reason.as_deref(), Some("IsolationNotEnforced"));
        let verified = conditions::find(&s.conditions, types::ISOLATION_VERIFIED).unwrap();
        assert_eq!(
            (verified.status.as_str(), verified.reason.as_str()),
            ("False", "IsolationNotEnforced")
        );
        for d in &differences {
            assert!(message.contains(d.as_str()), "{message} lacks {d}");
        }
        assert!(
            message.contains("SYS_ADMIN") && message.to_lowercase().contains("no_new_privs"),
            "{message}"
        );
    }
}
