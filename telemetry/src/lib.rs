//! A minimal HTTP endpoint for `/metrics` (Prometheus text format), `/healthz` and
//! `/readyz`, shared by bulkhead-controller and bulkhead-node-agent. Plain HTTP/1.1, one
//! request per connection; enough for Prometheus and kubelet probes, nothing more.

pub mod failpoint;

use std::sync::Arc;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tracing::warn;

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

/// Serves `endpoint` on `address` until the process ends. A bind failure is logged.
pub async fn serve(address: String, endpoint: Arc<dyn Endpoint>) {
    let listener = match TcpListener::bind(&address).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%address, error = %e, "cannot serve /metrics, /healthz and /readyz");
            return;
        }
    };
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            // Read the request head; a client may send it in several segments.
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
            let (code, body) = respond(endpoint.as_ref(), path);
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
        });
    }
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
