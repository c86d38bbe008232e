//! The rollout planner: a pure function from what is observed to what to do next.
//!
//! No client, no clock, no randomness: [`plan`] takes a snapshot of a Workload's instances
//! and returns the creations and deletions that move it one safe step towards `replicas`
//! instances of the update revision, within maxSurge and maxUnavailable, as Kubernetes'
//! Deployment controller does. The executor applies the actions; the next observation
//! plans the next step.

use std::collections::BTreeSet;

/// What the planner needs to know about one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedInstance {
    /// Instance name.
    pub name: String,
    /// Revision it runs.
    pub revision: String,
    /// Running and passing readiness.
    pub ready: bool,
    /// Ready for at least minReadySeconds.
    pub available: bool,
    /// The agent read back the isolation the kernel enforces and it matches the spec
    /// (IsolationVerified=True).
    pub verified: bool,
    /// Failed, Succeeded or Lost: it will not become ready again and must be replaced.
    pub finished: bool,
    /// Being deleted already.
    pub deleting: bool,
    /// On a draining host: to be replaced elsewhere, then deleted.
    pub evicting: bool,
}

/// Rolling update limits, already resolved to instance counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Instances allowed above replicas.
    pub max_surge: i32,
    /// Instances allowed below replicas, counting only available ones.
    pub max_unavailable: i32,
}

/// The desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Number of instances.
    pub replicas: i32,
    /// The revision of the current spec.
    pub update_revision: String,
    /// Rolling limits.
    pub limits: Limits,
    /// spec.paused: keep replicas, make no rollout progress.
    pub paused: bool,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Create an instance of the update revision with this name.
    Create(String),
    /// Delete this instance.
    Delete(String),
}

/// Resolves an integer or percentage of `replicas`: surge rounds up, unavailable rounds
/// down, and when both come out 0, maxUnavailable becomes 1 so that a rollout can progress.
pub fn resolve_limits(
    replicas: i32,
    max_surge: &IntOrPercent,
    max_unavailable: &IntOrPercent,
) -> Limits {
    let surge = max_surge.resolve(replicas, true);
    let mut unavailable = max_unavailable.resolve(replicas, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Limits {
        max_surge: surge,
        max_unavailable: unavailable.min(replicas.max(0)),
    }
}

/// An integer or a percentage, as in maxSurge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrPercent {
    /// A count.
    Int(i32),
    /// A percentage of replicas.
    Percent(i32),
}

impl IntOrPercent {
    fn resolve(&self, replicas: i32, round_up: bool) -> i32 {
        match *self {
            IntOrPercent::Int(n) => n.max(0),
            IntOrPercent::Percent(p) => {
                let scaled = i64::from(replicas.max(0)) * i64::from(p.clamp(0, 100));
                let v = if round_up {
                    (scaled + 99) / 100
                } else {
                    scaled / 100
                };
                v as i32
            }
        }
    }
}

/// Keeps the `failed` instances in their slots as unready ones instead of finished ones,
/// so that they are neither deleted nor replaced yet (the replacement back-off holds).
pub fn hold(observed: &mut [ObservedInstance], failed: &std::collections::BTreeSet<String>) {
    for o in observed.iter_mut().filter(|o| failed.contains(&o.name)) {
        o.finished = false;
        o.ready = false;
        o.available = false;
        o.verified = false;
    }
}

/// The name of the `index`-th instance slot of a revision. Names are deterministic so that a
/// retried creation collides (AlreadyExists) instead of creating a twin.
pub fn instance_name(workload: &str, revision: &str, index: usize) -> String {
    format!("{workload}-{revision}-{index}")
}

