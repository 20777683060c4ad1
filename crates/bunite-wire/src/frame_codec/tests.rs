//! Unit tests of frame validation: one failure of each kind per op, the lenient cases, and
//! round trips of every frame kind.

use super::*;
use crate::frame::{
    Call, CallMeta, Cancel, CapRevoked, DropEntry, DropFrame, Frame, FrameError, Goaway, Hello,
    ResultFrame, StreamEvent, StreamFrame, WireStatus,
};
use crate::ids::{CallId, CapId};
use crate::value::{Record, Value};

fn rec(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(Record(
        fields
            .into_iter()
            .map(|(k, v)| (crate::Text::copy_from(k), v))
            .collect(),
    ))
}

fn frame(op: &str, mut fields: Vec<(&str, Value)>) -> Result<Frame, FrameError> {
    fields.insert(0, ("op", Value::from(op)));
    frame_from_value(rec(fields))
}

fn invalid(op: &'static str, field: &'static str) -> Result<Frame, FrameError> {
    Err(FrameError::Invalid { op, field })
}

fn int(n: i64) -> Value {
    Value::Int(n)
}

fn call_fields(id: Value, target: Value, meta: Value) -> Vec<(&'static str, Value)> {
    vec![
        ("id", id),
        ("target", target),
        ("method", "m".into()),
        ("meta", meta),
    ]
}

fn target(id: i64) -> Value {
    rec(vec![("kind", "cap".into()), ("id", int(id))])
}

#[test]
fn not_a_frame() {
    assert_eq!(frame_from_value(Value::Null), Err(FrameError::NotRecord));
    assert_eq!(frame_from_value(rec(vec![])), Err(FrameError::MissingOp));
    assert_eq!(
        frame_from_value(rec(vec![("op", int(1))])),
        Err(FrameError::MissingOp)
    );
    assert_eq!(
        frame("nope", vec![]),
        Err(FrameError::UnknownOp("nope".into()))
    );
}

#[test]
fn hello_validation_and_defaults() {
    assert_eq!(
        frame("hello", vec![("v", int(2))]),
        Err(FrameError::Version("2".into()))
    );
    assert_eq!(
        frame("hello", vec![]),
        Err(FrameError::Version("undefined".into()))
    );
    assert_eq!(
        frame("hello", vec![("v", "1".into())]),
        Err(FrameError::Version("\"1\"".into()))
    );
    let Ok(Frame::Hello(h)) = frame("hello", vec![("v", Value::Float(1.0))]) else {
        panic!("a bare hello is valid");
    };
    assert_eq!(
        (
            h.mode.as_str(),
            h.features.len(),
            h.max_bytes,
            h.origin.as_str()
        ),
        ("native", 0, 64 << 20, "")
    );
    let v1 = ("v", int(1));
    assert_eq!(
        frame("hello", vec![v1.clone(), ("mode", int(1))]),
        invalid("hello", "mode")
    );
    assert_eq!(
        frame("hello", vec![v1.clone(), ("features", "x".into())]),
        invalid("hello", "features")
    );
    assert_eq!(
        frame("hello", vec![v1.clone(), ("features", vec![int(1)].into())]),
        invalid("hello", "features")
    );
    assert_eq!(
        frame("hello", vec![v1.clone(), ("maxBytes", int(-1))]),
        invalid("hello", "maxBytes")
    );
    assert_eq!(
        frame(
            "hello",
            vec![v1.clone(), ("maxBytes", Value::Float(f64::NAN))]
        ),
        invalid("hello", "maxBytes")
    );
    assert_eq!(
        frame("hello", vec![v1, ("origin", Value::Null)]),
        invalid("hello", "origin")
    );
}

#[test]
fn goaway_validation() {
    assert_eq!(
        frame("goaway", vec![]),
        Ok(Frame::Goaway(Goaway::default()))
    );
    assert_eq!(
        frame("goaway", vec![("reason", int(1))]),
        invalid("goaway", "reason")
    );
    assert_eq!(
        frame("goaway", vec![("error", "x".into())]),
        invalid("goaway", "error")
    );
    assert_eq!(
        frame(
            "goaway",
            vec![("error", rec(vec![("message", "m".into())]))]
        ),
        invalid("goaway", "error.code")
    );
}

