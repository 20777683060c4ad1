//! Lazy payloads agree with the eager routes.
//!
//! Values are encoded into frames by one long-lived [`Encoder`] and decoded lazily by one
//! long-lived [`Decoder`] (so record definitions are referenced, redefined and nested inside
//! payloads). For every payload, [`Payload::deserialize`] into each target type must give
//! exactly what `from_value` gives on [`Payload::to_value`]: the same value, or an error in
//! both (compared through `Debug`, so error messages and NaNs count too). (`frame_rules.rs`
//! holds frame validation to the same.)

mod support;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use bunite_wire::{
    from_value, to_value, CallId, CapId, CapRef, DecodeLimits, Decoder, Encoder, Frame, Payload,
    Record, ResultFrame, Timestamp, Value,
};
use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use support::strategies::{key, value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Plain {
    id: i64,
    name: String,
    #[serde(rename = "scoreValue")]
    score: f64,
    tag: Option<String>,
    #[serde(default)]
    missing: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    cap: Option<CapRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum External {
    Unit,
    New(i32),
    Tuple(u8, String),
    Struct { a: Option<bool>, b: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum Internal {
    Point { x: i32, y: i32 },
    Label { text: String },
    Empty,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "c")]
enum Adjacent {
    A(u32),
    B { s: String },
    C,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Untagged {
    Num(i64),
    Text(String),
    Pair(bool, Option<u8>),
    Rec { id: u32, cap: CapRef },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Nested {
    plain: Option<Plain>,
    list: Vec<External>,
    by_name: BTreeMap<String, Untagged>,
    by_number: BTreeMap<u32, Adjacent>,
    internal: Vec<Internal>,
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
    /// Through serde's buffering a `Value` degrades as through any other format (see
    /// `serde_impl`), so the flattened rest holds plain numbers.
    #[serde(flatten)]
    rest: BTreeMap<String, u32>,
}

/// One long-lived codec pair, carrying each value as a result's payload.
struct Wire {
    enc: Encoder,
    dec: Decoder,
}

impl Wire {
    fn new() -> Self {
        Wire {
            enc: Encoder::new(),
            dec: Decoder::new(DecodeLimits::default()),
        }
    }

    fn carry(&mut self, v: &Value) -> Payload {
        let frame = Frame::Result(ResultFrame {
            id: CallId(1),
            outcome: Ok(v.clone()),
        });
        let mut bytes = Vec::new();
        self.enc.encode_frame(&frame, &mut bytes);
        match self.dec.decode_frame_lazy(&Bytes::from(bytes)) {
            Ok(Frame::Result(ResultFrame {
                outcome: Ok(payload),
                ..
            })) => payload,
            other => panic!("{v:?} did not come back as a result: {other:?}"),
        }
    }
}

/// Both routes into `T` give the same `Debug` (value or error).
fn agree<T: DeserializeOwned + Debug>(p: &Payload) -> Result<(), TestCaseError> {
    let eager = from_value::<T>(
        p.to_value()
            .map_err(|e| TestCaseError::fail(e.to_string()))?,
    );
    let lazy = p.deserialize::<T>();
    prop_assert_eq!(
        format!("{eager:?}"),
        format!("{lazy:?}"),
        "{} from {:?}",
        std::any::type_name::<T>(),
        p.to_value()
    );
    Ok(())
}

/// `HashMap` through both routes, compared in key order (its `Debug` order is random).
fn agree_hash_map(p: &Payload) -> Result<(), TestCaseError> {
    let sorted = |m: HashMap<String, i64>| m.into_iter().collect::<BTreeMap<_, _>>();
    let eager = from_value::<HashMap<String, i64>>(p.to_value().unwrap()).map(sorted);
    let lazy = p.deserialize::<HashMap<String, i64>>().map(sorted);
    prop_assert_eq!(format!("{eager:?}"), format!("{lazy:?}"));
    Ok(())
}

fn every_target(p: &Payload) -> Result<(), TestCaseError> {
    agree::<Value>(p)?;
    agree::<Record>(p)?;
    agree::<Option<Value>>(p)?;
    agree::<Vec<Value>>(p)?;
    agree::<Plain>(p)?;
    agree::<Vec<Plain>>(p)?;
    agree::<External>(p)?;
    agree::<Internal>(p)?;
    agree::<Adjacent>(p)?;
    agree::<Untagged>(p)?;
    agree::<Vec<Untagged>>(p)?;
    agree::<Nested>(p)?;
    // A HashMap's Debug order differs between two maps: compare sorted.
    agree::<BTreeMap<String, Value>>(p)?;
    agree_hash_map(p)?;
    agree::<BTreeMap<String, i64>>(p)?;
    agree::<BTreeMap<u32, Value>>(p)?;
    agree::<BTreeMap<i8, bool>>(p)?;
    agree::<Vec<u8>>(p)?;
    agree::<serde_bytes::ByteBuf>(p)?;
    agree::<CapRef>(p)?;
    agree::<Vec<CapRef>>(p)?;
    agree::<(i32, String, bool)>(p)?;
    agree::<(Value, Value)>(p)?;
    agree::<Vec<f32>>(p)?;
    agree::<Vec<i16>>(p)?;
    agree::<i8>(p)?;
    agree::<u8>(p)?;
    agree::<i16>(p)?;
    agree::<u16>(p)?;
    agree::<i32>(p)?;
    agree::<u32>(p)?;
    agree::<i64>(p)?;
    agree::<u64>(p)?;
    agree::<i128>(p)?;
    agree::<u128>(p)?;
    agree::<f32>(p)?;
    agree::<f64>(p)?;
    agree::<bool>(p)?;
    agree::<String>(p)?;
    agree::<char>(p)?;
    agree::<()>(p)?;
    agree::<Option<u64>>(p)?;
    agree::<serde_json::Value>(p)?;
    Ok(())
}

fn plain() -> impl Strategy<Value = Plain> {
    (
        any::<i64>(),
        ".{0,12}",
        any::<f64>(),
        proptest::option::of("[a-z]{0,4}"),
        any::<u16>(),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(|(id, name, score, tag, missing, cap)| Plain {
            id,
            name,
            score,
            tag,
            missing,
            cap: cap.map(|n| CapRef(CapId(n))),
        })
}

fn external() -> impl Strategy<Value = External> {
    prop_oneof![
        Just(External::Unit),
        any::<i32>().prop_map(External::New),
        (any::<u8>(), ".{0,6}").prop_map(|(n, s)| External::Tuple(n, s)),
        (proptest::option::of(any::<bool>()), vec(any::<u8>(), 0..6))
            .prop_map(|(a, b)| External::Struct { a, b }),
    ]
}

fn nested() -> impl Strategy<Value = Nested> {
    let untagged = prop_oneof![
        // Beyond i32 an integer travels as float64 (PROTOCOL §3.1), which serde's buffering
        // for untagged enums cannot read back as an i64 (both routes refuse it alike).
        any::<i32>().prop_map(|n| Untagged::Num(n.into())),
        ".{0,6}".prop_map(Untagged::Text),
        (any::<bool>(), proptest::option::of(any::<u8>())).prop_map(|(b, n)| Untagged::Pair(b, n)),
        (any::<u32>(), any::<u32>()).prop_map(|(id, c)| Untagged::Rec {
            id,
            cap: CapRef(CapId(c))
        }),
    ];
    let adjacent = prop_oneof![
        any::<u32>().prop_map(Adjacent::A),
        ".{0,6}".prop_map(|s| Adjacent::B { s }),
        Just(Adjacent::C),
    ];
    let internal = prop_oneof![
        (any::<i32>(), any::<i32>()).prop_map(|(x, y)| Internal::Point { x, y }),
        ".{0,6}".prop_map(|text| Internal::Label { text }),
        Just(Internal::Empty),
    ];
    (
        proptest::option::of(plain()),
        vec(external(), 0..4),
        proptest::collection::btree_map("[a-z]{0,4}", untagged, 0..4),
        proptest::collection::btree_map(any::<u32>(), adjacent, 0..3),
        vec(internal, 0..3),
        vec(any::<u8>(), 0..8),
        proptest::collection::btree_map("x[a-z]{0,3}", any::<u32>(), 0..3),
    )
        .prop_map(
            |(plain, list, by_name, by_number, internal, bytes, rest)| Nested {
                plain,
                list,
                by_name,
                by_number,
                internal,
                bytes,
                rest,
            },
        )
}

/// Values shaped like the target types, then perturbed: a key renamed, a field replaced.
fn near_miss() -> impl Strategy<Value = Value> {
    let typed = prop_oneof![
        plain().prop_map(|p| to_value(&p)),
        vec(plain(), 0..6).prop_map(|p| to_value(&p)),
        external().prop_map(|e| to_value(&e)),
        nested().prop_map(|n| to_value(&n)),
    ]
    .prop_map(|v| v.unwrap_or(Value::Null));
    (
        typed,
        any::<prop::sample::Index>(),
        value(),
        key(),
        any::<u8>(),
    )
        .prop_map(|(mut v, at, replacement, new_key, how)| {
            if let Value::Record(r) = &mut v {
                if !r.0.is_empty() {
                    let i = at.index(r.0.len());
                    match how % 3 {
                        0 => r.0[i].1 = replacement,
                        1 if r.get(&new_key).is_none() => r.0[i].0 = new_key.into(),
                        _ => {}
                    }
                }
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_values_read_the_same_both_ways(values in vec(value(), 1..12)) {
        let mut wire = Wire::new();
        for v in &values {
            let p = wire.carry(v);
            every_target(&p)?;
            prop_assert_eq!(p.cap_refs(), cap_refs(&p.to_value().unwrap()));
        }
    }

    #[test]
    fn typed_values_read_the_same_both_ways(values in vec(near_miss(), 1..12)) {
        let mut wire = Wire::new();
        for v in &values {
            every_target(&wire.carry(v))?;
        }
    }

    #[test]
    fn typed_samples_come_back_through_the_bytes(samples in vec(nested(), 1..6)) {
        let mut wire = Wire::new();
        for s in &samples {
            let p = wire.carry(&to_value(s).unwrap());
            let back: Nested = p.deserialize().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(format!("{back:?}"), format!("{s:?}"));
        }
    }
}

fn cap_refs(v: &Value) -> Vec<CapId> {
    match v {
        Value::CapRef(id) => vec![*id],
        Value::Array(items) => items.iter().flat_map(cap_refs).collect(),
        Value::Record(r) => r.iter().flat_map(|(_, v)| cap_refs(v)).collect(),
        Value::Map(m) => m
            .iter()
            .flat_map(|(k, v)| cap_refs(k).into_iter().chain(cap_refs(v)))
            .collect(),
        _ => vec![],
    }
}

#[test]
fn payloads_are_cheap_shareable_handles() {
    fn shareable<T: Clone + std::fmt::Debug + Send + Sync + 'static>() {}
    shareable::<Payload>();
    shareable::<Frame<Payload>>();
    let local = Payload::from_value(Value::from("x"));
    assert_eq!(local.wire_len(), 0);
    assert!(Payload::undefined().is_undefined());
    assert!(Payload::from_value(Value::Undefined).is_undefined());
    let mut wire = Wire::new();
    let received = wire.carry(&Value::Array(vec![Value::CapRef(CapId(7))]));
    let copy = received.clone();
    drop(received);
    assert_eq!(copy.cap_refs(), [CapId(7)]);
    assert!(copy.wire_len() > 0);
    assert!(!copy.is_undefined());
    assert!(wire.carry(&Value::Undefined).is_undefined());
}

#[test]
fn a_payload_outlives_later_redefinitions_of_its_slots() {
    let mut wire = Wire::new();
    let first = Value::Record(Record::new().with("a", 1));
    let p = wire.carry(&first);
    // Enough new shapes that the encoder's ring wraps and every slot is redefined.
    for i in 0..40 {
        let key: String = format!("k{i}");
        wire.carry(&Value::Record(Record::new().with(key, i)));
    }
    assert_eq!(p.to_value().unwrap(), first);
    assert_eq!(p.deserialize::<BTreeMap<String, i64>>().unwrap()["a"], 1);
}

#[test]
fn msgpackrs_invalid_date_reads_the_same_on_every_route() {
    #[derive(Debug, Deserialize)]
    struct Args {
        when: Value,
        n: u8,
    }
    let mut wire = Wire::new();
    // `d4 ff ff`, as msgpackr writes `new Date(undefined)`, inside a result's record.
    let v = Value::Record(
        Record::new()
            .with("when", Value::Timestamp(Timestamp::INVALID))
            .with("n", 3),
    );
    let p = wire.carry(&v);
    assert_eq!(p.to_value().unwrap(), v);
    assert_eq!(p.deserialize::<Value>().unwrap(), v);
    let args = p.deserialize::<Args>().unwrap();
    assert_eq!(
        (args.when, args.n),
        (Value::Timestamp(Timestamp::INVALID), 3)
    );
    agree::<Value>(&p).unwrap();
    agree::<BTreeMap<String, Value>>(&p).unwrap();
}

#[test]
fn payloads_at_the_depth_limit_read_on_a_test_threads_stack() {
    let mut v = Value::Null;
    // The payload sits at depth 1 of its frame: this is as deep as the limit allows.
    for _ in 0..DecodeLimits::DEFAULT_MAX_DEPTH - 1 {
        v = Value::Array(vec![v]);
    }
    let p = Wire::new().carry(&v);
    assert_eq!(p.to_value().unwrap(), v);
    assert_eq!(p.deserialize::<Value>().unwrap(), v);
    assert!(p.deserialize::<serde_json::Value>().unwrap().is_array());
    let deeper = Value::Array(vec![v]);
    let frame = Frame::Result(ResultFrame {
        id: CallId(1),
        outcome: Ok(deeper),
    });
    let mut bytes = Vec::new();
    Encoder::new().encode_frame(&frame, &mut bytes);
    let refused = Decoder::new(DecodeLimits::default()).decode_frame_lazy(&Bytes::from(bytes));
    assert_eq!(
        refused.map(|_| ()),
        Err(bunite_wire::FrameDecodeError::Decode(
            bunite_wire::DecodeError::DepthExceeded
        ))
    );
}
