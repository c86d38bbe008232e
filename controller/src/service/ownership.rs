//! Which Services and EndpointSlices a WorkloadService may touch (pure).
//!
//! A WorkloadService `web` writes four objects: the Service and EndpointSlice `web`, and with
//! `preview: true` the Service and EndpointSlice `web-preview`. It owns one only when the
//! object's controller owner reference carries its UID. Anything else with one of those names
//! (a Service a person made, a slice another controller writes, the objects of another
//! WorkloadService called `web-preview`) is never written, adopted or deleted: the
//! WorkloadService reports a `ServiceConflict` instead and publishes the rest.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The Ready condition's reason while a name is taken by an object this WorkloadService does
/// not own.
pub const SERVICE_CONFLICT: &str = "ServiceConflict";

/// Service or EndpointSlice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A core/v1 Service.
    Service,
    /// A discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }
}

/// The active objects or the preview ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// `<name>`: the active revision.
    Active,
    /// `<name>-preview`: the preview revision.
    Preview,
}

impl Role {
    /// The value of the `bulkhead.dev/role` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Preview => "preview",
        }
    }
}

/// What is stored under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Nothing.
    Absent,
    /// An object controlled by this WorkloadService, with its UID.
    Ours(String),
    /// Someone else's object.
    Foreign,
}

/// Whose the stored object is: ours only when its controller owner reference names `owner_uid`.
pub fn claim(meta: Option<&ObjectMeta>, owner_uid: &str) -> Claim {
    let Some(meta) = meta else {
        return Claim::Absent;
    };
    let ours = !owner_uid.is_empty()
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.uid == owner_uid);
    match (ours, &meta.uid) {
        (true, Some(uid)) => Claim::Ours(uid.clone()),
        _ => Claim::Foreign,
    }
}

/// One of the four names, and what holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Service or EndpointSlice.
    pub kind: Kind,
    /// Active or preview.
    pub role: Role,
    /// The object's name.
    pub name: String,
    /// What is stored under it.
    pub claim: Claim,
}

/// What to do with the four names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Objects to create or update (server-side apply).
    pub apply: Vec<(Kind, Role, String)>,
    /// Objects of ours to delete, with the UID that must still match.
    pub delete: Vec<(Kind, String, String)>,
    /// One message per name taken by someone else's object that this WorkloadService wants.
    pub conflicts: Vec<String>,
}

