//! Running user code for the driver: handlers (polled once inline, then on a task of their
//! own if they wait), stream sources (polled inline as credit allows), policy checks,
//! disposals and `after_reply` work. Every call into user code catches panics.

use std::collections::VecDeque;

use crate::hashing::Map;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bunite_wire::{CallId, CapId, Outgoing};
use futures::task::AtomicWaker;
use futures::{FutureExt, StreamExt};
use tokio::task::AbortHandle;

use super::command::{Command, Reply};
use super::{spans_wanted, Shared, CLOSE_GRACE};
use crate::client_stream::StreamQueue;
use crate::context::{CallContext, CallScope, Signal};
use crate::events::{ErrorEvent, Event};
use crate::handler::{BoxFuture, CapImpl, OutgoingStream, Returned};
use crate::session::{self, Invocation, Outcome, RunId, Session};
use crate::status::Status;
use bunite_wire::Payload;

/// Work to run once a call's reply is queued.
pub(crate) type Deferred = Box<dyn FnOnce() + Send>;

/// The runtime's side of the session's [`Types`](session::Types).
pub(crate) struct Rt;

impl session::Types for Rt {
    type Imp = Arc<dyn CapImpl>;
    type Reply = Reply;
    type Sink = Arc<StreamQueue>;
    type Deferred = Deferred;
}

impl session::Dispatch for Arc<dyn CapImpl> {
    fn has_handler(&self, method: &str) -> bool {
        (**self).has_handler(method)
    }
}

/// Room to send, as the driver keeps it (`room.rs`), for the values of stream sources.
pub(crate) trait SendGate {
    /// Before a source is polled, the session holding `session_bytes`: `None` while there
    /// is no room to send more, else how long its values may be
    /// ([`Session::set_send_room`]).
    fn room(&mut self, session_bytes: usize) -> Option<usize>;
    /// Whether a value may be queued, the session then holding `session_bytes`: paid for
    /// ([`session::Pay`]).
    fn pay(&mut self, session_bytes: usize) -> bool;
}

/// A handler that completed on its first poll: its run, call and outcome.
pub(crate) type Finished = (RunId, CallId, Result<Outcome<Arc<dyn CapImpl>>, Status>);

/// Most values one stream source produces per pass before the others get a turn.
const STREAM_BUDGET: usize = 64;

/// A handler on a task of its own.
struct Running {
    signal: Signal,
    abort: AbortHandle,
}

/// A stream source the driver polls.
struct StreamRun {
    call_id: CallId,
    source: OutgoingStream,
    signal: Signal,
    scope: CallScope,
    waker: Waker,
    queued: bool,
    span: tracing::Span,
}

/// Stream runs whose sources woke, and the driver to wake.
struct Wakes {
    runs: Mutex<Vec<RunId>>,
    /// Set with `runs`, so a pass with no woken source skips the lock.
    any: AtomicBool,
    /// The driver's task (its own, which its other sources wake too).
    driver: Arc<AtomicWaker>,
}

struct StreamWaker {
    run: RunId,
    wakes: Arc<Wakes>,
}

impl Wake for StreamWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Ok(mut runs) = self.wakes.runs.lock() {
            runs.push(self.run);
            self.wakes.any.store(true, Ordering::Release);
        }
        self.wakes.driver.wake();
    }
}

pub(crate) struct Runs {
    shared: Arc<Shared>,
    tasks: Map<RunId, Running>,
    /// Policy checks on a task of their own, by bootstrap call id.
    policies: Map<CallId, AbortHandle>,
    streams: Map<RunId, StreamRun>,
    ready: VecDeque<RunId>,
    wakes: Arc<Wakes>,
    /// The signal of the last call that finished, made new for the next one: a handler
    /// that completes at once leaves its signal unshared, so a connection answering such
    /// calls one after another allocates none.
    spare_signal: Option<Signal>,
}

