//! Revoked devices: the server API's list of (user, device) pairs that no
//! token logs in until a given time, checked by the cores at every login
//! after the token (so a revocation also stops tokens minted before it and
//! still valid).
//!
//! The list lives in memory on every node and is read without a lock while
//! it is empty (the common case). It is kept durable by the backend (the
//! embedded store's Meta table, or the cluster's meta bucket), loaded at
//! start, and a change reaches every node of a cluster through NATS.

use std::sync::{
    RwLock,
    atomic::{AtomicBool, Ordering::Relaxed},
};

use ahash::AHashMap;

/// The device number that stands for every device of a user.
pub const ALL_DEVICES: u32 = u32::MAX;

/// One revocation: `device` of `user` (or every device, [`ALL_DEVICES`])
/// until `until` (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// The user.
    pub user: u64,
    /// The device, or [`ALL_DEVICES`].
    pub device: u32,
    /// Unix ms at which logins work again.
    pub until: u64,
}

impl Revocation {
    /// The stored value: `until` big-endian.
    pub fn value(&self) -> [u8; 8] {
        self.until.to_be_bytes()
    }
}

/// The revocations this node knows.
#[derive(Debug, Default)]
pub struct Revocations {
    map: RwLock<AHashMap<(u64, u32), u64>>,
    any: AtomicBool,
}

impl Revocations {
    /// Records `r` (a later one for the same pair replaces it).
    pub fn set(&self, r: Revocation) {
        let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
        m.insert((r.user, r.device), r.until);
        self.any.store(true, Relaxed);
    }

    /// Lifts the revocation of `device` of `user`; whether there was one.
    pub fn lift(&self, user: u64, device: u32) -> bool {
        let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
        let had = m.remove(&(user, device)).is_some();
        self.any.store(!m.is_empty(), Relaxed);
        had
    }

    /// Until when `device` of `user` may not log in at `now_ms` (Unix ms):
    /// the later of its own revocation and the user's, if one still runs.
    pub fn until(&self, user: u64, device: u32, now_ms: u64) -> Option<u64> {
        if !self.any.load(Relaxed) {
            return None;
        }
        let m = self.map.read().unwrap_or_else(|e| e.into_inner());
        [device, ALL_DEVICES]
            .iter()
            .filter_map(|d| m.get(&(user, *d)).copied())
            .filter(|&until| until > now_ms)
            .max()
    }

    /// The revocations of `user` still running at `now_ms`, by device.
    pub fn of(&self, user: u64, now_ms: u64) -> Vec<Revocation> {
        let m = self.map.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Revocation> = m
            .iter()
            .filter(|&(&(u, _), &until)| u == user && until > now_ms)
            .map(|(&(user, device), &until)| Revocation {
                user,
                device,
                until,
            })
            .collect();
        out.sort_unstable_by_key(|r| r.device);
        out
    }

    /// Forgets what ended before `now_ms`.
    pub fn prune(&self, now_ms: u64) {
        let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, until| *until > now_ms);
        self.any.store(!m.is_empty(), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(user: u64, device: u32, until: u64) -> Revocation {
        Revocation {
            user,
            device,
            until,
        }
    }

    #[test]
    fn a_device_or_every_device_is_refused_until_the_time() {
        let list = Revocations::default();
        assert_eq!(list.until(1, 1, 0), None);
        list.set(r(1, 2, 1000));
        assert_eq!(list.until(1, 2, 999), Some(1000));
        assert_eq!(list.until(1, 2, 1000), None, "over at `until`");
        assert_eq!(list.until(1, 3, 0), None, "another device");
        list.set(r(1, ALL_DEVICES, 5000));
        assert_eq!(list.until(1, 3, 0), Some(5000));
        assert_eq!(list.until(1, 2, 0), Some(5000), "the later of the two");
        assert_eq!(list.until(2, 3, 0), None, "another user");
        assert_eq!(list.of(1, 2000), vec![r(1, ALL_DEVICES, 5000)]);
        assert!(list.lift(1, ALL_DEVICES));
        assert!(!list.lift(1, ALL_DEVICES));
        assert_eq!(list.until(1, 2, 0), Some(1000));
        list.prune(1000);
        assert_eq!(list.until(1, 2, 0), None);
        assert!(!list.any.load(Relaxed), "empty again: the fast path");
    }
}
