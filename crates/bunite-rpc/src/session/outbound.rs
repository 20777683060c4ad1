//! The client side of a session: our calls and stream opens, their results, deadlines and
//! cancels, the peer's revocations, and releasing the references we received (PROTOCOL §7,
//! §9–12).

use bytes::BytesMut;

use crate::hashing::{Map, Set};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bunite_wire::{
    AsOutgoing, Call, CallId, CallMeta, Cancel, CapId, CapRevoked, DropEntry, DropFrame,
    EncodeError, Frame, Outgoing, Payload, ResultFrame, TableSnapshot, Text,
};

use super::output::{Output, RunId};
use super::streams::ClientStreamState;
use super::timers::{after, Timer, DEADLINE_GRACE};
use super::{CallsOnCap, ChildIndex, RevokedSet, Session, Types, DROP_FRAME_ENTRIES};
use crate::error::{Error, LocalError};
use crate::status::{reason, Code, Status};

/// What an outbound call's result holds, so a result nobody takes can release its caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// A plain value.
    Value,
    /// CapRefs (bootstraps and cap-returning methods).
    Caps,
}

/// The handler a call is made from: the peer's call it serves, and its run. A peer may use
/// a call id again once its call is finished, so the call is the handler's child only
/// while that run still serves it (`Session::send_call`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parent {
    pub call: CallId,
    pub run: RunId,
}

/// A call's `args` as a request holds them: an [`Outgoing`], or a
/// typed client's params value itself.
pub(crate) type Args = dyn AsOutgoing + Send;

/// One outbound call or stream open, as a handle asks for it. A handle builds it as a
/// `CallRequest<A>` of its own args type and boxes it as the unsized `CallRequest` (its
/// `args` being [`Args`]), so that a typed client's params live in the request's one
/// allocation (an [`Outgoing`] would box them on their own).
pub(crate) struct CallRequest<A: ?Sized = Args> {
    /// Taken by the handle from its connection's counter.
    pub id: CallId,
    pub cap_id: CapId,
    pub method: Text,
    /// The handler it is made inside of, serving a call of the peer (`meta.parentCallId`).
    pub parent: Option<Parent>,
    /// A relative deadline (`meta.deadlineMs`; the call fails at deadline + 500 ms).
    pub deadline: Option<Duration>,
    /// The `meta.context` map.
    pub context: Vec<(String, String)>,
    pub expect: Expect,
    /// Serialized straight into the call frame when it is a typed value. Last, as the one
    /// field of unsized type.
    pub args: A,
}

impl<A: ?Sized> std::fmt::Debug for CallRequest<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRequest")
            .field("id", &self.id)
            .field("cap_id", &self.cap_id)
            .field("method", &self.method)
            .field("parent", &self.parent)
            .field("deadline", &self.deadline)
            .field("expect", &self.expect)
            .finish_non_exhaustive()
    }
}

impl<A: ?Sized> CallRequest<A> {
    /// `meta`, or `None` when it would be empty.
    fn meta(&mut self) -> Option<CallMeta> {
        if self.parent.is_none() && self.deadline.is_none() && self.context.is_empty() {
            return None;
        }
        Some(CallMeta {
            parent_call_id: self.parent.map(|p| p.call),
            // deadlineMs ≤ 0 means none on the wire, so an expired deadline goes out as 1 ms.
            deadline_ms: self
                .deadline
                .map(|d| (d.as_secs_f64() * 1000.0).ceil().max(1.0)),
            context: (!self.context.is_empty()).then(|| std::mem::take(&mut self.context)),
        })
    }
}

pub(crate) struct Pending<T: Types> {
    /// `None` once the caller gave up but the result may still carry caps to release.
    reply: Option<T::Reply>,
    cap_id: CapId,
    parent: Option<CallId>,
    expect: Expect,
    /// When it fails `deadline_exceeded`.
    deadline: Option<Instant>,
}

/// A bootstrap waiting for the peer's hello (PROTOCOL §6).
pub(super) struct Parked<T: Types> {
    /// A bootstrap's args are a `Value`.
    pub req: CallRequest<Outgoing>,
    pub reply: T::Reply,
}

