//! Starting an Instance, or adopting the container that already runs it.

use std::{collections::HashMap, ops::ControlFlow, sync::Arc, time::Duration};

use bulkhead_crds::{
    Instance, InstancePhase, SeccompProfile,
    conditions::types,
    host::SELinuxHostMode,
    instance::ExitStatus,
    isolation::{Isolation, SeccompType},
    policy::{self, IsolationLevel},
};
use containerd_client::services::v1::Container;
use kube::{Api, ResourceExt, runtime::controller::Action, runtime::reflector::ObjectRef};
use tracing::{debug, info, warn};

use super::{
    Context, Error, finalizer::Pending, labels, restart, running::report_running, status,
    steps::Steps,
};
use crate::{
    failpoint,
    host::detect::{HostRoot, go_arch},
    image::{self, ImageRef},
    isolation::{mcs::McsPair, notify, seccomp, userns::UidRange},
    runtime::{containerd::TaskState, rootfs},
    spec::{self, SpecInput},
};

/// How often a running instance is looked at even without events.
const RESYNC: Duration = Duration::from_secs(60);

/// Brings the Instance to running, or reports why it cannot run. `finalizer` is the patch
/// adding the agent's finalizer when it is still in flight: nothing is created in the
/// runtime before it succeeds.
pub async fn apply(
    instance: &Instance,
    ctx: &Arc<Context>,
    finalizer: &Pending,
) -> Result<Action, Error> {
    let uid = instance
        .uid()
        .ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let id = labels::container_id(&uid);
    let current = status::current(ctx, instance);
    if current.phase == Some(InstancePhase::Lost) {
        // The controller gave this instance up while this host was unreachable, and may
        // have replaced it elsewhere: it must not run here (fencing).
        if ctx.containerd.get_container(&id).await?.is_some() {
            warn!(instance = %instance.name_any(), container = %id, "tearing down an instance marked Lost");
            super::stop::teardown(ctx, &id, &uid, Duration::from_secs(10)).await?;
        }
        return Ok(Action::await_change());
    }
    if let Some(message) = below_floor(&instance.spec.isolation, ctx.isolation_floor) {
        return refuse_below_floor(instance, ctx, &uid, &id, message).await;
    }
    if let Some(container) = ctx.containerd.get_container(&id).await? {
        if let Err(e) = finalizer.wait().await {
            return Ok(without_finalizer(instance, &e));
        }
        return observe(instance, ctx, &container).await;
    }
    match current.phase {
        // A finished instance is never started again, also not after an agent restart.
        Some(InstancePhase::Failed | InstancePhase::Succeeded) => return Ok(Action::await_change()),
        Some(InstancePhase::Running) if current.container_id.is_some() => {
            status::fail(
                ctx,
                instance,
                "ContainerLost",
                format!("container {id} disappeared from containerd while running"),
            )
            .await?;
            return Ok(Action::await_change());
        }
        _ => {}
    }
    start_gated(instance, ctx, &uid, &id, finalizer).await
}

/// A start that cannot go on because the finalizer patch failed (its list changed
/// meanwhile, or the Instance is gone): the next reconcile, from a newer Instance, tries
/// again.
fn without_finalizer(instance: &Instance, error: &str) -> Action {
    debug!(instance = %instance.name_any(), %error, "adding the finalizer failed; again");
    Action::requeue(Duration::from_millis(100))
}

/// [`start`] behind the instance's back-off: an attempt within the delay left by a failed
/// one waits instead (see [`super::backoff`]); a failure is logged, recorded in the status
/// (reason `StartFailed`, the error and the next attempt) and retried after the delay.
async fn start_gated(
    instance: &Instance,
    ctx: &Arc<Context>,
    uid: &str,
    id: &str,
    finalizer: &Pending,
) -> Result<Action, Error> {
    let now = std::time::Instant::now();
    if let Some(wait) = ctx.backoff().and_then(|b| b.wait(uid, now)) {
        return Ok(Action::requeue(wait));
    }
    let error = match start(instance, ctx, uid, id, finalizer).await {
        Ok(action) => {
            if let Some(mut b) = ctx.backoff() {
                b.forget(uid);
            }
            return Ok(action);
        }
        Err(e) => e,
    };
    let delay = ctx
        .backoff()
        .map_or(super::backoff::FIRST, |mut b| b.failed(uid, now));
    warn!(instance = %instance.name_any(), namespace = ?instance.namespace(), %error, retry_in = ?delay, "start failed");
    let mut s = status::current(ctx, instance);
    let message = format!("{error} (next attempt in {}s)", delay.as_secs());
    status::phase(
        &mut s,
        InstancePhase::Starting,
        Some("StartFailed"),
        Some(message),
    );
    if let Err(e) = status::write(ctx, instance, &s).await {
        warn!(instance = %instance.name_any(), error = %e, "recording the failed start");
    }
    Ok(Action::requeue(delay))
}

/// Why `instance` may not run on a host whose operator set `floor`, if it may not: each
/// relaxation the floor does not allow, with its field.
pub fn below_floor(isolation: &Isolation, floor: IsolationLevel) -> Option<String> {
    let beyond = policy::beyond(isolation, floor);
    if beyond.is_empty() {
        return None;
    }
    let what: Vec<String> = beyond.iter().map(ToString::to_string).collect();
    Some(format!(
        "this host runs isolation level {floor} or stricter (the agent's --isolation-floor); {}",
        what.join("; ")
    ))
}

