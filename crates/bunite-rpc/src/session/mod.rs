//! The connection's protocol state machine: everything that decides, nothing that awaits.
//!
//! A [`Session`] is quinn-proto style: it takes **inputs** (messages from the transport, the
//! transport's end, local commands, handler outcomes, the time where it matters) and yields
//! **outputs** (encoded messages to send, call outcomes and stream items for local callers,
//! handlers to start, signal or abort, events, the next timer). It does no I/O, holds no
//! clock and imports nothing of the async runtime: the caller passes `now`, and what a
//! served implementation, a waiting caller or a stream consumer is stays opaque to it
//! ([`Types`]). Tests drive two sessions against each other without a runtime.
//!
//! It owns the codec state of the connection (one [`Encoder`] and one [`Decoder`]), so the
//! order in which frames are encoded is the order in which they are sent.
//!
//! - `table`: the cap table. `registry`: served names and bootstrap instances.
//! - `serving`: serve, replace, unserve and revocation.
//! - `bootstrap`: bootstraps, both ways (checks, policy, instances; parking until hello).
//! - `inbound`: the server side: dispatching calls, handler outcomes, cancels, drops.
//! - `outbound`: the client side: pending calls, results, revocation, releases.
//! - `streams`: server credit windows and client stream accounting.
//! - `timers`: deadlines, the hello timeout and the release of spare buffers, in one place.
//! - `spares`: the allocations of large messages sent, reused for the next ones.
//! - `output`: what the session yields.
//! - `invariants` (tests, `test-util`): what must hold between any two inputs, checked after
//!   every step of the tests and of the `session_ops` fuzz target, whose harness is `fuzz`.

mod bootstrap;
mod inbound;
mod outbound;
mod output;
mod registry;
mod serving;
mod spares;
mod streams;
mod table;
mod timers;

#[cfg(feature = "test-util")]
pub(crate) mod fuzz;
#[cfg(any(test, feature = "test-util"))]
mod invariants;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bunite_wire::{
    AsOutgoing, CallId, CapId, Decoder, EncodeError, Encoder, Frame, FrameDecodeError, Goaway,
    Hello, Outgoing,
};
use bytes::{Bytes, BytesMut};

use crate::attestation::Attestation;
use crate::error::{Disconnect, Error};
use crate::events::Event;
use crate::hashing::{Map, Set};
use crate::limits::Limits;
use crate::schema::CapDef;
use crate::stats::Stats;
use crate::status::{reason, Code, Status};

pub(crate) use inbound::Outcome;
pub(crate) use outbound::{CallRequest, Expect, Parent};
pub(crate) use output::{Invocation, Output, RunId};
pub(crate) use streams::CREDIT_BATCH;

use inbound::Inbound;
use outbound::Outbound;
use registry::Registry;
use table::CapTable;
use timers::{Timer, Timers};

/// What the runtime above plugs into a session. The session stores these and hands them
/// back in its outputs; it never looks inside.
pub(crate) trait Types: Sized + 'static {
    /// A served implementation, cloned into each invocation.
    type Imp: Dispatch + Clone;
    /// Where one outbound call's outcome goes.
    type Reply;
    /// Where one client stream's items go.
    type Sink: Clone;
    /// Work to run once a call's reply is queued.
    type Deferred;
}

/// The one question the session asks an implementation, while dispatching (PROTOCOL §9).
pub(crate) trait Dispatch {
    /// Whether a declared method has a handler.
    fn has_handler(&self, method: &str) -> bool;
}

/// The fixed settings of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub limits: Limits,
    pub attestation: Attestation,
    /// Whether bootstraps ask a policy.
    pub has_policy: bool,
    /// Our hello, sent first.
    pub hello: Hello,
}

/// How the transport ended, as the driver reports it.
#[derive(Debug)]
pub(crate) enum TransportEnd {
    /// The peer closed it cleanly.
    Eof,
    /// It failed.
    Failed {
        kind: std::io::ErrorKind,
        message: String,
    },
    /// The peer announced or sent a message above our `maxBytes` (the text says which).
    TooLarge(String),
    /// The peer broke the transport's framing (e.g. a text WebSocket message).
    Protocol(String),
    /// A message from the peer did not arrive within the listener's receive deadline.
    TooSlow(String),
    /// The transport took none of our bytes for this long (the driver's write-stall limit).
    WriteStalled(std::time::Duration),
    /// The peer took what waited for it too slowly: `taken` bytes in `after`.
    SlowReader {
        taken: u64,
        after: std::time::Duration,
    },
}

