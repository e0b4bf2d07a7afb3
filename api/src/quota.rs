//! Per-user and per-process caps on things a user holds open (uploads streaming, event
//! streams). Counted in this API process: with several replicas a user may hold up to the
//! cap on each; the global cap bounds what one process spends whoever asks.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use uuid::Uuid;

#[derive(Clone)]
pub struct Slots {
    inner: Arc<Mutex<Counts>>,
    per_user: usize,
    total: usize,
}

#[derive(Default)]
struct Counts {
    by_user: HashMap<Uuid, usize>,
    total: usize,
}

/// Why a slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    User,
    Process,
}

/// Held while the upload or stream lasts; frees its slot when dropped.
pub struct Slot {
    slots: Slots,
    user: Uuid,
}

impl Slots {
    pub fn new(per_user: usize, total: usize) -> Slots {
        Slots {
            inner: Arc::default(),
            per_user,
            total,
        }
    }

    pub fn try_acquire(&self, user: Uuid) -> Result<Slot, Full> {
        let mut c = self.inner.lock().expect("slots lock");
        let mine = c.by_user.get(&user).copied().unwrap_or(0);
        if mine >= self.per_user {
            return Err(Full::User);
        }
        if c.total >= self.total {
            return Err(Full::Process);
        }
        c.total += 1;
        *c.by_user.entry(user).or_default() += 1;
        Ok(Slot {
            slots: self.clone(),
            user,
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
        if let Some(n) = c.by_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                c.by_user.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_and_total_caps() {
        let s = Slots::new(2, 3);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let a1 = s.try_acquire(a).unwrap();
        let _a2 = s.try_acquire(a).unwrap();
        assert_eq!(s.try_acquire(a).err(), Some(Full::User));
        let _b1 = s.try_acquire(b).unwrap();
        assert_eq!(s.try_acquire(b).err(), Some(Full::Process));
        drop(a1);
        assert_eq!(s.in_use(), 2);
        assert!(s.try_acquire(b).is_ok());
    }
}
