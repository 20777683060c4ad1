//! The connection's state machine: everything that decides, nothing that awaits.
//!
//! A [`Session`] consumes frames and API requests and produces encoded frames (its outbox),
//! [`Action`]s for the driver to run (handlers, policy checks, disposals) and observer
//! [`Event`]s. It holds no clock (callers pass `now`) and does no I/O, so tests can drive it
//! deterministically. The driver ([`crate::connection`]) owns it behind a mutex that is
//! never held across an `.await`.
//!
//! - `table`: the cap table.
//! - `registry`: served names and bootstrap instances.
//! - `inbound`: the server side (calls, cancel, drop).
//! - `bootstrap`: bootstrap checks, the policy, per-connection instances.
//! - `serving`: serve, replace, unserve and revocation.
//! - `streams`: server credit windows and client stream buffers.
//! - `outbound`: the client side (pending calls, results, revocation, releases).

mod bootstrap;
mod inbound;
pub(crate) mod outbound;
pub(crate) mod registry;
mod serving;
pub(crate) mod streams;
pub(crate) mod table;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_wire::{
    CallId, CapId, DropEntry, DropFrame, Encoder, Frame, Goaway, Hello, TooLarge, Value,
};
use bytes::Bytes;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::events::Event;
use crate::handler::CapImpl;
use crate::limits::Limits;
use crate::policy::{Attestation, Policy};
use crate::schema::{MethodKind, Returns};
use crate::status::{reason, Code, Status};

use registry::Registry;
use table::CapTable;

/// Bytes encoded but not yet written to the transport. The reader stops reading while it is
/// above [`Limits::max_unsent_bytes`], so a peer that sends requests but never reads the
/// answers cannot make us queue without bound.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    bytes: AtomicUsize,
    drained: Notify,
}

impl Backlog {
    fn add(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::AcqRel);
    }

    /// The writer wrote `n` bytes.
    pub fn written(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    /// Waits until at most `limit` bytes are unsent.
    pub async fn wait_below(&self, limit: usize) {
        loop {
            let drained = self.drained.notified();
            if self.bytes.load(Ordering::Acquire) <= limit {
                return;
            }
            drained.await;
        }
    }
}

/// Fixed settings of one connection.
pub(crate) struct Config {
    pub limits: Limits,
    pub attestation: Attestation,
    pub policy: Option<Policy>,
    pub peer_id: String,
    pub hello: Hello,
    pub backlog: Arc<Backlog>,
}

/// Whether the peer's hello has arrived; bootstrap waits for it (PROTOCOL §6).
#[derive(Debug, Clone)]
pub(crate) enum PeerState {
    Waiting,
    Ready,
    Closed(Status),
}

/// Work the driver must do outside the lock.
pub(crate) enum Action {
    /// Run a handler.
    Invoke(Invocation),
    /// Ask the policy about a bootstrap, then call `finish_bootstrap`.
    Policy {
        call_id: CallId,
        name: String,
        version: Option<String>,
    },
    /// Run a cap's disposal method (unserve, shutdown); errors become `error` events.
    Dispose {
        imp: Arc<dyn CapImpl>,
        method: String,
        cap_id: CapId,
    },
    /// The connection closed: run close handlers, stop the reader, close the transport.
    Closed,
    /// A call's `after_reply` work: its result is already queued.
    Run(Deferred),
}

/// One handler run.
pub(crate) struct Invocation {
    pub call_id: CallId,
    pub cap_id: CapId,
    pub imp: Arc<dyn CapImpl>,
    pub method: String,
    pub kind: MethodKind,
    pub args: Value,
    /// Signalled on cancel and at the deadline; the handler sees it.
    pub signal: CancellationToken,
    /// Fired on cancel: the driver drops the handler's future.
    pub abort: CancellationToken,
    /// When to signal (non-idempotent methods with a deadline).
    pub signal_after: Option<Duration>,
    /// The deadline calls made inside the handler inherit.
    pub deadline: Option<Duration>,
    pub context: Vec<(String, String)>,
}

/// What one lock of the session produced, applied by the driver after unlocking.
#[derive(Default)]
pub(crate) struct Effects {
    pub actions: Vec<Action>,
    pub events: Vec<Event>,
    pub wrote: bool,
    /// Implementations released under the lock, dropped after it (their `Drop` may call
    /// back into the connection).
    pub graveyard: Vec<Arc<dyn CapImpl>>,
    /// `after_reply` closures of calls that ended without a reply: dropped, not run, after
    /// the lock (what they captured may call back into the connection when dropped).
    pub discarded: Vec<Deferred>,
}

/// Live counts, for leak checks and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Entries in our cap table, counting the reserved ids 0 and 1.
    pub live_caps: usize,
    /// Our calls awaiting a result (client side).
    pub pending_calls: usize,
    /// Handlers running for the peer (server side).
    pub active_calls: usize,
    /// Streams we serve (server side).
    pub server_streams: usize,
    /// Streams we consume (client side).
    pub client_streams: usize,
    /// Encoded frames not yet written to the transport, in bytes.
    pub unsent_bytes: usize,
}

