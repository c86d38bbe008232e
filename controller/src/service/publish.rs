//! What a WorkloadService publishes, computed from the Workload's instances (pure).
//!
//! A WorkloadService becomes a selectorless `Service` plus one `EndpointSlice` that the
//! controller writes itself, so any Service consumer (kube-proxy, a mesh, a client that reads
//! slices) routes to exactly the ready instances of one revision. Switching revisions is one
//! write of the slice: a reader sees either the old endpoints or the new ones, never a mix.

use bulkhead_crds::{
    Instance, InstancePhase, WorkloadService,
    conditions::{self, types},
    service::ServicePort,
    template::Protocol,
};
use kube::ResourceExt;
use serde_json::{Value, json};

/// `endpointslice.kubernetes.io/managed-by` of the slices the controller writes; not the
/// EndpointSlice controller's value, so kube-controller-manager leaves them alone.
pub const SLICE_MANAGER: &str = "controller.bulkhead.dev";
/// `app.kubernetes.io/managed-by` on every Service and EndpointSlice the controller writes.
pub const MANAGED_BY: &str = "bulkhead-controller";
/// The suffix of the preview Service and its slice.
pub const PREVIEW_SUFFIX: &str = "-preview";

/// A ready instance of a revision.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ready {
    /// Its IP on the instance network.
    pub ip: String,
    /// Instance name.
    pub name: String,
    /// Instance UID.
    pub uid: String,
}

/// The instances of `revision` that are Running, Ready and not being deleted, ordered by IP.
/// An instance that stops being Ready leaves the list at the next observation.
pub fn ready_instances<'a>(
    instances: impl IntoIterator<Item = &'a Instance>,
    revision: Option<&str>,
) -> Vec<Ready> {
    let Some(revision) = revision else {
        return Vec::new();
    };
    let mut out: Vec<Ready> = instances
        .into_iter()
        .filter(|i| i.spec.revision == revision && i.metadata.deletion_timestamp.is_none())
        .filter_map(|i| {
            let s = i.status.as_ref()?;
            let ready = s.phase == Some(InstancePhase::Running)
                && conditions::is_true(&s.conditions, types::READY);
            ready.then(|| Ready {
                ip: s.pod_ip.clone().unwrap_or_default(),
                name: i.name_any(),
                uid: i.uid().unwrap_or_default(),
            })
        })
        .filter(|r| !r.ip.is_empty())
        .collect();
    out.sort();
    out
}

fn target_port(p: &ServicePort) -> i32 {
    p.target_port.unwrap_or(p.port)
}

fn protocol(p: &ServicePort) -> &'static str {
    match p.protocol {
        Protocol::TCP => "TCP",
        Protocol::UDP => "UDP",
    }
}

/// `IP:port` for each ready instance and each service port, as status.endpoints lists them.
pub fn endpoint_strings(ready: &[Ready], ports: &[ServicePort]) -> Vec<String> {
    ready
        .iter()
        .flat_map(|r| {
            ports
                .iter()
                .map(move |p| format!("{}:{}", r.ip, target_port(p)))
        })
        .collect()
}

fn labels(svc: &WorkloadService, name: &str, role: &str) -> Value {
    json!({
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "bulkhead.dev/workload": svc.spec.workload_name,
        "bulkhead.dev/service": svc.name_any(),
        "bulkhead.dev/role": role,
        "kubernetes.io/service-name": name,
    })
}