/// Whether an answer may be queued, asked once its length is known: given what the
/// session would then hold (what it has queued and the answer), true if those bytes are
/// paid for. The runtime pays from a listener's send budget; without one it agrees.
pub(crate) type Pay<'a> = &'a mut dyn FnMut(usize) -> bool;

pub(crate) struct Session<T: Types> {
    cfg: Config,
    table: CapTable<T::Imp>,
    registry: Registry<T::Imp>,
    inbound: Inbound<T>,
    outbound: Outbound<T>,
    timers: Timers,
    /// The peer's hello, once received.
    peer_hello: Option<Hello>,
    /// The peer's advertised `maxBytes`: what we may send (PROTOCOL §13.6).
    peer_max_bytes: usize,
    /// What answers (results and stream values) may still add to what waits to be sent,
    /// as the runtime last said ([`set_send_room`](Self::set_send_room)); every message
    /// encoded since takes its length off.
    send_room: usize,
    /// Set once the session has shut down.
    closed: Option<Disconnect>,
    /// Set while draining ([`Session::drain`]): when its grace runs out, if it is armed.
    draining: Option<Option<Instant>>,
    /// Whether anyone observes events: none are built otherwise.
    observed: bool,
    encoder: Encoder,
    decoder: Decoder,
    /// The length of the message being handled: what a peer's error that ends a stream is
    /// charged while it waits behind the values its consumer has not read.
    message_len: usize,
    /// Encoding scratch space, reused.
    scratch: Vec<u8>,
    /// The allocations of large messages sent, for the next large message.
    spares: spares::Spares,
    /// Small messages are copied into shared chunks of this buffer, so a message costs no
    /// allocation of its own.
    chunk: BytesMut,
    transmit: VecDeque<Bytes>,
    transmit_bytes: usize,
    outputs: VecDeque<Output<T>>,
}

/// Messages up to this size are copied into a shared chunk; larger ones keep their own
/// buffer (moved, not copied).
const SMALL_MESSAGE: usize = 256;
/// The size of the chunks small messages share: dozens of typical frames per allocation,
/// while an idle connection keeps at most this much (per end) for it. Under 1,000 bytes:
/// glibc's allocator serves a request of 1,024 as a large one, which first merges every
/// free small block of its arena (`malloc_consolidate`), and a connection with many calls
/// in flight takes a new chunk every few dozen calls (callgrind, `examples/pipelined`: a
/// merge every 37 calls on the client, 6,621 instructions a call against 6,546 at 992).
const CHUNK: usize = 992;
/// Most entries in one `drop` frame.
pub(crate) const DROP_FRAME_ENTRIES: usize = 512;

/// How many bytes of a text the peer chose a connection keeps or sends back: a goaway's
/// reason and its error's message, a cancel's reason (echoed in the cancelled result and in
/// the cancels of the call's children), and the cap names, versions and method names quoted
/// in error messages (the rest is cut at a character boundary and marked with `…`). Those
/// frames are not paid from a listener's send budget, and a cancel's reason went out once
/// per child call: without the cut, one `cancel` with a 64 MiB reason made the session
/// encode 64 MiB for the reply and twice that per child.
pub(crate) const PEER_TEXT: usize = 1024;

/// `text` cut to [`PEER_TEXT`] bytes.
pub(crate) fn clip_peer_text(mut text: String) -> String {
    if text.len() > PEER_TEXT {
        text.truncate(clip_end(&text));
        text.push('…');
    }
    text
}

/// A peer's status cut to what a goaway keeps: its message clipped ([`clip_peer_text`]),
/// and of its details only a short `{reason}`.
pub(crate) fn clip_peer_status(full: Status) -> Status {
    let why = (full.reason())
        .filter(|r| r.len() <= PEER_TEXT)
        .map(str::to_owned);
    let kept = Status {
        message: clip_peer_text(full.message),
        details: None,
        ..full
    };
    match why {
        Some(why) => kept.with_reason(&why),
        None => kept,
    }
}

