//! Unary calls with many in flight (the comparison benchmark's W2): `add(a, b)` through the
//! typed API, `depth` calls kept in flight from one task, the client and the server each on
//! their own single-threaded runtime and thread (the harness's `2x1t`), over the in-memory
//! transport, or over loopback TCP with a third argument `tcp`. For instruction counts per
//! call on each side:
//!
//! Run with: `valgrind --tool=callgrind --separate-threads=yes
//! target/release/examples/pipelined 20000 256 tcp` (or without valgrind for a rough
//! calls/s).
//! Build it first: `cargo build --release -p bunite-rpc --example pipelined`.

use std::time::Instant;

use bunite_rpc::transport::byte_stream::ByteStream;
use bunite_rpc::transport::{memory, Transport};
use bunite_rpc::Connection;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "common/bench_cap.rs"]
mod bench_cap;

use bench_cap::{AddArgs, BenchCap, Server};

fn one_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Serves on its own thread, over the transport `end` makes there, until told to stop.
fn serve<T: Transport>(
    end: impl FnOnce() -> T + Send + 'static,
) -> (
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        one_thread().block_on(async {
            let end = end();
            let _server = Connection::builder()
                .serve_cap::<BenchCap>(Server)
                .connect(end);
            let _ = stopped.await;
        });
    });
    (stop, thread)
}

async fn calls<T: Transport>(end: T, n: u64, depth: u64) {
    let conn = Connection::new(end);
    let client = BenchCap::bootstrap(&conn).await.expect("bootstrap");
    let one = |i: u64| {
        let client = &client;
        async move {
            let sum = client.add(AddArgs { a: i, b: 1 }).await.expect("rpc");
            assert_eq!(sum, i + 1);
        }
    };
    let start = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let mut next = 0;
    while next < depth.min(n) {
        inflight.push(one(next));
        next += 1;
    }
    let mut done = 0;
    while let Some(()) = inflight.next().await {
        done += 1;
        if next < n {
            inflight.push(one(next));
            next += 1;
        }
    }
    assert_eq!(done, n);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{n} calls, {depth} in flight, in {secs:.3} s: {:.0} calls/s",
        n as f64 / secs
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let depth: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let client = one_thread();
    let (stop, server) = if args.next().as_deref() == Some("tcp") {
        let (client_end, server_end) = client.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("address");
            let (c, s) = tokio::join!(TcpStream::connect(addr), listener.accept());
            (c.expect("connect"), s.expect("accept").0)
        });
        let server_end = server_end.into_std().expect("std socket");
        let handles =
            serve(move || ByteStream::tcp(TcpStream::from_std(server_end).expect("socket")));
        client.block_on(calls(ByteStream::tcp(client_end), n, depth));
        handles
    } else {
        let (a, b) = memory::pair();
        let handles = serve(move || a);
        client.block_on(calls(b, n, depth));
        handles
    };
    let _ = stop.send(());
    server.join().expect("server thread");
}