fn owner(svc: &WorkloadService) -> Value {
    json!([{
        "apiVersion": "bulkhead.dev/v1alpha1",
        "kind": "WorkloadService",
        "name": svc.name_any(),
        "uid": svc.uid().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

/// The selectorless Service `name` (server-side apply body). `role` is active or preview.
pub fn service(svc: &WorkloadService, name: &str, role: &str) -> Value {
    let ports: Vec<Value> = svc
        .spec
        .ports
        .iter()
        .map(|p| {
            let mut v = json!({
                "port": p.port,
                "targetPort": target_port(p),
                "protocol": protocol(p),
            });
            if let Some(n) = &p.name {
                v["name"] = json!(n);
            }
            v
        })
        .collect();
    let mut labels = labels(svc, name, role);
    // A Service does not carry its own service-name label.
    if let Some(m) = labels.as_object_mut() {
        m.remove("kubernetes.io/service-name");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": svc.namespace(),
            "labels": labels,
            "ownerReferences": owner(svc),
        },
        "spec": {"type": "ClusterIP", "ports": ports},
    })
}

/// Whether `observed` already holds every field of the apply `body` with the same value:
/// applying it would change nothing (and is skipped: four no-op applies per reconcile slowed
/// the one write a switch needs). Objects compare by the body's keys, lists by length and
/// element, anything else by equality.
pub fn already_holds(observed: &Value, body: &Value) -> bool {
    match (observed, body) {
        (Value::Object(o), Value::Object(b)) => b
            .iter()
            .all(|(k, v)| o.get(k).is_some_and(|ov| already_holds(ov, v))),
        (Value::Array(o), Value::Array(b)) => {
            o.len() == b.len() && o.iter().zip(b).all(|(ov, bv)| already_holds(ov, bv))
        }
        _ => observed == body,
    }
}

/// The EndpointSlice of Service `name`, listing `ready` (server-side apply body).
pub fn endpoint_slice(
    svc: &WorkloadService,
    name: &str,
    role: &str,
    revision: Option<&str>,
    ready: &[Ready],
) -> Value {
    let ns = svc.namespace();
    let endpoints: Vec<Value> = ready
        .iter()
        .map(|r| {
            json!({
                "addresses": [r.ip],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "targetRef": {
                    "apiVersion": "bulkhead.dev/v1alpha1",
                    "kind": "Instance",
                    "name": r.name,
                    "namespace": ns,
                    "uid": r.uid,
                },
            })
        })
        .collect();
    let ports: Vec<Value> = svc
        .spec
        .ports
        .iter()
        .map(|p| {
            json!({
                "name": p.name.clone().unwrap_or_default(),
                "port": target_port(p),
                "protocol": protocol(p),
            })
        })
        .collect();
    let mut labels = labels(svc, name, role);
    labels["endpointslice.kubernetes.io/managed-by"] = json!(SLICE_MANAGER);
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": labels,
            "annotations": {"bulkhead.dev/revision": revision.unwrap_or_default()},
            "ownerReferences": owner(svc),
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_crds::{
        InstanceSpec, InstanceStatus, WorkloadServiceSpec, conditions::new, conditions::status,
    };
    use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};

    #[test]
    fn an_apply_is_a_no_op_only_when_every_field_it_sets_is_already_there() {
        let observed = json!({
            "metadata": {"name": "web", "uid": "u", "labels": {"a": "1", "b": "2"}},
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}, "zone": "z"}],
        });
        let same = json!({
            "metadata": {"name": "web", "labels": {"a": "1"}},
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}],
        });
        assert!(
            already_holds(&observed, &same),
            "server-added fields do not count"
        );
        let moved = json!({"endpoints": [{"addresses": ["10.0.0.2"]}]});
        assert!(!already_holds(&observed, &moved), "another address");
        let more = json!({"endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        assert!(!already_holds(&observed, &more), "another endpoint");
        assert!(
            !already_holds(&observed, &json!({"endpoints": []})),
            "none left"
        );
        let label = json!({"metadata": {"labels": {"a": "2"}}});
        assert!(!already_holds(&observed, &label), "a changed label");
        assert!(!already_holds(&json!(null), &same), "nothing there yet");
    }

    fn instance(name: &str, rev: &str, ip: &str, phase: InstancePhase, ready: bool) -> Instance {
        let mut i = Instance::new(
            name,
            InstanceSpec {
                host_name: Some("h".into()),
                revision: rev.into(),
                template: Default::default(),
                isolation: Default::default(),
                seccomp_profile_digest: None,
                image_signature: None,
            },
        );
        i.metadata.uid = Some(format!("uid-{name}"));
        i.status = Some(InstanceStatus {
            phase: Some(phase),
            pod_ip: (!ip.is_empty()).then(|| ip.to_string()),
            conditions: vec![new(
                types::READY,
                if ready { status::TRUE } else { status::FALSE },
                "r",
                "",
                None,
                Time(Timestamp::from_second(1).unwrap()),
            )],
            ..Default::default()
        });
        i
    }

    fn svc(ports: Vec<ServicePort>) -> WorkloadService {
        let mut s = WorkloadService::new(
            "web",
            WorkloadServiceSpec {
                workload_name: "web".into(),
                ports,
                preview: true,
            },
        );
        s.metadata.namespace = Some("ns".into());
        s.metadata.uid = Some("svc-uid".into());
        s
    }

    fn port(name: Option<&str>, port: i32, target: Option<i32>) -> ServicePort {
        ServicePort {
            name: name.map(String::from),
            port,
            target_port: target,
            protocol: Protocol::TCP,
        }
    }

    #[test]
    fn only_ready_running_instances_of_the_revision_are_published() {
        let mut deleting = instance("d", "v1", "10.0.0.4", InstancePhase::Running, true);
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(2).unwrap()));
        let all = [
            instance("b", "v1", "10.0.0.2", InstancePhase::Running, true),
            instance("a", "v1", "10.0.0.1", InstancePhase::Running, true),
            instance("unready", "v1", "10.0.0.3", InstancePhase::Running, false),
            instance("starting", "v1", "10.0.0.5", InstancePhase::Starting, true),
            instance("no-ip", "v1", "", InstancePhase::Running, true),
            instance("other", "v2", "10.0.0.6", InstancePhase::Running, true),
            deleting,
        ];
        let ready = ready_instances(&all, Some("v1"));
        let ips: Vec<&str> = ready.iter().map(|r| r.ip.as_str()).collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);
        assert!(
            ready_instances(&all, None).is_empty(),
            "no revision, no endpoints"
        );
        assert_eq!(
            endpoint_strings(
                &ready,
                &[port(Some("http"), 80, Some(8080)), port(Some("m"), 9, None)]
            ),
            ["10.0.0.1:8080", "10.0.0.1:9", "10.0.0.2:8080", "10.0.0.2:9"]
        );
    }

    #[test]
    fn service_and_slice_agree_on_ports_and_name_the_service() {
        let s = svc(vec![port(Some("http"), 80, Some(8080))]);
        let ready = vec![Ready {
            ip: "10.0.0.1".into(),
            name: "web-v1-0".into(),
            uid: "u".into(),
        }];
        let service = service(&s, "web", "active");
        assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);
        assert!(service["spec"].get("selector").is_none(), "selectorless");
        assert_eq!(service["metadata"]["ownerReferences"][0]["uid"], "svc-uid");
        let slice = endpoint_slice(&s, "web", "active", Some("v1"), &ready);
        let l = &slice["metadata"]["labels"];
        assert_eq!(l["kubernetes.io/service-name"], "web");
        assert_eq!(l["endpointslice.kubernetes.io/managed-by"], SLICE_MANAGER);
        assert_eq!(slice["ports"][0]["name"], "http");
        assert_eq!(slice["ports"][0]["port"], 8080);
        assert_eq!(slice["endpoints"][0]["addresses"][0], "10.0.0.1");
        assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(
            slice["metadata"]["annotations"]["bulkhead.dev/revision"],
            "v1"
        );
        let empty = endpoint_slice(&s, "web-preview", "preview", None, &[]);
        assert_eq!(empty["endpoints"], json!([]));
    }
}
