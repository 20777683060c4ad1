//! The frames of every call and stream in the form peers send them, read straight into the
//! frame: a `call`, an `ok` `result`, a stream's `next`, `credit` and `end`, a `cancel` and a
//! `drop`, each as a reference to a slot defined with the reference's keys, its fields in
//! their usual forms.
//!
//! This path may give up, and then the general reader (`lazy.rs`) reads the message from the
//! start, so it gives up only while nothing has changed: the only thing reading a message
//! changes is the slot table, and only a payload or a value read by the general reader
//! (after the payload) can define a slot. (A call's long method name may be kept as the
//! decoder's last one before this path gives up; that changes no frame, only which
//! allocation a later call's name shares.) Until then every check that fails, every budget
//! charge that does not fit and every unusual form just gives up; from the payload on, it
//! reads as the general reader does (the same functions), so errors are exactly its errors.
//! Every budget charge is the general reader's, in the same order, so the budget admits
//! exactly the same messages. `tests.rs` holds the two paths to the same results.

use super::{Reader, EVENTS};
use crate::codec::budget;
use crate::codec::{DecodeError, FrameDecodeError};
use crate::frame::{
    Call, Cancel, DropEntry, DropFrame, Frame, ResultFrame, StreamEvent, StreamFrame,
};
use crate::frame_codec::fields::{Name, Op, Scalar};
use crate::frame_codec::validate;
use crate::ids::{CallId, CapId};
use crate::payload::Payload;
use crate::text::{LastName, Text};

type Outcome = Result<Frame<Payload>, FrameDecodeError>;

/// The frames this path reads, by their key lists.
#[derive(Clone, Copy)]
enum Plan {
    Call,
    Result,
    Next,
    Credit,
    End,
    Cancel,
    Drop,
}

use Name::{Args, Caps, Ev, Id, Meta, Method, Op as OpKey, Reason, Target, Value};

impl Plan {
    fn of(keys: &crate::records::SlotKeys) -> Option<Plan> {
        let plan = match keys.len() {
            6 if keys.names_are(&[OpKey, Id, Target, Method, Args, Meta]) => Plan::Call,
            4 if keys.names_are(&[OpKey, Id, Name::Ok, Value]) => Plan::Result,
            4 if keys.names_are(&[OpKey, Id, Ev, Value]) => Plan::Next,
            4 if keys.names_are(&[OpKey, Id, Ev, Name::Credit]) => Plan::Credit,
            3 if keys.names_are(&[OpKey, Id, Ev]) => Plan::End,
            3 if keys.names_are(&[OpKey, Id, Reason]) => Plan::Cancel,
            2 if keys.names_are(&[OpKey, Caps]) => Plan::Drop,
            _ => return None,
        };
        Some(plan)
    }
}

/// How far [`Reader::fast`] read: the head of a frame whose payload is left to read (from
/// which on nothing gives up), or another frame of this path, whole.
///
/// The frames of calls, results and stream values are then written where
/// [`super::decode_lazy`] returns them; returned whole through an `Option`, each was
/// copied once more (184 bytes a message).
pub(super) enum Fast {
    /// A `call` up to its `args`.
    Call(CallHead),
    /// An `ok` `result` up to its `value`.
    Result { inner: usize, id: CallId },
    /// A stream `next` up to its `value`.
    Next { inner: usize, id: CallId },
    /// Any other frame (credit, end, cancel, drop).
    Done(Outcome),
}

/// A `call`'s fields before its `args`.
pub(super) struct CallHead {
    inner: usize,
    id: CallId,
    target: CapId,
    method: Text,
}

