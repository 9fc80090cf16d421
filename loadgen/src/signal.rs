//! A wake-up flag for one task on one thread, as the gateway's: the pacer,
//! the timer task and the reader queue frames, the connection's writer
//! sleeps on this. `!Sync` on purpose: a `Cell` is enough and costs no
//! atomic.

use std::{
    cell::Cell,
    future::poll_fn,
    task::{Poll, Waker},
};

/// Frames are waiting in the connection's staging buffer.
pub(crate) const FLUSH: u8 = 1;
/// Flush, then close the transport (the session ended).
pub(crate) const CLOSE: u8 = 2;
/// Cut the transport now, without a goodbye (storm, chaos).
pub(crate) const CUT: u8 = 4;

/// Flag bits with one waiting task.
#[derive(Default)]
pub(crate) struct Signal {
    flags: Cell<u8>,
    waker: Cell<Option<Waker>>,
}

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signal")
            .field("flags", &self.flags.get())
            .finish()
    }
}

impl Signal {
    /// Sets `bits` and wakes the waiting task, if any.
    pub(crate) fn raise(&self, bits: u8) {
        self.flags.set(self.flags.get() | bits);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Clears `bits`.
    pub(crate) fn clear(&self, bits: u8) {
        self.flags.set(self.flags.get() & !bits);
    }

    /// Waits until one of `bits` is set; returns the set bits of `bits`.
    pub(crate) async fn wait(&self, bits: u8) -> u8 {
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
