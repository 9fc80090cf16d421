//! Who is online where: (user, device) -> connection, shared by all cores and
//! the backend's router.
//!
//! Cores write it on login and close; the router reads it to turn "deliver
//! to user U" into connections. It is sharded by user so cores and the
//! router rarely meet on one lock, and each critical section is a hash
//! lookup: no core waits on the backend through it.

use std::sync::Mutex;

use ahash::AHashMap;

use crate::conn_id::ConnId;

/// The devices of one online user. Most users have one, kept inline; the
/// list of several is boxed so that the common entry stays small.
#[derive(Debug)]
enum Devices {
    One(u32, ConnId),
    // Boxed on purpose: a `Vec` inline would make every one-device entry
    // 8 bytes larger; several devices are rare and pay the extra pointer.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<(u32, ConnId)>>),
}

impl Devices {
    fn iter(&self) -> impl Iterator<Item = (u32, ConnId)> + '_ {
        let (one, many) = match self {
            Devices::One(d, c) => (Some((*d, *c)), &[][..]),
            Devices::Many(v) => (None, &v[..]),
        };
        one.into_iter().chain(many.iter().copied())
    }
}

/// The session registry.
#[derive(Debug)]
pub struct Registry {
    shards: Box<[Mutex<AHashMap<u64, Devices>>]>,
    /// The server API's requests waiting for their answers.
    pub replies: crate::replies::Replies,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(64)
    }
}

impl Registry {
    /// A registry with `shards` locks (rounded up to a power of two).
    pub fn new(shards: usize) -> Registry {
        let n = shards.max(1).next_power_of_two();
        Registry {
            shards: (0..n).map(|_| Mutex::new(AHashMap::new())).collect(),
            replies: Default::default(),
        }
    }

    fn shard(&self, user: u64) -> std::sync::MutexGuard<'_, AHashMap<u64, Devices>> {
        // Mix the id so sequential user ids spread over shards.
        let h = user.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        let i = (h as usize) & (self.shards.len() - 1);
        // A poisoned shard only means another thread panicked mid-update of
        // a map that stays consistent between statements: keep using it.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `conn` as `user`'s `device`, returning the connection it
    /// replaces, if any.
    pub fn login(&self, user: u64, device: u32, conn: ConnId) -> Option<ConnId> {
        let mut m = self.shard(user);
        match m.get_mut(&user) {
            None => {
                m.insert(user, Devices::One(device, conn));
                None
            }
            Some(Devices::One(d, c)) if *d == device => Some(std::mem::replace(c, conn)),
            Some(slot @ Devices::One(..)) => {
                let Devices::One(d, c) = *slot else {
                    unreachable!()
                };
                *slot = Devices::Many(Box::new(vec![(d, c), (device, conn)]));
                None
            }
            Some(Devices::Many(v)) => {
                if let Some(e) = v.iter_mut().find(|e| e.0 == device) {
                    Some(std::mem::replace(&mut e.1, conn))
                } else {
                    v.push((device, conn));
                    None
                }
            }
        }
    }

    /// Forgets `conn` as `user`'s `device` if it is still the registered
    /// one (a replaced connection must not remove its successor).
    pub fn logout(&self, user: u64, device: u32, conn: ConnId) -> bool {
        let mut m = self.shard(user);
        let Some(devs) = m.get_mut(&user) else {
            return false;
        };
        match devs {
            Devices::One(d, c) => {
                if *d == device && *c == conn {
                    m.remove(&user);
                    return true;
                }
                false
            }
            Devices::Many(v) => {
                let Some(i) = v.iter().position(|e| e.0 == device && e.1 == conn) else {
                    return false;
                };
                v.swap_remove(i);
                if v.len() == 1 {
                    let (d, c) = v[0];
                    *devs = Devices::One(d, c);
                }
                true
            }
        }
    }

    /// Appends `user`'s connections to `out`.
    pub fn conns_of(&self, user: u64, out: &mut Vec<ConnId>) {
        if let Some(d) = self.shard(user).get(&user) {
            out.extend(d.iter().map(|(_, c)| c));
        }
    }

    /// Appends `user`'s (device, connection) pairs to `out`.
    pub fn devices_of(&self, user: u64, out: &mut Vec<(u32, ConnId)>) {
        if let Some(d) = self.shard(user).get(&user) {
            out.extend(d.iter());
        }
    }

    /// `user`'s (device, connection) pairs, only `device`'s if set, in
    /// device order.
    pub fn sessions(&self, user: u64, device: Option<u32>) -> Vec<(u32, ConnId)> {
        let mut all = Vec::new();
        self.devices_of(user, &mut all);
        all.retain(|(d, _)| device.is_none_or(|want| *d == want));
        all.sort_unstable_by_key(|(d, _)| *d);
        all
    }

    /// The connection of `user`'s `device`, if online.
    pub fn conn_of(&self, user: u64, device: u32) -> Option<ConnId> {
        self.shard(user)
            .get(&user)?
            .iter()
            .find(|e| e.0 == device)
            .map(|e| e.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(slot: u32) -> ConnId {
        ConnId::new(0, slot, 1)
    }

    #[test]
    fn login_replaces_the_same_device_only() {
        let r = Registry::new(4);
        assert_eq!(r.login(1, 1, c(1)), None);
        assert_eq!(r.login(1, 2, c(2)), None);
        assert_eq!(r.login(1, 1, c(3)), Some(c(1)));
        let mut v = Vec::new();
        r.conns_of(1, &mut v);
        v.sort_by_key(|c| c.slot);
        assert_eq!(v, vec![c(2), c(3)]);
    }

    #[test]
    fn a_replaced_connection_cannot_log_its_successor_out() {
        let r = Registry::new(4);
        r.login(1, 1, c(1));
        r.login(1, 1, c(2));
        assert!(!r.logout(1, 1, c(1)));
        assert_eq!(r.conn_of(1, 1), Some(c(2)));
        assert!(r.logout(1, 1, c(2)));
        assert_eq!(r.conn_of(1, 1), None);
    }

    #[test]
    fn many_devices_shrink_back_to_one() {
        let r = Registry::new(1);
        r.login(9, 1, c(1));
        r.login(9, 2, c(2));
        r.login(9, 3, c(3));
        assert!(r.logout(9, 2, c(2)));
        assert!(r.logout(9, 3, c(3)));
        assert_eq!(r.conn_of(9, 1), Some(c(1)));
        let mut v = Vec::new();
        r.conns_of(9, &mut v);
        assert_eq!(v, vec![c(1)]);
    }
}
