//! End-to-end benchmarks: unary round trips, calls in flight, a long stream and large
//! payloads, over the in-memory, TCP and WebSocket transports. Prints a Markdown table.
//!
//! Run with: `cargo bench -p bunite-rpc --bench rpc` (set `BENCH_SCALE=0.1` for a quick run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::byte_stream::ByteStream;
use bunite_rpc::transport::{memory, ws, Transport};
use bunite_rpc::{CapDef, CapImpl, Client, Connection, MethodDef, Record, Value};
use futures::StreamExt;

fn def() -> Arc<CapDef> {
    CapDef::builder("bench.echo")
        .method(MethodDef::call("echo"))
        .method(MethodDef::stream("ticks").initial_credit(256))
        .build()
}

fn imp() -> Arc<dyn CapImpl> {
    DynCap::new()
        .call("echo", |args, _| async move { Ok(args) })
        .stream("ticks", |args: Value, _| {
            let n = args
                .as_record()
                .and_then(|r| r.get("n"))
                .and_then(Value::as_integer)
                .unwrap_or(0) as i64;
            Ok(
                futures::stream::iter(
                    (0..n).map(|i| Ok(Value::Record(Record::new().with("i", i)))),
                )
                .boxed(),
            )
        })
        .build()
}

/// A served echo cap and a client of it, over one transport.
struct Setup {
    client: Client,
    _conns: (Connection, Connection),
}

fn serve<A: Transport, B: Transport>(a: A, b: B) -> (Connection, Connection) {
    let server = Connection::builder().serve(def(), imp()).connect(a);
    (server, Connection::new(b))
}

async fn setup(transport: &str) -> Setup {
    let (server, client) = match transport {
        "memory" => {
            let (a, b) = memory::pair();
            serve(a, b)
        }
        "tcp" => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (accepted, connected) =
                tokio::join!(listener.accept(), tokio::net::TcpStream::connect(addr));
            serve(
                ByteStream::tcp(accepted.expect("accept").0),
                ByteStream::tcp(connected.expect("connect")),
            )
        }
        _ => {
            let listener = ws::WsListener::bind("127.0.0.1:0", "/rpc")
                .await
                .expect("bind");
            let url = format!("ws://{}/rpc", listener.local_addr().expect("addr"));
            let (accepted, connected) = tokio::join!(listener.accept(), ws::connect(url));
            serve(
                accepted.expect("accept").transport,
                connected.expect("connect"),
            )
        }
    };
    let c = client.bootstrap(&def()).await.expect("bootstrap");
    Setup {
        client: c,
        _conns: (server, client),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

async fn sequential(c: &Client, n: usize) -> String {
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        c.call_value("echo", Value::Record(Record::new().with("i", i as i64)))
            .await
            .expect("echo");
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    lat.sort();
    format!(
        "{:.0} calls/s, p50 {}, p99 {}",
        n as f64 / total.as_secs_f64(),
        us(percentile(&lat, 0.5)),
        us(percentile(&lat, 0.99))
    )
}

async fn in_flight(c: &Client, n: usize, width: usize) -> String {
    let start = Instant::now();
    let workers = (0..width).map(|w| {
        let c = c.clone();
        async move {
            let mut lat = Vec::new();
            for i in 0..n / width {
                let t = Instant::now();
                c.call_value(
                    "echo",
                    Value::Record(Record::new().with("i", (w * n + i) as i64)),
                )
                .await
                .expect("echo");
                lat.push(t.elapsed());
            }
            lat
        }
    });
    let mut lat: Vec<Duration> = futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let total = start.elapsed();
    lat.sort();
    format!(
        "{:.0} calls/s, p50 {}, p99 {}",
        lat.len() as f64 / total.as_secs_f64(),
        us(percentile(&lat, 0.5)),
        us(percentile(&lat, 0.99))
    )
}

async fn stream(c: &Client, n: usize) -> String {
    let start = Instant::now();
    let count = c
        .stream("ticks", Value::Record(Record::new().with("n", n as i64)))
        .filter(|r| futures::future::ready(r.is_ok()))
        .count()
        .await;
    assert_eq!(count, n);
    format!(
        "{:.0} items/s ({n} in {:.2} s)",
        n as f64 / start.elapsed().as_secs_f64(),
        start.elapsed().as_secs_f64()
    )
}

async fn payload(c: &Client, n: usize) -> String {
    let body = Value::Bin(vec![0xab; 64 * 1024]);
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        c.call_value("echo", body.clone()).await.expect("echo");
        lat.push(t.elapsed());
    }
    let total = start.elapsed();
    lat.sort();
    let mib = (n * 2 * 64) as f64 / 1024.0;
    format!(
        "{:.0} MiB/s both ways, p50 {}",
        mib / total.as_secs_f64(),
        us(percentile(&lat, 0.5))
    )
}

fn main() {
    let scale: f64 = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |base: usize| ((base as f64 * scale) as usize).max(100);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!("| transport | scenario | result |");
    println!("| --- | --- | --- |");
    for transport in ["memory", "tcp", "ws"] {
        rt.block_on(async {
            let s = setup(transport).await;
            // Warm up the record tables, allocators and sockets.
            sequential(&s.client, 1000).await;
            let rows = [
                ("sequential unary", sequential(&s.client, n(20_000)).await),
                ("64 in flight", in_flight(&s.client, n(64_000), 64).await),
                ("256 in flight", in_flight(&s.client, n(128_000), 256).await),
                ("200k-item stream", stream(&s.client, n(200_000)).await),
                ("64 KiB echo", payload(&s.client, n(2_000)).await),
            ];
            for (scenario, result) in rows {
                println!("| {transport} | {scenario} | {result} |");
            }
        });
    }
}
