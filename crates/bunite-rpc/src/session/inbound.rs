//! The server side of a session: dispatching the peer's calls (PROTOCOL §9), handler
//! outcomes, the peer's cancels (§11) and drops (§7).
//!
//! Every handler or stream source gets a [`RunId`]. A run is live from dispatch until its
//! outcome arrives or the session aborts it, and live runs are what the in-flight limit
//! counts, including a cancelled handler that keeps running (`keep_running_on_cancel`): a
//! peer that starts and cancels calls cannot pile up handlers beyond the limit.

use crate::hashing::Map;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bunite_wire::{
    Call, CallId, Cancel, CapId, DropFrame, Frame, Outgoing, Payload, ResultFrame, StreamEvent,
    StreamFrame, Text, Value, WireStatus,
};

use super::bootstrap::BOOTSTRAP_METHOD;
use super::output::{Invocation, Output, RunId};
use super::streams::ServerStream;
use super::timers::{after, Timer};
use super::{Dispatch, Pay, Session, Types};
use crate::events::{CallEvent, Event, StreamPhase};
use crate::schema::{CapDef, MethodKind, Returns};
use crate::status::{reason, Code, Status};

/// What a call handler produced: a plain value, or caps to export in the shape its method
/// declares (PROTOCOL §9).
pub(crate) enum Outcome<I> {
    /// A value, typed ones serialized straight into the result frame.
    Value(Outgoing),
    Cap(Arc<CapDef>, I),
    CapArray(Vec<(Arc<CapDef>, I)>),
    CapRecord(Vec<(String, Arc<CapDef>, I)>),
}

/// An inbound call whose handler runs.
pub(super) struct ActiveCall<T: Types> {
    run: RunId,
    pub(super) cap_id: CapId,
    def: Arc<CapDef>,
    method: Text,
    returns: Returns,
    started: Instant,
    drop_on_cancel: bool,
    /// When its handler is signalled (non-idempotent methods with a deadline).
    deadline: Option<Instant>,
    /// Work to run once its reply is queued ([`crate::CallContext::after_reply`]).
    after_reply: Vec<T::Deferred>,
    /// Its cap was revoked (unserved) while it ran: the client failed the call on
    /// `cap_revoked` (PROTOCOL §12) and ignores its result, so caps exported in that result
    /// could never be released and are freed once it is sent.
    pub(super) target_revoked: bool,
}

/// A bootstrap waiting for the policy.
pub(super) struct PolicyCheck {
    pub name: String,
    pub version: Option<String>,
}

pub(crate) struct Inbound<T: Types> {
    pub(super) active: Map<CallId, ActiveCall<T>>,
    pub(super) streams: Map<CallId, ServerStream>,
    pub(super) policy: Map<CallId, PolicyCheck>,
    /// Live runs and the call each serves.
    runs: Map<RunId, CallId>,
    next_run: u64,
}

impl<T: Types> Default for Inbound<T> {
    fn default() -> Self {
        Inbound {
            active: Map::default(),
            streams: Map::default(),
            policy: Map::default(),
            runs: Map::default(),
            next_run: 1,
        }
    }
}

impl<T: Types> Inbound<T> {
    /// Whether `run` still serves the peer's call (or stream) `call`.
    pub fn serves(&self, call: CallId, run: RunId) -> bool {
        match self.active.get(&call) {
            Some(a) => a.run == run,
            None => self.streams.get(&call).is_some_and(|s| s.run == run),
        }
    }

    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    pub fn streams_len(&self) -> usize {
        self.streams.len()
    }

    #[cfg(any(test, feature = "test-util"))]
    pub fn runs_len(&self) -> usize {
        self.runs.len()
    }

    /// The live runs.
    #[cfg(feature = "test-util")]
    pub fn run_ids(&self) -> std::collections::BTreeSet<RunId> {
        self.runs.keys().copied().collect()
    }

