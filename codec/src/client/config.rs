//! Client configuration: who logs in, and every limit and timer of the state
//! machine.
//!
//! One plain struct with public fields and a [`Config::validate`] step, as
//! pingora does, so a caller can build it from flags or a file and learn
//! about a bad value when the client is made rather than at the first timer.

use std::time::Duration;

use bytes::Bytes;

use super::error::ConfigError;
use crate::{
    frame::MAX_TOKEN,
    header::{DEFAULT_MAX_FRAME, HEADER_LEN},
};

/// Settings of a [`Client`](super::Client).
///
/// | field | default | meaning |
/// |---|---|---|
/// | `user`, `device`, `token` | (required) | sent in the login frame |
/// | `first_msg_id` | 1 | msg id of the first send, incremented per send |
/// | `max_in_flight` | 4096 | sends awaiting msg:A before `send` refuses |
/// | `rto` | 2 s | wait for msg:A before the first retransmission |
/// | `rto_backoff` | 1.0 | factor applied to the wait after each retransmission |
/// | `max_rto` | 30 s | cap of the backed-off wait |
/// | `max_retries` | 5 | retransmissions before a send fails |
/// | `ack_every` | 32 | deliveries per stream that trigger an ack:R at once |
/// | `ack_delay` | 10 ms | longest an inbox ack:R waits after the first unacked delivery |
/// | `group_ack_delay` | 200 ms | the same for a group |
/// | `gap_timeout` | 200 ms | how long a gap may stay open before a sync |
/// | `max_held` | 1024 | out-of-order messages held per stream |
/// | `sync_limit` | 200 | page size asked for in sync:R (0: server default) |
/// | `auto_pull_inbox` | true | pull the inbox after login when `inbox_head` is ahead |
/// | `heartbeat` | 30 s | idle time before a ping, until login:ok names one |
/// | `max_frame` | 64 KiB | largest frame accepted by [`Client::handle_input`](super::Client::handle_input) |
/// | `max_tracked_receipts` | 4096 | sent messages remembered for delivered/read receipts (0: none) |
/// | `dead_after` | 3 | heartbeats of silence from the server after which the connection is dead (0: never) |
/// | `dedup_window` | 9 min | age after which a waiting message is no longer resent |
/// | `keep_send_order` | false | after `overloaded` or `rate_limited` for a send, hold new sends until it is accepted |
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The user logging in.
    pub user: u64,
    /// This device of the user.
    pub device: u32,
    /// The login token (1 to 1024 bytes).
    pub token: Bytes,
    /// The msg id of the first message sent; each send takes the next one
    /// (0 is skipped, it means "none" in error frames).
    ///
    /// Msg ids must be unique per *user*, across all of its devices and
    /// across restarts: the server de-duplicates retransmissions by
    /// (user, msg id), so a reused id silently drops a message. Seed it
    /// with the device id in the high bits and a persisted counter or a
    /// clock below, for example `(device as u64) << 44 | unix_ms`.
    pub first_msg_id: u64,
    /// How many sends may await their msg:A; beyond it `send` returns
    /// [`SendError::Full`](super::SendError::Full) so the caller backs off.
    pub max_in_flight: usize,
    /// Retransmission timeout of the first attempt.
    pub rto: Duration,
    /// Each retransmission waits `rto_backoff` times longer than the one
    /// before (1.0: a fixed `rto`). Must be at least 1.
    pub rto_backoff: f64,
    /// Cap of the backed-off retransmission timeout.
    pub max_rto: Duration,
    /// Retransmissions after the first send; when the last one times out
    /// too, the send fails with [`FailReason::TimedOut`](super::FailReason::TimedOut).
    pub max_retries: u32,
    /// Newly delivered messages of a stream that trigger an ack:R at once.
    pub ack_every: u32,
    /// Longest time an inbox ack:R is held back after the first delivery
    /// it covers. It is what the sender waits for its delivered receipt.
    pub ack_delay: Duration,
    /// The same for group streams. Group acks feed no live receipt (group
    /// receipts are pulled), so they wait longer: in a busy group one ack
    /// then covers several messages, and a server with thousands of members
    /// per message sees that many fewer acks.
    pub group_ack_delay: Duration,
    /// How long a gap in a stream may stay open before the client pulls the
    /// missing messages with sync:R.
    pub gap_timeout: Duration,
    /// Messages held per stream above a gap. On overflow the highest are
    /// dropped (a sync brings them again) and a sync starts at once.
    pub max_held: usize,
    /// Entries asked for per sync page (0 lets the server choose).
    pub sync_limit: u16,
    /// Start an inbox pull after login:ok when the server's inbox head is
    /// above what this device holds.
    pub auto_pull_inbox: bool,
    /// Idle time after which a ping is sent, used when login:ok gives 0.
    pub heartbeat: Duration,
    /// Largest frame [`Client::handle_input`](super::Client::handle_input)
    /// accepts, header included.
    pub max_frame: usize,
    /// Sent one-to-one messages remembered until their delivered and read
    /// receipts arrive (each kind counted separately); the oldest are
    /// forgotten beyond it. 0 turns receipt events off.
    pub max_tracked_receipts: usize,
    /// Heartbeat intervals without any frame from the server after which
    /// the connection is considered dead ([`Event::ConnectionDead`](super::Event::ConnectionDead));
    /// the protocol says 3. 0 turns the check off.
    pub dead_after: u32,
    /// How long after its first transmission a waiting message may still be
    /// resent. The server de-duplicates by msg id only within its window (10
    /// minutes by default); a resend after it may be stored twice, so the
    /// message fails with [`FailReason::Expired`](super::FailReason::Expired)
    /// instead. Keep it a margin below the server's window.
    pub dedup_window: Duration,
    /// Keep sends stored in the order they were made (protocol section
    /// 5.6): once a send is refused with `overloaded` or `rate_limited`,
    /// later sends wait in the outbox, unsent, until it is accepted (or
    /// fails), and then go out in order. Only sends already in flight when
    /// the refusal came can be stored ahead of it. Off: later sends go out
    /// at once and may overtake the refused one.
    pub keep_send_order: bool,
}

