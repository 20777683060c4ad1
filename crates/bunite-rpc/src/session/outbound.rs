//! The client side of a session: pending calls, results, cancels we send, revocation and
//! reference releases.

use std::collections::HashSet;

use bunite_wire::{
    Call, CallId, CallMeta, Cancel, CapId, CapRevoked, DropEntry, Frame, ResultFrame, Value,
};
use tokio::sync::oneshot;

use super::Session;
use crate::status::{reason, Code, Status};

/// Where a call's outcome goes.
pub(crate) type Reply = oneshot::Sender<Result<Value, Status>>;

pub(crate) struct Pending {
    /// `None` once the caller gave up but the result may still carry caps to release.
    reply: Option<Reply>,
    cap_id: CapId,
    parent: Option<CallId>,
    /// Bootstraps and cap-returning methods: a result nobody takes must release its caps.
    returns_caps: bool,
}

impl Pending {
    pub(super) fn fail(self, status: Status) {
        if let Some(reply) = self.reply {
            let _ = reply.send(Err(status));
        }
    }
}

/// What a client call asks for.
pub(crate) struct CallRequest {
    pub cap_id: CapId,
    pub method: String,
    pub args: Value,
    pub meta: Option<CallMeta>,
    pub returns_caps: bool,
}

impl Session {
    /// Sends a call; fails locally (sending nothing) after close, on a revoked cap, at the
    /// in-flight limit, or when the frame exceeds the peer's `maxBytes` (PROTOCOL §9, §13.6).
    pub fn start_call(&mut self, req: CallRequest, reply: Reply) -> Result<CallId, Status> {
        let (cap_id, returns_caps) = (req.cap_id, req.returns_caps);
        let parent = req.meta.as_ref().and_then(|m| m.parent_call_id);
        let id = self.send_call(req)?;
        let pending = Pending {
            reply: Some(reply),
            cap_id,
            parent,
            returns_caps,
        };
        self.pending.insert(id, pending);
        Ok(id)
    }

    /// The checks and the frame shared by calls and stream opens.
    pub(super) fn send_call(&mut self, req: CallRequest) -> Result<CallId, Status> {
        if self.closed.is_some() {
            return Err(Status::connection_closed());
        }
        if self.revoked.contains(req.cap_id) {
            return Err(Status::revoked());
        }
        let max = self.cfg.limits.max_in_flight;
        if self.pending.len() + self.client_streams.len() >= max {
            return Err(Status::resource_exhausted(
                format!("in-flight calls limit {max}"),
                reason::MAX_CONCURRENT_CALLS,
            ));
        }
        let id = CallId(self.next_call_id);
        self.next_call_id += 1;
        let frame = Frame::Call(Call {
            id,
            target: req.cap_id,
            method: req.method.into(),
            args: req.args,
            meta: req.meta,
        });
        self.send_bounded(&frame).map_err(|e| {
            Status::resource_exhausted(
                format!(
                    "call of {} bytes exceeds the peer's maxBytes {}",
                    e.size, e.max
                ),
                reason::MAX_FRAME_BYTES,
            )
        })?;
        Ok(id)
    }

    pub(super) fn on_result(&mut self, r: ResultFrame) {
        let outcome = r.outcome.map_err(Status::from_wire);
        let Some(p) = self.pending.remove(&r.id) else {
            self.result_for_stream(r.id, outcome);
            return;
        };
        let unclaimed = match p.reply {
            Some(reply) => reply.send(outcome).err().and_then(Result::ok),
            None => outcome.ok(),
        };
        if let (true, Some(value)) = (p.returns_caps, unclaimed) {
            self.release_all(&value);
        }
    }

    /// The caller gave up on a call (dropped its future, or its deadline passed): tell the
    /// server. A result that may carry caps is still awaited so they can be released.
    pub fn cancel_call(&mut self, id: CallId, why: &str, status: Option<Status>) {
        if self.closed.is_some() {
            return;
        }
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        if let (Some(reply), Some(status)) = (p.reply.take(), status) {
            let _ = reply.send(Err(status));
        }
        if !p.returns_caps {
            self.pending.remove(&id);
        }
        let cancel = Cancel {
            id,
            reason: Some(why.to_owned()),
        };
        self.send(&Frame::Cancel(cancel));
    }

    /// Cancels the calls we made from inside the handler of call `parent` (PROTOCOL §11).
    pub(super) fn cancel_children(&mut self, parent: CallId, why: Option<String>) {
        let children: Vec<CallId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.parent == Some(parent))
            .map(|(id, _)| *id)
            .collect();
        for id in children {
            let status = Status::new(Code::Cancelled, why.clone().unwrap_or_default());
            if let Some(p) = self.pending.get_mut(&id) {
                if let Some(reply) = p.reply.take() {
                    let _ = reply.send(Err(status));
                }
                if !p.returns_caps {
                    self.pending.remove(&id);
                }
            }
            self.send(&Frame::Cancel(Cancel {
                id,
                reason: why.clone(),
            }));
        }
    }

    pub(super) fn on_revoked(&mut self, r: CapRevoked) {
        let ids: HashSet<CapId> = r.cap_ids.into_iter().collect();
        for id in &ids {
            self.revoked.insert(*id);
        }
        let failed: Vec<CallId> = self
            .pending
            .iter()
            .filter(|(_, p)| ids.contains(&p.cap_id))
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            if let Some(p) = self.pending.remove(&id) {
                p.fail(Status::revoked());
            }
        }
        let streams: Vec<CallId> = self
            .client_streams
            .iter()
            .filter(|(_, s)| ids.contains(&s.cap_id))
            .map(|(id, _)| *id)
            .collect();
        for id in streams {
            self.fail_client_stream(id, Status::revoked());
        }
    }

    /// Releases one reference we received (PROTOCOL §7). Batched: releases made close
    /// together share one `drop` frame. Nothing is sent for ids 0/1 or after close.
    pub fn release(&mut self, id: CapId) {
        if id.is_reserved() || self.closed.is_some() {
            return;
        }
        match self
            .drop_index
            .get(&id)
            .and_then(|&i| self.drops.get_mut(i))
        {
            Some(entry) => entry.delta = entry.delta.saturating_add(1),
            None => {
                self.drop_index.insert(id, self.drops.len());
                self.drops.push(DropEntry { id, delta: 1 });
            }
        }
        self.fx.wrote = true;
    }

    fn release_all(&mut self, value: &Value) {
        match value {
            Value::CapRef(id) => self.release(*id),
            Value::Array(items) => items.iter().for_each(|v| self.release_all(v)),
            Value::Record(r) => r.0.iter().for_each(|(_, v)| self.release_all(v)),
            _ => {}
        }
    }
}
