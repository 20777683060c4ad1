//! What the seeded random tests (`random_*.rs`, `tests/ops`) share: their generator, the
//! seeds a run takes, the line that names a failing seed, and the loop that runs each case.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// splitmix64: small, and the same sequence on every platform.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The seeds of a run: `BUNITE_OPS_SEED` alone, `0..BUNITE_OPS_SEEDS`, or else `0..ci_seeds`.
/// `BUNITE_OPS_SEEDS` may also be a range `A..B`, for seeds no run has tried yet.
pub fn seeds(ci_seeds: u64) -> Vec<u64> {
    match (
        std::env::var("BUNITE_OPS_SEED"),
        std::env::var("BUNITE_OPS_SEEDS"),
    ) {
        (Ok(seed), _) => vec![seed.parse().expect("BUNITE_OPS_SEED: a number")],
        (_, Ok(n)) => seed_range(&n).collect(),
        _ => (0..ci_seeds).collect(),
    }
}

/// `N` as `0..N`, or `A..B`.
fn seed_range(text: &str) -> std::ops::Range<u64> {
    let number = |s: &str| -> u64 {
        s.trim()
            .parse()
            .expect("BUNITE_OPS_SEEDS: a number N or a range A..B")
    };
    match text.split_once("..") {
        Some((from, to)) => number(from)..number(to),
        None => 0..number(text),
    }
}

/// Names the seed of a case that fails (while it lives), for `BUNITE_OPS_SEED`.
pub struct SeedReport {
    /// The test's name, first on the line.
    pub test: &'static str,
    pub seed: u64,
}

impl Drop for SeedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{}: seed {} failed; replay it with BUNITE_OPS_SEED={}",
                self.test, self.seed, self.seed
            );
        }
    }
}

/// One case's body, for [`each_seed`]'s runner.
pub type Case = Pin<Box<dyn Future<Output = ()>>>;

/// Runs `case` on each seed of the run ([`seeds`] of `ci_seeds`), each on a runtime of its
/// own made by `on` ([`run`](super::run), [`run_paused`](super::run_paused)) and within
/// `bound` (of the paused clock under `run_paused`), naming a failing seed for
/// `BUNITE_OPS_SEED`; how many seeds ran.
pub fn each_seed<Fut: Future<Output = ()> + 'static>(
    test: &'static str,
    ci_seeds: u64,
    bound: Duration,
    on: fn(Case),
    case: impl Fn(u64) -> Fut,
) -> usize {
    let seeds = seeds(ci_seeds);
    for &seed in &seeds {
        let _report = SeedReport { test, seed };
        let case = case(seed);
        on(Box::pin(async move {
            if tokio::time::timeout(bound, case).await.is_err() {
                panic!("seed {seed}: the case did not end within {bound:?}");
            }
        }));
    }
    seeds.len()
}
