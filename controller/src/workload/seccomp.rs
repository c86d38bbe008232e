//! Seccomp profile versions: a Workload's revision names the exact SeccompProfile content it
//! runs with, so editing a profile rolls the Workload out instead of changing what runs.
//!
//! For seccomp type Localhost or Complain the controller reads the named profile and takes
//! its content digest ([`SeccompProfileSpec::content_digest`]). The digest is mixed into the
//! revision hash and written into each new Instance (`spec.seccompProfileDigest`); the node
//! agent starts an instance only with a profile of exactly that content.
//!
//! A profile that is deleted while instances pin it is not a new revision: the digest those
//! instances pin is kept, so nothing rolls out, and a replacement instance fails with
//! `SeccompProfileNotFound`. A profile that never existed leaves the digest unset: the
//! instance is created and the agent reports `SeccompProfileNotFound` on it, as for an
//! Instance created by hand.

use bulkhead_crds::{
    Instance, InstanceTemplate, Isolation, LABEL_WORKLOAD, SeccompProfile, Workload,
    isolation::SeccompType, seccomp::SeccompProfileSpec,
};
use kube::{
    Api, ResourceExt,
    api::ListParams,
    runtime::reflector::{ObjectRef, Store},
};
use sha2::{Digest, Sha256};

use super::revision::revision;
use crate::{Context, Error};

/// Writes a SeccompProfile's `status.digest` (its version) and `status.syscallCount` when
/// they are not yet those of its spec (server-side apply, field manager
/// `bulkhead-controller`; the agent adds `recordedFrom` to profiles it records).
pub async fn report(
    profile: std::sync::Arc<SeccompProfile>,
    ctx: std::sync::Arc<Context>,
) -> Result<kube::runtime::controller::Action, Error> {
    let digest = pinned(&profile.spec);
    let count = i32::try_from(profile.spec.syscall_count()).unwrap_or(i32::MAX);
    let status = profile.status.clone().unwrap_or_default();
    if status.digest.as_deref() != Some(digest.as_str()) || status.syscall_count != Some(count) {
        let ns = profile
            .namespace()
            .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
        let api: Api<SeccompProfile> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({
            "apiVersion": "bulkhead.dev/v1alpha1",
            "kind": "SeccompProfile",
            "status": {"digest": digest, "syscallCount": count},
        });
        api.patch_status(
            &profile.name_any(),
            &kube::api::PatchParams::apply(bulkhead_crds::MANAGER_CONTROLLER).force(),
            &kube::api::Patch::Apply(&patch),
        )
        .await?;
    }
    Ok(kube::runtime::controller::Action::await_change())
}

/// The profile a Workload's seccomp settings name, when they name one.
pub fn profile_name(isolation: &Isolation) -> Option<&str> {
    match isolation.seccomp.type_ {
        SeccompType::Localhost | SeccompType::Complain => {
            isolation.seccomp.localhost_profile.as_deref()
        }
        _ => None,
    }
}

/// The content digest of the profile the Workload names; when the profile is gone, the
/// digest its current instances pin; `None` when it names no profile or none was ever seen.
pub async fn resolve(ctx: &Context, wl: &Workload) -> Result<Option<String>, Error> {
    let Some(name) = profile_name(&wl.spec.isolation) else {
        return Ok(None);
    };
    let ns = wl
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let api: Api<SeccompProfile> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(p) = api.get_opt(name).await? {
        return Ok(Some(pinned(&p.spec)));
    }
    let instances: Api<Instance> = Api::namespaced(ctx.client.clone(), &ns);
    let owned = instances
        .list(&ListParams::default().labels(&format!("{LABEL_WORKLOAD}={}", wl.name_any())))
        .await?
        .items;
    Ok(pinned_by_instances(wl, &owned))
}

/// The digest pinned by an instance of the Workload's current template and isolation: one of
/// the revision the status last called current first, then one that is not being deleted
/// (an older version of the profile may still be pinned by an instance on its way out).
pub fn pinned_by_instances(wl: &Workload, instances: &[Instance]) -> Option<String> {
    let current = wl
        .status
        .as_ref()
        .and_then(|s| s.update_revision.as_deref());
    let mut candidates: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.spec.template == wl.spec.template && i.spec.isolation == wl.spec.isolation)
        .filter(|i| i.spec.seccomp_profile_digest.is_some())
        .collect();
    candidates.sort_by_key(|i| {
        (
            Some(i.spec.revision.as_str()) != current,
            i.metadata.deletion_timestamp.is_some(),
        )
    });
    candidates
        .first()
        .and_then(|i| i.spec.seccomp_profile_digest.clone())
}

/// The digest an Instance pins for a profile spec.
pub fn pinned(spec: &SeccompProfileSpec) -> String {
    spec.content_digest()
}

