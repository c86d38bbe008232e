//! A client of a WorkloadService that sends one HTTP GET every 20 ms, either through the
//! Service's ClusterIP (kube-proxy's datapath, as users' clients do: [`Poller::cluster_ip`]) or
//! to the next endpoint the Service's EndpointSlice lists ([`Poller::start`]).
//!
//! Every answer is recorded, so a test can assert that no request failed and that the answer
//! changed from one revision to the next exactly once. Bounded: it stops when asked, or after
//! `MAX_RUN` at the latest.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{Api, Client, runtime::watcher};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The polling period.
pub const PERIOD: Duration = Duration::from_millis(20);
/// A request answered later than this is slow: a rollout test counts it as a stall. (Two full
/// suites once saw a 1.3 to 1.5 s answer right after a signed push: the test body's
/// synchronous `cosign` call had blocked the runtime the requests ran on. They run on their
/// own thread now; see [`Poller`].)
pub const SLOW: Duration = Duration::from_secs(1);
/// A request not answered within this failed: long enough for a lost SYN to be sent again
/// after TCP's 1 s and answered, as any TCP client waits; an endpoint that is gone never answers.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// The longest a poller runs.
pub const MAX_RUN: Duration = Duration::from_secs(600);

/// One request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Since the poller started.
    pub at: Duration,
    /// The endpoint asked.
    pub endpoint: String,
    /// The body (trimmed), or why the request failed.
    pub answer: Result<String, String>,
    /// How long it took.
    pub took: Duration,
}

/// What a poller saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Every request in order.
    pub samples: Vec<Sample>,
}

impl Report {
    /// Requests that got an answer.
    pub fn served(&self) -> usize {
        self.samples.iter().filter(|s| s.answer.is_ok()).count()
    }

    /// Requests that failed, with why.
    pub fn failed(&self) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.answer.is_err()).collect()
    }

    /// Requests answered, but only after [`SLOW`].
    pub fn slow(&self) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.answer.is_ok() && s.took > SLOW)
            .collect()
    }

    /// The answers with consecutive repeats removed: `["v1", "v2"]` for one clean switch.
    pub fn sequence(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.samples {
            if let Ok(a) = &s.answer
                && out.last() != Some(a)
            {
                out.push(a.clone());
            }
        }
        out
    }

    /// When the answer first was `answer`.
    pub fn first(&self, answer: &str) -> Option<Duration> {
        self.samples
            .iter()
            .find(|s| s.answer.as_deref() == Ok(answer))
            .map(|s| s.at)
    }
}

/// A running poller. Its requests run on a thread of their own, with a runtime of their own:
/// a test body that blocks its runtime (a synchronous `skopeo` or `cosign` call, say) would
/// otherwise hold a request mid-flight and make its answer look late. The slice watch runs on
/// the caller's runtime; a blocked caller only delays a change of endpoints.
#[derive(Debug)]
pub struct Poller {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<Report>>,
    requests: Option<std::thread::JoinHandle<()>>,
    watch: Option<tokio::task::JoinHandle<()>>,
}

/// Where the requests go.
enum Target {
    /// The next endpoint the Service's EndpointSlice lists (kept by a watch); requests count
    /// from the first endpoint listed.
    Slice(Arc<Mutex<Option<Vec<String>>>>),
    /// One `IP:port`; requests count from its first answer.
    Address(String),
}

impl Poller {
    /// Starts polling Service `service` in `namespace` once its EndpointSlice lists an
    /// endpoint; before that nothing is sent (and nothing counts as failed).
    pub fn start(client: Client, namespace: &str, service: &str) -> Self {
        let slices: Api<EndpointSlice> = Api::namespaced(client, namespace);
        let endpoints: Arc<Mutex<Option<Vec<String>>>> = Arc::default();
        let watch = {
            let endpoints = endpoints.clone();
            let cfg = watcher::Config::default().fields(&format!("metadata.name={service}"));
            tokio::spawn(async move {
                let mut events = watcher(slices, cfg).boxed();
                while let Some(event) = events.next().await {
                    let slice = match event {
                        Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => s,
                        _ => continue,
                    };
                    let list = addresses(&slice);
                    if let Ok(mut e) = endpoints.lock() {
                        *e = Some(list);
                    }
                }
            })
        };
        let mut poller = Self::spawn(Target::Slice(endpoints));
        poller.watch = Some(watch);
        poller
    }

