//! A frame read straight from the bytes ([`crate::Decoder::decode_frame_lazy`]): the frame's
//! fields without building a `Value` of the frame, the payload kept as a [`Payload`].
//!
//! One pass over the message, in order, with the decoder's own slot table, so definitions
//! apply exactly as a `Value` decode would apply them. Every value passed, read or not, is
//! validated and charged to the decode budget as materializing it would cost; the frame
//! rules (`validate.rs`) run only once the whole message has proved well-formed, so a
//! malformed message is a decode error wherever its fault lies, as before.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use super::fields::{first, Fields, Key, Listed, Meta, Nested, Scalar, Status, Target};
use super::validate::{self, HelloBounds};
use crate::codec::budget::{self, Meter};
use crate::codec::cursor::{Ctx, Cursor, Head, Res};
use crate::codec::skip::{skip, skip_head, Skip};
use crate::codec::{decode, DecodeError, FrameDecodeError};
use crate::frame::{Frame, FrameError};
use crate::limits::Limits;
use crate::payload::Payload;
use crate::records::SlotTable;

/// Decodes one message as a frame with a lazy payload.
pub(crate) fn decode_lazy(
    limits: &Limits,
    slots: &mut Arc<SlotTable>,
    msg: &Bytes,
) -> Result<Frame<Payload>, FrameDecodeError> {
    if msg.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge.into());
    }
    let budget = limits.decode_budget(msg.len());
    let mut r = Reader {
        cx: Ctx {
            cur: Cursor::new(msg),
            slots,
            meter: Meter::new(budget),
            max_depth: limits.max_depth,
        },
        msg,
        bounds: HelloBounds::of(limits),
    };
    let head = r.cx.cur.head()?;
    let fields = match head {
        Head::RecordDef(_) | Head::RecordRef(_) => Some(r.top(head)?),
        other => {
            skip_head(&mut r.cx, other, 0, &mut Skip::charging())?;
            None
        }
    };
    if !r.cx.cur.at_end() {
        return Err(DecodeError::TrailingBytes.into());
    }
    let fields = fields.ok_or(FrameError::NotRecord)?;
    Ok(validate::frame(fields, r.bounds)?)
}

struct Reader<'a, 's> {
    cx: Ctx<'a, 's>,
    msg: &'a Bytes,
    bounds: HelloBounds,
}

