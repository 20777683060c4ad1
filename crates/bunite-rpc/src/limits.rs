//! Per-connection limits. Every table, queue and count a peer can grow is bounded here.

use std::time::Duration;

/// Per-connection limits; `Default` gives the protocol's defaults (PROTOCOL §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest inbound message we accept, advertised in `hello.maxBytes`. Default 64 MiB.
    pub max_bytes: usize,
    /// Cap-table size, counting the reserved ids 0 and 1. Default 1024.
    pub max_caps: usize,
    /// Concurrent calls in each direction: active handlers + server streams inbound, pending
    /// calls outbound. Default 1024.
    pub max_in_flight: usize,
    /// Deepest value nesting the decoder accepts. Default 256.
    pub max_depth: usize,
    /// How many revoked cap-ids the client remembers (the newest). Default 4096
    /// (PROTOCOL §13.7).
    pub max_revoked_ids: usize,
    /// Encoded frames waiting for the transport, in bytes, above which we stop reading
    /// from the peer until the transport catches up. Default 64 MiB: a peer that floods us
    /// with calls but never reads the results stalls instead of growing our memory. The
    /// backlog can exceed it by the results of handlers already running when reading stops
    /// (at most `max_in_flight` of them).
    pub max_unsent_bytes: usize,
    /// Bootstraps waiting for the policy (they do not count toward `max_in_flight`,
    /// PROTOCOL §8, but each is a task). Default 1024; beyond it a bootstrap fails
    /// `resource_exhausted {reason:"max_concurrent_calls"}`.
    pub max_pending_policy_checks: usize,
    /// How long a peer may take to send its hello before the connection is closed
    /// (goaway `deadline_exceeded`). Default 30 s: a peer sends hello at once on creation
    /// (PROTOCOL §6), so only a stuck or hostile peer takes longer, and until then it holds
    /// a connection. `None` waits forever.
    pub hello_timeout: Option<Duration>,
    /// How long [`Connection::bootstrap`](crate::Connection::bootstrap) and its siblings wait
    /// for the answer, the wait for the peer's hello included, before failing
    /// `deadline_exceeded` ([`LocalError::DeadlineExceeded`](crate::LocalError)). Default
    /// 30 s: a peer answers a bootstrap at once unless its policy is slow, so a longer wait
    /// means a stuck peer. `None` waits as long as the connection lives.
    pub bootstrap_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: bunite_wire::Limits::DEFAULT_MAX_BYTES,
            max_caps: 1024,
            max_in_flight: 1024,
            max_depth: bunite_wire::Limits::DEFAULT_MAX_DEPTH,
            max_revoked_ids: 4096,
            max_unsent_bytes: 64 * 1024 * 1024,
            max_pending_policy_checks: 1024,
            hello_timeout: Some(Duration::from_secs(30)),
            bootstrap_timeout: Some(Duration::from_secs(30)),
        }
    }
}

impl Limits {
    pub(crate) fn wire(&self) -> bunite_wire::Limits {
        bunite_wire::Limits {
            max_bytes: self.max_bytes,
            max_depth: self.max_depth,
        }
    }
}