/// The host's own floor, whatever the API admitted: nothing is started (a container that
/// runs, from before the floor was raised, is torn down) and the Instance fails with
/// `IsolationForbidden`.
async fn refuse_below_floor(
    instance: &Instance,
    ctx: &Arc<Context>,
    uid: &str,
    id: &str,
    message: String,
) -> Result<Action, Error> {
    if ctx.containerd.get_container(id).await?.is_some() {
        warn!(instance = %instance.name_any(), container = %id, "tearing down an instance below the host's isolation floor");
        super::stop::teardown(ctx, id, uid, Duration::from_secs(10)).await?;
    }
    let current = status::current(ctx, instance);
    if current.reason.as_deref() != Some("IsolationForbidden") {
        warn!(instance = %instance.name_any(), %message, "refusing an instance below the host's isolation floor");
        status::fail(ctx, instance, "IsolationForbidden", message).await?;
    }
    Ok(Action::await_change())
}

/// Looks at an existing container and its task and takes the step that is missing.
async fn observe(
    instance: &Instance,
    ctx: &Arc<Context>,
    container: &Container,
) -> Result<Action, Error> {
    let id = container.id.as_str();
    let lost_listener = listen_again(ctx, container);
    match ctx.containerd.task_state(id).await? {
        Some(TaskState::Running(_)) if lost_listener => {
            // The process's listener fd went with the previous agent: its notified calls now
            // fail with ENOSYS instead of running. Restart it under a new listener.
            warn!(instance = %instance.name_any(), container = id, "the seccomp listener of the running process was lost with the previous agent; restarting the task");
            ctx.containerd.kill_task(id, super::stop::SIGKILL).await?;
            supervise(instance, ctx, id);
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        Some(TaskState::Running(pid)) => {
            super::record::on_request(ctx, instance, id).await?;
            let stored = stored(ctx, instance).await?;
            report_running(&stored, ctx, container, pid, false, None, &mut Steps::new()).await?;
            supervise(instance, ctx, id);
            Ok(Action::requeue(RESYNC))
        }
        // The agent stopped between creating and starting the task.
        Some(TaskState::Created(created)) => {
            start_existing(instance, ctx, container, created, false).await
        }
        Some(TaskState::Stopped(code)) => reap(instance, ctx, id, code).await,
        Some(TaskState::Other) => Ok(Action::requeue(Duration::from_secs(5))),
        None => recreate_task(instance, ctx, container).await,
    }
}

/// A restarted agent listens again for the container's seccomp listener fds; true when the
/// listener is new and the filter relies on it (Record, Complain: the running process's
/// notified calls went to the previous agent's listener, now gone).
fn listen_again(ctx: &Context, container: &Container) -> bool {
    let id = container.id.as_str();
    let Some(mode) = container
        .labels
        .get(labels::SECCOMP_NOTIFY)
        .and_then(|l| notify::Mode::from_label(l))
    else {
        return false;
    };
    let Some(key) = container.labels.get(labels::INSTANCE) else {
        return false;
    };
    match ctx.notifier.listen(id, key, mode) {
        Ok((_, created)) => created && !matches!(mode, notify::Mode::Enforce { .. }),
        Err(e) => {
            warn!(container = id, error = %e, "cannot listen for seccomp notifications");
            false
        }
    }
}

/// Starts the created task `created` of an existing container (left created by a previous
/// agent, or made again by [`recreate_task`]): its network first (an agent killed between
/// ADD and start may have left it), then the process, then the Running report.
async fn start_existing(
    instance: &Instance,
    ctx: &Arc<Context>,
    container: &Container,
    created: u32,
    restarting: bool,
) -> Result<Action, Error> {
    let id = container.id.as_str();
    let ip = match attach(ctx, id, created, Left::Maybe, &mut Steps::new()).await {
        Ok(ip) => ip,
        Err(e) => return network_failed(instance, ctx, id, e).await,
    };
    let pid = ctx.containerd.start_task(id).await?;
    info!(instance = %instance.name_any(), container = id, pid, restarting, "started the task of an existing container");
    let stored = stored(ctx, instance).await?;
    report_running(
        &stored,
        ctx,
        container,
        pid,
        restarting,
        ip,
        &mut Steps::new(),
    )
    .await?;
    supervise(instance, ctx, id);
    Ok(Action::requeue(RESYNC))
}

/// A task that exited: its exit recorded (with a restart back-off when the policy restarts
/// it), its network released and the task deleted; the container stays.
async fn reap(instance: &Instance, ctx: &Context, id: &str, code: u32) -> Result<Action, Error> {
    let backoff = record_exit(instance, ctx, id, code).await?;
    if let Some(cni) = &ctx.cni
        && let Err(e) = cni.del(id, None).await
    {
        warn!(container = id, error = %e, "releasing the network of an exited instance failed");
    }
    ctx.containerd.delete_task(id).await?;
    Ok(match backoff {
        Some(secs) => Action::requeue(Duration::from_secs(secs as u64)),
        None => Action::await_change(),
    })
}

/// The container exists but its task does not: a restart after an exit (once its back-off
/// is over), or the agent stopped mid-start. A finished instance stays finished.
async fn recreate_task(
    instance: &Instance,
    ctx: &Arc<Context>,
    container: &Container,
) -> Result<Action, Error> {
    let current = status::current(ctx, instance);
    if matches!(
        current.phase,
        Some(InstancePhase::Failed | InstancePhase::Succeeded)
    ) {
        return Ok(Action::await_change());
    }
    let restarting = current.reason.as_deref() == Some(CRASH_LOOP);
    if restarting && let Some(wait) = backoff_remaining(&current) {
        return Ok(Action::requeue(Duration::from_secs(wait as u64)));
    }
    let id = container.id.as_str();
    let mounts = ctx
        .containerd
        .snapshot_mounts(&container.snapshot_key)
        .await?;
    let log = container
        .labels
        .get(labels::LOG_PATH)
        .cloned()
        .unwrap_or_default();
    let mounts = rootfs::with_mount_label(
        mounts,
        rootfs_label(ctx, mcs_of(&container.labels)).as_deref(),
    );
    let created = ctx
        .containerd
        .create_task(id, mounts, &ctx.log_writer.uri(std::path::Path::new(&log)))
        .await?;
    start_existing(instance, ctx, container, created, restarting).await
}

/// Why an instance cannot start: a reason and a message for its Failed status.
type Refusal = (&'static str, String);

/// Pulls, allocates, builds the spec, creates the container and starts its task.
async fn start(
    instance: &Instance,
    ctx: &Arc<Context>,
    uid: &str,
    id: &str,
    finalizer: &Pending,
) -> Result<Action, Error> {
    let mut steps = Steps::new();
    let gathered = match gather(instance, ctx, uid, id, &mut steps).await? {
        ControlFlow::Continue(g) => g,
        ControlFlow::Break(action) => return Ok(action),
    };
    launch(instance, ctx, (uid, id), gathered, finalizer, &mut steps).await
}

/// What a start needs before anything exists in the runtime.
struct Gathered {
    pulled: image::PulledImage,
    filter: Filter,
    allocated: (Option<UidRange>, McsPair),
}

/// Fails the instance for `refusal`; it waits for a change of its spec.
async fn refused(instance: &Instance, ctx: &Context, refusal: Refusal) -> Result<Action, Error> {
    status::fail(ctx, instance, refusal.0, refusal.1).await?;
    Ok(Action::await_change())
}

/// Steps 1 to 3 of a start: the image, the seccomp filter and the host allocations, or the
/// action to take instead (a refusal is written as the instance's failure).
async fn gather(
    instance: &Instance,
    ctx: &Arc<Context>,
    uid: &str,
    id: &str,
    steps: &mut Steps,
) -> Result<ControlFlow<Action, Gathered>, Error> {
    let namespace = instance
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    // 1. The image, by digest, its signature checked first when the spec requires one.
    let mut s = status::current(ctx, instance);
    if let ControlFlow::Break(action) = super::signature::verify(instance, ctx, &mut s).await? {
        return Ok(ControlFlow::Break(action));
    }
    steps.mark("signature");
    let (pulled, was_pulled) = match pull(instance, ctx, &mut s, steps).await? {
        ControlFlow::Continue(p) => p,
        ControlFlow::Break(action) => return Ok(ControlFlow::Break(action)),
    };
    failpoint::hit("after-pull");

    // 2. The seccomp filter.
    let filter = match seccomp_filter(instance, ctx, &namespace, id).await? {
        Ok(f) => f,
        Err(refusal) => {
            return refused(instance, ctx, refusal)
                .await
                .map(ControlFlow::Break);
        }
    };
    steps.mark("seccomp");

    // 3. Allocations: unique on this host while the container exists.
    let allocated = match allocate(ctx, uid, instance.spec.isolation.user_namespace) {
        Ok(a) => a,
        Err(refusal) => {
            return refused(instance, ctx, refusal)
                .await
                .map(ControlFlow::Break);
        }
    };
    steps.mark("allocate");
    // No status write before the task exists when nothing was pulled: the Instance shows
    // Running next. After a pull, Starting replaces the Pulling phase.
    if was_pulled {
        status::phase(&mut s, InstancePhase::Starting, None, None);
        s.image_digest = Some(pulled.digest.clone());
        status::write(ctx, instance, &s).await?;
        steps.mark("status-starting");
    }
    Ok(ControlFlow::Continue(Gathered {
        pulled,
        filter,
        allocated,
    }))
}

/// Steps 4 to 6 of a start: the container and its task, its network, the process, and the
/// Running report. A failure before the task exists gives the allocations back.
async fn launch(
    instance: &Instance,
    ctx: &Arc<Context>,
    (uid, id): (&str, &str),
    g: Gathered,
    finalizer: &Pending,
    steps: &mut Steps,
) -> Result<Action, Error> {
    let (name, namespace) = (
        instance.name_any(),
        instance.namespace().unwrap_or_default(),
    );
    // 4. The runtime spec, the container (its labels hold what adoption reads back) and
    //    its task, created but not started.
    let created = create(instance, ctx, id, &g, finalizer, steps).await;
    let pid = match created {
        Ok(Created::Task(pid)) => pid,
        Ok(Created::NoFinalizer(e)) => {
            release(ctx, uid, id);
            return Ok(without_finalizer(instance, &e));
        }
        // Another reconcile got there first; look again rather than start a twin.
        Ok(Created::Raced) => return Ok(Action::requeue(Duration::from_millis(100))),
        Ok(Created::Refused(refusal)) => {
            warn!(instance = %name, container = id, message = %refusal.1, "creating the task failed");
            release(ctx, uid, id);
            return refused(instance, ctx, refusal).await;
        }
        Err(e) => {
            release(ctx, uid, id);
            return Err(e);
        }
    };
    failpoint::hit("after-create-task");

    // 5. The network, then the process runs.
    let (pid, ip) = match network_then_process(ctx, id, pid, steps).await? {
        Ok(started) => started,
        Err(e) => return network_failed(instance, ctx, id, e).await,
    };
    failpoint::hit("after-start-task");
    info!(instance = %name, %namespace, container = id, pid, image = %g.pulled.digest, "instance started");

    // 6. Read back what the kernel enforces and report it.
    let container = ctx
        .containerd
        .get_container(id)
        .await?
        .ok_or_else(|| Error::Host(format!("container {id} vanished right after creation")))?;
    steps.mark("get-container");
    report_running(instance, ctx, &container, pid, false, ip, steps).await?;
    debug!(instance = %name, %namespace, container = id, total_ms = steps.total().as_secs_f64() * 1000.0, steps = %steps.summary(), "start steps");
    supervise(instance, ctx, id);
    Ok(Action::requeue(RESYNC))
}

/// Step 5 of a start: the created task's network, then its process; the process's PID and
/// the instance's address, or why the network could not be set up. The walls go on before
/// the process starts, or beside its start when they hold its new address closed until then
/// ([`Added::closed_until_synced`]): the Running report waits for both.
async fn network_then_process(
    ctx: &Context,
    id: &str,
    pid: u32,
    steps: &mut Steps,
) -> Result<Result<(u32, Option<String>), crate::network::CniError>, Error> {
    let added = match add(ctx, id, pid, Left::Nothing, steps).await {
        Ok(added) => added,
        Err(e) => return Ok(Err(e)),
    };
    let beside = added.closed_until_synced(ctx, id);
    let Added { ip, missing } = added;
    let later = if beside {
        Some(missing)
    } else {
        if let Err(e) = wall_step(ctx, missing, steps).await {
            return Ok(Err(e));
        }
        None
    };
    let walls = async {
        let Some(missing) = later else { return Ok(()) };
        wall(ctx, missing).await
    };
    failpoint::hit("after-network");
    // The address label (what a report from a stale view reads back) goes on while the
    // process starts: both before the Running write.
    let label = async {
        match &ip {
            Some(ip) => ctx.containerd.set_label(id, labels::IP, ip).await,
            None => Ok(()),
        }
    };
    let (started, labelled, walled) = tokio::join!(ctx.containerd.start_task(id), label, walls);
    if let Err(e) = walled {
        return Ok(Err(e));
    }
    let pid = started?;
    labelled?;
    steps.mark(if beside {
        "start-task+walls"
    } else {
        "start-task"
    });
    Ok(Ok((pid, ip)))
}

/// Gives back what [`allocate`] took for `uid` and closes the seccomp listener of `id`.
fn release(ctx: &Context, uid: &str, id: &str) {
    ctx.notifier.close(id);
    if let Ok(mut alloc) = ctx.allocations.lock() {
        alloc.uids.release(uid);
        alloc.mcs.release(uid);
    }
}

/// The instance's image: the one containerd holds already, without a status write (the
/// Instance shows Running next), or pulled, writing the Pulling phase first; a transient
/// failure is retried, a permanent one fails the instance. True when it was pulled.
async fn pull(
    instance: &Instance,
    ctx: &Context,
    s: &mut bulkhead_crds::InstanceStatus,
    steps: &mut Steps,
) -> Result<ControlFlow<Action, (image::PulledImage, bool)>, Error> {
    let image_ref = &instance.spec.template.image;
    let reference = match ImageRef::parse(image_ref) {
        Ok(r) => r,
        Err(e) => {
            status::fail(ctx, instance, "InvalidImageReference", e.to_string()).await?;
            return Ok(ControlFlow::Break(Action::await_change()));
        }
    };
    let started = std::time::Instant::now();
    let here = image::present(
        &ctx.containerd,
        (&ctx.registry, &ctx.recent_tags),
        &reference,
        go_arch(),
    )
    .await;
    steps.mark("image-present");
    let fetched = match here {
        Ok(Some(p)) => {
            ctx.metrics.pull(true, started.elapsed(), 0);
            return Ok(ControlFlow::Continue((p, false)));
        }
        Ok(None) => {
            status::phase(
                s,
                InstancePhase::Pulling,
                None,
                Some(format!("pulling {image_ref}")),
            );
            status::write(ctx, instance, s).await?;
            steps.mark("status-pulling");
            let pulled = image::pull(&ctx.containerd, &ctx.registry, &reference, go_arch()).await;
            steps.mark("pull");
            pulled
        }
        Err(e) => Err(e),
    };
    ctx.metrics.pull(
        fetched.is_ok(),
        started.elapsed(),
        fetched.as_ref().map_or(0, |p| p.fetched_bytes),
    );
    match fetched {
        Ok(p) => Ok(ControlFlow::Continue((p, true))),
        Err(e) if e.is_transient() => {
            warn!(instance = %instance.name_any(), error = %e, "image pull failed; will retry");
            let message = format!("{e}; retrying");
            status::phase(s, InstancePhase::Pulling, Some(e.reason()), Some(message));
            status::write(ctx, instance, s).await?;
            Ok(ControlFlow::Break(Action::requeue(Duration::from_secs(10))))
        }
        Err(e) => {
            warn!(instance = %instance.name_any(), error = %e, "image pull failed");
            status::fail(ctx, instance, e.reason(), e.to_string()).await?;
            Ok(ControlFlow::Break(Action::await_change()))
        }
    }
}

/// The seccomp filter an instance runs under, and how its notifications are handled.
struct Filter {
    /// The profile's name as the container label records it.
    profile_name: String,
    oci: Option<oci_spec::runtime::LinuxSeccomp>,
    notify_mode: Option<notify::Mode>,
}

/// The shipped default, a SeccompProfile by name (enforced or in Complain mode, at the
/// version the Instance pins), a recording filter, or none; refused when this kernel cannot
/// enforce what is asked.
async fn seccomp_filter(
    instance: &Instance,
    ctx: &Context,
    namespace: &str,
    id: &str,
) -> Result<Result<Filter, Refusal>, Error> {
    let spec = &instance.spec;
    let seccomp_type = spec.isolation.seccomp.type_;
    let (profile_name, profile) = match seccomp_type {
        SeccompType::RuntimeDefault => (
            format!("RuntimeDefault@{}", seccomp::RUNTIME_DEFAULT_VERSION),
            Some(seccomp::runtime_default()),
        ),
        SeccompType::Localhost | SeccompType::Complain => {
            match named_profile(instance, ctx, namespace).await? {
                Ok(named) => named,
                Err(refusal) => return Ok(Err(refusal)),
            }
        }
        SeccompType::Unconfined => ("Unconfined".to_string(), None),
        SeccompType::Record => ("Record".to_string(), None),
    };
    if seccomp_type != SeccompType::Unconfined && !ctx.features.seccomp {
        return Ok(Err((
            "SeccompUnsupported",
            "this host's kernel does not support seccomp filters".into(),
        )));
    }
    // Record and Complain need seccomp user notification; without it an enforced profile's
    // denials are refused by the kernel alone, uncounted.
    let user_notif = ctx
        .features
        .seccomp_actions
        .iter()
        .any(|a| a == "user_notif");
    if matches!(seccomp_type, SeccompType::Record | SeccompType::Complain) && !user_notif {
        return Ok(Err((
            "SeccompNotifyUnsupported",
            format!(
                "seccomp type {seccomp_type:?} needs seccomp user notification, which this host's kernel does not offer"
            ),
        )));
    }
    let listener = ctx.notifier.socket_path(id);
    let (oci, notify_mode) = match &profile {
        Some(p) => {
            let pctx = seccomp::ProfileContext {
                go_arch: go_arch(),
                kernel: HostRoot::default().kernel_version(),
                capabilities: &spec.isolation.capabilities.add,
            };
            match seccomp::to_oci(p, &pctx) {
                Ok(s) if seccomp_type == SeccompType::Complain => (
                    Some(notify::complain(&s, &listener)),
                    Some(notify::Mode::Complain),
                ),
                Ok(s) if seccomp_type == SeccompType::Localhost && user_notif => {
                    let (s, mode) = notify::count_denials(&s, &listener);
                    (Some(s), mode)
                }
                Ok(s) => (Some(s), None),
                Err(e) => {
                    return Ok(Err((
                        "InvalidSeccompProfile",
                        format!("seccomp profile {profile_name}: {e}"),
                    )));
                }
            }
        }
        None if seccomp_type == SeccompType::Record => (
            Some(notify::record_filter(&listener)),
            Some(notify::Mode::Record),
        ),
        None => (None, None),
    };
    Ok(Ok(Filter {
        profile_name,
        oci,
        notify_mode,
    }))
}

/// The SeccompProfile an instance names, at the version it was created for.
async fn named_profile(
    instance: &Instance,
    ctx: &Context,
    namespace: &str,
) -> Result<Result<(String, Option<bulkhead_crds::seccomp::SeccompProfileSpec>), Refusal>, Error> {
    let spec = &instance.spec;
    let profile_name = spec
        .isolation
        .seccomp
        .localhost_profile
        .clone()
        .unwrap_or_default();
    let api: Api<SeccompProfile> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(p) = api.get_opt(&profile_name).await? else {
        return Ok(Err((
            "SeccompProfileNotFound",
            format!(
                "SeccompProfile {namespace}/{profile_name} does not exist; create it or change isolation.seccomp"
            ),
        )));
    };
    let have = p.spec.content_digest();
    if let Some(want) = &spec.seccomp_profile_digest
        && *want != have
    {
        return Ok(Err((
            "SeccompProfileVersionGone",
            format!(
                "SeccompProfile {namespace}/{profile_name} now has content {have}; this instance was created for {want}, which no longer exists. The Workload rolls the new version out as a new revision"
            ),
        )));
    }
    Ok(Ok((profile_name, Some(p.spec))))
}

/// The runtime spec (as JSON) and the container's labels.
type Prepared = (Vec<u8>, HashMap<String, String>);

/// The runtime spec (as JSON) and the container's labels; the seccomp listener opened when
/// the filter notifies (runc hands the filter's fd over while creating the task).
fn prepare(
    instance: &Instance,
    ctx: &Context,
    id: &str,
    pulled: &image::PulledImage,
    filter: &Filter,
    (uid_range, mcs): (Option<UidRange>, McsPair),
    log_path: &std::path::Path,
) -> Result<Result<Prepared, Refusal>, Error> {
    let spec = &instance.spec;
    let name = instance.name_any();
    let cgroups_path = format!("/bulkhead/{id}");
    let oci = spec::build(&SpecInput {
        container_id: id,
        hostname: &name,
        template: &spec.template,
        isolation: &spec.isolation,
        image_config: &pulled.config,
        uid_range,
        mcs,
        selinux_enabled: ctx.features.selinux != SELinuxHostMode::Disabled,
        seccomp: filter.oci.clone(),
        netns_path: None,
        cgroups_path: &cgroups_path,
    });
    let oci = match oci {
        Ok(o) => o,
        Err(e) => return Ok(Err(("InvalidRuntimeSpec", e.to_string()))),
    };
    let spec_json = serde_json::to_vec(&oci)
        .map_err(|e| Error::Host(format!("serializing the runtime spec: {e}")))?;
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Host(format!("creating {}: {e}", dir.display())))?;
    }
    let owner = format!("{}/{name}", instance.namespace().unwrap_or_default());
    let labels = container_labels(
        ctx, instance, &owner, pulled, filter, uid_range, mcs, log_path,
    );
    if let Some(mode) = filter.notify_mode
        && let Err(e) = ctx.notifier.listen(id, &owner, mode)
    {
        let listener = ctx.notifier.socket_path(id);
        return Ok(Err((
            "SeccompListenerFailed",
            format!("listening on {}: {e}", listener.display()),
        )));
    }
    Ok(Ok((spec_json, labels)))
}

