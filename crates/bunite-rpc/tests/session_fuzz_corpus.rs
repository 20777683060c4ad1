//! The `session_ops` fuzz corpus (`fuzz/corpus/session_ops`), replayed on stable Rust: each
//! input drives two sessions through the harness, which checks their invariants after every
//! step (see `bunite_rpc::fuzzing`). CI runs no fuzzer; this is how its findings stay fixed.

mod common;

use common::replay_corpus;

/// Replays `fuzz/corpus/session_ops`, or `$BUNITE_FUZZ_CORPUS/session_ops` to replay a
/// fuzzer's working corpus (`BUNITE_FUZZ_CORPUS=/tmp/corpus cargo test --release --test
/// session_fuzz_corpus`), as the codec's replay does.
#[test]
fn the_session_ops_fuzz_corpus_replays_cleanly() {
    let reports = replay_corpus("session_ops", 10, bunite_rpc::fuzzing::session_ops);
    let mut total = bunite_rpc::fuzzing::Report::default();
    for r in &reports {
        total.steps += r.steps;
        total.replies += r.replies;
        total.invocations += r.invocations;
        total.items += r.items;
        total.hostile += r.hostile;
        total.closed += r.closed;
        total.drained += r.drained;
        total.refused += r.refused;
        total.drain_closes += r.drain_closes;
    }
    eprintln!("{} inputs replayed: {total:?}", reports.len());
    // The corpus reaches every part: handlers run, stream items flow, hostile input is
    // survived, sessions close, conforming runs drain to empty tables, and sessions asked
    // to drain close once they are done.
    let t = total;
    assert!(t.invocations > 0 && t.items > 0, "{t:?}");
    assert!(t.hostile > 0 && t.closed > 0 && t.drained > 0, "{t:?}");
    assert!(t.drain_closes > 0, "{t:?}");
    assert!(
        t.refused > 0,
        "no answer refused for the send budget: {t:?}"
    );
}