impl<'a> Reader<'a, '_> {
    /// The frame record: each known key read at depth 1, unknown ones (and, once the op is
    /// known, those its frame never reads) only skipped.
    fn top(&mut self, head: Head<'a>) -> Res<Fields<'a, Payload>> {
        let (shape, inner) = self.cx.record_shape(head, 0)?;
        let cap = self.cx.plausible(shape.len());
        self.cx.meter.charge(budget::record(cap))?;
        let mut f = Fields::default();
        let mut op: Option<&'a str> = None;
        for i in 0..shape.len() {
            let key = Key::of(shape.key(i)).filter(|k| op.is_none_or(|op| k.read_by(op)));
            let Some(key) = key else {
                skip(&mut self.cx, inner, &mut Skip::charging())?;
                continue;
            };
            let d = inner;
            match key {
                Key::Op => {
                    let s = self.scalar(d)?;
                    if let Scalar::Str(Cow::Borrowed(name)) = s {
                        op = Some(name);
                    }
                    first(&mut f.op, s);
                }
                Key::Id => first(&mut f.id, self.scalar(d)?),
                Key::V => first(&mut f.v, self.scalar(d)?),
                Key::Mode => first(&mut f.mode, self.scalar(d)?),
                Key::Origin => first(&mut f.origin, self.scalar(d)?),
                Key::MaxBytes => first(&mut f.max_bytes, self.scalar(d)?),
                Key::Reason => first(&mut f.reason, self.scalar(d)?),
                Key::Method => first(&mut f.method, self.scalar(d)?),
                Key::Ev => first(&mut f.ev, self.scalar(d)?),
                Key::Ok => first(&mut f.ok, self.scalar(d)?),
                Key::Args => first(&mut f.args, self.payload(d)?),
                Key::Value => first(&mut f.value, self.payload(d)?),
                Key::Features => first(&mut f.features, self.features(d)?),
                Key::Caps => first(&mut f.caps, self.caps(d)?),
                Key::CapIds => first(&mut f.cap_ids, self.cap_ids(d)?),
                Key::Target => first(&mut f.target, self.target(d)?),
                Key::Meta => first(&mut f.meta, self.meta(d)?),
                Key::Error => first(&mut f.error, self.status(d)?),
                Key::Credit => first(&mut f.credit, self.credit(d)?),
            }
        }
        Ok(f)
    }

    /// A value read as a scalar; anything else is skipped (and charged) as `Other`.
    fn scalar(&mut self, depth: usize) -> Res<Scalar<'a>> {
        let head = self.cx.cur.head()?;
        self.scalar_of(head, depth)
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
        skip(&mut self.cx, depth, &mut Skip::charging())?;
        let end = self.cx.cur.pos();
        Ok(Payload::wire(
            self.msg.slice(start..end),
            snapshot,
            depth,
            self.cx.max_depth,
            self.cx.meter.limit(),
            self.cx.meter.spent() - spent,
        ))
    }

    /// A record's fields, each handed to `field` with its key and depth; or what the value
    /// was instead of a record.
    fn nested<T: Default>(
        &mut self,
        depth: usize,
        mut field: impl FnMut(&mut Self, &mut T, &str, usize) -> Res<()>,
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
            field(self, &mut out, shape.key(i), inner)?;
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
                Err(_) => skip(&mut self.cx, inner, &mut Skip::charging())?,
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
            let entry = r.nested(
                d,
                |r, e: &mut (Option<Scalar<'a>>, Option<Scalar<'a>>), k, d| {
                    match k {
                        "id" => first(&mut e.0, r.scalar(d)?),
                        "delta" => first(&mut e.1, r.scalar(d)?),
                        _ => skip(&mut r.cx, d, &mut Skip::charging())?,
                    }
                    Ok(())
                },
            )?;
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
        self.nested(depth, |r, t: &mut Target<'a>, k, d| {
            match k {
                "kind" => first(&mut t.kind, r.scalar(d)?),
                "id" => first(&mut t.id, r.scalar(d)?),
                _ => skip(&mut r.cx, d, &mut Skip::charging())?,
            }
            Ok(())
        })
    }

    fn meta(&mut self, depth: usize) -> Res<Nested<'a, Meta<'a>>> {
        self.nested(depth, |r, m: &mut Meta<'a>, k, d| {
            match k {
                "parentCallId" => first(&mut m.parent_call_id, r.scalar(d)?),
                "deadlineMs" => first(&mut m.deadline_ms, r.scalar(d)?),
                "context" => {
                    let context = r.nested(d, |r, c: &mut Vec<_>, k, d| {
                        // The key is copied here, which a `Value` would share: charge it.
                        r.cx.meter.charge(budget::heap(k.len()))?;
                        c.push((k.to_owned(), r.scalar(d)?));
                        Ok(())
                    })?;
                    first(&mut m.context, context);
                }
                _ => skip(&mut r.cx, d, &mut Skip::charging())?,
            }
            Ok(())
        })
    }

    fn status(&mut self, depth: usize) -> Res<Nested<'a, Status<'a>>> {
        self.nested(depth, |r, s: &mut Status<'a>, k, d| {
            match k {
                "code" => first(&mut s.code, r.scalar(d)?),
                "message" => first(&mut s.message, r.scalar(d)?),
                // Built by the Value decoder, which charges as it goes.
                "details" => first(&mut s.details, decode::value(&mut r.cx, d)?),
                "retry" => first(&mut s.retry, decode::value(&mut r.cx, d)?),
                _ => skip(&mut r.cx, d, &mut Skip::charging())?,
            }
            Ok(())
        })
    }

    fn credit(&mut self, depth: usize) -> Res<Nested<'a, Option<Scalar<'a>>>> {
        self.nested(depth, |r, messages: &mut Option<Scalar<'a>>, k, d| {
            match k {
                "messages" => first(messages, r.scalar(d)?),
                _ => skip(&mut r.cx, d, &mut Skip::charging())?,
            }
            Ok(())
        })
    }
}
