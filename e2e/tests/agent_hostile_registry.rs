//! A hostile registry cannot exhaust the agent: a registry on 127.0.0.x that streams
//! gigabytes, sends a layer larger than its descriptor, redirects elsewhere, serves other
//! content for a sha512 pin or names what the agent must not take fails only the instance that asked it, with a reason; the agent's
//! memory stays bounded, its Lease keeps being renewed and a neighbour keeps running.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bulkhead_crds::{Host, Instance, InstancePhase, conditions};
use bulkhead_e2e::{
    TestNamespace,
    agent::{Agent, registry, unique_host},
    fixtures::{instance, wait_for_phase},
};
use bulkhead_node_agent::image::{digest::Algorithm, registry::sha256_digest};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const START: Duration = Duration::from_secs(120);
/// What a hostile body would be if the agent read it all.
const HOSTILE_BYTES: u64 = 2 << 30;
/// The agent's peak RSS must stay under this while it refuses eleven hostile pulls at once,
/// three of them 2 GiB bodies. Measured: 37-40 MiB (VmHWM, debug build, local system);
/// the bound is generous so that it says "bounded", not "lean" (any hostile body read whole
/// would put the agent past 2 GiB).
const RSS_BOUND_KIB: u64 = 256 * 1024;
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// What one route answers.
#[derive(Clone)]
enum Reply {
    /// A body with its content type.
    Body(&'static str, Vec<u8>),
    /// 2 GiB of zeros, streamed without a length until the client hangs up.
    Endless,
    /// A redirect.
    Redirect(String),
    /// A header announcing this many bytes, then a few bytes and a hang-up.
    Announced(u64),
}

/// A tiny HTTP/1.1 registry: exact paths to replies, one request per connection. It counts
/// the bytes it managed to send per path, to show that the agent hung up early.
#[derive(Clone, Default)]
struct Server {
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    sent: Arc<Mutex<HashMap<String, u64>>>,
    connections: Arc<AtomicUsize>,
}

impl Server {
    async fn start(ip: &str) -> (Self, SocketAddr) {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::default();
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(s.clone().serve(conn));
            }
        });
        (server, addr)
    }

    fn route(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_string(), reply);
    }

    fn sent(&self, path: &str) -> u64 {
        self.sent.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    async fn serve(self, mut conn: TcpStream) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let path = head.split(' ').nth(1).unwrap_or_default().to_string();
        let reply = self.routes.lock().unwrap().get(&path).cloned();
        let sent = Arc::new(AtomicU64::new(0));
        let _ = match reply {
            None => {
                conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await
            }
            Some(Reply::Body(media_type, body)) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {media_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                conn.write_all(head.as_bytes()).await.unwrap_or(());
                conn.write_all(&body).await
            }
            Some(Reply::Redirect(to)) => {
                let head = format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                conn.write_all(head.as_bytes()).await
            }
            Some(Reply::Endless) => endless(&mut conn, &sent).await,
            Some(Reply::Announced(length)) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {MANIFEST_TYPE}\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n{{}}"
                );
                conn.write_all(head.as_bytes()).await
            }
        };
        *self.sent.lock().unwrap().entry(path).or_default() += sent.load(Ordering::SeqCst);
    }
}