/// The container's labels: everything an agent restarted later needs to adopt it.
#[allow(clippy::too_many_arguments)]
fn container_labels(
    ctx: &Context,
    instance: &Instance,
    owner: &str,
    pulled: &image::PulledImage,
    filter: &Filter,
    uid_range: Option<UidRange>,
    mcs: McsPair,
    log_path: &std::path::Path,
) -> HashMap<String, String> {
    let mut container_labels = HashMap::from([
        (
            labels::INSTANCE_UID.to_string(),
            instance.uid().unwrap_or_default(),
        ),
        (labels::INSTANCE.to_string(), owner.to_string()),
        (labels::HOST.to_string(), ctx.host.clone()),
        (labels::MCS.to_string(), mcs.level()),
        (labels::IMAGE_DIGEST.to_string(), pulled.digest.clone()),
        (
            labels::SECCOMP_PROFILE.to_string(),
            filter.profile_name.clone(),
        ),
        (labels::LOG_PATH.to_string(), log_path.display().to_string()),
    ]);
    if let Some(r) = uid_range {
        container_labels.insert(labels::UID_START.to_string(), r.start.to_string());
    }
    if let Some(d) = filter.oci.as_ref().map(seccomp::digest) {
        container_labels.insert(labels::SECCOMP_DIGEST.to_string(), d);
    }
    if let Some(mode) = filter.notify_mode {
        container_labels.insert(labels::SECCOMP_NOTIFY.to_string(), mode.label());
    }
    container_labels
}