/// The revision of a template and isolation with the profile version they use. Without a
/// profile digest it is exactly [`revision`], so Workloads without a profile keep their
/// revisions.
pub fn revision_with_profile(
    template: &InstanceTemplate,
    isolation: &Isolation,
    profile_digest: Option<&str>,
) -> String {
    match profile_digest {
        None => revision(template, isolation),
        Some(d) => {
            let json = serde_json::to_vec(&(template, isolation, d)).unwrap_or_default();
            hex::encode(Sha256::digest(json))[..10].to_string()
        }
    }
}

/// The Workloads in the profile's namespace that name it, to reconcile when it changes.
pub fn workloads_using(
    store: &Store<Workload>,
    profile: &SeccompProfile,
) -> Vec<ObjectRef<Workload>> {
    let ns = profile.namespace();
    let name = profile.name_any();
    store
        .state()
        .iter()
        .filter(|wl| {
            wl.namespace() == ns && profile_name(&wl.spec.isolation) == Some(name.as_str())
        })
        .map(|wl| ObjectRef::from_obj(wl.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use bulkhead_crds::isolation::Seccomp;

    use super::*;

    fn localhost(name: &str) -> Isolation {
        Isolation {
            seccomp: Seccomp {
                type_: SeccompType::Localhost,
                localhost_profile: Some(name.into()),
            },
            ..Default::default()
        }
    }

    fn profile(names: &[&str]) -> SeccompProfileSpec {
        SeccompProfileSpec::allowlist(names.iter().map(|s| s.to_string()), "")
    }

    #[test]
    fn a_new_profile_version_is_a_new_revision() {
        let t = InstanceTemplate {
            image: "web:v1".into(),
            ..Default::default()
        };
        let i = localhost("web-recorded");
        let v1 = pinned(&profile(&["read", "write"]));
        let v2 = pinned(&profile(&["read", "write", "openat"]));
        assert_ne!(v1, v2);
        assert_eq!(v1, pinned(&profile(&["read", "write"])));
        assert!(v1.starts_with("sha256:") && v1.len() == 7 + 64);
        let r1 = revision_with_profile(&t, &i, Some(&v1));
        assert_eq!(r1, revision_with_profile(&t, &i, Some(&v1)));
        assert_ne!(r1, revision_with_profile(&t, &i, Some(&v2)));
        assert_ne!(r1, revision_with_profile(&t, &i, None));
        assert_eq!(revision_with_profile(&t, &i, None), revision(&t, &i));
        assert_eq!(r1.len(), 10);
    }

    #[test]
    fn a_deleted_profile_keeps_the_version_current_instances_pin() {
        let wl = Workload::new(
            "web",
            serde_json::from_value(serde_json::json!({
                "owner": "t",
                "template": {"image": "web:v1"},
                "isolation": {"seccomp": {"type": "Localhost", "localhostProfile": "p"}},
            }))
            .unwrap(),
        );
        let inst = |image: &str, digest: Option<&str>| {
            let mut i = Instance::new(
                "i",
                bulkhead_crds::InstanceSpec {
                    host_name: None,
                    revision: "r".into(),
                    template: wl.spec.template.clone(),
                    isolation: wl.spec.isolation.clone(),
                    seccomp_profile_digest: digest.map(String::from),
                    image_signature: None,
                },
            );
            i.spec.template.image = image.into();
            i
        };
        assert_eq!(pinned_by_instances(&wl, &[]), None);
        assert_eq!(
            pinned_by_instances(
                &wl,
                &[inst("web:v0", Some("sha256:old")), inst("web:v1", None)]
            ),
            None,
            "only an instance of the current template counts"
        );
        assert_eq!(
            pinned_by_instances(
                &wl,
                &[
                    inst("web:v0", Some("sha256:old")),
                    inst("web:v1", Some("sha256:cur"))
                ]
            ),
            Some("sha256:cur".into())
        );
        // The profile was edited (same template, new revision), then deleted: the instance of
        // the current revision wins over the one of the old version on its way out.
        let mut wl = wl.clone();
        wl.status = Some(bulkhead_crds::WorkloadStatus {
            update_revision: Some("new".into()),
            ..Default::default()
        });
        let mut leaving = inst("web:v1", Some("sha256:v1"));
        leaving.spec.revision = "old".into();
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(1).unwrap(),
            ));
        let mut current = inst("web:v1", Some("sha256:v2"));
        current.spec.revision = "new".into();
        assert_eq!(
            pinned_by_instances(&wl, &[leaving, current]),
            Some("sha256:v2".into())
        );
    }

    #[test]
    fn only_localhost_and_complain_name_a_profile() {
        let mut i = localhost("p");
        assert_eq!(profile_name(&i), Some("p"));
        i.seccomp.type_ = SeccompType::Complain;
        assert_eq!(profile_name(&i), Some("p"));
        i.seccomp.type_ = SeccompType::RuntimeDefault;
        assert_eq!(profile_name(&i), None);
        i.seccomp.type_ = SeccompType::Record;
        assert_eq!(profile_name(&i), None);
    }
}
