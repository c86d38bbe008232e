//! Waiting on conditions with deadlines, never on fixed sleeps.

use std::{future::Future, time::Duration};

use kube::{Api, Resource, runtime::wait::Condition};
use serde::de::DeserializeOwned;

/// Polls `probe` every 200 ms until it returns `Some`, or `timeout` passes.
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the named object satisfies `condition`, panicking with `what` after `timeout`.
pub async fn await_condition<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    condition: impl Condition<K> + Clone,
) -> K
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let waited = tokio::time::timeout(
        timeout,
        kube::runtime::wait::await_condition(api.clone(), name, condition),
    )
    .await;
    match waited {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("{name} was deleted while waiting for {what}"),
        Ok(Err(e)) => panic!("watching {name} for {what} failed: {e}"),
        Err(_) => panic!("{name}: {what} did not happen within {timeout:?}"),
    }
}
