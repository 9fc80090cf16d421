//! ping and pong: liveness.
//!
//! Any frame refreshes liveness; a ping is what an idle client sends. The
//! nonce is echoed so a client can measure the round trip.

use super::fixed_frame;

fixed_frame! {
    /// ping: `nonce u64`.
    Ping: Ping {
        /// Echoed in the pong.
        nonce: u64,
    }
}

fixed_frame! {
    /// pong: `nonce u64`.
    Pong: Pong {
        /// The nonce of the ping answered.
        nonce: u64,
    }
}
