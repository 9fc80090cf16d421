//! Counters of what the client did, for the load generator and tests.
//!
//! Plain integers updated in place: reading them is a copy, and the load
//! generator sums them over thousands of clients.

/// Counters since the client was made (never reset by reconnecting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// msg:R sent for the first time.
    pub sent: u64,
    /// msg:R sent again (after a timeout or a reconnection).
    pub retransmitted: u64,
    /// msg:A matched to a waiting send.
    pub acked: u64,
    /// msg:A for a msg id no longer waiting (answered twice, or after the
    /// send had failed).
    pub late_acks: u64,
    /// Sends given up (timed out or refused).
    pub failed: u64,
    /// Messages received, pushed or pulled, duplicates included.
    pub received: u64,
    /// Received messages dropped as duplicates.
    pub duplicates: u64,
    /// Received messages that arrived above a gap.
    pub out_of_order: u64,
    /// Messages handed to the application.
    pub delivered: u64,
    /// Held messages dropped because a stream's buffer was full.
    pub overflow_dropped: u64,
    /// Pulls started to fill a gap (timeout or buffer overflow).
    pub gaps_synced: u64,
    /// Sequence ids skipped because the server no longer has them, or the
    /// device joined the group after them (a page starting above its
    /// `after`, or an empty page below its `head`).
    pub history_skipped: u64,
    /// sync:R frames sent.
    pub sync_requests: u64,
    /// ack:R frames sent.
    pub acks_sent: u64,
    /// ping frames sent.
    pub pings_sent: u64,
    /// Frames a server never sends to a client (ignored).
    pub unexpected_frames: u64,
}
