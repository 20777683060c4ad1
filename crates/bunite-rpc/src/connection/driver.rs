//! The driver: the one task that owns a connection's session and transport (see the
//! module docs of [`connection`](super) for the design). Everything here awaits or polls;
//! nothing here decides: the session does.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bunite_wire::{CallId, Payload};
use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::command::{Command, Reply};
use super::room::Room;
use super::runs::{Rt, Runs, SendGate};
use super::{CloseHandler, ServeHandle, Shared, TaskGuard};
use crate::client_stream::StreamQueue;
use crate::error::{Disconnect, Error};
use crate::handler::CapImpl;
use crate::session::{Outcome, Output, RunId, Session, TransportEnd};
use crate::stats::Stats;
use crate::status::Status;
use crate::transport::{MessageSink, MessageSource, Transport, TransportError};

/// How long the driver keeps trying to deliver its last frames (a goaway) once the
/// connection has shut down, before it gives up on a transport that does not drain.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Most messages read, commands taken or stream values produced per pass, so one busy
/// source cannot starve the others (or the writes).
const PASS_BUDGET: usize = 128;
/// Most messages the first pass of a wake-up reads before it writes. A peer that sent many
/// calls at once gets the first answers while we read the rest, so the two ends work at
/// the same time (on two cores) instead of in turn, each idle while the other handles the
/// whole burst; the later passes read up to [`PASS_BUDGET`] each, so a burst's answers still
/// go out in few writes. (64 calls in flight over TCP, one thread per end: 0.45-0.51 M calls/s
/// with every pass reading 128, 0.85-0.95 M with this; `docs/BENCHMARKS.md`.)
const FIRST_PASS_READS: usize = 16;
/// Passes before the driver yields to the runtime, so a busy connection cannot starve the
/// other tasks of its thread.
const PASSES_PER_POLL: usize = 16;

pub(super) fn spawn<T: Transport>(
    shared: Arc<Shared>,
    session: Session<Rt>,
    commands: mpsc::UnboundedReceiver<Command>,
    transport: T,
) {
    let (sink, source) = transport.split();
    let guard = shared.task();
    let limits = &shared.settings.limits;
    let room =
        Room::new(limits.max_unsent_bytes, sink.send_budget()).with_pace(limits.send_deadline);
    let task = Arc::new(AtomicWaker::new());
    let driver = Driver {
        runs: Runs::new(Arc::clone(&shared), Arc::clone(&task)),
        commands_woke: Woke::new(Arc::clone(&task)),
        source_woke: Woke::new(Arc::clone(&task)),
        task,
        shared,
        session,
        commands,
        sink,
        source,
        held: None,
        room,
        unflushed: false,
        handed: false,
        state: State::Open,
        timer: None,
        timer_at: None,
        stall_since: None,
        stall_timer: None,
        sink_written: 0,
        sink_queued: 0,
        close_handlers: Vec::new(),
        now: None,
        published: Stats::default(),
        _guard: guard,
    };
    tokio::spawn(driver);
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Open,
    /// Shut down: deliver what is queued, then close the sink.
    Closing,
    /// The sink is closed: read and discard what the peer still sends, until the source
    /// has lingered enough ([`MessageSource::poll_linger`]), so that closing the socket
    /// does not reset it before the peer has read our last frames.
    Lingering,
    /// The sink is closed (or broken): finish.
    Done,
}

/// Why [`Driver::read`] stopped.
enum Read {
    /// The source is pending (or the session closed): its waker is registered.
    Drained,
    /// The pass's budget ran out with messages perhaps still ready.
    Budget,
    /// Too much waits to be sent; reading resumes once the transport takes it.
    Backpressure,
}

