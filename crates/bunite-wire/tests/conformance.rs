//! Conformance with the shared wire vectors (`shared/vectors`, described in its README):
//! bytes produced by the bunite-core 0.10 TypeScript peer. Every file there is checked
//! here, and a file nobody checks fails the suite.
//!
//! The vectors are found through `BUNITE_VECTORS`, else at `shared/vectors` beside the
//! repository. A missing directory is a failure, never a skip.

mod support;

use std::collections::HashMap;
use support::vectors_dir;

use bunite_wire::{
    CapId, DecodeLimits, Decoder, Encoder, Frame, Payload, Record, ResultFrame, StreamEvent,
    TypedArray, TypedArrayKind, Value,
};
use bytes::Bytes;

/// Every file in the vectors directory and the test that checks it.
const HANDLED: &[&str] = &[
    "README.md",
    "frames.jsonl",
    "session.jsonl",
    "shapes.jsonl",
    "values.jsonl",
    "capref.jsonl",
    "encrypted-pipe.json",
];

fn read(name: &str) -> String {
    let path = vectors_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Each line of a JSON-lines file as a record (parsed through `Value`'s own `Deserialize`,
/// which keeps the key order that `serde_json::Value` would sort away).
fn lines(name: &str) -> Vec<Record> {
    read(name)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Record(r)) => r,
            other => panic!("{name}: line is not an object: {other:?}"),
        })
        .collect()
}

fn field<'a>(r: &'a Record, key: &str) -> &'a Value {
    r.get(key)
        .unwrap_or_else(|| panic!("vector without {key:?}: {r:?}"))
}

fn text<'a>(r: &'a Record, key: &str) -> &'a str {
    field(r, key)
        .as_str()
        .unwrap_or_else(|| panic!("{key:?} is not a string in {r:?}"))
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

/// The README's notation for what JSON cannot hold, turned into values.
fn notation(v: &Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(items.iter().map(notation).collect()),
        Value::Record(r) => match r.0.as_slice() {
            [(k, inner)] if k.starts_with('$') => special(k, inner),
            fields => Value::Record(Record(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), notation(v)))
                    .collect(),
            )),
        },
        other => other.clone(),
    }
}

fn special(key: &str, inner: &Value) -> Value {
    let typed = |kind, bytes| Value::TypedArray(TypedArray { kind, bytes });
    let floats = |v: &Value| -> Vec<f64> {
        match v {
            Value::Array(items) => items.iter().map(number).collect(),
            other => panic!("not a number array: {other:?}"),
        }
    };
    let s = || {
        inner
            .as_str()
            .unwrap_or_else(|| panic!("{key} needs a string"))
    };
    match key {
        "$undefined" => Value::Undefined,
        "$capref" => Value::CapRef(CapId(number(inner) as u32)),
        "$bin" => Value::Bin(unhex(s())),
        "$u8" => typed(TypedArrayKind::Uint8, unhex(s())),
        "$f32" => typed(
            TypedArrayKind::Float32,
            floats(inner)
                .iter()
                .flat_map(|f| (*f as f32).to_le_bytes())
                .collect(),
        ),
        "$f64" => typed(
            TypedArrayKind::Float64,
            floats(inner).iter().flat_map(|f| f.to_le_bytes()).collect(),
        ),
        "$float" => Value::Float(match s() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            other => panic!("unknown $float {other}"),
        }),
        "$bigint" => match s().parse::<i64>() {
            Ok(n) => Value::Int(n),
            Err(_) => Value::UInt(s().parse().expect("bigint out of range")),
        },
        other => panic!("unknown notation {other}"),
    }
}

