//! Frames are written straight to msgpack (`Encoder::encode_frame`), each kind's shapes found
//! in the encoder's ring by address; these tests hold that to encoding the frame's `Value`
//! (`Frame::to_value`) through a second encoder, byte for byte and error for error, as the
//! ring wraps and evicts (frames interleaved with values of many shapes, some with exactly a
//! frame's nested keys) and as bounded encodes fail and roll back.

mod support;

use bunite_wire::{Encoder, Frame, Record, Value};
use proptest::collection::vec;
use proptest::prelude::*;
use support::strategies::{frame, value};

/// What goes through both encoders next.
#[derive(Debug, Clone)]
enum Step {
    Frame(Frame, Option<usize>),
    Value(Value),
}

/// Records with the keys of frames' nested records, so value records and frame records
/// share shapes in the ring.
fn lookalike() -> impl Strategy<Value = Value> {
    let keys = proptest::sample::select(vec![
        vec!["kind", "id"],
        vec!["code", "message"],
        vec!["code", "message", "details"],
        vec!["messages"],
        vec![],
        vec!["id", "delta"],
        vec!["op", "id", "ev"],
        vec!["parentCallId"],
    ]);
    (keys, value()).prop_map(|(keys, v)| {
        let mut r = Record::new();
        for k in keys {
            r.insert(k, v.clone());
        }
        Value::Record(r)
    })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (frame(), proptest::option::of(0usize..80)).prop_map(|(f, max)| Step::Frame(f, max)),
        1 => value().prop_map(Step::Value),
        1 => lookalike().prop_map(Step::Value),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn frames_encode_as_their_values_across_evictions_and_rollbacks(steps in vec(step(), 1..60)) {
        let (mut direct, mut via_value) = (Encoder::new(), Encoder::new());
        for step in &steps {
            match step {
                Step::Frame(f, max) => {
                    let max = max.unwrap_or(usize::MAX);
                    let (mut a, mut b) = (vec![7], vec![7]);
                    let ra = direct.encode_frame_bounded(f, max, &mut a);
                    let rb = via_value.encode_bounded(&f.to_value(), max, &mut b);
                    prop_assert_eq!(ra, rb, "{:?}", f);
                    prop_assert_eq!(a, b, "{:?}", f);
                }
                Step::Value(v) => {
                    prop_assert_eq!(direct.encode_to_vec(v), via_value.encode_to_vec(v));
                }
            }
        }
    }
}
