//! Replays the fuzz targets' checked-in corpus (`fuzz/corpus/<target>/`) on stable Rust, with
//! the very checks the targets run (`support/codec_checks.rs`): CI runs no fuzzer, but every
//! seed and every past finding stays a test.
//!
//! The seeds are written by the ignored test below from the shared vectors and typed samples:
//! `cargo test -p bunite-wire --test fuzz_corpus -- --ignored` (then commit them).

mod support;

use std::path::PathBuf;

use bunite_wire::{to_value, Blob, CallId, CapId, CapRef, Encoder, Frame, ResultFrame, Value};
use support::codec_checks::{self, Kind, Loose, Nested, Tagged, RESULT_PREFIX};

/// `fuzz/corpus/<target>`, or `$BUNITE_FUZZ_CORPUS/<target>` to replay a fuzzer's working
/// corpus (`BUNITE_FUZZ_CORPUS=/tmp/corpus cargo test --release --test fuzz_corpus`).
fn corpus_dir(target: &str) -> PathBuf {
    match std::env::var_os("BUNITE_FUZZ_CORPUS") {
        Some(dir) => PathBuf::from(dir).join(target),
        None => {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus")).join(target)
        }
    }
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("no corpus at {}: {e}", dir.display()))
        .map(|entry| entry.expect("cannot list the corpus").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus at {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("cannot read a corpus file");
            (path, bytes)
        })
        .collect()
}

#[test]
fn frame_sequence_corpus_replays() {
    let files = corpus("frame_sequence");
    for (path, bytes) in &files {
        eprintln!("{}", path.display());
        codec_checks::frame_sequence(bytes);
    }
    eprintln!("{} inputs replayed", files.len());
}

#[test]
fn serde_nested_corpus_replays() {
    let files = corpus("serde_nested");
    for (path, bytes) in &files {
        eprintln!("{}", path.display());
        codec_checks::serde_nested(bytes);
    }
    eprintln!("{} inputs replayed", files.len());
}

fn vector_frames(file: &str, dir: Option<&str>) -> Vec<Vec<u8>> {
    let path = support::vectors_dir().join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| dir.is_none_or(|d| v["dir"] == d))
        .filter_map(|v| hex::decode(v["hex"].as_str()?).ok())
        .collect()
}

fn sample(depth: u32) -> Nested {
    Nested {
        id: Some(depth),
        name: format!("n{depth}"),
        tags: vec!["a".into(), "bb".into()],
        kind: match depth % 4 {
            0 => Kind::A,
            1 => Kind::B(-5),
            2 => Kind::C {
                x: 1.5,
                y: Some(Box::new(Kind::D(vec![1, 2], true))),
            },
            _ => Kind::D(vec![], false),
        },
        children: (0..depth.min(2)).map(sample).collect(),
        by_id: [(1, Tagged::P { n: -3 }), (7, Tagged::Q)].into(),
        blob: vec![0, 255],
        shared: Some(Blob::from(vec![9, 8, 7])),
        cap: Some(CapRef(CapId(3))),
        extra: Some(Value::Array(vec![Value::Undefined, Value::Null])),
        loose: vec![
            Loose::N(4),
            Loose::S("s".into()),
            Loose::L(vec![Loose::N(1)]),
            Loose::M([("k".to_owned(), 1)].into()),
        ],
    }
}

/// The bytes after [`RESULT_PREFIX`] of a result carrying `v`, as a fresh encoder writes it.
fn result_payload(v: Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    let frame = Frame::Result(ResultFrame {
        id: CallId(1),
        outcome: Ok(v),
    });
    Encoder::new().encode_frame(&frame, &mut bytes);
    assert!(bytes.starts_with(RESULT_PREFIX));
    bytes.split_off(RESULT_PREFIX.len())
}

#[test]
#[ignore = "writes the seed corpus; run explicitly, then commit the files"]
fn write_seed_corpus() {
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("cannot create the corpus directory");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("cannot write a seed");
    };
    let seq = |frames: Vec<Vec<u8>>| codec_checks::join(&frames);
    write(
        "frame_sequence",
        "session-a",
        &seq(vector_frames("session.jsonl", Some("client->server"))),
    );
    write(
        "frame_sequence",
        "session-b",
        &seq(vector_frames("session.jsonl", Some("server->client"))),
    );
    write(
        "frame_sequence",
        "shapes",
        &seq(vector_frames("shapes.jsonl", None)),
    );
    for (i, frame) in vector_frames("frames.jsonl", None).into_iter().enumerate() {
        write(
            "frame_sequence",
            &format!("frame-{i:02}"),
            &seq(vec![frame]),
        );
    }
    for depth in 0..4 {
        let v = to_value(&sample(depth)).expect("sample");
        write(
            "serde_nested",
            &format!("nested-{depth}"),
            &result_payload(v),
        );
    }
    let list = to_value(&vec![sample(1), sample(0)]).expect("sample");
    write("serde_nested", "nested-list", &result_payload(list));
    let tuple = to_value(&(7u8, Some("x"), vec![CapRef(CapId(2))])).expect("sample");
    write("serde_nested", "tuple", &result_payload(tuple));
}
