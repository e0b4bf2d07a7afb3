//! Caps on things a user holds open (uploads streaming, event streams): per user, per
//! organization and per API process, with a share of the process's slots reserved for
//! organizations that hold none.
//!
//! Why a reserve and not only a per-organization share: a share (each organization at most
//! N of the total) still lets total / N organizations take everything, and a new customer is
//! refused. With the reserve, slots beyond `total - reserved` go only to an organization that
//! holds no slot yet: accounts of a few organizations — however many users they have, and
//! whatever they hold open — leave at least `reserved` slots to everyone else, and each
//! organization is also capped on its own. Taking every slot needs `reserved` more
//! organizations on top of those that fill the shared part; the upload's minimum rate and
//! deadline (`upload_limits`) make each slot cost its holder real bandwidth and end, and
//! registrations are limited per address.
//!
//! Counted in this API process: with several replicas an organization may hold up to its cap
//! on each; the process's cap bounds what one process spends whoever asks.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use uuid::Uuid;

/// The caps of one kind of slot.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub per_user: usize,
    pub per_org: usize,
    pub total: usize,
    /// Of `total`, the slots only an organization holding none may take.
    pub reserved: usize,
}

#[derive(Clone)]
pub struct Slots {
    inner: Arc<Mutex<Counts>>,
    caps: Caps,
}

#[derive(Default)]
struct Counts {
    by_user: HashMap<Uuid, usize>,
    by_org: HashMap<i32, usize>,
    total: usize,
}

/// Why a slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    User,
    Org,
    /// Every slot is taken, or every slot but the reserve and the organization already
    /// holds one.
    Process,
}

/// Held while the upload or stream lasts; frees its slot when dropped.
pub struct Slot {
    slots: Slots,
    user: Uuid,
    org: i32,
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Slots {
    pub fn new(caps: Caps) -> Slots {
        Slots {
            inner: Arc::default(),
            caps,
        }
    }

    pub fn try_acquire(&self, user: Uuid, org: i32) -> Result<Slot, Full> {
        let mut c = self.inner.lock().expect("slots lock");
        let mine = c.by_user.get(&user).copied().unwrap_or(0);
        let ours = c.by_org.get(&org).copied().unwrap_or(0);
        if mine >= self.caps.per_user {
            return Err(Full::User);
        }
        if ours >= self.caps.per_org {
            return Err(Full::Org);
        }
        let shared = self.caps.total.saturating_sub(self.caps.reserved);
        if c.total >= self.caps.total || (ours > 0 && c.total >= shared) {
            return Err(Full::Process);
        }
        c.total += 1;
        *c.by_user.entry(user).or_default() += 1;
        *c.by_org.entry(org).or_default() += 1;
        Ok(Slot {
            slots: self.clone(),
            user,
            org,
        })
    }

    /// Slots held now (all users).
    pub fn in_use(&self) -> usize {
        self.inner.lock().expect("slots lock").total
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.slots.inner.lock().expect("slots lock");
        c.total -= 1;
        decrement(&mut c.by_user, &self.user);
        decrement(&mut c.by_org, &self.org);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(per_user: usize, per_org: usize, total: usize, reserved: usize) -> Caps {
        Caps {
            per_user,
            per_org,
            total,
            reserved,
        }
    }

    #[test]
    fn per_user_per_org_and_total_caps() {
        let s = Slots::new(caps(2, 3, 4, 0));
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let a1 = s.try_acquire(a, 1).unwrap();
        let _a2 = s.try_acquire(a, 1).unwrap();
        assert_eq!(s.try_acquire(a, 1).err(), Some(Full::User));
        let _b1 = s.try_acquire(b, 1).unwrap();
        assert_eq!(s.try_acquire(b, 1).err(), Some(Full::Org));
        let _c1 = s.try_acquire(c, 2).unwrap();
        assert_eq!(s.try_acquire(c, 2).err(), Some(Full::Process));
        drop(a1);
        assert_eq!(s.in_use(), 3);
        assert!(s.try_acquire(c, 2).is_ok());
    }

    #[test]
    fn the_reserve_goes_only_to_organizations_holding_none() {
        // 16 slots, 4 reserved; eight accounts in eight organizations ask for two each.
        let s = Slots::new(caps(2, 4, 16, 4));
        let users: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
        let mut held = vec![];
        for _ in 0..2 {
            for (org, user) in users.iter().enumerate() {
                held.extend(s.try_acquire(*user, org as i32).ok());
            }
        }
        assert_eq!(
            held.len(),
            12,
            "8 first slots, then seconds up to the shared part"
        );
        // In any order: seconds first for six of them, then the other two's firsts.
        let t = Slots::new(caps(2, 4, 16, 4));
        let mut held2 = vec![];
        for (org, user) in users.iter().enumerate() {
            for _ in 0..2 {
                held2.extend(t.try_acquire(*user, org as i32).ok());
            }
        }
        assert_eq!(held2.len(), 14);
        // Someone new still gets one, in both.
        assert!(s.try_acquire(Uuid::new_v4(), 100).is_ok());
        let _new = t.try_acquire(Uuid::new_v4(), 100).unwrap();
        let _newer = t.try_acquire(Uuid::new_v4(), 101).unwrap();
        assert_eq!(
            t.try_acquire(Uuid::new_v4(), 102).err(),
            Some(Full::Process)
        );
    }
}