pub(super) struct Driver<K: MessageSink, R: MessageSource> {
    /// The driver's task as of its last poll, for the sources that wake it through a waker
    /// of their own (stream sources, the command queue, the transport).
    task: Arc<AtomicWaker>,
    shared: Arc<Shared>,
    session: Session<Rt>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Whether the command queue may have something: it is polled only then.
    commands_woke: Woke,
    sink: K,
    source: R,
    /// Whether the transport may have a message: it is read only then.
    source_woke: Woke,
    runs: Runs,
    /// A message taken from the session that the sink was not ready for.
    held: Option<Bytes>,
    /// The bounds on what waits to be sent, and what is paid for it from a listener's
    /// budget.
    room: Room,
    /// Messages were handed to the sink since its last flush.
    unflushed: bool,
    /// Messages were handed to the sink since the last [`Driver::flush`] (progress, for
    /// the write-stall limit).
    handed: bool,
    state: State,
    /// The session's next timer, or the close grace once closing.
    timer: Option<Pin<Box<Sleep>>>,
    timer_at: Option<Instant>,
    /// While bytes wait for the transport: when it last took some (see
    /// [`Driver::watch_stall`]); `None` when nothing waits.
    stall_since: Option<Instant>,
    /// The write-stall timer, created the first time a write waits and kept after; it may
    /// be set earlier than the stall's end (progress does not move it), never later.
    stall_timer: Option<Pin<Box<Sleep>>>,
    /// [`MessageSink::written`] as of the last progress.
    sink_written: u64,
    /// What the sink held of its own at the last accounting, when a budget pays for it
    /// (see [`queued_in`]; 0 otherwise).
    sink_queued: usize,
    close_handlers: Vec<CloseHandler>,
    /// The time of this pass (see [`Driver::now`]).
    now: Option<std::time::Instant>,
    /// The counts last published to `Shared::stats`.
    published: Stats,
    _guard: TaskGuard,
}