/// A server-side call in progress.
struct ActiveCall {
    cap_id: CapId,
    cap_name: String,
    method: String,
    started: Instant,
    signal: CancellationToken,
    abort: CancellationToken,
    returns: Returns,
    /// Drop the handler's future on cancel (unless the method opted out).
    drop_on_cancel: bool,
    /// Work the handler asked to run once its result is queued
    /// ([`CallContext::after_reply`](crate::CallContext::after_reply)).
    after_reply: Vec<Deferred>,
}

/// A closure the runtime runs outside the session lock.
pub(crate) type Deferred = Box<dyn FnOnce() + Send>;

pub(crate) struct Session {
    cfg: Arc<Config>,
    table: CapTable,
    registry: Registry,
    active: HashMap<CallId, ActiveCall>,
    pending: HashMap<CallId, outbound::Pending>,
    server_streams: HashMap<CallId, streams::ServerStream>,
    client_streams: HashMap<CallId, streams::ClientStreamState>,
    next_call_id: u64,
    /// Bootstraps waiting for the policy.
    policy_checks: usize,
    revoked: RevokedSet,
    peer_hello: Option<Hello>,
    peer_max_bytes: usize,
    peer_state: watch::Sender<PeerState>,
    closed: Option<Status>,
    encoder: Encoder,
    outbox: VecDeque<Bytes>,
    drops: Vec<DropEntry>,
    /// Where each id sits in `drops`, so summing releases stays O(1) however many CapRefs a
    /// peer's result carries.
    drop_index: HashMap<CapId, usize>,
    fx: Effects,
}

impl Session {
    /// A new session; its hello is the first frame in the outbox.
    pub fn new(cfg: Arc<Config>, peer_state: watch::Sender<PeerState>) -> Self {
        let mut s = Session {
            table: CapTable::new(cfg.limits.max_caps),
            registry: Registry::default(),
            active: HashMap::new(),
            pending: HashMap::new(),
            server_streams: HashMap::new(),
            client_streams: HashMap::new(),
            next_call_id: 1,
            policy_checks: 0,
            revoked: RevokedSet::new(cfg.limits.max_revoked_ids),
            peer_hello: None,
            peer_max_bytes: bunite_wire::Limits::DEFAULT_MAX_BYTES,
            peer_state,
            closed: None,
            encoder: Encoder::new(),
            outbox: VecDeque::new(),
            drops: Vec::new(),
            drop_index: HashMap::new(),
            fx: Effects::default(),
            cfg,
        };
        let hello = Frame::Hello(s.cfg.hello.clone());
        s.send(&hello);
        s
    }

    pub fn set_runtime(&mut self, def: Arc<crate::schema::CapDef>, imp: Arc<dyn CapImpl>) {
        self.table.set_runtime(def, imp);
    }