/// Streams up to [`HOSTILE_BYTES`] with no length, stopping when the client hangs up.
async fn endless(conn: &mut TcpStream, sent: &AtomicU64) -> std::io::Result<()> {
    let head =
        format!("HTTP/1.1 200 OK\r\ncontent-type: {MANIFEST_TYPE}\r\nconnection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await?;
    let chunk = vec![b' '; 64 << 10];
    while sent.load(Ordering::SeqCst) < HOSTILE_BYTES {
        conn.write_all(&chunk).await?;
        sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    Ok(())
}

fn digest_of(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn manifest(config: &str, config_size: usize, layer: &str, layer_size: u64) -> Vec<u8> {
    manifest_of(config, config_size, &[layer], layer_size)
}

fn manifest_of(config: &str, config_size: usize, layers: &[&str], layer_size: u64) -> Vec<u8> {
    let layers: Vec<_> = layers
        .iter()
        .map(|d| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": d, "size": layer_size})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config, "size": config_size},
        "layers": layers,
    }))
    .unwrap()
}

/// More hostile images, each refused before anything large is fetched or followed.
fn refused_early(server: &Server, at: SocketAddr) -> Vec<Case> {
    // 6. A manifest announcing 3 GiB in its Content-Length.
    server.route("/v2/announced/manifests/v1", Reply::Announced(3 << 30));
    // 7. An index naming a 1 TiB manifest for this platform.
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": MANIFEST_TYPE, "digest": digest_of('a'), "size": 1u64 << 40,
            "platform": {"os": "linux", "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64")}}],
    }))
    .unwrap();
    server.route(
        "/v2/huge-child/manifests/v1",
        Reply::Body("application/vnd.oci.image.index.v1+json", index),
    );
    // 8. A manifest with 1000 layers.
    let layers = vec![digest_of('b'); 1000];
    let layers: Vec<&str> = layers.iter().map(String::as_str).collect();
    server.route(
        "/v2/many-layers/manifests/v1",
        Reply::Body(MANIFEST_TYPE, manifest_of(&digest_of('c'), 10, &layers, 10)),
    );
    // 9. A config whose diff ID is not a digest (it would name a snapshot).
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["x"]}}"#;
    let config_digest = sha256_digest(config);
    server.route(
        "/v2/bad-diff-id/manifests/v1",
        Reply::Body(
            MANIFEST_TYPE,
            manifest(&config_digest, config.len(), &digest_of('e'), 10),
        ),
    );
    server.route(
        &format!("/v2/bad-diff-id/blobs/{config_digest}"),
        Reply::Body("application/octet-stream", config.to_vec()),
    );
    // 10. A layer digest in an algorithm the agent does not verify.
    let sha384 = format!("sha384:{}", "0".repeat(96));
    server.route(
        "/v2/sha384-layer/manifests/v1",
        Reply::Body(MANIFEST_TYPE, manifest(&digest_of('c'), 10, &sha384, 10)),
    );
    // 11. A redirect to itself, forever.
    server.route(
        "/v2/loop/manifests/v1",
        Reply::Redirect("/v2/loop/manifests/v1".into()),
    );
    vec![
        Case::new(
            "loop",
            format!("{at}/loop:v1"),
            "RegistryRedirectLoop",
            "more than 5 times",
        ),
        Case::new(
            "announced",
            format!("{at}/announced:v1"),
            "ImageTooLarge",
            "4194304 bytes",
        ),
        Case::new(
            "huge-child",
            format!("{at}/huge-child:v1"),
            "ImageTooLarge",
            &digest_of('a'),
        ),
        Case::new(
            "many-layers",
            format!("{at}/many-layers:v1"),
            "InvalidImage",
            "1000 layers",
        ),
        Case::new(
            "bad-diff-id",
            format!("{at}/bad-diff-id:v1"),
            "InvalidImage",
            "diff ID \"x\"",
        ),
        Case::new(
            "sha384-layer",
            format!("{at}/sha384-layer:v1"),
            "UnsupportedDigest",
            "sha384:",
        ),
    ]
}

/// The hostile images and the reason each must fail with, on a registry at `at` that
/// redirects to `elsewhere`.
fn hostile_images(server: &Server, at: SocketAddr, elsewhere: SocketAddr) -> Vec<Case> {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest_of('d')]},
    }))
    .unwrap();
    let config_digest = sha256_digest(&config);
    let blob = |repo: &str, d: &str| format!("/v2/{repo}/blobs/{d}");

    // 1. A 2 GiB manifest.
    server.route("/v2/huge-manifest/manifests/v1", Reply::Endless);
    // 2. A config blob that never ends, whatever its descriptor says.
    server.route(
        "/v2/huge-config/manifests/v1",
        Reply::Body(
            MANIFEST_TYPE,
            manifest(&digest_of('c'), 1000, &digest_of('e'), 10),
        ),
    );
    server.route(&blob("huge-config", &digest_of('c')), Reply::Endless);
    // 3. A layer larger than its descriptor (1 KiB declared, 2 GiB sent).
    server.route(
        "/v2/big-layer/manifests/v1",
        Reply::Body(
            MANIFEST_TYPE,
            manifest(&config_digest, config.len(), &digest_of('f'), 1024),
        ),
    );
    server.route(
        &blob("big-layer", &config_digest),
        Reply::Body("application/octet-stream", config),
    );
    server.route(&blob("big-layer", &digest_of('f')), Reply::Endless);
    // 4. A redirect to another host.
    server.route(
        "/v2/redirect/manifests/v1",
        Reply::Redirect(format!("http://{elsewhere}/v2/redirect/manifests/v1")),
    );
    // 5. A sha512 pin, answered with a different (valid) manifest.
    let meant = Algorithm::Sha512.digest(b"the manifest the pin names");
    let other = manifest(&digest_of('c'), 1000, &digest_of('e'), 10);
    server.route(
        &format!("/v2/pinned/manifests/{meant}"),
        Reply::Body(MANIFEST_TYPE, other),
    );
    vec![
        Case::new(
            "huge-manifest",
            format!("{at}/huge-manifest:v1"),
            "ImageTooLarge",
            "4194304 bytes",
        ),
        Case::new(
            "huge-config",
            format!("{at}/huge-config:v1"),
            "ImageTooLarge",
            "config blob",
        ),
        Case::new(
            "big-layer",
            format!("{at}/big-layer:v1"),
            "ImageTooLarge",
            "(1024 bytes by its descriptor)",
        ),
        Case::new(
            "redirect",
            format!("{at}/redirect:v1"),
            "RegistryRedirectRefused",
            &elsewhere.to_string(),
        ),
        Case::new(
            "pinned",
            format!("{at}/pinned@{meant}"),
            "ImageDigestMismatch",
            "got sha512:",
        ),
    ]
}

