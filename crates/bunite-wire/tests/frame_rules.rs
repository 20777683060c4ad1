//! Frame validation agrees between the lazy reader ([`Decoder::decode_frame_lazy`]) and
//! [`Frame::from_value`]: arbitrary records with frame keys are accepted and refused alike,
//! with the same frame or the same error (one set of rules, two readers).

mod support;

use bunite_wire::{DecodeLimits, Decoder, Encoder, Frame, FrameDecodeError, Record, Value};
use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use support::strategies::value;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary records with frame keys: the lazy reader and `Frame::from_value` accept
    /// and refuse the same, with the same error.
    #[test]
    fn frames_validate_the_same_both_ways(frames in vec(frame_like(), 1..12)) {
        let (mut enc, mut dec) = (Encoder::new(), Decoder::new(DecodeLimits::default()));
        for v in &frames {
            let eager = Frame::from_value(v.clone());
            let lazy = dec
                .decode_frame_lazy(&Bytes::from(enc.encode_to_vec(v)))
                .map(|f| f.into_values().unwrap());
            match (eager, lazy) {
                (Ok(a), Ok(b)) => prop_assert_eq!(format!("{a:?}"), format!("{b:?}")),
                (Err(a), Err(FrameDecodeError::Frame(b))) => prop_assert_eq!(a, b),
                (a, b) => prop_assert!(false, "{:?}: from_value {:?}, lazy {:?}", v, a, b),
            }
        }
    }
}

/// A record of frame keys (and a few others) with plausible or arbitrary values.
fn frame_like() -> impl Strategy<Value = Value> {
    let op = prop_oneof![
        proptest::sample::select(vec![
            "hello",
            "goaway",
            "call",
            "result",
            "cancel",
            "stream",
            "drop",
            "cap_revoked",
            "nope"
        ])
        .prop_map(Value::from),
        value(),
    ];
    let small = prop_oneof![
        (0i64..5).prop_map(Value::Int),
        Just(Value::Undefined),
        Just(Value::Float(2.0)),
        proptest::sample::select(vec!["cap", "next", "credit", "end", "error", "m"])
            .prop_map(Value::from),
        Just(Value::Bool(true)),
        Just(Value::Bool(false)),
    ];
    let nested = prop_oneof![
        small.clone(),
        vec(small.clone(), 0..3).prop_map(Value::Array),
        vec(
            (
                proptest::sample::select(vec![
                    "kind",
                    "id",
                    "code",
                    "message",
                    "details",
                    "retry",
                    "messages",
                    "parentCallId",
                    "deadlineMs",
                    "context",
                    "delta",
                    "x"
                ]),
                small.clone()
            ),
            0..4
        )
        .prop_map(record),
        vec(
            vec(
                (
                    proptest::sample::select(vec!["id", "delta", "x"]),
                    small.clone()
                ),
                0..3
            )
            .prop_map(record),
            0..3
        )
        .prop_map(Value::Array),
        value(),
    ];
    let keys = vec![
        "id", "v", "mode", "origin", "maxBytes", "reason", "method", "ev", "ok", "features",
        "target", "meta", "args", "value", "error", "caps", "capIds", "credit", "other",
    ];
    (
        op,
        vec((proptest::sample::select(keys), nested), 0..8),
        any::<bool>(),
    )
        .prop_map(|(op, fields, op_last)| {
            let mut r = Record::new();
            if !op_last {
                r.insert("op", op.clone());
            }
            for (k, v) in fields {
                if r.get(k).is_none() {
                    r.insert(k, v);
                }
            }
            if op_last && r.get("op").is_none() {
                r.insert("op", op);
            }
            Value::Record(r)
        })
}

fn record(fields: Vec<(&'static str, Value)>) -> Value {
    let mut r = Record::new();
    for (k, v) in fields {
        if r.get(k).is_none() {
            r.insert(k, v);
        }
    }
    Value::Record(r)
}
