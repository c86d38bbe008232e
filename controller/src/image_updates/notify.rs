//! The registry's push notifications: docker-registry (distribution) POSTs an envelope of
//! events to an endpoint it is configured with; a push to a repository a Workload follows
//! makes the controller look at its tag at once instead of at the next interval.
//!
//! The endpoint trusts nothing it is sent: a request needs the shared token
//! (`Authorization: Bearer <token>`), its head and body are bounded and read under a deadline,
//! and a repository no Workload follows is ignored. A notification only ever causes a look at
//! the registry; what is rolled out is decided by the registry's answer and the signature.

use std::{sync::Arc, time::Duration};

use serde::Deserialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tracing::{debug, info};

/// The path the registry posts to.
pub const PATH: &str = "/registry/notifications";
/// The largest request head.
pub const MAX_HEAD_BYTES: usize = 8 << 10;
/// The largest envelope; the registry sends a few events at a time.
pub const MAX_BODY_BYTES: usize = 256 << 10;
/// The longest a client may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A followed tag is looked at when a push is announced and again after each of these
/// pauses: docker-registry announces a manifest push just before it moves the tag.
pub const LOOK_AGAIN_AFTER: [Duration; 2] =
    [Duration::from_millis(300), Duration::from_millis(1200)];
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// What a notification is handed to: the repositories pushed to, returning how many
/// Workloads follow them.
pub type OnPush = dyn Fn(&[String]) -> usize + Send + Sync;

/// Why a request is refused, as an HTTP status and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not an HTTP request this endpoint understands.
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    /// Missing or wrong token.
    #[error(
        "missing or wrong bearer token; configure the registry's endpoint headers with the token"
    )]
    Unauthorized,
    /// Another path.
    #[error("not found; the registry should post to {PATH}")]
    NotFound,
    /// Not a POST.
    #[error("method not allowed; the registry posts")]
    MethodNotAllowed,
    /// Larger than the bound.
    #[error("body larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
}

impl Refused {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Refused::BadRequest(_) => 400,
            Refused::Unauthorized => 401,
            Refused::NotFound => 404,
            Refused::MethodNotAllowed => 405,
            Refused::TooLarge => 413,
        }
    }
}

/// Checks a request head; returns the body length to read.
pub fn admit(head: &str, token: &str) -> Result<usize, Refused> {
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next());
    let path = path.ok_or(Refused::BadRequest("no request line"))?;
    let mut authorization = None;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "authorization" => authorization = Some(value.trim()),
            "content-length" => {
                length = Some(
                    value
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| Refused::BadRequest("bad content-length"))?,
                )
            }
            _ => {}
        }
    }
    if path.split('?').next() != Some(PATH) {
        return Err(Refused::NotFound);
    }
    if method != "POST" {
        return Err(Refused::MethodNotAllowed);
    }
    let presented = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or_default();
    if token.is_empty() || !same(presented.as_bytes(), token.as_bytes()) {
        return Err(Refused::Unauthorized);
    }
    match length {
        None => Err(Refused::BadRequest("content-length required")),
        Some(n) if n > MAX_BODY_BYTES => Err(Refused::TooLarge),
        Some(n) => Ok(n),
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    events: Vec<Event>,
}

#[derive(Deserialize)]
struct Event {
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: Target,
}

#[derive(Deserialize, Default)]
struct Target {
    #[serde(default)]
    repository: String,
}

/// The repositories pushed to, from an envelope of events.
pub fn pushed_repositories(body: &[u8]) -> Result<Vec<String>, Refused> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|_| Refused::BadRequest("not an event envelope"))?;
    let mut repos: Vec<String> = envelope
        .events
        .into_iter()
        .filter(|e| e.action == "push" && !e.target.repository.is_empty())
        .map(|e| e.target.repository)
        .collect();
    repos.sort();
    repos.dedup();
    Ok(repos)
}

/// Serves the endpoint on `listener`; `on_push` gets the repositories of each notification
/// and returns how many Workloads follow them.
pub async fn serve(listener: TcpListener, token: String, on_push: Arc<OnPush>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let token: Arc<str> = token.into();
    loop {
        let Ok((socket, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "too many notification connections; closing this one");
            continue;
        };
        let (token, on_push) = (token.clone(), on_push.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ =
                tokio::time::timeout(READ_TIMEOUT, answer(socket, &token, on_push.as_ref())).await;
        });
    }
}

