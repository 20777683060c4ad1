//! The server side of a session: dispatching calls, finishing handlers, cancels from the
//! client, drops.

use std::sync::Arc;
use std::time::Duration;

use bunite_wire::{Call, CallId, Cancel, CapId, DropFrame, Frame, ResultFrame, Value, WireStatus};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::bootstrap::BOOTSTRAP_METHOD;
use super::streams::ServerStream;
use super::{Action, ActiveCall, Deferred, Invocation, Session};
use crate::events::{CallEvent, Event};
use crate::handler::{CapImpl, ExportedCap, Returned};
use crate::schema::{CapDef, MethodKind, Returns};
use crate::status::{reason, Code, Status};

impl Session {
    pub(super) fn on_call(&mut self, call: Call, now: Instant) {
        if call.target == CapId::BOOTSTRAP && call.method == BOOTSTRAP_METHOD {
            return self.on_bootstrap(call);
        }
        match self.dispatch(&call) {
            Ok((def, imp)) => self.start_handler(call, def, imp, now),
            Err((cap_name, status)) => {
                self.emit_call(
                    call.target,
                    cap_name,
                    call.method.into(),
                    call.id,
                    None,
                    Err(status.code),
                );
                self.reply_err(call.id, &status);
            }
        }
    }

    /// The checks of PROTOCOL §9, in order.
    #[allow(clippy::type_complexity)]
    fn dispatch(
        &self,
        call: &Call,
    ) -> Result<(Arc<CapDef>, Arc<dyn CapImpl>), (Option<String>, Status)> {
        let no_impl = || (None, Status::not_found("cap has no impl"));
        let (def, imp) = match call.target {
            CapId::BOOTSTRAP => return Err(no_impl()),
            CapId::RUNTIME => self.table.runtime().ok_or_else(no_impl)?,
            id => match self.table.get(id) {
                Some(e) => (&e.def, &e.imp),
                None => return Err((None, Status::not_found(format!("cap-id {id} not found")))),
            },
        };
        let name = || Some(def.name().to_owned());
        if def.method(&call.method).is_none() {
            let msg = format!("method \"{}\" on cap \"{}\"", call.method, def.name());
            return Err((name(), Status::not_found(msg)));
        }
        if !imp.has_handler(&call.method) {
            let msg = format!("method \"{}\" has no handler", call.method);
            return Err((name(), Status::not_found(msg)));
        }
        let max = self.cfg.limits.max_in_flight;
        if self.active.len() + self.server_streams.len() >= max {
            let status = Status::resource_exhausted(
                format!("in-flight calls limit {max}"),
                reason::MAX_CONCURRENT_CALLS,
            );
            return Err((name(), status));
        }
        Ok((Arc::clone(def), Arc::clone(imp)))
    }

    fn start_handler(&mut self, call: Call, def: Arc<CapDef>, imp: Arc<dyn CapImpl>, now: Instant) {
        let Some(method) = def.method(&call.method) else {
            return;
        };
        let meta = call.meta.unwrap_or_default();
        let deadline = meta
            .deadline_ms
            .filter(|ms| ms.is_finite() && *ms > 0.0)
            .map(|ms| Duration::from_secs_f64(ms.min(1e12) / 1000.0));
        let (signal, abort) = (CancellationToken::new(), CancellationToken::new());
        match method.kind() {
            MethodKind::Call => {
                let active = ActiveCall {
                    cap_id: call.target,
                    cap_name: def.name().to_owned(),
                    method: call.method.to_string(),
                    started: now,
                    signal: signal.clone(),
                    abort: abort.clone(),
                    returns: method.return_shape().clone(),
                    drop_on_cancel: method.drops_on_cancel(),
                    after_reply: Vec::new(),
                };
                self.active.insert(call.id, active);
            }
            MethodKind::Stream => {
                let stream = ServerStream {
                    cap_id: call.target,
                    cap_name: def.name().to_owned(),
                    method: call.method.to_string(),
                    window: u64::from(method.stream_initial_credit()),
                    count: 0,
                    signal: signal.clone(),
                    abort: abort.clone(),
                    wake: Arc::new(Notify::new()),
                };
                self.open_server_stream(call.id, stream);
            }
        }
        self.fx.actions.push(Action::Invoke(Invocation {
            call_id: call.id,
            cap_id: call.target,
            imp,
            kind: method.kind(),
            signal_after: deadline
                .filter(|_| !method.is_idempotent() && method.kind() == MethodKind::Call),
            deadline,
            method: call.method.into(),
            args: call.args,
            signal,
            abort,
            context: meta.context.unwrap_or_default(),
        }));
    }

