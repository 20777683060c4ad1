//! A frame read straight from the bytes ([`crate::Decoder::decode_frame_lazy`]): the frame's
//! fields without building a `Value` of the frame, the payload kept as a [`Payload`].
//!
//! One pass over the message, in order, with the decoder's own slot table, so definitions
//! apply exactly as a `Value` decode would apply them. Every value passed, read or not, is
//! validated and charged to the decode budget as materializing it would cost; the frame
//! rules (`validate.rs`) run only once the whole message has proved well-formed, so a
//! malformed message is a decode error wherever its fault lies, as before.
//!
//! What makes it cheap: each record slot knows what its keys mean ([`Name`], worked out when
//! the slot was defined), so a key costs a byte load, not string comparisons; the strings a
//! frame expects (`op`, `ev`, `target.kind`) are matched as bytes, which also proves them
//! UTF-8; and scalars are read from their first byte without the generic skip.
//! `golden.rs` holds this reader to the budget charges, errors and definitions of the
//! string-matching reader it replaced.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

mod fast;

use fast::Fast;

use super::fields::{first, Fields, Listed, Meta, Name, Nested, Op, Scalar, Status, Target};
use super::validate::{self, HelloBounds};
use crate::codec::budget::{self, Meter};
use crate::codec::cursor::{Ctx, Cursor, Head, Res};
use crate::codec::skip::{skip, skip_head, Skip};
use crate::codec::{decode, DecodeError, FrameDecodeError};
use crate::frame::{Frame, FrameError};
use crate::limits::DecodeLimits;
use crate::payload::Payload;
use crate::records::{SlotKeys, SlotTable};
use crate::text::LastName;

/// The values of `stream.ev` a frame reader knows.
const EVENTS: [&str; 4] = ["next", "credit", "end", "error"];

/// Decodes one message as a frame with a lazy payload; a call's long method name is shared
/// with the last one `names` kept when it is the same.
pub(crate) fn decode_lazy(
    limits: &DecodeLimits,
    slots: &mut Arc<SlotTable>,
    names: &mut LastName,
    msg: &Bytes,
) -> Result<Frame<Payload>, FrameDecodeError> {
    if msg.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge.into());
    }
    let mut r = Reader::new(limits, slots, msg);
    match r.fast(names) {
        Some(Fast::Next { inner, id }) => r.next_value(inner, id),
        Some(Fast::Result { inner, id }) => r.result_value(inner, id),
        Some(Fast::Call(head)) => r.call_rest(head),
        Some(Fast::Done(frame)) => frame,
        None => general(limits, slots, msg),
    }
}

/// [`decode_lazy`] by the general reader alone (for the tests that hold the fast path to
/// it).
pub(super) fn general(
    limits: &DecodeLimits,
    slots: &mut Arc<SlotTable>,
    msg: &Bytes,
) -> Result<Frame<Payload>, FrameDecodeError> {
    if msg.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge.into());
    }
    let mut r = Reader::new(limits, slots, msg);
    // Large: filled and judged in place, never moved.
    let mut fields = Fields::default();
    let head = r.cx.cur.head()?;
    let record = match head {
        Head::RecordDef(_) | Head::RecordRef(_) => {
            r.top(head, &mut fields)?;
            true
        }
        other => {
            skip_head(&mut r.cx, other, 0, &mut Skip::charging())?;
            false
        }
    };
    if !r.cx.cur.at_end() {
        return Err(DecodeError::TrailingBytes.into());
    }
    if !record {
        return Err(FrameError::NotRecord.into());
    }
    Ok(validate::frame(&mut fields, r.bounds)?)
}

struct Reader<'a, 's> {
    cx: Ctx<'a, 's>,
    msg: &'a Bytes,
    bounds: HelloBounds,
}

impl<'a, 's> Reader<'a, 's> {
    fn new(limits: &DecodeLimits, slots: &'s mut Arc<SlotTable>, msg: &'a Bytes) -> Self {
        Reader {
            cx: Ctx {
                cur: Cursor::new(msg),
                owner: None,
                slots,
                meter: Meter::new(limits.decode_budget(msg.len())),
                max_depth: limits.max_depth,
                max_table: limits.max_record_table_bytes,
            },
            msg,
            bounds: HelloBounds::of(limits),
        }
    }

