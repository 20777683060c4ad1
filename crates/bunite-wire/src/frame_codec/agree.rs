//! The lazy decoder's fast path (`lazy/fast.rs`) against its general reader: for sequences
//! of messages through two decoders, one taking the fast path where it can and one reading
//! everything generally, every message must give the same frame or the same error, and
//! leave the same slot table behind.
//!
//! The messages are frames of exactly the shapes the fast path knows with each field
//! usually in its usual form and sometimes not (other types, other strings, out-of-range
//! ids, reordered or extra nested keys), payloads that define and evict record slots (so a
//! frame's own slot is redefined while it is read), the golden transcript's odd frames, and
//! corrupted bytes; decoded with the default limits and with small budgets and depths.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::golden::{self, Rng};
use super::lazy::general;
use super::{decode_lazy, shapes};
use crate::codec::Encoder;
use crate::limits::DecodeLimits;
use crate::records::SlotTable;
use crate::text::LastName;
use crate::value::{Record, Value};

fn record(fields: &[(&'static str, Value)]) -> Value {
    Value::Record(Record(
        fields
            .iter()
            .map(|(k, v)| ((*k).into(), v.clone()))
            .collect(),
    ))
}

/// A field's usual value or, now and then, something else.
fn field(rng: &mut Rng, key: &str, op: &str) -> Value {
    if rng.chance(12) {
        return golden::value(rng, 2);
    }
    match key {
        "op" if rng.chance(95) => op.into(),
        "op" => (*rng.pick(&["call", "result", "stream", "drop", "nope"])).into(),
        "id" => match rng.below(10) {
            0 => Value::Int(1 << 53),
            1 => Value::Float(3.0),
            2 => Value::Int(-1),
            3 => Value::Int(rng.below(1 << 32) as i64),
            _ => Value::Int(rng.below(300) as i64),
        },
        "target" => match rng.below(8) {
            0 => record(&[("id", 2.into()), ("kind", "cap".into())]),
            1 => record(&[("kind", "dog".into()), ("id", 2.into())]),
            2 => record(&[("kind", "cap".into()), ("id", Value::Int(1 << 32))]),
            3 => record(&[("kind", "cap".into()), ("id", 2.into()), ("x", 1.into())]),
            _ => record(&[
                ("kind", "cap".into()),
                ("id", Value::Int(rng.below(70) as i64)),
            ]),
        },
        "method" => match rng.below(6) {
            0 => Value::Str("m".repeat(300)),
            1 => Value::Str("m".repeat(40)),
            2 => "é".into(),
            _ => "increment".into(),
        },
        "args" | "value" => {
            if rng.chance(15) {
                // New shapes enough to evict the frame's own slots.
                Value::Array(
                    (0..rng.below(40))
                        .map(|i| record(&[(KEYS[i as usize % KEYS.len()], Value::Int(i as i64))]))
                        .collect(),
                )
            } else {
                golden::value(rng, 3)
            }
        }
        "meta" => match rng.below(6) {
            0 => record(&[("parentCallId", 3.into()), ("deadlineMs", 5.5.into())]),
            1 => record(&[("context", record(&[("k", "v".into())]))]),
            2 => Value::Null,
            _ => Value::Undefined,
        },
        "ok" => match rng.below(8) {
            0 => false.into(),
            1 => 1.into(),
            _ => true.into(),
        },
        "ev" => (*rng.pick(&["next", "credit", "end", "error", "nope"])).into(),
        "credit" => match rng.below(6) {
            0 => record(&[]),
            1 => record(&[("messages", Value::Int(-1))]),
            2 => record(&[("messages", Value::Float(8.0))]),
            3 => record(&[("other", 1.into())]),
            _ => record(&[("messages", Value::Int(rng.below(1000) as i64))]),
        },
        "reason" => match rng.below(4) {
            0 => Value::Undefined,
            1 => 7.into(),
            _ => "client_cancel".into(),
        },
        "caps" => Value::Array(
            (0..rng.below(4))
                .map(|_| match rng.below(8) {
                    0 => record(&[("delta", 1.into()), ("id", 2.into())]),
                    1 => record(&[("id", 2.into()), ("delta", Value::Float(1.5))]),
                    2 => record(&[("id", 2.into()), ("delta", Value::Int(-3))]),
                    3 => 5.into(),
                    _ => record(&[
                        ("id", Value::Int(rng.below(99) as i64)),
                        ("delta", 1.into()),
                    ]),
                })
                .collect(),
        ),
        _ => golden::value(rng, 1),
    }
}

const KEYS: &[&str] = &[
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m",
];

/// A frame of one of the fast path's shapes.
fn near_frame(rng: &mut Rng) -> Value {
    let shapes = [
        (&shapes::CALL, "call"),
        (&shapes::RESULT_OK, "result"),
        (&shapes::STREAM_NEXT, "stream"),
        (&shapes::STREAM_CREDIT, "stream"),
        (&shapes::STREAM_END, "stream"),
        (&shapes::CANCEL, "cancel"),
        (&shapes::DROP, "drop"),
    ];
    let (shape, op) = *rng.pick(&shapes);
    let mut r = Record::new();
    for key in shape.keys {
        r.insert(*key, field(rng, key, op));
    }
    Value::Record(r)
}

fn messages(seed: u64, count: usize) -> Vec<Bytes> {
    let mut rng = Rng(seed | 1);
    let mut enc = Encoder::new();
    (0..count)
        .map(|_| {
            let mut bytes = if rng.chance(25) {
                golden::message(&mut rng, &mut enc)
            } else {
                enc.encode_to_vec(&near_frame(&mut rng))
            };
            match rng.below(16) {
                0 if !bytes.is_empty() => {
                    let at = rng.below(bytes.len() as u64) as usize;
                    bytes[at] ^= 1 << rng.below(8);
                }
                1 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
                2 => bytes.push(0xc0),
                _ => {}
            }
            Bytes::from(bytes)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_fast_path_decodes_exactly_as_the_general_reader(
        seed in any::<u64>(),
        budget in prop_oneof![Just(None), (0usize..4000).prop_map(Some)],
        factor in 0usize..4,
        depth in prop_oneof![Just(DecodeLimits::DEFAULT_MAX_DEPTH), 0usize..5],
    ) {
        let limits = DecodeLimits {
            decode_budget_base: budget.unwrap_or(DecodeLimits::DEFAULT_DECODE_BUDGET_BASE),
            decode_budget_factor: factor,
            max_depth: depth,
            ..DecodeLimits::default()
        };
        let mut fast = Arc::new(SlotTable::default());
        let mut slow = Arc::new(SlotTable::default());
        for (i, msg) in messages(seed, 40).iter().enumerate() {
            let a = decode_lazy(&limits, &mut fast, &mut LastName::default(), msg);
            let b = general(&limits, &mut slow, msg);
            prop_assert_eq!(format!("{a:?}"), format!("{b:?}"), "message {}: {:02x?}", i, &msg[..]);
            prop_assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "slots after message {}", i);
        }
    }
}