impl Reader<'_, '_> {
    /// How far this path reads the message, or `None` (nothing changed) when it is not one
    /// of this path's.
    #[inline]
    pub(super) fn fast(&mut self, names: &mut LastName) -> Option<Fast> {
        let slot = self.cx.cur.peek_ref()?;
        let keys = self.cx.slots.get(slot)?;
        let (plan, n) = (Plan::of(keys)?, keys.len());
        self.cx.cur.skip_byte();
        let inner = self.cx.nest(0).ok()?;
        self.charge(budget::record(self.cx.plausible(n)))?;
        let done = match plan {
            Plan::Call => return self.call_head(inner, names).map(Fast::Call),
            Plan::Result => {
                self.expect_op(Op::Result)?;
                let id = self.call_id()?;
                self.cx.cur.eat(0xc3).then_some(())?;
                return Some(Fast::Result { inner, id });
            }
            Plan::Next => {
                let id = self.stream_head(0)?;
                return Some(Fast::Next { inner, id });
            }
            Plan::Credit => {
                let id = self.stream_head(1)?;
                let credit = self.credit_record(inner)?;
                self.stream(id, StreamEvent::Credit(credit))?
            }
            Plan::End => {
                let id = self.stream_head(2)?;
                self.stream(id, StreamEvent::End)?
            }
            Plan::Cancel => {
                self.expect_op(Op::Cancel)?;
                let id = self.call_id()?;
                let reason = self.reason()?;
                self.at_end()?;
                Ok(Frame::Cancel(Cancel { id, reason }))
            }
            Plan::Drop => {
                self.expect_op(Op::Drop)?;
                let caps = self.drop_entries(inner)?;
                self.at_end()?;
                Ok(Frame::Drop(DropFrame { caps }))
            }
        };
        Some(Fast::Done(done))
    }

    /// A `result`'s `value` after [`Fast::Result`].
    #[inline]
    pub(super) fn result_value(&mut self, inner: usize, id: CallId) -> Outcome {
        match self.last_payload(inner) {
            Ok(p) => Ok(Frame::Result(ResultFrame { id, outcome: Ok(p) })),
            Err(e) => Err(e),
        }
    }

    /// A stream `next`'s `value` after [`Fast::Next`].
    #[inline]
    pub(super) fn next_value(&mut self, inner: usize, id: CallId) -> Outcome {
        match self.last_payload(inner) {
            Ok(p) => Ok(Frame::Stream(StreamFrame {
                id,
                event: StreamEvent::Next(p),
            })),
            Err(e) => Err(e),
        }
    }

    #[inline]
    fn call_head(&mut self, inner: usize, names: &mut LastName) -> Option<CallHead> {
        self.expect_op(Op::Call)?;
        let id = self.call_id()?;
        let target = self.target_record(inner)?;
        let method = self.cx.cur.short_bytes()?;
        // Short names stay inline, a long one shares the last call's: no allocation.
        let method = names.text(method)?;
        self.charge(budget::heap(method.len()))?;
        Some(CallHead {
            inner,
            id,
            target,
            method,
        })
    }

    /// A `call`'s `args` and `meta` after [`Fast::Call`]. From the payload on the slot
    /// table may change: nothing gives up.
    #[inline]
    pub(super) fn call_rest(&mut self, head: CallHead) -> Outcome {
        let CallHead {
            inner,
            id,
            target,
            method,
        } = head;
        let args = self.payload(inner)?;
        let meta = if self.cx.cur.undefined() {
            None
        } else {
            Some(self.meta(inner)?)
        };
        if !self.cx.cur.at_end() {
            return Err(DecodeError::TrailingBytes.into());
        }
        let meta = match meta {
            None => None,
            Some(meta) => validate::call_meta(Some(meta))?,
        };
        Ok(Frame::Call(Call {
            id,
            target,
            method,
            args,
            meta,
        }))
    }

    /// Charges `n`, or gives up.
    fn charge(&mut self, n: usize) -> Option<()> {
        self.cx.meter.charge(n).ok()
    }

    /// `op`, which must be `op`'s string.
    fn expect_op(&mut self, op: Op) -> Option<()> {
        let name = Op::NAMES.get(op as usize)?;
        self.cx.cur.fixstr_among(&[name])?;
        self.charge(budget::heap(name.len()))
    }