    /// Every table of the server side: its name, entries and room (see
    /// [`Session::footprint`]).
    #[cfg(test)]
    pub(super) fn footprint(&self, out: &mut Vec<(&'static str, usize, usize)>) {
        use crate::hashing::room;
        out.extend([
            ("active calls", self.active.len(), room(&self.active)),
            ("server streams", self.streams.len(), room(&self.streams)),
            ("policy checks", self.policy.len(), room(&self.policy)),
            ("runs", self.runs.len(), room(&self.runs)),
        ]);
    }

    /// Whether no handler or server stream runs and no bootstrap waits for the policy.
    pub(super) fn is_idle(&self) -> bool {
        self.runs.is_empty() && self.policy.is_empty()
    }

    /// Whether `id` names a call, stream or bootstrap of the peer still in progress.
    fn is_live(&self, id: CallId) -> bool {
        self.active.contains_key(&id)
            || self.streams.contains_key(&id)
            || self.policy.contains_key(&id)
    }

    pub(super) fn new_run(&mut self, call: CallId) -> RunId {
        let run = RunId(self.next_run);
        self.next_run += 1;
        self.runs.insert(run, call);
        run
    }

    #[cfg(test)]
    pub(super) fn runs_room(&self) -> usize {
        crate::hashing::room(&self.runs)
    }

    /// Ends a run; false if it was not live (already aborted, or unknown).
    pub(super) fn end_run(&mut self, run: RunId) -> bool {
        crate::hashing::take(&mut self.runs, &run).is_some()
    }

    /// Every active call and server stream has its live run; the limits hold; one id is
    /// never two things at once; a call's deadline timer is armed exactly while it waits.
    #[cfg(any(test, feature = "test-util"))]
    pub fn check_invariants(&self, timers: &super::timers::Timers, limits: &crate::limits::Limits) {
        for (id, a) in &self.active {
            assert_eq!(
                self.runs.get(&a.run),
                Some(id),
                "active call without its run"
            );
            assert!(
                !self.streams.contains_key(id),
                "call {id} both a call and a stream"
            );
            assert!(
                !self.policy.contains_key(id),
                "call {id} both a call and a bootstrap"
            );
            if let Some(at) = a.deadline {
                assert!(
                    timers.contains(at, Timer::Inbound(*id)),
                    "call {id}: deadline not armed"
                );
            }
        }
        for (id, s) in &self.streams {
            assert_eq!(
                self.runs.get(&s.run),
                Some(id),
                "server stream without its run"
            );
            assert!(
                !self.policy.contains_key(id),
                "stream {id} also a bootstrap"
            );
        }
        let armed = timers.count(|t| matches!(t, Timer::Inbound(_)));
        let waiting = self
            .active
            .values()
            .filter(|a| a.deadline.is_some())
            .count();
        assert_eq!(
            armed, waiting,
            "inbound deadline timers for calls no longer waiting"
        );
        assert!(
            self.runs.len() <= limits.max_in_flight,
            "runs over the in-flight limit"
        );
        assert!(
            next_run_ok(self.next_run, &self.runs),
            "a run id at or past next_run"
        );
        assert!(
            self.policy.len() <= limits.max_pending_policy_checks,
            "policy checks over their limit"
        );
    }
}

#[cfg(any(test, feature = "test-util"))]
fn next_run_ok(next: u64, runs: &Map<RunId, CallId>) -> bool {
    runs.keys().all(|r| r.0 < next)
}

impl<T: Types> Session<T> {
    pub(super) fn on_call(&mut self, call: Call<Payload>, now: Instant) {
        if self.inbound.is_live(call.id) {
            // PROTOCOL §4, §13.10: never a second live entry under one id.
            let message = format!("call id {} is still in use", call.id);
            return self.protocol_error(Status::invalid_argument(message));
        }
        if self.draining.is_some() && !self.calls_back(&call) {
            return self.refuse_while_draining(&call);
        }
        if call.target == CapId::BOOTSTRAP && call.method == BOOTSTRAP_METHOD {
            return self.on_bootstrap(call);
        }
        match self.dispatch(&call) {
            Ok((def, imp, method)) => self.start_run(call, def, imp, method, now),
            Err((def, status)) => self.refuse(&call, def.as_deref(), &status),
        }
    }

