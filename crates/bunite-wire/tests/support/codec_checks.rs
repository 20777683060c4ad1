//! The checks the codec's fuzz targets run (`fuzz/fuzz_targets`), shared with the stable test
//! that replays their corpus (`tests/fuzz_corpus.rs`). Every check panics on a disagreement;
//! input the codec refuses is fine.
// The fuzz targets include this file with `#[path]`; each uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;

use bunite_wire::{
    from_value, Blob, CapId, CapRef, DecodeLimits, Decoder, Frame, Payload, ResultFrame,
    StreamEvent, Value,
};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Limits small enough that fuzz inputs reach the decode budget and the depth limit.
pub fn limits() -> DecodeLimits {
    DecodeLimits {
        decode_budget_base: 16 * 1024,
        max_depth: 64,
        ..DecodeLimits::default()
    }
}

/// The messages of a frame-sequence input: each a 2-byte little-endian length (cut to what
/// is left) and that many bytes.
pub fn messages(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while let [a, b, rest @ ..] = data {
        let n = usize::from(u16::from_le_bytes([*a, *b])).min(rest.len());
        let (msg, tail) = rest.split_at(n);
        out.push(msg);
        data = tail;
    }
    out
}

/// The inverse of [`messages`], for writing seeds.
pub fn join(msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        let n = u16::try_from(m.len()).expect("seed message over 64 KiB");
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(m);
    }
    out
}

/// One stateful lazy decoder over a sequence of messages, beside one `Value` decoder fed the
/// same messages. Until the first refused message (where a connection would close): the
/// `Value` route accepts what the lazy route accepts and makes the same frame, and every
/// payload reads the same through `to_value`, `deserialize::<Value>` and `cap_refs`.
pub fn frame_sequence(data: &[u8]) {
    let mut lazy = Decoder::new(limits());
    let mut eager = Decoder::new(limits());
    for msg in messages(data) {
        let Ok(frame) = lazy.decode_frame_lazy(&Bytes::copy_from_slice(msg)) else {
            return;
        };
        if let Some(p) = payload(&frame) {
            check_payload(p);
        }
        let value = eager
            .decode(msg)
            .expect("the Value decoder refused a message the lazy decoder accepted");
        let via_value = Frame::from_value(value).expect("Frame::from_value refused a frame");
        let materialized = frame
            .into_values()
            .expect("an admitted payload failed to materialize");
        assert_eq!(format!("{materialized:?}"), format!("{via_value:?}"));
    }
}

fn payload(frame: &Frame<Payload>) -> Option<&Payload> {
    match frame {
        Frame::Call(c) => Some(&c.args),
        Frame::Result(ResultFrame { outcome: Ok(p), .. }) => Some(p),
        Frame::Stream(s) => match &s.event {
            StreamEvent::Next(p) => Some(p),
            _ => None,
        },
        _ => None,
    }
}

/// `to_value`, `deserialize::<Value>` and `cap_refs` of an admitted payload agree.
pub fn check_payload(p: &Payload) {
    let v = p
        .to_value()
        .expect("an admitted payload failed to materialize");
    let d: Value = p
        .deserialize()
        .expect("an admitted payload failed to deserialize as a Value");
    assert_eq!(format!("{v:?}"), format!("{d:?}"));
    assert_eq!(p.cap_refs(), cap_refs(&v));
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

/// `{op:"result", id:1, ok:true, value:…}` up to its value: a fresh decoder's first frame.
pub const RESULT_PREFIX: &[u8] = &[
    0xd4, 0x72, 0x40, 0x94, 0xa2, b'o', b'p', 0xa2, b'i', b'd', 0xa2, b'o', b'k', 0xa5, b'v', b'a',
    b'l', b'u', b'e', 0xa6, b'r', b'e', b's', b'u', b'l', b't', 0x01, 0xc3,
];

/// A nested type for serde from arbitrary bytes: structs, enums of each tagging style, maps
/// with string and integer keys, options, vectors, bytes (and `Blob`s), CapRefs and raw
/// `Value`s.
#[derive(Debug, Serialize, Deserialize)]
pub struct Nested {
    pub id: Option<u32>,
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub kind: Kind,
    #[serde(default)]
    pub children: Vec<Nested>,
    #[serde(default)]
    pub by_id: BTreeMap<u32, Tagged>,
    #[serde(default, with = "serde_bytes")]
    pub blob: Vec<u8>,
    /// Read as a slice of the message when long enough (`Blob::SHARE_MIN`).
    #[serde(default)]
    pub shared: Option<Blob>,
    pub cap: Option<CapRef>,
    pub extra: Option<Value>,
    #[serde(default)]
    pub loose: Vec<Loose>,
}

/// Externally tagged.
#[derive(Debug, Serialize, Deserialize)]
pub enum Kind {
    A,
    B(i64),
    C { x: f64, y: Option<Box<Kind>> },
    D(Vec<u8>, bool),
}

/// Internally tagged.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t")]
pub enum Tagged {
    P { n: i16 },
    Q,
}

/// Untagged, recursive.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Loose {
    N(u64),
    S(String),
    L(Vec<Loose>),
    M(BTreeMap<String, i8>),
}

/// Reads `T` both ways; they must agree, unless the typed route ran out of budget (it charges
/// what `T` builds, which may exceed what the `Value` cost).
fn agree<T: DeserializeOwned + std::fmt::Debug>(p: &Payload, v: &Value) {
    let eager = from_value::<T>(v.clone());
    let lazy = p.deserialize::<T>();
    if let Err(e) = &lazy {
        if e.message().contains("budget") {
            return;
        }
    }
    assert_eq!(format!("{eager:?}"), format!("{lazy:?}"));
}

/// The input as a result's payload: read into nested types straight from the bytes and
/// through its `Value`.
pub fn serde_nested(data: &[u8]) {
    let mut msg = RESULT_PREFIX.to_vec();
    msg.extend_from_slice(data);
    let mut dec = Decoder::new(limits());
    let Ok(Frame::Result(ResultFrame { outcome: Ok(p), .. })) =
        dec.decode_frame_lazy(&Bytes::from(msg))
    else {
        return;
    };
    check_payload(&p);
    let v = p
        .to_value()
        .expect("an admitted payload failed to materialize");
    agree::<Nested>(&p, &v);
    agree::<Vec<Nested>>(&p, &v);
    agree::<Option<Kind>>(&p, &v);
    agree::<BTreeMap<String, Loose>>(&p, &v);
    agree::<Vec<Tagged>>(&p, &v);
    agree::<(u8, Option<String>, Vec<CapRef>)>(&p, &v);
    agree::<Vec<Blob>>(&p, &v);
    agree::<Option<Blob>>(&p, &v);
}