    /// Starts polling `IP:port` of Service `service` in `namespace` (its ClusterIP and first
    /// port), which only kube-proxy's rules route. Requests count from the first answer on:
    /// kube-proxy programs a Service a moment after its EndpointSlice appears, and before
    /// that the ClusterIP refuses (which [`get`] reports as a failure).
    pub async fn cluster_ip(
        client: Client,
        namespace: &str,
        service: &str,
    ) -> Result<Self, String> {
        let endpoint = cluster_ip_endpoint(&client, namespace, service).await?;
        Ok(Self::address(endpoint))
    }

    /// Starts polling one `IP:port`; requests count from its first answer.
    pub fn address(endpoint: String) -> Self {
        Self::spawn(Target::Address(endpoint))
    }

    fn spawn(target: Target) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(Report::default()));
        let requests = {
            let (stop, report) = (stop.clone(), report.clone());
            std::thread::Builder::new()
                .name("traffic".into())
                .spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime for the traffic client")
                        .block_on(requests(target, &stop, &report));
                })
                .expect("a thread for the traffic client")
        };
        Poller {
            stop,
            report,
            requests: Some(requests),
            watch: None,
        }
    }

    /// What it saw so far.
    pub fn snapshot(&self) -> Report {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Stops and returns everything it saw.
    pub async fn stop(mut self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(watch) = self.watch.take() {
            watch.abort();
        }
        if let Some(requests) = self.requests.take() {
            // At most one request (ANSWER_WITHIN) still runs.
            let _ = tokio::task::spawn_blocking(move || requests.join()).await;
        }
        self.snapshot()
    }
}

impl Drop for Poller {
    /// A poller dropped without [`Poller::stop`] (a test that panicked) stops after its
    /// current request.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(watch) = self.watch.take() {
            watch.abort();
        }
    }
}

/// One request every [`PERIOD`] to `target` until `stop` (or [`MAX_RUN`]), each recorded.
async fn requests(target: Target, stop: &AtomicBool, report: &Mutex<Report>) {
    let started = Instant::now();
    let mut tick = tokio::time::interval(PERIOD);
    let mut n = 0usize;
    let mut serving = false;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < MAX_RUN {
        tick.tick().await;
        let at = started.elapsed();
        let (endpoint, answer) = match &target {
            Target::Slice(endpoints) => {
                let current = endpoints.lock().ok().and_then(|e| e.clone());
                let Some(list) = current else { continue };
                if list.is_empty() {
                    if !serving {
                        continue;
                    }
                    let none = Err("the EndpointSlice lists no endpoint".to_string());
                    (String::new(), none)
                } else {
                    serving = true;
                    let endpoint = list[n % list.len()].clone();
                    n += 1;
                    let answer = get(&endpoint).await;
                    (endpoint, answer)
                }
            }
            Target::Address(endpoint) => {
                let answer = get(endpoint).await;
                serving |= answer.is_ok();
                if !serving {
                    continue;
                }
                (endpoint.clone(), answer)
            }
        };
        let took = started.elapsed() - at;
        if let Ok(mut r) = report.lock() {
            r.samples.push(Sample {
                at,
                endpoint,
                answer,
                took,
            });
        }
    }
}

/// `ClusterIP:port` (first port) of Service `service` in `namespace`.
pub async fn cluster_ip_endpoint(
    client: &Client,
    namespace: &str,
    service: &str,
) -> Result<String, String> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let svc = services
        .get(service)
        .await
        .map_err(|e| format!("service {namespace}/{service}: {e}"))?;
    let spec = svc.spec.unwrap_or_default();
    let ip = spec
        .cluster_ip
        .filter(|ip| !ip.is_empty() && ip != "None")
        .ok_or_else(|| format!("service {namespace}/{service} has no ClusterIP"))?;
    let port = spec
        .ports
        .as_ref()
        .and_then(|p| p.first())
        .map(|p| p.port)
        .ok_or_else(|| format!("service {namespace}/{service} has no port"))?;
    Ok(format!("{ip}:{port}"))
}

