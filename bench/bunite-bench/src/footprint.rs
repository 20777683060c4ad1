//! Memory footprint of bunite-rpc, one process, RSS from `/proc/self/status`:
//!
//! * `conns N` (default 1000): N idle TCP connections to one server in this process, each
//!   with one bootstrapped `bench.rpc` client. Reports the RSS growth per connection (both
//!   ends: client and server connection).
//! * `caps N` (default 100000): over one in-memory connection, N live sub-caps exported by
//!   the server and held by the client. Reports the RSS growth per cap (server table entry
//!   plus client reference), and RSS once they are all released.
//! * `mem-conns N`: the same over in-memory pairs (no socket, no byte buffers).
//! * `raw-conns N`: N idle raw tokio TCP socket pairs with 128 KiB buffers, as in the
//!   `baseline` peer's `tcp` transport (the floor for `conns`).
//! * `tarpc-conns N`: N idle tarpc TCP (bincode) connections, each after one call.
//!
//! Prints one JSON line per measurement on stdout.

use bunite_rpc::transport::byte_stream::{ByteStream, tcp_connect};
use bunite_rpc::{Connection, Exported, Limits, Status, cap};
use futures::StreamExt;
use std::time::Duration;

#[cap(name = "bench.Factory")]
pub trait Factory {
    async fn make(&self) -> Result<Exported<ItemCap>, Status>;
}

#[cap(name = "bench.Item")]
pub trait Item {
    async fn get(&self) -> Result<u64, Status>;
}

struct MyFactory;
struct MyItem;

impl Factory for MyFactory {
    async fn make(&self) -> Result<Exported<ItemCap>, Status> {
        Ok(ItemCap::export(MyItem))
    }
}

impl Item for MyItem {
    async fn get(&self) -> Result<u64, Status> {
        Ok(7)
    }
}

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// RSS once the runtime has settled.
async fn settled_rss() -> u64 {
    tokio::time::sleep(Duration::from_millis(300)).await;
    rss_kb()
}

fn report(what: &str, n: usize, before: u64, after: u64, extra: &str) {
    let per = (after as f64 - before as f64) * 1024.0 / n as f64;
    println!(
        "{{\"peer\":\"bunite\",\"workload\":\"{what}\",\"n\":{n},\"rss_before_kb\":{before},\"rss_after_kb\":{after},\"bytes_per_item\":{per:.0}{extra}}}"
    );
}

fn serve(t: impl bunite_rpc::transport::Transport) -> Connection {
    Connection::builder().serve_cap::<FactoryCap>(MyFactory).connect(t)
}

/// N idle connections, over TCP or (`tcp == false`) in-memory pairs: the connection
/// without the socket and its 2 x 64 KiB buffers per end.
async fn conns(n: usize, tcp: bool) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            serve(ByteStream::tcp(s));
        }
    });
    let connect = async || {
        let conn = if tcp {
            Connection::new(tcp_connect(addr).await.unwrap())
        } else {
            let (a, b) = bunite_rpc::transport::memory::pair();
            serve(a);
            Connection::new(b)
        };
        let c = FactoryCap::bootstrap(&conn).await.unwrap();
        (conn, c)
    };
    // One connection first, so that the runtime, the listener and the codec tables exist.
    let _first = connect().await;
    let before = settled_rss().await;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(connect().await);
    }
    let after = settled_rss().await;
    report(
        if tcp { "idle_tcp_conn" } else { "idle_mem_conn" },
        n,
        before,
        after,
        "",
    );
}

async fn raw_conns(n: usize) {
    use tokio::io::{AsyncReadExt, BufReader, BufWriter};
    const BUF: usize = 128 * 1024;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (r, w) = s.into_split();
                let (mut r, _w) = (BufReader::with_capacity(BUF, r), BufWriter::with_capacity(BUF, w));
                let _ = r.read_u8().await;
            });
        }
    });
    let before = settled_rss().await;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        let (r, w) = (BufReader::with_capacity(BUF, r), BufWriter::with_capacity(BUF, w));
        let reader = tokio::spawn(async move {
            let mut r = r;
            let _ = r.read_u8().await;
        });
        held.push((reader, w));
    }
    let after = settled_rss().await;
    println!(
        "{{\"peer\":\"raw-tokio-tcp\",\"workload\":\"idle_tcp_conn\",\"n\":{n},\"rss_before_kb\":{before},\"rss_after_kb\":{after},\"bytes_per_item\":{:.0}}}",
        (after as f64 - before as f64) * 1024.0 / n as f64
    );
}