/// What creating the container and its task came to.
enum Created {
    /// The task exists, stopped before its process runs: its PID.
    Task(u32),
    /// Another reconcile created the container first.
    Raced,
    /// The finalizer patch beside the start failed: nothing was created (the snapshot is
    /// removed again).
    NoFinalizer(String),
    /// runc refused the spec or the image (a missing binary, a mount it cannot make): this
    /// does not heal by retrying. What was made is removed.
    Refused(Refusal),
}

/// The rootfs snapshot, the container and its task (created, not started). The snapshot is
/// writable even for a read-only root: runc creates the mount points of writable paths the
/// image lacks, then remounts the root read-only (spec root.readonly), so the kernel
/// enforces it all the same.
async fn create(
    instance: &Instance,
    ctx: &Context,
    id: &str,
    g: &Gathered,
    finalizer: &Pending,
    steps: &mut Steps,
) -> Result<Created, Error> {
    let (pulled, filter, allocated) = (&g.pulled, &g.filter, g.allocated);
    let log_path = ctx.log_path(
        &instance.namespace().unwrap_or_default(),
        &instance.name_any(),
        &instance.uid().unwrap_or_default(),
    );
    let (spec_json, container_labels) =
        match prepare(instance, ctx, id, pulled, filter, allocated, &log_path)? {
            Ok(p) => p,
            Err(refusal) => return Ok(Created::Refused(refusal)),
        };
    steps.mark("spec");
    let snapshot_labels =
        HashMap::from([("containerd.io/gc.root".to_string(), "bulkhead".to_string())]);
    let _ = ctx.containerd.remove_snapshot(id).await;
    let mounts = ctx
        .containerd
        .prepare_snapshot(None, id, &pulled.chain_id, snapshot_labels)
        .await?;
    if let Err(e) = rootfs::make_mount_points(
        &mounts,
        &instance.spec.template.writable_paths,
        ctx.node_root.as_deref(),
    ) {
        let _ = ctx.containerd.remove_snapshot(id).await;
        return Err(Error::Host(format!(
            "creating the writable mount points of {id}: {e}"
        )));
    }
    steps.mark("snapshot");
    // The finalizer before any container exists.
    if let Err(e) = finalizer.wait().await {
        let _ = ctx.containerd.remove_snapshot(id).await;
        return Ok(Created::NoFinalizer(e));
    }
    steps.mark("finalizer");
    if let Err(e) = ctx
        .containerd
        .create_container(id, &pulled.pinned, id, spec_json, container_labels)
        .await
    {
        if e.is_already_exists() {
            return Ok(Created::Raced);
        }
        let _ = ctx.containerd.remove_snapshot(id).await;
        return Err(e.into());
    }
    steps.mark("create-container");
    failpoint::hit("after-create-container");
    let mounts = rootfs::with_mount_label(mounts, rootfs_label(ctx, Some(allocated.1)).as_deref());
    let task = ctx
        .containerd
        .create_task(id, mounts, &ctx.log_writer.uri(&log_path))
        .await;
    steps.mark("create-task");
    match task {
        Ok(pid) => Ok(Created::Task(pid)),
        Err(e) => {
            let _ = ctx.containerd.delete_container(id).await;
            let _ = ctx.containerd.remove_snapshot(id).await;
            Ok(Created::Refused(("RuntimeCreateFailed", e.to_string())))
        }
    }
}

