//! Typed values serialized straight into their frames ([`Outgoing::typed`]) against the
//! same values through `to_value`: one long-lived encoder each, so the shape ring wraps and
//! evicts and the struct keys are learned, relearned and mistaken (two structs named
//! `Point`, a struct whose skipped fields change its keys). Every frame must come out
//! byte for byte the same, fail the same way (too large, with the same size; not
//! serializable, with the same error; a frame whose own fields pass the maximum is too
//! large before its value is tried), and leave the encoders in step.

mod support;

use std::collections::BTreeMap;

use bunite_wire::{
    to_value, CallId, CapId, CapRef, EncodeError, Encoder, Frame, Outgoing, OutgoingRef,
    ResultFrame, StreamEvent, StreamFrame, Value,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde::ser::{Error as _, SerializeStruct};
use serde::{Serialize, Serializer};
use support::strategies::value;

#[derive(Debug, Clone, Serialize)]
struct Point {
    x: i32,
    y: i32,
}

mod other {
    /// Same name and field count as the outer `Point`, other keys.
    #[derive(Debug, Clone, serde::Serialize)]
    pub struct Point {
        pub a: bool,
        pub b: Option<u8>,
    }
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    id: u64,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
    tags: Vec<String>,
    at: Point,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
    ratio: f64,
}

/// One field or the other: the same (name, field count) with different keys.
#[derive(Debug, Clone, Serialize)]
struct Sparse {
    #[serde(skip_serializing_if = "Option::is_none")]
    a: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    b: Option<u8>,
}

#[derive(Debug, Clone, Serialize)]
enum Shape {
    Empty,
    Circle(f32),
    Rect(Point, Point),
    Named { label: String, at: Point },
    Wrapped(Box<Row>),
}

#[derive(Debug, Clone, Serialize)]
struct Many {
    names: BTreeMap<String, i64>,
    by_number: BTreeMap<u8, Point>,
    tuple: (u8, char, i128),
    wide: u128,
    cap: CapRef,
    value: Value,
    unit: (),
    big: u64,
    negative: i64,
    small: f32,
}

/// A sequence whose length serde does not know up front.
#[derive(Debug, Clone)]
struct Unsized(Vec<Point>);

impl Serialize for Unsized {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().filter(|_| true))
    }
}

/// Fails on its second field when `fail` is set.
#[derive(Debug, Clone)]
struct Failing {
    fail: bool,
}

impl Serialize for Failing {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Failing", 2)?;
        st.serialize_field("first", &1)?;
        if self.fail {
            return Err(S::Error::custom("refused on purpose"));
        }
        st.serialize_field("second", &2)?;
        st.end()
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
enum Item {
    Point(Point),
    Other(other::Point),
    Row(Row),
    Sparse(Sparse),
    Shapes(Vec<Shape>),
    Many(Box<Many>),
    Unsized(Unsized),
    Failing(Failing),
    Record(BTreeMap<String, u8>),
    Value(Value),
    Text(String),
    Number(i128),
}

fn point() -> impl Strategy<Value = Point> {
    (any::<i32>(), any::<i32>()).prop_map(|(x, y)| Point { x, y })
}

fn row() -> impl Strategy<Value = Row> {
    (
        any::<u64>(),
        "[a-z]{0,40}",
        proptest::option::of("[a-z]{0,3}"),
        vec("[a-z]{0,5}", 0..4),
        point(),
        vec(any::<u8>(), 0..300),
        any::<f64>(),
    )
        .prop_map(|(id, name, note, tags, at, blob, ratio)| Row {
            id,
            name,
            note,
            tags,
            at,
            blob,
            ratio,
        })
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Empty),
        any::<f32>().prop_map(Shape::Circle),
        (point(), point()).prop_map(|(a, b)| Shape::Rect(a, b)),
        ("[a-z]{0,4}", point()).prop_map(|(label, at)| Shape::Named { label, at }),
        row().prop_map(|r| Shape::Wrapped(Box::new(r))),
    ]
}

fn many() -> impl Strategy<Value = Many> {
    (
        btree_map("[a-c]{1,2}", any::<i64>(), 0..4),
        btree_map(any::<u8>(), point(), 0..3),
        (any::<u8>(), any::<char>(), any::<i128>()),
        any::<u128>(),
        any::<u32>(),
        value(),
        (any::<u64>(), any::<i64>(), any::<f32>()),
    )
        .prop_map(
            |(names, by_number, tuple, wide, cap, value, (big, negative, small))| Many {
                names,
                by_number,
                tuple,
                wide,
                cap: CapRef(CapId(cap)),
                value,
                unit: (),
                big,
                negative,
                small,
            },
        )
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        point().prop_map(Item::Point),
        (any::<bool>(), proptest::option::of(any::<u8>()))
            .prop_map(|(a, b)| Item::Other(other::Point { a, b })),
        row().prop_map(Item::Row),
        (
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u8>())
        )
            .prop_map(|(a, b)| Item::Sparse(Sparse { a, b })),
        vec(shape(), 0..4).prop_map(Item::Shapes),
        many().prop_map(|m| Item::Many(Box::new(m))),
        vec(point(), 0..4).prop_map(|p| Item::Unsized(Unsized(p))),
        any::<bool>().prop_map(|fail| Item::Failing(Failing { fail })),
        // Many record shapes, so the ring wraps and evicts.
        btree_map("[a-z]{1,3}", any::<u8>(), 0..5).prop_map(Item::Record),
        value().prop_map(Item::Value),
        "\\PC{0,40}".prop_map(Item::Text),
        any::<i128>().prop_map(Item::Number),
    ]
}