pub(crate) struct Outbound<T: Types> {
    pending: Map<CallId, Pending<T>>,
    /// When `pending` last gave room back, and whether a shrink is put off (a client's
    /// calls come and go in waves: see `hashing::take_spaced`).
    pending_spacing: crate::hashing::Spacing,
    pub(super) streams: Map<CallId, ClientStreamState<T>>,
    pub(super) parked: Vec<Parked<T>>,
    /// Client streams with credit to return (see `streams`).
    pub(super) credit_due: Vec<CallId>,
    pub(super) children: ChildIndex,
    /// How many of `pending` and `streams` target each cap.
    pub(super) on_cap: CallsOnCap,
    revoked: RevokedSet,
    drops: Vec<DropEntry>,
    /// Where each id sits in `drops`, so summing releases stays O(1) however many CapRefs a
    /// peer's result carries.
    drop_index: Map<CapId, usize>,
    /// Bytes on the wire of the client streams' values delivered and not yet returned as
    /// credit (the sum of their `sizes`), bounded by `Limits::max_buffered_stream_bytes`.
    pub(super) buffered: usize,
    /// The record table the last value delivered to a client stream holds: the next value
    /// is charged for the definitions its table adds to it (see `client_stream_push`).
    /// Let go when no client stream is left.
    pub(super) last_table: Option<TableSnapshot>,
    /// Client streams that ended with values their consumers have not read yet (and the
    /// peer's error, if one ended with it): what each keeps, oldest first, counted in
    /// `buffered` until the consumer reads them or lets the stream go.
    pub(super) ended: Map<CallId, VecDeque<usize>>,
}

/// How long after a shrink of the pending calls' table was put off it runs (if the table
/// is still too roomy then): a second, so waves of calls shrink it at most once a second,
/// and a burst's room is given back within a second of its end.
pub(crate) const SHED_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

impl<T: Types> Outbound<T> {
    /// Whether a shrink of the pending table waits for a timer not armed yet.
    #[inline]
    pub fn shed_unarmed(&self) -> bool {
        self.pending_spacing.unarmed()
    }

    /// The timer for the put-off shrink is armed.
    pub fn shed_armed(&mut self) {
        self.pending_spacing.armed = true;
    }

    /// The session closed: its timers are gone, and nothing waits for one.
    pub fn shed_disarmed(&mut self) {
        self.pending_spacing.reset();
    }

    /// The put-off shrink's timer fired.
    pub fn shed_put_off(&mut self) {
        crate::hashing::shed_put_off(&mut self.pending, &mut self.pending_spacing);
    }

    /// Whether the put-off shrink's timer is armed (invariants, which only tests build).
    #[cfg(any(test, feature = "test-util"))]
    pub(super) fn shed_timer_armed(&self) -> bool {
        self.pending_spacing.armed
    }

    pub fn new(max_revoked: usize) -> Self {
        Outbound {
            pending: Map::default(),
            pending_spacing: crate::hashing::Spacing::default(),
            streams: Map::default(),
            parked: Vec::new(),
            credit_due: Vec::new(),
            children: ChildIndex::default(),
            on_cap: CallsOnCap::default(),
            revoked: RevokedSet::new(max_revoked),
            drops: Vec::new(),
            drop_index: Map::default(),
            buffered: 0,
            last_table: None,
            ended: Map::default(),
        }
    }

    #[cfg(test)]
    pub(super) fn children_len(&self) -> usize {
        self.children.len()
    }

    #[cfg(test)]
    pub(super) fn pending_room(&self) -> usize {
        crate::hashing::room(&self.pending)
    }

