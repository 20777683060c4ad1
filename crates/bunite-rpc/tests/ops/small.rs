//! Cases under small limits (`random_limits.rs`): what each side's `Limits` are drawn from,
//! the outcomes a limit that is reached may give each operation (and no other), and the
//! watch on both connections' counts while the actors run.
//!
//! Each side draws its own limits (`draw`), so a call may meet the caller's bound or the
//! callee's. The outcomes a reached limit gives, from `Limits`, `Status` and PROTOCOL §7,
//! §9, §13.6:
//!
//! - `max_in_flight`: a call, stream or bootstrap over the caller's own count fails
//!   locally (`LocalError::InFlightLimit`) `resource_exhausted` `in-flight calls limit N`
//!   `max_concurrent_calls`, N the caller's; a call or stream open over the callee's count
//!   fails the same way from the peer, N the callee's (never a bootstrap: §8, bootstraps do
//!   not count on the server);
//! - `max_caps`: a bootstrap of a served name or a cap-returning call whose export would take
//!   the callee's table past it fails `resource_exhausted` `cap-table limit N`
//!   `max_caps_per_connection`, N the callee's (§7);
//! - `max_bytes`: an answer whose frame is over the caller's `maxBytes` is replaced by
//!   `resource_exhausted` `max_frame_bytes` (§13.6); one well under it arrives whole;
//! - `max_buffered_stream_bytes`: a stream whose value would take the caller's buffered
//!   values past it fails locally (`LocalError::StreamOverflow`) `resource_exhausted`, its
//!   message naming the limit;
//! - `back` (the callee calls the caller back from its handler) answers the errors of its
//!   own bootstrap and call: either side's in-flight count, the caller's cap table.
//!
//! The other limits drawn small (`max_depth`, `max_record_table_bytes`, the decode budget,
//! `max_revoked_ids`, `max_unsent_bytes`) are drawn no lower than what the operations'
//! messages need, so that they are met at their edge and must never end a connection: an
//! unexpected goaway fails every later operation `unavailable` outside a close, which the
//! checks refuse. `max_revoked_ids` only makes a call on a forgotten revoked reference reach
//! the peer, which answers `not_found` (`ops.flip`'s calls accept it already).
//!
//! The watch reads both connections' `stats()` every millisecond while the actors run: no
//! cap table over `max_caps`, no more calls and client streams pending than `max_in_flight`,
//! no more handlers and server streams running than `max_in_flight`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bunite_rpc::{Code, Connection, Error, Limits, LocalError};
use tokio_util::sync::CancellationToken;

use super::actor::{Actor, Op};
use super::{Rng, Violations, SECRET};

/// A side's limits for a case: each small limit drawn on its own, the rest at their
/// defaults.
pub(super) fn draw(rng: &mut Rng) -> Limits {
    let mut limits = Limits::default();
    let mut pick = |lo: u64, hi: u64| (lo + rng.below(hi - lo + 1)) as usize;
    limits.max_caps = pick(3, 40);
    limits.max_in_flight = pick(1, 8);
    limits.max_revoked_ids = pick(1, 8);
    limits.max_unsent_bytes = pick(512, 8 * 1024);
    limits.max_buffered_stream_bytes = pick(128, 4 * 1024);
    limits.max_bytes = pick(4 * 1024, 64 * 1024);
    limits.max_depth = pick(MIN_DEPTH, MIN_DEPTH + 4);
    limits.max_record_table_bytes = pick(MIN_RECORD_TABLE, MIN_RECORD_TABLE + 8 * 1024);
    limits.decode_budget_factor = pick(1, 3);
    // A peer's `drop` of every cap we hold decodes to about 200 bytes an entry (a record of
    // two fields, PROTOCOL §4), whatever its few bytes on the wire.
    let base = MIN_BUDGET_BASE + 256 * limits.max_caps as u64;
    limits.decode_budget_base = pick(base, base + 8 * 1024);
    limits.bootstrap_timeout = Some(Duration::from_secs(pick(2, 4) as u64));
    limits
}

/// The least nesting the operations' frames need: a result's error, its details and their
/// reason (found by running: at 2 connections close, at 3 none did in 20 cases).
const MIN_DEPTH: u64 = 3;

/// Room for the record definitions the operations' messages keep: the shapes of the
/// frames and of the typed cap's structs (4 KiB was found too little, 6 KiB enough in 60
/// cases; a peer's encoder keeps at most 32 shapes, PROTOCOL §3.3).
const MIN_RECORD_TABLE: u64 = 8 * 1024;

/// The least decode budget base the operations' messages need at a factor of 1, besides
/// the peer's `drop`s (1 KiB was found too little for a bootstrap's answer, 2 KiB enough
/// in 20 cases; 2 KiB failed a case whose peer dropped 26 caps at once).
const MIN_BUDGET_BASE: u64 = 2 * 1024;

/// Whether `e` is `resource_exhausted` `in-flight calls limit {max}` `max_concurrent_calls`.
fn in_flight(e: &Error, max: usize) -> bool {
    e.code() == Code::ResourceExhausted
        && e.reason() == Some("max_concurrent_calls")
        && e.message() == format!("in-flight calls limit {max}")
}

/// Whether `e` is `resource_exhausted` `cap-table limit {max}` `max_caps_per_connection`.
fn cap_table(e: &Error, max: usize) -> bool {
    e.code() == Code::ResourceExhausted
        && e.reason() == Some("max_caps_per_connection")
        && e.message() == format!("cap-table limit {max}")
}