impl Runs {
    /// Runs whose stream sources wake `driver` (the driver registers its task there).
    pub fn new(shared: Arc<Shared>, driver: Arc<AtomicWaker>) -> Self {
        Runs {
            shared,
            tasks: Map::default(),
            policies: Map::default(),
            streams: Map::default(),
            ready: VecDeque::new(),
            wakes: Arc::new(Wakes {
                runs: Mutex::default(),
                any: AtomicBool::new(false),
                driver,
            }),
            spare_signal: None,
        }
    }

    /// Starts a handler or stream source. Returns the outcome of a handler that completed
    /// on its first poll; the driver reports it.
    pub fn invoke(
        &mut self,
        inv: Invocation<Arc<dyn CapImpl>>,
        session: &mut Session<Rt>,
    ) -> Option<Finished> {
        let signal = self.spare_signal.take().unwrap_or_default();
        let deadline = inv
            .deadline
            .and_then(|d| tokio::time::Instant::now().checked_add(d));
        let scope = CallScope {
            connection: self.shared.id,
            call_id: inv.call_id,
            run: inv.run,
            deadline,
        };
        let ctx = CallContext::new(
            Arc::clone(&self.shared),
            inv.call_id,
            inv.run,
            inv.cap_id,
            signal.clone(),
            deadline,
            inv.context,
        );
        let span = if spans_wanted() {
            tracing::info_span!(
                parent: &self.shared.span,
                "bunite.call",
                otel.kind = "server",
                rpc.system = "bunite",
                rpc.service = %inv.def.name(),
                rpc.method = %inv.def.method_name(inv.method),
                rpc.call_id = inv.call_id.0,
                rpc.stream = inv.stream,
                rpc.code = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let (def, imp, args) = (inv.def, inv.imp, inv.args);
        let method = def.method_name(inv.method);
        if inv.stream {
            let opened = catch(|| scope.enter(|| imp.open_stream(method, args, ctx)));
            match opened {
                Some(Ok(source)) => {
                    self.open_stream(inv.run, inv.call_id, source, signal, scope, span)
                }
                Some(Err(status)) => session.stream_done(inv.call_id, inv.run, Err(status)),
                None => {
                    let status = Status::internal("stream handler panicked");
                    session.stream_done(inv.call_id, inv.run, Err(status));
                }
            }
            return None;
        }
        let created = {
            let _entered = enter(&span);
            catch(|| scope.enter(|| imp.call(method, args, ctx)))
        };
        let Some(fut) = created else {
            return Some((inv.run, inv.call_id, Err(panicked())));
        };
        let mut run = Scoped { scope, fut, span };
        if !inv.own_task {
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(result) = Pin::new(&mut run).poll(&mut cx) {
                // The handler's future, and the context it held, go first.
                drop(run);
                self.spare_signal = signal.reuse();
                return Some((inv.run, inv.call_id, outcome(result)));
            }
        }
        let (shared, run_id, call_id) = (Arc::clone(&self.shared), inv.run, inv.call_id);
        let guard = self.shared.task();
        let handle = tokio::spawn(async move {
            let _guard = guard;
            let result = run.await;
            shared.send(Command::HandlerDone {
                run: run_id,
                call_id,
                result: Box::new(result),
            });
        });
        let running = Running {
            signal,
            abort: handle.abort_handle(),
        };
        self.tasks.insert(run_id, running);
        None
    }

    /// A handler on its own task reported its outcome.
    pub fn task_done(&mut self, run: RunId) {
        if let Some(t) = crate::hashing::take(&mut self.tasks, &run) {
            if self.spare_signal.is_none() {
                self.spare_signal = t.signal.reuse();
            }
        }
    }

    fn open_stream(
        &mut self,
        run: RunId,
        call_id: CallId,
        source: OutgoingStream,
        signal: Signal,
        scope: CallScope,
        span: tracing::Span,
    ) {
        let waker = Waker::from(Arc::new(StreamWaker {
            run,
            wakes: Arc::clone(&self.wakes),
        }));
        let stream = StreamRun {
            call_id,
            source,
            signal,
            scope,
            waker,
            queued: false,
            span,
        };
        self.streams.insert(run, stream);
        self.ready(run);
    }

    /// A stream run may produce: queue it for the next pass.
    pub fn ready(&mut self, run: RunId) {
        if let Some(s) = self.streams.get_mut(&run) {
            if !s.queued {
                s.queued = true;
                self.ready.push_back(run);
            }
        }
    }

    /// Fires a run's cancellation signal; it keeps running.
    pub fn signal(&mut self, run: RunId) {
        if let Some(t) = self.tasks.get(&run) {
            t.signal.fire();
        } else if let Some(s) = self.streams.get(&run) {
            s.signal.fire();
        }
    }

    /// Stops a run: signals it, then drops its future or source.
    pub fn abort(&mut self, run: RunId) {
        if let Some(t) = crate::hashing::take(&mut self.tasks, &run) {
            t.signal.fire();
            t.abort.abort();
        } else if let Some(s) = crate::hashing::take(&mut self.streams, &run) {
            s.signal.fire();
        }
    }

    /// Stops every run and policy check (the driver is finishing).
    pub fn clear(&mut self) {
        for (_, t) in self.tasks.drain() {
            t.signal.fire();
            t.abort.abort();
        }
        for (_, policy) in self.policies.drain() {
            policy.abort();
        }
        for (_, s) in self.streams.drain() {
            s.signal.fire();
        }
        self.ready.clear();
    }

    /// Polls the stream sources that have credit and something to say, each once. Stops
    /// early while too much waits to be sent: `room` is asked with the session's unsent
    /// bytes before each, and says how long its values may be (`None`: no room now). A
    /// source that produced and may have more is queued again ([`Runs::has_ready`]).
    pub fn poll_streams(&mut self, session: &mut Session<Rt>, gate: &mut impl SendGate) {
        if self.ready.is_empty() && !self.wakes.any.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut woken) = self.wakes.runs.lock() {
            self.wakes.any.store(false, Ordering::Release);
            for run in woken.drain(..) {
                if let Some(s) = self.streams.get_mut(&run) {
                    if !s.queued {
                        s.queued = true;
                        self.ready.push_back(run);
                    }
                }
            }
        }
        for _ in 0..self.ready.len() {
            let Some(values) = gate.room(session.transmit_bytes()) else {
                break; // Retried once the transport has taken what is queued.
            };
            session.set_send_room(values);
            let Some(run) = self.ready.pop_front() else {
                break;
            };
            let Some(s) = self.streams.get_mut(&run) else {
                continue;
            };
            s.queued = false;
            match poll_stream(run, s, session, gate) {
                Step::Again => {
                    s.queued = true;
                    self.ready.push_back(run);
                }
                Step::Wait => {}
                Step::Ended => {
                    crate::hashing::take(&mut self.streams, &run);
                }
            }
        }
    }

    /// Stream sources queued to be polled again (they produced and may have more, or
    /// waited for room to send).
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Asks the policy about a bootstrap of `name`: the answer if it came at once, else
    /// the check goes on on a task of its own and answers through a command.
    pub fn policy(&mut self, call_id: CallId, name: &str) -> Option<Result<bool, String>> {
        let settings = &self.shared.settings;
        let Some(policy) = &settings.policy else {
            return Some(Ok(true));
        };
        let Some(check) = catch(|| policy.check(name, &settings.attestation)) else {
            return Some(Err("policy panicked".to_owned()));
        };
        let mut check = AssertUnwindSafe(check).catch_unwind();
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(r) = Pin::new(&mut check).poll(&mut cx) {
            return Some(r.unwrap_or_else(|_| Err("policy panicked".to_owned())));
        }
        let shared = Arc::clone(&self.shared);
        let guard = self.shared.task();
        let handle = tokio::spawn(async move {
            let _guard = guard;
            let allowed = check
                .await
                .unwrap_or_else(|_| Err("policy panicked".to_owned()));
            let allowed = allowed.map_err(String::into_boxed_str);
            shared.send(Command::PolicyDone { call_id, allowed });
        });
        self.policies.insert(call_id, handle.abort_handle());
        None
    }

    /// A policy check on its own task answered.
    pub fn policy_done(&mut self, call_id: CallId) {
        crate::hashing::take(&mut self.policies, &call_id);
    }

    /// Runs a cap's disposal method (unserve, shutdown), bounded by [`CLOSE_GRACE`];
    /// failures become `error` events.
    pub fn dispose(&mut self, imp: Arc<dyn CapImpl>, method: &str, cap_id: CapId) {
        let ctx = CallContext::detached(Arc::clone(&self.shared), cap_id);
        let Some(fut) = catch(|| imp.call(method, Payload::undefined(), ctx)) else {
            return report(
                &self.shared,
                "dispose",
                "disposal method panicked".to_owned(),
            );
        };
        let mut fut = AssertUnwindSafe(fut).catch_unwind();
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(r) = Pin::new(&mut fut).poll(&mut cx) {
            return disposed(&self.shared, r.map(|r| r.map(drop)));
        }
        let shared = Arc::clone(&self.shared);
        let guard = self.shared.task();
        tokio::spawn(async move {
            let _guard = guard;
            match tokio::time::timeout(DISPOSE_TIMEOUT, fut).await {
                Ok(r) => disposed(&shared, r.map(|r| r.map(drop))),
                Err(_) => report(&shared, "dispose", "disposal method timed out".to_owned()),
            }
        });
    }
}

/// How long a disposal method may run.
const DISPOSE_TIMEOUT: Duration = CLOSE_GRACE;

enum Step {
    /// Produced its budget and may produce more.
    Again,
    /// Waits for credit or for its source.
    Wait,
    /// The stream is over (ended, failed, or gone).
    Ended,
}

fn poll_stream(
    run: RunId,
    s: &mut StreamRun,
    session: &mut Session<Rt>,
    gate: &mut impl SendGate,
) -> Step {
    let _entered = enter(&s.span);
    let call_id = s.call_id;
    match session.stream_window(call_id, run) {
        None => return Step::Ended,
        Some(0) => return Step::Wait, // `Output::Credit` queues it again.
        Some(_) => {}
    }
    let (scope, source, waker) = (s.scope, &mut s.source, &s.waker);
    // One call scope for the whole budget, not one per value; only the source's own code
    // runs under the panic guard, the session's never does.
    scope.enter(|| {
        let mut cx = Context::from_waker(waker);
        for _ in 0..STREAM_BUDGET {
            match catch(|| source.poll_next_unpin(&mut cx)) {
                Some(Poll::Pending) => return Step::Wait,
                Some(Poll::Ready(Some(Ok(value)))) => {
                    let mut pay = |held: usize| gate.pay(held);
                    match session.stream_item_paying(call_id, run, value, &mut pay) {
                        None => return Step::Ended,
                        Some(0) => return Step::Wait, // `Output::Credit` queues it again.
                        Some(_) => {}
                    }
                }
                Some(Poll::Ready(Some(Err(status)))) => {
                    session.stream_done(call_id, run, Err(status));
                    return Step::Ended;
                }
                Some(Poll::Ready(None)) => {
                    session.stream_done(call_id, run, Ok(()));
                    return Step::Ended;
                }
                None => {
                    let status = Status::internal("stream source panicked");
                    session.stream_done(call_id, run, Err(status));
                    return Step::Ended;
                }
            }
        }
        Step::Again
    })
}

/// A handler's future, polled inside its call's scope (so calls it makes carry
/// `parentCallId` and inherit its deadline), panics caught.
struct Scoped {
    scope: CallScope,
    fut: BoxFuture<Result<Returned, Status>>,
    span: tracing::Span,
}

impl Future for Scoped {
    type Output = Result<Returned, Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let _entered = enter(&this.span);
        let (scope, fut) = (this.scope, &mut this.fut);
        let poll = match catch(|| scope.enter(|| fut.as_mut().poll(cx))) {
            Some(poll) => poll,
            None => Poll::Ready(Err(panicked())),
        };
        if let (Poll::Ready(result), false) = (&poll, this.span.is_disabled()) {
            let code = result.as_ref().map_or_else(|s| s.code.as_str(), |_| "ok");
            this.span.record("rpc.code", code);
        }
        poll
    }
}