/// Takes a UID range (when the instance has a user namespace) and an MCS pair for `owner`.
fn allocate(
    ctx: &Context,
    owner: &str,
    user_namespace: bool,
) -> Result<(Option<UidRange>, McsPair), (&'static str, String)> {
    let mut alloc = ctx.allocations.lock().map_err(|_| {
        (
            "AllocatorUnavailable",
            "allocator lock poisoned".to_string(),
        )
    })?;
    let uid_range = if user_namespace {
        Some(alloc.uids.allocate(owner).map_err(|e| {
            (
                "UidRangesExhausted",
                format!("no free host UID range on {}: {e}", ctx.host),
            )
        })?)
    } else {
        None
    };
    match alloc.mcs.allocate(owner) {
        Ok(pair) => Ok((uid_range, pair)),
        Err(e) => {
            alloc.uids.release(owner);
            Err((
                "McsPairsExhausted",
                format!("no free MCS pair on {}: {e}", ctx.host),
            ))
        }
    }
}

/// The Instance as stored, not the controller's cached copy, which can lag behind the
/// agent's own last write (and would make a running instance look newly started): what a
/// report on an existing container works from. A fresh start needs none: nothing of the
/// instance ran before, and [`status::current`] covers the agent's own earlier writes.
async fn stored(ctx: &Context, instance: &Instance) -> Result<Instance, Error> {
    let namespace = instance
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    Ok(Api::<Instance>::namespaced(ctx.client.clone(), &namespace)
        .get(&instance.name_any())
        .await?)
}

