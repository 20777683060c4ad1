//! The lazy frame decoder's observable behaviour, pinned: for a deterministic sequence of
//! messages through one decoder (valid frames of every kind, frame-like records with odd
//! keys and values, nested and redefined record slots, and corrupted bytes), the exact
//! outcome of each message (the frame, with each payload's measured cost, or the error) and
//! the smallest decode budget that admits it.
//!
//! `golden.txt` was written by the decoder before its rewrite for speed, so this test holds
//! the fast decoder to the old one's budget charges, errors and definitions, message by
//! message. Rewrite it (only for a deliberate change of behaviour) with
//! `BUNITE_WRITE_GOLDEN=1 cargo test -p bunite-wire --lib golden`.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;

use super::decode_lazy;
use crate::codec::Encoder;
use crate::frame::{
    Call, CallMeta, Cancel, CapRevoked, DropEntry, DropFrame, Frame, Goaway, Hello, ResultFrame,
    StreamEvent, StreamFrame, WireStatus,
};
use crate::ids::{CallId, CapId};
use crate::limits::DecodeLimits;
use crate::records::SlotTable;
use crate::text::LastName;
use crate::value::{Record, Timestamp, TypedArray, TypedArrayKind, Value};

/// A small deterministic generator (xorshift64*), so the sequence never changes.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub(super) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub(super) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const KEYS: &[&str] = &[
    "op",
    "id",
    "v",
    "mode",
    "origin",
    "maxBytes",
    "reason",
    "method",
    "ev",
    "ok",
    "features",
    "target",
    "meta",
    "args",
    "value",
    "error",
    "caps",
    "capIds",
    "credit",
    "kind",
    "code",
    "message",
    "details",
    "retry",
    "messages",
    "parentCallId",
    "deadlineMs",
    "context",
    "delta",
    "a",
    "b",
    "name",
    "x",
    "",
];

const OPS: &[&str] = &[
    "hello",
    "goaway",
    "call",
    "result",
    "cancel",
    "stream",
    "drop",
    "cap_revoked",
    "nope",
];

const WORDS: &[&str] = &[
    "cap",
    "next",
    "credit",
    "end",
    "error",
    "native",
    "web",
    "increment",
    "é",
    "",
    "internal",
];

fn int(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0 => Value::Int(rng.below(64) as i64),
        1 => Value::Int(rng.below(300) as i64 - 100),
        2 => Value::Int(rng.next() as i64),
        3 => Value::UInt(rng.next() | 1 << 63),
        4 => Value::Float(rng.below(10) as f64),
        5 => Value::Float(rng.below(1000) as f64 / 7.0),
        6 => Value::Int(rng.below(1 << 32) as i64),
        _ => Value::Int(1 << 53),
    }
}

pub(super) fn leaf(rng: &mut Rng) -> Value {
    match rng.below(12) {
        0 => Value::Undefined,
        1 => Value::Null,
        2 => Value::Bool(rng.chance(50)),
        3 | 4 => int(rng),
        5 => Value::from(*rng.pick(WORDS)),
        6 => Value::Str("s".repeat(rng.below(40) as usize)),
        7 => Value::Bin(vec![7; rng.below(5) as usize]),
        8 => Value::CapRef(CapId(rng.below(1 << 20) as u32)),
        9 => Value::TypedArray(TypedArray {
            kind: TypedArrayKind::Uint16,
            bytes: vec![1; 2 * rng.below(3) as usize],
        }),
        10 => Value::Timestamp(Timestamp {
            seconds: rng.below(1 << 40) as i64,
            nanos: rng.below(1000) as u32,
        }),
        _ => Value::from(*rng.pick(OPS)),
    }
}

pub(super) fn value(rng: &mut Rng, depth: u32) -> Value {
    if depth == 0 || rng.chance(45) {
        return leaf(rng);
    }
    match rng.below(3) {
        0 => Value::Array((0..rng.below(4)).map(|_| value(rng, depth - 1)).collect()),
        1 => Value::Map(
            (0..rng.below(3))
                .map(|_| (leaf(rng), value(rng, depth - 1)))
                .collect(),
        ),
        _ => record(rng, depth),
    }
}

