//! What a hostile or broken peer sends: frames a conforming peer never would, frames with a
//! field removed or of the wrong type, and raw bytes. Frames go through the sender's own
//! encoder after everything it queued, so the receiver's decoder stays in step and the
//! frame is judged on its content, not on a codec mismatch.

use bunite_wire::{
    Call, CallId, CallMeta, Cancel, CapId, CapRevoked, DropEntry, DropFrame, Frame, Goaway, Hello,
    Record, ResultFrame, StreamEvent, StreamFrame, Value,
};
use bytes::Bytes;

use super::side::{pump, Side};
use super::{Input, Report, METHODS};
use crate::status::Status;

/// A frame from `x` that `y` must survive.
pub(super) fn frame(x: &mut Side, y: &mut Side, input: &mut Input<'_>, report: &mut Report) {
    pump(x, y, usize::MAX, report);
    let kind = input.pick(11);
    let value = match kind {
        10 => mangled(y, input),
        k => build(k, y, input).to_value(),
    };
    let msg = Bytes::from(x.s.encoder.encode_to_vec(&value));
    deliver(y, &msg, report);
}

/// Raw bytes from `x`: mostly undecodable, sometimes a value that is no frame.
pub(super) fn bytes(x: &mut Side, y: &mut Side, input: &mut Input<'_>, report: &mut Report) {
    pump(x, y, usize::MAX, report);
    let n = usize::from(input.b()) * 2;
    let msg = Bytes::copy_from_slice(input.take(n));
    deliver(y, &msg, report);
}

fn deliver(y: &mut Side, msg: &Bytes, report: &mut Report) {
    y.tainted = true;
    report.hostile += 1;
    let _ = y.mirror.decode_frame_lazy(msg);
    let now = y.now;
    y.s.handle_message(msg, now);
}

/// One of the ids `y` knows (often), or one it does not.
fn id(input: &mut Input<'_>, known: &[CallId]) -> CallId {
    match input.pick(4) {
        0 if !known.is_empty() => known[input.pick(known.len())],
        1 => CallId(u64::from(input.b())),
        2 => CallId(0),
        _ => CallId((1 << 53) + u64::from(input.b())),
    }
}

fn cap(input: &mut Input<'_>, y: &Side) -> CapId {
    match input.pick(5) {
        0 => CapId(u32::from(input.b() % 4)),
        1 if !y.held.is_empty() => y.held[input.pick(y.held.len())],
        2 => CapId(2 + u32::from(input.b() % 16)),
        3 => CapId(u32::MAX),
        _ => CapId(2),
    }
}

fn build(kind: usize, y: &Side, input: &mut Input<'_>) -> Frame {
    let outbound: Vec<CallId> = y.pending.iter().map(|p| p.0).collect();
    let client_streams: Vec<CallId> = y.streams.iter().map(|s| s.0).collect();
    match kind {
        0 => Frame::Call(Call {
            id: id(input, &y.inbound_ids()),
            target: cap(input, y),
            method: METHODS[input.pick(METHODS.len())].into(),
            args: value(input, 0, true),
            meta: meta(input),
        }),
        1 => Frame::Result(ResultFrame {
            id: id(input, &outbound),
            outcome: if input.b() & 1 == 0 {
                Ok(value(input, 0, true))
            } else {
                Err(status(input).to_wire())
            },
        }),
        2 => Frame::Cancel(Cancel {
            id: id(input, &y.inbound_ids()),
            reason: (input.b() & 1 == 0).then(|| "hostile".to_owned()),
        }),
        3 => Frame::Stream(StreamFrame {
            id: id(input, &client_streams),
            event: StreamEvent::Next(value(input, 0, true)),
        }),
        4 => {
            let credit = [
                None,
                Some(0),
                Some(1),
                Some(8),
                Some(1 << 53),
                Some(u64::MAX),
            ];
            Frame::Stream(StreamFrame {
                id: id(input, &y.server_stream_ids()),
                event: StreamEvent::Credit(credit[input.pick(credit.len())]),
            })
        }
        5 => Frame::Stream(StreamFrame {
            id: id(input, &client_streams),
            event: if input.b() & 1 == 0 {
                StreamEvent::End
            } else {
                StreamEvent::Error(status(input).to_wire())
            },
        }),
        6 => Frame::Drop(DropFrame {
            caps: (0..input.pick(8))
                .map(|_| DropEntry {
                    id: cap(input, y),
                    delta: [0, 1, 2, u32::MAX][input.pick(4)],
                })
                .collect(),
        }),
        7 => Frame::CapRevoked(CapRevoked {
            cap_ids: (0..input.pick(8)).map(|_| cap(input, y)).collect(),
        }),
        8 => Frame::Hello(Hello {
            v: [1, 1, 2][input.pick(3)],
            mode: "web".into(),
            features: (0..input.pick(4)).map(|i| format!("f{i}")).collect(),
            max_bytes: [0, 16, 400, 1 << 20, u64::MAX][input.pick(5)],
            origin: "hostile".into(),
        }),
        _ => Frame::Goaway(Goaway {
            reason: Some("hostile".into()),
            error: (input.b() & 1 == 0).then(|| status(input).to_wire()),
        }),
    }
}

