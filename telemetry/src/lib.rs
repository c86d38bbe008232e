//! A minimal HTTP endpoint for `/metrics` (Prometheus text format), `/healthz` and
//! `/readyz`, shared by bulkhead-controller and bulkhead-node-agent. Plain HTTP/1.1, one
//! request per connection; enough for Prometheus and kubelet probes, nothing more.
//!
//! Bounded ([`Limits`]): a cap on connections served at once, a deadline for each (request
//! and response), a back-off when accepting fails, and a deny list of peer networks whose
//! connections are closed unanswered (the node agent denies its instances).

pub mod backoff;
pub mod failpoint;
pub mod ready;

use std::{collections::VecDeque, net::IpAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::AbortHandle,
};
use tracing::{debug, warn};

/// What the endpoint serves.
pub trait Endpoint: Send + Sync + 'static {
    /// The Prometheus text exposition.
    fn metrics(&self) -> String;
    /// Whether the component is alive (/healthz).
    fn healthy(&self) -> bool {
        true
    }
    /// Whether the component is ready to act (/readyz).
    fn ready(&self) -> bool {
        true
    }
}

/// The response to a request line's path.
pub fn respond(endpoint: &dyn Endpoint, path: &str) -> (u16, String) {
    let ok = |b: bool, yes: &str, no: &str| {
        if b {
            (200, format!("{yes}\n"))
        } else {
            (503, format!("{no}\n"))
        }
    };
    match path {
        "/metrics" => (200, endpoint.metrics()),
        "/healthz" | "/livez" => ok(endpoint.healthy(), "ok", "unhealthy"),
        "/readyz" => ok(endpoint.ready(), "ok", "not ready"),
        _ => (404, "not found\n".into()),
    }
}

/// What one endpoint's clients can hold of it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once; at the cap a new one replaces the oldest.
    pub max_connections: usize,
    /// Time a connection has for its request and the response: a client that sends
    /// nothing (slow loris) or reads nothing is dropped after it.
    pub timeout: Duration,
    /// Peers whose connections are closed unanswered (e.g. the agent's instance subnet).
    pub deny: Vec<Network>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            timeout: Duration::from_secs(5),
            deny: Vec::new(),
        }
    }
}

/// An IP network, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s} is not a network: give address/prefix, e.g. 10.89.0.0/24");
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let address: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("{s}: the prefix is at most {max}"));
        }
        Ok(Self { address, prefix })
    }
}

impl Network {
    /// Whether `ip` is in the network (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let bits = |full: u128, width: u32| {
            let shift = width - u32::from(self.prefix);
            full.checked_shr(shift).unwrap_or(0)
        };
        match (self.address, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                bits(u128::from(u32::from(n)), 32) == bits(u128::from(u32::from(i)), 32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => bits(u128::from(n), 128) == bits(u128::from(i), 128),
            _ => false,
        }
    }
}

/// Whether a peer may be served.
pub fn admit(peer: IpAddr, deny: &[Network]) -> bool {
    !deny.iter().any(|n| n.contains(peer))
}

/// The wait after a failed accept (e.g. out of file descriptors): doubling from 10 ms up to
/// one second, so an error that persists never spins the loop.
pub fn backoff(previous: Option<Duration>) -> Duration {
    previous.map_or(Duration::from_millis(10), |d| {
        (d * 2).min(Duration::from_secs(1))
    })
}

/// Serves `endpoint` on `address` with the default [`Limits`] until the process ends. A bind
/// failure is logged.
pub async fn serve(address: String, endpoint: Arc<dyn Endpoint>) {
    serve_with(address, endpoint, Limits::default()).await;
}

/// Serves `endpoint` on `address` within `limits` until the process ends.
pub async fn serve_with(address: String, endpoint: Arc<dyn Endpoint>, limits: Limits) {
    match TcpListener::bind(&address).await {
        Ok(l) => serve_listener(l, endpoint, limits).await,
        Err(e) => warn!(%address, error = %e, "cannot serve /metrics, /healthz and /readyz"),
    }
}

/// Serves `endpoint` on a bound listener within `limits`.
///
/// At the cap the oldest connection is dropped for the new one: a request is answered in
/// milliseconds, so the oldest is the one holding its slot without sending (a slow loris),
/// and /healthz is answered however many such clients there are. Waiting for a free slot
/// instead would queue a probe behind every one of them.
pub async fn serve_listener(listener: TcpListener, endpoint: Arc<dyn Endpoint>, limits: Limits) {
    let mut live: VecDeque<AbortHandle> = VecDeque::new();
    let mut failed: Option<Duration> = None;
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(c) => {
                failed = None;
                c
            }
            Err(e) => {
                let wait = backoff(failed);
                failed = Some(wait);
                debug!(error = %e, ?wait, "accepting a connection failed");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        if !admit(peer.ip(), &limits.deny) {
            debug!(%peer, "connection from a denied network closed");
            continue;
        }
        live.retain(|h| !h.is_finished());
        while live.len() >= limits.max_connections.max(1) {
            if let Some(oldest) = live.pop_front() {
                oldest.abort();
            }
        }
        let endpoint = endpoint.clone();
        let timeout = limits.timeout;
        let task = tokio::spawn(async move {
            let _ = tokio::time::timeout(timeout, answer(socket, endpoint.as_ref())).await;
        });
        live.push_back(task.abort_handle());
    }
}