    /// Answers `call` with `status` without running it, and reports it as a `call` event
    /// ending with that code (`def`: its cap's definition, when known). The method may be
    /// any name the peer chose (one not served): the event has it cut to [`PEER_TEXT`].
    ///
    /// [`PEER_TEXT`]: super::PEER_TEXT
    fn refuse(&mut self, call: &Call<Payload>, def: Option<&CapDef>, status: &Status) {
        self.emit(|| {
            Event::Call(CallEvent {
                cap_id: call.target,
                cap_name: def.map(|d| d.name().to_owned()),
                method: super::clipped(&call.method).into_owned(),
                call_id: call.id,
                duration: None,
                result: Err(status.code),
            })
        });
        self.reply_err(call.id, status);
    }

    /// Refuses `call` (a bootstrap too) `unavailable`, as a drain does what the peer starts
    /// ([`Session::drain`]).
    #[cold]
    fn refuse_while_draining(&mut self, call: &Call<Payload>) {
        let status = Status::new(Code::Unavailable, "draining: no new calls")
            .with_reason(reason::PEER_CLOSING);
        let def = match call.target {
            CapId::BOOTSTRAP | CapId::RUNTIME => None,
            id => self.table.get(id).map(|e| Arc::clone(&e.def)),
        };
        self.refuse(call, def.as_deref(), &status);
    }

    /// Whether the peer makes `call` on behalf of a call or stream of ours still in
    /// progress (its `meta.parentCallId` names one): a drain lets it through.
    fn calls_back(&self, call: &Call<Payload>) -> bool {
        let parent = call.meta.as_ref().and_then(|m| m.parent_call_id);
        parent.is_some_and(|id| self.outbound.is_in_progress(id))
    }

    /// The checks of PROTOCOL §9, in order; the method's position in its cap's definition.
    /// The name is read once (an inline `Text` checks its UTF-8 on every read) and looked
    /// up once.
    #[allow(clippy::type_complexity)]
    fn dispatch(
        &self,
        call: &Call<Payload>,
    ) -> Result<(Arc<CapDef>, T::Imp, usize), (Option<Arc<CapDef>>, Status)> {
        let no_impl = || (None, Status::not_found("cap has no impl"));
        let (def, imp) = match call.target {
            CapId::BOOTSTRAP => return Err(no_impl()),
            CapId::RUNTIME => self.table.runtime().ok_or_else(no_impl)?,
            id => match self.table.get(id) {
                Some(e) => (&e.def, &e.imp),
                None => return Err((None, Status::not_found(format!("cap-id {id} not found")))),
            },
        };
        let known = || Some(Arc::clone(def));
        let Some((method, m)) = def.find(call.method.as_bytes()) else {
            let method = super::clipped(&call.method);
            let msg = format!("method \"{method}\" on cap \"{}\"", def.name());
            return Err((known(), Status::not_found(msg)));
        };
        if !imp.has_handler(m.name()) {
            let msg = format!("method \"{}\" has no handler", super::clipped(&call.method));
            return Err((known(), Status::not_found(msg)));
        }
        let max = self.cfg.limits.max_in_flight;
        if self.inbound.runs.len() >= max {
            return Err((known(), Status::in_flight_limit(max)));
        }
        let context = call.meta.as_ref().and_then(|m| m.context.as_deref());
        let size: usize = context.map_or(0, |c| c.iter().map(|(k, v)| k.len() + v.len()).sum());
        let max = self.cfg.limits.max_context_bytes;
        if size > max {
            let msg = format!(
                "meta.context of {size} bytes is over the limit of {max} bytes (max_context_bytes)"
            );
            return Err((known(), Status::invalid_argument(msg)));
        }
        Ok((Arc::clone(def), imp.clone(), method))
    }