/// Whether an earlier agent may have attached a task's network namespace already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Left {
    /// The task was created in this pass: its namespace is new and empty.
    Nothing,
    /// The task was found created (or recreated after a lost listener): an agent killed
    /// between ADD and start may have left eth0 there.
    Maybe,
}

/// The network attached to a created task, its walls not yet synced.
struct Added {
    /// The instance's address.
    ip: Option<String>,
    /// The walls' jumps found missing meanwhile (`None` without walls).
    missing: Option<Vec<(&'static str, String)>>,
}

impl Added {
    /// Whether the process may start while the walls are synced rather than after: only
    /// when the walls hold its new address closed until then ([`crate::walls::Walls::closed_until_synced`]).
    fn closed_until_synced(&self, ctx: &Context, id: &str) -> bool {
        let (Some(walls), Some(ip), Some(missing)) = (&ctx.walls, &self.ip, &self.missing) else {
            return false;
        };
        ip.parse()
            .is_ok_and(|ip| walls.closed_until_synced(id, ip, missing))
    }
}

/// Attaches the created task's network namespace to the instance network and applies its
/// walls; the instance's IP.
async fn attach(
    ctx: &Context,
    id: &str,
    pid: u32,
    left: Left,
    steps: &mut Steps,
) -> Result<Option<String>, crate::network::CniError> {
    let added = add(ctx, id, pid, left, steps).await?;
    wall_step(ctx, added.missing, steps).await?;
    Ok(added.ip)
}

/// The CNI ADD into the created task's network namespace; the walls' jumps are checked
/// meanwhile (they do not depend on it).
async fn add(
    ctx: &Context,
    id: &str,
    pid: u32,
    left: Left,
    steps: &mut Steps,
) -> Result<Added, crate::network::CniError> {
    let Some(cni) = &ctx.cni else {
        return Ok(Added {
            ip: None,
            missing: None,
        });
    };
    let netns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    // A DEL inside this namespace first when an earlier agent may have attached it (eth0 and
    // an address there would fail a second ADD); a task created in this pass has a new,
    // empty namespace, so its start skips that round trip.
    if left == Left::Maybe {
        let _ = cni.del(id, Some(&netns)).await;
    }
    let check = async {
        match &ctx.walls {
            Some(walls) => Some(walls.missing_jumps().await),
            None => None,
        }
    };
    let (ip, missing) = tokio::join!(cni.add(id, &netns), check);
    let ip = ip?;
    steps.mark("cni-add");
    Ok(Added {
        ip: Some(ip),
        missing,
    })
}

/// [`wall`] as the start's step `walls` (none without walls).
async fn wall_step(
    ctx: &Context,
    missing: Option<Vec<(&'static str, String)>>,
    steps: &mut Steps,
) -> Result<(), crate::network::CniError> {
    if ctx.walls.is_some() {
        wall(ctx, missing).await?;
        steps.mark("walls");
    }
    Ok(())
}

/// Applies the bridge's walls with the new instance in them (the jumps `missing` added).
/// The instance is reported Running only after, so its walls hold before it can be Ready.
async fn wall(
    ctx: &Context,
    missing: Option<Vec<(&'static str, String)>>,
) -> Result<(), crate::network::CniError> {
    let Some(walls) = &ctx.walls else {
        return Ok(());
    };
    walls
        .sync_checked(false, missing)
        .await
        .map_err(|e| crate::network::CniError::Plugin {
            plugin: "network walls".into(),
            command: "ADD",
            message: e.to_string(),
        })
}

/// An instance whose network could not be set up: removed and failed with the reason.
async fn network_failed(
    instance: &Instance,
    ctx: &Context,
    id: &str,
    e: crate::network::CniError,
) -> Result<Action, Error> {
    warn!(instance = %instance.name_any(), container = id, error = %e, "setting up the instance network failed");
    let uid = instance.uid().unwrap_or_default();
    super::stop::teardown(ctx, id, &uid, Duration::ZERO).await?;
    status::fail(ctx, instance, "NetworkSetupFailed", e.to_string()).await?;
    Ok(Action::await_change())
}

/// The reason an instance waiting to be restarted shows.
const CRASH_LOOP: &str = "CrashLoopBackOff";

/// Seconds left of the back-off after the last exit, if any.
fn backoff_remaining(s: &bulkhead_crds::InstanceStatus) -> Option<i64> {
    let finished = s.last_exit.as_ref()?.finished_at.as_ref()?.0.as_second();
    let until = finished + i64::from(s.restart_backoff_seconds?);
    let left = until - k8s_openapi::jiff::Timestamp::now().as_second();
    (left > 0).then_some(left)
}

/// Records how the task ended and applies the restart policy: either the instance ends
/// (Succeeded or Failed), or it waits out a back-off and is restarted. Returns the back-off
/// in seconds when it will be restarted.
async fn record_exit(
    instance: &Instance,
    ctx: &Context,
    id: &str,
    code: u32,
) -> Result<Option<i32>, Error> {
    let oom = oom_killed(id);
    let exit_code = code as i32;
    let signal = (exit_code > 128 && exit_code < 160).then_some(exit_code - 128);
    let reason = if oom {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let mut s = status::current(ctx, instance);
    let now = status::now();
    let ran_for = s
        .started_at
        .as_ref()
        .map_or(0, |t| now.0.as_second() - t.0.as_second());
    s.last_exit = Some(ExitStatus {
        exit_code,
        signal,
        oom_killed: oom,
        finished_at: Some(now),
        reason: Some(reason.into()),
    });
    let oom_note = if oom {
        " (killed by the OOM killer)"
    } else {
        ""
    };
    let generation = instance.metadata.generation;
    info!(instance = %instance.name_any(), container = id, exit_code, oom, "instance exited");
    if restart::should_restart(instance.spec.template.restart_policy, exit_code) {
        let backoff =
            restart::next_backoff(s.restart_backoff_seconds, ran_for, ctx.restart_backoff_base);
        s.restart_backoff_seconds = Some(backoff);
        let message = format!(
            "back-off {backoff}s restarting the instance after exit code {exit_code}{oom_note}"
        );
        status::set_condition(
            &mut s,
            types::READY,
            false,
            CRASH_LOOP,
            &message,
            generation,
        );
        status::phase(
            &mut s,
            InstancePhase::Starting,
            Some(CRASH_LOOP),
            Some(message),
        );
        status::write(ctx, instance, &s).await?;
        return Ok(Some(backoff));
    }
    let phase = if exit_code == 0 {
        InstancePhase::Succeeded
    } else {
        InstancePhase::Failed
    };
    let message = format!("process exited with code {exit_code}{oom_note}");
    status::ended(&mut s, phase, reason, message, generation);
    status::write(ctx, instance, &s).await?;
    Ok(None)
}

/// Whether the kernel's OOM killer struck in the container's cgroup (v1 or v2).
fn oom_killed(id: &str) -> bool {
    let candidates = [
        format!("/sys/fs/cgroup/memory/bulkhead/{id}/memory.oom_control"),
        format!("/sys/fs/cgroup/bulkhead/{id}/memory.events"),
    ];
    candidates.iter().any(|p| {
        std::fs::read_to_string(p).is_ok_and(|text| {
            text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}

/// Waits for the task to exit in the background and wakes the controller when it does.
fn supervise(instance: &Instance, ctx: &Arc<Context>, id: &str) {
    let Ok(mut supervised) = ctx.supervised.lock() else {
        return;
    };
    if !supervised.insert(id.to_string()) {
        return;
    }
    let ctx = ctx.clone();
    let id = id.to_string();
    let oref = ObjectRef::from_obj(instance);
    tokio::spawn(async move {
        let result = ctx.containerd.wait_task(&id).await;
        if let Err(e) = &result {
            warn!(container = %id, error = %e, "waiting for task failed");
        }
        if let Ok(mut s) = ctx.supervised.lock() {
            s.remove(&id);
        }
        let _ = ctx.wake.unbounded_send(oref);
    });
}

/// The rootfs's mount label: the instance's, where SELinux is on (as the spec's mountLabel).
fn rootfs_label(ctx: &Context, mcs: Option<McsPair>) -> Option<String> {
    mcs.filter(|_| ctx.features.selinux != SELinuxHostMode::Disabled)
        .map(spec::mount_label)
}

/// The MCS pair of a container, from its labels (used when rebuilding allocators).
pub fn mcs_of(container_labels: &HashMap<String, String>) -> Option<McsPair> {
    container_labels
        .get(labels::MCS)
        .and_then(|l| l.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_floor_refuses_what_it_does_not_allow_naming_each_field() {
        let mut iso = Isolation::default();
        assert_eq!(below_floor(&iso, IsolationLevel::Strict), None);
        iso.user_namespace = false;
        iso.read_only_root_filesystem = false;
        let m = below_floor(&iso, IsolationLevel::Baseline).expect("refused");
        assert!(m.contains("isolation level baseline"), "{m}");
        assert!(
            m.contains("spec.isolation.userNamespace: false needs privileged"),
            "{m}"
        );
        assert!(
            !m.contains("readOnlyRootFilesystem"),
            "baseline allows it: {m}"
        );
        assert_eq!(below_floor(&iso, IsolationLevel::Privileged), None);
    }
}
