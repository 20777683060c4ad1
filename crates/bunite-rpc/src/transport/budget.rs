//! Bounds shared by every connection of a listener: a [`ByteBudget`] of bytes held across
//! connections, and the [`ListenerConfig`] of [`byte_stream::TcpMessageListener`](
//! crate::transport::byte_stream::TcpMessageListener) and [`ws::WsListener`](
//! crate::transport::ws::WsListener).
//!
//! # The listener bounds
//!
//! | field | default | why |
//! | --- | --- | --- |
//! | [`max_connections`](ListenerConfig::max_connections) | 4,096 | Live connections (accepted, not yet dropped; a byte-stream socket that lingers after its transport is dropped, reading what its peer still sends for up to [`LINGER`](super::LINGER) so that the peer can read our goaway, counts until it is closed). An idle connection costs ~16 KB here, after long messages too (no buffer keeps a frame over 8 KiB: see the `ws` module's `# Buffers`), so the default bounds idle memory near 64 MiB and stays well under common file-descriptor limits. Past it the listener stops accepting (clients wait in the kernel's backlog) until a connection ends. |
//! | [`max_handshakes`](ListenerConfig::max_handshakes) | 256 | WebSocket handshakes in progress. A flood of sockets that never finish their handshake holds at most this many, each for at most `handshake_timeout`. |
//! | [`handshake_timeout`](ListenerConfig::handshake_timeout) | 10 s | How long one WebSocket handshake may take (a listener's, one [`ws::accept_upgrade`](crate::transport::ws::accept_upgrade) completes for a socket accepted elsewhere, and the hand-over of an upgrade an axum `RpcEndpoint` answered with `101`); a browser needs well under a second. |
//! | [`max_bytes`](ListenerConfig::max_bytes) | 64 MiB | The largest inbound message per connection: the protocol's default `maxBytes` (PROTOCOL §5). |
//! | [`receive_budget`](ListenerConfig::receive_budget) | 256 MiB | Bytes of messages being received, across all the listener's connections: four maximal messages at once (each is paid for whole once its first 16 KiB have arrived, so an announcement alone draws nothing; a WebSocket message sent in fragments, whose size is not known, is paid for at `max_bytes`). Each connection reads small messages (up to [`FREE_PER_CONNECTION`]) without drawing from it, so a budget held by large messages never stops ordinary traffic. Read buffers a connection keeps between messages beyond that allowance are paid from it too, and yield to a message that waits (below). |
//! | [`send_budget`](ListenerConfig::send_budget) | 256 MiB | Bytes waiting to be written to peers, across all the listener's connections, beyond [`FREE_PER_CONNECTION`] each: four maximal answers at once. A connection that cannot pay for what waits stops reading its peer until it has written it, and an answer longer than the budget can pay for (beyond its overdraft, [`ANSWER_OVERDRAFT`] unless set with [`ByteBudget::with_answer_overdraft`]) is refused with `resource_exhausted` rather than held (below), so peers that never read hold at most this between them, plus the allowance and the overdraft each. A budget of its own, so that peers that read slowly, holding it, never keep messages from being received; and while it pays, the peer must keep the pace of [`Limits::send_deadline`](crate::Limits::send_deadline). |
//! | [`receive_deadline`](ListenerConfig::receive_deadline) | 30 s + 1 s per 256 KiB | How fast one message must arrive once it has started: from its first stall, [`ReceiveDeadline`]'s grace plus a second per `min_rate` bytes of it that arrived since (so a peer that stops sending is let go after the grace, and a maximal message sent at the minimum rate takes at most 4 min 46 s). A long message holds its size of the budget until its last byte, so a peer that stalls or trickles inside one would hold it for as long as it keeps the socket open. Past it the connection gets a goaway `deadline_exceeded` and closes. Time waiting for the budget does not count. |
//! | [`ping_interval`](ListenerConfig::ping_interval) | 30 s | WebSocket connections send a ping once the peer has been silent for one to two intervals, and close when the peer then stays silent for another interval (a missed pong). Browsers and the TypeScript peer answer pings on their own. `None`: no pings. |
//! | [`tcp_keepalive`](ListenerConfig::tcp_keepalive) | 30 s | TCP keepalive on every accepted socket: a silent peer is noticed about 60 s later (see [`TCP_KEEPALIVE`](super::TCP_KEEPALIVE)). `None`: off. |
//! | `tls` (feature `tls`) | none | A certificate and key: the listener terminates TLS (`wss://`, `tls://`), within `handshake_timeout` and `max_handshakes`. |
//!
//! # The budget
//!
//! A [`ByteBudget`] is a cheap [`Clone`] handle on one counter of bytes. Code about to hold
//! `n` bytes takes a [`BudgetPermit`] for them ([`try_acquire`](ByteBudget::try_acquire),
//! [`acquire`](ByteBudget::acquire) or, in poll code, a [`BudgetWaiter`]) and keeps it as
//! long as it holds the bytes; dropping the permit gives them back and wakes waiters (in
//! FIFO order: a large request is not starved by small ones). Nothing is ever allocated
//! before its permit is held, so the bytes held under one budget never exceed its limit.
//!
//! Between messages a connection may keep read buffers for the next ones (the buffer a
//! long message was read into, and up to four earlier read allocations, while it is busy;
//! `transport/recycle.rs`): what they hold beyond the free allowance is paid from the
//! budget too, they are not kept when it cannot pay, and they are let go as soon as a
//! request on the budget has to wait, so that they never keep a message from being
//! received. (Outside the budget, a peer that sent a few long messages and then a byte
//! now and then kept up to 1.6 MiB per connection for as long as it went on.)
//!
//! Both sources take a permit for the whole rest of a large message at once (all or
//! nothing), so two half-received messages can never wait on each other: the byte stream
//! once its length prefix and the free allowance's worth of it have arrived, the WebSocket
//! source once the header of the message's first frame and that much have (the frame, if
//! it is the whole message; the frame limit, if fragments follow and the message's size is
//! not known yet). Not on the announcement alone: a 4-byte prefix announcing 64 MiB drew a
//! quarter of the default budget, and the receive deadline, which then went by the
//! announced length, let it hold it for 286 s (`docs/RELIABILITY.md`). So four maximal messages are received
//! at once under the default budget, and the others wait their turn holding nothing but
//! their free allowance. (The WebSocket source used to charge bytes as they were read: five
//! maximal messages arriving at once each took a share and waited for more, until their
//! peers were dropped for missed pongs.) For that to hold, a source reads no more of a
//! message than the free allowance before it is paid for, and waits for the budget holding
//! nothing of it: the byte stream, which keeps what a long message drew to pay for the
//! buffer the message left, lets that go (the start of the next message moves to a small
//! buffer) when the next message's charge is not there at once. (Found by the property test
//! `tests/send_budget.rs` once answers were paid from the budget too: a connection holding
//! what its last message drew waited for the rest of the next one's charge, and another
//! waited for what it held.)
//!
//! A message longer than the whole budget and the free allowance could never be paid for:
//! it is refused as too large (a goaway `resource_exhausted`, reason `max_frame_bytes`),
//! by the byte stream when its length prefix arrives, by the WebSocket source when its one
//! frame's header announces it or, for a message in fragments, once it has read as much
//! as the budget and the allowance hold. A WebSocket message in fragments is paid for with
//! the whole budget when the budget is below the frame limit. So give a listener a budget
//! of at least [`max_bytes`](ListenerConfig::max_bytes). (The WebSocket source used to take
//! the whole budget for such a message and wait for a top-up that nothing could give,
//! holding the budget for as long as its peer kept the socket open: waiting for the budget
//! is not the peer's time, so the receive deadline never ended it.) A message in fragments
//! that goes on past what it was paid for (the frame limit: its fragments' headers and the
//! pings between them count) reads more only if the budget has it at once, and is refused
//! as too large otherwise: waiting for it, holding what it drew, it waited behind a message
//! waiting for its whole, which waited for what it held.
//!
//! # What waits to be sent
//!
//! A listener's connection pays from its [`send_budget`](ListenerConfig::send_budget) for
//! what waits to be written to its peer beyond [`FREE_PER_CONNECTION`]: the frames its
//! session has encoded and its sink holds ([`MessageSink::send_budget`](
//! super::MessageSink::send_budget), [`MessageSink::queued`](super::MessageSink::queued)).
//! Paying never waits (the bytes are already held): while the budget cannot pay, the
//! connection stops reading its peer, as it does past [`Limits::max_unsent_bytes`](
//! crate::Limits::max_unsent_bytes), goes on writing, and gives back what it paid as the
//! peer takes it.
//!
//! An answer is held to the same bound as it is made: a result or a stream value longer
//! than what the budget can pay for now, plus its overdraft ([`ANSWER_OVERDRAFT`], 256 KiB,
//! unless set with [`ByteBudget::with_answer_overdraft`]) and less what
//! already waits on the connection beyond what it has paid, is not held but replaced by
//! `resource_exhausted` (reason `max_frame_bytes`, the message naming the send budget), as
//! one longer than the peer's `maxBytes` is. The answer is paid for between being encoded
//! and being queued, all at once or not at all, so two connections making answers at the
//! same moment on two threads never count on the same bytes. The handler's work is lost,
//! as in gRPC when a reply exceeds its send limit; the caller may try again once the
//! budget has room. A connection reads its next call only once what waits is paid for, so
//! thanks to the overdraft an answer up to 256 KiB is refused only when answers of
//! handlers that completed later (not at once) are ready together. (Before answers were
//! held to the budget, each connection that could not pay held one answer of up to the
//! peer's `maxBytes` beyond it: 20 callers never reading 32 MiB answers took a server
//! 933 MiB past its 256 MiB budget.)
//!
//! So peers that send calls and never read the answers hold at most the budget between
//! them, plus the free allowance and the overdraft each, until
//! [`Limits::write_stall_timeout`](crate::Limits::write_stall_timeout) or the send
//! deadline lets them go (before the budget, each could hold `max_unsent_bytes`: 20 such
//! peers held 1.3 GiB, `docs/RELIABILITY.md`). Meanwhile connections whose answers are
//! small go on as before, and one with a long answer to send reads its next call once
//! that answer is written.
//!
//! It is a budget of its own rather than the receive budget: a peer that reads slowly but
//! never stops (so the write-stall limit never ends it) keeps what it is sent paid for
//! until its send deadline ends it (below), and with one budget for both, a few such peers
//! kept every other connection's long messages from being received. One [`ByteBudget`]
//! may still be given as both, for one bound on everything.
//!
//! While the budget pays for what waits, the peer must take it at a pace:
//! [`Limits::send_deadline`](crate::Limits::send_deadline) (30 s, then 256 KiB/s on
//! average, as the receive deadline asks of a message that arrives). A peer that falls
//! behind is let go as one that stops reading is
//! ([`Disconnect::SlowReader`](crate::Disconnect::SlowReader)); one that takes a byte now
//! and then would otherwise hold its share of the budget for good.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;

