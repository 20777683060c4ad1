//! The binary's allocator, and giving back what its threads' caches keep.
//!
//! With the feature `jemalloc` (on by default, not on MSVC) the binary allocates with
//! jemalloc and its background thread, which returns freed pages to the kernel about 10 s
//! after a burst even while the server is idle. What that thread cannot return is what each
//! thread's own cache (jemalloc's *tcache*) keeps: up to a couple of hundred freed objects
//! of every small size class, per thread, given back to the arenas only as that thread
//! allocates again. A runtime worker that served a flood of connections and then went
//! idle keeps them for good: 1.7-2.2 MiB above a 9 MiB server's baseline after the chaos
//! harness's floods (docs/RELIABILITY.md, "What is still held after a scenario").
//!
//! So every 5 s ([`PERIOD`](caches::PERIOD)) the runtime's workers empty their caches,
//! each the next time it parks (has no task to run): [`runtime`] installs the park hook,
//! which costs one atomic load when there is nothing to do, and starts a task that begins
//! a round and wakes the workers so that each parks once more. A worker that is busy
//! empties its cache when it next runs out of work; what it costs is that its next
//! allocations of each size go to the arena instead of the cache, once per period. After
//! 600 random closes the server's RSS came back to +0.6-2.8% of its baseline instead of
//! +15.6%, after the idle flood to +8.0-10.3% instead of +19.4%.
//!
//! jemalloc empties a thread's cache when the cache is turned off for that thread
//! (`thread.tcache.enabled`, which `tikv-jemalloc-ctl` writes without `unsafe`); turning
//! it back on starts an empty one.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// The runtime of the commands that use one: tokio's multi-threaded runtime. With jemalloc,
/// its workers empty their allocator caches every [`PERIOD`](caches::PERIOD) (a task of
/// the runtime starts the rounds; the park hook does the emptying).
pub fn runtime() -> io::Result<Runtime> {
    let mut builder = Builder::new_multi_thread();
    #[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
    builder.on_thread_park(caches::on_park);
    let runtime = builder.enable_all().build()?;
    #[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
    runtime.spawn(caches::tidy());
    Ok(runtime)
}

#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
mod caches {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use tikv_jemalloc_ctl::{Access, AsName};

    /// How often the workers' caches are emptied.
    pub const PERIOD: Duration = Duration::from_secs(5);

    /// jemalloc's switch of the calling thread's cache.
    const TCACHE_ENABLED: &[u8] = b"thread.tcache.enabled\0";

    /// The round the workers are asked to empty their caches for.
    static ROUND: AtomicU32 = AtomicU32::new(0);

    thread_local! {
        /// The last round this thread emptied its cache for.
        static DONE: Cell<u32> = const { Cell::new(0) };
    }

