//! Proptest strategies for arbitrary values, shared by the property-test binaries.

use bunite_wire::{CapId, Record, Timestamp, TypedArray, TypedArrayKind, Value};
use proptest::collection::vec;
use proptest::prelude::*;

pub fn typed_array() -> impl Strategy<Value = Value> {
    let kinds = [
        TypedArrayKind::Int8,
        TypedArrayKind::Uint8,
        TypedArrayKind::Uint8Clamped,
        TypedArrayKind::Int16,
        TypedArrayKind::Uint16,
        TypedArrayKind::Int32,
        TypedArrayKind::Uint32,
        TypedArrayKind::Float32,
        TypedArrayKind::Float64,
        TypedArrayKind::BigInt64,
        TypedArrayKind::BigUint64,
        TypedArrayKind::ArrayBuffer,
        TypedArrayKind::DataView,
    ];
    (
        proptest::sample::select(kinds.to_vec()),
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
