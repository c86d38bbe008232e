//! SELinux MCS category pairs (sVirt separation): each live instance on a host gets a pair
//! `s0:cX,cY` that no other live instance there holds, so that even two instances of the same
//! type `container_t` cannot touch each other's files or processes.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use super::{AllocError, SlotConflict, SlotPool};

/// The number of MCS categories the default SELinux policy defines: c0 to c1023.
pub const CATEGORIES: u16 = 1024;

/// Two distinct MCS categories, `low < high <= 1023`, written `s0:c<low>,c<high>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct McsPair {
    low: u16,
    high: u16,
}

/// A malformed MCS pair or category range.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum McsError {
    /// A category number above c1023.
    #[error("MCS category c{category} is out of range: categories are c0 to c1023")]
    OutOfRange {
        /// The category.
        category: u16,
    },
    /// The categories are equal or in the wrong order.
    #[error("MCS pair c{low},c{high} must name two different categories, lower first")]
    NotAscending {
        /// The first category.
        low: u16,
        /// The second category.
        high: u16,
    },
    /// The text is not of the form `s0:cX,cY`.
    #[error("MCS level {value:?} is malformed: expected the form s0:c12,c345")]
    Malformed {
        /// The text as given.
        value: String,
    },
    /// An allocator over fewer than two, or more than 1024, categories.
    #[error("an MCS allocator needs between 2 and 1024 categories, not {count}")]
    CategoryCount {
        /// The number asked for.
        count: u16,
    },
}

impl McsPair {
    /// The pair `c<low>,c<high>`.
    pub fn new(low: u16, high: u16) -> Result<Self, McsError> {
        if high >= CATEGORIES {
            return Err(McsError::OutOfRange { category: high });
        }
        if low >= high {
            return Err(McsError::NotAscending { low, high });
        }
        Ok(Self { low, high })
    }

    /// The lower category.
    pub fn low(self) -> u16 {
        self.low
    }

    /// The higher category.
    pub fn high(self) -> u16 {
        self.high
    }

    /// The SELinux level, `s0:c12,c345`.
    pub fn level(self) -> String {
        format!("s0:c{},c{}", self.low, self.high)
    }

    /// The pair's position in the enumeration (c0,c1), (c0,c2), (c1,c2), (c0,c3), ...
    fn index(self) -> u32 {
        let high = u32::from(self.high);
        high * (high - 1) / 2 + u32::from(self.low)
    }

    fn from_index(index: u32) -> Self {
        // The largest `high` with high * (high - 1) / 2 <= index.
        let mut high = ((1.0 + (1.0 + 8.0 * f64::from(index)).sqrt()) / 2.0) as u32;
        while high * (high - 1) / 2 > index {
            high -= 1;
        }
        while (high + 1) * high / 2 <= index {
            high += 1;
        }
        let low = index - high * (high - 1) / 2;
        // Both fit in u16: callers only pass indexes below the capacity of 1024 categories.
        Self {
            low: low as u16,
            high: high as u16,
        }
    }
}

impl fmt::Display for McsPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s0:c{},c{}", self.low, self.high)
    }
}

impl FromStr for McsPair {
    type Err = McsError;

    /// Parses `s0:c12,c345`, the form [`McsPair::level`] writes. Category numbers have no
    /// leading zeros, so that every pair has one spelling.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let malformed = || McsError::Malformed {
            value: value.to_owned(),
        };
        let categories = value.strip_prefix("s0:").ok_or_else(malformed)?;
        let (low, high) = categories.split_once(',').ok_or_else(malformed)?;
        let category = |c: &str| -> Result<u16, McsError> {
            let digits = c.strip_prefix('c').ok_or_else(malformed)?;
            let canonical = !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'))
                && digits.len() <= 4;
            if !canonical {
                return Err(malformed());
            }
            digits.parse().map_err(|_| malformed())
        };
        Self::new(category(low)?, category(high)?)
    }
}

/// Hands out MCS pairs to owners (Instance UIDs), one pair per owner, never the same pair to
/// two live owners.
#[derive(Debug, Clone)]
pub struct McsAllocator {
    categories: u16,
    slots: SlotPool,
}

impl Default for McsAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl McsAllocator {
    /// An allocator over all 1024 categories: 523776 pairs.
    pub fn new() -> Self {
        Self {
            categories: CATEGORIES,
            slots: SlotPool::new(pair_count(CATEGORIES)),
        }
    }

