//! The load generator's message body: who sent it, which of its messages it
//! is, and when it was *scheduled* to be sent.
//!
//! ```text
//!  0        4        8          12         16                 24                 32      size
//!  +--------+--------+----------+----------+------------------+------------------+-------+
//!  | "IGLG" | run id | sender   | reserved | counter (u64)    | scheduled (u64)  | zeros |
//!  +--------+--------+----------+----------+------------------+------------------+-------+
//! ```
//!
//! The receiver measures delivery latency from `scheduled` (nanoseconds on
//! the run's monotonic time base, see [`crate::clock`]), not from the moment
//! the message was written: a sender that falls behind its schedule shows up
//! in the latencies instead of hiding (coordinated omission). `counter` is
//! the sender's message number, 0, 1, 2, ...; with the sender index it is
//! the application-level identity used to find losses and duplicates that
//! the client's own de-duplication would not catch. `run id` tells this
//! run's messages from older ones a durable backend may still hold for the
//! same users. Bodies are written into one arena per thread and split off,
//! so a message costs no allocation of its own.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the fixed part.
pub const HEADER: usize = 32;
const MAGIC: &[u8; 4] = b"IGLG";
/// Arena block size: bodies are split off it until it runs out.
const ARENA: usize = 256 * 1024;

/// The fields of a load generator body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The run that sent it.
    pub run: u32,
    /// The sender's index in the scenario.
    pub sender: u32,
    /// The sender's message number.
    pub counter: u64,
    /// When it was scheduled, ns on the run's time base.
    pub scheduled: u64,
}

impl Stamp {
    /// Parses a body; `None` if it is not a load generator body.
    pub fn parse(body: &[u8]) -> Option<Stamp> {
        let head = body.get(..HEADER)?;
        if &head[..4] != MAGIC {
            return None;
        }
        let u32_at =
            |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[i..i + 8]);
            u64::from_be_bytes(b)
        };
        Some(Stamp {
            run: u32_at(4),
            sender: u32_at(8),
            counter: u64_at(16),
            scheduled: u64_at(24),
        })
    }
}

/// Writes bodies of one size into a shared block, splitting each off.
#[derive(Debug)]
pub(crate) struct Arena {
    buf: BytesMut,
    size: usize,
}

impl Arena {
    /// An arena for bodies of `size` bytes (at least [`HEADER`]).
    pub(crate) fn new(size: usize) -> Arena {
        Arena {
            buf: BytesMut::new(),
            size: size.max(HEADER),
        }
    }

    /// A body carrying `stamp`.
    pub(crate) fn body(&mut self, stamp: Stamp) -> Bytes {
        if self.buf.capacity() - self.buf.len() < self.size {
            // The old block lives on in the bodies still referencing it.
            self.buf = BytesMut::with_capacity(ARENA.max(self.size));
        }
        self.buf.put_slice(MAGIC);
        self.buf.put_u32(stamp.run);
        self.buf.put_u32(stamp.sender);
        self.buf.put_u32(0);
        self.buf.put_u64(stamp.counter);
        self.buf.put_u64(stamp.scheduled);
        self.buf.put_bytes(0, self.size - HEADER);
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_foreign_bodies() {
        let mut a = Arena::new(64);
        let s = Stamp {
            run: 7,
            sender: 3,
            counter: 1 << 40,
            scheduled: 123_456_789,
        };
        let b = a.body(s);
        assert_eq!(b.len(), 64);
        assert_eq!(Stamp::parse(&b), Some(s));
        assert_eq!(Stamp::parse(b"hello"), None);
        assert_eq!(Stamp::parse(&[0u8; 40]), None);
        // Many bodies share blocks without corrupting each other.
        let bodies: Vec<Bytes> = (0..10_000)
            .map(|i| a.body(Stamp { counter: i, ..s }))
            .collect();
        for (i, b) in bodies.iter().enumerate() {
            assert_eq!(Stamp::parse(b).map(|s| s.counter), Some(i as u64));
        }
    }
}
