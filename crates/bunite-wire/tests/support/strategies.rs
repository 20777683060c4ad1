//! Proptest strategies for arbitrary values, shared by the property-test binaries.

use bunite_wire::{
    Call, CallId, CallMeta, Cancel, CapId, CapRevoked, DropEntry, DropFrame, Frame, Goaway, Hello,
    Record, ResultFrame, StreamEvent, StreamFrame, Timestamp, TypedArray, TypedArrayKind, Value,
    WireStatus,
};
use proptest::collection::vec;
use proptest::prelude::*;

pub fn typed_array() -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(TypedArrayKind::ALL.to_vec()),
        vec(any::<u8>(), 0..24),
    )
        .prop_map(|(kind, mut bytes)| {
            bytes.truncate(bytes.len() - bytes.len() % kind.element_size());
            Value::TypedArray(TypedArray { kind, bytes })
        })
}

pub fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Undefined),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (-100i64..300).prop_map(Value::Int),
        ((1u64 << 63)..=u64::MAX).prop_map(Value::UInt),
        any::<f64>().prop_map(Value::Float),
        ".{0,40}".prop_map(Value::Str),
        vec(any::<u8>(), 0..40).prop_map(Value::Bin),
        any::<u32>().prop_map(|n| Value::CapRef(CapId(n))),
        typed_array(),
        (any::<i64>(), 0u32..1_000_000_000)
            .prop_map(|(seconds, nanos)| Value::Timestamp(Timestamp { seconds, nanos })),
        Just(Value::Timestamp(Timestamp::INVALID)),
    ]
}

/// Keys from a small pool, so shapes repeat (references) as well as multiply (evictions).
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec!["a", "b", "c", "id", "op", "value"]).prop_map(String::from),
        "[a-z]{0,6}",
    ]
}

pub fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            vec((key(), inner.clone()), 0..6).prop_map(|fields| {
                // Record keys are unique, as in a JS object.
                let mut record = Record::new();
                for (k, v) in fields {
                    if record.get(&k).is_none() {
                        record.0.push((k.into(), v));
                    }
                }
                Value::Record(record)
            }),
            vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
        ]
    })
}

/// A status of either documented shape.
pub fn status() -> impl Strategy<Value = WireStatus> {
    (
        "[a-z_]{0,12}",
        proptest::option::of(".{0,8}"),
        proptest::option::of(leaf()),
        proptest::option::of(leaf()),
        any::<bool>(),
    )
        .prop_map(|(code, message, details, retry, full)| WireStatus {
            code,
            message,
            details,
            retry,
            full,
        })
}

/// Any frame, payloads and all.
pub fn frame() -> impl Strategy<Value = Frame> {
    let id = prop_oneof![0u64..64, 0u64..1 << 53].prop_map(CallId);
    let cap = any::<u32>().prop_map(CapId);
    let meta = proptest::option::of(
        (
            proptest::option::of(id.clone()),
            proptest::option::of(prop_oneof![
                any::<f64>(),
                (0i64..100_000).prop_map(|n| n as f64)
            ]),
            proptest::option::of(vec(("[a-z]{0,4}", ".{0,6}"), 0..3)),
        )
            .prop_map(|(parent_call_id, deadline_ms, context)| CallMeta {
                parent_call_id,
                deadline_ms,
                context: context.map(|c| {
                    // Distinct keys, as a record needs.
                    let mut seen = std::collections::BTreeSet::new();
                    c.into_iter()
                        .filter(|(k, _)| seen.insert(k.clone()))
                        .collect()
                }),
            }),
    );
    prop_oneof![
        (".{0,6}", vec(".{0,4}", 0..3), any::<u64>(), ".{0,6}").prop_map(
            |(mode, features, max_bytes, origin)| Frame::Hello(Hello {
                v: 1,
                mode,
                features,
                max_bytes,
                origin,
            })
        ),
        (
            proptest::option::of(".{0,6}"),
            proptest::option::of(status())
        )
            .prop_map(|(reason, error)| Frame::Goaway(Goaway { reason, error })),
        (id.clone(), cap.clone(), "[a-z]{0,30}", value(), meta).prop_map(
            |(id, target, method, args, meta)| Frame::Call(Call {
                id,
                target,
                method: method.into(),
                args,
                meta,
            })
        ),
        (
            id.clone(),
            prop_oneof![value().prop_map(Ok), status().prop_map(Err)]
        )
            .prop_map(|(id, outcome)| Frame::Result(ResultFrame { id, outcome })),
        (id.clone(), proptest::option::of(".{0,8}"))
            .prop_map(|(id, reason)| Frame::Cancel(Cancel { id, reason })),
        (
            id,
            prop_oneof![
                value().prop_map(StreamEvent::Next),
                proptest::option::of(any::<u64>()).prop_map(StreamEvent::Credit),
                Just(StreamEvent::End),
                status().prop_map(StreamEvent::Error),
            ]
        )
            .prop_map(|(id, event)| Frame::Stream(StreamFrame { id, event })),
        vec((cap.clone(), any::<u32>()), 0..4).prop_map(|caps| Frame::Drop(DropFrame {
            caps: caps
                .into_iter()
                .map(|(id, delta)| DropEntry { id, delta })
                .collect(),
        })),
        vec(cap, 0..4).prop_map(|cap_ids| Frame::CapRevoked(CapRevoked { cap_ids })),
    ]
}
