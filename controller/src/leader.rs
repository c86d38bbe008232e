//! Leader election on a coordination.k8s.io Lease: only the holder acts.
//!
//! Acquire: create the Lease, or take it over once it has expired, with an optimistic
//! update (resourceVersion) so that two candidates can never both win. Renew every
//! `renew`; if a renewal cannot be confirmed before the lease would expire, the holder stops
//! acting at once (the process exits and its successor carries on from the API).

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tracing::{info, warn};

/// Lease timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long a renewal is valid.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew: Duration,
    /// How often a candidate retries.
    pub retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
            retry: Duration::from_secs(2),
        }
    }
}

/// A candidate for the lease `name` in `namespace`.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish()
    }
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(secs)) => renewed.0 + SignedDuration::from_secs(i64::from(secs)) < now,
        _ => true,
    }
}

impl Elector {
    /// A candidate named `identity`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: Timing,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            timing,
        }
    }

    /// One attempt to acquire or renew; true when this candidate holds the lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> kube::Result<bool> {
        let now = Timestamp::now();
        let mine = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.duration.as_secs() as i32),
            renew_time: Some(MicroTime(now)),
            ..Default::default()
        };
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    acquire_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..mine
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let held_by_me = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !held_by_me && !expired(&spec, now) {
            return Ok(false);
        }
        lease.spec = Some(if held_by_me {
            LeaseSpec {
                acquire_time: spec.acquire_time,
                lease_transitions: spec.lease_transitions,
                ..mine
            }
        } else {
            LeaseSpec {
                acquire_time: Some(MicroTime(now)),
                lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + 1),
                ..mine
            }
        });
        // The resourceVersion in `lease` makes this a compare-and-swap.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election failed; retrying"),
            }
            tokio::time::sleep(self.timing.retry).await;
        }
    }

    /// Renews until a renewal cannot be confirmed within the lease duration; returns then.
    pub async fn hold(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.timing.renew).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.name, "another candidate holds the lease");
                    return;
                }
                Err(e) => warn!(error = %e, "renewing the leader lease failed"),
            }
            // Stop acting before the lease can expire and someone else can take over.
            if last_ok.elapsed() + self.timing.renew >= self.timing.duration {
                warn!(lease = %self.name, "could not renew the leader lease in time");
                return;
            }
        }
    }
}