/// A result frame or a stream value, by `stream`.
fn frame<P>(stream: bool, payload: P) -> Frame<P> {
    if stream {
        Frame::Stream(StreamFrame {
            id: CallId(3),
            event: StreamEvent::Next(payload),
        })
    } else {
        Frame::Result(ResultFrame {
            id: CallId(7),
            outcome: Ok(payload),
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn typed_frames_are_the_bytes_of_their_values(
        items in vec((item(), any::<bool>(), prop_oneof![3 => Just(usize::MAX), 1 => 1usize..400]), 1..60),
    ) {
        let (mut direct, mut via_value) = (Encoder::new(), Encoder::new());
        for (i, (item, stream, max)) in items.into_iter().enumerate() {
            let (mut a, mut b) = (vec![0xee], vec![0xee]);
            let expected = to_value(&item);
            // Boxed in an `Outgoing`, or borrowed where it lives (`OutgoingRef`, as a typed
            // client's call request lends its params): the same bytes either way.
            let got = if i % 2 == 0 {
                direct.encode_outgoing_frame_bounded(
                    &frame(stream, Outgoing::typed(item.clone())),
                    max,
                    &mut a,
                )
            } else {
                direct.encode_outgoing_frame_bounded(
                    &frame(stream, OutgoingRef::typed(&item)),
                    max,
                    &mut a,
                )
            };
            match (got, expected) {
                (Ok(()), Ok(v)) => {
                    let reference = via_value.encode_frame_bounded(&frame(stream, v), max, &mut b);
                    prop_assert!(reference.is_ok(), "#{i} {item:?}: direct fit, the value did not");
                    prop_assert_eq!(&a, &b, "#{} {:?}", i, item);
                }
                (Err(EncodeError::TooLarge(e)), Ok(v)) => {
                    let reference = via_value.encode_frame_bounded(&frame(stream, v), max, &mut b);
                    prop_assert_eq!(reference, Err(e), "#{} {:?}", i, item);
                    prop_assert_eq!(&a, &[0xee], "a frame too large writes nothing");
                }
                (Err(EncodeError::Serialize(e)), Err(reference)) => {
                    prop_assert_eq!(e, reference);
                    prop_assert_eq!(&a, &[0xee], "a failed value writes nothing");
                }
                // The frame's own fields come before its value: when they alone pass the
                // maximum, the frame is too large before the value is tried.
                (Err(EncodeError::TooLarge(e)), Err(_)) => {
                    // Failing, it leaves the encoder as it was.
                    let bare = via_value.encode_frame_bounded(&frame(stream, Value::Null), max, &mut b);
                    prop_assert_eq!(bare, Err(e), "#{} {:?}", i, item);
                    prop_assert_eq!(&a, &[0xee], "a frame too large writes nothing");
                }
                (got, expected) => {
                    prop_assert!(false, "#{i} {item:?}: direct {got:?}, value {expected:?}");
                }
            }
        }
    }
}

/// Typed values of one struct take the direct path once its keys are learned, and a value
/// that does not match what was learned still comes out right.
#[test]
fn learned_and_mistaken_structs_both_encode_right() {
    let (mut direct, mut via_value) = (Encoder::new(), Encoder::new());
    let items = [
        Item::Sparse(Sparse {
            a: Some(1),
            b: None,
        }),
        Item::Sparse(Sparse {
            a: Some(2),
            b: None,
        }),
        Item::Sparse(Sparse {
            a: None,
            b: Some(3),
        }),
        Item::Point(Point { x: 1, y: 2 }),
        Item::Other(other::Point { a: true, b: None }),
        Item::Point(Point { x: 3, y: 4 }),
        Item::Failing(Failing { fail: true }),
        Item::Failing(Failing { fail: false }),
        Item::Failing(Failing { fail: true }),
    ];
    for item in items {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let got = direct.encode_outgoing_frame_bounded(
            &frame(false, Outgoing::typed(item.clone())),
            usize::MAX,
            &mut a,
        );
        match to_value(&item) {
            Ok(v) => {
                got.unwrap_or_else(|e| panic!("{item:?}: {e}"));
                via_value.encode_frame(&frame(false, v), &mut b);
                assert_eq!(a, b, "{item:?}");
            }
            Err(e) => assert_eq!(got, Err(EncodeError::Serialize(e))),
        }
    }
}

/// The types taken as values at once (scalars, `String`, `ByteBuf`, `Value`), and large
/// payloads inside a struct (written straight in once its keys are known), encode as their
/// `to_value`.
#[test]
fn values_taken_at_once_and_large_payloads_encode_like_their_values() {
    fn check<T: Serialize + Send + Clone + std::fmt::Debug + 'static>(v: T) {
        let (mut direct, mut via_value) = (Encoder::new(), Encoder::new());
        // Twice: a struct is collected the first time, written directly the second.
        for _ in 0..2 {
            let mut a = Vec::new();
            direct
                .encode_outgoing_frame_bounded(
                    &frame(false, Outgoing::typed(v.clone())),
                    usize::MAX,
                    &mut a,
                )
                .expect("fits");
            let mut b = Vec::new();
            via_value.encode_frame(&frame(false, to_value(&v).expect("serializes")), &mut b);
            assert!(a == b, "{:?}", &v);
        }
    }
    check(serde_bytes::ByteBuf::from(vec![7u8; 256 * 1024]));
    check(Row {
        id: 1,
        name: "x".repeat(100_000),
        note: None,
        tags: vec![],
        at: Point { x: 0, y: 0 },
        blob: vec![3; 300_000],
        ratio: 0.5,
    });
    check(u64::MAX);
    check(7u64);
    check(i64::MIN);
    check(-5i64);
    check(u32::MAX);
    check(i32::MIN);
    check(2.5f64);
    check(true);
    check(());
    check(String::from("moved, not copied"));
    check(serde_bytes::ByteBuf::from(vec![1, 2, 3]));
    check(Value::Array(vec![Value::Null, Value::from("x")]));
}

/// `into_value` is `to_value` that moves a `String`'s or a `ByteBuf`'s buffer instead of
/// copying it.
#[test]
fn into_value_moves_buffers_and_agrees_with_to_value() {
    let bytes = serde_bytes::ByteBuf::from(vec![9u8; 100_000]);
    let at = bytes.as_ptr();
    match bunite_wire::into_value(bytes.clone()) {
        Ok(Value::Bin(b)) => assert_eq!(b, bytes.to_vec()),
        other => panic!("{other:?}"),
    }
    match bunite_wire::into_value(bytes) {
        Ok(Value::Bin(b)) => assert_eq!(b.as_ptr(), at, "moved"),
        other => panic!("{other:?}"),
    }
    let text = String::from("a string that is not copied");
    let at = text.as_ptr();
    match bunite_wire::into_value(text) {
        Ok(Value::Str(s)) => assert_eq!(s.as_ptr(), at, "moved"),
        other => panic!("{other:?}"),
    }
    let point = Point { x: 1, y: -2 };
    assert_eq!(bunite_wire::into_value(point.clone()), to_value(&point));
    assert_eq!(bunite_wire::into_value(u64::MAX), to_value(&u64::MAX));
    assert_eq!(
        bunite_wire::into_value(Failing { fail: true }).unwrap_err(),
        to_value(&Failing { fail: true }).unwrap_err()
    );
}

/// A struct's field and a `#[serde(flatten)]` map can hold the same key (one a peer chose,
/// say, in an event a server passes on): such a map would be a record with a repeated key,
/// which a decoder refuses as a protocol error (PROTOCOL §3.3 shapes; a JS object would
/// keep the last), so the receiver's whole connection would end. It does not serialize, and
/// nothing is written; a map whose keys differ encodes as before.
#[test]
fn a_map_with_a_repeated_key_does_not_serialize() {
    #[derive(Debug, Serialize)]
    struct Event {
        kind: &'static str,
        #[serde(flatten)]
        data: BTreeMap<String, i64>,
    }
    let event = |key: &str| Event {
        kind: "chat",
        data: [(key.to_owned(), 1), ("n".to_owned(), 2)].into(),
    };
    let e = to_value(&event("kind")).unwrap_err();
    assert_eq!(e.message(), "the map has the key \"kind\" twice");
    let mut out = vec![0xee];
    let got = Encoder::new().encode_outgoing_frame_bounded(
        &frame(false, Outgoing::typed(event("kind"))),
        usize::MAX,
        &mut out,
    );
    assert!(
        matches!(&got, Err(EncodeError::Serialize(s)) if *s == e),
        "{got:?}"
    );
    assert_eq!(out, [0xee], "a failed value writes nothing");

    let good = Outgoing::typed(event("other"));
    let mut out = Vec::new();
    Encoder::new()
        .encode_outgoing_frame_bounded(&frame(false, good), usize::MAX, &mut out)
        .expect("distinct keys");
    let frame = bunite_wire::Decoder::new(bunite_wire::DecodeLimits::default())
        .decode_frame_lazy(&bytes::Bytes::from(out))
        .expect("decodes");
    let Frame::Result(ResultFrame { outcome: Ok(p), .. }) = frame else {
        panic!("a result");
    };
    let keys: Vec<String> = p
        .deserialize::<BTreeMap<String, Value>>()
        .unwrap()
        .into_keys()
        .collect();
    assert_eq!(keys, ["kind", "n", "other"]);
}