use super::{ReceiveDeadline, TransportError};

/// Bytes each connection may hold in a message being received without drawing from the
/// listener's budget: a read buffer's worth, so small messages never wait on the budget.
pub const FREE_PER_CONNECTION: usize = 16 * 1024;

/// How far beyond what a listener's [`send_budget`](ListenerConfig::send_budget) can pay
/// for one connection's answers may go, by default (see "What waits to be sent" in the
/// module docs; [`ByteBudget::with_answer_overdraft`] sets it): an answer (a result or a
/// stream value) up to this long is refused for the budget only when several are ready at
/// once; a longer one that the budget cannot pay for is replaced by `resource_exhausted`
/// (reason `max_frame_bytes`).
pub const ANSWER_OVERDRAFT: usize = 256 * 1024;

/// The bounds of a listener; the defaults and their reasons are in the [module docs](self).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ListenerConfig {
    /// Live connections at once.
    pub max_connections: usize,
    /// WebSocket handshakes in progress at once.
    pub max_handshakes: usize,
    /// How long one WebSocket (or TLS) handshake may take. Dropping the listener ends
    /// the handshakes in progress at once.
    pub handshake_timeout: Duration,
    /// The largest inbound message per connection. A connection announces its own
    /// [`Limits::max_bytes`](crate::Limits::max_bytes) in its hello: give it the same
    /// value (`Connection::builder().limits(..)`), or a peer that trusts the hello sends
    /// messages the listener refuses.
    pub max_bytes: usize,
    /// Bytes of messages being received across all connections.
    pub receive_budget: ByteBudget,
    /// Bytes waiting to be sent across all connections, beyond a free allowance each (see
    /// [What waits to be sent](self#what-waits-to-be-sent)).
    pub send_budget: ByteBudget,
    /// How long a message may take to arrive once it has started (`None`: as long as the
    /// peer likes).
    pub receive_deadline: Option<ReceiveDeadline>,
    /// WebSocket pings after this long without a frame from the peer.
    pub ping_interval: Option<Duration>,
    /// TCP keepalive idle time of accepted sockets.
    pub tcp_keepalive: Option<Duration>,
    /// TLS to terminate (feature `tls`).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub tls: Option<super::tls::ServerTls>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            max_connections: 4096,
            max_handshakes: 256,
            handshake_timeout: Duration::from_secs(10),
            max_bytes: bunite_wire::DecodeLimits::DEFAULT_MAX_BYTES,
            receive_budget: ByteBudget::new(256 << 20),
            send_budget: ByteBudget::new(256 << 20),
            receive_deadline: Some(ReceiveDeadline::default()),
            ping_interval: Some(super::PING_INTERVAL),
            tcp_keepalive: Some(super::TCP_KEEPALIVE),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ListenerConfig {
    /// Sets [`max_connections`](Self::max_connections).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets [`max_handshakes`](Self::max_handshakes).
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n;
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`max_bytes`](Self::max_bytes).
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Sets [`receive_budget`](Self::receive_budget) (a budget may be shared by listeners).
    pub fn receive_budget(mut self, budget: ByteBudget) -> Self {
        self.receive_budget = budget;
        self
    }

    /// Sets [`send_budget`](Self::send_budget) (a budget may be shared by listeners, and
    /// with a receive budget).
    pub fn send_budget(mut self, budget: ByteBudget) -> Self {
        self.send_budget = budget;
        self
    }

    /// Sets [`receive_deadline`](Self::receive_deadline) (`None`: none).
    pub fn receive_deadline(mut self, deadline: Option<ReceiveDeadline>) -> Self {
        self.receive_deadline = deadline;
        self
    }

    /// Sets [`ping_interval`](Self::ping_interval) (`None`: no pings).
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Sets [`tcp_keepalive`](Self::tcp_keepalive) (`None`: off).
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.tcp_keepalive = idle;
        self
    }

    /// Terminates TLS with this certificate (feature `tls`).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, tls: super::tls::ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// A bound on bytes held across connections. Cheap to clone; every clone draws from the