impl<K: MessageSink, R: MessageSource> Future for Driver<K, R> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let span = this.shared.span.clone();
        let _entered = super::runs::enter(&span);
        this.task.register(cx.waker());
        for i in 0..PASSES_PER_POLL {
            let reads = if i == 0 {
                FIRST_PASS_READS
            } else {
                PASS_BUDGET
            };
            let again = this.pass(cx, reads, i + 1 == PASSES_PER_POLL);
            if this.state == State::Done {
                this.finish();
                return Poll::Ready(());
            }
            if !again {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<K: MessageSink, R: MessageSource> Driver<K, R> {
    /// One pass over every source of work; whether another pass is needed now.
    ///
    /// Each source is polled until it is pending, which registers a waker with it that wakes
    /// this task, so a pass needs no successor just because it did something: what arrives
    /// after its poll wakes the task. The command queue and the transport are polled only
    /// when they woke the task since they were last found empty (see [`Woke`]). Another
    /// pass is needed only where a source was left with work it was not polled to the end
    /// of: a budget ran out, reading or producing stream values stopped for unsent bytes
    /// the write has since given room for, a timer fired (the next one is not armed yet),
    /// or the state changed (the close grace and the sink's close are polled in the next
    /// pass).
    ///
    /// Every pass hands its messages to the sink and flushes it, except a pass followed
    /// only because stream sources have more to produce (and not the `last` of a poll):
    /// a stream's values of one wake-up are written together (the sink bounds what it
    /// buffers), not in one write per budget. Answers to input still being read are not
    /// held back: a peer with many calls in flight gets the first results while we read
    /// the rest (the first pass of a poll reads at most [`FIRST_PASS_READS`] messages).
    fn pass(&mut self, cx: &mut Context<'_>, reads: usize, last: bool) -> bool {
        self.now = None;
        let state = self.state.clone();
        let commands_left = self.take_commands();
        let read = self.read(reads);
        self.apply_outputs();
        let held = self.held_len();
        let mut gate = Gate::new(&mut self.room, &self.sink, held);
        self.runs.poll_streams(&mut self.session, &mut gate);
        self.apply_outputs();
        if self.session.release_unarmed() {
            let now = self.now();
            self.session.arm_release(now);
        }
        let fired = self.poll_timer(cx);
        self.apply_outputs();
        self.hand_to_sink(cx);
        let room = self.has_room();
        let more_input = commands_left
            || match read {
                Read::Drained => false,
                Read::Budget => true,
                Read::Backpressure => room,
            };
        let more_values = room && self.runs.has_ready();
        if last || more_input || fired || !more_values {
            self.flush(cx);
        }
        self.account();
        // A flush that completed leaves no waker behind, and reading may have stopped
        // before the source was polled: if the write made the room that was lacking (what
        // the sink held could not be paid for), go on now rather than at the next wake-up.
        let made_room = !room
            && (matches!(read, Read::Backpressure) || self.runs.has_ready())
            && self.has_room();
        more_input || fired || more_values || made_room || self.state != state
    }

    /// The time, read once per pass (every message and command of a pass sees the same
    /// `now`; a clock read per message was a visible cost).
    fn now(&mut self) -> std::time::Instant {
        *self.now.get_or_insert_with(|| Instant::now().into_std())
    }

    /// The time of a call's start or end, which an observer's `CallEvent::duration` is
    /// made of: read afresh while events are observed, so that a handler that completes
    /// inline reports the time it ran (with the pass's time at both ends it read 0); the
    /// pass's time otherwise, at no cost.
    fn call_now(&mut self) -> std::time::Instant {
        if self.session.is_observed() {
            Instant::now().into_std()
        } else {
            self.now()
        }
    }

    /// Takes queued commands, at most a pass's budget; whether the budget ran out first.
    /// The queue is polled only if something was sent since it was last found empty.
    fn take_commands(&mut self) -> bool {
        if !self.commands_woke.take() {
            return false;
        }
        for _ in 0..PASS_BUDGET {
            let polled = self.commands.poll_recv(&mut self.commands_woke.context());
            match polled {
                Poll::Ready(Some(command)) => self.command(command),
                // Every handle holds a sender, and so does `Shared`: never closed while we run.
                Poll::Ready(None) | Poll::Pending => return false,
            }
        }
        self.commands_woke.again();
        true
    }

    /// Takes whatever commands are queued right now, without registering for more (before
    /// completing a handler inline, so its `after_reply` work is registered first).
    fn take_queued_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            self.command(command);
        }
    }

    /// Takes every command left in the closed queue ([`last_command`]).
    fn take_last_commands(&mut self) {
        while let Some(command) = last_command(&mut self.commands) {
            self.command(command);
        }
    }

    fn command(&mut self, command: Command) {
        self.refresh_observed();
        let now = self.now();
        let s = &mut self.session;
        match command {
            Command::Call { mut req, reply } => {
                s.start_call(&mut req, reply, now);
            }
            Command::Stream { mut req, queue } => {
                s.start_stream(&mut req, queue);
            }
            Command::Bootstrap { id, cap, reply } => {
                let (name, version, parent) = &*cap;
                s.bootstrap_within(*parent, id, name, version.as_deref(), reply, now);
            }
            Command::Cancel(id) => s.cancel_call(id),
            Command::Release(id) => s.release(id),
            Command::Credit(id, n) => s.return_credit(id, n),
            Command::CancelStream(id) => s.cancel_client_stream(id),
            Command::Serve { caps, reply } => {
                let (caps, if_exists) = *caps;
                // The handle is made here, so that a caller that stopped waiting drops it
                // (with the reply, here or in its receiver), which unserves the names: it
                // would otherwise never get the handle that owns them.
                let served = s.serve(caps, if_exists);
                let _ = reply.send(served.map(|names| ServeHandle::new(names, &self.shared)));
            }
            Command::Replace { cap, reply } => {
                let (def, imp) = *cap;
                let _ = reply.send(s.replace(def, imp));
            }
            Command::Unserve { names, done } => {
                s.unserve(&names);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Command::AfterReply(work) => {
                let (id, run, f) = *work;
                s.after_reply(id, run, f);
            }
            Command::HandlerDone {
                run,
                call_id,
                result,
            } => {
                self.runs.task_done(run);
                let outcome = super::runs::outcome(*result);
                let now = self.call_now();
                self.handler_done(run, call_id, outcome, now);
            }
            Command::PolicyDone { call_id, allowed } => {
                self.runs.policy_done(call_id);
                self.session
                    .policy_done(call_id, allowed.map_err(String::from));
            }
            Command::OnClose(f) => {
                if self.state == State::Open {
                    self.close_handlers.push(f);
                } else {
                    run_close_handler(f);
                }
            }
            Command::Close => s.close(),
            Command::Drain(grace) => s.drain(grace, now),
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
        }
    }

    /// Reads the messages the transport has ready, at most `budget`, unless too much is
    /// waiting to be sent (a peer that does not read our answers stops being read), or
    /// the listener's send budget cannot pay for it (see `room.rs`).
    fn read(&mut self, budget: usize) -> Read {
        if self.state != State::Open || !self.source_woke.take() {
            return Read::Drained;
        }
        // Reading writes nothing: what the sink holds stays as it is.
        let queued = self.queued();
        for _ in 0..budget {
            if !self.room.check(self.unsent(), queued) {
                self.source_woke.again();
                self.source.pause();
                return Read::Backpressure;
            }
            let polled = self.source.poll_recv(&mut self.source_woke.context());
            let msg = match polled {
                Poll::Pending => return Read::Drained,
                Poll::Ready(msg) => msg,
            };
            match msg {
                Ok(Some(bytes)) => {
                    self.refresh_observed();
                    let now = self.call_now();
                    self.session.handle_message(&bytes, now);
                    // Run what it asked for now: a handler that completes at once adds
                    // its answer to what waits to be sent before the next message is
                    // read, so the check above sees it (applied after the whole read,
                    // one pass of calls for 256 KiB each queued 32 MiB unchecked).
                    self.apply_outputs();
                }
                Ok(None) => self.session.transport_ended(TransportEnd::Eof),
                Err(e) => self.session.transport_ended(transport_end(e)),
            }
            if self.session.is_closed() {
                return Read::Drained;
            }
        }
        self.source_woke.again();
        Read::Budget
    }

    /// Runs the session's timers when due, and the close grace.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let want = match self.state {
            State::Open => self.session.poll_timeout().map(Instant::from_std),
            _ => self.timer_at,
        };
        let Some(at) = want else {
            self.timer = None;
            self.timer_at = None;
            return false;
        };
        if self.timer_at != Some(at) {
            self.timer_at = Some(at);
            match &mut self.timer {
                Some(sleep) => sleep.as_mut().reset(at),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        let Some(sleep) = &mut self.timer else {
            return false;
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.timer_at = None;
        match self.state {
            State::Open => {
                // The timer fired: read the clock afresh, the pass's time may predate it.
                self.now = None;
                let now = self.now();
                self.session.handle_timeout(now)
            }
            // The grace passed: give up on a transport that does not drain.
            _ => self.state = State::Done,
        }
        true
    }

    /// Applies what the session decided.
    fn apply_outputs(&mut self) {
        loop {
            if self.session.is_closed() && !self.shared.is_closed() {
                // Before any outcome of the shutdown is handed over: a caller whose call
                // failed with it finds the connection closed, on whatever worker it runs.
                self.shared.mark_closed(self.session.closed_by());
            }
            self.apply_session_outputs();
            // A drain that is done closes: its outputs are applied in turn.
            if !self.session.poll_drained() {
                break;
            }
        }
        self.refresh_observed();
    }

    /// Tells the session whether anyone observes events now. Done before every input a
    /// handle or the peer may have sent after a `subscribe` returned (a command, an inbound
    /// message), as well as after every application of outputs: a message read before the
    /// pass's first application was otherwise handled as unobserved, and its events were
    /// never built for the subscriber that was already there.
    fn refresh_observed(&mut self) {
        let observed = self
            .shared
            .observed
            .load(std::sync::atomic::Ordering::Acquire);
        self.session.set_observed(observed);
    }

    /// Applies the outputs the session has queued.
    fn apply_session_outputs(&mut self) {
        while let Some(output) = self.session.poll_output() {
            match output {
                Output::Reply { to, outcome, caps } => self.reply(to, outcome, caps),
                Output::StreamItem { to, item } => to.push(item),
                Output::StreamEnd { to, error } => self.stream_end(&to, error),
                Output::Invoke(inv) => {
                    if let Some((run, call_id, result)) = self.runs.invoke(inv, &mut self.session) {
                        // Completed inline: let its after_reply registrations land first.
                        self.take_queued_commands();
                        let now = self.call_now();
                        self.handler_done(run, call_id, result, now);
                    }
                }
                Output::Signal(run) => self.runs.signal(run),
                Output::Abort(run) => self.runs.abort(run),
                Output::Credit(run) => self.runs.ready(run),
                Output::Policy { call_id, name } => {
                    if let Some(allowed) = self.runs.policy(call_id, &name) {
                        self.session.policy_done(call_id, allowed);
                    }
                }
                Output::Dispose {
                    imp,
                    method,
                    cap_id,
                } => self.runs.dispose(imp, &method, cap_id),
                Output::Run(f) => super::runs::run_deferred(&self.shared, f),
                Output::Event(event) => self.shared.notify(&event),
                Output::Hello(hello) => {
                    if let Ok(mut h) = self.shared.peer_hello.lock() {
                        *h = Some(hello);
                    }
                }
                Output::Closed(how) => self.closed(how),
            }
        }
    }

    /// Hands a call's outcome to its caller.
    fn reply(&mut self, to: Reply, outcome: Result<Payload, Error>, caps: bool) {
        if let Err(Ok(payload)) = to.send(outcome) {
            // The caller is gone: release the caps nobody will hold.
            if caps {
                self.session.release_all(&payload);
            }
        }
    }

    /// Hands a stream's end to its consumer, its slot given back first (before the
    /// consumer can see the end and open another).
    fn stream_end(&self, to: &StreamQueue, error: Option<Error>) {
        if to.take_reservation() {
            self.shared.unreserve(1);
        }
        to.end(error);
    }

    /// The session shut down: no more reads; deliver what is queued within the grace.
    fn closed(&mut self, how: Disconnect) {
        tracing::debug!(connection = self.shared.id, ?how, "connection closed");
        self.shared.mark_closed(Some(&how));
        for f in std::mem::take(&mut self.close_handlers) {
            run_close_handler(f);
        }
        self.state = if matches!(
            how,
            Disconnect::Transport { .. }
                | Disconnect::WriteStalled { .. }
                | Disconnect::SlowReader { .. }
        ) {
            // The transport is broken or takes nothing: nothing more can be delivered.
            State::Done
        } else {
            State::Closing
        };
        let at = Instant::now() + CLOSE_GRACE;
        self.timer_at = Some(at);
        self.timer = Some(Box::pin(tokio::time::sleep_until(at)));
    }

    /// Hands every ready message to the sink, as far as it takes them.
    fn hand_to_sink(&mut self, cx: &mut Context<'_>) {
        if matches!(self.state, State::Done | State::Lingering) {
            return;
        }
        loop {
            let msg = match self.held.take() {
                Some(msg) => msg,
                None => match self.session.poll_transmit() {
                    Some(msg) => msg,
                    None => break,
                },
            };
            match self.sink.poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return self.sink_failed(e),
                Poll::Pending => {
                    self.held = Some(msg);
                    break;
                }
            }
            if let Err(e) = self.sink.start_send(msg) {
                return self.sink_failed(e);
            }
            self.unflushed = true;
            self.handed = true;
        }
    }

    /// Flushes what the sink holds, watches for a stalled write, and once closing (and
    /// everything is out) closes the sink and lets the source linger.
    fn flush(&mut self, cx: &mut Context<'_>) {
        if self.state == State::Done {
            return;
        }
        let mut flushed = false;
        if self.unflushed {
            match self.sink.poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    flushed = true;
                }
                Poll::Ready(Err(e)) => return self.sink_failed(e),
                Poll::Pending => {}
            }
        }
        let accepted = std::mem::take(&mut self.handed) || flushed;
        if self.watch_stall(cx, accepted) {
            return;
        }
        if self.state == State::Closing
            && self.held.is_none()
            && !self.unflushed
            && self.session.transmit_bytes() == 0
            && self.sink.poll_close(cx).is_ready()
        {
            self.state = State::Lingering;
        }
        if self.state == State::Lingering && self.source.poll_linger(cx).is_ready() {
            self.state = State::Done;
        }
    }

    /// The write-stall limit ([`Limits::write_stall_timeout`](crate::Limits)): while
    /// bytes wait for the transport (a message the sink refused, or a flush not done) and it
    /// takes none of them for the limit, ends the connection as a failed transport. Nothing
    /// happens, no timer included, while writes complete at once. And the send deadline
    /// ([`Limits::send_deadline`](crate::Limits::send_deadline)): while the budget pays for
    /// what waits, a peer that falls behind its pace is ended the same way
    /// ([`Room::deadline`]). Whether either fired.
    fn watch_stall(&mut self, cx: &mut Context<'_>, accepted: bool) -> bool {
        if self.state != State::Open {
            self.stall_since = None;
            return false;
        }
        let waiting = self.held.is_some() || self.unflushed;
        let limit = self
            .shared
            .settings
            .limits
            .write_stall_timeout
            .filter(|_| waiting);
        let paying = self.room.paid() > 0;
        if limit.is_none() {
            self.stall_since = None;
        }
        if limit.is_none() && !paying {
            self.room.unpaced();
            return false;
        }
        let written = self.sink.written();
        // A limit past what an `Instant` can hold never ends (`Duration::MAX` panicked).
        let stalled = match (limit, self.stall_since) {
            (None, _) => None,
            (Some(limit), Some(since)) if !accepted && written == self.sink_written => {
                since.checked_add(limit)
            }
            (Some(limit), _) => {
                self.sink_written = written;
                let now = Instant::from_std(self.now());
                self.stall_since = Some(now);
                now.checked_add(limit)
            }
        };
        let now = self.now();
        let behind = self.room.deadline(written, now).map(Instant::from_std);
        let Some(end) = stalled.into_iter().chain(behind).min() else {
            return false;
        };
        // Progress only moves the ends later; the timer catches up when it fires early. A
        // pace that starts (afresh) may end before the timer: then it is brought forward.
        let sleep = self
            .stall_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(end)));
        if sleep.deadline() > end {
            sleep.as_mut().reset(end);
        }
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if sleep.deadline() >= end {
                break;
            }
            sleep.as_mut().reset(end);
        }
        let how = match (stalled, limit) {
            (Some(stalled), Some(limit)) if stalled <= end => {
                tracing::debug!(
                    connection = self.shared.id,
                    ?limit,
                    "write stalled: the peer took nothing, closing"
                );
                TransportEnd::WriteStalled(limit)
            }
            _ => {
                let (taken, after) = self.room.behind(written, now);
                tracing::debug!(
                    connection = self.shared.id,
                    taken,
                    ?after,
                    "the peer reads too slowly for the send budget's pace, closing"
                );
                TransportEnd::SlowReader { taken, after }
            }
        };
        self.session.transport_ended(how);
        self.apply_outputs();
        self.held = None;
        self.stall_since = None;
        self.state = State::Done;
        true
    }

    fn sink_failed(&mut self, e: TransportError) {
        if self.state == State::Open {
            self.session.transport_ended(transport_end(e));
            self.apply_outputs();
        }
        self.held = None;
        self.state = State::Done;
    }

    /// Bytes waiting for the transport: in the session, and the one the sink refused.
    fn unsent(&self) -> usize {
        self.session.transmit_bytes() + self.held_len()
    }

    fn held_len(&self) -> usize {
        self.held.as_ref().map_or(0, Bytes::len)
    }

    /// What the sink holds, when a budget pays for it.
    fn queued(&self) -> usize {
        queued_in(&self.room, &self.sink)
    }

    /// Whether there is room to send more now (see [`Room::check`]); pays for what waits.
    fn has_room(&mut self) -> bool {
        let queued = self.queued();
        self.room.check(self.unsent(), queued)
    }

    /// A handler's outcome to the session. On a connection a send budget pays for, its
    /// result is held to what the budget can pay for: the session encodes no more than the
    /// [`allowance`](Room::allowance) and queues it only once
    /// [`pay_answer`](Room::pay_answer) has paid (else it answers `resource_exhausted`).
    #[inline]
    fn handler_done(
        &mut self,
        run: RunId,
        call_id: CallId,
        result: Result<Outcome<Arc<dyn CapImpl>>, Status>,
        now: std::time::Instant,
    ) {
        if !self.room.budgeted() {
            self.session.handler_done(run, call_id, result, now);
            return;
        }
        let held = self.held_len();
        let mut gate = Gate::new(&mut self.room, &self.sink, held);
        let room = gate.allowance(self.session.transmit_bytes());
        self.session.set_send_room(room);
        let mut pay = |held: usize| gate.pay(held);
        self.session
            .handler_done_paying(run, call_id, result, now, &mut pay);
    }

    /// Settles what is paid for bytes written since the last time, and publishes the
    /// counts.
    fn account(&mut self) {
        // What the sink holds, when a budget pays for it (once the driver is done, the
        // sink is about to be dropped with it: nothing).
        self.sink_queued = match self.state {
            State::Done => 0,
            _ => self.queued(),
        };
        if self.room.budgeted() {
            self.room.settle(self.unsent() + self.sink_queued);
        }
        let stats = self.stats();
        if stats != self.published {
            self.published = stats;
            if let Ok(mut s) = self.shared.stats.lock() {
                *s = stats;
            }
        }
    }

    fn stats(&self) -> Stats {
        let mut stats = self.session.stats();
        stats.unsent_bytes = self.unsent() + self.sink_queued;
        stats
    }

    /// The driver's last act: no more commands, every run gone, what could not be sent
    /// discarded, final counts published.
    fn finish(&mut self) {
        self.commands.close();
        self.take_last_commands();
        self.apply_outputs();
        self.runs.clear();
        self.held = None;
        while self.session.poll_transmit().is_some() {}
        // What the sink still holds is dropped with it, right after.
        self.room.settle(0);
        self.account();
        self.shared.finished.cancel();
    }
}

