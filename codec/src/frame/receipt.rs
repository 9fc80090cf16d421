//! Receipts: ack:N (delivered) and read:R / read:A / read:N (read).
//!
//! Receipts are cumulative over the reader's stream: "user P has received
//! (read) everything in its inbox up to `seq`". A sender learned each of its
//! messages' receiver-side `seq` from msg:A, so one receipt settles many
//! messages. Group read receipts are pulled with receipts:R, not pushed.

use super::fixed_frame;

fixed_frame! {
    /// ack:N: `peer u64, group u64, seq u64`, pushed to the sender's devices.
    AckN: AckN {
        /// The receiver whose devices acknowledged.
        peer: u64,
        /// 0 for one-to-one.
        group: u64,
        /// The receiver's inbox is delivered up to this sequence id.
        seq: u64,
    }
}

fixed_frame! {
    /// read:R: `group u64, peer u64, seq u64`.
    ReadR: ReadR {
        /// 0 for a one-to-one conversation, else the group id.
        group: u64,
        /// The other user of a one-to-one conversation (0 for a group).
        peer: u64,
        /// Read up to and including this sequence id of the reader's stream.
        seq: u64,
    }
}

fixed_frame! {
    /// read:A: `group u64, peer u64, seq u64`, echoing the recorded mark.
    ReadA: ReadA {
        /// As in read:R.
        group: u64,
        /// As in read:R.
        peer: u64,
        /// The read mark after this request.
        seq: u64,
    }
}

fixed_frame! {
    /// read:N: `reader u64, group u64, peer u64, seq u64`, pushed to the
    /// peer's devices and to the reader's other devices.
    ReadN: ReadN {
        /// Who read.
        reader: u64,
        /// 0 for one-to-one.
        group: u64,
        /// The conversation's other user as the reader named it.
        peer: u64,
        /// Read up to this sequence id of the reader's stream.
        seq: u64,
    }
}