/// same counter.
#[derive(Debug, Clone)]
pub struct ByteBudget {
    sem: Arc<Semaphore>,
    limit: usize,
    /// How many times a request has had to wait (see [`Pressure`]).
    waits: Arc<AtomicU64>,
    /// As a send budget, how far one connection's answers may go beyond what it can pay.
    overdraft: usize,
}

/// Bytes drawn from a [`ByteBudget`]; dropping it gives them back.
#[derive(Debug, Default)]
#[must_use = "the bytes go back to the budget when the permit is dropped"]
pub struct BudgetPermit(Option<OwnedSemaphorePermit>);

impl ByteBudget {
    /// A budget of `limit` bytes (at most `Semaphore::MAX_PERMITS`, about 2^61).
    pub fn new(limit: usize) -> Self {
        let limit = limit.min(Semaphore::MAX_PERMITS);
        ByteBudget {
            sem: Arc::new(Semaphore::new(limit)),
            limit,
            waits: Arc::default(),
            overdraft: ANSWER_OVERDRAFT,
        }
    }

    /// As a listener's [`send_budget`](ListenerConfig::send_budget): how far beyond what
    /// the budget can pay for one connection's answers may go ([`ANSWER_OVERDRAFT`] unless
    /// set with [`with_answer_overdraft`](Self::with_answer_overdraft)). A receive budget
    /// has no use for it.
    pub fn answer_overdraft(&self) -> usize {
        self.overdraft
    }

