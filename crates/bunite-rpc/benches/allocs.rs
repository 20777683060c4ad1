//! Allocations and time per unary round trip, both peers in this process over the in-memory
//! transport on one thread: `add(a, b)` through the typed API, as the comparison benchmark's
//! W1 does. Counts every heap allocation with dhat's allocator (in testing mode), so the
//! timing printed is slowed by the counting: read the time from the `rpc` bench.
//!
//! Run with: `cargo bench -p bunite-rpc --bench allocs`

use std::time::Instant;

use bunite_rpc::transport::memory;
use bunite_rpc::Connection;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[path = "../examples/common/bench_cap.rs"]
mod bench_cap;

use bench_cap::{AddArgs, BenchCap, Server};

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _profiler = dhat::Profiler::builder().testing().build();
    rt.block_on(async {
        let (a, b) = memory::pair();
        let _server = Connection::builder()
            .serve_cap::<BenchCap>(Server)
            .connect(a);
        let conn = Connection::new(b);
        let client = BenchCap::bootstrap(&conn).await.expect("bootstrap");
        // Warm up: tables, shape rings, channel blocks and buffers reach their steady size.
        for i in 0..5_000u64 {
            assert_eq!(
                client.add(AddArgs { a: i, b: 1 }).await.expect("rpc"),
                i + 1
            );
        }
        let n = 100_000u64;
        let before = dhat::HeapStats::get();
        let start = Instant::now();
        for i in 0..n {
            assert_eq!(
                client.add(AddArgs { a: i, b: 2 }).await.expect("rpc"),
                i + 2
            );
        }
        let elapsed = start.elapsed();
        let after = dhat::HeapStats::get();
        let allocs = after.total_blocks - before.total_blocks;
        let bytes = after.total_bytes - before.total_bytes;
        println!("| measure | value |");
        println!("| --- | --- |");
        println!(
            "| allocations per round trip (both peers) | {:.2} |",
            allocs as f64 / n as f64
        );
        println!(
            "| bytes allocated per round trip | {:.0} |",
            bytes as f64 / n as f64
        );
        println!(
            "| time per round trip, counting included | {:.2} µs |",
            elapsed.as_secs_f64() * 1e6 / n as f64
        );
    });
}