/// Plans the next step for `workload`.
pub fn plan(workload: &str, desired: &Desired, observed: &[ObservedInstance]) -> Vec<Action> {
    let mut actions = Vec::new();
    let replicas = desired.replicas.max(0);
    let update = desired.update_revision.as_str();

    // Finished instances never come back: replace them (their deletion frees the slot).
    for i in observed.iter().filter(|i| i.finished && !i.deleting) {
        actions.push(Action::Delete(i.name.clone()));
    }
    let alive: Vec<&ObservedInstance> = observed
        .iter()
        .filter(|i| !i.finished && !i.deleting)
        .collect();
    let new: Vec<&ObservedInstance> = alive
        .iter()
        .copied()
        .filter(|i| i.revision == update)
        .collect();
    let old: Vec<&ObservedInstance> = alive
        .iter()
        .copied()
        .filter(|i| i.revision != update)
        .collect();
    let taken: BTreeSet<&str> = observed.iter().map(|i| i.name.as_str()).collect();
    let mut names = (0..)
        .map(|n| instance_name(workload, update, n))
        .filter(|n| !taken.contains(n.as_str()));

    if old.is_empty() {
        // Steady state: scale the update revision to replicas.
        actions.extend(scale_revision(&new, replicas, &mut names));
        return actions;
    }
    if desired.paused {
        return actions;
    }

    let Limits {
        max_surge,
        max_unavailable,
    } = desired.limits;
    // Scale up the new revision within the surge budget.
    let total = alive.len() as i32;
    let want_new = replicas - new.len() as i32;
    let room = replicas + max_surge - total;
    let create = want_new.min(room).max(0);
    actions.extend(names.by_ref().take(create as usize).map(Action::Create));

    // Scale down the old revision without dropping below replicas - maxUnavailable
    // available instances (Deployment's reconcileOldReplicaSets).
    let min_available = replicas - max_unavailable;
    let new_unavailable = new.iter().filter(|i| !i.available).count() as i32;
    let mut budget = total - min_available - new_unavailable;
    if budget <= 0 {
        return actions;
    }
    // Old instances that are not available cost no availability: remove them first.
    let (unavailable_old, available_old): (Vec<_>, Vec<_>) =
        scale_down_order(&old).partition(|i| !i.available);
    for i in unavailable_old {
        if budget <= 0 {
            break;
        }
        actions.push(Action::Delete(i.name.clone()));
        budget -= 1;
    }
    let available = alive.iter().filter(|i| i.available).count() as i32;
    let mut can_lose = (available - min_available).min(budget);
    for i in available_old {
        if can_lose <= 0 {
            break;
        }
        actions.push(Action::Delete(i.name.clone()));
        can_lose -= 1;
    }
    actions
}

/// Scales the live instances of one revision to `want`, taking fresh names from `names`.
/// Instances on a draining host do not count: replacements start elsewhere first, and an
/// evicted instance is deleted only while `want` instances stay available without it.
pub(crate) fn scale_revision(
    instances: &[&ObservedInstance],
    want: i32,
    names: &mut impl Iterator<Item = String>,
) -> Vec<Action> {
    let (evicting, staying): (Vec<&ObservedInstance>, Vec<&ObservedInstance>) =
        instances.iter().copied().partition(|i| i.evicting);
    let have = staying.len() as i32;
    let mut actions = Vec::new();
    if have < want {
        actions.extend(names.take((want - have) as usize).map(Action::Create));
    } else if have > want {
        actions.extend(
            scale_down_order(&staying)
                .take((have - want) as usize)
                .map(|i| Action::Delete(i.name.clone())),
        );
    }
    let mut available = instances.iter().filter(|i| i.available).count() as i32;
    for i in scale_down_order(&evicting) {
        if !i.available {
            actions.push(Action::Delete(i.name.clone()));
        } else if available > want {
            actions.push(Action::Delete(i.name.clone()));
            available -= 1;
        }
    }
    actions
}

/// Deletion order: instances that are not ready first, then not yet available, then by name
/// (highest slot, then highest name, first).
pub(crate) fn scale_down_order<'a>(
    instances: &[&'a ObservedInstance],
) -> impl Iterator<Item = &'a ObservedInstance> {
    let mut v: Vec<&ObservedInstance> = instances.to_vec();
    v.sort_by(|a, b| {
        (
            a.ready,
            a.available,
            std::cmp::Reverse(slot(&a.name)),
            std::cmp::Reverse(&a.name),
        )
            .cmp(&(
                b.ready,
                b.available,
                std::cmp::Reverse(slot(&b.name)),
                std::cmp::Reverse(&b.name),
            ))
    });
    v.into_iter()
}

