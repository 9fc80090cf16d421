//! The timer policy of a core: what its wheel's timers are for, where a
//! deadline falls, and what a liveness timer decides when it fires. Pure
//! functions of the times they are given; the core applies the outcome.
//!
//! A deadline is a wheel tick: tick `t` is reached when the core's clock
//! reads `t × tick_ms`. It is rounded *up*, so a timer never fires before
//! its time (protocol section 5.1.1), and at most about one tick after it.
//!
//! Liveness does not touch the wheel on the hot path: a frame only stamps
//! the connection's last-seen time; when its timer fires, [`liveness`]
//! compares that stamp with the timeout and says whether to kick or to look
//! again at the moment the connection could next be late.

use imgate_codec::KickReason;

use crate::conn::Phase;

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerKind {
    /// Login deadline before login, heartbeat deadline after.
    Liveness,
    /// Pushed frames not acknowledged in time.
    Push,
}

/// A timer in the core's wheel: which connection (slab slot and
/// generation), and what for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timer {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
    pub(crate) kind: TimerKind,
}

/// The tick of a deadline `after_ms` past `at_ms` on a wheel of `tick_ms`:
/// the first tick that starts after it. The clock reads whole ms rounded
/// down, so `at_ms` may be up to 1 ms before the event it stamps, which the
/// added ms makes up for.
pub(crate) fn deadline(at_ms: u64, after_ms: u64, tick_ms: u64) -> u64 {
    at_ms
        .saturating_add(after_ms)
        .saturating_add(1)
        .div_ceil(tick_ms.max(1))
}

/// What a liveness timer decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Close with this kick.
    Kick(KickReason),
    /// The connection spoke since the timer was set: look again at this
    /// tick.
    LookAgain(u64),
}

/// The liveness timer of a connection in `phase`, last seen at
/// `last_seen_ms`, fired at tick `now`.
pub(crate) fn liveness(
    phase: Phase,
    last_seen_ms: u64,
    timeout_ms: u64,
    tick_ms: u64,
    now: u64,
) -> Liveness {
    match phase {
        Phase::Login => Liveness::Kick(KickReason::LoginTimeout),
        Phase::Pending | Phase::Active => {
            let due = deadline(last_seen_ms, timeout_ms, tick_ms);
            if due <= now {
                Liveness::Kick(KickReason::HeartbeatTimeout)
            } else {
                Liveness::LookAgain(due)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_never_early_and_at_most_a_tick_late() {
        for tick in [1, 7, 20, 100, 1000] {
            for after in [0, 1, 99, 300, 1000, 90_000] {
                for at in 0..2_500 {
                    let fires_at = deadline(at, after, tick) * tick;
                    // The event happened before at + 1 ms.
                    assert!(fires_at > at + after, "tick {tick} at {at} after {after}");
                    assert!(
                        fires_at <= at + after + tick,
                        "tick {tick} at {at} after {after}: {fires_at}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_silent_connection_is_kicked_when_its_timeout_has_passed() {
        // Tick 100 ms, timeout 300 ms, last frame at 1,050 ms: due at the
        // first tick after 1,350 ms, tick 14 (1,400 ms).
        let at = |now| liveness(Phase::Active, 1_050, 300, 100, now);
        assert_eq!(at(13), Liveness::LookAgain(14));
        assert_eq!(at(14), Liveness::Kick(KickReason::HeartbeatTimeout));
        assert_eq!(
            liveness(Phase::Pending, 1_050, 300, 100, 20),
            Liveness::Kick(KickReason::HeartbeatTimeout)
        );
    }

    #[test]
    fn before_login_the_timer_is_the_login_deadline() {
        assert_eq!(
            liveness(Phase::Login, 0, 300, 100, 4),
            Liveness::Kick(KickReason::LoginTimeout)
        );
    }
}