/// Applies the wanted names that are free or ours, deletes the unwanted ones that are ours,
/// and leaves every foreign object alone. A slice is not wanted when its Service is someone
/// else's: it would add endpoints to their Service.
pub fn plan(namespace: &str, preview: bool, slots: &[Slot]) -> Plan {
    let mut plan = Plan::default();
    let service_taken = |role: Role| {
        slots
            .iter()
            .any(|s| s.kind == Kind::Service && s.role == role && s.claim == Claim::Foreign)
    };
    for slot in slots {
        let wanted = (slot.role == Role::Active || preview)
            && !(slot.kind == Kind::EndpointSlice && service_taken(slot.role));
        match (wanted, &slot.claim) {
            (true, Claim::Absent | Claim::Ours(_)) => {
                plan.apply.push((slot.kind, slot.role, slot.name.clone()));
            }
            (true, Claim::Foreign) => plan.conflicts.push(format!(
                "{} {namespace}/{} exists and is not owned by this WorkloadService: \
                 delete it or rename the WorkloadService",
                slot.kind.as_str(),
                slot.name
            )),
            (false, Claim::Ours(uid)) => {
                plan.delete
                    .push((slot.kind, slot.name.clone(), uid.clone()));
            }
            (false, Claim::Absent | Claim::Foreign) => {}
        }
    }
    // A cutover changes only the slices: write them first, before the Services that exist
    // already (a new Service still goes before its slice).
    let exists = |kind: Kind, role: Role| {
        slots
            .iter()
            .any(|s| s.kind == kind && s.role == role && matches!(s.claim, Claim::Ours(_)))
    };
    plan.apply
        .sort_by_key(|(kind, role, _)| *kind == Kind::Service && exists(*kind, *role));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn meta(uid: &str, owner: Option<(&str, bool)>) -> ObjectMeta {
        ObjectMeta {
            uid: Some(uid.into()),
            owner_references: owner.map(|(owner_uid, controller)| {
                vec![OwnerReference {
                    api_version: "bulkhead.dev/v1alpha1".into(),
                    kind: "WorkloadService".into(),
                    name: "web".into(),
                    uid: owner_uid.into(),
                    controller: Some(controller),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ours_only_by_the_controller_reference_uid() {
        assert_eq!(claim(None, "me"), Claim::Absent);
        assert_eq!(
            claim(Some(&meta("o1", Some(("me", true)))), "me"),
            Claim::Ours("o1".into())
        );
        for hostile in [
            meta("o1", None),                  // a Service a person made
            meta("o1", Some(("other", true))), // another WorkloadService's (say web-preview)
            meta("o1", Some(("me", false))),   // a mere owner, not the controller
        ] {
            assert_eq!(claim(Some(&hostile), "me"), Claim::Foreign, "{hostile:?}");
        }
        assert_eq!(
            claim(Some(&meta("o1", Some(("", true)))), ""),
            Claim::Foreign,
            "an unsaved WorkloadService owns nothing"
        );
    }

    fn slots(claims: [Claim; 4]) -> Vec<Slot> {
        let names = [
            (Kind::Service, Role::Active, "web"),
            (Kind::EndpointSlice, Role::Active, "web"),
            (Kind::Service, Role::Preview, "web-preview"),
            (Kind::EndpointSlice, Role::Preview, "web-preview"),
        ];
        names
            .into_iter()
            .zip(claims)
            .map(|((kind, role, name), claim)| Slot {
                kind,
                role,
                name: name.into(),
                claim,
            })
            .collect()
    }

    #[test]
    fn existing_slices_are_written_before_existing_services() {
        let ours = slots([
            Claim::Ours("s1".into()),
            Claim::Ours("e1".into()),
            Claim::Absent,
            Claim::Absent,
        ]);
        assert_eq!(
            plan("ns", false, &ours).apply,
            [
                (Kind::EndpointSlice, Role::Active, "web".to_string()),
                (Kind::Service, Role::Active, "web".to_string()),
            ]
        );
    }

    #[test]
    fn a_foreign_preview_service_is_neither_written_nor_deleted() {
        let taken = slots([
            Claim::Absent,
            Claim::Ours("s1".into()),
            Claim::Foreign,
            Claim::Absent,
        ]);
        let with_preview = plan("ns", true, &taken);
        assert_eq!(
            with_preview.apply,
            [
                (Kind::Service, Role::Active, "web".to_string()),
                (Kind::EndpointSlice, Role::Active, "web".to_string()),
            ],
            "no slice that would add endpoints to someone else's Service"
        );
        assert!(with_preview.delete.is_empty());
        assert_eq!(
            with_preview.conflicts,
            [
                "Service ns/web-preview exists and is not owned by this WorkloadService: delete it or rename the WorkloadService"
            ]
        );
        let without = plan("ns", false, &taken);
        assert!(without.delete.is_empty(), "someone else's preview survives");
        assert!(
            without.conflicts.is_empty(),
            "an unwanted name is no conflict"
        );
    }

    #[test]
    fn our_preview_objects_go_when_preview_is_off() {
        let ours = slots([
            Claim::Ours("a".into()),
            Claim::Ours("b".into()),
            Claim::Ours("c".into()),
            Claim::Ours("d".into()),
        ]);
        let p = plan("ns", false, &ours);
        assert_eq!(
            p.delete,
            [
                (Kind::Service, "web-preview".to_string(), "c".to_string()),
                (
                    Kind::EndpointSlice,
                    "web-preview".to_string(),
                    "d".to_string()
                ),
            ]
        );
        assert_eq!(p.apply.len(), 2);
        assert!(p.conflicts.is_empty());
    }

    #[test]
    fn our_slice_behind_a_foreign_service_is_removed() {
        let p = plan(
            "ns",
            false,
            &slots([
                Claim::Foreign,
                Claim::Ours("s".into()),
                Claim::Absent,
                Claim::Absent,
            ]),
        );
        assert!(p.apply.is_empty());
        assert_eq!(
            p.delete,
            [(Kind::EndpointSlice, "web".to_string(), "s".to_string())]
        );
        assert_eq!(p.conflicts.len(), 1);
    }

    #[test]
    fn a_foreign_active_slice_is_a_conflict() {
        let p = plan(
            "ns",
            false,
            &slots([Claim::Absent, Claim::Foreign, Claim::Absent, Claim::Absent]),
        );
        assert_eq!(p.apply, [(Kind::Service, Role::Active, "web".to_string())]);
        assert_eq!(p.conflicts.len(), 1);
        assert!(p.conflicts[0].starts_with("EndpointSlice ns/web "));
    }
}