impl<K: MessageSink, R: MessageSource> Drop for Driver<K, R> {
    /// A driver dropped before it finished (its task panicked, or its runtime shut down
    /// with the connection open) still lets go of everything that waits on it: a caller
    /// gets the outcome already decided for it, or finds its reply channel closed
    /// (`closed`); each client stream gets the values and end already decided for it and
    /// then `closed`; new calls fail; its close handlers run (once, each under a panic
    /// guard, as at any close: the one application code run here); and
    /// `Connection::closed` returns. Otherwise atomics and the streams' own queues only.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shared.driver_panicked.store(true, Ordering::Release);
            tracing::error!(
                connection = self.shared.id,
                "the connection's task panicked: the connection is closed"
            );
        }
        if self.shared.finished.is_cancelled() {
            return; // It finished: nothing waits.
        }
        self.shared.mark_closed(self.session.closed_by());
        // Outcomes already decided are handed over as decided; nothing else runs.
        while let Some(output) = self.session.poll_output() {
            match output {
                Output::Reply { to, outcome, caps } => self.reply(to, outcome, caps),
                Output::StreamItem { to, item } => to.push(item),
                Output::StreamEnd { to, error } => self.stream_end(&to, error),
                _ => {}
            }
        }
        for sink in self.session.client_stream_sinks() {
            self.stream_end(sink, Some(Error::closed()));
        }
        // What is still queued: a stream opened before the close ends `closed` (a call's
        // reply channel closes as its command is dropped), and a close handler runs here;
        // one registered from now on runs at once (the connection is closed, or its
        // command comes back unsent).
        self.commands.close();
        while let Some(command) = last_command(&mut self.commands) {
            match command {
                Command::OnClose(f) => self.close_handlers.push(f),
                Command::Stream { queue, .. } => self.stream_end(&queue, Some(Error::closed())),
                _ => {}
            }
        }
        for f in std::mem::take(&mut self.close_handlers) {
            run_close_handler(f);
        }
        self.shared.finished.cancel();
    }
}