/// A record with distinct keys from the frame-ish pool.
fn record(rng: &mut Rng, depth: u32) -> Value {
    let mut r = Record::new();
    for _ in 0..rng.below(5) {
        let k = *rng.pick(KEYS);
        if r.get(k).is_none() {
            r.insert(k, value(rng, depth.saturating_sub(1)));
        }
    }
    Value::Record(r)
}

fn status(rng: &mut Rng) -> WireStatus {
    WireStatus {
        code: rng.pick(WORDS).to_string(),
        message: rng.chance(70).then(|| "boom".to_string()),
        details: rng.chance(40).then(|| value(rng, 2)),
        retry: rng.chance(20).then(|| value(rng, 1)),
        full: rng.chance(30),
    }
}

fn id(rng: &mut Rng) -> CallId {
    CallId(match rng.below(4) {
        0 => rng.below(64),
        1 => rng.below(1 << 16),
        2 => rng.below(1 << 53),
        _ => rng.below(300),
    })
}

/// A well-formed frame of any kind.
fn frame(rng: &mut Rng) -> Frame {
    let payload = |rng: &mut Rng| value(rng, 3);
    match rng.below(12) {
        0 => Frame::Hello(Hello {
            v: 1,
            mode: rng.pick(WORDS).to_string(),
            features: (0..rng.below(3)).map(|_| "f".into()).collect(),
            max_bytes: rng.below(1 << 40),
            origin: "o".into(),
        }),
        1 => Frame::Goaway(Goaway {
            reason: rng.chance(50).then(|| "bye".into()),
            error: rng.chance(50).then(|| status(rng)),
        }),
        2..=4 => Frame::Call(Call {
            id: id(rng),
            target: CapId(rng.below(1 << 32) as u32),
            method: (*rng.pick(WORDS)).into(),
            args: payload(rng),
            meta: rng.chance(40).then(|| CallMeta {
                parent_call_id: rng.chance(50).then(|| id(rng)),
                deadline_ms: rng.chance(50).then(|| rng.below(10_000) as f64 / 4.0),
                context: rng
                    .chance(30)
                    .then(|| vec![("k".into(), "v".into()), ("trace".into(), "x".into())]),
            }),
        }),
        5..=6 => Frame::Result(ResultFrame {
            id: id(rng),
            outcome: if rng.chance(70) {
                Ok(payload(rng))
            } else {
                Err(status(rng))
            },
        }),
        7 => Frame::Cancel(Cancel {
            id: id(rng),
            reason: rng.chance(50).then(|| "client_cancel".into()),
        }),
        8..=9 => Frame::Stream(StreamFrame {
            id: id(rng),
            event: match rng.below(4) {
                0 => StreamEvent::Next(payload(rng)),
                1 => StreamEvent::Credit(rng.chance(80).then(|| rng.below(100))),
                2 => StreamEvent::End,
                _ => StreamEvent::Error(status(rng)),
            },
        }),
        10 => Frame::Drop(DropFrame {
            caps: (0..rng.below(4))
                .map(|_| DropEntry {
                    id: CapId(rng.below(1000) as u32),
                    delta: rng.below(3) as u32,
                })
                .collect(),
        }),
        _ => Frame::CapRevoked(CapRevoked {
            cap_ids: (0..rng.below(4))
                .map(|_| CapId(rng.below(1 << 32) as u32))
                .collect(),
        }),
    }
}

/// A frame with one field added, removed or replaced, or a frame-like record.
fn odd_frame(rng: &mut Rng) -> Value {
    let mut v = if rng.chance(30) {
        let mut r = Record::new();
        r.insert("op", Value::from(*rng.pick(OPS)));
        Value::Record(r)
    } else {
        frame(rng).to_value()
    };
    if let Value::Record(r) = &mut v {
        for _ in 0..1 + rng.below(3) {
            let k = *rng.pick(KEYS);
            let replacement = value(rng, 2);
            let at = r.0.iter().position(|(key, _)| key == k);
            match at {
                Some(at) if rng.chance(20) => {
                    r.0.remove(at);
                }
                Some(at) => r.0[at].1 = replacement,
                None => {
                    let at = rng.below(r.0.len() as u64 + 1) as usize;
                    r.0.insert(at, (k.into(), replacement));
                }
            }
        }
    }
    v
}

