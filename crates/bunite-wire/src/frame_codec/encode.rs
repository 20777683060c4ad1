//! Frames written straight to msgpack ([`crate::Encoder::encode_frame`]): each kind's record
//! header (its static shape, `shapes.rs`), then its values in order, with no intermediate
//! value tree. The bytes are those of encoding [`crate::Frame::to_value`] (`to_value.rs`),
//! which the property tests check across ring evictions and failed bounded encodes.

use super::shapes::{self, META};
use crate::codec::encode::{Res, Writer};
use crate::frame::{
    Call, CallMeta, Cancel, CapRevoked, DropFrame, Frame, Goaway, Hello, ResultFrame, StreamEvent,
    StreamFrame, WireStatus,
};
use crate::outgoing::AsOutgoing;
use crate::records::KeyRef;
use crate::value::Value;

/// A frame's payload type: what a call's args, a result's value and a stream's value are.
pub(crate) trait WritePayload {
    fn write_payload(&self, w: &mut Writer<'_>) -> Res;
}

impl WritePayload for Value {
    #[inline]
    fn write_payload(&self, w: &mut Writer<'_>) -> Res {
        w.value(self)
    }
}

impl<P: AsOutgoing> WritePayload for P {
    #[inline]
    fn write_payload(&self, w: &mut Writer<'_>) -> Res {
        self.as_outgoing().write(w)
    }
}

/// Writes `f`.
pub(crate) fn frame<P: WritePayload>(w: &mut Writer<'_>, f: &Frame<P>) -> Res {
    match f {
        Frame::Hello(h) => hello(w, h),
        Frame::Goaway(g) => goaway(w, g),
        Frame::Call(c) => call(w, c),
        Frame::Result(r) => result(w, r),
        Frame::Cancel(c) => cancel(w, c),
        Frame::Stream(s) => stream(w, s),
        Frame::Drop(d) => drop_frame(w, d),
        Frame::CapRevoked(c) => cap_revoked(w, c),
    }
}

fn hello(w: &mut Writer<'_>, h: &Hello) -> Res {
    w.static_record(&shapes::HELLO)?;
    w.str_v("hello")?;
    w.int_v(i64::from(h.v))?;
    w.str_v(&h.mode)?;
    w.array_header(h.features.len())?;
    for feature in &h.features {
        w.str_v(feature)?;
    }
    w.end()?;
    w.uint_v(h.max_bytes)?;
    w.str_v(&h.origin)?;
    w.end()
}

fn goaway(w: &mut Writer<'_>, g: &Goaway) -> Res {
    let present = usize::from(g.reason.is_some()) | usize::from(g.error.is_some()) << 1;
    w.static_record(shapes::GOAWAY_SHAPES[present])?;
    w.str_v("goaway")?;
    if let Some(reason) = &g.reason {
        w.str_v(reason)?;
    }
    if let Some(error) = &g.error {
        status(w, error)?;
    }
    w.end()
}

fn call<P: WritePayload>(w: &mut Writer<'_>, c: &Call<P>) -> Res {
    w.static_record(&shapes::CALL)?;
    w.str_v("call")?;
    w.uint_v(c.id.0)?;
    w.static_record(&shapes::TARGET)?;
    w.str_v("cap")?;
    w.int_v(i64::from(c.target.0))?;
    w.end()?;
    w.utf8_v(c.method.as_bytes())?;
    c.args.write_payload(w)?;
    match &c.meta {
        None => w.undefined_v()?,
        Some(m) => meta(w, m)?,
    }
    w.end()
}

fn meta(w: &mut Writer<'_>, m: &CallMeta) -> Res {
    let present = usize::from(m.parent_call_id.is_some())
        | usize::from(m.deadline_ms.is_some()) << 1
        | usize::from(m.context.is_some()) << 2;
    w.static_record(META[present])?;
    if let Some(parent) = m.parent_call_id {
        w.uint_v(parent.0)?;
    }
    if let Some(ms) = m.deadline_ms {
        number(w, ms)?;
    }
    if let Some(context) = &m.context {
        w.record_header(context.iter().map(|(k, _)| KeyRef::Bytes(k.as_bytes())))?;
        for (_, v) in context {
            w.str_v(v)?;
        }
        w.end()?;
    }
    w.end()
}

/// A float that holds an integer goes out as the integer, as a JS number would.
pub(crate) fn number(w: &mut Writer<'_>, f: f64) -> Res {
    match integral(f) {
        Some(n) => w.int_v(n),
        None => w.float_v(f),
    }
}

/// `f` as an integer, when it is one that an `i64` holds exactly.
pub(crate) fn integral(f: f64) -> Option<i64> {
    // The bound keeps the cast exact; every integral f64 inside it is an i64.
    (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
}

fn result<P: WritePayload>(w: &mut Writer<'_>, r: &ResultFrame<P>) -> Res {
    let shape = match &r.outcome {
        Ok(_) => &shapes::RESULT_OK,
        Err(_) => &shapes::RESULT_ERROR,
    };
    w.static_record(shape)?;
    w.str_v("result")?;
    w.uint_v(r.id.0)?;
    match &r.outcome {
        Ok(v) => {
            w.bool_v(true)?;
            v.write_payload(w)?;
        }
        Err(s) => {
            w.bool_v(false)?;
            status(w, s)?;
        }
    }
    w.end()
}

fn cancel(w: &mut Writer<'_>, c: &Cancel) -> Res {
    w.static_record(&shapes::CANCEL)?;
    w.str_v("cancel")?;
    w.uint_v(c.id.0)?;
    w.opt_str_v(c.reason.as_deref())?;
    w.end()
}

fn stream<P: WritePayload>(w: &mut Writer<'_>, s: &StreamFrame<P>) -> Res {
    let (shape, ev) = match &s.event {
        StreamEvent::Next(_) => (&shapes::STREAM_NEXT, "next"),
        StreamEvent::Credit(_) => (&shapes::STREAM_CREDIT, "credit"),
        StreamEvent::End => (&shapes::STREAM_END, "end"),
        StreamEvent::Error(_) => (&shapes::STREAM_ERROR, "error"),
    };
    w.static_record(shape)?;
    w.str_v("stream")?;
    w.uint_v(s.id.0)?;
    w.str_v(ev)?;
    match &s.event {
        StreamEvent::Next(v) => v.write_payload(w)?,
        StreamEvent::Credit(Some(n)) => {
            w.static_record(&shapes::CREDIT)?;
            w.uint_v(*n)?;
            w.end()?;
        }
        StreamEvent::Credit(None) => {
            w.static_record(&shapes::EMPTY)?;
            w.end()?;
        }
        StreamEvent::End => {}
        StreamEvent::Error(e) => status(w, e)?,
    }
    w.end()
}

fn drop_frame(w: &mut Writer<'_>, d: &DropFrame) -> Res {
    w.static_record(&shapes::DROP)?;
    w.str_v("drop")?;
    w.array_header(d.caps.len())?;
    for e in &d.caps {
        w.static_record(&shapes::DROP_ENTRY)?;
        w.int_v(i64::from(e.id.0))?;
        w.int_v(i64::from(e.delta))?;
        w.end()?;
    }
    w.end()?;
    w.end()
}

fn cap_revoked(w: &mut Writer<'_>, c: &CapRevoked) -> Res {
    w.static_record(&shapes::CAP_REVOKED)?;
    w.str_v("cap_revoked")?;
    w.array_header(c.cap_ids.len())?;
    for id in &c.cap_ids {
        w.int_v(i64::from(id.0))?;
    }
    w.end()?;
    w.end()
}

/// The two shapes documented on [`WireStatus`].
fn status(w: &mut Writer<'_>, s: &WireStatus) -> Res {
    let full = s.full || s.retry.is_some();
    let shape = if full {
        &shapes::STATUS_FULL
    } else if s.details.is_some() {
        &shapes::STATUS_DETAILS
    } else {
        &shapes::STATUS
    };
    w.static_record(shape)?;
    w.str_v(&s.code)?;
    w.opt_str_v(s.message.as_deref())?;
    if full {
        optional(w, s.details.as_ref())?;
        optional(w, s.retry.as_ref())?;
    } else if let Some(details) = &s.details {
        w.value(details)?;
    }
    w.end()
}

fn optional(w: &mut Writer<'_>, v: Option<&Value>) -> Res {
    match v {
        Some(v) => w.value(v),
        None => w.undefined_v(),
    }
}