/// Reads one request head (at most 8 KiB) and writes the response.
async fn answer(mut socket: TcpStream, endpoint: &dyn Endpoint) {
    // A client may send the head in several segments.
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while buf.len() < 8192 && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (code, body) = respond(endpoint, path);
    let reason = match code {
        200 => "OK",
        503 => "Service Unavailable",
        _ => "Not Found",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(bool);
    impl Endpoint for Fake {
        fn metrics(&self) -> String {
            "x 1\n".into()
        }
        fn ready(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn routes() {
        assert_eq!(respond(&Fake(true), "/metrics"), (200, "x 1\n".into()));
        assert_eq!(respond(&Fake(false), "/readyz").0, 503);
        assert_eq!(respond(&Fake(false), "/healthz").0, 200);
        assert_eq!(respond(&Fake(true), "/nope").0, 404);
    }
}

#[cfg(test)]
mod limits {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn networks_parse_and_contain() {
        let n: Network = "10.89.3.0/24".parse().unwrap();
        assert!(n.contains("10.89.3.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.89.3.200".parse().unwrap()));
        assert!(!n.contains("10.89.4.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let host: Network = "fd00::1/128".parse().unwrap();
        assert!(host.contains("fd00::1".parse().unwrap()));
        assert!(!host.contains("fd00::2".parse().unwrap()));
        for bad in ["10.89.3.0", "10.89.3.0/33", "x/8", "::/129", "10.0.0.0/-1"] {
            let e = bad.parse::<Network>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        let deny = [n];
        assert!(!admit("10.89.3.9".parse().unwrap(), &deny));
        assert!(admit("127.0.0.1".parse().unwrap(), &deny));
    }

    #[test]
    fn accept_errors_back_off_up_to_a_second() {
        let mut d = None;
        let waits: Vec<_> = (0..10)
            .map(|_| {
                let w = backoff(d);
                d = Some(w);
                w
            })
            .collect();
        assert_eq!(waits[0], Duration::from_millis(10));
        assert!(waits.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(waits[9], Duration::from_secs(1));
    }

    struct Up;
    impl Endpoint for Up {
        fn metrics(&self) -> String {
            String::new()
        }
    }

    async fn start(limits: Limits) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(serve_listener(l, Arc::new(Up), limits));
        addr
    }

    /// GET /healthz; None when no answer came within `within`.
    async fn healthz(addr: SocketAddr, within: Duration) -> Option<String> {
        tokio::time::timeout(within, async {
            let mut s = TcpStream::connect(addr).await.ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await.ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).await.ok()?;
            Some(out)
        })
        .await
        .ok()
        .flatten()
    }

    async fn idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
        let mut held = Vec::new();
        for _ in 0..n {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /metr").await.unwrap();
            held.push(s);
        }
        held
    }

    /// Whether the server closed `s` (EOF or reset) within `within`.
    async fn closed(s: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(within, s.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn at_the_cap_the_oldest_connection_goes() {
        let addr = start(Limits {
            max_connections: 2,
            timeout: Duration::from_secs(600),
            deny: Vec::new(),
        })
        .await;
        let mut held = idle(addr, 2).await;
        let answer = healthz(addr, Duration::from_secs(10)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(closed(&mut held[0], Duration::from_secs(10)).await);
        assert!(!closed(&mut held[1], Duration::from_millis(200)).await);
    }

    #[tokio::test]
    async fn slow_loris_clients_do_not_stop_healthz() {
        let addr = start(Limits {
            max_connections: 4,
            timeout: Duration::from_secs(600),
            deny: Vec::new(),
        })
        .await;
        let _held = idle(addr, 200).await;
        let answer = healthz(addr, Duration::from_secs(30)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_after_the_timeout() {
        let addr = start(Limits {
            timeout: Duration::from_millis(300),
            ..Limits::default()
        })
        .await;
        let mut held = idle(addr, 1).await;
        assert!(closed(&mut held[0], Duration::from_secs(30)).await);
    }

    #[tokio::test]
    async fn denied_peers_get_no_answer() {
        let addr = start(Limits {
            deny: vec!["127.0.0.0/8".parse().unwrap()],
            ..Limits::default()
        })
        .await;
        // Closed unanswered (an empty read, or a reset of what the client still sent).
        let answer = healthz(addr, Duration::from_secs(10)).await;
        assert!(answer.as_deref().unwrap_or("").is_empty(), "{answer:?}");
        // The control: the same request from an allowed peer is answered.
        let open = start(Limits::default()).await;
        let answer = healthz(open, Duration::from_secs(10)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    }
}