    /// A call id (below 2^53) as a positive int.
    fn call_id(&mut self) -> Option<CallId> {
        self.cx.cur.uint().filter(|&n| n < 1 << 53).map(CallId)
    }

    /// A cap id (below 2^32) as a positive int.
    fn cap_id(&mut self) -> Option<CapId> {
        self.cx
            .cur
            .uint()
            .and_then(|n| u32::try_from(n).ok())
            .map(CapId)
    }

    /// Nothing after the frame, or give up (the general reader says so).
    fn at_end(&self) -> Option<()> {
        self.cx.cur.at_end().then_some(())
    }

    /// The payload, last in the frame.
    fn last_payload(&mut self, inner: usize) -> Result<Payload, FrameDecodeError> {
        let p = self.payload(inner)?;
        if self.cx.cur.at_end() {
            Ok(p)
        } else {
            Err(DecodeError::TrailingBytes.into())
        }
    }

    /// Whether the next value is a reference to a slot whose keys are `names`.
    fn next_is(&self, names: &[Name]) -> bool {
        let slot = self.cx.cur.peek_ref();
        slot.and_then(|s| self.cx.slots.get(s))
            .is_some_and(|keys| keys.names_are(names))
    }

    /// A record whose keys are `names`, at `depth`: its header read, nesting and charge as
    /// the general reader makes them.
    fn record_of(&mut self, depth: usize, names: &[Name]) -> Option<()> {
        if !self.next_is(names) {
            return None;
        }
        self.cx.cur.skip_byte();
        self.cx.nest(depth).ok()?;
        self.charge(budget::record(self.cx.plausible(names.len())))
    }

    /// `target`: `{kind: "cap", id}`.
    fn target_record(&mut self, depth: usize) -> Option<CapId> {
        self.record_of(depth, &[Name::Kind, Id])?;
        self.cx.cur.fixstr_among(&["cap"])?;
        self.charge(budget::heap(3))?;
        self.cap_id()
    }

    /// A stream frame's `op`, `id` and `ev` (`EVENTS[ev]`).
    fn stream_head(&mut self, ev: usize) -> Option<CallId> {
        self.expect_op(Op::Stream)?;
        let id = self.call_id()?;
        let word = EVENTS.get(ev)?;
        self.cx.cur.fixstr_among(&[word])?;
        self.charge(budget::heap(word.len()))?;
        Some(id)
    }

    fn stream(&self, id: CallId, event: StreamEvent<Payload>) -> Option<Outcome> {
        self.at_end()?;
        Some(Ok(Frame::Stream(StreamFrame { id, event })))
    }

    /// `credit`: `{messages}` or `{}`.
    fn credit_record(&mut self, depth: usize) -> Option<Option<u64>> {
        if self.next_is(&[]) {
            self.record_of(depth, &[])?;
            return Some(None);
        }
        self.record_of(depth, &[Name::Messages])?;
        let n = self.cx.cur.uint()?;
        // As the general rule: only a count below u64::MAX counts.
        Some((n < u64::MAX).then_some(n))
    }

    /// `cancel.reason`: a string or undefined.
    fn reason(&mut self) -> Option<Option<String>> {
        if self.cx.cur.undefined() {
            return Some(None);
        }
        let s = self.cx.cur.short_str()?;
        self.charge(budget::heap(s.len()))?;
        Some(Some(s.to_owned()))
    }

    /// `drop.caps`: an array of `{id, delta}`.
    fn drop_entries(&mut self, depth: usize) -> Option<Vec<DropEntry>> {
        let n = self.cx.cur.array_len()?;
        let inner = self.cx.nest(depth).ok()?;
        let cap = self.cx.plausible(n);
        self.charge(budget::array(cap))?;
        let mut caps = Vec::with_capacity(cap);
        for _ in 0..n {
            self.record_of(inner, &[Id, Name::Delta])?;
            let id = self.cap_id()?;
            let delta = validate::delta(&Scalar::Int(self.cx.cur.int()?))?;
            caps.push(DropEntry { id, delta });
        }
        Some(caps)
    }
}