    /// Every [`PERIOD`], asks every worker to empty its cache when it next parks, and
    /// wakes them so that they do. Runs until the runtime stops.
    pub async fn tidy() {
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        let mut every = tokio::time::interval(PERIOD);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            start_round(workers);
        }
    }

    /// Asks the workers to empty their caches, and wakes them. Called on a worker: a task
    /// spawned there goes to its own queue, and the second one spawned moves the first
    /// where others may steal it and wakes a parked worker. Each worker so woken parks
    /// again once the tasks are done, and empties its cache.
    fn start_round(workers: usize) {
        new_round();
        for _ in 0..workers.max(2) {
            tokio::spawn(async {});
        }
    }

    pub fn new_round() {
        ROUND.fetch_add(1, Ordering::Relaxed);
    }

    /// The park hook: empties this thread's cache once per round.
    pub fn on_park() {
        let round = ROUND.load(Ordering::Relaxed);
        if DONE.get() != round {
            DONE.set(round);
            empty_cache();
        }
    }

    /// Turns this thread's cache off (jemalloc gives its objects back to their arenas) and
    /// on again (empty). An error leaves the cache as it was: nothing to do about it here.
    fn empty_cache() {
        let enabled = TCACHE_ENABLED.name();
        if Access::<bool>::write(enabled, false).is_ok() {
            let _ = Access::<bool>::write(enabled, true);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn cache_on() -> bool {
            Access::<bool>::read(TCACHE_ENABLED.name()).unwrap()
        }

        #[test]
        fn a_round_empties_the_cache_once_and_leaves_it_on() {
            // Tests run on threads of their own, so DONE is this test's alone, and no other
            // test of this process starts a round (those that do run in a process of their
            // own). The test binary allocates with jemalloc too (main.rs's global
            // allocator).
            assert!(cache_on());
            new_round();
            let round = ROUND.load(Ordering::Relaxed);
            on_park();
            assert_eq!(DONE.get(), round);
            assert!(cache_on(), "the cache is turned back on");
            on_park();
            assert_eq!(DONE.get(), round, "nothing more until the next round");
        }

        /// Runs `test` in a process of its own: what the threads' caches hold is the
        /// process's, and other tests running beside it (`cargo test` runs them on threads
        /// of one process) fill and empty caches of their own, and end threads, whose
        /// caches go with them. The test binary runs again with only this test.
        #[cfg(feature = "jemalloc-stats")]
        fn alone(name: &str, test: impl FnOnce()) {
            const ALONE: &str = "BUNITE_RPC_ALLOCATOR_TEST_ALONE";
            if std::env::var_os(ALONE).is_some() {
                return test();
            }
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    &format!("allocator::caches::tests::{name}"),
                    "--exact",
                    "--test-threads=1",
                ])
                .env(ALONE, "1")
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{text}");
            assert!(
                text.contains("1 passed"),
                "the test did not run alone: {text}"
            );
        }

        /// Bytes the threads' caches hold, all arenas (`MALLCTL_ARENAS_ALL` = 4096).
        #[cfg(feature = "jemalloc-stats")]
        fn cached_bytes() -> usize {
            tikv_jemalloc_ctl::epoch::advance().unwrap();
            Access::<usize>::read(b"stats.arenas.4096.tcache_bytes\0".name()).unwrap()
        }

        #[cfg(feature = "jemalloc-stats")]
        #[test]
        fn a_round_reaches_every_worker_of_the_runtime() {
            alone(
                "a_round_reaches_every_worker_of_the_runtime",
                round_reaches_workers,
            );
        }

        #[cfg(feature = "jemalloc-stats")]
        fn round_reaches_workers() {
            const SIZE: usize = 20 << 10;
            let rt = crate::allocator::runtime().unwrap();
            let before = cached_bytes();
            // Tasks that hold their worker for a while, so that both workers run some,
            // each leaving freed objects in its worker's cache.
            let filled = rt.block_on(async {
                let tasks: Vec<_> = (0..8)
                    .map(|_| {
                        tokio::spawn(async {
                            std::thread::sleep(std::time::Duration::from_millis(5));
                            drop((0..64).map(|_| vec![1u8; SIZE]).collect::<Vec<_>>());
                            std::thread::current().id()
                        })
                    })
                    .collect();
                let mut threads = std::collections::HashSet::new();
                for task in tasks {
                    threads.insert(task.await.unwrap());
                }
                threads.len()
            });
            let full = cached_bytes();
            assert!(
                full >= before + 10 * SIZE * filled,
                "cached {before}, then {full} bytes ({filled} workers)"
            );
            // Back to what the caches held before, give or take a few objects; the workers
            // may take a moment to be scheduled on a loaded machine. Waiting outside the
            // runtime, so that nothing but the round wakes its workers (no timer).
            let target = before + 4 * SIZE;
            rt.block_on(async { tokio::spawn(async { start_round(2) }).await.unwrap() });
            let mut emptied = cached_bytes();
            for _ in 0..50 {
                if emptied <= target {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
                emptied = cached_bytes();
            }
            assert!(
                emptied <= target,
                "cached {before}, {full} before the round, {emptied} after ({filled} workers)"
            );
        }

        #[cfg(feature = "jemalloc-stats")]
        #[test]
        fn emptying_gives_the_freed_objects_back() {
            alone(
                "emptying_gives_the_freed_objects_back",
                empty_this_threads_cache,
            );
        }

        #[cfg(feature = "jemalloc-stats")]
        fn empty_this_threads_cache() {
            // 64 objects of 20 KiB freed on this thread: its cache keeps up to 20 of them
            // (jemalloc caches objects up to 32 KiB, 20 of each larger class a thread).
            const SIZE: usize = 20 << 10;
            let before = cached_bytes();
            let objects: Vec<Vec<u8>> = (0..64).map(|_| vec![1u8; SIZE]).collect();
            drop(objects);
            let full = cached_bytes();
            assert!(
                full >= before + 10 * SIZE,
                "cached {before}, then {full} bytes"
            );
            new_round();
            on_park();
            let emptied = cached_bytes();
            // Other threads of this process may cache a little meanwhile; this thread's
            // share is gone.
            assert!(
                emptied + 10 * SIZE <= full,
                "cached {full} bytes before, {emptied} after"
            );
        }
    }
}