    /// Starts the method at `position` in `def`'s methods (found by [`Session::dispatch`]).
    fn start_run(
        &mut self,
        call: Call<Payload>,
        def: Arc<CapDef>,
        imp: T::Imp,
        position: usize,
        now: Instant,
    ) {
        let Some(method) = def.methods().get(position) else {
            return;
        };
        let (kind, own_task) = (method.kind(), method.runs_on_own_task());
        let meta = call.meta.unwrap_or_default();
        let deadline = meta
            .deadline_ms
            .filter(|ms| ms.is_finite() && *ms > 0.0)
            .map(|ms| Duration::from_secs_f64(ms.min(1e12) / 1000.0));
        let run = self.inbound.new_run(call.id);
        match kind {
            MethodKind::Call => {
                // Only non-idempotent methods are signalled at their deadline (PROTOCOL §11).
                let signal_at = deadline
                    .filter(|_| !method.is_idempotent())
                    .and_then(|d| after(now, d));
                if let Some(at) = signal_at {
                    self.timers.arm(at, Timer::Inbound(call.id));
                }
                let active = ActiveCall {
                    run,
                    cap_id: call.target,
                    method: call.method.clone(),
                    returns: method.return_shape().clone(),
                    started: now,
                    drop_on_cancel: method.drops_on_cancel(),
                    deadline: signal_at,
                    after_reply: Vec::new(),
                    def: Arc::clone(&def),
                    target_revoked: false,
                };
                self.inbound.active.insert(call.id, active);
            }
            MethodKind::Stream => {
                let window = u64::from(method.stream_initial_credit());
                let stream = ServerStream::new(
                    run,
                    call.target,
                    Arc::clone(&def),
                    call.method.clone(),
                    window,
                );
                self.open_server_stream(call.id, stream);
            }
        }
        self.outputs.push_back(Output::Invoke(Invocation {
            run,
            call_id: call.id,
            cap_id: call.target,
            def,
            imp,
            method: position,
            args: call.args,
            stream: kind == MethodKind::Stream,
            own_task,
            deadline,
            context: meta.context,
        }));
    }

    /// A handler finished. Ignored when the run was aborted, or when its call was cancelled
    /// meanwhile: its exported caps were never allocated, so nothing leaks.
    #[inline]
    pub fn handler_done(
        &mut self,
        run: RunId,
        call_id: CallId,
        result: Result<Outcome<T::Imp>, Status>,
        now: Instant,
    ) {
        self.handler_done_paying(run, call_id, result, now, &mut |_| true);
    }

    /// [`handler_done`](Self::handler_done), its result queued only if `pay` agrees (a
    /// refused one is answered `resource_exhausted`, as one too long for the send room).
    pub fn handler_done_paying(
        &mut self,
        run: RunId,
        call_id: CallId,
        result: Result<Outcome<T::Imp>, Status>,
        now: Instant,
        pay: Pay<'_>,
    ) {
        if !self.inbound.end_run(run) {
            return;
        }
        let active = crate::hashing::take_if(&mut self.inbound.active, call_id, |a| a.run == run);
        let Some(active) = active else {
            return;
        };
        self.orphan_children(call_id);
        if let Some(at) = active.deadline {
            self.timers.disarm(at, Timer::Inbound(call_id));
        }
        let outcome = result.and_then(|r| self.export(r, &active.returns));
        let status = match outcome {
            Ok((value, allocated)) => {
                let frame = Frame::Result(ResultFrame {
                    id: call_id,
                    outcome: Ok(value),
                });
                let sent = self.send_answer(&frame, "result", pay);
                // Exports nobody will release: the result was not sent, or its client
                // already failed the call on `cap_revoked`.
                if sent.is_err() || active.target_revoked {
                    self.free_exports(&allocated);
                }
                sent.err()
            }
            Err(status) => Some(status),
        };
        let result = match status {
            None => Ok(()),
            Some(status) => {
                self.send_error(call_id, status.to_wire_from_handler(), false);
                Err(status.code)
            }
        };
        for f in active.after_reply {
            self.outputs.push_back(Output::Run(f));
        }
        // Only when observed: the clock arithmetic is a visible cost of a small call.
        self.emit(|| {
            Event::Call(CallEvent {
                cap_id: active.cap_id,
                cap_name: Some(active.def.name().to_owned()),
                method: active.method.to_string(),
                call_id,
                duration: Some(now.saturating_duration_since(active.started)),
                result,
            })
        });
    }

    /// Registers work to run once call `id`'s reply is queued. Dropped unrun when the call
    /// is not active with the handler's `run` (cancelled, finished, not a call, or the id
    /// reused by the peer for a call after it).
    pub fn after_reply(&mut self, id: CallId, run: RunId, f: T::Deferred) {
        if let Some(active) = self.inbound.active.get_mut(&id).filter(|a| a.run == run) {
            active.after_reply.push(f);
        }
    }