/// A frame with one key removed, one value of the wrong type, or another op.
fn mangled(y: &Side, input: &mut Input<'_>) -> Value {
    let k = input.pick(10);
    let mut v = build(k, y, input).to_value();
    let Value::Record(r) = &mut v else {
        return v;
    };
    let keys: Vec<String> = r.keys().map(str::to_owned).collect();
    let Some(key) = keys.get(input.pick(keys.len())) else {
        return v;
    };
    match input.pick(3) {
        0 => {
            r.remove(key);
        }
        1 => r.insert(key.clone(), value(input, 0, true)),
        _ => r.insert("op", ["call", "hello", "teleport", ""][input.pick(4)]),
    }
    v
}

fn meta(input: &mut Input<'_>) -> Option<CallMeta> {
    let flags = input.b();
    if flags & 1 == 0 {
        return None;
    }
    let deadlines = [
        None,
        Some(f64::NAN),
        Some(-1.0),
        Some(0.0),
        Some(5.0),
        Some(600.0),
        Some(1e300),
        Some(f64::INFINITY),
    ];
    Some(CallMeta {
        parent_call_id: (flags & 2 != 0).then(|| CallId(u64::from(input.b()))),
        deadline_ms: deadlines[input.pick(deadlines.len())],
        context: (flags & 4 != 0).then(|| vec![("k".to_owned(), "v".to_owned())]),
    })
}

/// A status as a handler may fail with: any code, a message up to 1 KiB, sometimes a reason.
pub(super) fn status(input: &mut Input<'_>) -> Status {
    let codes = ["cancelled", "internal", "not_found", "bogus", ""];
    let code = crate::status::Code::parse(codes[input.pick(codes.len())]);
    let message = "m".repeat(usize::from(input.b()) * 4);
    let status = Status::new(code.unwrap_or(crate::status::Code::Internal), message);
    match input.pick(3) {
        0 => status.with_reason("fuzz"),
        _ => status,
    }
}

/// A small value; CapRefs only when `caps` (a conforming handler returns caps only as
/// exports, so plain results carry none).
pub(super) fn value(input: &mut Input<'_>, depth: usize, caps: bool) -> Value {
    let b = input.b();
    let nested = depth < 4;
    match b % 13 {
        0 => Value::Undefined,
        1 => Value::Null,
        2 => Value::Bool(b & 0x80 != 0),
        3 => Value::Int(i64::from(input.b()) - 64),
        4 => Value::Int(input.u64() as i64),
        5 => Value::Float(f64::from_bits(input.u64())),
        6 => Value::Str("s".repeat(usize::from(input.b() % 32))),
        7 => {
            let n = usize::from(input.b() % 32);
            Value::Bin(input.take(n).to_vec())
        }
        8 if nested => {
            let n = input.pick(5);
            Value::Array((0..n).map(|_| value(input, depth + 1, caps)).collect())
        }
        9 if nested => {
            let keys = ["a", "b", "op", "id", "name"];
            let n = input.pick(4);
            let mut r = Record::new();
            for _ in 0..n {
                let k = keys[input.pick(keys.len())];
                r.insert(k, value(input, depth + 1, caps));
            }
            Value::Record(r)
        }
        10 if nested => {
            let k = value(input, depth + 1, false);
            Value::Map(vec![(k, value(input, depth + 1, caps))])
        }
        11 if caps => Value::CapRef(CapId(u32::from(input.b() % 8))),
        _ => Value::Str("long".repeat(usize::from(input.b()) * 2)),
    }
}
