//! The client-side protocol state machine (in progress).