#[tarpc::service]
trait Adder {
    async fn add(a: u64, b: u64) -> u64;
}

#[derive(Clone)]
struct AdderServer;

impl Adder for AdderServer {
    async fn add(self, _: tarpc::context::Context, a: u64, b: u64) -> u64 {
        a + b
    }
}

async fn tarpc_conns(n: usize) {
    use tarpc::server::{BaseChannel, Channel};
    use tarpc::tokio_serde::formats::Bincode;
    let mut l = tarpc::serde_transport::tcp::listen("127.0.0.1:0", Bincode::default)
        .await
        .unwrap();
    let addr = l.local_addr();
    tokio::spawn(async move {
        while let Some(Ok(t)) = l.next().await {
            let serve = BaseChannel::with_defaults(t).execute(AdderServer.serve());
            tokio::spawn(serve.for_each(|f| async move {
                tokio::spawn(f);
            }));
        }
    });
    let connect = async || {
        let t = tarpc::serde_transport::tcp::connect(addr, Bincode::default)
            .await
            .unwrap();
        let c = AdderClient::new(tarpc::client::Config::default(), t).spawn();
        assert_eq!(c.add(tarpc::context::current(), 1, 2).await.unwrap(), 3);
        c
    };
    let _first = connect().await;
    let before = settled_rss().await;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(connect().await);
    }
    let after = settled_rss().await;
    println!(
        "{{\"peer\":\"tarpc\",\"workload\":\"idle_tcp_conn\",\"n\":{n},\"rss_before_kb\":{before},\"rss_after_kb\":{after},\"bytes_per_item\":{:.0}}}",
        (after as f64 - before as f64) * 1024.0 / n as f64
    );
}

async fn caps(n: usize) {
    let limits = Limits {
        max_caps: n + 64,
        ..Limits::default()
    };
    let (a, b) = bunite_rpc::transport::memory::pair();
    let _server = Connection::builder()
        .limits(limits.clone())
        .serve_cap::<FactoryCap>(MyFactory)
        .connect(a);
    let conn = Connection::builder().limits(limits).connect(b);
    let f = FactoryCap::bootstrap(&conn).await.unwrap();
    // Warm up: make and drop some caps, so the tables and frame buffers have grown once.
    for _ in 0..1000 {
        drop(f.make().await.unwrap());
    }
    let before = settled_rss().await;
    // 64 calls in flight.
    let items: Vec<ItemClient> = futures::stream::iter(0..n)
        .map(|_| f.make())
        .buffer_unordered(64)
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(items[n / 2].get().await.unwrap(), 7);
    let after = settled_rss().await;
    let stats = conn.stats();
    let server_caps = _server.stats();
    drop(items);
    let released = settled_rss().await;
    report(
        "live_sub_cap",
        n,
        before,
        after,
        &format!(
            ",\"rss_after_release_kb\":{released},\"held_client_handle_bytes\":{},\"client_stats\":\"{}\",\"server_stats\":\"{}\"",
            std::mem::size_of::<ItemClient>(),
            format!("{stats:?}").replace('"', "'"),
            format!("{server_caps:?}").replace('"', "'")
        ),
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args
        .next()
        .expect("usage: bunite-footprint conns|mem-conns|raw-conns|tarpc-conns|caps [N]");
    let n: Option<usize> = args.next().map(|s| s.parse().unwrap());
    let rt = benchkit::runtime();
    rt.block_on(async {
        match mode.as_str() {
            "conns" => conns(n.unwrap_or(1000), true).await,
            "mem-conns" => conns(n.unwrap_or(1000), false).await,
            "raw-conns" => raw_conns(n.unwrap_or(1000)).await,
            "tarpc-conns" => tarpc_conns(n.unwrap_or(1000)).await,
            "caps" => caps(n.unwrap_or(100_000)).await,
            m => panic!("unknown mode {m}"),
        }
    });
}
