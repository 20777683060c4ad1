//! Transport costs, for `docs/BENCHMARKS.md` ("Transports"): syscalls per 64 KiB echo (run
//! under strace) and memory per idle connection (RSS from `/proc/self/status`). One
//! single-threaded runtime, so every syscall of both peers is in this process's one thread.
//!
//! Run with:
//!
//! ```text
//! cargo bench -p bunite-rpc --bench transports -- echo tcp 2000       # wall time of N echoes
//! cargo bench -p bunite-rpc --bench transports -- echo ws 50 4096     # of 4 MiB (KiB given)
//! strace -f -c -e trace=write,writev,sendto,sendmsg,read,recvfrom \
//!     target/release/deps/transports-* echo tcp 2000                 # syscalls per echo
//! cargo bench -p bunite-rpc --bench transports -- idle tcp 1000       # bytes per idle connection
//! cargo bench -p bunite-rpc --bench transports -- idle ws 1000
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::byte_stream::{self, ByteStream};
use bunite_rpc::transport::ws;
use bunite_rpc::{CapDef, CapImpl, Client, Connection, MethodDef, Value};

fn def() -> Arc<CapDef> {
    CapDef::builder("bench.echo")
        .method(MethodDef::call("echo"))
        .build()
}

fn imp() -> Arc<dyn CapImpl> {
    DynCap::new()
        .call("echo", |args, _| async move { Ok(args) })
        .build()
}

fn serve<T: bunite_rpc::transport::Transport>(t: T) -> Connection {
    Connection::builder().serve(def(), imp()).connect(t)
}

/// Accepts connections on `kind` ("tcp" or "ws") forever; returns the address to dial.
async fn server(kind: &str) -> String {
    match kind {
        "tcp" => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = l.local_addr().expect("addr").to_string();
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((s, _)) = l.accept().await {
                    held.push(serve(ByteStream::tcp(s)));
                }
            });
            addr
        }
        _ => {
            let l = ws::WsListener::bind("127.0.0.1:0", "/rpc")
                .await
                .expect("bind");
            let url = format!("ws://{}/rpc", l.local_addr().expect("addr"));
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok(a) = l.accept().await {
                    held.push(serve(a.transport));
                }
            });
            url
        }
    }
}

async fn client(kind: &str, addr: &str) -> (Connection, Client) {
    let conn = match kind {
        "tcp" => Connection::new(byte_stream::tcp_connect(addr).await.expect("connect")),
        _ => Connection::new(ws::connect(addr).await.expect("connect")),
    };
    let echo = conn.bootstrap(&def()).await.expect("bootstrap");
    (conn, echo)
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

async fn settled_rss() -> u64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    rss_kb()
}

/// `n` echoes of `kib` KiB of binary, one at a time.
async fn echo(kind: &str, n: usize, kib: usize) {
    let addr = server(kind).await;
    let (_conn, echo) = client(kind, &addr).await;
    let payload = Value::Bin(vec![7u8; kib * 1024]);
    let start = Instant::now();
    for _ in 0..n {
        let back = echo
            .call_value("echo", payload.clone())
            .await
            .expect("echo");
        assert_eq!(back, payload);
    }
    let secs = start.elapsed().as_secs_f64();
    let mib = (n * 2 * kib) as f64 / 1024.0 / secs;
    println!("{kind} {kib} KiB echo: {n} in {secs:.2} s, {mib:.0} MiB/s both ways");
}

/// `n` idle connections (both ends in this process), each after hello and one bootstrap.
async fn idle(kind: &str, n: usize) {
    let addr = server(kind).await;
    // One connection first, so that the runtime, the listener and the codec tables exist.
    let _first = client(kind, &addr).await;
    let before = settled_rss().await;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(client(kind, &addr).await);
    }
    let after = settled_rss().await;
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!("{kind} idle: {n} connections, RSS {before} -> {after} KiB, {per:.0} bytes per connection (both ends)");
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mode = args.first().map(String::as_str).unwrap_or("echo");
    let kind = args.get(1).cloned().unwrap_or_else(|| "tcp".to_owned());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let kib: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        match mode {
            "idle" => idle(&kind, n).await,
            _ => echo(&kind, n, kib).await,
        }
    });
}
