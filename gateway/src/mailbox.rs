//! A channel into a core that wakes it.
//!
//! A core runs an async runtime and must never block, so it cannot sit in
//! `crossbeam_channel::Receiver::recv`. Senders push into the lock-free
//! channel and then wake the core's mailbox task through its `Waker` (which
//! monoio's `sync` feature makes safe to call from any thread: it writes the
//! core's eventfd). A flag makes a burst of sends cost one wake-up, and
//! senders send batches, so one wake-up carries many items. The load
//! generator compiles this file too, for the commands to its threads.

use std::{
    future::poll_fn,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Poll, Waker},
};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

#[derive(Debug, Default)]
struct Wake {
    notified: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Wake {
    fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            let w = self.waker.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(w) = w.as_ref() {
                w.wake_by_ref();
            }
        }
    }
}

/// The sending side; cheap to clone.
#[derive(Debug)]
pub struct MailboxTx<T> {
    tx: Sender<T>,
    wake: Arc<Wake>,
}

impl<T> Clone for MailboxTx<T> {
    fn clone(&self) -> Self {
        MailboxTx {
            tx: self.tx.clone(),
            wake: self.wake.clone(),
        }
    }
}

/// The receiving side, owned by one core.
#[derive(Debug)]
pub struct MailboxRx<T> {
    rx: Receiver<T>,
    wake: Arc<Wake>,
}

/// An unbounded mailbox.
pub fn mailbox<T>() -> (MailboxTx<T>, MailboxRx<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let wake = Arc::new(Wake::default());
    (
        MailboxTx {
            tx,
            wake: wake.clone(),
        },
        MailboxRx { rx, wake },
    )
}

impl<T> MailboxTx<T> {
    /// Sends and wakes the receiver. Returns false if the receiver is gone.
    pub fn send(&self, item: T) -> bool {
        let ok = self.tx.send(item).is_ok();
        self.wake.wake();
        ok
    }
}

impl<T> MailboxRx<T> {
    /// Waits until at least one item is there and moves all that are into
    /// `out`. Returns false once every sender is gone and nothing is left.
    pub async fn recv_into(&self, out: &mut Vec<T>) -> bool {
        poll_fn(|cx| {
            self.wake.notified.store(false, Ordering::Release);
            match self.drain(out) {
                Ok(true) => return Poll::Ready(true),
                Ok(false) => {}
                Err(()) => return Poll::Ready(!out.is_empty()),
            }
            {
                let mut w = self.wake.waker.lock().unwrap_or_else(|p| p.into_inner());
                match w.as_ref() {
                    Some(old) if old.will_wake(cx.waker()) => {}
                    _ => *w = Some(cx.waker().clone()),
                }
            }
            // A send between the drain and the registration found no waker
            // to call: look again.
            match self.drain(out) {
                Ok(true) => Poll::Ready(true),
                Ok(false) => Poll::Pending,
                Err(()) => Poll::Ready(!out.is_empty()),
            }
        })
        .await
    }

    /// Moves what is there into `out` without waiting.
    pub fn try_drain(&self, out: &mut Vec<T>) {
        let _ = self.drain(out);
    }

    fn drain(&self, out: &mut Vec<T>) -> Result<bool, ()> {
        let before = out.len();
        loop {
            match self.rx.try_recv() {
                Ok(v) => out.push(v),
                Err(TryRecvError::Empty) => return Ok(out.len() > before),
                Err(TryRecvError::Disconnected) => return Err(()),
            }
        }
    }
}
