//! ack:R and ack:A: a device's cumulative acknowledgement of a stream.
//!
//! A stream is the user's own inbox (`group` 0) or one group's log. One ack
//! covers every sequence id up to and including `seq`, so a device acks a
//! burst with one frame.

use super::fixed_frame;

fixed_frame! {
    /// ack:R: `group u64, seq u64`.
    AckR: AckR {
        /// 0 for the inbox, else the group id.
        group: u64,
        /// Everything up to and including this sequence id was received.
        seq: u64,
    }
}

fixed_frame! {
    /// ack:A: `group u64, seq u64`, the cursor as the server recorded it.
    AckA: AckA {
        /// 0 for the inbox, else the group id.
        group: u64,
        /// The device's cursor after this ack.
        seq: u64,
    }
}