#[test]
fn call_validation() {
    let undef = Value::Undefined;
    let ok = frame(
        "call",
        call_fields(Value::Float(7.0), target(2), undef.clone()),
    );
    let Ok(Frame::Call(c)) = ok else {
        panic!("{ok:?}")
    };
    assert_eq!(
        (c.id, c.target, c.args, c.meta),
        (CallId(7), CapId(2), undef.clone(), None)
    );
    let bad = |id: Value, target: Value, meta: Value| frame("call", call_fields(id, target, meta));
    assert_eq!(
        bad(int(-1), target(2), undef.clone()),
        invalid("call", "id")
    );
    assert_eq!(
        bad(int(1 << 53), target(2), undef.clone()),
        invalid("call", "id")
    );
    assert_eq!(
        bad(Value::Float(1.5), target(2), undef.clone()),
        invalid("call", "id")
    );
    assert_eq!(
        bad(int(1), int(2), undef.clone()),
        invalid("call", "target")
    );
    assert_eq!(
        bad(int(1), target(1 << 32), undef.clone()),
        invalid("call", "target.id")
    );
    let wrong_kind = rec(vec![("kind", "obj".into()), ("id", int(2))]);
    assert_eq!(
        bad(int(1), wrong_kind, undef.clone()),
        invalid("call", "target.kind")
    );
    let kindless = rec(vec![("id", int(2))]);
    assert!(bad(int(1), kindless, Value::Null).is_ok());
    assert_eq!(bad(int(1), target(2), "x".into()), invalid("call", "meta"));
    let meta = |k: &str, v: Value| rec(vec![(k, v)]);
    assert_eq!(
        bad(int(1), target(2), meta("parentCallId", "x".into())),
        invalid("call", "meta.parentCallId")
    );
    assert_eq!(
        bad(
            int(1),
            target(2),
            meta("deadlineMs", Value::Float(f64::INFINITY))
        ),
        invalid("call", "meta.deadlineMs")
    );
    assert_eq!(
        bad(int(1), target(2), meta("context", rec(vec![("k", int(1))]))),
        invalid("call", "meta.context")
    );
    let mut fields = call_fields(int(1), target(2), undef);
    fields.retain(|(k, _)| *k != "method");
    assert_eq!(frame("call", fields), invalid("call", "method"));
}

#[test]
fn result_validation() {
    assert_eq!(
        frame("result", vec![("id", int(1))]),
        invalid("result", "ok")
    );
    let ok = frame("result", vec![("id", int(1)), ("ok", true.into())]);
    assert_eq!(
        ok,
        Ok(Frame::Result(ResultFrame {
            id: CallId(1),
            outcome: Ok(Value::Undefined)
        }))
    );
    let failed = |error: Option<Value>| {
        let mut fields = vec![("id", int(1)), ("ok", false.into())];
        fields.extend(error.map(|e| ("error", e)));
        frame("result", fields)
    };
    assert_eq!(failed(None), invalid("result", "error"));
    assert_eq!(failed(Some(rec(vec![]))), invalid("result", "error.code"));
    let bad_message = rec(vec![("code", "internal".into()), ("message", int(1))]);
    assert_eq!(
        failed(Some(bad_message)),
        invalid("result", "error.message")
    );
}

#[test]
fn cancel_validation() {
    let c = |reason: Option<Value>| {
        let mut fields = vec![("id", int(3))];
        fields.extend(reason.map(|r| ("reason", r)));
        frame("cancel", fields)
    };
    let none = Ok(Frame::Cancel(Cancel {
        id: CallId(3),
        reason: None,
    }));
    assert_eq!(c(None), none);
    assert_eq!(c(Some(Value::Undefined)), none);
    assert_eq!(c(Some(Value::Null)), invalid("cancel", "reason"));
    assert_eq!(c(Some(int(1))), invalid("cancel", "reason"));
    assert_eq!(frame("cancel", vec![]), invalid("cancel", "id"));
}

#[test]
fn stream_validation_and_lenient_credit() {
    let s = |ev: &str, extra: Option<(&'static str, Value)>| {
        let mut fields = vec![("id", int(5)), ("ev", ev.into())];
        fields.extend(extra);
        frame("stream", fields).map(|f| match f {
            Frame::Stream(s) => s.event,
            other => panic!("{other:?}"),
        })
    };
    let messages = |v: Value| Some(("credit", rec(vec![("messages", v)])));
    assert_eq!(
        s("credit", messages(int(8))),
        Ok(StreamEvent::Credit(Some(8)))
    );
    assert_eq!(
        s("credit", messages(Value::Float(8.0))),
        Ok(StreamEvent::Credit(Some(8)))
    );
    assert_eq!(
        s("credit", messages(int(-1))),
        Ok(StreamEvent::Credit(None))
    );
    assert_eq!(
        s("credit", messages(Value::Float(0.5))),
        Ok(StreamEvent::Credit(None))
    );
    assert_eq!(
        s("credit", Some(("credit", int(8)))),
        Ok(StreamEvent::Credit(None))
    );
    assert_eq!(s("credit", None), Ok(StreamEvent::Credit(None)));
    assert_eq!(s("next", None), Ok(StreamEvent::Next(Value::Undefined)));
    assert_eq!(s("end", None), Ok(StreamEvent::End));
    let invalid_event = |field| {
        Err(FrameError::Invalid {
            op: "stream",
            field,
        })
    };
    assert_eq!(s("error", None), invalid_event("error"));
    assert_eq!(s("later", None), invalid_event("ev"));
    assert_eq!(
        frame("stream", vec![("id", int(5))]),
        invalid("stream", "ev")
    );
}