/// Enters `span` unless no subscriber wants it (entering a disabled span still costs a
/// call, and a `log` record check with tracing's `log` feature).
pub(super) fn enter(span: &tracing::Span) -> Option<tracing::span::Entered<'_>> {
    (!span.is_disabled()).then(|| span.enter())
}

fn panicked() -> Status {
    Status::internal("handler panicked")
}

/// Runs user code, catching a panic.
fn catch<R>(f: impl FnOnce() -> R) -> Option<R> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).ok()
}

/// A handler's result as the session takes it.
pub(crate) fn outcome(
    result: Result<Returned, Status>,
) -> Result<Outcome<Arc<dyn CapImpl>>, Status> {
    Ok(match result? {
        Returned::Value(v) => Outcome::Value(Outgoing::value(v)),
        Returned::Typed(v) => Outcome::Value(v),
        Returned::Cap(c) => Outcome::Cap(c.def, c.imp),
        Returned::CapArray(cs) => {
            Outcome::CapArray(cs.into_iter().map(|c| (c.def, c.imp)).collect())
        }
        Returned::CapRecord(cs) => {
            Outcome::CapRecord(cs.into_iter().map(|(k, c)| (k, c.def, c.imp)).collect())
        }
    })
}

/// Runs a call's `after_reply` work.
pub(crate) fn run_deferred(shared: &Shared, f: Deferred) {
    if catch(f).is_none() {
        report(
            shared,
            "after_reply",
            "after_reply closure panicked".to_owned(),
        );
    }
}

