//! A wake-up flag for one task on one core (or one load-generator thread).
//!
//! Deliveries and kicks for a connection come from the core's mailbox task
//! or its timer task; the connection's own task sleeps on its socket and on
//! this flag at once. It is `!Sync` on purpose: only the owning core touches
//! it, so a `Cell` is enough and costs no atomic.

use std::{
    cell::Cell,
    future::poll_fn,
    task::{Poll, Waker},
};

/// Flag bits with one waiting task.
#[derive(Default)]
pub struct Wake {
    flags: Cell<u8>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wake")
            .field("flags", &self.flags.get())
            .finish()
    }
}

impl Wake {
    /// Sets `bits` and wakes the waiting task, if any.
    pub fn raise(&self, bits: u8) {
        self.flags.set(self.flags.get() | bits);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Whether any of `bits` is set.
    pub fn is_set(&self, bits: u8) -> bool {
        self.flags.get() & bits != 0
    }

    /// Clears `bits`.
    pub fn clear(&self, bits: u8) {
        self.flags.set(self.flags.get() & !bits);
    }

    /// Waits until one of `bits` is set; returns the set bits of `bits`.
    pub async fn wait(&self, bits: u8) -> u8 {
        poll_fn(|cx| {
            let f = self.flags.get() & bits;
            if f != 0 {
                Poll::Ready(f)
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}
