//! Host UID/GID ranges for user namespaces: each live instance on a host gets 65536 host IDs
//! that no other live instance there shares, so root inside one instance is an unprivileged
//! ID outside, and distinct from every other instance's IDs.
//!
//! The pool comes from the agent flag `--uid-range-pool <first host uid>:<number of ranges>`,
//! e.g. `1000000000:1024`: ranges `[first + i * 65536, first + (i + 1) * 65536)` for
//! `i < count`. The same numbers serve as GIDs.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use super::{AllocError, SlotConflict, SlotPool};

/// The lowest host ID a pool may use: below it are the host's own system and user IDs.
pub const MIN_HOST_ID: u32 = 65536;

/// The highest host ID a range may contain. 4294967295 is `(uid_t)-1`, which the kernel
/// treats as "no ID" and never maps.
pub const MAX_HOST_ID: u32 = u32::MAX - 1;

/// Host IDs `start..start + size`, mapped to IDs `0..size` inside the instance. `size` is
/// always [`UidRange::SIZE`]: a full 16-bit ID space, so that images with IDs up to 65535
/// (nobody is 65534) map. Build one with [`UidRange::new`], or check a literal with
/// [`UidRange::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UidRange {
    /// The first host ID, which is root inside the instance.
    pub start: u32,
    /// The number of IDs: always 65536.
    pub size: u32,
}

/// A malformed UID range or pool.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum UidRangeError {
    /// The text is not of the expected form.
    #[error("{what} {value:?} is malformed: expected {expected}")]
    Malformed {
        /// What was parsed.
        what: &'static str,
        /// The text as given.
        value: String,
        /// The form expected.
        expected: &'static str,
    },
    /// A range or pool that would reach into the host's own IDs.
    #[error(
        "host UID {first} is below {MIN_HOST_ID}: ranges must not overlap the host's own users; start the pool at {MIN_HOST_ID} or above, e.g. 1000000000"
    )]
    BelowMinimum {
        /// The first host ID asked for.
        first: u32,
    },
    /// A pool of no ranges.
    #[error("the UID range pool must hold at least one range")]
    Empty,
    /// A range or pool that reaches past the largest host ID.
    #[error(
        "{count} range(s) of 65536 IDs from host UID {first} end past {MAX_HOST_ID}; lower the first UID or the number of ranges"
    )]
    Overflow {
        /// The first host ID.
        first: u32,
        /// The number of ranges.
        count: u32,
    },
    /// A range whose size is not 65536.
    #[error("UID ranges are 65536 IDs wide, not {size}")]
    WrongSize {
        /// The size given.
        size: u32,
    },
}

impl UidRange {
    /// The width of every range.
    pub const SIZE: u32 = 65536;

    /// The range of 65536 host IDs starting at `start`.
    pub fn new(start: u32) -> Result<Self, UidRangeError> {
        Self {
            start,
            size: Self::SIZE,
        }
        .check()
    }

    /// The range itself when it is 65536 wide and lies within
    /// [`MIN_HOST_ID`]`..=`[`MAX_HOST_ID`].
    pub fn check(self) -> Result<Self, UidRangeError> {
        if self.size != Self::SIZE {
            return Err(UidRangeError::WrongSize { size: self.size });
        }
        check_span(self.start, 1)?;
        Ok(self)
    }

    /// The last host ID of the range, inclusive.
    pub fn last(self) -> u64 {
        u64::from(self.start) + u64::from(self.size) - 1
    }

    /// Whether the two ranges share a host ID.
    pub fn overlaps(self, other: UidRange) -> bool {
        self.size > 0
            && other.size > 0
            && u64::from(self.start) <= other.last()
            && u64::from(other.start) <= self.last()
    }
}

impl fmt::Display for UidRange {
    /// `<start>:<size>`, e.g. `1000065536:65536`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.start, self.size)
    }
}

impl FromStr for UidRange {
    type Err = UidRangeError;

    /// Parses `<start>:65536`, the form `Display` writes.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (start, size) = parse_pair(value, "UID range", "<first host uid>:65536")?;
        Self { start, size }.check()
    }
}

/// The host's pool of UID ranges and which owner (Instance UID) holds which.
#[derive(Debug, Clone)]
pub struct UidRangePool {
    first: u32,
    count: u32,
    slots: SlotPool,
}

impl UidRangePool {
    /// Parses the `--uid-range-pool` flag: `<first host uid>:<number of ranges>`.
    pub fn parse(value: &str) -> Result<Self, UidRangeError> {
        value.parse()
    }