    /// The frame record: each known key read at depth 1, unknown ones (and, once the op is
    /// known, those its frame never reads) only skipped.
    fn top(&mut self, head: Head<'a>, f: &mut Fields<'a, Payload>) -> Res<()> {
        let (shape, inner) = self.cx.record_shape(head, 0)?;
        let cap = self.cx.plausible(shape.len());
        self.cx.meter.charge(budget::record(cap))?;
        // Once `op` is read as a string: the frame it names (`None` for no frame).
        let mut op: Option<Option<Op>> = None;
        for i in 0..shape.len() {
            let name = shape.name(i);
            if op.is_some_and(|op| !name.read_by(op)) {
                self.skip(inner)?;
                continue;
            }
            let d = inner;
            match name {
                Name::Op => {
                    let (s, kind) = self.op(d)?;
                    op = kind.or(op);
                    first(&mut f.op, s);
                }
                Name::Id => first(&mut f.id, self.scalar(d)?),
                Name::V => first(&mut f.v, self.scalar(d)?),
                Name::Mode => first(&mut f.mode, self.scalar(d)?),
                Name::Origin => first(&mut f.origin, self.scalar(d)?),
                Name::MaxBytes => first(&mut f.max_bytes, self.scalar(d)?),
                Name::Reason => first(&mut f.reason, self.scalar(d)?),
                Name::Method => first(&mut f.method, self.scalar(d)?),
                Name::Ev => first(&mut f.ev, self.word(d, &EVENTS)?),
                Name::Ok => first(&mut f.ok, self.scalar(d)?),
                Name::Args => first(&mut f.args, self.payload(d)?),
                Name::Value => first(&mut f.value, self.payload(d)?),
                Name::Features => first(&mut f.features, self.features(d)?),
                Name::Caps => first(&mut f.caps, self.caps(d)?),
                Name::CapIds => first(&mut f.cap_ids, self.cap_ids(d)?),
                Name::Target => first(&mut f.target, self.target(d)?),
                Name::Meta => first(&mut f.meta, self.meta(d)?),
                Name::Error => first(&mut f.error, self.status(d)?),
                Name::Credit => first(&mut f.credit, self.credit(d)?),
                // Keys of nested records, and keys no frame knows.
                _ => self.skip(d)?,
            }
        }
        Ok(())
    }

    /// A value nobody reads, checked and charged.
    fn skip(&mut self, depth: usize) -> Res<()> {
        skip(&mut self.cx, depth, &mut Skip::charging())
    }

    /// `op`, and the frame it names when it is a string (`Some(None)`: no frame).
    fn op(&mut self, depth: usize) -> Res<(Scalar<'a>, Option<Option<Op>>)> {
        if let Some(i) = self.cx.cur.fixstr_among(&Op::NAMES) {
            return Ok((self.known(&Op::NAMES, i)?, Some(Op::at(i))));
        }
        let s = self.scalar(depth)?;
        let kind = match &s {
            Scalar::Str(name) => Some(Op::of(name)),
            _ => None,
        };
        Ok((s, kind))
    }