/// `text` cut to [`PEER_TEXT`] bytes, borrowed when it is short enough (nearly always).
pub(crate) fn clipped(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() > PEER_TEXT {
        std::borrow::Cow::Owned(format!("{}…", &text[..clip_end(text)]))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The last character boundary at or before [`PEER_TEXT`].
fn clip_end(text: &str) -> usize {
    let mut end = PEER_TEXT.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

impl<T: Types> Session<T> {
    /// A new session: its hello is the first message to send.
    pub fn new(cfg: Config, now: Instant) -> Self {
        let decode_limits = cfg.limits.wire();
        let mut s = Session {
            table: CapTable::new(cfg.limits.max_caps),
            registry: Registry::default(),
            inbound: Inbound::default(),
            outbound: Outbound::new(cfg.limits.max_revoked_ids),
            timers: Timers::default(),
            peer_hello: None,
            peer_max_bytes: bunite_wire::DecodeLimits::DEFAULT_MAX_BYTES,
            send_room: usize::MAX,
            closed: None,
            draining: None,
            observed: false,
            encoder: Encoder::new(),
            decoder: Decoder::new(decode_limits),
            message_len: 0,
            scratch: Vec::new(),
            spares: spares::Spares::default(),
            chunk: BytesMut::new(),
            transmit: VecDeque::new(),
            transmit_bytes: 0,
            outputs: VecDeque::new(),
            cfg,
        };
        let hello = Frame::Hello(s.cfg.hello.clone());
        s.send(&hello);
        // A timeout too long to represent never fires (`Duration::MAX` panicked here).
        if let Some(at) = s
            .cfg
            .limits
            .hello_timeout
            .and_then(|d| timers::after(now, d))
        {
            s.timers.arm_hello(at);
        }
        s
    }

    /// Installs the runtime implementation at cap-id 1 (PROTOCOL §14).
    pub fn set_runtime(&mut self, def: Arc<CapDef>, imp: T::Imp) {
        self.table.set_runtime(def, imp);
    }

    /// How many more bytes may wait to be sent for answers: results and stream values
    /// longer than that (or than the peer's `maxBytes`) are replaced by a
    /// `resource_exhausted` error instead of being held. The runtime says what a listener's
    /// send budget can pay for now; without one the room is unbounded (`usize::MAX`, the
    /// start). Each message encoded afterwards takes its length off.
    pub fn set_send_room(&mut self, room: usize) {
        self.send_room = room;
    }

    /// Reports events from now on (or stops).
    pub fn set_observed(&mut self, observed: bool) {
        self.observed = observed;
    }

    /// Whether events are built ([`set_observed`](Self::set_observed)).
    pub fn is_observed(&self) -> bool {
        self.observed
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// How it shut down, once it has.
    pub fn closed_by(&self) -> Option<&Disconnect> {
        self.closed.as_ref()
    }

    /// The live counts (the runtime adds its own: bytes in the transport, tasks).
    pub fn stats(&self) -> Stats {
        Stats {
            live_caps: self.table.len(),
            pending_calls: self.outbound.pending_len(),
            active_calls: self.inbound.active_len(),
            server_streams: self.inbound.streams_len(),
            client_streams: self.outbound.streams_len(),
            unsent_bytes: self.transmit_bytes,
            tasks: 0,
        }
    }

    /// Outbound calls, streams and bootstraps not yet finished (they count toward our
    /// in-flight limit).
    #[cfg(test)]
    pub fn outbound_in_flight(&self) -> usize {
        self.outbound.in_flight()
    }

    /// Every table, queue and timer set the session keeps: its name, entries and room
    /// (slots of a hash table, capacity of a queue), so a test can check that what a peer
    /// does over and over leaves them as they were.
    #[cfg(test)]
    pub fn footprint(&self) -> Vec<(&'static str, usize, usize)> {
        let mut out = Vec::new();
        let entries = self.table.entries().count();
        out.push(("cap table", entries, entries));
        let instances = self.registry.instances().count();
        out.push(("bootstrap instances", instances, instances));
        self.inbound.footprint(&mut out);
        self.outbound.footprint(&mut out);
        out.push(("timers", self.timers.len(), self.timers.len()));
        out.push(("outputs", self.outputs.len(), self.outputs.capacity()));
        out.push(("transmit", self.transmit.len(), self.transmit.capacity()));
        out
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.flush_drops();
        let Some(msg) = self.transmit.pop_front() else {
            if self.transmit.capacity() > crate::hashing::KEPT_ROOM {
                self.shed_transmit();
            }
            return None;
        };
        self.transmit_bytes -= msg.len();
        Some(msg)
    }

    /// Gives back the room of the transmit queue, drained, which a burst grew past
    /// [`KEPT_ROOM`](crate::hashing::KEPT_ROOM) messages, once no call is in flight either
    /// way (a steady load drains it every pass, and would grow it again at once).
    #[cold]
    #[inline(never)]
    fn shed_transmit(&mut self) {
        if self.outbound.pending_len() == 0 && self.inbound.active_len() == 0 {
            self.transmit = VecDeque::new();
        }
    }

    /// Bytes encoded and waiting in [`poll_transmit`](Self::poll_transmit).
    pub fn transmit_bytes(&self) -> usize {
        self.transmit_bytes + self.outbound.pending_drop_bytes()
    }

    /// The next output. Once they are all taken, the room of a burst (one input that
    /// answers many calls at once: a `cap_revoked`, a cancel that cascades) is given back.
    #[inline]
    pub fn poll_output(&mut self) -> Option<Output<T>> {
        if self.outputs.is_empty() {
            if self.outputs.capacity() > crate::hashing::KEPT_ROOM {
                self.give_back_outputs_room();
            }
            return None;
        }
        self.outputs.pop_front()
    }

    /// Out of line, so that [`poll_output`](Self::poll_output) stays small enough to be
    /// inlined where outputs are taken, each moved once (returned through a call, or
    /// bound before the check, each output was copied once more: +70 to +160
    /// instructions a stream value).
    #[cold]
    fn give_back_outputs_room(&mut self) {
        self.outputs = VecDeque::new();
    }

    /// Closes a draining session ([`Session::drain`]) once nothing is in progress either
    /// way; whether it closed now (its outputs are then to be taken). The runtime asks each
    /// time it has taken the outputs of an input: every input that can finish the last call
    /// or stream ends that way, so none of them needs to know about draining.
    #[inline]
    pub fn poll_drained(&mut self) -> bool {
        self.draining.is_some() && self.close_if_drained()
    }

    #[cold]
    #[inline(never)]
    fn close_if_drained(&mut self) -> bool {
        let done = self.closed.is_none() && self.is_idle();
        if done {
            self.close();
        }
        done
    }

    /// Drains: calls and bootstraps the peer starts from now on are refused `unavailable`
    /// (reason `peer_closing`) without running, except calls made on behalf of a call or
    /// stream of ours still in progress (the peer's handler calling back); what is already
    /// in progress either way, including calls made locally meanwhile, may finish. Once
    /// nothing is, or when `grace` runs out, the session closes as [`Session::close`] does.
    /// Draining again never extends the grace.
    pub fn drain(&mut self, grace: Duration, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        let at = timers::after(now, grace);
        match self.draining {
            Some(Some(armed)) if at.is_none_or(|at| at >= armed) => return,
            Some(None) if at.is_none() => return,
            Some(Some(armed)) => self.timers.disarm(armed, Timer::Drain),
            _ => {}
        }
        if let Some(at) = at {
            self.timers.arm(at, Timer::Drain);
        }
        self.draining = Some(at);
    }

    /// Whether nothing is in progress either way: no handler or server stream runs (even
    /// one whose call was cancelled), no bootstrap waits for the policy, and no call,
    /// stream or bootstrap of ours waits for the peer.
    fn is_idle(&self) -> bool {
        self.inbound.is_idle() && self.outbound.in_flight() == 0
    }

    /// Whether something a burst left waits for a timer that is not armed yet: spare
    /// buffers kept (see `spares`), or a shrink of the pending calls' table put off (see
    /// [`crate::hashing::take_spaced`]). The runtime then calls [`Session::arm_release`]
    /// (it has the time; encoding and decoding do not).
    #[inline]
    pub fn release_unarmed(&self) -> bool {
        (!self.spares.armed && !self.spares.is_empty()) || self.outbound.shed_unarmed()
    }

    /// Arms the timers [`release_unarmed`](Self::release_unarmed) asks for: the spare
    /// buffers' release [`spares::RELEASE`] from now, the pending table's put-off shrink
    /// [`outbound::SHED_AFTER`] from now.
    pub fn arm_release(&mut self, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        if !self.spares.armed && !self.spares.is_empty() {
            self.timers.arm(now + spares::RELEASE, Timer::Spares);
            self.spares.armed = true;
        }
        if self.outbound.shed_unarmed() {
            self.timers.arm(now + outbound::SHED_AFTER, Timer::Shed);
            self.outbound.shed_armed();
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed.is_some() {
            return None;
        }
        self.timers.next()
    }

    /// One message from the peer.
    pub fn handle_message(&mut self, msg: &Bytes, now: Instant) {
        if self.closed.is_some() {
            return;
        }
        if msg.len() > self.cfg.limits.max_bytes {
            let max = self.cfg.limits.max_bytes;
            let message = format!("message of {} bytes exceeds maxBytes {max}", msg.len());
            return self.transport_ended(TransportEnd::TooLarge(message));
        }
        // Read only while a frame is handled; set before the decode so that the frame is
        // matched where the decoder wrote it (bound to a variable of its own first, each
        // frame was copied once more: 184 bytes a message).
        self.message_len = msg.len();
        match self.decoder.decode_frame_lazy(msg) {
            Ok(Frame::Hello(h)) => self.on_hello(h, now),
            Ok(Frame::Goaway(g)) => self.on_goaway(g),
            Ok(Frame::Call(c)) => self.on_call(c, now),
            Ok(Frame::Result(r)) => self.on_result(r),
            Ok(Frame::Cancel(c)) => self.on_cancel(c, now),
            Ok(Frame::Stream(f)) => self.on_stream(f),
            Ok(Frame::Drop(d)) => self.on_drop(d),
            Ok(Frame::CapRevoked(r)) => self.on_revoked(r),
            Err(e) => self.protocol_error(Status::invalid_argument(decode_message(&e))),
        }
    }

    /// Runs the timers due at `now` (see `timers`).
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.closed.is_none() {
            match self.timers.pop_due(now) {
                Some(Timer::Hello) => {
                    let after = self.cfg.limits.hello_timeout.unwrap_or_default();
                    let message = format!("no hello within {} ms", after.as_millis());
                    self.protocol_error(Status::new(Code::DeadlineExceeded, message));
                }
                Some(Timer::Outbound(id)) => self.outbound_deadline(id),
                Some(Timer::Inbound(id)) => self.inbound_deadline(id),
                Some(Timer::Spares) => {
                    self.spares.release();
                    self.drop_large_scratch();
                }
                Some(Timer::Drain) => self.close(),
                Some(Timer::Shed) => self.outbound.shed_put_off(),
                None => return,
            }
        }
    }

    /// The transport ended, failed, or refused a message.
    pub fn transport_ended(&mut self, how: TransportEnd) {
        match how {
            TransportEnd::Eof => self.shutdown(Disconnect::Eof, None),
            TransportEnd::Failed { kind, message } => {
                self.shutdown(Disconnect::Transport { kind, message }, None)
            }
            TransportEnd::TooLarge(message) => {
                self.protocol_error(Status::resource_exhausted(message, reason::MAX_FRAME_BYTES));
            }
            TransportEnd::Protocol(m) => self.protocol_error(Status::invalid_argument(m)),
            TransportEnd::TooSlow(m) => self.protocol_error(Status::new(Code::DeadlineExceeded, m)),
            TransportEnd::WriteStalled(after) => {
                self.shutdown(Disconnect::WriteStalled { after }, None)
            }
            TransportEnd::SlowReader { taken, after } => {
                self.shutdown(Disconnect::SlowReader { taken, after }, None)
            }
        }
    }

    fn on_hello(&mut self, hello: Hello, now: Instant) {
        self.peer_max_bytes = usize::try_from(hello.max_bytes).unwrap_or(usize::MAX);
        self.timers.disarm_hello();
        self.outputs.push_back(Output::Hello(hello.clone()));
        self.peer_hello = Some(hello);
        self.send_parked_bootstraps(now);
    }

    fn on_goaway(&mut self, g: Goaway) {
        // Every pending call and stream gets its own copy of the reason (its status's
        // message) and of the error: a peer's long text is clipped first, or one goaway of
        // a few MiB would be multiplied by the calls it fails.
        let reason = g.reason.map(clip_peer_text);
        let error = g.error.map(|w| clip_peer_status(Status::from_wire(w)));
        let how = Disconnect::Goaway {
            reason,
            error: error.clone().map(Box::new),
        };
        self.shutdown(how, error);
    }

    /// The peer broke the protocol: goaway, then shut down (PROTOCOL §11, §13.9).
    fn protocol_error(&mut self, error: Status) {
        if self.closed.is_some() {
            return;
        }
        let goaway = Goaway {
            reason: Some(error.code.as_str().to_owned()),
            error: Some(error.to_wire()),
        };
        self.send(&Frame::Goaway(goaway));
        let message = error.message;
        self.shutdown(Disconnect::ProtocolError { message }, None);
    }

    /// Closes locally: goaway `peer_closing`, then shut down.
    pub fn close(&mut self) {
        if self.closed.is_some() {
            return;
        }
        let goaway = Goaway {
            reason: Some(reason::PEER_CLOSING.to_owned()),
            error: None,
        };
        self.send(&Frame::Goaway(goaway));
        self.shutdown(Disconnect::LocalClose, None);
    }

    /// Fails everything pending, cancels handlers, disposes every live cap, clears the
    /// table (PROTOCOL §11). `hello_error` is what bootstraps still waiting for the peer's
    /// hello fail with (a goaway's error). Idempotent.
    fn shutdown(&mut self, how: Disconnect, hello_error: Option<Status>) {
        if self.closed.is_some() {
            return;
        }
        let error = how.error();
        let parked_error = match hello_error {
            Some(status) => Error::Disconnected {
                cause: how.clone(),
                status,
            },
            None => error.clone(),
        };
        self.closed = Some(how.clone());
        self.timers.clear();
        self.spares.release();
        self.fail_outbound(&error, &parked_error);
        self.outbound.shed_disarmed();
        self.abort_inbound();
        for (id, entry) in self.table.drain() {
            if let Some(method) = entry.def.disposal() {
                self.outputs.push_back(Output::Dispose {
                    imp: entry.imp,
                    method: method.to_owned(),
                    cap_id: id,
                });
            }
        }
        self.outputs.push_back(Output::Closed(how));
    }

    /// Encodes a frame (pending drops first, to keep causal order). Frames the session
    /// generates itself (errors, goaway, cancel, credit, drop, end) are small, so they are
    /// not held to the peer's `maxBytes`; one that msgpack cannot express is dropped rather
    /// than panicking.
    fn send(&mut self, frame: &Frame) {
        self.flush_drops();
        self.encode_unbounded(frame);
    }

    /// Encodes a frame only if it fits the peer's advertised `maxBytes` (PROTOCOL §13.6);
    /// otherwise nothing is sent and the encoder is unchanged.
    fn send_bounded(&mut self, frame: &Frame) -> Result<(), bunite_wire::TooLarge> {
        self.flush_drops();
        self.encode(frame, self.peer_max_bytes)
    }

    /// [`Session::send_bounded`] for a frame whose payload may be a typed value, which is
    /// serialized straight into the message here.
    fn send_outgoing<P: AsOutgoing>(&mut self, frame: &Frame<P>) -> Result<(), EncodeError> {
        self.flush_drops();
        self.clear_scratch();
        let encoded = self.encoder.encode_outgoing_frame_bounded(
            frame,
            self.peer_max_bytes,
            &mut self.scratch,
        );
        self.transmit_or_drop(encoded)
    }

    /// [`Session::send_outgoing`] for an answer (`what`: "result", "stream value"): held
    /// to the send room too ([`set_send_room`](Self::set_send_room)), and queued only if
    /// `pay` agrees to what the session then holds (see [`Pay`]). Over either bound,
    /// refused, or not serializable, it is not sent, and the error to send instead comes
    /// back.
    fn send_answer(
        &mut self,
        frame: &Frame<Outgoing>,
        what: &str,
        pay: Pay<'_>,
    ) -> Result<(), Status> {
        let max = self.peer_max_bytes.min(self.send_room);
        self.flush_drops();
        self.clear_scratch();
        let held = self.transmit_bytes();
        let mut refused = false;
        let encoded =
            self.encoder
                .encode_outgoing_frame_accepted(frame, max, &mut self.scratch, |len| {
                    refused = !pay(held + len);
                    !refused
                });
        self.transmit_or_drop(encoded).map_err(|e| match e {
            EncodeError::TooLarge(e) if refused || max < self.peer_max_bytes => {
                let len = match refused {
                    true => format!("{}", e.size),
                    false => format!("more than {}", e.max),
                };
                Status::resource_exhausted(
                    format!(
                        "{what} of {len} bytes: the listener's send budget has no room for \
                         it now (peers are slow to read what waits for them)"
                    ),
                    reason::MAX_FRAME_BYTES,
                )
            }
            EncodeError::TooLarge(e) => Status::resource_exhausted(
                format!(
                    "{what} of {} bytes exceeds the peer's maxBytes {}",
                    e.size, e.max
                ),
                reason::MAX_FRAME_BYTES,
            ),
            EncodeError::Serialize(e) => Status::unserializable(&e),
        })
    }

    /// Queues the message just encoded into `scratch`, or, when it was not, lets go of a
    /// scratch buffer it grew (see [`drop_large_scratch`](Self::drop_large_scratch)).
    fn transmit_or_drop<E>(&mut self, encoded: Result<(), E>) -> Result<(), E> {
        match encoded {
            Ok(()) => {
                self.transmit_scratch();
                Ok(())
            }
            Err(e) => {
                self.drop_large_scratch();
                Err(e)
            }
        }
    }

    /// A message that was not sent may have grown the scratch buffer up to its bound (the
    /// peer's `maxBytes`): not kept for the next one.
    fn drop_large_scratch(&mut self) {
        if self.scratch.capacity() >= spares::LARGE {
            self.scratch = Vec::new();
        }
    }

    fn encode(&mut self, frame: &Frame, max: usize) -> Result<(), bunite_wire::TooLarge> {
        self.clear_scratch();
        let encoded = self
            .encoder
            .encode_frame_bounded(frame, max, &mut self.scratch);
        self.transmit_or_drop(encoded)
    }

    /// Empties the scratch buffer for the next message; one that went out with a large
    /// message is replaced by a spare, if the transport is done with one.
    #[inline]
    fn clear_scratch(&mut self) {
        if self.scratch.capacity() < spares::LARGE && !self.spares.is_empty() {
            if let Some(spare) = self.spares.take() {
                self.scratch = spare;
            }
        }
        self.scratch.clear();
    }

    /// Queues the message just encoded into `scratch`: moved out when large (a large one's
    /// allocation kept as a spare), copied into the shared chunk when small.
    fn transmit_scratch(&mut self) {
        let large = (spares::LARGE..=spares::LARGEST).contains(&self.scratch.len());
        let msg = if large && self.closed.is_none() {
            self.spares.retire(std::mem::take(&mut self.scratch))
        } else if self.scratch.len() > SMALL_MESSAGE {
            Bytes::from(std::mem::take(&mut self.scratch))
        } else {
            if self.chunk.capacity() - self.chunk.len() < self.scratch.len() {
                self.chunk = BytesMut::with_capacity(CHUNK);
            }
            self.chunk.extend_from_slice(&self.scratch);
            self.chunk.split().freeze()
        };
        self.transmit_bytes += msg.len();
        self.send_room = self.send_room.saturating_sub(msg.len());
        self.transmit.push_back(msg);
    }

    /// Sends what was batched: stream credit and releases. Runs before any other frame, so
    /// the peer sees them in the order they were made. Inlined, the common case (nothing
    /// batched) costs a test, not a call that saves and restores every register the
    /// flush uses.
    #[inline]
    fn flush_drops(&mut self) {
        if !self.outbound.nothing_batched() {
            self.flush_batched();
        }
    }

    #[inline(never)]
    fn flush_batched(&mut self) {
        if !self.outbound.credit_due.is_empty() {
            for frame in self.credit_frames() {
                self.encode_unbounded(&frame);
            }
        }
        if let Some(frames) = self.outbound.take_drops() {
            for frame in frames {
                self.encode_unbounded(&Frame::Drop(frame));
            }
        }
    }

    fn encode_unbounded(&mut self, frame: &Frame) {
        if let Err(e) = self.encode(frame, usize::MAX) {
            tracing::error!(
                op = frame.op(),
                size = e.size,
                "frame cannot be encoded; not sent"
            );
        }
    }

    fn emit(&mut self, event: impl FnOnce() -> Event) {
        if self.observed {
            self.outputs.push_back(Output::Event(event()));
        }
    }
}

/// The goaway text for a message that did not decode.
fn decode_message(e: &FrameDecodeError) -> String {
    match e {
        FrameDecodeError::Frame(bunite_wire::FrameError::UnknownOp(_)) => "unknown opcode".into(),
        other => other.to_string(),
    }
}

/// The newest revoked cap-ids (PROTOCOL §13.7): bounded, oldest forgotten first.
pub(crate) struct RevokedSet {
    set: Set<CapId>,
    order: VecDeque<CapId>,
    cap: usize,
}

impl RevokedSet {
    fn new(cap: usize) -> Self {
        RevokedSet {
            set: Set::default(),
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

    #[cfg(any(test, feature = "test-util"))]
    fn check_invariants(&self, cap: usize) {
        assert_eq!(self.set.len(), self.order.len(), "revoked set out of step");
        assert!(self.order.len() <= cap, "revoked set over its bound");
    }
}

/// How many of our pending calls and client streams target each cap, so a `cap_revoked`
/// (PROTOCOL §12) that names no cap we call costs the ids it names, not a scan of every
/// pending call: a peer sending such frames in a loop cannot make each few bytes cost
/// `max_in_flight` steps. A revocation that does fail calls scans once, and each such scan
/// ends calls we made. Built from the tables at the first `cap_revoked` and kept from then
/// on, so a connection that never sees one pays nothing per call.
#[derive(Default)]
pub(crate) struct CallsOnCap {
    by_cap: Option<Map<CapId, u32>>,
}

impl CallsOnCap {
    fn add(&mut self, cap: CapId) {
        if let Some(by_cap) = &mut self.by_cap {
            *by_cap.entry(cap).or_insert(0) += 1;
        }
    }

    fn remove(&mut self, cap: CapId) {
        let Some(by_cap) = &mut self.by_cap else {
            return;
        };
        if let Some(n) = by_cap.get_mut(&cap) {
            *n -= 1;
            if *n == 0 {
                crate::hashing::take(by_cap, &cap);
            }
        }
    }

    /// The counts, built from `targets` (the cap of every pending call and client stream)
    /// the first time.
    fn index(&mut self, targets: impl Iterator<Item = CapId>) -> &Map<CapId, u32> {
        self.by_cap.get_or_insert_with(|| Self::count(targets))
    }

    /// How many of `targets` name each cap.
    fn count(targets: impl Iterator<Item = CapId>) -> Map<CapId, u32> {
        let mut by_cap = Map::default();
        for cap in targets {
            *by_cap.entry(cap).or_insert(0) += 1;
        }
        by_cap
    }

    fn clear(&mut self) {
        self.by_cap = None;
    }
}

/// Children of a call: the calls we made from inside its handler (PROTOCOL §11), so a
/// cancel cascades without scanning every pending call.
#[derive(Default)]
pub(crate) struct ChildIndex {
    /// A set per parent: a finished child is taken out in O(1), however many calls its
    /// handler has out (a list took O(k) per finished call, O(k²) for a handler with k).
    by_parent: Map<CallId, Set<CallId>>,
}

impl ChildIndex {
    fn add(&mut self, parent: CallId, child: CallId) {
        self.by_parent.entry(parent).or_default().insert(child);
    }

    fn remove(&mut self, parent: CallId, child: CallId) {
        if let Some(children) = self.by_parent.get_mut(&parent) {
            children.remove(&child);
            if children.is_empty() {
                crate::hashing::take(&mut self.by_parent, &parent);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.by_parent.is_empty()
    }

    /// The children of `parent` in the order they were made (call ids only grow).
    fn take(&mut self, parent: CallId) -> Vec<CallId> {
        let children = crate::hashing::take(&mut self.by_parent, &parent).unwrap_or_default();
        let mut children: Vec<CallId> = children.into_iter().collect();
        children.sort_unstable();
        children
    }

    #[cfg(any(test, feature = "test-util"))]
    fn len(&self) -> usize {
        self.by_parent.values().map(Set::len).sum()
    }

    fn clear(&mut self) {
        self.by_parent.clear();
    }
}