    /// Every table of the client side: its name, entries and room (see
    /// [`Session::footprint`]).
    #[cfg(test)]
    pub(super) fn footprint(&self, out: &mut Vec<(&'static str, usize, usize)>) {
        use crate::hashing::room;
        let children = &self.children.by_parent;
        let on_cap = self.on_cap.by_cap.as_ref();
        out.extend([
            ("pending", self.pending.len(), room(&self.pending)),
            ("client streams", self.streams.len(), room(&self.streams)),
            ("parked", self.parked.len(), self.parked.capacity()),
            (
                "credit due",
                self.credit_due.len(),
                self.credit_due.capacity(),
            ),
            ("children", children.len(), room(children)),
            (
                "calls on cap",
                on_cap.map_or(0, |m| m.len()),
                on_cap.map_or(0, room),
            ),
            ("drops", self.drops.len(), self.drops.capacity()),
            ("drop index", self.drop_index.len(), room(&self.drop_index)),
            ("ended streams", self.ended.len(), room(&self.ended)),
        ]);
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len() + self.parked.len()
    }

    pub fn streams_len(&self) -> usize {
        self.streams.len()
    }

    /// Whether call `id` is pending and its caller still waits for the reply.
    #[cfg(feature = "test-util")]
    pub fn awaits_reply(&self, id: CallId) -> bool {
        self.pending.get(&id).is_some_and(|p| p.reply.is_some())
    }

    /// Whether `id` is a call or client stream of ours still waiting for the peer.
    pub fn is_in_progress(&self, id: CallId) -> bool {
        self.pending.contains_key(&id) || self.streams.contains_key(&id)
    }

    /// Everything that counts toward our in-flight limit.
    pub fn in_flight(&self) -> usize {
        self.pending.len() + self.streams.len() + self.parked.len()
    }

    pub fn pending_drop_bytes(&self) -> usize {
        // An entry is a few bytes on the wire; counted so backpressure sees releases too.
        self.drops.len() * 8
    }

    /// Whether no credit or release waits to be sent (checked before every frame).
    #[inline]
    pub fn nothing_batched(&self) -> bool {
        self.drops.is_empty() && self.credit_due.is_empty()
    }

    /// The batched releases as frames (at most 512 entries each).
    pub fn take_drops(&mut self) -> Option<Vec<DropFrame>> {
        if self.drops.is_empty() {
            return None;
        }
        self.drop_index.clear();
        crate::hashing::shed(&mut self.drop_index);
        let drops = std::mem::take(&mut self.drops);
        Some(
            drops
                .chunks(DROP_FRAME_ENTRIES)
                .map(|caps| DropFrame {
                    caps: caps.to_vec(),
                })
                .collect(),
        )
    }

    /// The child index and the drop index agree with what they index; the in-flight limit
    /// holds; a call's deadline timer is armed exactly while it waits for it; client
    /// streams hold no more than their buffer; the revoked set keeps its bound.
    #[cfg(any(test, feature = "test-util"))]
    pub fn check_invariants(&self, timers: &super::timers::Timers, limits: &crate::limits::Limits) {
        let with_parent = self.pending.values().filter(|p| p.parent.is_some()).count()
            + self.streams.values().filter(|s| s.parent.is_some()).count();
        let targets = self.pending.values().map(|p| p.cap_id);
        let on_cap = CallsOnCap::count(targets.chain(self.streams.values().map(|s| s.cap_id)));
        assert!(
            self.on_cap
                .by_cap
                .as_ref()
                .is_none_or(|kept| *kept == on_cap),
            "calls-on-cap count out of step"
        );
        assert_eq!(self.children.len(), with_parent, "child index out of step");
        for (parent, children) in &self.children.by_parent {
            for child in children {
                let p = (self.pending.get(child).map(|p| p.parent))
                    .or_else(|| self.streams.get(child).map(|s| s.parent));
                assert_eq!(
                    p,
                    Some(Some(*parent)),
                    "child {child} not pending under {parent}"
                );
            }
        }
        assert_eq!(
            self.drops.len(),
            self.drop_index.len(),
            "drop index out of step"
        );
        for (id, &i) in &self.drop_index {
            let entry = self.drops.get(i).map(|e| (e.id, e.delta > 0));
            assert_eq!(entry, Some((*id, true)), "drop index points elsewhere");
            assert!(!id.is_reserved(), "a drop for a reserved id");
        }
        assert!(
            self.in_flight() <= limits.max_in_flight,
            "over the in-flight limit"
        );
        let live = self.streams.values().map(|s| &s.sizes);
        let held: usize = live.chain(self.ended.values()).flatten().sum();
        for id in self.ended.keys() {
            assert!(!self.streams.contains_key(id), "{id} both open and ended");
        }
        assert_eq!(self.buffered, held, "buffered stream bytes out of step");
        assert!(
            self.buffered <= limits.max_buffered_stream_bytes,
            "over the buffered stream bytes"
        );
        for (id, p) in &self.pending {
            assert!(
                !self.streams.contains_key(id),
                "{id} both a call and a stream"
            );
            if let Some(at) = p.deadline {
                assert!(
                    timers.contains(at, Timer::Outbound(*id)),
                    "call {id}: no timer"
                );
            }
        }
        let armed = timers.count(|t| matches!(t, Timer::Outbound(_)));
        let waiting = self
            .pending
            .values()
            .filter(|p| p.deadline.is_some())
            .count();
        assert_eq!(
            armed, waiting,
            "outbound deadline timers for finished calls"
        );
        for (id, s) in &self.streams {
            assert!(
                s.sizes.len() <= super::streams::CLIENT_BUFFER,
                "stream {id} overfull"
            );
            if s.credit > 0 {
                assert!(
                    self.credit_due.contains(id),
                    "stream {id}: credit never sent"
                );
            }
        }
        self.revoked.check_invariants(limits.max_revoked_ids);
    }
}

impl<T: Types> Session<T> {
    /// Sends a call. A local failure (closed, revoked, in-flight limit, too large for the
    /// peer) is replied at once and sends nothing (PROTOCOL §9, §12, §13.6).
    pub fn start_call(&mut self, req: &mut CallRequest, reply: T::Reply, now: Instant) {
        let expect = req.expect;
        if let Err(error) = self.check_call(req) {
            return self.reply(reply, Err(error), expect);
        }
        if let Err(error) = self.send_call(req) {
            return self.reply(reply, Err(error), expect);
        }
        self.track(req, reply, now);
    }