fn slot(name: &str) -> u64 {
    name.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::fixtures::inst;

    fn desired(replicas: i32, surge: i32, unavailable: i32) -> Desired {
        Desired {
            replicas,
            update_revision: "new".into(),
            limits: Limits {
                max_surge: surge,
                max_unavailable: unavailable,
            },
            paused: false,
        }
    }

    fn creates(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Create(_)))
            .count()
    }
    fn deletes(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete(n) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_held_failed_instance_keeps_its_slot_until_the_back_off_lets_it_go() {
        let mut observed = vec![
            inst("w-new-0", "new", true),
            ObservedInstance {
                finished: true,
                ..inst("w-new-1", "new", false)
            },
        ];
        let released = plan("w", &desired(2, 1, 0), &observed);
        assert_eq!(
            (creates(&released), deletes(&released)),
            (1, vec!["w-new-1"])
        );
        hold(&mut observed, &["w-new-1".to_string()].into());
        let held = plan("w", &desired(2, 1, 0), &observed);
        assert!(held.is_empty(), "neither deleted nor replaced: {held:?}");
        assert!(!observed[1].available && !observed[1].ready);
    }

    #[test]
    fn limits_round_like_kubernetes() {
        use IntOrPercent::*;
        assert_eq!(
            resolve_limits(10, &Percent(25), &Int(0)),
            Limits {
                max_surge: 3,
                max_unavailable: 0
            }
        );
        assert_eq!(
            resolve_limits(10, &Percent(0), &Percent(25)),
            Limits {
                max_surge: 0,
                max_unavailable: 2
            }
        );
        assert_eq!(
            resolve_limits(3, &Int(0), &Int(0)),
            Limits {
                max_surge: 0,
                max_unavailable: 1
            },
            "both 0 → 1 unavailable"
        );
        assert_eq!(
            resolve_limits(1, &Percent(25), &Percent(25)),
            Limits {
                max_surge: 1,
                max_unavailable: 0
            }
        );
        assert_eq!(resolve_limits(0, &Percent(100), &Int(5)).max_unavailable, 0);
    }

    /// Table cases: (what, desired, observed) → (creates, deletes).
    #[test]
    fn table() {
        /// (what, desired, observed, creations, deletions)
        type Case<'a> = (&'a str, Desired, Vec<ObservedInstance>, usize, Vec<&'a str>);
        let cases: Vec<Case> = vec![
            ("scale up from nothing", desired(3, 1, 0), vec![], 3, vec![]),
            (
                "scale up partially",
                desired(3, 1, 0),
                vec![inst("w-new-0", "new", true)],
                2,
                vec![],
            ),
            (
                "scale down removes the unready first",
                desired(1, 1, 0),
                vec![
                    inst("w-new-0", "new", true),
                    inst("w-new-1", "new", false),
                    inst("w-new-2", "new", true),
                ],
                0,
                vec!["w-new-1", "w-new-2"],
            ),
            (
                "rollout starts within the surge",
                desired(3, 1, 0),
                vec![
                    inst("a", "old", true),
                    inst("b", "old", true),
                    inst("c", "old", true),
                ],
                1,
                vec![],
            ),
            (
                "an available new instance lets one old go",
                desired(3, 1, 0),
                vec![
                    inst("a", "old", true),
                    inst("b", "old", true),
                    inst("c", "old", true),
                    inst("w-new-0", "new", true),
                ],
                0,
                vec!["c"],
            ),
            (
                "an unavailable new instance holds the old ones",
                desired(3, 1, 0),
                vec![
                    inst("a", "old", true),
                    inst("b", "old", true),
                    inst("c", "old", true),
                    inst("w-new-0", "new", false),
                ],
                0,
                vec![],
            ),
            (
                "maxUnavailable lets old go before new exist",
                desired(4, 0, 2),
                vec![
                    inst("a", "old", true),
                    inst("b", "old", true),
                    inst("c", "old", true),
                    inst("d", "old", true),
                ],
                0,
                vec!["d", "c"],
            ),
            (
                "broken old instances go first and for free",
                desired(3, 1, 0),
                vec![
                    inst("a", "old", true),
                    inst("b", "old", false),
                    inst("c", "old", true),
                    inst("w-new-0", "new", true),
                ],
                0,
                vec!["b"],
            ),
            (
                "finished instances are replaced",
                desired(2, 1, 0),
                vec![
                    inst("w-new-0", "new", true),
                    ObservedInstance {
                        finished: true,
                        ..inst("w-new-1", "new", false)
                    },
                ],
                1,
                vec!["w-new-1"],
            ),
            (
                "instances lost with their host are replaced",
                desired(2, 1, 0),
                vec![
                    inst("w-new-0", "new", true),
                    // phase Lost observes as finished
                    ObservedInstance {
                        finished: true,
                        ..inst("w-new-1", "new", false)
                    },
                    ObservedInstance {
                        finished: true,
                        ..inst("w-new-2", "new", false)
                    },
                ],
                1,
                vec!["w-new-1", "w-new-2"],
            ),
            (
                "deleting instances are not counted twice",
                desired(2, 1, 0),
                vec![
                    inst("w-new-0", "new", true),
                    ObservedInstance {
                        deleting: true,
                        ..inst("w-new-1", "new", true)
                    },
                ],
                1,
                vec![],
            ),
            (
                "paused: no rollout progress",
                Desired {
                    paused: true,
                    ..desired(2, 1, 0)
                },
                vec![inst("a", "old", true), inst("b", "old", true)],
                0,
                vec![],
            ),
            (
                "zero replicas removes everything",
                desired(0, 1, 0),
                vec![inst("w-new-0", "new", true)],
                0,
                vec!["w-new-0"],
            ),
        ];
        for (what, d, observed, want_creates, want_deletes) in cases {
            let actions = plan("w", &d, &observed);
            assert_eq!(creates(&actions), want_creates, "{what}: {actions:?}");
            assert_eq!(deletes(&actions), want_deletes, "{what}: {actions:?}");
        }
    }

    #[test]
    fn created_names_are_deterministic_and_skip_taken_slots() {
        let observed = vec![inst("w-new-0", "new", true), inst("w-new-2", "new", true)];
        let actions = plan("w", &desired(4, 1, 0), &observed);
        assert_eq!(
            actions,
            vec![
                Action::Create("w-new-1".into()),
                Action::Create("w-new-3".into())
            ]
        );
    }

    /// Simulates whole rollouts: new instances become available one step after creation.
    /// At every step the surge and availability bounds hold, and it ends with only the
    /// new revision at replicas.
    #[test]
    fn rollouts_converge_within_bounds() {
        for replicas in 0..7 {
            for surge in 0..3 {
                for unavailable in 0..3 {
                    if surge == 0 && unavailable == 0 {
                        continue;
                    }
                    let d = desired(replicas, surge, unavailable.min(replicas));
                    let mut world: Vec<ObservedInstance> = (0..replicas)
                        .map(|n| inst(&format!("w-old-{n}"), "old", true))
                        .collect();
                    let mut converged = false;
                    for _step in 0..100 {
                        let actions = plan("w", &d, &world);
                        if actions.is_empty() && world.iter().all(|i| i.available) {
                            converged = world.len() as i32 == replicas
                                && world.iter().all(|i| i.revision == "new");
                            break;
                        }
                        // Last step's creations become available now.
                        for i in &mut world {
                            i.available = true;
                            i.ready = true;
                        }
                        for a in &actions {
                            match a {
                                Action::Create(n) => world.push(inst(n, "new", false)),
                                Action::Delete(n) => world.retain(|i| &i.name != n),
                            }
                        }
                        let total = world.len() as i32;
                        let available = world.iter().filter(|i| i.available).count() as i32;
                        assert!(total <= replicas + surge, "surge exceeded: {world:?}");
                        assert!(
                            available >= replicas - d.limits.max_unavailable,
                            "too few available ({replicas},{surge},{unavailable}): {world:?}"
                        );
                    }
                    assert!(
                        converged,
                        "({replicas},{surge},{unavailable}) did not converge: {world:?}"
                    );
                }
            }
        }
    }
}
