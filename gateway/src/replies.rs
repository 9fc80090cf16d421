//! Answers to the requests the server API makes on a user's behalf.
//!
//! The server API sends a message as its sender would: a msg:R handed to
//! the backend like any connection's, so that it gets every guarantee of
//! the protocol (durable before the answer, one copy per msg id, pushed to
//! online devices, pulled by offline ones). Its "connection" is a request
//! id on a core number no core has ([`API_CORE`]); the router hands what
//! the backend answers on it (msg:A, or an error frame) to the waiting
//! request here instead of to a core. The table lives beside the session
//! registry because every router already holds that.

use std::sync::{
    Mutex,
    atomic::{AtomicU32, Ordering::Relaxed},
};

use ahash::AHashMap;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::conn_id::ConnId;

/// The core number of the server API's requests.
pub const API_CORE: u16 = u16::MAX;

/// Requests waiting for the backend's answer.
#[derive(Debug, Default)]
pub struct Replies {
    next: AtomicU32,
    waiting: Mutex<AHashMap<u32, oneshot::Sender<Bytes>>>,
}

impl Replies {
    /// A new request: the connection id to send it as, and where its
    /// answer arrives.
    pub fn open(&self) -> (ConnId, oneshot::Receiver<Bytes>) {
        let id = self.next.fetch_add(1, Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        (ConnId::new(API_CORE, id, 0), rx)
    }

    /// Forgets a request that stopped waiting.
    pub fn close(&self, conn: ConnId) {
        self.lock().remove(&conn.slot);
    }

    /// Hands the backend's answer to its request (the first one only: an
    /// answer is one frame).
    pub(crate) fn answer(&self, conn: ConnId, bytes: Bytes) {
        if let Some(tx) = self.lock().remove(&conn.slot) {
            let _ = tx.send(bytes);
        }
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AHashMap<u32, oneshot::Sender<Bytes>>> {
        // A panic while holding this lock leaves the map whole.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
