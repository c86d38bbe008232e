//! The isolation layers the node agent puts around each instance, as pure data: the MCS pair
//! and host UID range it allocates, and the seccomp filter it installs.
//!
//! Allocators hold no state outside themselves: a restarted agent rebuilds them with
//! `restore` from the labels of the containers containerd still runs.

pub mod mcs;
pub mod notify;
pub mod seccomp;
pub mod userns;
pub mod verify;

pub use mcs::{McsAllocator, McsPair};
pub use userns::{UidRange, UidRangePool};

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;

/// Why an allocator refused a request.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AllocError {
    /// Every item of the pool is held by a live instance.
    #[error(
        "no free {kind} left on this host: all {capacity} are in use; remove instances or schedule onto another host"
    )]
    Exhausted {
        /// What is allocated ("MCS pair", "UID range").
        kind: &'static str,
        /// The size of the pool.
        capacity: u64,
    },
    /// `restore` named an item another owner already holds.
    #[error("cannot restore {kind} {item} for {owner}: it is held by {holder}")]
    HeldByAnother {
        /// What is allocated.
        kind: &'static str,
        /// The item, as its label shows it.
        item: String,
        /// The owner asking.
        owner: String,
        /// The owner holding it.
        holder: String,
    },
    /// `restore` named an item, but the owner already holds a different one.
    #[error("cannot restore {kind} {requested} for {owner}: it already holds {held}")]
    OwnerHoldsAnother {
        /// What is allocated.
        kind: &'static str,
        /// The owner asking.
        owner: String,
        /// What it holds.
        held: String,
        /// What it asked for.
        requested: String,
    },
    /// `restore` named an item outside this host's pool (the pool flag changed, or the label
    /// was edited).
    #[error("cannot restore {kind} {item} for {owner}: it is outside this host's pool {pool}")]
    OutsidePool {
        /// What is allocated.
        kind: &'static str,
        /// The item, as its label shows it.
        item: String,
        /// The owner asking.
        owner: String,
        /// The pool, as configured.
        pool: String,
    },
}

/// Slots `0..capacity`, each held by at most one owner and each owner holding at most one.
///
/// A new owner starts probing at a slot derived from a hash of its name and takes the first
/// free slot after it (wrapping), so allocation needs no random source and spreads owners over
/// the pool. A bitmap keeps probing cheap even when the pool is nearly full.
#[derive(Debug, Clone)]
struct SlotPool {
    capacity: u32,
    /// Bit `i` set when slot `i` is held.
    used: Vec<u64>,
    by_owner: BTreeMap<String, u32>,
    by_slot: HashMap<u32, String>,
}

/// Where a restore request conflicts with what the pool holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SlotConflict {
    HeldBy(String),
    OwnerHolds(u32),
}

impl SlotPool {
    fn new(capacity: u32) -> Self {
        Self {
            capacity,
            used: vec![0; capacity.div_ceil(64) as usize],
            by_owner: BTreeMap::new(),
            by_slot: HashMap::new(),
        }
    }

    fn capacity(&self) -> u32 {
        self.capacity
    }

    fn in_use(&self) -> usize {
        self.by_owner.len()
    }

    fn get(&self, owner: &str) -> Option<u32> {
        self.by_owner.get(owner).copied()
    }

    fn iter(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.by_owner.iter().map(|(o, s)| (o.as_str(), *s))
    }

    /// The owner's slot, a new one if it holds none, or `None` when the pool is full.
    fn allocate(&mut self, owner: &str) -> Option<u32> {
        if let Some(slot) = self.get(owner) {
            return Some(slot);
        }
        if self.in_use() >= self.capacity as usize {
            return None;
        }
        let start = (fnv1a(owner) % u64::from(self.capacity)) as u32;
        let slot = self.first_free_from(start)?;
        self.take(owner, slot);
        Some(slot)
    }

    fn restore(&mut self, owner: &str, slot: u32) -> Result<(), SlotConflict> {
        match (self.get(owner), self.by_slot.get(&slot)) {
            (Some(held), _) if held == slot => Ok(()),
            (Some(held), _) => Err(SlotConflict::OwnerHolds(held)),
            (None, Some(holder)) => Err(SlotConflict::HeldBy(holder.clone())),
            (None, None) => {
                self.take(owner, slot);
                Ok(())
            }
        }
    }

    fn release(&mut self, owner: &str) -> Option<u32> {
        let slot = self.by_owner.remove(owner)?;
        self.by_slot.remove(&slot);
        self.used[(slot / 64) as usize] &= !(1u64 << (slot % 64));
        Some(slot)
    }

    fn take(&mut self, owner: &str, slot: u32) {
        debug_assert!(slot < self.capacity && !self.by_slot.contains_key(&slot));
        self.used[(slot / 64) as usize] |= 1u64 << (slot % 64);
        self.by_owner.insert(owner.to_owned(), slot);
        self.by_slot.insert(slot, owner.to_owned());
    }

    /// The first free slot at or after `start`, wrapping around once.
    fn first_free_from(&self, start: u32) -> Option<u32> {
        let words = self.used.len();
        let first_word = (start / 64) as usize;
        // The first word is visited twice: from `start` on, and at the end for the bits below it.
        for step in 0..=words {
            let index = (first_word + step) % words;
            let mut free = !self.used[index];
            if step == 0 {
                free &= u64::MAX << (start % 64);
            }
            while free != 0 {
                let slot = index as u32 * 64 + free.trailing_zeros();
                if slot < self.capacity {
                    return Some(slot);
                }
                free &= free - 1;
            }
        }
        None
    }
}

/// 64-bit FNV-1a: a stable hash, so that an owner's first probe does not change between
/// builds or restarts.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_pool_fills_exactly_and_refuses_more() {
        for capacity in [1, 2, 63, 64, 65, 130] {
            let mut pool = SlotPool::new(capacity);
            let mut seen = std::collections::HashSet::new();
            for i in 0..capacity {
                let slot = pool.allocate(&format!("owner-{i}")).unwrap();
                assert!(slot < capacity && seen.insert(slot), "capacity {capacity}");
            }
            assert_eq!(pool.allocate("one-more"), None);
            assert_eq!(pool.in_use(), capacity as usize);
            let freed = pool.release("owner-0").unwrap();
            assert_eq!(pool.allocate("one-more"), Some(freed));
        }
    }

    #[test]
    fn first_free_wraps_to_the_bits_below_start() {
        let mut pool = SlotPool::new(64);
        for slot in 5..64 {
            pool.take(&format!("o{slot}"), slot);
        }
        pool.take("o0", 0);
        assert_eq!(pool.first_free_from(10), Some(1));
    }

    #[test]
    fn fnv1a_is_stable() {
        // Reference values of 64-bit FNV-1a.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
