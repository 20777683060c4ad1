//! The `session_ops` fuzz corpus (`fuzz/corpus/session_ops`), replayed on stable Rust: each
//! input drives two sessions through the harness, which checks their invariants after every
//! step (see `bunite_rpc::fuzzing`). CI runs no fuzzer; this is how its findings stay fixed.

use std::path::PathBuf;

/// `fuzz/corpus/session_ops`, or `$BUNITE_FUZZ_CORPUS/session_ops` to replay a fuzzer's
/// working corpus (`BUNITE_FUZZ_CORPUS=/tmp/corpus cargo test --release --test
/// session_fuzz_corpus`), as the codec's replay does.
fn corpus_dir() -> PathBuf {
    match std::env::var_os("BUNITE_FUZZ_CORPUS") {
        Some(dir) => PathBuf::from(dir).join("session_ops"),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus"))
            .join("session_ops"),
    }
}

#[test]
fn the_session_ops_fuzz_corpus_replays_cleanly() {
    let dir = corpus_dir();
    let mut total = bunite_rpc::fuzzing::Report::default();
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).expect("the fuzz corpus") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let run = std::panic::catch_unwind(|| bunite_rpc::fuzzing::session_ops(&data));
        let r = run.unwrap_or_else(|_| panic!("corpus input {} fails", path.display()));
        inputs += 1;
        total.steps += r.steps;
        total.replies += r.replies;
        total.invocations += r.invocations;
        total.items += r.items;
        total.hostile += r.hostile;
        total.closed += r.closed;
        total.drained += r.drained;
    }
    assert!(inputs >= 10, "only {inputs} inputs in {}", dir.display());
    eprintln!("{inputs} inputs replayed: {total:?}");
    // The corpus reaches every part: handlers run, stream items flow, hostile input is
    // survived, sessions close, and conforming runs drain to empty tables.
    let t = total;
    assert!(t.invocations > 0 && t.items > 0, "{t:?}");
    assert!(t.hostile > 0 && t.closed > 0 && t.drained > 0, "{t:?}");
}