    /// Checks a handler's outcome against the method's declared shape and allocates the
    /// exported caps, all or nothing.
    fn export(
        &mut self,
        outcome: Outcome<T::Imp>,
        returns: &Returns,
    ) -> Result<(Outgoing, Vec<CapId>), Status> {
        let mismatch =
            |msg: &str| Status::failed_precondition(msg, reason::UNREGISTERED_CAP_RETURN);
        let exports: Vec<(Option<String>, Arc<CapDef>, T::Imp)> = match (outcome, returns) {
            (Outcome::Value(v), Returns::Value) => return Ok((v, Vec::new())),
            (Outcome::Cap(d, i), Returns::Cap(_)) => vec![(None, d, i)],
            (Outcome::CapArray(cs), Returns::CapArray(_)) => {
                cs.into_iter().map(|(d, i)| (None, d, i)).collect()
            }
            (Outcome::CapRecord(cs), Returns::CapRecord(_)) => {
                cs.into_iter().map(|(k, d, i)| (Some(k), d, i)).collect()
            }
            _ => return Err(mismatch("expected ctx.exportCap return for cap method")),
        };
        if let Some(expected) = returns.cap() {
            if exports.iter().any(|(_, d, _)| d.name() != expected.name()) {
                return Err(mismatch("exported cap type mismatch with method returns"));
            }
        }
        // A record keeps one value a key: a cap under a repeated key would be exported and
        // never sent, held for the connection's life with no one to release it.
        if let Some(key) = repeated_key(&exports) {
            let key = super::clipped(key);
            return Err(mismatch(&format!(
                "the record of caps has the key \"{key}\" twice"
            )));
        }
        if !self.table.has_room(exports.len()) {
            let limit = self.cfg.limits.max_caps;
            return Err(Status::resource_exhausted(
                format!("cap-table limit {limit}"),
                reason::MAX_CAPS_PER_CONNECTION,
            ));
        }
        let mut ids = Vec::with_capacity(exports.len());
        let mut keyed = Vec::with_capacity(exports.len());
        for (key, def, imp) in exports {
            match self.table.allocate(def, imp) {
                Ok(id) => {
                    ids.push(id);
                    keyed.push((key, Value::CapRef(id)));
                }
                Err(status) => {
                    self.free_exports(&ids);
                    return Err(status);
                }
            }
        }
        let value = match returns {
            Returns::Cap(_) => keyed.pop().map(|(_, v)| v).unwrap_or_default(),
            Returns::CapArray(_) => Value::Array(keyed.into_iter().map(|(_, v)| v).collect()),
            _ => Value::Record(
                keyed
                    .into_iter()
                    .map(|(k, v)| (k.unwrap_or_default(), v))
                    .collect(),
            ),
        };
        Ok((Outgoing::value(value), ids))
    }

    fn free_exports(&mut self, ids: &[CapId]) {
        for id in ids {
            self.table.remove(*id);
        }
    }

    pub(super) fn on_cancel(&mut self, mut cancel: Cancel, now: Instant) {
        cancel.reason = cancel.reason.map(super::clip_peer_text);
        if self.cancel_server_stream(cancel.id) {
            return self.cancel_children(cancel.id, cancel.reason);
        }
        if let Some(active) = crate::hashing::take(&mut self.inbound.active, &cancel.id) {
            if let Some(at) = active.deadline {
                self.timers.disarm(at, Timer::Inbound(cancel.id));
            }
            if active.drop_on_cancel {
                self.inbound.end_run(active.run);
                self.outputs.push_back(Output::Abort(active.run));
            } else {
                // Keeps running, signalled; its result is suppressed; it still counts.
                self.outputs.push_back(Output::Signal(active.run));
            }
            let status = WireStatus {
                code: Code::Cancelled.as_str().to_owned(),
                message: cancel.reason.clone(),
                details: None,
                retry: None,
                full: false,
            };
            self.send_error(cancel.id, status, false);
            let id = cancel.id;
            self.emit(|| {
                Event::Call(CallEvent {
                    cap_id: active.cap_id,
                    cap_name: Some(active.def.name().to_owned()),
                    method: active.method.to_string(),
                    call_id: id,
                    duration: Some(now.saturating_duration_since(active.started)),
                    result: Err(Code::Cancelled),
                })
            });
        }
        self.cancel_children(cancel.id, cancel.reason);
    }

