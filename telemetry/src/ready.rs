//! Readiness that any number of tasks may wait for at the same time.
//!
//! kube-runtime's `Store::wait_until_ready` (5.0) polls one oneshot receiver, which keeps a
//! single waker: of two tasks waiting at once, only the one that polled last is woken when
//! the store becomes ready. The other is polled again only if something else wakes it — a
//! reconcile waiting there can wait forever, and a wait under a timeout lasts the whole
//! timeout (a node agent's start-up waited 30 s for its network walls this way). A
//! kube-runtime `Controller` itself waits on its store that way before its first reconcile,
//! so a store a Controller runs on must have no other waiter at all.
//!
//! [`Ready`] is told by whoever knows — the reflector's stream, at its first `InitDone`
//! ([`Ready::channel`]), or the one task allowed to wait on a store ([`Ready::spawn`]) —
//! and a watch channel wakes every waiter.

use std::future::Future;

use tokio::sync::watch;

/// Whether something became ready, for many waiters (clone it freely).
#[derive(Clone, Debug)]
pub struct Ready(watch::Receiver<Option<bool>>);

/// What [`Ready::wait`] returns when the awaited thing can never become ready (its writer
/// went away, or the task awaiting it ended without an answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeverReady;

/// Tells the [`Ready`] made with it; dropped without telling, the thing is never ready.
#[derive(Debug)]
pub struct Readiness(watch::Sender<Option<bool>>);

impl Readiness {
    /// It is ready (again: repeated calls change nothing).
    pub fn ready(&self) {
        self.0.send_if_modified(|v| {
            let changed = v.is_none();
            *v = Some(true);
            changed
        });
    }
}

impl Ready {
    /// A readiness told through the returned [`Readiness`].
    pub fn channel() -> (Readiness, Self) {
        let (tx, rx) = watch::channel(None);
        (Readiness(tx), Self(rx))
    }

    /// Spawns the one task that awaits `ready` (`true`: ready; `false`: it never will be).
    /// Needs a Tokio runtime.
    pub fn spawn(ready: impl Future<Output = bool> + Send + 'static) -> Self {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let _ = tx.send(Some(ready.await));
        });
        Self(rx)
    }

    /// Waits until ready.
    pub async fn wait(&self) -> Result<(), NeverReady> {
        let mut rx = self.0.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(outcome) if *outcome == Some(true) => Ok(()),
            _ => Err(NeverReady),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_waiter_wakes_when_ready() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let ready = Ready::spawn(async move { rx.await.is_ok() });
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let r = ready.clone();
                tokio::spawn(async move { r.wait().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        tx.send(()).unwrap();
        for w in waiters {
            let woke = tokio::time::timeout(Duration::from_secs(5), w).await;
            assert_eq!(woke.expect("a waiter was not woken").unwrap(), Ok(()));
        }
        // A late waiter returns at once.
        assert_eq!(ready.wait().await, Ok(()));
    }

    #[tokio::test]
    async fn told_ready_once_it_stays_ready() {
        let (tell, ready) = Ready::channel();
        let waiter = {
            let r = ready.clone();
            tokio::spawn(async move { r.wait().await })
        };
        tell.ready();
        tell.ready();
        assert_eq!(waiter.await.unwrap(), Ok(()));
        drop(tell);
        assert_eq!(
            ready.wait().await,
            Ok(()),
            "ready even after the teller went"
        );
        let (tell, never) = Ready::channel();
        drop(tell);
        assert_eq!(never.wait().await, Err(NeverReady));
    }

    #[tokio::test]
    async fn a_source_that_goes_away_is_never_ready() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let ready = Ready::spawn(async move { rx.await.is_ok() });
        drop(tx);
        assert_eq!(ready.wait().await, Err(NeverReady));
    }
}
