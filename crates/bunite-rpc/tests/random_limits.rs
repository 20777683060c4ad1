//! Seeded random operations on live connections whose limits are drawn small, each side its
//! own: `max_caps` 3-40, `max_in_flight` 1-8, `max_revoked_ids` 1-8, `max_unsent_bytes`
//! 0.5-8 KiB, `max_buffered_stream_bytes` 128 B-4 KiB, `max_bytes` 4-64 KiB, and
//! `max_depth`, `max_record_table_bytes` and the decode budget a little above what the
//! operations' messages need. The operations, checks and case are those of `random_ops.rs`
//! (`ops/`, its module docs); what a limit reached may give each operation, and the watch
//! on both connections' counts, are in `ops/small.rs`. Over the in-memory transport or
//! loopback TCP, drawn per case, on the runtime `BUNITE_TEST_RUNTIME` names (one thread, or
//! two workers with `multi`).
//!
//! `BUNITE_OPS_SEEDS=N` runs seeds `0..N` (or `A..B`) instead of [`CI_SEEDS`];
//! `BUNITE_OPS_SEED=S` runs seed S alone (a failing case prints its seed).

mod common;
mod ops;

use ops::memory_or_tcp;

/// Seeds of a plain test run (about 30 ms each in debug on two cores: 6 s in all).
const CI_SEEDS: u64 = 200;

#[test]
fn random_operations_under_small_limits() {
    ops::run_seeds_under_small_limits(CI_SEEDS, memory_or_tcp);
}
