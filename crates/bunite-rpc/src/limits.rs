//! Per-connection limits. Every table, queue and count a peer can grow is bounded here.

use std::time::Duration;

/// Per-connection limits; `Default` gives the protocol's defaults (PROTOCOL §5).
///
/// The defaults at a glance (each field's docs give the details); the bounds shared by every
/// connection of a listener (connections, handshakes, bytes being received) are in
/// [`ListenerConfig`](crate::transport::ListenerConfig).
///
/// | field | default | why |
/// | --- | --- | --- |
/// | `max_bytes` | 64 MiB | the protocol's `maxBytes`; a larger message is refused before it is read |
/// | `max_caps` | 1024 | cap-table entries a peer can make us hold |
/// | `max_in_flight` | 1024 | calls each way; beyond it `resource_exhausted` |
/// | `max_depth` | 256 | nesting; deeper values would cost stack |
/// | `max_revoked_ids` | 4096 | revoked ids remembered (PROTOCOL §13.7) |
/// | `max_unsent_bytes` | 64 MiB | reading stops above it, so a peer that never reads stalls us instead of growing our memory (a listener's connections also pay from its send budget across connections) |
/// | `write_stall_timeout` | 30 s | a peer that takes no bytes for this long is gone; it would otherwise hold its unsent replies |
/// | `send_deadline` | 30 s + 1 s per 256 KiB | while a listener's send budget pays for what waits for a peer, it must take it at least this fast, or it would hold the budget shared by every connection by reading a byte now and then |
/// | `max_pending_policy_checks` | 1024 | bootstraps waiting on the policy (each is a task) |
/// | `hello_timeout` | 30 s | a peer that never says hello holds a connection |
/// | `bootstrap_timeout` | 30 s | a bootstrap that is not answered means a stuck peer |
/// | `decode_budget_factor`, `decode_budget_base` | 3, 4 MiB | a message may take at most base + factor × its size once decoded (PROTOCOL §13.11) |
/// | `max_hello_features`, `max_hello_text` | 64, 4 KiB | a `hello` is small; only what is used is kept |
/// | `max_record_table_bytes` | 1 MiB | record definitions are kept for the connection's life; what they keep is bounded apart from any one message's budget |
/// | `max_buffered_stream_bytes` | 64 MiB | each stream value a consumer has not read keeps its bytes (a long one its message); a server could send a window of 1,024 maximal values per stream |
/// | `max_context_bytes` | 64 KiB | a call's `meta.context` is kept by its handler's `CallContext` for as long as it runs; beyond it the call fails `invalid_argument` |
///
/// A server whose clients may sit on slow links gives them longer to take long answers,
/// and bounds how long a stalled peer may hold its replies:
///
/// ```
/// use std::time::Duration;
/// use bunite_rpc::transport::ReceiveDeadline;
/// use bunite_rpc::{Connection, Limits};
///
/// let limits = Limits {
///     // A minute, then at least 64 KiB/s (512 kbit/s) while the send budget pays.
///     send_deadline: Some(ReceiveDeadline::new(Duration::from_secs(60), 64 * 1024)),
///     write_stall_timeout: Some(Duration::from_secs(20)),
///     ..Limits::default()
/// };
/// let builder = Connection::builder().limits(limits);
/// # let _ = builder;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest inbound message we accept, advertised in `hello.maxBytes`. Default 64 MiB.
    pub max_bytes: usize,
    /// Cap-table size, counting the reserved ids 0 and 1. Default 1024.
    pub max_caps: usize,
    /// Concurrent calls in each direction: active handlers + server streams inbound, pending
    /// calls outbound. Default 1024. An outbound call stops counting once its caller has
    /// its outcome or stops waiting for it (a call whose answer would bring caps counts
    /// until that answer comes, so the caps can be released), a stream once its end has
    /// arrived or it is dropped.
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
    /// (at most `max_in_flight` of them; a handler that completes at once is counted before
    /// the next message is read). A listener's connection also pays what waits beyond a
    /// small allowance from the listener's send budget, across its connections, stops
    /// reading while it cannot, and refuses (`resource_exhausted`) an answer longer than
    /// the budget can pay for beyond its overdraft (256 KiB unless set with
    /// [`ByteBudget::with_answer_overdraft`](
    /// crate::transport::ByteBudget::with_answer_overdraft)) instead of holding it (see
    /// [`budget`](crate::transport::budget#what-waits-to-be-sent)).
    pub max_unsent_bytes: usize,
    /// How long bytes may wait to be written while the transport takes none of them before
    /// the connection is closed as a failed transport
    /// ([`Disconnect::WriteStalled`](crate::Disconnect::WriteStalled)): pending calls fail,
    /// handlers and streams end, the transport is dropped without a goaway (it takes nothing
    /// more). Any progress (a message taken, a flush completed, bytes of a large message
    /// written) starts the wait afresh. Default 30 s: a slow but live reader takes some
    /// bytes every few milliseconds to seconds, and even a 64 MiB message makes progress
    /// at once on any link; a peer that has taken nothing for 30 s is gone or hostile, and
    /// until this fires it holds up to [`max_unsent_bytes`](Self::max_unsent_bytes) plus
    /// the running handlers' results, and (since reading stops at that limit) its
    /// end of the connection is never seen. `None` waits forever.
    pub write_stall_timeout: Option<Duration>,
    /// How fast a peer must take what waits for it while a listener's send budget pays for
    /// it ([`budget`](crate::transport::budget#what-waits-to-be-sent)): from the moment the
    /// connection starts paying, the peer has the deadline's
    /// [`for_len`](ReceiveDeadline::for_len) of the bytes it has taken
    /// since, that is `grace` plus a second per `min_rate` bytes taken. A peer that falls
    /// behind is cut off as by the write-stall limit
    /// ([`Disconnect::SlowReader`](crate::Disconnect::SlowReader)); once nothing is paid
    /// for, the clock stops. Default 30 s and 256 KiB/s, as a listener's
    /// [`receive_deadline`](crate::transport::ListenerConfig::receive_deadline): a peer
    /// that reads slowly but never stops would otherwise hold its share of the budget for
    /// as long as it liked (the write-stall limit ends only peers that take nothing), and
    /// a few such peers would keep every connection with a long answer to send from
    /// reading its next call. A peer on a link slower than about 2 Mbit/s cannot take a
    /// long answer within it: loosen it for such peers. It does nothing on a connection
    /// that pays from no budget (a client's, or one not made by a listener). `None`: no
    /// deadline.
    pub send_deadline: Option<ReceiveDeadline>,
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
    /// Bytes a decoded message may take per byte on the wire, on top of
    /// [`decode_budget_base`](Self::decode_budget_base) (PROTOCOL §13.11): what materializing
    /// it as [`Value`](crate::Value)s would allocate is counted while the frame is checked,
    /// and a message over its budget is a protocol error (goaway). Default 3, so a 64 MiB
    /// message stays under 260 MiB decoded. Dense messages of small items (records of a few
    /// small fields, long arrays of small integers) are the ones that reach it: at the
    /// defaults, about 120 KiB of small records. Raise it for peers you trust to send such
    /// messages; see `bunite_wire::limits` for the exact costs.
    pub decode_budget_factor: usize,
    /// Bytes every message may take once decoded whatever its size. Default 4 MiB, so small
    /// messages are never refused.
    pub decode_budget_base: usize,
    /// Most feature strings a peer's `hello` may carry. Default 64; more is a protocol
    /// error.
    pub max_hello_features: usize,
    /// Longest `hello` string (`mode`, `origin`, each feature), in bytes. Default 4 KiB.
    pub max_hello_text: usize,
    /// Most memory the peer's record definitions may keep in this end's decoder (PROTOCOL
    /// §3.3: a definition stays in its slot, for the connection's life, until another
    /// overwrites it). Default 1 MiB: the shapes of frames and structs take a few KiB, and
    /// a JavaScript object used as a dictionary (or a string-keyed map) of about 17,000
    /// entries with 20-byte keys fits. A definition that would take the table past it is a
    /// protocol error (goaway `invalid_argument`), as a message over its decode budget is.
    /// See "The record table" in `bunite_wire::limits`.
    pub max_record_table_bytes: usize,
    /// Most bytes (keys and values together) of an inbound call's `meta.context`, the
    /// string map a peer may send with a call (PROTOCOL §4). Default 64 KiB: trace and
    /// request metadata take a few hundred bytes. The handler's
    /// [`CallContext`](crate::CallContext) keeps the map for as long as the handler runs,
    /// so without a bound a peer could make `max_in_flight` long-running handlers hold a
    /// maximal message each. A call over it fails `invalid_argument` and never runs.
    pub max_context_bytes: usize,
    /// Most bytes the stream values this end's client streams hold may keep, received and
    /// not yet read by their consumers (counted until their credit goes back, or the
    /// consumer lets the stream go; a stream that ended still counts the values it has not
    /// read, and a peer's error that ended it at the length of its message, clipped as a
    /// goaway's when it does not fit), across all the connection's streams: what each
    /// value keeps alive, and the record definitions
    /// its table holds that came since the last value's (which the decoder may since have
    /// replaced). A value shorter than 16 KiB or less than half of its message is copied
    /// out of it when it arrives (a short one into a small per-stream arena), so that it
    /// keeps only its own bytes and not the message or the read buffer it shares with
    /// others; a longer one keeps its message and is counted for all of it. Each value is
    /// also charged the 96 bytes it takes in its consumer's queue, so values of a few bytes
    /// cannot keep many times what is counted. Default 64 MiB,
    /// as `max_unsent_bytes`: the credit window bounds how many values a server may send
    /// ahead (PROTOCOL §10, up to 1,024 a stream), not how large they are. The stream
    /// whose value would go past it fails `resource_exhausted`
    /// (`LocalError::StreamOverflow`) and is cancelled.
    pub max_buffered_stream_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: bunite_wire::DecodeLimits::DEFAULT_MAX_BYTES,
            max_caps: 1024,
            max_in_flight: 1024,
            max_depth: bunite_wire::DecodeLimits::DEFAULT_MAX_DEPTH,
            max_revoked_ids: 4096,
            max_unsent_bytes: 64 * 1024 * 1024,
            write_stall_timeout: Some(Duration::from_secs(30)),
            send_deadline: Some(ReceiveDeadline::default()),
            max_pending_policy_checks: 1024,
            hello_timeout: Some(Duration::from_secs(30)),
            bootstrap_timeout: Some(Duration::from_secs(30)),
            decode_budget_factor: bunite_wire::DecodeLimits::DEFAULT_DECODE_BUDGET_FACTOR,
            decode_budget_base: bunite_wire::DecodeLimits::DEFAULT_DECODE_BUDGET_BASE,
            max_hello_features: bunite_wire::DecodeLimits::DEFAULT_MAX_HELLO_FEATURES,
            max_hello_text: bunite_wire::DecodeLimits::DEFAULT_MAX_HELLO_TEXT,
            max_record_table_bytes: bunite_wire::DecodeLimits::DEFAULT_MAX_RECORD_TABLE_BYTES,
            max_context_bytes: 64 * 1024,
            max_buffered_stream_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Limits {
    pub(crate) fn wire(&self) -> bunite_wire::DecodeLimits {
        bunite_wire::DecodeLimits {
            max_bytes: self.max_bytes,
            max_depth: self.max_depth,
            decode_budget_factor: self.decode_budget_factor,
            decode_budget_base: self.decode_budget_base,
            max_hello_features: self.max_hello_features,
            max_hello_text: self.max_hello_text,
            max_record_table_bytes: self.max_record_table_bytes,
        }
    }
}

