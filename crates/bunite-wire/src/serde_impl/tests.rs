//! Unit tests of the serde bridge: the mapping table of the module docs, the lenient reads,
//! and `Value` through this crate and through JSON.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::*;
use crate::value::{Record, Timestamp, TypedArray, TypedArrayKind};

fn rec(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(Record(
        fields
            .into_iter()
            .map(|(k, v)| (crate::Text::copy_from(k), v))
            .collect(),
    ))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Params {
    name: String,
    count: u32,
    tag: Option<String>,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    cap: CapRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Point,
    Circle(f64),
    Pair(i32, i32),
    Rect { w: u8, h: u8 },
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Unit;

#[test]
fn structs_are_records_in_field_order() {
    let p = Params {
        name: "n".into(),
        count: 3,
        tag: None,
        data: vec![1, 2],
        cap: CapRef(CapId(7)),
    };
    let v = to_value(&p).unwrap();
    assert_eq!(
        v,
        rec(vec![
            ("name", "n".into()),
            ("count", Value::Int(3)),
            ("tag", Value::Undefined),
            ("data", Value::Bin(vec![1, 2])),
            ("cap", Value::CapRef(CapId(7))),
        ])
    );
    assert_eq!(from_value::<Params>(v).unwrap(), p);
}

#[test]
fn unit_values_and_enums() {
    assert_eq!(to_value(&()).unwrap(), Value::Undefined);
    assert_eq!(to_value(&Unit).unwrap(), Value::Undefined);
    assert_eq!(to_value(&None::<u8>).unwrap(), Value::Undefined);
    assert_eq!(to_value(&Some(5u8)).unwrap(), Value::Int(5));
    assert_eq!(to_value(&Shape::Point).unwrap(), Value::from("Point"));
    assert_eq!(
        to_value(&Shape::Circle(1.5)).unwrap(),
        rec(vec![("Circle", Value::Float(1.5))])
    );
    for s in [
        Shape::Point,
        Shape::Circle(1.5),
        Shape::Pair(-1, 2),
        Shape::Rect { w: 1, h: 2 },
    ] {
        assert_eq!(from_value::<Shape>(to_value(&s).unwrap()).unwrap(), s);
    }
    assert_eq!(from_value::<Unit>(Value::Null).unwrap(), Unit);
    assert_eq!(from_value::<()>(Value::Undefined).unwrap(), ());
    assert!(from_value::<()>(Value::Int(1)).is_err());
}

#[test]
fn maps_are_records_only_with_string_keys() {
    let strings: BTreeMap<String, u8> = [("a".to_owned(), 1)].into();
    assert_eq!(to_value(&strings).unwrap(), rec(vec![("a", Value::Int(1))]));
    let ints: BTreeMap<u32, u8> = [(1, 2)].into();
    let v = to_value(&ints).unwrap();
    assert_eq!(v, Value::Map(vec![(Value::Int(1), Value::Int(2))]));
    assert_eq!(from_value::<BTreeMap<u32, u8>>(v).unwrap(), ints);
    // A record's keys parse as integers for integer-keyed maps.
    let from_record: HashMap<i64, bool> =
        from_value(rec(vec![("-5", true.into()), ("7", false.into())])).unwrap();
    assert_eq!(from_record, [(-5, true), (7, false)].into());
    assert!(from_value::<HashMap<u8, bool>>(rec(vec![("x", true.into())])).is_err());
}

#[test]
fn numbers_are_read_leniently_but_never_wrap() {
    assert_eq!(
        from_value::<u64>(Value::Float(4294967296.0)).unwrap(),
        1 << 32
    );
    assert_eq!(from_value::<i8>(Value::Float(-3.0)).unwrap(), -3);
    assert!(from_value::<u8>(Value::Int(256)).is_err());
    assert!(from_value::<u8>(Value::Float(255.5)).is_err());
    assert!(from_value::<u32>(Value::Int(-1)).is_err());
    assert!(from_value::<i64>(Value::UInt(u64::MAX)).is_err());
    assert_eq!(from_value::<f64>(Value::Int(3)).unwrap(), 3.0);
    assert_eq!(from_value::<f32>(Value::Float(0.5)).unwrap(), 0.5);
    assert_eq!(to_value(&u64::MAX).unwrap(), Value::UInt(u64::MAX));
    assert_eq!(to_value(&(1u128 << 63)).unwrap(), Value::UInt(1 << 63));
    assert_eq!(to_value(&-5i128).unwrap(), Value::Int(-5));
    assert!(to_value(&u128::MAX).is_err());
    assert_eq!(
        from_value::<u128>(Value::UInt(u64::MAX)).unwrap(),
        u128::from(u64::MAX)
    );
    assert_eq!(
        from_value::<i128>(Value::Float(-1e18)).unwrap(),
        -1_000_000_000_000_000_000
    );
}

#[test]
fn options_and_missing_fields() {
    #[derive(Debug, PartialEq, Deserialize)]
    struct Opt {
        a: Option<u8>,
        b: Option<u8>,
    }
    let v = rec(vec![("a", Value::Null)]);
    assert_eq!(from_value::<Opt>(v).unwrap(), Opt { a: None, b: None });
    assert_eq!(from_value::<Option<u8>>(Value::Undefined).unwrap(), None);
}

#[test]
fn bytes_come_from_bin_typed_arrays_or_arrays() {
    use serde_bytes::ByteBuf;
    let u8s = Value::TypedArray(TypedArray {
        kind: TypedArrayKind::Uint8,
        bytes: vec![1, 2],
    });
    for v in [
        Value::Bin(vec![1, 2]),
        u8s.clone(),
        vec![Value::Int(1), Value::Int(2)].into(),
    ] {
        assert_eq!(
            from_value::<ByteBuf>(v.clone()).unwrap().into_vec(),
            vec![1, 2]
        );
        assert_eq!(from_value::<Vec<u8>>(v).unwrap(), vec![1, 2]);
    }
    let floats = Value::TypedArray(TypedArray {
        kind: TypedArrayKind::Float32,
        bytes: [1.5f32, -2.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect(),
    });
    assert_eq!(from_value::<Vec<f32>>(floats).unwrap(), vec![1.5, -2.0]);
}

#[test]
fn a_capref_only_comes_from_a_capref() {
    assert_eq!(
        from_value::<CapRef>(Value::CapRef(CapId(4))).unwrap(),
        CapRef(CapId(4))
    );
    assert!(from_value::<CapRef>(Value::Int(4)).is_err());
    assert!(from_value::<CapRef>(rec(vec![("$capref", Value::Int(4))])).is_err());
    // Through serde's buffering (untagged enums) it still works.
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(untagged)]
    enum Either {
        Cap { cap: CapRef },
        Num(u8),
    }
    let v = rec(vec![("cap", Value::CapRef(CapId(9)))]);
    assert_eq!(
        from_value::<Either>(v).unwrap(),
        Either::Cap {
            cap: CapRef(CapId(9))
        }
    );
}

fn every_variant() -> Value {
    Value::Array(vec![
        Value::Undefined,
        Value::Null,
        Value::Bool(true),
        Value::Int(-1),
        Value::UInt(u64::MAX),
        Value::Float(f64::NAN),
        Value::Float(2.0),
        Value::from("s"),
        Value::Bin(vec![0, 255]),
        rec(vec![("$capref", Value::Int(1)), ("b", Value::Undefined)]),
        rec(vec![("$capref", Value::Int(1))]),
        rec(vec![]),
        Value::Map(vec![
            (Value::from("k"), Value::Null),
            (Value::Int(1), Value::Null),
        ]),
        Value::Map(vec![(Value::from("only strings"), Value::Null)]),
        Value::Map(vec![]),
        Value::CapRef(CapId(u32::MAX)),
        Value::TypedArray(TypedArray {
            kind: TypedArrayKind::Int16,
            bytes: vec![1, 2],
        }),
        Value::Timestamp(Timestamp {
            seconds: -5,
            nanos: 7,
        }),
        Value::Timestamp(Timestamp::INVALID),
    ])
}

#[test]
fn every_value_round_trips_exactly_through_this_crate() {
    let v = every_variant();
    let back: Value = from_value(to_value(&v).unwrap()).unwrap();
    // Debug output compares NaN as text, which is what exactness means here.
    assert_eq!(format!("{back:?}"), format!("{v:?}"));
    let from_ref: Value = from_value_ref(&v).unwrap();
    assert_eq!(format!("{from_ref:?}"), format!("{v:?}"));
}

#[test]
fn values_degrade_sensibly_through_json() {
    let v = rec(vec![
        ("u", Value::Undefined),
        ("n", Value::Null),
        ("c", Value::CapRef(CapId(3))),
        ("b", Value::Bin(vec![1])),
        (
            "t",
            Value::Timestamp(Timestamp {
                seconds: 1,
                nanos: 2,
            }),
        ),
        ("m", Value::Map(vec![(Value::Int(1), Value::from("x"))])),
    ]);
    let json = serde_json::to_string(&v).unwrap();
    assert_eq!(
        json,
        r#"{"u":null,"n":null,"c":{"$capref":3},"b":[1],"t":{"$timestamp":[1,2]},"m":{"1":"x"}}"#
    );
    let back: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        back.as_record().unwrap().get("c"),
        Some(&Value::CapRef(CapId(3)))
    );
    assert_eq!(
        back.as_record().unwrap().get("t"),
        Some(&Value::Timestamp(Timestamp {
            seconds: 1,
            nanos: 2
        }))
    );
    let numbers: Value = serde_json::from_str(r#"[1, -2, 1.5, 18446744073709551615, {}]"#).unwrap();
    assert_eq!(
        numbers,
        Value::Array(vec![
            Value::Int(1),
            Value::Int(-2),
            Value::Float(1.5),
            Value::UInt(u64::MAX),
            rec(vec![]),
        ])
    );
    // CapRef and Params through JSON and back.
    let json = serde_json::to_string(&CapRef(CapId(5))).unwrap();
    assert_eq!(json, r#"{"$capref":5}"#);
    assert_eq!(
        serde_json::from_str::<CapRef>(&json).unwrap(),
        CapRef(CapId(5))
    );
}

#[test]
fn errors_say_what_went_wrong() {
    let err = from_value::<Params>(Value::Int(1)).unwrap_err();
    assert!(err.message().contains("invalid type"), "{err}");
    let err = from_value::<Params>(rec(vec![("name", "n".into())])).unwrap_err();
    assert!(err.to_string().contains("missing field"), "{err}");
}

#[test]
fn values_at_the_depth_limit_convert_on_a_test_threads_stack() {
    // A record and an array per level: as deep as the decoder lets a peer go.
    let mut v = Value::Null;
    for _ in 0..crate::limits::DecodeLimits::DEFAULT_MAX_DEPTH / 2 {
        v = rec(vec![("a", Value::Array(vec![v]))]);
    }
    let back: Value = from_value(to_value(&v).unwrap()).unwrap();
    assert_eq!(back, v);
    let json: serde_json::Value = from_value(v).unwrap();
    assert!(json.is_object());
}
