//! A thin, namespaced client over containerd's gRPC services.
//!
//! Every call carries the `containerd-namespace` header (and the `containerd-lease` header
//! where a lease protects what is being written), so the agent's objects never mix with
//! those of other containerd users on the host.

use std::{collections::HashMap, path::Path};

use containerd_client::{
    services::v1::{
        self as svc, Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
        DeleteTaskRequest, GetContainerRequest, GetRequest, KillRequest, ListContainersRequest,
        StartRequest, WaitRequest, WriteAction, WriteContentRequest,
        container::Runtime,
        snapshots::{
            CommitSnapshotRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
            StatSnapshotRequest,
        },
    },
    tonic::{Code, Request, Status, transport::Channel},
    types::{Descriptor, Mount, v1::Status as ProcessStatus},
};
use futures::{SinkExt, StreamExt, channel::mpsc};

/// The snapshotter every image and container uses.
pub const SNAPSHOTTER: &str = "overlayfs";
/// containerd's runc shim.
pub const RUNTIME: &str = "io.containerd.runc.v2";
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// A containerd error, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("containerd {op} {object}: {status}", status = .source.message())]
pub struct ContainerdError {
    /// The operation, e.g. "create task".
    pub op: &'static str,
    /// The object it was about.
    pub object: String,
    /// containerd's answer.
    #[source]
    pub source: Status,
}

impl ContainerdError {
    /// Whether containerd said the object already exists.
    pub fn is_already_exists(&self) -> bool {
        self.source.code() == Code::AlreadyExists
    }
}

type Result<T> = std::result::Result<T, ContainerdError>;

fn err(op: &'static str, object: impl Into<String>) -> impl FnOnce(Status) -> ContainerdError {
    let object = object.into();
    move |source| ContainerdError { op, object, source }
}

/// The state of a task as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Created but not started (an interrupted start), with its init PID.
    Created(u32),
    /// Running, with the host PID of its init process.
    Running(u32),
    /// Exited with this status.
    Stopped(u32),
    /// Paused or in a state containerd does not name.
    Other,
}

/// A namespaced containerd client.
#[derive(Clone, Debug)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
}

impl Containerd {
    /// Connects to containerd's socket.
    pub async fn connect(socket: &Path, namespace: &str) -> anyhow::Result<Self> {
        let channel = containerd_client::connect(socket).await.map_err(|e| {
            anyhow::anyhow!("cannot connect to containerd at {}: {e}", socket.display())
        })?;
        Ok(Self {
            channel,
            namespace: namespace.to_string(),
        })
    }