    /// The deadline of an inbound call passed: signal its handler (it keeps running).
    pub(super) fn inbound_deadline(&mut self, id: CallId) {
        if let Some(active) = self.inbound.active.get_mut(&id) {
            active.deadline = None;
            let run = active.run;
            self.outputs.push_back(Output::Signal(run));
        }
    }

    pub(super) fn on_drop(&mut self, d: DropFrame) {
        for entry in d.caps {
            if entry.id.is_reserved() || entry.delta == 0 {
                continue;
            }
            if let Some(freed) = self.table.release(entry.id, entry.delta) {
                // Only if it is its name's bootstrap instance.
                self.registry.forget_instance(freed.def.name(), entry.id);
            }
        }
    }

    /// Sends a peer-generated error (`sendError`: `{code, message[, details]}`).
    pub(super) fn reply_err(&mut self, id: CallId, status: &Status) {
        self.send_error(id, status.to_wire(), false);
    }

    /// Sends a `result` error (or, for a server stream, a `stream error`) within the peer's
    /// `maxBytes`. Its status may be long (a handler's message or details, a name the peer
    /// chose echoed back): one too large is replaced by `resource_exhausted
    /// {reason:"max_frame_bytes"}`, as a result too large is (PROTOCOL §13.6). The
    /// replacement is small and sent as is.
    pub(super) fn send_error(&mut self, id: CallId, error: WireStatus, stream: bool) {
        let frame = |error| {
            if stream {
                let event = StreamEvent::Error(error);
                Frame::Stream(StreamFrame { id, event })
            } else {
                let outcome = Err(error);
                Frame::Result(ResultFrame { id, outcome })
            }
        };
        if let Err(e) = self.send_bounded(&frame(error)) {
            let status = Status::resource_exhausted(
                format!(
                    "error of {} bytes exceeds the peer's maxBytes {}",
                    e.size, e.max
                ),
                reason::MAX_FRAME_BYTES,
            );
            self.send(&frame(status.to_wire()));
        }
    }

    /// At shutdown: abort every run, forget calls, streams and policy checks. Each call and
    /// server stream still in progress is reported (PROTOCOL §15) as the close ends it,
    /// cancelled; a bootstrap waiting for its policy is not (no result of §15 fits it).
    pub(super) fn abort_inbound(&mut self) {
        let mut runs: Vec<RunId> = self.inbound.runs.drain().map(|(r, _)| r).collect();
        runs.sort();
        for run in runs {
            self.outputs.push_back(Output::Abort(run));
        }
        if self.observed {
            self.report_aborted();
        }
        self.inbound.active.clear();
        self.inbound.streams.clear();
        self.inbound.policy.clear();
    }
}

impl<T: Types> Session<T> {
    /// One event for each call and server stream the shutdown ends, in call-id order: a
    /// call `cancelled` (no duration: the session has no clock at shutdown), a stream
    /// `cancel` with the values it sent. Without them an observer never learnt how these
    /// ended, and one pairing each stream's `start` with its end kept it open forever.
    #[cold]
    fn report_aborted(&mut self) {
        let calls = self.inbound.active.iter().map(|(id, a)| {
            let event = Event::Call(CallEvent {
                cap_id: a.cap_id,
                cap_name: Some(a.def.name().to_owned()),
                method: a.method.to_string(),
                call_id: *id,
                duration: None,
                result: Err(Code::Cancelled),
            });
            (*id, event)
        });
        let streams =
            (self.inbound.streams.iter()).map(|(id, s)| (*id, s.event(*id, StreamPhase::Cancel)));
        let mut ended: Vec<(CallId, Event)> = calls.chain(streams).collect();
        ended.sort_by_key(|(id, _)| *id);
        (self.outputs).extend(ended.into_iter().map(|(_, e)| Output::Event(e)));
    }
}

/// The first key a record of caps repeats, if any (`None` for one cap or an array).
fn repeated_key<D, I>(exports: &[(Option<String>, D, I)]) -> Option<&str> {
    let mut seen = crate::hashing::Set::default();
    (exports.iter())
        .filter_map(|(key, _, _)| key.as_deref())
        .find(|key| !seen.insert(*key))
}