#[test]
fn drop_validation_clamps_deltas() {
    let entry = |id: Value, delta: Value| rec(vec![("id", id), ("delta", delta)]);
    let d = |entries: Vec<Value>| frame("drop", vec![("caps", entries.into())]);
    let deltas = [
        (int(3), 3),
        (int(-3), 0),
        (Value::Float(1.5), 0),
        (Value::Float(-2.0), 0),
        (Value::Float(f64::NAN), 0),
        (Value::Float(2.0), 2),
        (int(1 << 40), u32::MAX),
        (Value::Float(1e300), u32::MAX),
        (Value::UInt(u64::MAX), u32::MAX),
    ];
    for (delta, expected) in deltas {
        let got = d(vec![entry(int(2), delta.clone())]);
        let want = Frame::Drop(DropFrame {
            caps: vec![DropEntry {
                id: CapId(2),
                delta: expected,
            }],
        });
        assert_eq!(got, Ok(want), "delta {delta:?}");
    }
    assert_eq!(
        d(vec![entry(int(2), "1".into())]),
        invalid("drop", "caps.delta")
    );
    assert_eq!(d(vec![entry(int(-2), int(1))]), invalid("drop", "caps.id"));
    assert_eq!(d(vec![int(2)]), invalid("drop", "caps"));
    assert_eq!(
        frame("drop", vec![("caps", int(2))]),
        invalid("drop", "caps")
    );
}

#[test]
fn cap_revoked_validation() {
    let c = |ids: Vec<Value>| frame("cap_revoked", vec![("capIds", ids.into())]);
    assert_eq!(
        c(vec![int(2), Value::Float(3.0)]),
        Ok(Frame::CapRevoked(CapRevoked {
            cap_ids: vec![CapId(2), CapId(3)]
        }))
    );
    assert_eq!(c(vec![int(-1)]), invalid("cap_revoked", "capIds"));
    assert_eq!(c(vec![int(1 << 32)]), invalid("cap_revoked", "capIds"));
    assert_eq!(
        frame("cap_revoked", vec![]),
        invalid("cap_revoked", "capIds")
    );
}

fn every_kind_of_frame() -> Vec<Frame> {
    let status = WireStatus::new("internal", "boom");
    let full = WireStatus {
        full: true,
        ..WireStatus::new("not_found", "gone").with_reason("x")
    };
    let retrying = WireStatus {
        retry: Some(Value::Record(Record::new().with("kind", "never"))),
        message: None,
        // A retry always goes out in the four-key shape, which decodes as `full`.
        full: true,
        ..WireStatus::new("unavailable", "")
    };
    vec![
        Frame::Hello(Hello {
            v: 1,
            mode: "web".into(),
            features: vec!["a".into(), "b".into()],
            max_bytes: u64::MAX,
            origin: "o".into(),
        }),
        Frame::Goaway(Goaway {
            reason: Some("bye".into()),
            error: Some(full.clone()),
        }),
        Frame::Call(Call {
            id: CallId(CallId::MAX.0),
            target: CapId(u32::MAX),
            method: "m".into(),
            args: Value::Array(vec![Value::Null]),
            meta: Some(CallMeta {
                parent_call_id: Some(CallId(1)),
                deadline_ms: Some(2.5),
                context: Some(vec![("k".into(), "v".into())]),
            }),
        }),
        Frame::Call(Call {
            id: CallId(2),
            target: CapId(0),
            method: "bootstrap".into(),
            args: Value::Undefined,
            meta: Some(CallMeta::default()),
        }),
        Frame::Result(ResultFrame {
            id: CallId(3),
            outcome: Err(retrying),
        }),
        Frame::Result(ResultFrame {
            id: CallId(3),
            outcome: Ok(Value::Int(1)),
        }),
        Frame::Cancel(Cancel {
            id: CallId(4),
            reason: None,
        }),
        Frame::Stream(StreamFrame {
            id: CallId(5),
            event: StreamEvent::Credit(None),
        }),
        Frame::Stream(StreamFrame {
            id: CallId(5),
            event: StreamEvent::Error(status),
        }),
        Frame::Drop(DropFrame { caps: vec![] }),
        Frame::CapRevoked(CapRevoked {
            cap_ids: vec![CapId(9)],
        }),
    ]
}