    /// An allocator over categories c0 to c(count-1) only.
    pub fn with_categories(count: u16) -> Result<Self, McsError> {
        if !(2..=CATEGORIES).contains(&count) {
            return Err(McsError::CategoryCount { count });
        }
        Ok(Self {
            categories: count,
            slots: SlotPool::new(pair_count(count)),
        })
    }

    /// The owner's pair: the one it holds, or a free one.
    pub fn allocate(&mut self, owner: &str) -> Result<McsPair, AllocError> {
        self.slots
            .allocate(owner)
            .map(McsPair::from_index)
            .ok_or(AllocError::Exhausted {
                kind: KIND,
                capacity: u64::from(self.slots.capacity()),
            })
    }

    /// Records that `owner` holds `pair`, as read back from a running container's labels.
    /// Restoring what the owner already holds is a no-op.
    pub fn restore(&mut self, owner: &str, pair: McsPair) -> Result<(), AllocError> {
        if pair.high >= self.categories {
            return Err(AllocError::OutsidePool {
                kind: KIND,
                item: pair.level(),
                owner: owner.to_owned(),
                pool: format!("c0.c{}", self.categories - 1),
            });
        }
        self.slots
            .restore(owner, pair.index())
            .map_err(|conflict| match conflict {
                SlotConflict::HeldBy(holder) => AllocError::HeldByAnother {
                    kind: KIND,
                    item: pair.level(),
                    owner: owner.to_owned(),
                    holder,
                },
                SlotConflict::OwnerHolds(held) => AllocError::OwnerHoldsAnother {
                    kind: KIND,
                    owner: owner.to_owned(),
                    held: McsPair::from_index(held).level(),
                    requested: pair.level(),
                },
            })
    }

    /// Frees the owner's pair and returns it.
    pub fn release(&mut self, owner: &str) -> Option<McsPair> {
        self.slots.release(owner).map(McsPair::from_index)
    }

    /// The owner's pair, if it holds one.
    pub fn get(&self, owner: &str) -> Option<McsPair> {
        self.slots.get(owner).map(McsPair::from_index)
    }

    /// How many pairs are held.
    pub fn in_use(&self) -> usize {
        self.slots.in_use()
    }

    /// How many pairs exist in this allocator's categories.
    pub fn capacity(&self) -> u32 {
        self.slots.capacity()
    }

    /// Every owner and its pair, ordered by owner.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, McsPair)> + '_ {
        self.slots
            .iter()
            .map(|(owner, slot)| (owner, McsPair::from_index(slot)))
    }
}

const KIND: &str = "MCS pair";

