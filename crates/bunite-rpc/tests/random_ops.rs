//! Seeded random operations on live connections over the in-memory transport and loopback
//! TCP, each link wrapped so that a case can cut it. The operations, checks and case are in
//! `ops/` (its module docs; `docs/RELIABILITY.md`, "Seeded random operations on live
//! connections"); `random_ops_wire.rs` runs them over the other transports and through
//! listeners. The same cases run again under an asynchronous policy
//! (`random_operations_with_an_asynchronous_policy`).
//!
//! `BUNITE_OPS_SEEDS=N` runs seeds `0..N` (or `A..B`) instead of [`CI_SEEDS`];
//! `BUNITE_OPS_SEED=S` runs seed S alone (a failing case prints its seed).

mod common;
mod ops;

use ops::{memory_or_tcp, Rng};

/// Seeds of a plain test run (about 30 ms each in debug on two cores: 6.5 s in all).
const CI_SEEDS: u64 = 200;

#[test]
fn random_operations_on_live_connections() {
    ops::run_seeds(CI_SEEDS, memory_or_tcp);
}

/// Seeds of a plain run of the cases under an asynchronous policy (about 55 ms each in
/// debug on two cores: 4.5 s in all).
const POLICY_SEEDS: u64 = 80;

/// The same cases under an asynchronous policy (`ops::PolicyKind::Async`): bootstraps wait
/// in the peer's table of policy checks, and are cancelled, refused for its limit, unserved,
/// cut and closed on while they wait.
#[test]
fn random_operations_with_an_asynchronous_policy() {
    ops::run_seeds_with(POLICY_SEEDS, memory_or_tcp, ops::PolicyKind::Async);
}

/// The generator is the same everywhere (replayed seeds replay the same operations).
#[test]
fn the_generator_is_splitmix64() {
    let mut rng = Rng(1234567);
    assert_eq!(rng.next(), 6457827717110365317);
    assert_eq!(rng.next(), 3203168211198807973);
}