/// The next command left in a closed queue, a send that was under way as it closed
/// included; `None` once there is none and none can come. tokio counts a send before it
/// puts the command in the queue, and `try_recv` of a closed queue reports `Empty` (not
/// `Disconnected`) while such a send has not put it in yet: stopping there let the command
/// arrive after the queue was dropped, kept by `Shared`'s sender, so that what waited on it
/// (an `unserve`, a `serve`, a call) waited as long as a handle lived (`tests/lifecycle.rs`,
/// `a_command_sent_as_the_driver_finishes_is_answered` and
/// `a_command_sent_as_the_driver_is_dropped_is_let_go`). That send is a few instructions
/// from its end, on another thread, and lock-free: waiting for it in the driver's `Drop`
/// waits on nothing this thread holds, so it cannot deadlock (the sender cannot be this
/// thread, which is here).
fn last_command(commands: &mut mpsc::UnboundedReceiver<Command>) -> Option<Command> {
    loop {
        match commands.try_recv() {
            Ok(command) => return Some(command),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) => std::thread::yield_now(),
        }
    }
}

/// Room to send for answers (see [`SendGate`]): the connection's [`Room`], with what the
/// sink holds read once, when first needed (making answers writes nothing).
struct Gate<'a, S> {
    room: &'a mut Room,
    sink: &'a S,
    /// The message the sink refused.
    held: usize,
    queued: Option<usize>,
}