    /// The containerd namespace this client works in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        self.leased(msg, None)
    }

    fn leased<T>(&self, msg: T, lease: Option<&str>) -> Request<T> {
        let mut req = Request::new(msg);
        let md = req.metadata_mut();
        if let Ok(ns) = self.namespace.parse() {
            md.insert("containerd-namespace", ns);
        }
        if let Some(lease) = lease.and_then(|l| l.parse().ok()) {
            md.insert("containerd-lease", lease);
        }
        req
    }

    /// containerd's version.
    pub async fn version(&self) -> Result<String> {
        let mut c = svc::version_client::VersionClient::new(self.channel.clone());
        let v = c
            .version(())
            .await
            .map_err(err("get", "version"))?
            .into_inner();
        Ok(v.version)
    }

    // ----- leases ------------------------------------------------------------------------

    /// Creates a lease that protects content and snapshots written under it from garbage
    /// collection; it expires on its own after `expire_secs` should the agent die.
    pub async fn create_lease(&self, id: &str, expire_secs: u64) -> Result<()> {
        let mut c = svc::leases_client::LeasesClient::new(self.channel.clone());
        let expire = chrono_like_rfc3339(expire_secs);
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), expire)]);
        c.create(self.req(svc::CreateRequest {
            id: id.into(),
            labels,
        }))
        .await
        .map_err(err("create lease", id))?;
        Ok(())
    }

    /// Deletes a lease; with `sync`, garbage collection runs before this returns, so that
    /// whatever only the lease held is gone.
    pub async fn delete_lease(&self, id: &str, sync: bool) -> Result<()> {
        let mut c = svc::leases_client::LeasesClient::new(self.channel.clone());
        match c
            .delete(self.req(svc::DeleteRequest {
                id: id.into(),
                sync,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(err("delete lease", id)(s)),
        }
    }

    /// Ids of the leases in the namespace.
    pub async fn list_leases(&self) -> Result<Vec<String>> {
        let mut c = svc::leases_client::LeasesClient::new(self.channel.clone());
        let list = c
            .list(self.req(svc::ListRequest { filters: vec![] }))
            .await
            .map_err(err("list", "leases"))?
            .into_inner();
        Ok(list.leases.into_iter().map(|l| l.id).collect())
    }

    // ----- content -----------------------------------------------------------------------

    /// Whether the content store holds `digest`.
    pub async fn content_exists(&self, digest: &str) -> Result<bool> {
        let mut c = svc::content_client::ContentClient::new(self.channel.clone());
        match c
            .info(self.req(svc::InfoRequest {
                digest: digest.into(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(err("stat content", digest)(s)),
        }
    }

    /// Reads a whole blob (manifests and configs; not for layers).
    pub async fn read_content(&self, digest: &str) -> Result<Vec<u8>> {
        let mut c = svc::content_client::ContentClient::new(self.channel.clone());
        let mut stream = c
            .read(self.req(svc::ReadContentRequest {
                digest: digest.into(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(err("read content", digest))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend(chunk.map_err(err("read content", digest))?.data);
        }
        Ok(out)
    }

    /// Writes a blob under `lease`, committing it only if it has exactly `size` bytes and
    /// the digest `digest`: containerd refuses anything else, so a corrupted or substituted
    /// blob never enters the store. `chunks` yields the data.
    pub async fn write_content<S, E>(
        &self,
        lease: &str,
        digest: &str,
        size: i64,
        labels: HashMap<String, String>,
        mut chunks: S,
    ) -> std::result::Result<(), WriteError<E>>
    where
        S: futures::Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
    {
        let reference = format!("bulkhead-{digest}");
        let (mut tx, rx) = mpsc::channel::<WriteContentRequest>(4);
        let mut c = svc::content_client::ContentClient::new(self.channel.clone());
        // The first message is queued before the call so the server answers at once.
        let first = WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: reference.clone(),
            total: size,
            expected: digest.into(),
            offset: 0,
            ..Default::default()
        };
        tx.send(first).await.map_err(|_| WriteError::Closed)?;
        let mut responses = c
            .write(self.leased(rx, Some(lease)))
            .await
            .map_err(|s| WriteError::Containerd(err("write content", digest)(s)))?
            .into_inner();
        let mut next_response = async || -> std::result::Result<(), WriteError<E>> {
            match responses.next().await {
                Some(Ok(_)) => Ok(()),
                Some(Err(s)) => Err(WriteError::Containerd(err("write content", digest)(s))),
                None => Err(WriteError::Closed),
            }
        };
        next_response().await?;
        let mut offset = 0i64;
        while let Some(chunk) = chunks.next().await {
            let data = chunk.map_err(WriteError::Source)?;
            let len = data.len() as i64;
            let msg = WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                offset,
                data: data.to_vec(),
                ..Default::default()
            };
            tx.send(msg).await.map_err(|_| WriteError::Closed)?;
            next_response().await?;
            offset += len;
        }
        let commit = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference.clone(),
            total: size,
            expected: digest.into(),
            offset,
            labels,
            ..Default::default()
        };
        tx.send(commit).await.map_err(|_| WriteError::Closed)?;
        let committed = next_response().await;
        drop(tx);
        if committed.is_err() {
            self.abort_write(&reference).await;
        }
        committed
    }

    async fn abort_write(&self, reference: &str) {
        let mut c = svc::content_client::ContentClient::new(self.channel.clone());
        let _ = c
            .abort(self.req(svc::AbortRequest {
                r#ref: reference.into(),
            }))
            .await;
    }

    // ----- images ------------------------------------------------------------------------

    /// Records `name` → `target` in containerd's image store (create or update). The image
    /// record is the garbage-collection root that keeps the manifest, config and layers.
    pub async fn put_image(&self, name: &str, target: Descriptor) -> Result<()> {
        let mut c = svc::images_client::ImagesClient::new(self.channel.clone());
        let image = svc::Image {
            name: name.into(),
            target: Some(target),
            ..Default::default()
        };
        match c
            .create(self.req(svc::CreateImageRequest {
                image: Some(image.clone()),
                ..Default::default()
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                c.update(self.req(svc::UpdateImageRequest {
                    image: Some(image),
                    ..Default::default()
                }))
                .await
                .map_err(err("update image", name))?;
                Ok(())
            }
            Err(s) => Err(err("create image", name)(s)),
        }
    }

    /// The target of an image record, if it exists.
    pub async fn get_image(&self, name: &str) -> Result<Option<Descriptor>> {
        let mut c = svc::images_client::ImagesClient::new(self.channel.clone());
        match c
            .get(self.req(svc::GetImageRequest { name: name.into() }))
            .await
        {
            Ok(r) => Ok(r.into_inner().image.and_then(|i| i.target)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(err("get image", name)(s)),
        }
    }

    /// Every image record in the namespace: (name, target).
    pub async fn list_images(&self) -> Result<Vec<(String, Descriptor)>> {
        let mut c = svc::images_client::ImagesClient::new(self.channel.clone());
        let r = c
            .list(self.req(svc::ListImagesRequest::default()))
            .await
            .map_err(err("list images", ""))?;
        Ok(r.into_inner()
            .images
            .into_iter()
            .filter_map(|i| Some((i.name, i.target?)))
            .collect())
    }

    /// Deletes an image record and, with `sync`, waits for containerd's garbage collection
    /// to remove the content and snapshots nothing else references. A missing image is fine.
    pub async fn delete_image(&self, name: &str, sync: bool) -> Result<()> {
        let mut c = svc::images_client::ImagesClient::new(self.channel.clone());
        match c
            .delete(self.req(svc::DeleteImageRequest {
                name: name.into(),
                sync,
                ..Default::default()
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(err("delete image", name)(s)),
        }
    }

    // ----- snapshots and diff ----------------------------------------------------------

    /// Whether a committed snapshot exists.
    pub async fn snapshot_exists(&self, key: &str) -> Result<bool> {
        let mut c = self.snapshots();
        match c
            .stat(self.req(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(err("stat snapshot", key)(s)),
        }
    }

    fn snapshots(&self) -> svc::snapshots::snapshots_client::SnapshotsClient<Channel> {
        svc::snapshots::snapshots_client::SnapshotsClient::new(self.channel.clone())
    }

    /// Prepares an active (writable) snapshot on top of `parent`.
    pub async fn prepare_snapshot(
        &self,
        lease: Option<&str>,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let req = PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
            parent: parent.into(),
            labels,
        };
        let r = self
            .snapshots()
            .prepare(self.leased(req, lease))
            .await
            .map_err(err("prepare snapshot", key))?;
        Ok(r.into_inner().mounts)
    }

    /// The mounts of an existing snapshot.
    pub async fn snapshot_mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let req = MountsRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
        };
        let r = self
            .snapshots()
            .mounts(self.req(req))
            .await
            .map_err(err("snapshot mounts", key))?;
        Ok(r.into_inner().mounts)
    }

    /// Commits an active snapshot under `name`.
    pub async fn commit_snapshot(
        &self,
        lease: Option<&str>,
        name: &str,
        key: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let req = CommitSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            name: name.into(),
            key: key.into(),
            labels,
        };
        self.snapshots()
            .commit(self.leased(req, lease))
            .await
            .map_err(err("commit snapshot", name))?;
        Ok(())
    }

    /// Removes a snapshot; a missing one is not an error.
    pub async fn remove_snapshot(&self, key: &str) -> Result<()> {
        let req = RemoveSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: key.into(),
        };
        match self.snapshots().remove(self.req(req)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(err("remove snapshot", key)(s)),
        }
    }

    /// Keys of every snapshot of the agent's snapshotter in the namespace.
    pub async fn list_snapshots(&self) -> Result<Vec<String>> {
        let req = svc::snapshots::ListSnapshotsRequest {
            snapshotter: SNAPSHOTTER.into(),
            filters: vec![],
        };
        let mut stream = self
            .snapshots()
            .list(self.req(req))
            .await
            .map_err(err("list", "snapshots"))?
            .into_inner();
        let mut keys = Vec::new();
        while let Some(page) = stream.next().await {
            keys.extend(
                page.map_err(err("list", "snapshots"))?
                    .info
                    .into_iter()
                    .map(|i| i.name),
            );
        }
        Ok(keys)
    }

    /// Applies a layer blob from the content store onto `mounts`; returns the digest of the
    /// uncompressed layer (its diff ID).
    pub async fn apply_layer(&self, layer: Descriptor, mounts: Vec<Mount>) -> Result<String> {
        let digest = layer.digest.clone();
        let mut c = svc::diff_client::DiffClient::new(self.channel.clone());
        let r = c
            .apply(self.req(svc::ApplyRequest {
                diff: Some(layer),
                mounts,
                ..Default::default()
            }))
            .await
            .map_err(err("apply layer", digest))?;
        Ok(r.into_inner().applied.map(|d| d.digest).unwrap_or_default())
    }

    // ----- containers and tasks ---------------------------------------------------------

    /// Creates a container record with its runtime spec and labels.
    pub async fn create_container(
        &self,
        id: &str,
        image: &str,
        snapshot_key: &str,
        spec_json: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let container = Container {
            id: id.into(),
            image: image.into(),
            labels,
            runtime: Some(Runtime {
                name: RUNTIME.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.into(),
                value: spec_json,
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: snapshot_key.into(),
            ..Default::default()
        };
        svc::containers_client::ContainersClient::new(self.channel.clone())
            .create(self.req(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(err("create container", id))?;
        Ok(())
    }

    /// A container record, if it exists.
    pub async fn get_container(&self, id: &str) -> Result<Option<Container>> {
        match svc::containers_client::ContainersClient::new(self.channel.clone())
            .get(self.req(GetContainerRequest { id: id.into() }))
            .await
        {
            Ok(r) => Ok(r.into_inner().container),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(err("get container", id)(s)),
        }
    }

    /// Every container in the namespace whose labels match the filter
    /// (containerd filter syntax, e.g. `labels."bulkhead.dev/instance-uid"`).
    pub async fn list_containers(&self, filter: Option<&str>) -> Result<Vec<Container>> {
        let filters = filter.map(|f| vec![f.to_string()]).unwrap_or_default();
        let r = svc::containers_client::ContainersClient::new(self.channel.clone())
            .list(self.req(ListContainersRequest { filters }))
            .await
            .map_err(err("list", "containers"))?;
        Ok(r.into_inner().containers)
    }

    /// Sets one label of a container record.
    pub async fn set_label(&self, id: &str, key: &str, value: &str) -> Result<()> {
        let container = Container {
            id: id.into(),
            labels: HashMap::from([(key.to_string(), value.to_string())]),
            ..Default::default()
        };
        let req = svc::UpdateContainerRequest {
            container: Some(container),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![format!("labels.{key}")],
            }),
        };
        svc::containers_client::ContainersClient::new(self.channel.clone())
            .update(self.req(req))
            .await
            .map_err(err("label container", id))?;
        Ok(())
    }

    /// Deletes a container record; a missing one is not an error.
    pub async fn delete_container(&self, id: &str) -> Result<()> {
        match svc::containers_client::ContainersClient::new(self.channel.clone())
            .delete(self.req(DeleteContainerRequest { id: id.into() }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(err("delete container", id)(s)),
        }
    }

    fn tasks(&self) -> svc::tasks_client::TasksClient<Channel> {
        svc::tasks_client::TasksClient::new(self.channel.clone())
    }

    /// Creates the task (the shim and the runc container, not yet running) with stdout and
    /// stderr sent to the log URI `log` (`file://` or `binary://`). Returns the init PID.
    pub async fn create_task(&self, id: &str, rootfs: Vec<Mount>, log: &str) -> Result<u32> {
        let req = CreateTaskRequest {
            container_id: id.into(),
            rootfs,
            stdout: log.to_string(),
            stderr: log.to_string(),
            ..Default::default()
        };
        let r = self
            .tasks()
            .create(self.req(req))
            .await
            .map_err(err("create task", id))?;
        Ok(r.into_inner().pid)
    }

    /// Starts a created task.
    pub async fn start_task(&self, id: &str) -> Result<u32> {
        let r = self
            .tasks()
            .start(self.req(StartRequest {
                container_id: id.into(),
                ..Default::default()
            }))
            .await
            .map_err(err("start task", id))?;
        Ok(r.into_inner().pid)
    }

    /// The task's state, or None when there is no task.
    pub async fn task_state(&self, id: &str) -> Result<Option<TaskState>> {
        match self
            .tasks()
            .get(self.req(GetRequest {
                container_id: id.into(),
                ..Default::default()
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process.map(|p| {
                match ProcessStatus::try_from(p.status).unwrap_or(ProcessStatus::Unknown) {
                    ProcessStatus::Created => TaskState::Created(p.pid),
                    ProcessStatus::Running => TaskState::Running(p.pid),
                    ProcessStatus::Stopped => TaskState::Stopped(p.exit_status),
                    _ => TaskState::Other,
                }
            })),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(err("get task", id)(s)),
        }
    }

    /// Sends a signal to every process of the task.
    pub async fn kill_task(&self, id: &str, signal: u32) -> Result<()> {
        let req = KillRequest {
            container_id: id.into(),
            signal,
            all: true,
            ..Default::default()
        };
        match self.tasks().kill(self.req(req)).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(err("kill task", id)(s)),
        }
    }

    /// Waits until the task's init process exits; returns its exit status.
    pub async fn wait_task(&self, id: &str) -> Result<(u32, Option<prost_types::Timestamp>)> {
        let r = self
            .tasks()
            .wait(self.req(WaitRequest {
                container_id: id.into(),
                ..Default::default()
            }))
            .await
            .map_err(err("wait task", id))?
            .into_inner();
        Ok((r.exit_status, r.exited_at))
    }

    /// Runs `args` inside a running container with the container's own process settings
    /// (user, capabilities, seccomp, no_new_privs) and no I/O; returns its exit status, or
    /// None when it did not finish within `timeout` (it is killed then).
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        args: &[String],
        timeout: std::time::Duration,
    ) -> Result<Option<u32>> {
        let container = self
            .get_container(id)
            .await?
            .ok_or_else(|| ContainerdError {
                op: "exec in",
                object: id.into(),
                source: Status::not_found("no such container"),
            })?;
        let spec: serde_json::Value = container
            .spec
            .as_ref()
            .and_then(|a| serde_json::from_slice(&a.value).ok())
            .unwrap_or_default();
        let mut process = spec["process"].clone();
        process["args"] = serde_json::json!(args);
        process["terminal"] = serde_json::json!(false);
        let any = prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: serde_json::to_vec(&process).unwrap_or_default(),
        };
        let req = svc::ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            spec: Some(any),
            ..Default::default()
        };
        self.tasks()
            .exec(self.req(req))
            .await
            .map_err(err("exec in", id))?;
        let start = StartRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        };
        let outcome = match self.tasks().start(self.req(start)).await {
            Err(s) => Err(err("start exec in", id)(s)),
            Ok(_) => {
                let wait = WaitRequest {
                    container_id: id.into(),
                    exec_id: exec_id.into(),
                };
                match tokio::time::timeout(timeout, self.tasks().wait(self.req(wait))).await {
                    Ok(Ok(r)) => Ok(Some(r.into_inner().exit_status)),
                    Ok(Err(s)) => Err(err("wait exec in", id)(s)),
                    Err(_) => {
                        let kill = KillRequest {
                            container_id: id.into(),
                            exec_id: exec_id.into(),
                            signal: 9,
                            all: false,
                        };
                        let _ = self.tasks().kill(self.req(kill)).await;
                        Ok(None)
                    }
                }
            }
        };
        let del = svc::DeleteProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
        };
        let _ = self.tasks().delete_process(self.req(del)).await;
        outcome
    }

    /// Deletes a stopped task; a missing one is not an error.
    pub async fn delete_task(&self, id: &str) -> Result<()> {
        match self
            .tasks()
            .delete(self.req(DeleteTaskRequest {
                container_id: id.into(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(err("delete task", id)(s)),
        }
    }
}

/// A content write that failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    /// containerd refused it (for a digest or size mismatch: FailedPrecondition or
    /// InvalidArgument).
    #[error(transparent)]
    Containerd(ContainerdError),
    /// The data source failed.
    #[error("reading the blob failed: {0}")]
    Source(E),
    /// The write stream closed early.
    #[error("containerd closed the content write stream")]
    Closed,
}

/// RFC 3339 time `secs` from now, for lease expiry labels.
fn chrono_like_rfc3339(secs: u64) -> String {
    let at = k8s_openapi::jiff::Timestamp::now()
        + k8s_openapi::jiff::SignedDuration::from_secs(secs as i64);
    at.to_string()
}