    /// A scalar expected to be one of `words`: matched as bytes, else read as any scalar.
    fn word(&mut self, depth: usize, words: &[&'static str]) -> Res<Scalar<'a>> {
        match self.cx.cur.fixstr_among(words) {
            Some(i) => self.known(words, i),
            None => self.scalar(depth),
        }
    }

    /// `words[i]`, just read: charged as the string it is.
    fn known(&mut self, words: &[&'static str], i: usize) -> Res<Scalar<'a>> {
        let word = words.get(i).copied().unwrap_or_default();
        self.cx.meter.charge(budget::heap(word.len()))?;
        Ok(Scalar::Str(Cow::Borrowed(word)))
    }

    /// A value read as a scalar; anything else is skipped (and charged) as `Other`.
    #[inline]
    fn scalar(&mut self, depth: usize) -> Res<Scalar<'a>> {
        // The scalars themselves directly; only containers and extensions need the skip.
        Ok(match self.cx.cur.head()? {
            Head::Int(n) => Scalar::Int(n),
            Head::Str(s) => {
                self.cx.meter.charge(budget::heap(s.len()))?;
                Scalar::Str(Cow::Borrowed(s))
            }
            Head::Undefined => Scalar::Undefined,
            Head::Bool(b) => Scalar::Bool(b),
            Head::Null => Scalar::Null,
            Head::UInt(n) => Scalar::UInt(n),
            Head::Float(f) => Scalar::Float(f),
            other => self.scalar_of(other, depth)?,
        })
    }

    fn scalar_of(&mut self, head: Head<'a>, depth: usize) -> Res<Scalar<'a>> {
        let s = match head {
            Head::Undefined => Scalar::Undefined,
            Head::Null => Scalar::Null,
            Head::Bool(b) => Scalar::Bool(b),
            Head::Int(n) => Scalar::Int(n),
            Head::UInt(n) => Scalar::UInt(n),
            Head::Float(f) => Scalar::Float(f),
            Head::Str(s) => Scalar::Str(Cow::Borrowed(s)),
            _ => Scalar::Other,
        };
        skip_head(&mut self.cx, head, depth, &mut Skip::charging())?;
        Ok(s)
    }

    /// The payload: a slice of the message and the slot table where it starts, after
    /// checking it (and charging what materializing it will cost).
    fn payload(&mut self, depth: usize) -> Res<Payload> {
        let snapshot = Arc::clone(self.cx.slots);
        let start = self.cx.cur.pos();
        let spent = self.cx.meter.spent();
        self.skip(depth)?;
        let end = self.cx.cur.pos();
        Ok(Payload::wire(
            self.msg.slice(start..end),
            snapshot,
            depth,
            self.cx.max_depth,
            self.cx.meter.limit(),
            self.cx.meter.spent() - spent,
            self.msg.len(),
        ))
    }

    /// A record's fields, each handed to `field` with its key (`shape` and index) and
    /// depth; or what the value was instead of a record.
    #[inline]
    fn nested<T: Default>(
        &mut self,
        depth: usize,
        mut field: impl FnMut(&mut Self, &mut T, &SlotKeys, usize, usize) -> Res<()>,
    ) -> Res<Nested<'a, T>> {
        let head = self.cx.cur.head()?;
        if !matches!(head, Head::RecordDef(_) | Head::RecordRef(_)) {
            return Ok(Nested::Scalar(self.scalar_of(head, depth)?));
        }
        let (shape, inner) = self.cx.record_shape(head, depth)?;
        let cap = self.cx.plausible(shape.len());
        self.cx.meter.charge(budget::record(cap))?;
        let mut out = T::default();
        for i in 0..shape.len() {
            field(self, &mut out, &shape, i, inner)?;
        }
        Ok(Nested::Record(out))
    }

    /// An array's items, each judged by `item` (the first error kept, the rest still read
    /// and checked); or what the value was instead. At most `max` items are collected.
    fn listed<T>(
        &mut self,
        depth: usize,
        max: usize,
        too_many: FrameError,
        mut item: impl FnMut(&mut Self, usize) -> Res<Result<T, FrameError>>,
    ) -> Res<Listed<'a, T>> {
        let head = self.cx.cur.head()?;
        let Head::Array(n) = head else {
            return Ok(Listed::Scalar(self.scalar_of(head, depth)?));
        };
        let inner = self.cx.nest(depth)?;
        let cap = self.cx.plausible(n);
        self.cx.meter.charge(budget::array(cap))?;
        let mut items = if n > max {
            Err(too_many)
        } else {
            Ok(Vec::with_capacity(cap))
        };
        for _ in 0..n {
            match &mut items {
                Ok(list) => match item(self, inner)? {
                    Ok(x) => list.push(x),
                    Err(e) => items = Err(e),
                },
                Err(_) => self.skip(inner)?,
            }
        }
        Ok(Listed::Items(items))
    }

    fn features(&mut self, depth: usize) -> Res<Listed<'a, String>> {
        let bounds = self.bounds;
        let too_many = FrameError::Invalid {
            op: "hello",
            field: "features",
        };
        self.listed(depth, bounds.max_features, too_many, |r, d| {
            Ok(validate::feature(r.scalar(d)?, bounds))
        })
    }

    fn caps(&mut self, depth: usize) -> Res<Listed<'a, crate::frame::DropEntry>> {
        let unbounded = FrameError::NotRecord;
        self.listed(depth, usize::MAX, unbounded, |r, d| {
            type Entry<'a> = (Option<Scalar<'a>>, Option<Scalar<'a>>);
            let entry = r.nested(d, |r, e: &mut Entry<'a>, keys, i, d| {
                match keys.name(i) {
                    Name::Id => first(&mut e.0, r.scalar(d)?),
                    Name::Delta => first(&mut e.1, r.scalar(d)?),
                    _ => r.skip(d)?,
                }
                Ok(())
            })?;
            Ok(validate::drop_entry(match &entry {
                Nested::Record((id, delta)) => Some((id.as_ref(), delta.as_ref())),
                Nested::Scalar(_) => None,
            }))
        })
    }

    fn cap_ids(&mut self, depth: usize) -> Res<Listed<'a, crate::ids::CapId>> {
        let unbounded = FrameError::NotRecord;
        self.listed(depth, usize::MAX, unbounded, |r, d| {
            Ok(validate::revoked_id(&r.scalar(d)?))
        })
    }

    fn target(&mut self, depth: usize) -> Res<Nested<'a, Target<'a>>> {
        self.nested(depth, |r, t: &mut Target<'a>, keys, i, d| {
            match keys.name(i) {
                Name::Kind => first(&mut t.kind, r.word(d, &["cap"])?),
                Name::Id => first(&mut t.id, r.scalar(d)?),
                _ => r.skip(d)?,
            }
            Ok(())
        })
    }

    fn meta(&mut self, depth: usize) -> Res<Nested<'a, Meta<'a>>> {
        self.nested(depth, |r, m: &mut Meta<'a>, keys, i, d| {
            match keys.name(i) {
                Name::ParentCallId => first(&mut m.parent_call_id, r.scalar(d)?),
                Name::DeadlineMs => first(&mut m.deadline_ms, r.scalar(d)?),
                Name::Context => {
                    let context = r.nested(d, |r, c: &mut Vec<_>, keys, i, d| {
                        let k = keys.key(i);
                        // The key is copied here, which a `Value` would share: charge it.
                        r.cx.meter.charge(budget::heap(k.len()))?;
                        c.push((k.to_owned(), r.scalar(d)?));
                        Ok(())
                    })?;
                    first(&mut m.context, context);
                }
                _ => r.skip(d)?,
            }
            Ok(())
        })
    }

    fn status(&mut self, depth: usize) -> Res<Nested<'a, Status<'a>>> {
        self.nested(depth, |r, s: &mut Status<'a>, keys, i, d| {
            match keys.name(i) {
                Name::Code => first(&mut s.code, r.scalar(d)?),
                Name::Message => first(&mut s.message, r.scalar(d)?),
                // Built by the Value decoder, which charges as it goes.
                Name::Details => first(&mut s.details, decode::value(&mut r.cx, d)?),
                Name::Retry => first(&mut s.retry, decode::value(&mut r.cx, d)?),
                _ => r.skip(d)?,
            }
            Ok(())
        })
    }

    fn credit(&mut self, depth: usize) -> Res<Nested<'a, Option<Scalar<'a>>>> {
        self.nested(depth, |r, messages: &mut Option<Scalar<'a>>, keys, i, d| {
            match keys.name(i) {
                Name::Messages => first(messages, r.scalar(d)?),
                _ => r.skip(d)?,
            }
            Ok(())
        })
    }
}