impl<'a, S: MessageSink> Gate<'a, S> {
    /// The room beside `held`, the bytes of the message the sink refused; what the sink
    /// holds is read when first needed.
    fn new(room: &'a mut Room, sink: &'a S, held: usize) -> Self {
        Gate {
            room,
            sink,
            held,
            queued: None,
        }
    }

    fn queued(&mut self) -> usize {
        let (room, sink) = (&*self.room, self.sink);
        *self.queued.get_or_insert_with(|| queued_in(room, sink))
    }

    /// How long answers may be, the session holding `session_bytes` ([`Room::allowance`]).
    fn allowance(&mut self, session_bytes: usize) -> usize {
        let waiting = session_bytes + self.held + self.queued();
        self.room.allowance(waiting)
    }
}

impl<S: MessageSink> SendGate for Gate<'_, S> {
    fn room(&mut self, session_bytes: usize) -> Option<usize> {
        let (unsent, queued) = (session_bytes + self.held, self.queued());
        self.room
            .check(unsent, queued)
            .then(|| self.allowance(session_bytes))
    }

    fn pay(&mut self, session_bytes: usize) -> bool {
        let waiting = session_bytes + self.held + self.queued();
        self.room.pay_answer(waiting)
    }
}

/// What `sink` holds, when `room` pays for it from a budget (asked only then: a WebSocket
/// sink takes a lock to tell).
fn queued_in(room: &Room, sink: &impl MessageSink) -> usize {
    if room.budgeted() {
        sink.queued()
    } else {
        0
    }
}