struct Case {
    name: &'static str,
    image: String,
    reason: &'static str,
    says: String,
}

impl Case {
    fn new(name: &'static str, image: String, reason: &'static str, says: &str) -> Self {
        Case {
            name,
            image,
            reason,
            says: says.to_string(),
        }
    }
}

/// The agent's process: our child whose command line names its host.
fn agent_pid(agent: &Agent) -> u32 {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let parent = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().nth(1));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            parent == Some(me.as_str())
                && String::from_utf8_lossy(&cmdline).contains(&format!("\0{}\0", agent.host))
        })
        .unwrap_or_else(|| panic!("no agent process for {}", agent.host))
}

/// A field of /proc/<pid>/status in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

async fn renew_time(leases: &Api<Lease>, host: &str) -> Option<k8s_openapi::jiff::Timestamp> {
    leases.get(host).await.ok()?.spec?.renew_time.map(|t| t.0)
}

#[tokio::test]
async fn a_hostile_registry_fails_only_its_instances_and_the_agent_stays_bounded_and_alive() {
    let third = 100 + std::process::id() % 50;
    let (server, at) = Server::start(&format!("127.0.0.{third}")).await;
    let (elsewhere, elsewhere_at) = Server::start(&format!("127.0.0.{}", third + 50)).await;
    let mut cases = hostile_images(&server, at, elsewhere_at);
    cases.extend(refused_early(&server, at));

    let allowed = format!("{},{at}", registry());
    let agent = Agent::start(&unique_host("hostile"), &["--allowed-registries", &allowed]);
    let ns = TestNamespace::new("hostile").await;
    let client = bulkhead_e2e::client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), bulkhead_crds::SYSTEM_NAMESPACE);
    instance("good").on(&agent.host).create(&ns).await;
    wait_for_phase(&ns, "good", InstancePhase::Running, START).await;
    let pid = agent_pid(&agent);
    let renewed_before = renew_time(&leases, &agent.host)
        .await
        .expect("the agent's Lease");

    for case in &cases {
        instance(case.name)
            .on(&agent.host)
            .image(&case.image)
            .create(&ns)
            .await;
    }
    let api: Api<Instance> = ns.api();
    for case in &cases {
        let status = bulkhead_e2e::poll_until(START, || {
            let api = api.clone();
            async move {
                let s = api.get(case.name).await.ok()?.status?;
                (s.phase == Some(InstancePhase::Failed)).then_some(s)
            }
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "{} never failed; agent log:\n{}",
                case.name,
                agent.log_tail()
            )
        });
        let message = status.message.unwrap_or_default();
        assert_eq!(
            status.reason.as_deref(),
            Some(case.reason),
            "{}: {message}",
            case.name
        );
        assert!(message.contains(&case.says), "{}: {message}", case.name);
    }

    // Nothing reached the other host, and no hostile body was read anywhere near whole
    // (what was sent includes what sat in socket buffers when the agent hung up).
    assert_eq!(
        elsewhere.connections.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    for path in [
        "/v2/huge-manifest/manifests/v1".to_string(),
        format!("/v2/huge-config/blobs/{}", digest_of('c')),
        format!("/v2/big-layer/blobs/{}", digest_of('f')),
    ] {
        let sent = server.sent(&path);
        eprintln!("{path}: {} KiB sent before the agent hung up", sent >> 10);
        assert!(
            sent < 256 << 20,
            "{path}: {sent} bytes sent, the agent kept reading"
        );
    }

    // The agent is the same process, its memory bounded, its Lease renewed, its Host Ready,
    // and the neighbour still running.
    assert_eq!(agent_pid(&agent), pid, "the agent restarted");
    let peak = status_kib(pid, "VmHWM:");
    eprintln!("agent peak RSS (VmHWM): {} MiB", peak >> 10);
    assert!(peak < RSS_BOUND_KIB, "agent peak RSS {peak} KiB");
    let renewed = bulkhead_e2e::poll_until(Duration::from_secs(30), || async {
        renew_time(&leases, &agent.host)
            .await
            .filter(|t| *t > renewed_before)
    })
    .await;
    assert!(
        renewed.is_some(),
        "the Lease of {} was not renewed",
        agent.host
    );
    let hosts: Api<Host> = Api::all(client);
    let host = hosts.get(&agent.host).await.unwrap();
    assert!(conditions::is_true(
        &host.status.unwrap().conditions,
        conditions::types::READY
    ));
    let good = api.get("good").await.unwrap().status.unwrap();
    assert_eq!(
        good.phase,
        Some(InstancePhase::Running),
        "{:?}",
        good.message
    );
    ns.delete().await;
    let _ = hosts.delete(&agent.host, &Default::default()).await;
}