    /// The local checks of a call or stream open.
    pub(super) fn check_call(&self, req: &CallRequest) -> Result<(), Error> {
        if self.closed.is_some() {
            return Err(Error::closed());
        }
        if self.outbound.revoked.contains(req.cap_id) {
            return Err(Error::local(LocalError::Revoked, Status::revoked()));
        }
        let max = self.cfg.limits.max_in_flight;
        if self.outbound.in_flight() >= max {
            return Err(Error::in_flight_limit(max));
        }
        Ok(())
    }

    /// Encodes the call frame (a typed `args` serialized straight into it), if it fits the
    /// peer's `maxBytes` and its `args` serialize.
    pub(super) fn send_call(&mut self, req: &mut CallRequest) -> Result<(), Error> {
        // A handler that outlived its call (cancelled but kept running, or finished with
        // work left behind) makes calls of its own, not children of the call that took
        // the id since.
        req.parent = req.parent.filter(|p| self.inbound.serves(p.call, p.run));
        let meta = req.meta();
        let frame = Frame::Call(Call {
            id: req.id,
            target: req.cap_id,
            method: std::mem::take(&mut req.method),
            args: req.args.as_outgoing(),
            meta,
        });
        self.send_outgoing(&frame).map_err(|e| match e {
            EncodeError::TooLarge(e) => Error::local(
                LocalError::TooLarge,
                Status::resource_exhausted(
                    format!(
                        "call of {} bytes exceeds the peer's maxBytes {}",
                        e.size, e.max
                    ),
                    reason::MAX_FRAME_BYTES,
                ),
            ),
            EncodeError::Serialize(e) => Error::args_failed(e),
        })
    }

    /// Records a sent call as pending: its deadline timer and its parent link.
    pub(super) fn track(&mut self, req: &CallRequest, reply: T::Reply, now: Instant) {
        let id = req.id;
        let deadline = req
            .deadline
            .and_then(|d| after(now, d.saturating_add(DEADLINE_GRACE)));
        if let Some(at) = deadline {
            self.timers.arm(at, Timer::Outbound(id));
        }
        if let Some(parent) = req.parent {
            self.outbound.children.add(parent.call, id);
        }
        self.outbound.on_cap.add(req.cap_id);
        self.outbound.pending.insert(
            id,
            Pending {
                reply: Some(reply),
                cap_id: req.cap_id,
                parent: req.parent.map(|p| p.call),
                expect: req.expect,
                deadline,
            },
        );
    }