fn run_close_handler(f: CloseHandler) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
}

/// How a transport error ends the session.
fn transport_end(e: TransportError) -> TransportEnd {
    match e {
        e @ (TransportError::TooLarge { .. } | TransportError::TextForLength { .. }) => {
            TransportEnd::TooLarge(e.to_string())
        }
        TransportError::Protocol(m) => TransportEnd::Protocol(m),
        e @ TransportError::TooSlow { .. } => TransportEnd::TooSlow(e.to_string()),
        TransportError::Closed => TransportEnd::Eof,
        TransportError::Io(e) => TransportEnd::Failed {
            kind: e.kind(),
            message: e.to_string(),
        },
    }
}

/// Whether one of the driver's sources (the command queue, the transport) has woken it
/// since it was last found empty, so that a pass polls only the sources with something to
/// give: a wake-up for an answer does not poll the command queue, nor one for a command
/// the transport (each such poll finds nothing and registers its waker again, about 160
/// instructions; a sequential round trip made three of them, `docs/BENCHMARKS.md`).
///
/// The source is polled with the `Woke`'s waker, which marks it woken and wakes the
/// driver's task (as a stream source's waker does in `runs.rs`).
/// A source is marked not woken just before it is polled, and marked again when its poll
/// stopped before it was pending (a budget, backpressure), so a wake-up that comes during
/// the poll or after it is never lost. This rests on the contract of a poll: a source that
/// returns `Pending` has arranged for the waker it was given to be woken, whatever it waits
/// on (tokio-tungstenite wakes the reading side's waker for the writes a read makes, a pong;
/// a listener's budget wakes the waker of the read that waits for it), never on the
/// driver's task being woken by something else.
struct Woke {
    flag: Arc<WokeFlag>,
    waker: Waker,
}