impl Config {
    /// A configuration with every default, for this user, device and token.
    pub fn new(user: u64, device: u32, token: impl Into<Bytes>) -> Config {
        Config {
            user,
            device,
            token: token.into(),
            first_msg_id: 1,
            max_in_flight: 4096,
            rto: Duration::from_secs(2),
            rto_backoff: 1.0,
            max_rto: Duration::from_secs(30),
            max_retries: 5,
            ack_every: 32,
            ack_delay: Duration::from_millis(10),
            group_ack_delay: Duration::from_millis(200),
            gap_timeout: Duration::from_millis(200),
            max_held: 1024,
            sync_limit: 200,
            auto_pull_inbox: true,
            heartbeat: Duration::from_secs(30),
            max_frame: DEFAULT_MAX_FRAME,
            max_tracked_receipts: 4096,
            dead_after: 3,
            dedup_window: Duration::from_secs(9 * 60),
            keep_send_order: false,
        }
    }

    /// Checks every value the state machine relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.token.is_empty() || self.token.len() > MAX_TOKEN {
            return Err(ConfigError::TokenLength(self.token.len()));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::Zero("max_in_flight"));
        }
        if self.rto.is_zero() {
            return Err(ConfigError::Zero("rto"));
        }
        if self.ack_every == 0 {
            return Err(ConfigError::Zero("ack_every"));
        }
        if self.heartbeat.is_zero() {
            return Err(ConfigError::Zero("heartbeat"));
        }
        // NaN fails this comparison too.
        if !(self.rto_backoff >= 1.0 && self.rto_backoff.is_finite()) {
            return Err(ConfigError::Backoff);
        }
        if self.max_rto < self.rto {
            return Err(ConfigError::MaxRtoBelowRto);
        }
        if self.max_frame < HEADER_LEN {
            return Err(ConfigError::MaxFrame(self.max_frame));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::new(1, 1, "t").validate(), Ok(()));
    }

    #[test]
    fn bad_values_are_named() {
        let base = Config::new(1, 1, "t");
        let cases: [(Config, ConfigError); 7] = [
            (
                Config {
                    token: Bytes::new(),
                    ..base.clone()
                },
                ConfigError::TokenLength(0),
            ),
            (
                Config {
                    max_in_flight: 0,
                    ..base.clone()
                },
                ConfigError::Zero("max_in_flight"),
            ),
            (
                Config {
                    rto: Duration::ZERO,
                    ..base.clone()
                },
                ConfigError::Zero("rto"),
            ),
            (
                Config {
                    ack_every: 0,
                    ..base.clone()
                },
                ConfigError::Zero("ack_every"),
            ),
            (
                Config {
                    rto_backoff: f64::NAN,
                    ..base.clone()
                },
                ConfigError::Backoff,
            ),
            (
                Config {
                    max_rto: Duration::from_secs(1),
                    ..base.clone()
                },
                ConfigError::MaxRtoBelowRto,
            ),
            (
                Config {
                    max_frame: 4,
                    ..base.clone()
                },
                ConfigError::MaxFrame(4),
            ),
        ];
        for (cfg, want) in cases {
            assert_eq!(cfg.validate(), Err(want));
        }
    }
}