fn pair_count(categories: u16) -> u32 {
    let n = u32::from(categories);
    n * (n - 1) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, HashSet};

    #[test]
    fn level_and_parse_round_trip() {
        let pair = McsPair::new(12, 345).unwrap();
        assert_eq!(pair.level(), "s0:c12,c345");
        assert_eq!(pair.to_string(), "s0:c12,c345");
        assert_eq!("s0:c12,c345".parse::<McsPair>(), Ok(pair));
        assert_eq!(
            "s0:c0,c1023".parse::<McsPair>(),
            Ok(McsPair::new(0, 1023).unwrap())
        );
    }

    #[test]
    fn parse_refuses_bad_levels() {
        for bad in [
            "",
            "s0",
            "s0:",
            "s0:c1",
            "c1,c2",
            "s1:c1,c2",
            "s0:c1,c2,c3",
            "s0:c01,c2",
            "s0:1,2",
            "s0:c1, c2",
            "s0:c-1,c2",
            "s0:c1,c99999",
            "s0:c1.c2",
            "s0:cx,c2",
        ] {
            assert!(
                matches!(bad.parse::<McsPair>(), Err(McsError::Malformed { .. })),
                "{bad:?}"
            );
        }
        assert_eq!(
            "s0:c5,c5".parse::<McsPair>(),
            Err(McsError::NotAscending { low: 5, high: 5 })
        );
        assert_eq!(
            "s0:c9,c3".parse::<McsPair>(),
            Err(McsError::NotAscending { low: 9, high: 3 })
        );
        assert_eq!(
            "s0:c1,c1024".parse::<McsPair>(),
            Err(McsError::OutOfRange { category: 1024 })
        );
    }

    #[test]
    fn index_enumerates_every_pair_once() {
        let allocator = McsAllocator::new();
        assert_eq!(allocator.capacity(), 1024 * 1023 / 2);
        let mut expected = 0;
        for high in 1..CATEGORIES {
            for low in 0..high {
                let pair = McsPair::new(low, high).unwrap();
                assert_eq!(pair.index(), expected);
                assert_eq!(McsPair::from_index(expected), pair);
                expected += 1;
            }
        }
        assert_eq!(expected, allocator.capacity());
    }

    #[test]
    fn allocate_is_idempotent_and_distinct() {
        let mut mcs = McsAllocator::new();
        let a = mcs.allocate("uid-a").unwrap();
        let b = mcs.allocate("uid-b").unwrap();
        assert_ne!(a, b);
        assert_eq!(mcs.allocate("uid-a").unwrap(), a);
        assert_eq!(mcs.get("uid-a"), Some(a));
        assert_eq!(mcs.in_use(), 2);
        assert_eq!(mcs.release("uid-a"), Some(a));
        assert_eq!(mcs.release("uid-a"), None);
        assert_eq!(mcs.get("uid-a"), None);
        assert_eq!(mcs.in_use(), 1);
    }

    #[test]
    fn restore_refuses_conflicts() {
        let mut mcs = McsAllocator::new();
        let a = mcs.allocate("uid-a").unwrap();
        assert!(
            mcs.restore("uid-a", a).is_ok(),
            "restoring what is held is a no-op"
        );
        let err = mcs.restore("uid-b", a).unwrap_err();
        assert!(
            matches!(&err, AllocError::HeldByAnother { holder, .. } if holder == "uid-a"),
            "{err}"
        );
        assert!(err.to_string().contains(&a.level()));
        let other = McsPair::new(a.low() ^ 1, 1023).unwrap();
        assert!(matches!(
            mcs.restore("uid-a", other),
            Err(AllocError::OwnerHoldsAnother { .. })
        ));
        let small = McsAllocator::with_categories(4);
        assert!(matches!(
            small.unwrap().restore("uid-c", McsPair::new(1, 4).unwrap()),
            Err(AllocError::OutsidePool { .. })
        ));
    }

    #[test]
    fn exhaustion_is_an_error() {
        let mut mcs = McsAllocator::with_categories(3).unwrap();
        let pairs: HashSet<_> = (0..3)
            .map(|i| mcs.allocate(&format!("o{i}")).unwrap())
            .collect();
        assert_eq!(pairs.len(), 3);
        let err = mcs.allocate("o3").unwrap_err();
        assert_eq!(
            err,
            AllocError::Exhausted {
                kind: "MCS pair",
                capacity: 3
            }
        );
        assert!(McsAllocator::with_categories(1).is_err());
        assert!(McsAllocator::with_categories(1025).is_err());
    }

    #[test]
    fn the_whole_pool_can_be_allocated() {
        let mut mcs = McsAllocator::new();
        let mut seen = vec![false; mcs.capacity() as usize];
        for i in 0..mcs.capacity() {
            let pair = mcs.allocate(&format!("uid-{i}")).unwrap();
            assert!(!std::mem::replace(&mut seen[pair.index() as usize], true));
        }
        assert!(matches!(
            mcs.allocate("late"),
            Err(AllocError::Exhausted { .. })
        ));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(usize),
        Release(usize),
        /// Restore owner `.0` with the pair currently held by owner `.1`, or with pair index
        /// `.2` when `.1` holds none.
        Restore(usize, usize, u32),
    }

    fn ops(owners: usize, capacity: u32) -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            4 => (0..owners).prop_map(Op::Allocate),
            2 => (0..owners).prop_map(Op::Release),
            1 => (0..owners, 0..owners, 0..capacity).prop_map(|(a, b, i)| Op::Restore(a, b, i)),
        ];
        proptest::collection::vec(op, 1..200)
    }

    fn check_invariants(mcs: &McsAllocator, model: &BTreeMap<String, McsPair>) {
        let live: BTreeMap<String, McsPair> = mcs
            .allocations()
            .map(|(owner, pair)| (owner.to_owned(), pair))
            .collect();
        assert_eq!(&live, model);
        let distinct: HashSet<_> = live.values().collect();
        assert_eq!(distinct.len(), live.len(), "two owners share a pair");
        assert_eq!(mcs.in_use(), live.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random allocate / release / restore sequences over a small pool (so that it runs
        /// full) keep every pair unique, release exactly what was allocated, and a snapshot
        /// restores into an identical allocator.
        #[test]
        fn allocator_invariants(categories in 2u16..8, owners in 1usize..12, seq in ops(12, 28)) {
            let mut mcs = McsAllocator::with_categories(categories).unwrap();
            let capacity = mcs.capacity();
            let name = |i: usize| format!("uid-{i}");
            let mut model: BTreeMap<String, McsPair> = BTreeMap::new();
            for op in seq {
                match op {
                    Op::Allocate(o) => {
                        let o = name(o % owners);
                        match mcs.allocate(&o) {
                            Ok(pair) => {
                                if let Some(held) = model.get(&o) {
                                    prop_assert_eq!(*held, pair);
                                }
                                model.insert(o, pair);
                            }
                            Err(AllocError::Exhausted { .. }) => {
                                prop_assert!(!model.contains_key(&o));
                                prop_assert_eq!(model.len(), mcs.capacity() as usize);
                            }
                            Err(e) => prop_assert!(false, "unexpected {e}"),
                        }
                    }
                    Op::Release(o) => {
                        let o = name(o % owners);
                        prop_assert_eq!(mcs.release(&o), model.remove(&o));
                    }
                    Op::Restore(a, b, index) => {
                        let a = name(a % owners);
                        let pair = model
                            .get(&name(b % owners))
                            .copied()
                            .unwrap_or_else(|| McsPair::from_index(index % capacity));
                        let holder = model.iter().find(|(_, p)| **p == pair).map(|(o, _)| o.clone());
                        let result = mcs.restore(&a, pair);
                        match (model.get(&a), holder) {
                            (Some(held), _) if *held == pair => prop_assert!(result.is_ok()),
                            (Some(_), _) => prop_assert!(
                                matches!(result, Err(AllocError::OwnerHoldsAnother { .. })),
                                "{:?}",
                                result
                            ),
                            (None, Some(holder)) => prop_assert!(
                                matches!(&result, Err(AllocError::HeldByAnother { holder: h, .. }) if *h == holder),
                                "{:?}",
                                result
                            ),
                            (None, None) => {
                                prop_assert!(result.is_ok());
                                model.insert(a, pair);
                            }
                        }
                    }
                }
                check_invariants(&mcs, &model);
            }

            // A restarted agent rebuilds the same map from the labels.
            let mut rebuilt = McsAllocator::with_categories(categories).unwrap();
            for (owner, pair) in mcs.allocations() {
                rebuilt.restore(owner, pair).unwrap();
            }
            check_invariants(&rebuilt, &model);
            for (owner, pair) in &model {
                prop_assert_eq!(rebuilt.allocate(owner).unwrap(), *pair);
            }

            // Releasing everything frees everything: the whole pool is allocatable again.
            for owner in model.keys() {
                prop_assert!(mcs.release(owner).is_some());
            }
            prop_assert_eq!(mcs.in_use(), 0);
            let again: HashSet<_> = (0..mcs.capacity())
                .map(|i| mcs.allocate(&format!("fresh-{i}")).unwrap())
                .collect();
            prop_assert_eq!(again.len(), mcs.capacity() as usize);
            prop_assert!(mcs.allocate("one-too-many").is_err());
        }

        /// Over the full 1024 categories, owners never share a pair.
        #[test]
        fn full_range_pairs_are_unique(seq in ops(64, 523_776)) {
            let mut mcs = McsAllocator::new();
            let mut model: BTreeMap<String, McsPair> = BTreeMap::new();
            for op in seq {
                match op {
                    Op::Allocate(o) | Op::Restore(o, _, _) => {
                        let o = format!("uid-{o}");
                        let pair = mcs.allocate(&o).unwrap();
                        prop_assert!(pair.high() < CATEGORIES && pair.low() < pair.high());
                        model.insert(o, pair);
                    }
                    Op::Release(o) => {
                        let o = format!("uid-{o}");
                        prop_assert_eq!(mcs.release(&o), model.remove(&o));
                    }
                }
                check_invariants(&mcs, &model);
            }
        }
    }
}
