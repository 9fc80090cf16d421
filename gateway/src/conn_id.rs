//! Connection identity: (core, slab slot, generation).
//!
//! Slots are reused as connections come and go; the generation makes a
//! stale id (a delivery for a connection that closed) miss the new occupant
//! of its slot instead of reaching the wrong user.

/// Identifies a connection across the whole gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// The owning core.
    pub core: u16,
    /// The slot in that core's slab.
    pub slot: u32,
    /// The slot's generation when this connection took it.
    pub generation: u32,
}

impl ConnId {
    /// An id.
    pub fn new(core: u16, slot: u32, generation: u32) -> ConnId {
        ConnId {
            core,
            slot,
            generation,
        }
    }

    /// A 64-bit form for logs and the login:ok session field.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.core) << 48)
            | ((u64::from(self.slot) & 0xff_ffff) << 24)
            | (u64::from(self.generation) & 0xff_ffff)
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.core, self.slot, self.generation)
    }
}
