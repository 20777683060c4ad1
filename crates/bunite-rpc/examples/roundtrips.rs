//! Sequential unary round trips over the in-memory transport on one thread: `add(a, b)`
//! through the typed API. For instruction counts that the machine's load cannot disturb:
//!
//! Run with: `valgrind --tool=callgrind target/release/examples/roundtrips 20000`
//! (or without valgrind for a rough calls/s).
//! Build it first: `cargo build --release -p bunite-rpc --example roundtrips`.

use std::time::Instant;

use bunite_rpc::transport::memory;
use bunite_rpc::Connection;

#[path = "common/bench_cap.rs"]
mod bench_cap;

use bench_cap::{AddArgs, BenchCap, Server};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (a, b) = memory::pair();
        let _server = Connection::builder()
            .serve_cap::<BenchCap>(Server)
            .connect(a);
        let conn = Connection::new(b);
        let client = BenchCap::bootstrap(&conn).await.expect("bootstrap");
        let start = Instant::now();
        for i in 0..n {
            let sum = client.add(AddArgs { a: i, b: 1 }).await.expect("rpc");
            assert_eq!(sum, i + 1);
        }
        let secs = start.elapsed().as_secs_f64();
        println!("{n} calls in {secs:.3} s: {:.0} calls/s", n as f64 / secs);
    });
}
