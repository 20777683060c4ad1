//! One server stream of `{i}` records, consumed as they come, over the in-memory transport on
//! one thread (the comparison benchmark's W4). For instruction counts per item:
//!
//! Run with: `valgrind --tool=callgrind target/release/examples/stream_items 100000`
//! (or without valgrind for a rough items/s).
//! Build it first: `cargo build --release -p bunite-rpc --example stream_items`.

use std::time::Instant;

use bunite_rpc::transport::memory;
use bunite_rpc::typed::Stream;
use bunite_rpc::{cap, Connection, Status};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Tick {
    i: u64,
}

#[cap(name = "bench.stream")]
trait Ticks {
    #[cap(stream)]
    fn ticks(&self, n: u64) -> impl Stream<Item = Result<Tick, Status>> + Send + 'static;
}

struct Server;

impl Ticks for Server {
    fn ticks(&self, n: u64) -> impl Stream<Item = Result<Tick, Status>> + Send + 'static {
        futures::stream::iter((0..n).map(|i| Ok(Tick { i })))
    }
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (a, b) = memory::pair();
        let _server = Connection::builder()
            .serve_cap::<TicksCap>(Server)
            .connect(a);
        let conn = Connection::new(b);
        let client = TicksCap::bootstrap(&conn).await.expect("bootstrap");
        let start = Instant::now();
        let mut ticks = client.ticks(n);
        let mut got = 0;
        while let Some(t) = ticks.next().await {
            assert_eq!(t.expect("tick").i, got);
            got += 1;
        }
        assert_eq!(got, n);
        let secs = start.elapsed().as_secs_f64();
        println!("{n} items in {secs:.3} s: {:.0} items/s", n as f64 / secs);
    });
}
