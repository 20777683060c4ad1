//! Frames to and from values (PROTOCOL §4).
//!
//! Encoding goes through one borrowed [`View`] per frame, the single place that knows the
//! reference's key orders: [`Frame::to_value`] turns it into a [`Value`], and
//! [`crate::Encoder::encode_frame`] writes it directly without copying the payload.
//! Decoding reads a frame's [`fields`] either from a [`Value`] (`decode.rs`) or straight from
//! the bytes (`lazy.rs`), and one set of rules (`validate.rs`) turns them into a frame.

mod decode;
mod fields;
#[cfg(test)]
mod golden;
mod lazy;
#[cfg(test)]
mod tests;
mod validate;

pub(crate) use decode::{frame_from_value, frame_from_value_with};
pub(crate) use lazy::decode_lazy;
pub(crate) use validate::HelloBounds;

use crate::codec::View;
use crate::frame::{
    Call, CallMeta, Cancel, CapRevoked, DropFrame, Frame, Goaway, Hello, ResultFrame, StreamEvent,
    StreamFrame, WireStatus,
};
use crate::value::Value;

/// The frame as a record value, keys in the reference's order.
pub(crate) fn frame_to_value(f: &Frame) -> Value {
    frame_view(f).to_value()
}

/// The frame as a borrowed record, keys in the reference's order.
pub(crate) fn frame_view(f: &Frame) -> View<'_> {
    View::Record(match f {
        Frame::Hello(h) => hello(h),
        Frame::Goaway(g) => goaway(g),
        Frame::Call(c) => call(c),
        Frame::Result(r) => result(r),
        Frame::Cancel(c) => cancel(c),
        Frame::Stream(s) => stream(s),
        Frame::Drop(d) => drop_frame(d),
        Frame::CapRevoked(c) => cap_revoked(c),
    })
}

type Fields<'a> = Vec<(&'a str, View<'a>)>;

fn hello(h: &Hello) -> Fields<'_> {
    vec![
        ("op", View::Str("hello")),
        ("v", View::Int(i64::from(h.v))),
        ("mode", View::Str(&h.mode)),
        (
            "features",
            View::Array(h.features.iter().map(|f| View::Str(f)).collect()),
        ),
        ("maxBytes", View::UInt(h.max_bytes)),
        ("origin", View::Str(&h.origin)),
    ]
}

fn goaway(g: &Goaway) -> Fields<'_> {
    let mut fields = vec![("op", View::Str("goaway"))];
    if let Some(reason) = &g.reason {
        fields.push(("reason", View::Str(reason)));
    }
    if let Some(error) = &g.error {
        fields.push(("error", status(error)));
    }
    fields
}

fn call(c: &Call) -> Fields<'_> {
    let target = View::Record(vec![
        ("kind", View::Str("cap")),
        ("id", View::Int(i64::from(c.target.0))),
    ]);
    vec![
        ("op", View::Str("call")),
        ("id", View::UInt(c.id.0)),
        ("target", target),
        ("method", View::Str(c.method.as_str())),
        ("args", View::Value(&c.args)),
        ("meta", c.meta.as_ref().map_or(View::Undefined, meta)),
    ]
}

fn meta(m: &CallMeta) -> View<'_> {
    let mut fields = Vec::with_capacity(3);
    if let Some(parent) = m.parent_call_id {
        fields.push(("parentCallId", View::UInt(parent.0)));
    }
    if let Some(ms) = m.deadline_ms {
        fields.push(("deadlineMs", number(ms)));
    }
    if let Some(context) = &m.context {
        let entries = context
            .iter()
            .map(|(k, v)| (k.as_str(), View::Str(v)))
            .collect();
        fields.push(("context", View::Record(entries)));
    }
    View::Record(fields)
}

/// A float that holds an integer goes out as the integer, as a JS number would.
fn number(f: f64) -> View<'static> {
    // The bound keeps the cast exact; every integral f64 inside it is an i64.
    if f.fract() == 0.0 && f.abs() < 9.2e18 {
        View::Int(f as i64)
    } else {
        View::Float(f)
    }
}

fn result(r: &ResultFrame) -> Fields<'_> {
    let (ok, key, payload) = match &r.outcome {
        Ok(v) => (true, "value", View::Value(v)),
        Err(s) => (false, "error", status(s)),
    };
    vec![
        ("op", View::Str("result")),
        ("id", View::UInt(r.id.0)),
        ("ok", View::Bool(ok)),
        (key, payload),
    ]
}

fn cancel(c: &Cancel) -> Fields<'_> {
    vec![
        ("op", View::Str("cancel")),
        ("id", View::UInt(c.id.0)),
        (
            "reason",
            c.reason.as_deref().map_or(View::Undefined, View::Str),
        ),
    ]
}

fn stream(s: &StreamFrame) -> Fields<'_> {
    let (ev, payload) = match &s.event {
        StreamEvent::Next(v) => ("next", Some(("value", View::Value(v)))),
        StreamEvent::Credit(n) => {
            let fields = n.map_or_else(Vec::new, |n| vec![("messages", View::UInt(n))]);
            ("credit", Some(("credit", View::Record(fields))))
        }
        StreamEvent::End => ("end", None),
        StreamEvent::Error(e) => ("error", Some(("error", status(e)))),
    };
    let mut fields = vec![
        ("op", View::Str("stream")),
        ("id", View::UInt(s.id.0)),
        ("ev", View::Str(ev)),
    ];
    fields.extend(payload);
    fields
}

fn drop_frame(d: &DropFrame) -> Fields<'_> {
    let caps = d
        .caps
        .iter()
        .map(|e| {
            View::Record(vec![
                ("id", View::Int(i64::from(e.id.0))),
                ("delta", View::Int(i64::from(e.delta))),
            ])
        })
        .collect();
    vec![("op", View::Str("drop")), ("caps", View::Array(caps))]
}

fn cap_revoked(c: &CapRevoked) -> Fields<'_> {
    let ids = c
        .cap_ids
        .iter()
        .map(|id| View::Int(i64::from(id.0)))
        .collect();
    vec![
        ("op", View::Str("cap_revoked")),
        ("capIds", View::Array(ids)),
    ]
}

/// The two shapes documented on [`WireStatus`].
fn status(s: &WireStatus) -> View<'_> {
    let mut fields = vec![
        ("code", View::Str(&s.code)),
        (
            "message",
            s.message.as_deref().map_or(View::Undefined, View::Str),
        ),
    ];
    if s.full || s.retry.is_some() {
        fields.push(("details", optional(&s.details)));
        fields.push(("retry", optional(&s.retry)));
    } else if let Some(details) = &s.details {
        fields.push(("details", View::Value(details)));
    }
    View::Record(fields)
}

fn optional(v: &Option<Value>) -> View<'_> {
    v.as_ref().map_or(View::Undefined, View::Value)
}
