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

/// What presence shows of a session besides its connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionInfo {
    /// When it logged in, Unix seconds.
    pub since: u32,
    /// Its transport, an index into [`crate::metrics::TRANSPORTS`].
    pub transport: u8,
}

/// One session: device, connection, presence.
type Session = (u32, ConnId, SessionInfo);

/// The devices of one online user. Most users have one, kept inline; the
/// list of several is boxed so that the common entry stays small.
#[derive(Debug)]
enum Devices {
    One(Session),
    // Boxed on purpose: a `Vec` inline would make every one-device entry
    // 8 bytes larger; several devices are rare and pay the extra pointer.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<Session>>),
}

impl Devices {
    fn all(&self) -> impl Iterator<Item = Session> + '_ {
        let (one, many) = match self {
            Devices::One(s) => (Some(*s), &[][..]),
            Devices::Many(v) => (None, &v[..]),
        };
        one.into_iter().chain(many.iter().copied())
    }

    fn iter(&self) -> impl Iterator<Item = (u32, ConnId)> + '_ {
        self.all().map(|(d, c, _)| (d, c))
    }
}

impl SessionInfo {
    /// The session as presence shows it: `"device"`, `"core"`,
    /// `"transport"`, `"since"` (JSON object members, without braces).
    pub fn json_members(&self, device: u32, conn: ConnId) -> String {
        let transport = crate::metrics::TRANSPORTS
            .get(usize::from(self.transport))
            .copied()
            .unwrap_or("tcp");
        format!(
            "\"device\":{device},\"core\":{},\"transport\":\"{transport}\",\"since\":{}",
            conn.core, self.since
        )
    }
}

/// The session registry.
#[derive(Debug)]
pub struct Registry {
    shards: Box<[Mutex<AHashMap<u64, Devices>>]>,
    /// The server API's requests waiting for their answers.
    pub replies: crate::replies::Replies,
    /// Devices the server API revoked: refused at login.
    pub revocations: crate::revocations::Revocations,
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
            revocations: Default::default(),
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
        self.login_with(user, device, conn, SessionInfo::default())
    }

    /// [`Registry::login`] with what presence shows of the session.
    pub fn login_with(
        &self,
        user: u64,
        device: u32,
        conn: ConnId,
        info: SessionInfo,
    ) -> Option<ConnId> {
        let mut m = self.shard(user);
        match m.get_mut(&user) {
            None => {
                m.insert(user, Devices::One((device, conn, info)));
                None
            }
            Some(Devices::One(e)) if e.0 == device => {
                let old = e.1;
                *e = (device, conn, info);
                Some(old)
            }
            Some(slot @ Devices::One(..)) => {
                let Devices::One(e) = *slot else {
                    unreachable!()
                };
                *slot = Devices::Many(Box::new(vec![e, (device, conn, info)]));
                None
            }
            Some(Devices::Many(v)) => {
                if let Some(e) = v.iter_mut().find(|e| e.0 == device) {
                    let old = e.1;
                    *e = (device, conn, info);
                    Some(old)
                } else {
                    v.push((device, conn, info));
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
            Devices::One(e) => {
                if e.0 == device && e.1 == conn {
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
                    *devs = Devices::One(v[0]);
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
        self.sessions_info(user, device)
            .into_iter()
            .map(|(d, c, _)| (d, c))
            .collect()
    }

    /// `user`'s sessions with what presence shows of them, only
    /// `device`'s if set, in device order.
    pub fn sessions_info(&self, user: u64, device: Option<u32>) -> Vec<(u32, ConnId, SessionInfo)> {
        let mut all: Vec<Session> = match self.shard(user).get(&user) {
            Some(d) => d.all().collect(),
            None => Vec::new(),
        };
        all.retain(|(d, _, _)| device.is_none_or(|want| *d == want));
        all.sort_unstable_by_key(|(d, _, _)| *d);
        all
    }

    /// The sessions a kick of `user` (only `device`'s, if set) for
    /// `reason` reaches. A kick travels through the backend (and the other
    /// nodes) after its request was answered: for `revoked`, only the
    /// sessions still revoked when it arrives, so one that arrives after
    /// the revocation was lifted spares a device that logged in since.
    pub fn kick_targets(
        &self,
        user: u64,
        device: Option<u32>,
        reason: imgate_codec::KickReason,
    ) -> Vec<(u32, ConnId)> {
        let mut all = self.sessions(user, device);
        if reason == imgate_codec::KickReason::Revoked {
            let now = crate::unix_time().as_millis() as u64;
            all.retain(|&(d, _)| self.revocations.until(user, d, now).is_some());
        }
        all
    }

    /// Users online and their sessions, on this node (a walk over every
    /// shard: for an operator's question, not a hot path).
    pub fn counts(&self) -> (usize, usize) {
        let (users, by_transport) = self.census();
        (users, by_transport.iter().sum())
    }

    /// Online users, and sessions by transport (indexed as
    /// [`crate::metrics::TRANSPORTS`]).
    pub fn census(&self) -> (usize, [usize; 4]) {
        let mut by = [0usize; 4];
        let mut users = 0;
        for shard in self.shards.iter() {
            let m = shard
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            users += m.len();
            for (_, _, info) in m.values().flat_map(Devices::all) {
                if let Some(n) = by.get_mut(usize::from(info.transport)) {
                    *n += 1;
                }
            }
        }
        (users, by)
    }

    /// The census as a JSON object's members (without braces): `"users"`,
    /// `"sessions"`, `"by_transport"` (sessions).
    pub fn census_json(&self) -> String {
        let (users, by) = self.census();
        let by_transport: Vec<String> = crate::metrics::TRANSPORTS
            .iter()
            .zip(by)
            .map(|(t, n)| format!("\"{t}\":{n}"))
            .collect();
        format!(
            "\"users\":{users},\"sessions\":{},\"by_transport\":{{{}}}",
            by.iter().sum::<usize>(),
            by_transport.join(",")
        )
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
    fn a_revocation_kick_reaches_only_devices_still_revoked() {
        use crate::revocations::Revocation;
        use imgate_codec::KickReason::{Admin, Revoked};
        let r = Registry::new(4);
        r.login(1, 1, c(1));
        r.login(1, 2, c(2));
        let until = crate::unix_time().as_millis() as u64 + 60_000;
        r.revocations.set(Revocation {
            user: 1,
            device: 2,
            until,
        });
        assert_eq!(r.kick_targets(1, None, Revoked), vec![(2, c(2))]);
        assert_eq!(r.kick_targets(1, None, Admin).len(), 2);
        r.revocations.lift(1, 2);
        assert!(r.kick_targets(1, Some(2), Revoked).is_empty(), "lifted");
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