    fn reply(&mut self, to: T::Reply, outcome: Result<Payload, Error>, expect: Expect) {
        self.outputs.push_back(Output::Reply {
            to,
            outcome,
            caps: expect == Expect::Caps,
        });
    }

    /// Removes a pending call with its timer and parent link.
    fn untrack(&mut self, id: CallId) -> Option<Pending<T>> {
        let p = crate::hashing::take_spaced(
            &mut self.outbound.pending,
            &id,
            &mut self.outbound.pending_spacing,
        )?;
        if let Some(at) = p.deadline {
            self.timers.disarm(at, Timer::Outbound(id));
        }
        if let Some(parent) = p.parent {
            self.outbound.children.remove(parent, id);
        }
        self.outbound.on_cap.remove(p.cap_id);
        Some(p)
    }

    pub(super) fn on_result(&mut self, r: ResultFrame<Payload>) {
        let outcome = match r.outcome {
            Ok(payload) => Ok(payload),
            Err(w) => Err(Error::Remote(Status::from_wire(w))),
        };
        let Some(p) = self.untrack(r.id) else {
            return self.result_for_stream(r.id, outcome);
        };
        match p.reply {
            Some(to) => self.reply(to, outcome, p.expect),
            None => {
                if let (Expect::Caps, Ok(payload)) = (p.expect, &outcome) {
                    self.release_all(payload);
                }
            }
        }
    }

    /// A stream frame for one of our unary calls: the method is a stream (a dynamic call can
    /// name one). The call fails, the mirror of a `result` for a stream (PROTOCOL §10): with
    /// the stream's `error`, or `invalid_argument` `call method returned stream frame`, as
    /// [`LocalError::WrongKind`]. A
    /// `next` (`open`) means the stream still runs on the server: it is cancelled, so it does
    /// not wait for credit forever holding an in-flight slot. Nothing when `id` is no
    /// pending call.
    pub(super) fn stream_frame_for_call(&mut self, id: CallId, open: bool, error: Option<Error>) {
        let Some(p) = self.untrack(id) else {
            return;
        };
        if let Some(to) = p.reply {
            let status = match error {
                Some(e) => e.into_status(),
                None => Status::invalid_argument("call method returned stream frame"),
            };
            self.reply(
                to,
                Err(Error::local(LocalError::WrongKind, status)),
                p.expect,
            );
        }
        if open {
            self.send(&Frame::Cancel(Cancel {
                id,
                reason: Some("client_cancel".into()),
            }));
        }
    }

    /// The caller gave up (dropped its future, or its cancellation fired): tell the server.
    /// A result that may carry caps is still awaited so they can be released.
    pub fn cancel_call(&mut self, id: CallId) {
        if self.closed.is_some() {
            return;
        }
        let Some(p) = self.outbound.pending.get_mut(&id) else {
            if !self.outbound.parked.is_empty() {
                self.cancel_parked(id);
            }
            return;
        };
        if p.reply.take().is_none() {
            return; // Already given up on.
        }
        if p.expect == Expect::Value {
            self.untrack(id);
        }
        self.send(&Frame::Cancel(Cancel {
            id,
            reason: Some("client_cancel".into()),
        }));
    }

    /// A bootstrap its caller gave up on before the peer's hello: let go of at once (it
    /// was never sent, so the peer needs no `cancel`), rather than sent once the hello
    /// comes for an answer nobody wants.
    #[cold]
    fn cancel_parked(&mut self, id: CallId) {
        let Some(at) = self.outbound.parked.iter().position(|p| p.req.id == id) else {
            return;
        };
        let Parked { reply, .. } = self.outbound.parked.remove(at);
        let status = Status::new(Code::Cancelled, "client_cancel");
        self.reply(
            reply,
            Err(Error::local(LocalError::Cancelled, status)),
            Expect::Caps,
        );
    }