    /// A handler finished. Ignored when the call was cancelled meanwhile: its exported caps
    /// were never allocated, so nothing leaks.
    pub fn finish_call(&mut self, id: CallId, result: Result<Returned, Status>, now: Instant) {
        let Some(active) = self.active.remove(&id) else {
            return;
        };
        let duration = Some(now.saturating_duration_since(active.started));
        let outcome = result.and_then(|r| self.encode_returned(r, &active.returns));
        let status = match outcome {
            Ok((value, allocated)) => {
                let frame = Frame::Result(ResultFrame {
                    id,
                    outcome: Ok(value),
                });
                match self.send_bounded(&frame) {
                    Ok(()) => None,
                    Err(too_large) => {
                        self.free_exports(&allocated);
                        Some(Status::resource_exhausted(
                            format!(
                                "result of {} bytes exceeds the peer's maxBytes {}",
                                too_large.size, too_large.max
                            ),
                            reason::MAX_FRAME_BYTES,
                        ))
                    }
                }
            }
            Err(status) => Some(status),
        };
        let result = match status {
            None => Ok(()),
            Some(status) => {
                let wire = status.to_wire_from_handler();
                self.send(&Frame::Result(ResultFrame {
                    id,
                    outcome: Err(wire),
                }));
                Err(status.code)
            }
        };
        let after = active.after_reply.into_iter().map(Action::Run);
        self.fx.actions.extend(after);
        self.emit_call(
            active.cap_id,
            Some(active.cap_name),
            active.method,
            id,
            duration,
            result,
        );
    }

    /// Registers work to run once call `id`'s result is queued. Dropped unrun when the call
    /// is not active (cancelled, finished, or not a call).
    pub fn after_reply(&mut self, id: CallId, f: Deferred) {
        match self.active.get_mut(&id) {
            Some(active) => active.after_reply.push(f),
            None => self.fx.discarded.push(f),
        }
    }