fn disposed(shared: &Shared, r: Result<Result<(), Status>, Box<dyn std::any::Any + Send>>) {
    match r {
        Ok(Ok(())) => {}
        Ok(Err(status)) => report(shared, "dispose", status.to_string()),
        Err(_) => report(shared, "dispose", "disposal method panicked".to_owned()),
    }
}

fn report(shared: &Shared, phase: &'static str, error: String) {
    shared.notify(&Event::Error(ErrorEvent { phase, error }));
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::{room, KEPT_ROOM};

    /// A peer opens as many streams as the in-flight limit lets it, or has as many
    /// handlers wait on tasks of their own, then cancels them or lets them finish: the
    /// runs' tables give back the room they grew to, as the session's tables do
    /// (`hashing::take`). A stream run is 136 bytes: 1,024 of them left 2,048 slots, about
    /// 300 KB, for the connection's life.
    #[test]
    fn runs_give_back_the_room_a_burst_took() {
        const BURST: u64 = 1_000;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let (a, _b) = crate::transport::memory::pair();
            let conn = crate::Connection::builder()
                .try_connect(a)
                .expect("a connection");
            let mut runs = Runs::new(Arc::clone(&conn.shared), Arc::new(AtomicWaker::new()));
            for i in 0..BURST {
                let scope = CallScope {
                    connection: conn.shared.id,
                    call_id: CallId(i),
                    run: RunId(i),
                    deadline: None,
                };
                let source: OutgoingStream = Box::pin(futures::stream::pending());
                let span = tracing::Span::none();
                runs.open_stream(RunId(i), CallId(i), source, Signal::default(), scope, span);
                let handle = tokio::spawn(std::future::pending::<()>());
                let running = Running {
                    signal: Signal::default(),
                    abort: handle.abort_handle(),
                };
                runs.tasks.insert(RunId(BURST + i), running);
                runs.policies.insert(CallId(i), handle.abort_handle());
            }
            assert!(room(&runs.streams) >= BURST as usize);
            assert!(room(&runs.tasks) >= BURST as usize);
            for i in 0..BURST {
                runs.abort(RunId(i));
                if i % 2 == 0 {
                    runs.task_done(RunId(BURST + i));
                } else {
                    runs.abort(RunId(BURST + i));
                }
                runs.policy_done(CallId(i));
            }
            // The aborted streams' turns in the ready queue are skipped and dropped.
            runs.ready.clear();
            for (what, room) in [
                ("stream runs", room(&runs.streams)),
                ("task runs", room(&runs.tasks)),
                ("policy checks", room(&runs.policies)),
            ] {
                assert!(room <= KEPT_ROOM, "{what}: room for {room} entries kept");
            }
            conn.close();
        });
    }
}