#[test]
fn every_frame_kind_round_trips() {
    for f in every_kind_of_frame() {
        assert_eq!(frame_from_value(f.to_value()), Ok(f.clone()), "{f:?}");
    }
}

#[test]
fn status_shapes_follow_the_documented_rules() {
    let keys = |s: &WireStatus| -> Vec<String> {
        let goaway = Frame::Goaway(Goaway {
            reason: None,
            error: Some(s.clone()),
        });
        match goaway.to_value().as_record().and_then(|r| r.get("error")) {
            Some(Value::Record(r)) => r.keys().map(str::to_owned).collect(),
            other => panic!("{other:?}"),
        }
    };
    let compact = WireStatus::new("internal", "m");
    assert_eq!(keys(&compact), ["code", "message"]);
    assert_eq!(
        keys(&compact.clone().with_reason("r")),
        ["code", "message", "details"]
    );
    let full = WireStatus {
        full: true,
        ..compact.clone()
    };
    assert_eq!(keys(&full), ["code", "message", "details", "retry"]);
    let retry = WireStatus {
        retry: Some(Value::Null),
        ..compact
    };
    assert_eq!(keys(&retry), ["code", "message", "details", "retry"]);
}

#[test]
fn deadlines_are_integers_when_integral() {
    let m = |ms: f64| {
        let call = Frame::Call(Call {
            id: CallId(1),
            target: CapId(2),
            method: "m".into(),
            args: Value::Undefined,
            meta: Some(CallMeta {
                deadline_ms: Some(ms),
                ..CallMeta::default()
            }),
        });
        let v = call.to_value();
        v.as_record().and_then(|r| r.get("meta")).cloned().unwrap()
    };
    let deadline = |v: Value| v.as_record().and_then(|r| r.get("deadlineMs")).cloned();
    assert_eq!(deadline(m(1000.0)), Some(Value::Int(1000)));
    assert_eq!(deadline(m(0.5)), Some(Value::Float(0.5)));
}

/// A large payload is copied into the frame once: the fields after it fit in room
/// reserved with it, so the buffer does not double (and copy the payload again) for them.
#[test]
fn a_large_payload_is_copied_once() {
    for len in [4096, 65536, 1 << 20] {
        let frame = Frame::Call(Call {
            id: CallId(7),
            target: CapId(1),
            method: "echo".into(),
            args: Value::Bin(vec![0x5a; len]),
            meta: Some(CallMeta {
                parent_call_id: Some(CallId(1)),
                deadline_ms: Some(2.5),
                context: Some(vec![("k".into(), "v".into())]),
            }),
        });
        let mut out = Vec::new();
        crate::Encoder::new().encode_frame(&frame, &mut out);
        assert!(out.len() > len, "{len}: {} bytes", out.len());
        assert!(
            out.capacity() < out.len() + 1024,
            "{len}: capacity {} for {} bytes",
            out.capacity(),
            out.len()
        );
    }
}

/// A connection's calls of one method with a long name share the name the decoder made for
/// the first of them (`text::LastName`).
#[test]
fn calls_naming_one_long_method_share_its_name() {
    let long = "incrementUnderAVeryLongName";
    let call = |id: u64, method: &'static str| {
        Frame::Call(Call {
            id: CallId(id),
            target: CapId(2),
            method: crate::Text::from_static(method),
            args: Value::Undefined,
            meta: None,
        })
    };
    let mut enc = crate::Encoder::new();
    let mut dec = crate::Decoder::new(crate::limits::DecodeLimits::default());
    let mut method = |frame: Frame<Value>| {
        let mut out = Vec::new();
        enc.encode_frame(&frame, &mut out);
        match dec.decode_frame_lazy(&bytes::Bytes::from(out)) {
            Ok(Frame::Call(c)) => c.method,
            other => panic!("{other:?}"),
        }
    };
    // The first call defines the frame's record shape, which the general reader reads;
    // the calls after it refer to the shape and take the fast path, which shares names.
    assert_eq!(method(call(1, "inc")), "inc");
    let first = method(call(1, long));
    let second = method(call(2, long));
    assert_eq!(second, long);
    assert!(
        second.same_allocation(&first),
        "the second call shares the name"
    );
    let other = method(call(3, "anotherMethodWithALongName"));
    assert_eq!(other, "anotherMethodWithALongName");
    let again = method(call(4, long));
    assert_eq!(again, long);
    assert!(
        !again.same_allocation(&first),
        "replaced by the other name meanwhile"
    );
}