    /// This budget (the same bytes: clones draw from one counter) with answers allowed
    /// `bytes` beyond what it can pay for, on each connection it pays for (see [What waits
    /// to be sent](self#what-waits-to-be-sent)). Less holds less beyond the budget on each
    /// connection whose peer does not read (at most [`FREE_PER_CONNECTION`] and this), and
    /// refuses more answers while others hold the budget: with 0, any answer longer than
    /// the free allowance that the budget cannot pay for at once is refused. More lets
    /// longer answers through while the budget is held, at that much per connection.
    ///
    /// ```
    /// use bunite_rpc::transport::{ByteBudget, ListenerConfig};
    ///
    /// // Many connections, little memory: no overdraft beyond a 64 MiB budget.
    /// let send = ByteBudget::new(64 << 20).with_answer_overdraft(0);
    /// let config = ListenerConfig::default().max_connections(10_000).send_budget(send);
    /// assert_eq!(config.send_budget.answer_overdraft(), 0);
    /// ```
    pub fn with_answer_overdraft(mut self, bytes: usize) -> Self {
        self.overdraft = bytes;
        self
    }

    /// What tells a holder of spare bytes that a request is waiting.
    #[cfg_attr(not(any(feature = "byte-stream", feature = "ws")), allow(dead_code))]
    pub(crate) fn pressure(&self) -> Pressure {
        Pressure {
            waits: Arc::clone(&self.waits),
            seen: self.waits.load(Ordering::Relaxed),
        }
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes not drawn now.
    pub fn available(&self) -> usize {
        self.sem.available_permits()
    }

    /// Draws `bytes` now, or `None` if they are not available now. `0` always succeeds.
    pub fn try_acquire(&self, bytes: usize) -> Option<BudgetPermit> {
        if bytes == 0 {
            return Some(BudgetPermit(None));
        }
        let n = u32::try_from(bytes).ok()?;
        Arc::clone(&self.sem)
            .try_acquire_many_owned(n)
            .ok()
            .map(|p| BudgetPermit(Some(p)))
    }

    /// Waits until `bytes` are available and draws them. Fails at once if `bytes` exceed the
    /// whole budget (or 4 GiB), which no wait can satisfy.
    pub async fn acquire(&self, bytes: usize) -> Result<BudgetPermit, TransportError> {
        let mut waiter = self.waiter();
        poll_fn(|cx| waiter.poll_acquire(cx, bytes)).await
    }

    /// A waiter for poll-based code (one per task that waits).
    pub fn waiter(&self) -> BudgetWaiter {
        BudgetWaiter {
            sem: PollSemaphore::new(Arc::clone(&self.sem)),
            limit: self.limit,
            waits: Arc::clone(&self.waits),
        }
    }
}

impl BudgetPermit {
    /// The bytes this permit holds.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Adds `other`'s bytes to this permit (both must come from the same budget).
    pub fn merge(&mut self, other: BudgetPermit) {
        match (&mut self.0, other.0) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }

