//! What the client tells its application.
//!
//! Events are owned values (a message body is a `Bytes` slice of the read
//! buffer, not a copy) drained with [`Client::poll_event`](super::Client::poll_event).
//! Each has what the application needs to act without asking the client
//! again; replies the client does not interpret (unread summary, group and
//! receipts answers) are passed through as their frames.

use std::time::Duration;

use bytes::Bytes;

use crate::{
    codes::{ErrorCode, KickReason},
    frame::{GroupA, ReceiptsA, UnreadA},
    header::Kind,
};

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// login:ok arrived; queued messages and pulls have been (re)sent.
    LoggedIn {
        /// The authenticated user.
        user: u64,
        /// The authenticated device.
        device: u32,
        /// The server's id of this connection.
        session: u64,
        /// Idle time after which the client pings.
        heartbeat: Duration,
        /// Highest sequence id of the inbox on the server.
        inbox_head: u64,
        /// Server clock, ms since the Unix epoch.
        server_time: u64,
        /// Largest frame the server accepts.
        max_frame: u32,
        /// Frames per second the server lets this connection send on
        /// average, every frame counted.
        frame_rate: u32,
        /// Frames the connection may send at once after a quiet spell.
        frame_burst: u32,
    },
    /// msg:A: the server stored a message this client sent.
    Acked {
        /// The msg id returned by [`Client::send`](super::Client::send).
        msg_id: u64,
        /// 0 for one-to-one, else the group.
        group: u64,
        /// Sequence id in the receiver's inbox, or in the group's log.
        seq: u64,
        /// Sequence id of the copy in the sender's own inbox (0 for groups).
        own_seq: u64,
        /// When the server stored it, ms since the Unix epoch.
        server_time: u64,
    },
    /// A message, delivered strictly in sequence order per stream.
    Message {
        /// 0 for the inbox, else the group.
        group: u64,
        /// Sequence id in that stream.
        seq: u64,
        /// The sending user.
        from: u64,
        /// The receiving user (one-to-one), or 0.
        to: u64,
        /// The sender's msg id.
        msg_id: u64,
        /// When the server stored it, ms since the Unix epoch.
        server_time: u64,
        /// The content.
        body: Bytes,
        /// It came in a sync page rather than a push.
        pulled: bool,
    },
    /// The receiver has received a message this client sent (ack:N).
    Delivered {
        /// The message.
        msg_id: u64,
        /// Its receiver.
        peer: u64,
    },
    /// The receiver has read a message this client sent (read:N).
    Read {
        /// The message.
        msg_id: u64,
        /// Its receiver.
        peer: u64,
    },
    /// Another device of this user marked a conversation read (read:N with
    /// this user as reader).
    ReadElsewhere {
        /// 0 for one-to-one, else the group.
        group: u64,
        /// The other user of a one-to-one conversation, else 0.
        peer: u64,
        /// Read up to this sequence id of the stream.
        seq: u64,
    },
    /// A send will not be delivered; it has left the wait-ack queue.
    SendFailed {
        /// The message.
        msg_id: u64,
        /// Why.
        reason: FailReason,
    },
    /// A pull of this stream has ended (an empty page, or a page that
    /// brought nothing past the request).
    SyncDone {
        /// 0 for the inbox, else the group.
        group: u64,
    },
    /// The unread summary asked for with [`Client::request_unread`](super::Client::request_unread).
    Unread(UnreadA),
    /// The server closed the session; the state is [`State::Closed`](super::State::Closed).
    Kicked {
        /// Why.
        reason: KickReason,
        /// Human-readable detail.
        text: String,
    },
    /// An error frame that did not fail a send. After a code that closes
    /// the connection (bad token, malformed frame, ...) the state is
    /// [`State::Closed`](super::State::Closed).
    ServerError {
        /// The code.
        code: ErrorCode,
        /// Kind of the frame it answers, if any.
        ref_kind: Option<Kind>,
        /// Id in the frame it answers (msg id, request id, group), or 0.
        ref_id: u64,
        /// Human-readable detail.
        text: String,
    },
    /// The answer to [`Client::group_request`](super::Client::group_request).
    GroupAnswer(GroupA),
    /// The answer to [`Client::request_receipts`](super::Client::request_receipts).
    Receipts(ReceiptsA),
    /// Nothing arrived from the server for `dead_after` heartbeats: the
    /// connection is taken as dead and the state is [`State::Closed`](super::State::Closed).
    /// Close the transport and reconnect.
    ConnectionDead {
        /// How long the server has been silent.
        silent_for: Duration,
    },
    /// The answer to a ping.
    Pong {
        /// The nonce of the ping.
        nonce: u64,
    },
}

/// Why a send failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// No msg:A after the first send and every retransmission. The message
    /// may still have been stored: only a msg:A tells.
    TimedOut,
    /// The server refused it with this error code.
    Rejected(ErrorCode),
    /// It waited (offline) longer than the de-duplication window, so a
    /// resend could be stored twice. It may have been stored already.
    Expired,
}
