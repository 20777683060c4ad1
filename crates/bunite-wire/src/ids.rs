//! Id newtypes shared by frames and the runtime.

use std::fmt;

/// A capability id: an index into one side's cap table (PROTOCOL §7).
///
/// Ids 0 (bootstrap dispatcher) and 1 (runtime) are reserved; user caps start at 2 and are
/// never reused on a connection. Cap ids travel as unsigned 32-bit integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CapId(pub u32);

impl CapId {
    /// The bootstrap dispatcher (only method: `"bootstrap"`).
    pub const BOOTSTRAP: CapId = CapId(0);
    /// The peer's runtime (`bunite.Runtime`), reached without bootstrap.
    pub const RUNTIME: CapId = CapId(1);
    /// The first id allocated for user caps.
    pub const FIRST_USER: CapId = CapId(2);

    /// True for ids 0 and 1, which are never allocated, freed or dropped.
    pub fn is_reserved(self) -> bool {
        self.0 < Self::FIRST_USER.0
    }
}

impl fmt::Display for CapId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A call id: per peer, per connection, from 1 upward, shared by calls, bootstraps and
/// stream opens, never reused (PROTOCOL §4). Always below 2^53 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

impl CallId {
    /// The largest call id the wire can carry exactly (2^53 - 1): the TypeScript peer holds
    /// ids as doubles.
    pub const MAX: CallId = CallId((1 << 53) - 1);
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