    /// Gives `bytes` back now (all of them if the permit holds fewer).
    pub fn release(&mut self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        if bytes >= self.bytes() {
            self.0 = None;
        } else if let Some(p) = &mut self.0 {
            drop(p.split(bytes));
        }
    }
}

/// Waits for bytes of a [`ByteBudget`] in poll-based code. Only the waker of the latest
/// call is woken.
#[derive(Debug)]
pub struct BudgetWaiter {
    sem: PollSemaphore,
    limit: usize,
    waits: Arc<AtomicU64>,
}

/// Whether a request on a [`ByteBudget`] has had to wait since the last look: bytes held
/// only to spare an allocation later (read buffers kept between messages) are paid from
/// the budget while nobody waits, and given back when somebody does, so that they never
/// keep a message from being received.
#[derive(Debug)]
pub(crate) struct Pressure {
    waits: Arc<AtomicU64>,
    seen: u64,
}

#[cfg_attr(not(any(feature = "byte-stream", feature = "ws")), allow(dead_code))]
impl Pressure {
    /// Whether a request has waited since the last call (or since this was made).
    pub(crate) fn felt(&mut self) -> bool {
        let now = self.waits.load(Ordering::Relaxed);
        std::mem::replace(&mut self.seen, now) != now
    }
}

impl BudgetWaiter {
    /// The budget's bound.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Draws `bytes` now if they are available, without waiting.
    pub fn try_acquire(&self, bytes: usize) -> Option<BudgetPermit> {
        if bytes == 0 {
            return Some(BudgetPermit(None));
        }
        let n = u32::try_from(bytes).ok()?;
        self.sem
            .clone_inner()
            .try_acquire_many_owned(n)
            .ok()
            .map(|p| BudgetPermit(Some(p)))
    }