async fn answer(mut socket: TcpStream, token: &str, on_push: &OnPush) -> std::io::Result<()> {
    let result = handle(&mut socket, token, on_push).await?;
    let (status, body) = match result {
        Ok(matched) => (200, format!("{{\"matched\":{matched}}}")),
        Err(refused) => (
            refused.status(),
            format!("{{\"error\":{:?}}}", refused.to_string()),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        if status == 200 { "OK" } else { "Refused" },
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

async fn handle(
    socket: &mut TcpStream,
    token: &str,
    on_push: &OnPush,
) -> std::io::Result<Result<usize, Refused>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Ok(Err(Refused::BadRequest("request head too large")));
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err(Refused::BadRequest("connection closed early")));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length = match admit(&head, token) {
        Ok(n) => n,
        Err(refused) => return Ok(Err(refused)),
    };
    let mut body = buf.split_off(end + 4);
    body.truncate(length);
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Err(Refused::BadRequest("body shorter than content-length")));
        }
        body.extend_from_slice(&chunk[..n.min(length - body.len())]);
    }
    let repos = match pushed_repositories(&body) {
        Ok(r) => r,
        Err(refused) => return Ok(Err(refused)),
    };
    let matched = on_push(&repos);
    if matched > 0 {
        info!(repositories = ?repos, workloads = matched, "registry push notification");
    } else {
        debug!(repositories = ?repos, "registry notification for no followed repository");
    }
    Ok(Ok(matched))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, path: &str, auth: Option<&str>, length: Option<usize>) -> String {
        let mut h = format!("{method} {path} HTTP/1.1\r\nHost: x");
        if let Some(a) = auth {
            h += &format!("\r\nAuthorization: {a}");
        }
        if let Some(n) = length {
            h += &format!("\r\nContent-Length: {n}");
        }
        h
    }

    #[test]
    fn only_a_bounded_post_with_the_token_is_admitted() {
        let ok = head("POST", PATH, Some("Bearer s3cret"), Some(10));
        assert_eq!(admit(&ok, "s3cret"), Ok(10));
        let wrong = head("POST", PATH, Some("Bearer nope"), Some(10));
        assert_eq!(admit(&wrong, "s3cret"), Err(Refused::Unauthorized));
        let none = head("POST", PATH, None, Some(10));
        assert_eq!(admit(&none, "s3cret"), Err(Refused::Unauthorized));
        assert_eq!(
            admit(&ok, ""),
            Err(Refused::Unauthorized),
            "an empty token admits nobody"
        );
        let big = head(
            "POST",
            PATH,
            Some("Bearer s3cret"),
            Some(MAX_BODY_BYTES + 1),
        );
        assert_eq!(admit(&big, "s3cret").unwrap_err().status(), 413);
        let get = head("GET", PATH, Some("Bearer s3cret"), None);
        assert_eq!(admit(&get, "s3cret").unwrap_err().status(), 405);
        let other = head("POST", "/metrics", Some("Bearer s3cret"), Some(1));
        assert_eq!(admit(&other, "s3cret").unwrap_err().status(), 404);
        let unbounded = head("POST", PATH, Some("Bearer s3cret"), None);
        assert_eq!(admit(&unbounded, "s3cret").unwrap_err().status(), 400);
    }

    #[test]
    fn pushes_are_read_from_the_registrys_envelope() {
        let body = serde_json::json!({"events": [
            {"action": "push", "target": {"repository": "bulkhead/web", "tag": "v1", "digest": "sha256:aa"}},
            {"action": "push", "target": {"repository": "bulkhead/web", "digest": "sha256:bb"}},
            {"action": "pull", "target": {"repository": "bulkhead/other"}},
            {"action": "push", "target": {"repository": "bulkhead/probe"}}
        ]});
        let repos = pushed_repositories(body.to_string().as_bytes()).unwrap();
        assert_eq!(repos, ["bulkhead/probe", "bulkhead/web"]);
        assert_eq!(pushed_repositories(b"not json").unwrap_err().status(), 400);
    }
}