/// `IP:port` of every ready endpoint of a slice (first port).
pub fn addresses(slice: &EndpointSlice) -> Vec<String> {
    let port = slice
        .ports
        .as_ref()
        .and_then(|p| p.first())
        .and_then(|p| p.port)
        .unwrap_or(80);
    slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .flat_map(|e| e.addresses.iter().map(move |a| format!("{a}:{port}")))
        .collect()
}

/// One HTTP/1.0 GET of `/`, bounded by [`ANSWER_WITHIN`]; the body trimmed.
pub async fn get(endpoint: &str) -> Result<String, String> {
    let fetch = async {
        let mut s = TcpStream::connect(endpoint)
            .await
            .map_err(|e| format!("connect {endpoint}: {e}"))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: bulkhead\r\n\r\n")
            .await
            .map_err(|e| format!("write {endpoint}: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read {endpoint}: {e}"))?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("{endpoint}: no HTTP response"))?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            return Err(format!(
                "{endpoint}: {}",
                head.lines().next().unwrap_or_default()
            ));
        }
        Ok(body.trim().to_string())
    };
    tokio::time::timeout(ANSWER_WITHIN, fetch)
        .await
        .unwrap_or_else(|_| Err(format!("{endpoint}: no answer within {ANSWER_WITHIN:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ms: u64, answer: Result<&str, &str>) -> Sample {
        Sample {
            at: Duration::ZERO,
            endpoint: "10.90.0.2:8080".into(),
            answer: answer.map(String::from).map_err(String::from),
            took: Duration::from_millis(ms),
        }
    }

    #[test]
    fn a_late_answer_is_slow_not_failed_and_no_answer_is_failed() {
        let report = Report {
            samples: vec![
                sample(5, Ok("v1")),
                sample(1040, Ok("v1")),
                sample(3000, Err("no answer")),
            ],
        };
        assert_eq!(report.served(), 2);
        assert_eq!(report.slow().len(), 1);
        assert_eq!(report.slow()[0].took, Duration::from_millis(1040));
        assert_eq!(report.failed().len(), 1);
    }

    /// A loopback HTTP server that answers "v1" 50 ms after each request (so that a poller is
    /// nearly always waiting for an answer), until `done`; at most 1000 connections.
    fn slow_server(done: Arc<AtomicBool>) -> (String, std::thread::JoinHandle<()>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            for conn in listener.incoming().take(1000) {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 512];
                let _ = conn.read(&mut buf);
                std::thread::sleep(Duration::from_millis(50));
                let _ = conn.write_all(b"HTTP/1.0 200 OK\r\n\r\nv1\n");
            }
        });
        (addr, server)
    }

    /// The caller's runtime blocked for 1.5 s (as a synchronous `cosign` call in a test body
    /// did) delays no request: they run on the poller's own thread.
    #[test]
    fn a_caller_that_blocks_its_runtime_makes_no_answer_late() {
        let done = Arc::new(AtomicBool::new(false));
        let (addr, server) = slow_server(done.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let report = runtime.block_on(async {
            let poller = Poller::address(addr.clone());
            for _ in 0..100 {
                if poller.snapshot().served() >= 3 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(poller.snapshot().served() >= 3, "the server answers");
            std::thread::sleep(Duration::from_millis(1500));
            poller.stop().await
        });
        done.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(&addr);
        server.join().unwrap();
        assert!(report.failed().is_empty(), "{:?}", report.failed());
        assert!(
            report.slow().is_empty(),
            "late answers: {:?}",
            report.slow()
        );
        assert!(
            report.served() >= 15,
            "requests went on while the caller was blocked: {}",
            report.served()
        );
    }
}