    /// `count` ranges of 65536 host IDs from `first` on, none held.
    pub fn new(first: u32, count: u32) -> Result<Self, UidRangeError> {
        if count == 0 {
            return Err(UidRangeError::Empty);
        }
        check_span(first, count)?;
        Ok(Self {
            first,
            count,
            slots: SlotPool::new(count),
        })
    }

    /// The first host ID of the pool.
    pub fn first(&self) -> u32 {
        self.first
    }

    /// The owner's range: the one it holds, or a free one.
    pub fn allocate(&mut self, owner: &str) -> Result<UidRange, AllocError> {
        self.slots
            .allocate(owner)
            .map(|slot| self.range(slot))
            .ok_or(AllocError::Exhausted {
                kind: KIND,
                capacity: u64::from(self.count),
            })
    }

    /// Records that `owner` holds `range`, as read back from a running container's labels.
    /// Restoring what the owner already holds is a no-op.
    pub fn restore(&mut self, owner: &str, range: UidRange) -> Result<(), AllocError> {
        let slot = self.slot(range).ok_or_else(|| AllocError::OutsidePool {
            kind: KIND,
            item: range.to_string(),
            owner: owner.to_owned(),
            pool: self.to_string(),
        })?;
        self.slots
            .restore(owner, slot)
            .map_err(|conflict| match conflict {
                SlotConflict::HeldBy(holder) => AllocError::HeldByAnother {
                    kind: KIND,
                    item: range.to_string(),
                    owner: owner.to_owned(),
                    holder,
                },
                SlotConflict::OwnerHolds(held) => AllocError::OwnerHoldsAnother {
                    kind: KIND,
                    owner: owner.to_owned(),
                    held: self.range(held).to_string(),
                    requested: range.to_string(),
                },
            })
    }

    /// Frees the owner's range and returns it.
    pub fn release(&mut self, owner: &str) -> Option<UidRange> {
        self.slots.release(owner).map(|slot| self.range(slot))
    }

    /// The owner's range, if it holds one.
    pub fn get(&self, owner: &str) -> Option<UidRange> {
        self.slots.get(owner).map(|slot| self.range(slot))
    }

    /// How many ranges are held.
    pub fn in_use(&self) -> usize {
        self.slots.in_use()
    }

    /// How many ranges the pool has.
    pub fn capacity(&self) -> u32 {
        self.count
    }

    /// Every owner and its range, ordered by owner.
    pub fn allocations(&self) -> impl Iterator<Item = (&str, UidRange)> + '_ {
        self.slots
            .iter()
            .map(|(owner, slot)| (owner, self.range(slot)))
    }

    fn range(&self, slot: u32) -> UidRange {
        // In bounds: `new` checked that the pool's last range ends within MAX_HOST_ID.
        UidRange {
            start: self.first + slot * UidRange::SIZE,
            size: UidRange::SIZE,
        }
    }

    /// The slot of a range that is exactly one of this pool's ranges.
    fn slot(&self, range: UidRange) -> Option<u32> {
        if range.size != UidRange::SIZE {
            return None;
        }
        let offset = range.start.checked_sub(self.first)?;
        let slot = offset / UidRange::SIZE;
        (offset % UidRange::SIZE == 0 && slot < self.count).then_some(slot)
    }
}

impl fmt::Display for UidRangePool {
    /// `<first host uid>:<number of ranges>`, the flag's form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.first, self.count)
    }
}

impl FromStr for UidRangePool {
    type Err = UidRangeError;

    /// Parses the `--uid-range-pool` flag: `<first host uid>:<number of ranges>`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (first, count) = parse_pair(
            value,
            "--uid-range-pool",
            "<first host uid>:<number of ranges>, e.g. 1000000000:1024",
        )?;
        Self::new(first, count)
    }
}

const KIND: &str = "UID range";

/// Checks that `count` ranges from `first` lie within `MIN_HOST_ID..=MAX_HOST_ID`.
fn check_span(first: u32, count: u32) -> Result<(), UidRangeError> {
    if first < MIN_HOST_ID {
        return Err(UidRangeError::BelowMinimum { first });
    }
    let last = u64::from(first) + u64::from(count) * u64::from(UidRange::SIZE) - 1;
    if last > u64::from(MAX_HOST_ID) {
        return Err(UidRangeError::Overflow { first, count });
    }
    Ok(())
}