    /// A call's deadline (plus grace) passed: fail it and tell the server (PROTOCOL §11).
    pub(super) fn outbound_deadline(&mut self, id: CallId) {
        let Some(p) = self.outbound.pending.get_mut(&id) else {
            return;
        };
        p.deadline = None;
        let (reply, expect) = (p.reply.take(), p.expect);
        if expect == Expect::Value {
            self.untrack(id);
        }
        if let Some(to) = reply {
            let status = Status::new(Code::DeadlineExceeded, "deadline exceeded");
            let error = Error::local(LocalError::DeadlineExceeded, status);
            self.reply(to, Err(error), expect);
        }
        self.send(&Frame::Cancel(Cancel {
            id,
            reason: Some("deadline_exceeded".into()),
        }));
    }

    /// The calls made inside the handler of the peer's call `parent`, which finished, are
    /// its children no more: a cancel of a call that reuses its id does not reach them.
    pub(super) fn orphan_children(&mut self, parent: CallId) {
        if self.outbound.children.is_empty() {
            return;
        }
        for id in self.outbound.children.take(parent) {
            if let Some(p) = self.outbound.pending.get_mut(&id) {
                p.parent = None;
            } else if let Some(s) = self.outbound.streams.get_mut(&id) {
                s.parent = None;
            }
        }
    }

    /// Cancels the calls and streams we made from inside the handler of the peer's call
    /// `parent` (PROTOCOL §11): each fails `cancelled` with the reason, and the peer is sent
    /// `cancel` with it.
    pub(super) fn cancel_children(&mut self, parent: CallId, why: Option<String>) {
        if !self.outbound.parked.is_empty() {
            self.cancel_parked_children(parent, why.as_deref());
        }
        for id in self.outbound.children.take(parent) {
            let Some(p) = self.outbound.pending.get_mut(&id) else {
                self.cancel_child_stream(id, why.clone());
                continue;
            };
            p.parent = None;
            let (reply, expect) = (p.reply.take(), p.expect);
            if expect == Expect::Value {
                self.untrack(id);
            }
            if let Some(to) = reply {
                let status = Status::new(Code::Cancelled, why.clone().unwrap_or_default());
                self.reply(to, Err(Error::local(LocalError::Cancelled, status)), expect);
            }
            self.send(&Frame::Cancel(Cancel {
                id,
                reason: why.clone(),
            }));
        }
    }

    /// The bootstraps the handler of `parent` made that still wait for the peer's hello
    /// (PROTOCOL §6) fail `cancelled` with the reason; never sent, they need no `cancel`.
    #[cold]
    fn cancel_parked_children(&mut self, parent: CallId, why: Option<&str>) {
        let of_parent = |p: &Parked<T>| p.req.parent.is_some_and(|p| p.call == parent);
        // A cancel of any other call (the peer chooses how many it sends) costs a scan of
        // the parked bootstraps, never a copy of them.
        if !self.outbound.parked.iter().any(of_parent) {
            return;
        }
        let parked = std::mem::take(&mut self.outbound.parked);
        let (cancelled, kept): (Vec<_>, Vec<_>) = parked.into_iter().partition(of_parent);
        self.outbound.parked = kept;
        for Parked { reply, .. } in cancelled {
            let status = Status::new(Code::Cancelled, why.unwrap_or_default());
            self.reply(
                reply,
                Err(Error::local(LocalError::Cancelled, status)),
                Expect::Caps,
            );
        }
    }

    /// A client stream whose parent was cancelled: it ends `cancelled` with the reason and
    /// the peer is sent `cancel` with it.
    fn cancel_child_stream(&mut self, id: CallId, why: Option<String>) {
        let Some(s) = self.outbound.streams.get_mut(&id) else {
            return;
        };
        s.parent = None;
        let status = Status::new(Code::Cancelled, why.clone().unwrap_or_default());
        let error = Error::local(LocalError::Cancelled, status);
        self.end_client_stream(id, Some(error), 0);
        self.send(&Frame::Cancel(Cancel { id, reason: why }));
    }

