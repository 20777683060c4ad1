//! [`crate::Frame::to_value`]: a frame as the record value the reference would send, keys
//! from `shapes.rs`. Independent of the frame writer (`encode.rs`) on purpose: the tests
//! hold the writer's bytes to those of encoding this value.

use super::encode::integral;
use super::shapes::{self, META};
use crate::frame::{
    Call, CallMeta, Cancel, CapRevoked, DropFrame, Frame, Goaway, Hello, ResultFrame, StreamEvent,
    StreamFrame, WireStatus,
};
use crate::records::StaticShape;
use crate::text::Text;
use crate::value::{Record, Value};

/// The frame as a record value, keys in the reference's order.
pub(crate) fn frame_to_value(f: &Frame) -> Value {
    match f {
        Frame::Hello(h) => hello(h),
        Frame::Goaway(g) => goaway(g),
        Frame::Call(c) => call(c),
        Frame::Result(r) => result(r),
        Frame::Cancel(c) => cancel(c),
        Frame::Stream(s) => stream(s),
        Frame::Drop(d) => drop_frame(d),
        Frame::CapRevoked(c) => cap_revoked(c),
    }
}

/// A record of `shape`'s keys and these values, one per key.
fn record(shape: &StaticShape, values: Vec<Value>) -> Value {
    debug_assert_eq!(shape.keys.len(), values.len());
    let keys = shape.keys.iter().map(|k| Text::from_static(k));
    Value::Record(Record(keys.zip(values).collect()))
}

fn hello(h: &Hello) -> Value {
    let features = h.features.iter().map(|f| Value::from(f.as_str())).collect();
    record(
        &shapes::HELLO,
        vec![
            "hello".into(),
            Value::from(h.v),
            h.mode.as_str().into(),
            Value::Array(features),
            Value::uint(h.max_bytes),
            h.origin.as_str().into(),
        ],
    )
}

fn goaway(g: &Goaway) -> Value {
    let present = usize::from(g.reason.is_some()) | usize::from(g.error.is_some()) << 1;
    let mut values = vec![Value::from("goaway")];
    values.extend(g.reason.as_deref().map(Value::from));
    values.extend(g.error.as_ref().map(status));
    record(shapes::GOAWAY_SHAPES[present], values)
}

fn call(c: &Call) -> Value {
    let target = record(&shapes::TARGET, vec!["cap".into(), Value::from(c.target.0)]);
    record(
        &shapes::CALL,
        vec![
            "call".into(),
            Value::uint(c.id.0),
            target,
            c.method.as_str().into(),
            c.args.clone(),
            c.meta.as_ref().map_or(Value::Undefined, meta),
        ],
    )
}

fn meta(m: &CallMeta) -> Value {
    let present = usize::from(m.parent_call_id.is_some())
        | usize::from(m.deadline_ms.is_some()) << 1
        | usize::from(m.context.is_some()) << 2;
    let mut values = Vec::with_capacity(3);
    values.extend(m.parent_call_id.map(|p| Value::uint(p.0)));
    values.extend(
        m.deadline_ms
            .map(|ms| integral(ms).map_or(Value::Float(ms), Value::Int)),
    );
    values.extend(m.context.as_ref().map(|context| {
        Value::Record(
            context
                .iter()
                .map(|(k, v)| (Text::copy_from(k), Value::from(v.as_str())))
                .collect(),
        )
    }));
    record(META[present], values)
}

fn result(r: &ResultFrame) -> Value {
    let (shape, ok, payload) = match &r.outcome {
        Ok(v) => (&shapes::RESULT_OK, true, v.clone()),
        Err(s) => (&shapes::RESULT_ERROR, false, status(s)),
    };
    record(
        shape,
        vec!["result".into(), Value::uint(r.id.0), ok.into(), payload],
    )
}

fn cancel(c: &Cancel) -> Value {
    let reason = c.reason.as_deref().map_or(Value::Undefined, Value::from);
    record(
        &shapes::CANCEL,
        vec!["cancel".into(), Value::uint(c.id.0), reason],
    )
}

fn stream(s: &StreamFrame) -> Value {
    let (shape, ev, payload) = match &s.event {
        StreamEvent::Next(v) => (&shapes::STREAM_NEXT, "next", Some(v.clone())),
        StreamEvent::Credit(n) => {
            let credit = match n {
                Some(n) => record(&shapes::CREDIT, vec![Value::uint(*n)]),
                None => record(&shapes::EMPTY, vec![]),
            };
            (&shapes::STREAM_CREDIT, "credit", Some(credit))
        }
        StreamEvent::End => (&shapes::STREAM_END, "end", None),
        StreamEvent::Error(e) => (&shapes::STREAM_ERROR, "error", Some(status(e))),
    };
    let mut values = vec!["stream".into(), Value::uint(s.id.0), ev.into()];
    values.extend(payload);
    record(shape, values)
}

fn drop_frame(d: &DropFrame) -> Value {
    let caps = d
        .caps
        .iter()
        .map(|e| {
            record(
                &shapes::DROP_ENTRY,
                vec![Value::from(e.id.0), Value::from(e.delta)],
            )
        })
        .collect();
    record(&shapes::DROP, vec!["drop".into(), Value::Array(caps)])
}

fn cap_revoked(c: &CapRevoked) -> Value {
    let ids = c.cap_ids.iter().map(|id| Value::from(id.0)).collect();
    record(
        &shapes::CAP_REVOKED,
        vec!["cap_revoked".into(), Value::Array(ids)],
    )
}

/// The two shapes documented on [`WireStatus`].
fn status(s: &WireStatus) -> Value {
    let code = Value::from(s.code.as_str());
    let message = s.message.as_deref().map_or(Value::Undefined, Value::from);
    let optional = |v: &Option<Value>| v.clone().unwrap_or(Value::Undefined);
    if s.full || s.retry.is_some() {
        let values = vec![code, message, optional(&s.details), optional(&s.retry)];
        record(&shapes::STATUS_FULL, values)
    } else if let Some(details) = &s.details {
        record(
            &shapes::STATUS_DETAILS,
            vec![code, message, details.clone()],
        )
    } else {
        record(&shapes::STATUS, vec![code, message])
    }
}