fn parse_pair(
    value: &str,
    what: &'static str,
    expected: &'static str,
) -> Result<(u32, u32), UidRangeError> {
    let malformed = || UidRangeError::Malformed {
        what,
        value: value.to_owned(),
        expected,
    };
    let number = |s: &str| -> Result<u32, UidRangeError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        s.parse().map_err(|_| malformed())
    };
    let (a, b) = value.split_once(':').ok_or_else(malformed)?;
    Ok((number(a)?, number(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn parses_the_flag() {
        let pool: UidRangePool = "1000000000:1024".parse().unwrap();
        assert_eq!(pool.first(), 1_000_000_000);
        assert_eq!(pool.capacity(), 1024);
        assert_eq!(pool.in_use(), 0);
        assert_eq!(pool.to_string(), "1000000000:1024");
    }

    #[test]
    fn refuses_bad_flags() {
        for bad in [
            "",
            "1000000000",
            "1000000000:",
            ":10",
            "a:1",
            "1000000000:-1",
            "1000000000:1:2",
            " 1000000000:1",
            "99999999999:1",
        ] {
            assert!(
                matches!(
                    bad.parse::<UidRangePool>(),
                    Err(UidRangeError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            "1000:10".parse::<UidRangePool>().unwrap_err(),
            UidRangeError::BelowMinimum { first: 1000 }
        );
        assert_eq!(
            "65535:1".parse::<UidRangePool>().unwrap_err(),
            UidRangeError::BelowMinimum { first: 65535 }
        );
        assert_eq!(
            "1000000000:0".parse::<UidRangePool>().unwrap_err(),
            UidRangeError::Empty
        );
        // 4294967295 - 65536 + 1 = 4294901760 would end on (uid_t)-1.
        assert!(matches!(
            "4294901760:1".parse::<UidRangePool>(),
            Err(UidRangeError::Overflow { .. })
        ));
        assert!(matches!(
            "4000000000:5000".parse::<UidRangePool>(),
            Err(UidRangeError::Overflow { .. })
        ));
        let err = "65536:65535".parse::<UidRangePool>().unwrap_err();
        assert!(err.to_string().contains("lower the first UID"), "{err}");
    }

    #[test]
    fn the_pool_may_reach_the_last_valid_id() {
        let pool: UidRangePool = "4294901759:1".parse().unwrap();
        let mut pool = pool;
        let range = pool.allocate("a").unwrap();
        assert_eq!(range.last(), u64::from(MAX_HOST_ID));
        // The largest pool: every range above the system IDs.
        let all = UidRangePool::new(
            MIN_HOST_ID,
            (MAX_HOST_ID - MIN_HOST_ID + 1) / UidRange::SIZE,
        );
        assert_eq!(all.unwrap().capacity(), 65534);
    }

    #[test]
    fn range_display_and_parse() {
        let range = UidRange::new(1_000_065_536).unwrap();
        assert_eq!(range.to_string(), "1000065536:65536");
        assert_eq!("1000065536:65536".parse::<UidRange>(), Ok(range));
        assert_eq!(
            "1000065536:1000".parse::<UidRange>(),
            Err(UidRangeError::WrongSize { size: 1000 })
        );
        assert_eq!(range.size, 65536);
        assert_eq!(range.start, 1_000_065_536);
        assert_eq!(range.last(), 1_000_131_071);
        assert!(UidRange::new(0).is_err());
        let narrow = UidRange {
            start: 1_000_000_000,
            size: 1000,
        };
        assert_eq!(narrow.check(), Err(UidRangeError::WrongSize { size: 1000 }));
        let mut pool: UidRangePool = "1000000000:4".parse().unwrap();
        assert!(matches!(
            pool.restore("a", narrow),
            Err(AllocError::OutsidePool { .. })
        ));
    }

    #[test]
    fn allocate_restore_release() {
        let mut pool: UidRangePool = "1000000000:4".parse().unwrap();
        let a = pool.allocate("uid-a").unwrap();
        let b = pool.allocate("uid-b").unwrap();
        assert!(!a.overlaps(b));
        assert_eq!(pool.allocate("uid-a"), Ok(a));
        assert_eq!(pool.get("uid-b"), Some(b));
        assert!(matches!(
            pool.restore("uid-c", a),
            Err(AllocError::HeldByAnother { .. })
        ));
        // A range that straddles two of the pool's ranges, or lies outside it, is refused.
        let straddling = UidRange::new(1_000_000_000 + 100).unwrap();
        assert!(matches!(
            pool.restore("uid-c", straddling),
            Err(AllocError::OutsidePool { .. })
        ));
        let beyond = UidRange::new(1_000_000_000 + 4 * UidRange::SIZE).unwrap();
        assert!(matches!(
            pool.restore("uid-c", beyond),
            Err(AllocError::OutsidePool { .. })
        ));
        assert_eq!(pool.release("uid-a"), Some(a));
        assert_eq!(pool.in_use(), 1);
        pool.allocate("c").unwrap();
        pool.allocate("d").unwrap();
        pool.allocate("e").unwrap();
        let err = pool.allocate("f").unwrap_err();
        assert_eq!(
            err,
            AllocError::Exhausted {
                kind: "UID range",
                capacity: 4
            }
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(usize),
        Release(usize),
        /// Restore owner `.0` with the range held by owner `.1`, or with the pool's range
        /// `.2` when `.1` holds none.
        Restore(usize, usize, u32),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            4 => (0..16usize).prop_map(Op::Allocate),
            2 => (0..16usize).prop_map(Op::Release),
            1 => (0..16usize, 0..16usize, 0..64u32).prop_map(|(a, b, i)| Op::Restore(a, b, i)),
        ];
        proptest::collection::vec(op, 1..200)
    }

    fn check_invariants(pool: &UidRangePool, model: &BTreeMap<String, UidRange>) {
        let live: BTreeMap<String, UidRange> = pool
            .allocations()
            .map(|(owner, range)| (owner.to_owned(), range))
            .collect();
        assert_eq!(&live, model);
        let ranges: Vec<UidRange> = live.values().copied().collect();
        for (i, a) in ranges.iter().enumerate() {
            assert!(a.start >= pool.first() && a.start >= MIN_HOST_ID && a.size == UidRange::SIZE);
            for b in &ranges[i + 1..] {
                assert!(!a.overlaps(*b), "{a} overlaps {b}");
            }
        }
        assert_eq!(pool.in_use(), live.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Random allocate / release / restore sequences keep ranges disjoint, release exactly
        /// what was allocated, and a snapshot restores into an identical pool.
        #[test]
        fn pool_invariants(
            first in MIN_HOST_ID..=1_000_000_000u32,
            count in 1u32..12,
            owners in 1usize..16,
            seq in ops(),
        ) {
            let mut pool = UidRangePool::new(first, count).unwrap();
            let name = |i: usize| format!("uid-{i}");
            let mut model: BTreeMap<String, UidRange> = BTreeMap::new();
            for op in seq {
                match op {
                    Op::Allocate(o) => {
                        let o = name(o % owners);
                        match pool.allocate(&o) {
                            Ok(range) => {
                                if let Some(held) = model.get(&o) {
                                    prop_assert_eq!(*held, range);
                                }
                                model.insert(o, range);
                            }
                            Err(AllocError::Exhausted { .. }) => {
                                prop_assert!(!model.contains_key(&o));
                                prop_assert_eq!(model.len(), pool.capacity() as usize);
                            }
                            Err(e) => prop_assert!(false, "unexpected {e}"),
                        }
                    }
                    Op::Release(o) => {
                        let o = name(o % owners);
                        prop_assert_eq!(pool.release(&o), model.remove(&o));
                    }
                    Op::Restore(a, b, index) => {
                        let a = name(a % owners);
                        let range = model
                            .get(&name(b % owners))
                            .copied()
                            .unwrap_or_else(|| pool.range(index % count));
                        let holder = model.iter().find(|(_, r)| **r == range).map(|(o, _)| o.clone());
                        let result = pool.restore(&a, range);
                        match (model.get(&a), holder) {
                            (Some(held), _) if *held == range => prop_assert!(result.is_ok()),
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
                                model.insert(a, range);
                            }
                        }
                    }
                }
                check_invariants(&pool, &model);
            }

            // A restarted agent rebuilds the same map from the labels.
            let mut rebuilt = UidRangePool::new(first, count).unwrap();
            for (owner, range) in pool.allocations() {
                rebuilt.restore(owner, range).unwrap();
            }
            check_invariants(&rebuilt, &model);

            // Releasing everything frees everything: the whole pool is allocatable again.
            for owner in model.keys() {
                prop_assert!(pool.release(owner).is_some());
            }
            prop_assert_eq!(pool.in_use(), 0);
            let mut again: Vec<UidRange> = (0..count)
                .map(|i| pool.allocate(&format!("fresh-{i}")).unwrap())
                .collect();
            again.sort();
            let expected: Vec<UidRange> = (0..count).map(|i| pool.range(i)).collect();
            prop_assert_eq!(again, expected);
            prop_assert!(pool.allocate("one-too-many").is_err());
        }
    }
}