    pub(super) fn on_revoked(&mut self, r: CapRevoked) {
        let out = &mut self.outbound;
        let targets = out.pending.values().map(|p| p.cap_id);
        let on_cap = out
            .on_cap
            .index(targets.chain(out.streams.values().map(|s| s.cap_id)));
        let mut ids: Set<CapId> = Set::default();
        // The reserved ids are no caps (PROTOCOL §7): revoking them would fail every
        // later bootstrap locally.
        for id in r.cap_ids.into_iter().filter(|id| !id.is_reserved()) {
            out.revoked.insert(id);
            if on_cap.contains_key(&id) {
                ids.insert(id);
            }
        }
        if ids.is_empty() {
            return;
        }
        let mut failed: Vec<CallId> = (self.outbound.pending.iter())
            .filter(|(_, p)| ids.contains(&p.cap_id))
            .map(|(id, _)| *id)
            .collect();
        failed.sort();
        for id in failed {
            if let Some(p) = self.untrack(id) {
                if let Some(to) = p.reply {
                    self.reply(to, Err(Error::Remote(Status::revoked())), p.expect);
                }
            }
        }
        let mut streams: Vec<CallId> = (self.outbound.streams.iter())
            .filter(|(_, s)| ids.contains(&s.cap_id))
            .map(|(id, _)| *id)
            .collect();
        streams.sort();
        for id in streams {
            self.end_client_stream(id, Some(Error::Remote(Status::revoked())), 0);
        }
    }

    /// Releases one reference we received (PROTOCOL §7). Batched: releases made close
    /// together share one `drop` frame. Nothing is sent for ids 0/1 or after close.
    pub fn release(&mut self, id: CapId) {
        if id.is_reserved() || self.closed.is_some() {
            return;
        }
        let out = &mut self.outbound;
        match out.drop_index.get(&id).and_then(|&i| out.drops.get_mut(i)) {
            Some(entry) => entry.delta = entry.delta.saturating_add(1),
            None => {
                out.drop_index.insert(id, out.drops.len());
                out.drops.push(DropEntry { id, delta: 1 });
            }
        }
    }

    /// Releases every CapRef of a result nobody claimed.
    pub fn release_all(&mut self, payload: &Payload) {
        for id in payload.cap_refs() {
            self.release(id);
        }
    }

    /// At shutdown: every pending call, parked bootstrap and client stream fails.
    pub(super) fn fail_outbound(&mut self, error: &Error, parked_error: &Error) {
        let mut pending: Vec<(CallId, Pending<T>)> = self.outbound.pending.drain().collect();
        pending.sort_by_key(|(id, _)| *id);
        for (_, p) in pending {
            if let Some(to) = p.reply {
                self.reply(to, Err(error.clone()), p.expect);
            }
        }
        for parked in std::mem::take(&mut self.outbound.parked) {
            self.reply(parked.reply, Err(parked_error.clone()), Expect::Caps);
        }
        let mut streams: Vec<_> = self.outbound.streams.drain().collect();
        self.outbound.buffered = 0;
        self.outbound.last_table = None;
        self.outbound.ended.clear();
        streams.sort_by_key(|(id, _)| *id);
        for (_, s) in streams {
            self.outputs.push_back(Output::StreamEnd {
                to: s.sink,
                error: Some(error.clone()),
            });
        }
        self.outbound.children.clear();
        self.outbound.on_cap.clear();
        self.outbound.credit_due.clear();
        self.outbound.drops.clear();
        self.outbound.drop_index.clear();
    }
}

impl<T: Types> Session<T> {
    /// Opens a client stream; the same local checks as a call, a local failure ends the
    /// stream at once.
    pub fn start_stream(&mut self, req: &mut CallRequest, sink: T::Sink) {
        let sent = self.check_call(req).and_then(|()| self.send_call(req));
        if let Err(error) = sent {
            self.outputs.push_back(Output::StreamEnd {
                to: sink,
                error: Some(error),
            });
            return;
        }
        let state = ClientStreamState {
            sink,
            cap_id: req.cap_id,
            parent: req.parent.map(|p| p.call),
            sizes: VecDeque::new(),
            credit: 0,
            arena: BytesMut::new(),
        };
        // A stream opened inside a handler carries `meta.parentCallId` as a call does, so
        // a cancel of that handler's call cancels it too (PROTOCOL §11).
        if let Some(parent) = req.parent {
            self.outbound.children.add(parent.call, req.id);
        }
        self.outbound.on_cap.add(req.cap_id);
        self.outbound.streams.insert(req.id, state);
    }
}
