//! Property tests: arbitrary values through one long-lived codec pair (so the shape ring
//! wraps and evicts), arbitrary and mutated bytes through the decoder, arbitrary serde types
//! through `to_value` / `from_value`.
//!
//! Integers are generated over the whole `i64` / `u64` range, and compared with the
//! equality the wire defines: an `Int` between 2^32 and 2^53 in magnitude travels as
//! float64 (PROTOCOL §3.1) and decodes as the `Float` of the same value, which counts as
//! equal. Floats compare bitwise, so NaN equals NaN.

mod support;

use support::strategies::value;

use std::collections::BTreeMap;

use bunite_wire::{
    from_value, to_value, CallId, CapId, CapRef, DecodeLimits, Decoder, EncodeError, Encoder,
    Frame, Outgoing, ResultFrame, Value,
};
use proptest::collection::vec;
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

fn same(a: &Value, b: &Value) -> bool {
    support::same(a, b, support::Nan::Bits)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn values_round_trip_through_one_long_lived_codec(values in vec(value(), 1..40)) {
        let (mut enc, mut dec) = (Encoder::new(), Decoder::new(DecodeLimits::default()));
        for v in &values {
            let bytes = enc.encode_to_vec(v);
            let back = dec.decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(same(&back, v), "sent {:?}, got {:?}", v, back);
        }
    }

    /// Values that do not fit are never sent; the decoder must never notice.
    #[test]
    fn failed_bounded_encodes_leave_the_peers_in_step(
        values in vec((value(), proptest::option::of(0usize..64)), 1..40),
    ) {
        let (mut enc, mut dec) = (Encoder::new(), Decoder::new(DecodeLimits::default()));
        for (v, max) in &values {
            let mut out = Vec::new();
            match enc.encode_bounded(v, max.unwrap_or(usize::MAX), &mut out) {
                Ok(()) => {
                    let back = dec.decode(&out).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert!(same(&back, v));
                }
                Err(e) => prop_assert!(out.is_empty() && e.size > e.max),
            }
        }
    }

    /// Frames refused once encoded (`encode_outgoing_frame_accepted`) are never sent
    /// either: refused or not, the next frames decode as sent.
    #[test]
    fn frames_refused_once_encoded_leave_the_peers_in_step(
        values in vec((value(), any::<bool>()), 1..40),
    ) {
        let (mut enc, mut dec) = (Encoder::new(), Decoder::new(DecodeLimits::default()));
        for (id, (v, accept)) in values.iter().enumerate() {
            let frame = Frame::Result(ResultFrame {
                id: CallId(id as u64),
                outcome: Ok(Outgoing::from(v.clone())),
            });
            let mut out = vec![1, 2, 3];
            let mut asked = None;
            let r = enc.encode_outgoing_frame_accepted(&frame, usize::MAX, &mut out, |len| {
                asked = Some(len);
                *accept
            });
            let len = asked.expect("asked once encoded");
            match r {
                Ok(()) => {
                    prop_assert!(*accept && out.len() == 3 + len);
                    match dec.decode_frame(&out[3..]).map_err(|e| TestCaseError::fail(e.to_string()))? {
                        Frame::Result(r) => prop_assert!(same(r.outcome.as_ref().unwrap(), v)),
                        other => prop_assert!(false, "{:?}", other),
                    }
                }
                Err(EncodeError::TooLarge(e)) => prop_assert!(!*accept && out == [1, 2, 3] && e.size == len),
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        let _ = Decoder::new(DecodeLimits::default()).decode(&bytes);
    }

    /// With record slots defined first, references in random bytes hit real slots.
    #[test]
    fn arbitrary_bytes_after_definitions_never_panic(
        prefix in vec(value(), 1..8),
        bytes in vec(any::<u8>(), 0..256),
    ) {
        let (mut enc, mut dec) = (Encoder::new(), Decoder::new(DecodeLimits::default()));
        for v in &prefix {
            let _ = dec.decode(&enc.encode_to_vec(v));
        }
        let _ = dec.decode(&bytes);
        let _ = dec.decode_frame(&bytes);
    }

    /// Valid encodings with a few bytes changed reach deeper than random bytes do.
    #[test]
    fn mutated_encodings_never_panic(
        v in value(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = Encoder::new().encode_to_vec(&v);
        for (at, byte) in &edits {
            let i = at.index(bytes.len());
            bytes[i] = *byte;
        }
        let _ = Decoder::new(DecodeLimits::default()).decode(&bytes);
        let _ = Decoder::new(DecodeLimits::default()).decode(&bytes[..cut.index(bytes.len() + 1)]);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    A,
    B(u32),
    C(i8, String),
    D { x: Option<u8> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sample {
    small: u8,
    big: i64,
    unsigned: u64,
    text: Option<String>,
    list: Vec<u16>,
    by_name: BTreeMap<String, bool>,
    by_number: BTreeMap<u32, i32>,
    kind: Kind,
    pair: (bool, f64),
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
    single: f32,
    cap: CapRef,
    nothing: (),
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::A),
        any::<u32>().prop_map(Kind::B),
        (any::<i8>(), ".{0,8}").prop_map(|(n, s)| Kind::C(n, s)),
        proptest::option::of(any::<u8>()).prop_map(|x| Kind::D { x }),
    ]
}

prop_compose! {
    fn sample()(
        small in any::<u8>(),
        big in any::<i64>(),
        unsigned in any::<u64>(),
        text in proptest::option::of(".{0,12}"),
        list in vec(any::<u16>(), 0..6),
        by_name in proptest::collection::btree_map("[a-z]{0,5}", any::<bool>(), 0..4),
        by_number in proptest::collection::btree_map(any::<u32>(), any::<i32>(), 0..4),
        kind in kind(),
        pair in (any::<bool>(), -1e300f64..1e300),
        bytes in vec(any::<u8>(), 0..16),
        single in -1e30f32..1e30,
        cap in any::<u32>(),
    ) -> Sample {
        Sample {
            small, big, unsigned, text, list, by_name, by_number, kind, pair, bytes, single,
            cap: CapRef(CapId(cap)),
            nothing: (),
        }
    }
}

proptest! {
    #[test]
    fn serde_types_round_trip_through_values_and_bytes(samples in vec(sample(), 1..8)) {
        let (mut enc, mut dec) = (Encoder::new(), Decoder::new(DecodeLimits::default()));
        for s in &samples {
            let v = to_value(s).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&from_value::<Sample>(v.clone()).unwrap(), s);
            let back = dec.decode(&enc.encode_to_vec(&v)).unwrap();
            prop_assert_eq!(&from_value::<Sample>(back).unwrap(), s);
        }
    }
}