fn number(v: &Value) -> f64 {
    match *v {
        Value::Int(n) => n as f64,
        Value::UInt(n) => n as f64,
        Value::Float(f) => f,
        // `Value`'s Deserialize already turned `{"$capref": n}` into a CapRef.
        Value::CapRef(id) => f64::from(id.0),
        ref other => panic!("not a number: {other:?}"),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    support::same(a, b, support::Nan::Any)
}

fn is_frame(v: &Value) -> bool {
    v.as_record().and_then(|r| r.get("op")).is_some()
}

fn decoder() -> Decoder {
    Decoder::new(DecodeLimits::default())
}

/// Decodes `bytes` as `expected` and encodes `expected` back to exactly `bytes`.
fn check_value(name: &str, enc: &mut Encoder, dec: &mut Decoder, bytes: &[u8], expected: &Value) {
    let decoded = dec
        .decode(bytes)
        .unwrap_or_else(|e| panic!("{name}: decode failed: {e}"));
    assert!(
        same(&decoded, expected),
        "{name}: decoded {decoded:?}, expected {expected:?}"
    );
    let encoded = enc.encode_to_vec(expected);
    assert_eq!(
        hex::encode(&encoded),
        hex::encode(bytes),
        "{name}: encoding differs"
    );
}

/// The same through typed frames: decode to a `Frame`, encode the `Frame` back.
fn check_frame(name: &str, enc: &mut Encoder, dec: &mut Decoder, bytes: &[u8], expected: &Value) {
    let frame = dec
        .decode_frame(bytes)
        .unwrap_or_else(|e| panic!("{name}: not a valid frame: {e}"));
    assert!(same(&frame.to_value(), expected), "{name}: frame {frame:?}");
    let mut encoded = Vec::new();
    enc.encode_frame(&frame, &mut encoded);
    assert_eq!(
        hex::encode(&encoded),
        hex::encode(bytes),
        "{name}: frame encoding differs"
    );
}

#[test]
fn frames_each_with_a_fresh_codec() {
    let vectors = lines("frames.jsonl");
    assert!(
        vectors.len() >= 20,
        "frames.jsonl has only {} lines",
        vectors.len()
    );
    let mut typed = 0;
    for v in &vectors {
        let name = text(v, "name");
        let bytes = unhex(text(v, "hex"));
        let expected = notation(field(v, "value"));
        check_value(name, &mut Encoder::new(), &mut decoder(), &bytes, &expected);
        if is_frame(&expected) {
            check_frame(name, &mut Encoder::new(), &mut decoder(), &bytes, &expected);
            typed += 1;
        }
    }
    assert!(typed >= 20, "only {typed} typed frames checked");
}

#[test]
fn session_one_codec_per_direction() {
    let vectors = lines("session.jsonl");
    let mut codecs: HashMap<String, (Encoder, Decoder, Encoder, Decoder)> = HashMap::new();
    for (i, v) in vectors.iter().enumerate() {
        let dir = text(v, "dir");
        let name = format!("session line {} ({dir})", i + 1);
        let bytes = unhex(text(v, "hex"));
        let expected = notation(field(v, "value"));
        let (enc, dec, frame_enc, frame_dec) = codecs
            .entry(dir.to_owned())
            .or_insert_with(|| (Encoder::new(), decoder(), Encoder::new(), decoder()));
        check_value(&name, enc, dec, &bytes, &expected);
        check_frame(&name, frame_enc, frame_dec, &bytes, &expected);
    }
    assert_eq!(codecs.len(), 2, "session.jsonl should have both directions");
}

#[test]
fn shapes_wrap_and_evict_on_one_connection() {
    let vectors = lines("shapes.jsonl");
    assert_eq!(vectors.len(), 71, "the README promises 71 frames");
    let (mut enc, mut dec) = (Encoder::new(), decoder());
    let (mut frame_enc, mut frame_dec) = (Encoder::new(), decoder());
    for v in &vectors {
        let name = format!("shapes seq {:?}", field(v, "seq"));
        let bytes = unhex(text(v, "hex"));
        let expected = notation(field(v, "value"));
        check_value(&name, &mut enc, &mut dec, &bytes, &expected);
        check_frame(&name, &mut frame_enc, &mut frame_dec, &bytes, &expected);
    }
}

#[test]
fn values_each_with_a_fresh_codec() {
    let vectors = lines("values.jsonl");
    assert!(
        vectors.len() >= 50,
        "values.jsonl has only {} lines",
        vectors.len()
    );
    for v in &vectors {
        let name = text(v, "name");
        let bytes = unhex(text(v, "hex"));
        let decoded = decoder()
            .decode(&bytes)
            .unwrap_or_else(|e| panic!("{name}: decode failed: {e}"));
        let decodes_to = notation(field(v, "decodes_to"));
        assert!(same(&decoded, &decodes_to), "{name}: decoded {decoded:?}");
        let encoded = Encoder::new().encode_to_vec(&notation(field(v, "value")));
        assert_eq!(
            hex::encode(&encoded),
            text(v, "hex"),
            "{name}: encoding differs"
        );
    }
}

#[test]
fn caprefs_at_every_varint_length() {
    let vectors = lines("capref.jsonl");
    assert_eq!(vectors.len(), 10);
    for v in &vectors {
        let name = text(v, "name");
        let expected = notation(field(v, "value"));
        assert!(matches!(expected, Value::CapRef(_)), "{name}");
        let bytes = unhex(text(v, "hex"));
        check_value(name, &mut Encoder::new(), &mut decoder(), &bytes, &expected);
    }
}

/// This crate has no cryptography: the AES-256-GCM half of this vector (encrypt, decrypt,
/// tag tampering) is checked by the runtime crate's encrypted-pipe transport tests. Here:
/// the file parses and its plaintext is a valid frame.
#[test]
fn encrypted_pipe_plaintext_is_a_frame() {
    let v: Value = serde_json::from_str(&read("encrypted-pipe.json")).expect("invalid JSON");
    let r = v.as_record().expect("encrypted-pipe.json is not an object");
    assert_eq!(unhex(text(r, "key")).len(), 32);
    assert_eq!(unhex(text(r, "iv")).len(), 12);
    let wire = unhex(text(r, "wire"));
    let plaintext = unhex(text(r, "plaintext"));
    // 0x01 ‖ IV ‖ ciphertext ‖ 16-byte tag (PROTOCOL §2).
    assert_eq!(wire.len(), 1 + 12 + plaintext.len() + 16);
    assert_eq!(wire.first(), Some(&0x01));
    let frame = decoder()
        .decode_frame(&plaintext)
        .expect("plaintext is not a frame");
    assert!(matches!(frame, Frame::Stream(_)), "{frame:?}");
}

/// A frame decoded lazily by `lazy` equals the eager route's frame (`Decoder::decode` then
/// `Frame::from_value`, by `eager`) and the expected value; its payload reads the same
/// through `to_value`, `deserialize::<Value>` and `cap_refs`.
fn check_lazy(name: &str, lazy: &mut Decoder, eager: &mut Decoder, bytes: &[u8], expected: &Value) {
    let frame = lazy
        .decode_frame_lazy(&Bytes::copy_from_slice(bytes))
        .unwrap_or_else(|e| panic!("{name}: lazy decode failed: {e}"));
    if let Some(p) = payload(&frame) {
        check_payload(name, p);
    }
    let lazy_frame = frame.into_values().expect("payload materializes");
    let eager_value = eager.decode(bytes).expect("eager decode");
    let eager_frame = Frame::from_value(eager_value).expect("eager frame");
    assert_eq!(
        format!("{lazy_frame:?}"),
        format!("{eager_frame:?}"),
        "{name}: lazy and eager frames differ"
    );
    assert!(
        same(&lazy_frame.to_value(), expected),
        "{name}: {lazy_frame:?}"
    );
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

fn check_payload(name: &str, p: &Payload) {
    let v = p.to_value().expect("payload materializes");
    let d: Value = p.deserialize().expect("payload deserializes");
    assert!(same(&v, &d), "{name}: to_value {v:?}, deserialize {d:?}");
    let caps: Vec<CapId> = collect_caps(&v);
    assert_eq!(p.cap_refs(), caps, "{name}");
}

fn collect_caps(v: &Value) -> Vec<CapId> {
    match v {
        Value::CapRef(id) => vec![*id],
        Value::Array(items) => items.iter().flat_map(collect_caps).collect(),
        Value::Record(r) => r.iter().flat_map(|(_, v)| collect_caps(v)).collect(),
        Value::Map(m) => m
            .iter()
            .flat_map(|(k, v)| collect_caps(k).into_iter().chain(collect_caps(v)))
            .collect(),
        _ => vec![],
    }
}

#[test]
fn every_frame_vector_decodes_lazily_as_eagerly() {
    for v in lines("frames.jsonl") {
        let expected = notation(field(&v, "value"));
        if is_frame(&expected) {
            let bytes = unhex(text(&v, "hex"));
            check_lazy(
                text(&v, "name"),
                &mut decoder(),
                &mut decoder(),
                &bytes,
                &expected,
            );
        }
    }
    let mut by_dir: HashMap<String, (Decoder, Decoder)> = HashMap::new();
    for (i, v) in lines("session.jsonl").iter().enumerate() {
        let (lazy, eager) = by_dir
            .entry(text(v, "dir").to_owned())
            .or_insert_with(|| (decoder(), decoder()));
        let name = format!("session line {}", i + 1);
        let bytes = unhex(text(v, "hex"));
        check_lazy(&name, lazy, eager, &bytes, &notation(field(v, "value")));
    }
    let (mut lazy, mut eager) = (decoder(), decoder());
    for v in lines("shapes.jsonl") {
        let name = format!("shapes seq {:?}", field(&v, "seq"));
        let bytes = unhex(text(&v, "hex"));
        check_lazy(
            &name,
            &mut lazy,
            &mut eager,
            &bytes,
            &notation(field(&v, "value")),
        );
    }
}

/// `{op:"result", id:1, ok:true, value:…}` up to its value, as a fresh encoder writes it.
const RESULT_PREFIX: &str = "d4724094a26f70a26964a26f6ba576616c7565a6726573756c7401c3";

#[test]
fn every_value_vector_decodes_lazily_as_eagerly() {
    for file in ["values.jsonl", "capref.jsonl"] {
        for v in lines(file) {
            let name = text(&v, "name");
            let bytes = unhex(text(&v, "hex"));
            let eager = decoder().decode(&bytes).expect("eager decode");
            let mut msg = unhex(RESULT_PREFIX);
            msg.extend_from_slice(&bytes);
            let frame = decoder()
                .decode_frame_lazy(&Bytes::from(msg))
                .unwrap_or_else(|e| panic!("{name}: lazy decode failed: {e}"));
            let p = payload(&frame).expect("a result payload");
            check_payload(name, p);
            let lazy = p.to_value().expect("payload materializes");
            assert!(
                same(&lazy, &eager),
                "{name}: lazy {lazy:?}, eager {eager:?}"
            );
            assert_eq!(p.wire_len(), bytes.len(), "{name}");
        }
    }
}

#[test]
fn every_vector_file_is_checked() {
    let mut unhandled = Vec::new();
    for entry in std::fs::read_dir(vectors_dir()).expect("cannot list the vectors") {
        let name = entry.expect("cannot list the vectors").file_name();
        let name = name.to_string_lossy();
        if !HANDLED.contains(&name.as_ref()) {
            unhandled.push(name.into_owned());
        }
    }
    assert!(
        unhandled.is_empty(),
        "vector files no test checks: {unhandled:?}"
    );
}
