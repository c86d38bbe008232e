//! Builders for test objects: `instance("web-1").on(&host).image(&image("web:v1")).build()`.

use bulkhead_crds::{
    Instance, InstancePhase, InstanceSpec, InstanceTemplate, Isolation,
    isolation::Capability,
    template::{Resources, RestartPolicy},
};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use std::time::Duration;

use crate::TestNamespace;

/// Builds an Instance.
#[derive(Debug, Clone)]
pub struct InstanceBuilder {
    name: String,
    spec: InstanceSpec,
    labels: std::collections::BTreeMap<String, String>,
}

/// Starts building an Instance named `name`, running web:v1.
pub fn instance(name: &str) -> InstanceBuilder {
    InstanceBuilder {
        name: name.to_string(),
        spec: InstanceSpec {
            host_name: None,
            revision: "r1".into(),
            template: InstanceTemplate {
                image: crate::agent::image("web:v1"),
                resources: Resources::default(),
                termination_grace_period_seconds: 5,
                ..Default::default()
            },
            isolation: Isolation::default(),
            seccomp_profile_digest: None,
            image_signature: None,
        },
        labels: Default::default(),
    }
}

impl InstanceBuilder {
    /// Adds a label (what NetworkPolicy pod selectors match).
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Binds it to a host.
    pub fn on(mut self, host: &str) -> Self {
        self.spec.host_name = Some(host.to_string());
        self
    }
    /// Sets the image reference.
    pub fn image(mut self, image: &str) -> Self {
        self.spec.template.image = image.to_string();
        self
    }
    /// Requires the image's cosign signature by one of `keys` (name, PEM), as the controller
    /// sets it for a Workload that trusts keys.
    pub fn signed_by(mut self, keys: &[(&str, &str)]) -> Self {
        let keys = keys
            .iter()
            .map(|(name, pem)| bulkhead_crds::instance::SignatureKey {
                name: name.to_string(),
                public_key: pem.to_string(),
            })
            .collect();
        self.spec.image_signature = Some(bulkhead_crds::instance::ImageSignature { keys });
        self
    }
    /// Sets the args (the image's CMD replacement).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.spec.template.args = args.iter().map(|s| s.to_string()).collect();
        self
    }
    /// Sets the command (the image's ENTRYPOINT replacement).
    pub fn command(mut self, command: &[&str]) -> Self {
        self.spec.template.command = command.iter().map(|s| s.to_string()).collect();
        self
    }
    /// Adds a writable path (tmpfs).
    pub fn writable(mut self, path: &str) -> Self {
        self.spec.template.writable_paths.push(path.to_string());
        self
    }
    /// Sets the readiness probe.
    pub fn readiness(mut self, probe: bulkhead_crds::template::Probe) -> Self {
        self.spec.template.readiness_probe = Some(probe);
        self
    }
    /// Sets the liveness probe.
    pub fn liveness(mut self, probe: bulkhead_crds::template::Probe) -> Self {
        self.spec.template.liveness_probe = Some(probe);
        self
    }
    /// Sets the memory limit.
    pub fn memory(mut self, memory: &str) -> Self {
        self.spec.template.resources.memory = Some(memory.to_string());
        self
    }
    /// Sets the pids limit.
    pub fn pids(mut self, pids: i64) -> Self {
        self.spec.template.resources.pids = pids;
        self
    }
    /// Sets the restart policy.
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.spec.template.restart_policy = policy;
        self
    }
    /// Sets the grace period.
    pub fn grace(mut self, seconds: i64) -> Self {
        self.spec.template.termination_grace_period_seconds = seconds;
        self
    }
    /// Adds a capability.
    pub fn capability(mut self, cap: Capability) -> Self {
        self.spec.isolation.capabilities.add.push(cap);
        self
    }
    /// Uses a SeccompProfile by name.
    pub fn seccomp_profile(mut self, name: &str) -> Self {
        self.spec.isolation.seccomp.type_ = bulkhead_crds::isolation::SeccompType::Localhost;
        self.spec.isolation.seccomp.localhost_profile = Some(name.to_string());
        self
    }
    /// The Instance.
    pub fn build(self) -> Instance {
        let mut instance = Instance::new(&self.name, self.spec);
        if !self.labels.is_empty() {
            instance.metadata.labels = Some(self.labels);
        }
        instance
    }
    /// Creates it in `ns`.
    pub async fn create(self, ns: &TestNamespace) -> Instance {
        let api: Api<Instance> = ns.api();
        api.create(&PostParams::default(), &self.build())
            .await
            .expect("creating the Instance")
    }
}

/// Waits until the Instance has `phase`, returning it; panics with its status after `timeout`.
pub async fn wait_for_phase(
    ns: &TestNamespace,
    name: &str,
    phase: InstancePhase,
    timeout: Duration,
) -> Instance {
    let api: Api<Instance> = ns.api();
    let found = crate::poll_until(timeout, || {
        let api = api.clone();
        async move {
            let i = api.get(name).await.ok()?;
            (i.status.as_ref()?.phase == Some(phase)).then_some(i)
        }
    })
    .await;
    match found {
        Some(i) => i,
        None => {
            let now = api.get(name).await.ok().and_then(|i| i.status);
            panic!(
                "instance {}/{name} did not reach {phase:?} within {timeout:?}; status: {now:#?}",
                ns.name
            )
        }
    }
}

/// Deletes the Instance and waits until it is gone (the agent removed its finalizer).
pub async fn delete_and_wait(ns: &TestNamespace, name: &str, timeout: Duration) {
    let api: Api<Instance> = ns.api();
    let _ = api.delete(name, &DeleteParams::default()).await;
    let gone = crate::poll_until(timeout, || {
        let api = api.clone();
        async move {
            api.get_opt(name)
                .await
                .ok()
                .and_then(|o| o.is_none().then_some(()))
        }
    })
    .await;
    assert!(
        gone.is_some(),
        "instance {}/{name} still exists {timeout:?} after deletion",
        ns.name
    );
}

/// A probe from its YAML (`{exec: {command: [...]}, periodSeconds: 1}`), with the schema's
/// defaults filled in as the API server would.
pub fn probe(yaml: &str) -> bulkhead_crds::template::Probe {
    serde_yaml::from_str(yaml).expect("a probe")
}