/// Whether `e` is `resource_exhausted` `max_frame_bytes` from the peer.
pub(super) fn frame_too_large(e: &Error) -> bool {
    e.local_kind().is_none()
        && e.code() == Code::ResourceExhausted
        && e.reason() == Some("max_frame_bytes")
}

/// How many outcomes each limit gave in a case, for its line (which limits a case reached).
#[derive(Default)]
pub(super) struct Reached {
    /// Indexed by [`OUR_IN_FLIGHT`], [`THEIR_IN_FLIGHT`], [`CAP_TABLE`], [`FRAME`],
    /// [`STREAM_BYTES`].
    counts: [AtomicU64; 5],
}

const OUR_IN_FLIGHT: usize = 0;
const THEIR_IN_FLIGHT: usize = 1;
const CAP_TABLE: usize = 2;
const FRAME: usize = 3;
const STREAM_BYTES: usize = 4;

impl Reached {
    fn count(&self, i: usize, reached: bool) -> bool {
        if reached {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        reached
    }

    pub(super) fn frame(&self) {
        self.counts[FRAME].fetch_add(1, Ordering::Relaxed);
    }
}

impl std::fmt::Display for Reached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [ours, theirs, caps, frame, stream] =
            std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed));
        write!(
            f,
            "in-flight {ours}+{theirs} caps {caps} frame {frame} stream bytes {stream}"
        )
    }
}

impl Actor {
    pub(super) fn limits(&self) -> Option<(&Limits, &Limits)> {
        let [a, b] = self.case.limits.as_ref()?;
        Some(if self.side.name == "a" {
            (a, b)
        } else {
            (b, a)
        })
    }

    /// Whether `e` is what a small limit gives a bootstrap of `name` from this side: over our
    /// in-flight count (locally), or, for a name served and allowed, over the peer's cap
    /// table.
    pub(super) fn bootstrap_limit(&self, name: &str, e: &Error) -> bool {
        let Some((mine, peer)) = self.limits() else {
            return false;
        };
        let local = e.local_kind() == Some(LocalError::InFlightLimit);
        let allocates = name != SECRET && name != "ops.nope" && self.op != Op::Back;
        let r = &self.case.reached;
        r.count(OUR_IN_FLIGHT, local && in_flight(e, mine.max_in_flight))
            || r.count(
                CAP_TABLE,
                allocates && e.local_kind().is_none() && cap_table(e, peer.max_caps),
            )
    }

    /// Whether `e` is what a small limit gives the call (or stream) of the current operation
    /// on a cap of the peer (see the module docs).
    pub(super) fn call_limit(&self, e: &Error) -> bool {
        let Some((mine, peer)) = self.limits() else {
            return false;
        };
        let op = self.op;
        let r = &self.case.reached;
        match e.local_kind() {
            Some(LocalError::InFlightLimit) => {
                r.count(OUR_IN_FLIGHT, in_flight(e, mine.max_in_flight))
            }
            Some(LocalError::StreamOverflow) => {
                let streams = matches!(op, Op::Stream | Op::TypedStream | Op::AbortSpawned);
                let limit = format!(
                    "limit of {} bytes (max_buffered_stream_bytes)",
                    mine.max_buffered_stream_bytes
                );
                let over = e.code() == Code::ResourceExhausted && e.message().ends_with(&limit);
                r.count(STREAM_BYTES, streams && over)
            }
            Some(_) => false,
            None => {
                let returns_caps =
                    matches!(op, Op::Sub | Op::TypedPart | Op::Burst | Op::DropCapCall);
                let back = op == Op::Back;
                r.count(THEIR_IN_FLIGHT, in_flight(e, peer.max_in_flight))
                    || r.count(CAP_TABLE, returns_caps && cap_table(e, peer.max_caps))
                    || r.count(OUR_IN_FLIGHT, back && in_flight(e, mine.max_in_flight))
                    || r.count(CAP_TABLE, back && cap_table(e, mine.max_caps))
            }
        }
    }
}

/// Reads both connections' counts every millisecond until `stop`, recording any over its
/// side's limit in `violations`.
pub(super) async fn watch(
    seed: u64,
    sides: [(Connection, Limits); 2],
    stop: CancellationToken,
    violations: Violations,
) {
    while !stop.is_cancelled() {
        for (name, (conn, limits)) in ["a", "b"].iter().zip(&sides) {
            let s = conn.stats();
            let over = [
                ("live_caps", s.live_caps, limits.max_caps),
                (
                    "pending calls and client streams",
                    s.pending_calls + s.client_streams,
                    limits.max_in_flight,
                ),
                (
                    "active calls and server streams",
                    s.active_calls + s.server_streams,
                    limits.max_in_flight,
                ),
            ];
            for (what, n, max) in over {
                if n > max {
                    violations.lock().unwrap().push(format!(
                        "seed {seed}: {name}'s {what} {n} over its limit {max} ({s:?})"
                    ));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The calls each side can make at once at the end of a case: under both sides' in-flight
/// limits (ours counts them going out, the peer's coming in).
pub(super) fn calls_at_once(limits: &[Limits; 2]) -> usize {
    limits[0].max_in_flight.min(limits[1].max_in_flight)
}
