//! Live counts of a connection, for leak checks and metrics ([`Stats`]).

/// Live counts of one connection. After a connection has closed and
/// [`Connection::closed`](crate::Connection::closed) returned, every count but `live_caps`
/// (which keeps the two reserved ids) is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Entries in our cap table, counting the reserved ids 0 and 1.
    pub live_caps: usize,
    /// Our calls and bootstraps awaiting a result (client side).
    pub pending_calls: usize,
    /// Handlers running for the peer (server side).
    pub active_calls: usize,
    /// Streams we serve (server side).
    pub server_streams: usize,
    /// Streams we consume (client side).
    pub client_streams: usize,
    /// Encoded messages not yet written to the transport, in bytes; on a connection whose
    /// answers a listener's send budget pays for, also what the transport holds of its own
    /// and has not yet written (a long message it took whole).
    pub unsent_bytes: usize,
    /// Tasks of this connection still alive: its driver, handlers moved to their own task,
    /// policy checks and disposals.
    pub tasks: usize,
}

impl Stats {
    /// Whether nothing is left but the reserved caps: no calls, streams, handlers, unsent
    /// bytes or tasks.
    pub fn is_idle(&self) -> bool {
        self.live_caps == 2
            && self.pending_calls == 0
            && self.active_calls == 0
            && self.server_streams == 0
            && self.client_streams == 0
            && self.unsent_bytes == 0
            && self.tasks == 0
    }
}