    /// Checks a handler's return against the method's declared shape and allocates the
    /// exported caps (all or nothing).
    fn encode_returned(
        &mut self,
        r: Returned,
        returns: &Returns,
    ) -> Result<(Value, Vec<CapId>), Status> {
        let expected = returns.cap();
        let mismatch =
            |msg: &str| Status::failed_precondition(msg, reason::UNREGISTERED_CAP_RETURN);
        let exports: Vec<(Option<String>, ExportedCap)> = match (r, returns) {
            (Returned::Value(v), Returns::Value) => return Ok((v, Vec::new())),
            (Returned::Cap(c), Returns::Cap(_)) => vec![(None, c)],
            (Returned::CapArray(cs), Returns::CapArray(_)) => {
                cs.into_iter().map(|c| (None, c)).collect()
            }
            (Returned::CapRecord(cs), Returns::CapRecord(_)) => {
                cs.into_iter().map(|(k, c)| (Some(k), c)).collect()
            }
            (other, _) => {
                self.bury(other);
                return Err(mismatch("expected ctx.exportCap return for cap method"));
            }
        };
        if let Some(expected) = expected {
            if exports.iter().any(|(_, c)| c.def.name() != expected.name()) {
                self.fx
                    .graveyard
                    .extend(exports.into_iter().map(|(_, c)| c.imp));
                return Err(mismatch("exported cap type mismatch with method returns"));
            }
        }
        // Checked up front so a batch is all or nothing and no implementation is dropped
        // under the lock.
        if !self.table.has_room(exports.len()) {
            let limit = self.cfg.limits.max_caps;
            self.fx
                .graveyard
                .extend(exports.into_iter().map(|(_, c)| c.imp));
            return Err(Status::resource_exhausted(
                format!("cap-table limit {limit}"),
                reason::MAX_CAPS_PER_CONNECTION,
            ));
        }
        let mut ids = Vec::with_capacity(exports.len());
        let mut keyed = Vec::with_capacity(exports.len());
        for (key, cap) in exports {
            let imp = Arc::clone(&cap.imp);
            match self.table.allocate(cap.def, cap.imp, None) {
                Ok(id) => {
                    ids.push(id);
                    keyed.push((key, Value::CapRef(id)));
                }
                Err(status) => {
                    self.fx.graveyard.push(imp);
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
        Ok((value, ids))
    }

    fn bury(&mut self, r: Returned) {
        let caps: Vec<ExportedCap> = match r {
            Returned::Value(_) => Vec::new(),
            Returned::Cap(c) => vec![c],
            Returned::CapArray(cs) => cs,
            Returned::CapRecord(cs) => cs.into_iter().map(|(_, c)| c).collect(),
        };
        self.fx.graveyard.extend(caps.into_iter().map(|c| c.imp));
    }

    fn free_exports(&mut self, ids: &[CapId]) {
        for id in ids {
            if let Some(e) = self.table.remove(*id) {
                self.fx.graveyard.push(e.imp);
            }
        }
    }

    pub(super) fn on_cancel(&mut self, cancel: Cancel, now: Instant) {
        if self.cancel_server_stream(cancel.id) {
            return self.cancel_children(cancel.id, cancel.reason);
        }
        if let Some(active) = self.active.remove(&cancel.id) {
            self.fx.discarded.extend(active.after_reply);
            active.signal.cancel();
            if active.drop_on_cancel {
                active.abort.cancel();
            }
            let status = WireStatus {
                code: Code::Cancelled.as_str().to_owned(),
                message: cancel.reason.clone(),
                details: None,
                retry: None,
                full: false,
            };
            self.send(&Frame::Result(ResultFrame {
                id: cancel.id,
                outcome: Err(status),
            }));
            let duration = Some(now.saturating_duration_since(active.started));
            self.emit_call(
                active.cap_id,
                Some(active.cap_name),
                active.method,
                cancel.id,
                duration,
                Err(Code::Cancelled),
            );
        }
        self.cancel_children(cancel.id, cancel.reason);
    }

    pub(super) fn on_drop(&mut self, d: DropFrame) {
        for entry in d.caps {
            if entry.id.is_reserved() || entry.delta == 0 {
                continue;
            }
            if let Some(freed) = self.table.release(entry.id, u64::from(entry.delta)) {
                if let Some(root) = &freed.root {
                    self.registry.forget_instance(root, entry.id);
                }
                self.fx.graveyard.push(freed.imp);
            }
        }
    }

    /// Sends a peer-generated error (`sendError`: `{code, message[, details]}`).
    pub(super) fn reply_err(&mut self, id: CallId, status: &Status) {
        self.send(&Frame::Result(ResultFrame {
            id,
            outcome: Err(status.to_wire()),
        }));
    }

    fn emit_call(
        &mut self,
        cap_id: CapId,
        cap_name: Option<String>,
        method: String,
        call_id: CallId,
        duration: Option<Duration>,
        result: Result<(), Code>,
    ) {
        self.emit(Event::Call(CallEvent {
            cap_id,
            cap_name,
            method,
            call_id,
            duration,
            result,
        }));
    }
}