    pub fn peer_hello(&self) -> Option<&Hello> {
        self.peer_hello.as_ref()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            live_caps: self.table.len(),
            pending_calls: self.pending.len(),
            active_calls: self.active.len(),
            server_streams: self.server_streams.len(),
            client_streams: self.client_streams.len(),
            unsent_bytes: self.cfg.backlog.bytes.load(Ordering::Acquire),
        }
    }

    /// Takes what the last operations produced.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.fx)
    }

    /// Takes the encoded frames to write, flushing batched drops first. The flag is true
    /// once the session is closed: after writing these the transport should close.
    pub fn take_outbox(&mut self) -> (VecDeque<Bytes>, bool) {
        self.flush_drops();
        (std::mem::take(&mut self.outbox), self.closed.is_some())
    }

    /// Handles one validated frame from the peer.
    pub fn on_frame(&mut self, frame: Frame, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        match frame {
            Frame::Hello(h) => self.on_hello(h),
            Frame::Goaway(g) => self.on_goaway(g),
            Frame::Call(c) => self.on_call(c, now),
            Frame::Result(r) => self.on_result(r),
            Frame::Cancel(c) => self.on_cancel(c, now),
            Frame::Stream(f) => self.on_stream(f),
            Frame::Drop(d) => self.on_drop(d),
            Frame::CapRevoked(r) => self.on_revoked(r),
        }
    }

    fn on_hello(&mut self, hello: Hello) {
        self.peer_max_bytes = usize::try_from(hello.max_bytes).unwrap_or(usize::MAX);
        self.peer_hello = Some(hello);
        self.peer_state.send_replace(PeerState::Ready);
    }

    fn on_goaway(&mut self, g: Goaway) {
        let reason = g
            .reason
            .clone()
            .unwrap_or_else(|| "remote goaway".to_owned());
        let status = Status::new(Code::Unavailable, reason).with_reason(reason::GOAWAY);
        let hello_err = g
            .error
            .map(Status::from_wire)
            .unwrap_or_else(|| status.clone());
        self.shutdown(status, hello_err);
    }

    /// A frame from the peer was undecodable, invalid or too large: send goaway, then shut
    /// down (PROTOCOL §11, §13.9).
    pub fn protocol_error(&mut self, error: Status) {
        if self.closed.is_some() {
            return;
        }
        let goaway = Goaway {
            reason: Some(error.code.as_str().to_owned()),
            error: Some(error.to_wire()),
        };
        self.send(&Frame::Goaway(goaway));
        let status = Status::new(
            Code::Unavailable,
            format!("protocol error: {}", error.message),
        )
        .with_reason(reason::PEER_CLOSING);
        self.shutdown(status.clone(), status);
    }

    /// Closes locally: tells the peer with a goaway, then shuts down.
    pub fn close(&mut self, why: &str) {
        if self.closed.is_some() {
            return;
        }
        let goaway = Goaway {
            reason: Some(why.to_owned()),
            error: None,
        };
        self.send(&Frame::Goaway(goaway));
        let status = Status::new(Code::Unavailable, why).with_reason(reason::PEER_CLOSING);
        self.shutdown(status.clone(), status);
    }

    /// The transport closed or failed.
    pub fn transport_closed(&mut self, why: &str) {
        let status = Status::new(Code::Unavailable, why).with_reason(reason::PEER_CLOSING);
        self.shutdown(status.clone(), status);
    }

    /// Fails everything pending, cancels handlers, runs disposals, clears the table
    /// (PROTOCOL §11). Idempotent.
    fn shutdown(&mut self, status: Status, hello_err: Status) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(status.clone());
        self.drops.clear();
        self.drop_index.clear();
        for (_, p) in self.pending.drain() {
            p.fail(status.clone());
        }
        for (_, a) in self.active.drain() {
            a.signal.cancel();
            a.abort.cancel();
            self.fx.discarded.extend(a.after_reply);
        }
        for (_, st) in self.server_streams.drain() {
            st.signal.cancel();
            st.abort.cancel();
        }
        for (_, st) in self.client_streams.drain() {
            let _ = st.tx.try_send(Err(status.clone()));
        }
        for entry in self.table.drain() {
            if let Some(method) = entry.def.disposal() {
                self.fx.actions.push(Action::Dispose {
                    imp: Arc::clone(&entry.imp),
                    method: method.to_owned(),
                    cap_id: CapId(0),
                });
            }
            self.fx.graveyard.push(entry.imp);
        }
        self.peer_state.send_replace(PeerState::Closed(hello_err));
        self.fx.actions.push(Action::Closed);
        self.fx.wrote = true;
    }

    /// Encodes a frame into the outbox (batched drops go first, to keep causal order).
    fn send(&mut self, frame: &Frame) {
        self.flush_drops();
        self.push_frame(frame);
    }

    /// Frames the peer itself generates (errors, goaway, cancel, credit, drop, end) are small,
    /// so they are not held to the peer's `maxBytes`; one that msgpack cannot even express
    /// (a string over 4 GiB) is dropped rather than panicking.
    fn push_frame(&mut self, frame: &Frame) {
        if let Err(e) = self.encode_into_outbox(frame, usize::MAX) {
            tracing::error!(
                op = frame.op(),
                size = e.size,
                "frame cannot be encoded; not sent"
            );
        }
    }

    /// Encodes a frame only if it fits the peer's advertised `maxBytes` (PROTOCOL §13.6);
    /// otherwise nothing is sent and the encoder state is unchanged.
    fn send_bounded(&mut self, frame: &Frame) -> Result<(), TooLarge> {
        self.flush_drops();
        self.encode_into_outbox(frame, self.peer_max_bytes)
    }

    /// Encodes straight from the frame (no copy of its payload into a temporary value).
    fn encode_into_outbox(&mut self, frame: &Frame, max: usize) -> Result<(), TooLarge> {
        let mut buf = Vec::new();
        self.encoder.encode_frame_bounded(frame, max, &mut buf)?;
        self.cfg.backlog.add(buf.len());
        self.outbox.push_back(Bytes::from(buf));
        self.fx.wrote = true;
        Ok(())
    }

    fn flush_drops(&mut self) {
        if self.drops.is_empty() {
            return;
        }
        self.drop_index.clear();
        let drops = std::mem::take(&mut self.drops);
        // A few KiB per frame, far below any peer's maxBytes.
        for caps in drops.chunks(DROP_FRAME_ENTRIES) {
            self.push_frame(&Frame::Drop(DropFrame {
                caps: caps.to_vec(),
            }));
        }
    }

    fn emit(&mut self, event: Event) {
        self.fx.events.push(event);
    }
}

/// Most entries in one `drop` frame.
const DROP_FRAME_ENTRIES: usize = 512;

/// The newest revoked cap-ids (PROTOCOL §13.7): bounded, oldest forgotten first.
struct RevokedSet {
    set: HashSet<CapId>,
    order: VecDeque<CapId>,
    cap: usize,
}

impl RevokedSet {
    fn new(cap: usize) -> Self {
        RevokedSet {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    fn insert(&mut self, id: CapId) {
        if self.cap == 0 || !self.set.insert(id) {
            return;
        }
        self.order.push_back(id);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, id: CapId) -> bool {
        self.set.contains(&id)
    }
}

#[cfg(test)]
mod tests;