/// How fast a message must arrive once it has started: from its first stall, the peer has
/// [`grace`](Self::grace) plus one second per [`min_rate`](Self::min_rate) bytes of the
/// message that arrived since ([`for_len`](Self::for_len) of them). So a peer that stops
/// sending is let go after the grace, whatever length it announced, and one that keeps the
/// minimum rate after it never is. The default (30 s and 256 KiB/s) lets a 64 KiB message
/// take up to 30.25 s and a maximal 64 MiB message 4 min 46 s, so a client on a 2 Mbit/s
/// uplink still gets any message through; a server exposed to the internet may want it
/// tighter.
///
/// The same rule paces what a peer is sent while a listener's send budget pays for it
/// ([`Limits::send_deadline`]): `grace` plus a second per `min_rate` bytes taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReceiveDeadline {
    /// Time every message gets, whatever its length: how long a peer may fall behind
    /// the minimum rate (or send nothing) before it is let go.
    pub grace: Duration,
    /// The slowest rate, in bytes per second, a long message may arrive at on average
    /// after the grace (at least 1).
    pub min_rate: u64,
}

impl Default for ReceiveDeadline {
    fn default() -> Self {
        ReceiveDeadline {
            grace: Duration::from_secs(30),
            min_rate: 256 * 1024,
        }
    }
}

impl ReceiveDeadline {
    /// `grace` plus one second per `min_rate` bytes (a `min_rate` of 0 counts as 1).
    pub fn new(grace: Duration, min_rate: u64) -> Self {
        ReceiveDeadline {
            grace,
            min_rate: min_rate.max(1),
        }
    }

    /// The time `len` bytes of a message get (saturating): the grace, and `len` at the
    /// minimum rate.
    pub fn for_len(&self, len: u64) -> Duration {
        let rate = self.min_rate.max(1);
        let whole = Duration::from_secs(len / rate);
        let part = (u128::from(len % rate) * 1_000_000_000 / u128::from(rate)) as u64;
        let part = Duration::from_nanos(part);
        self.grace.saturating_add(whole).saturating_add(part)
    }
}