    /// Makes `permit` hold at least `bytes`, drawing what it lacks all at once: a message
    /// paid for this way never holds part of its bytes while it waits for the rest, so two
    /// partly received messages never wait on each other. Fails as
    /// [`poll_acquire`](Self::poll_acquire) does.
    pub fn poll_hold(
        &mut self,
        cx: &mut Context<'_>,
        permit: &mut BudgetPermit,
        bytes: usize,
    ) -> Poll<Result<(), TransportError>> {
        if let Some(more) = bytes.checked_sub(permit.bytes()).filter(|&more| more > 0) {
            permit.merge(ready!(self.poll_acquire(cx, more))?);
        }
        Poll::Ready(Ok(()))
    }

    /// Draws `bytes`, or registers to be woken when they may be available. A request above
    /// the whole budget fails with [`TransportError::TooLarge`].
    pub fn poll_acquire(
        &mut self,
        cx: &mut Context<'_>,
        bytes: usize,
    ) -> Poll<Result<BudgetPermit, TransportError>> {
        if bytes == 0 {
            return Poll::Ready(Ok(BudgetPermit(None)));
        }
        let too_large = || TransportError::TooLarge {
            len: bytes as u64,
            max: self.limit,
        };
        let n = match u32::try_from(bytes) {
            Ok(n) if bytes <= self.limit => n,
            _ => return Poll::Ready(Err(too_large())),
        };
        match self.sem.poll_acquire_many(cx, n) {
            Poll::Ready(Some(p)) => Poll::Ready(Ok(BudgetPermit(Some(p)))),
            // The semaphore is never closed.
            Poll::Ready(None) => Poll::Ready(Err(TransportError::Closed)),
            Poll::Pending => {
                self.waits.fetch_add(1, Ordering::Relaxed);
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_return_their_bytes_on_drop_and_release() {
        let budget = ByteBudget::new(100);
        let mut a = budget.try_acquire(60).unwrap();
        assert!(budget.try_acquire(41).is_none());
        let b = budget.clone().try_acquire(40).unwrap();
        assert_eq!(budget.available(), 0);
        a.release(10);
        assert_eq!((a.bytes(), budget.available()), (50, 10));
        a.merge(b);
        assert_eq!(a.bytes(), 90);
        drop(a);
        assert_eq!(budget.available(), 100);
        assert_eq!(budget.try_acquire(0).unwrap().bytes(), 0);
    }

    #[tokio::test]
    async fn holding_draws_only_what_a_permit_lacks_and_all_at_once() {
        let budget = ByteBudget::new(100);
        let mut waiter = budget.waiter();
        let mut permit = BudgetPermit::default();
        poll_fn(|cx| waiter.poll_hold(cx, &mut permit, 30))
            .await
            .unwrap();
        poll_fn(|cx| waiter.poll_hold(cx, &mut permit, 20))
            .await
            .unwrap();
        assert_eq!((permit.bytes(), budget.available()), (30, 70));
        let other = budget.try_acquire(60).unwrap();
        // 50 more are lacking and 10 are free: the permit gets nothing until all 50 are
        // (the semaphore sets the 10 aside for this waiter, first in line, meanwhile).
        let cx = &mut Context::from_waker(futures::task::noop_waker_ref());
        assert!(waiter.poll_hold(cx, &mut permit, 80).is_pending());
        assert_eq!(permit.bytes(), 30);
        drop(other);
        poll_fn(|cx| waiter.poll_hold(cx, &mut permit, 80))
            .await
            .unwrap();
        assert_eq!((permit.bytes(), budget.available()), (80, 20));
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_bytes_return_and_oversize_requests_fail() {
        let budget = ByteBudget::new(100);
        let held = budget.try_acquire(80).unwrap();
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.acquire(50).await.map(|p| p.bytes()) })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        assert_eq!(waiting.await.unwrap().unwrap(), 50);
        assert!(matches!(
            budget.acquire(101).await,
            Err(TransportError::TooLarge { len: 101, max: 100 })
        ));
    }
}