struct WokeFlag {
    woken: AtomicBool,
    task: Arc<AtomicWaker>,
}

impl Wake for WokeFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Woke {
    /// Woken at first: the first pass polls the source. Its wake-ups wake `task`.
    fn new(task: Arc<AtomicWaker>) -> Self {
        let flag = Arc::new(WokeFlag {
            woken: AtomicBool::new(true),
            task,
        });
        Woke {
            waker: Waker::from(Arc::clone(&flag)),
            flag,
        }
    }

    /// A context to poll the source with.
    fn context(&self) -> Context<'_> {
        Context::from_waker(&self.waker)
    }

    /// Whether the source was woken; it is marked not woken (about to be polled).
    fn take(&self) -> bool {
        self.flag.woken.swap(false, Ordering::AcqRel)
    }

    /// The source was left with more to give: poll it again.
    fn again(&self) {
        self.flag.woken.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A task waker that counts its wake-ups.
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A source is polled first, then only after its waker fired or its poll stopped
    /// early; the waker it was polled with wakes the driver's task as last registered.
    #[test]
    fn a_source_is_polled_only_when_woken_or_left_with_more() {
        let task = Arc::new(Counting(AtomicUsize::new(0)));
        let driver = Arc::new(AtomicWaker::new());
        let woke = Woke::new(Arc::clone(&driver));
        driver.register(&Waker::from(Arc::clone(&task)));
        assert!(woke.take(), "polled at first");
        assert!(!woke.take(), "nothing woke it");
        // The source stores the waker it was polled with and fires it later.
        let stored = woke.context().waker().clone();
        stored.wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 1);
        assert!(woke.take());
        assert!(!woke.take());
        // A wake-up while the source is polled (after `take`) is kept for the next pass.
        stored.wake_by_ref();
        assert!(woke.take());
        // Stopped for a budget: polled again without a wake-up.
        woke.again();
        assert!(woke.take());
        assert!(!woke.take());
        // A later registration is the task woken.
        let other = Arc::new(Counting(AtomicUsize::new(0)));
        driver.register(&Waker::from(Arc::clone(&other)));
        stored.wake();
        assert_eq!(other.0.load(Ordering::SeqCst), 1);
        assert!(woke.take());
    }
}