/// Bytes of the next message: mostly frames, sometimes corrupted.
pub(super) fn message(rng: &mut Rng, enc: &mut Encoder) -> Vec<u8> {
    let v = if rng.chance(60) {
        frame(rng).to_value()
    } else {
        odd_frame(rng)
    };
    let mut bytes = enc.encode_to_vec(&v);
    match rng.below(20) {
        0 if !bytes.is_empty() => {
            let at = rng.below(bytes.len() as u64) as usize;
            bytes[at] ^= 1 << rng.below(8);
        }
        1 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
        2 => bytes.push(rng.below(256) as u8),
        3 => {
            // Nested beyond the depth limit inside a payload.
            bytes = enc.encode_to_vec(
                &Frame::Result(ResultFrame {
                    id: CallId(1),
                    outcome: Ok((0..300).fold(Value::Null, |v, _| Value::Array(vec![v]))),
                })
                .to_value(),
            );
        }
        4 => {
            // A definition that repeats a key.
            bytes = vec![
                0xd4,
                0x72,
                0x40 + rng.below(64) as u8,
                0x92,
                0xa2,
                b'o',
                b'p',
            ];
            bytes.extend([0xa2, b'o', b'p', 0xa4]);
            bytes.extend(b"call");
            bytes.extend([0xa4]);
            bytes.extend(b"drop");
        }
        _ => {}
    }
    bytes
}

fn limits(budget: usize) -> DecodeLimits {
    DecodeLimits {
        decode_budget_base: budget,
        decode_budget_factor: 0,
        max_depth: DecodeLimits::DEFAULT_MAX_DEPTH,
        ..DecodeLimits::default()
    }
}

/// The outcome of one message with `budget` against a copy of `slots`.
fn outcome(slots: &Arc<SlotTable>, msg: &Bytes, budget: usize) -> String {
    let mut copy = Arc::new(SlotTable::clone(slots));
    format!(
        "{:?}",
        decode_lazy(&limits(budget), &mut copy, &mut LastName::default(), msg)
    )
}

/// The smallest budget that decodes `msg` to anything but `OverBudget`.
fn least_budget(slots: &Arc<SlotTable>, msg: &Bytes) -> usize {
    let over = |b| outcome(slots, msg, b).contains("OverBudget");
    let (mut lo, mut hi) = (0usize, 1 << 22);
    if over(hi) {
        return usize::MAX;
    }
    while lo < hi {
        let mid = (lo + hi) / 2;
        if over(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

fn transcript() -> String {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut enc = Encoder::new();
    let mut slots = Arc::new(SlotTable::default());
    let mut out = String::new();
    for i in 0..1500 {
        let msg = Bytes::from(message(&mut rng, &mut enc));
        let budget = least_budget(&slots, &msg);
        // The real decode, with the default budget, moves the table on (even past an error:
        // the definitions applied before it stay, and must be the same ones).
        let result = decode_lazy(
            &DecodeLimits::default(),
            &mut slots,
            &mut LastName::default(),
            &msg,
        );
        let _ = writeln!(out, "{i} {budget} {result:?}");
    }
    out
}

#[test]
fn lazy_decoding_matches_the_golden_transcript() {
    let got = transcript();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/frame_codec/golden.txt");
    if std::env::var_os("BUNITE_WRITE_GOLDEN").is_some() {
        std::fs::write(path, &got).expect("cannot write the golden transcript");
        return;
    }
    let want = include_str!("golden.txt");
    for (n, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "message {n} differs from the golden transcript");
    }
    assert_eq!(got.lines().count(), want.lines().count());
}
