//! bunite-rpc peer, through the typed API (`#[cap]`), over the in-memory pair (`mem`),
//! length-prefixed TCP (`tcp`) and WebSocket (`ws`).
//!
//! The cap is `bench.rpc`: `add({a, b})`, `echo(bytes)` (a `Blob` each way: a long one
//! arrives as a slice of its message, not a copy), and the stream `ticks({n})` of `{i}`
//! with the default initial credit (32). With `BUNITE_W4_WINDOW=1024` in the environment, W4
//! uses `wide_ticks` instead, the same stream with an initial credit of 1,024 (the most the
//! protocol allows), to measure the stream path rather than the credit round trip. Two more
//! modes pair it with another peer:
//!
//! * `serve-ws [PORT]`: only the server; prints its URL, serves until SIGTERM.
//! * `ws-remote URL`: only the client, against a `bench.rpc` server elsewhere.

use benchkit::{Ctx, W3_CONNS, Window};
use bunite_rpc::transport::byte_stream::{ByteStream, tcp_connect};
use bunite_rpc::transport::{Transport, memory, ws};
use bunite_rpc::typed::Stream;
use bunite_rpc::{Blob, Connection, Status, cap};
use futures::StreamExt;
use futures::future::join_all;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct AddArgs {
    pub a: u64,
    pub b: u64,
}

#[derive(Serialize, Deserialize)]
pub struct TicksArgs {
    pub n: u64,
}

#[derive(Serialize, Deserialize)]
pub struct Tick {
    pub i: u64,
}

#[cap(name = "bench.rpc")]
pub trait Bench {
    async fn add(&self, args: AddArgs) -> Result<u64, Status>;

    async fn echo(&self, data: Blob) -> Result<Blob, Status>;

    #[cap(stream)]
    fn ticks(&self, args: TicksArgs) -> impl Stream<Item = Result<Tick, Status>> + Send + 'static;

    #[cap(stream, initial_credit = 1024)]
    fn wide_ticks(
        &self,
        args: TicksArgs,
    ) -> impl Stream<Item = Result<Tick, Status>> + Send + 'static;
}

struct Server;

impl Bench for Server {
    async fn add(&self, args: AddArgs) -> Result<u64, Status> {
        Ok(args.a + args.b)
    }

    async fn echo(&self, data: Blob) -> Result<Blob, Status> {
        Ok(data)
    }

    fn ticks(&self, args: TicksArgs) -> impl Stream<Item = Result<Tick, Status>> + Send + 'static {
        futures::stream::iter((0..args.n).map(|i| Ok(Tick { i })))
    }

    fn wide_ticks(
        &self,
        args: TicksArgs,
    ) -> impl Stream<Item = Result<Tick, Status>> + Send + 'static {
        self.ticks(args)
    }
}

/// One server connection over `t`, serving `bench.rpc` from the start.
fn serve(t: impl Transport) {
    Connection::builder().serve_cap::<BenchCap>(Server).connect(t);
}

/// Binds a WebSocket listener at `addr` (path `/rpc`) and serves every socket; its URL.
async fn ws_server(addr: &str) -> String {
    let l = ws::WsListener::bind(addr, ws::DEFAULT_PATH).await.unwrap();
    let url = format!("ws://{}{}", l.local_addr().unwrap(), ws::DEFAULT_PATH);
    tokio::spawn(async move {
        while let Ok(a) = l.accept().await {
            serve(a.transport);
        }
    });
    url
}

enum Target {
    Mem,
    Tcp(std::net::SocketAddr),
    Ws(String),
}

/// Starts the server side on the server runtime (nothing for `mem` and `ws-remote`).
async fn start(transport: &str, arg: Option<String>) -> Target {
    match transport {
        "mem" => Target::Mem,
        "tcp" => Target::Tcp(
            benchkit::on_server(async {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                tokio::spawn(async move {
                    while let Ok((s, _)) = l.accept().await {
                        serve(ByteStream::tcp(s));
                    }
                });
                addr
            })
            .await,
        ),
        "ws" => Target::Ws(benchkit::on_server(ws_server("127.0.0.1:0")).await),
        "ws-remote" => Target::Ws(arg.expect("ws-remote needs a URL")),
        t => panic!("unknown transport {t}"),
    }
}

/// A new connection to the server, and the bootstrapped typed client on it.
async fn connect(target: &Target) -> BenchClient {
    let conn = match target {
        Target::Mem => {
            let (a, b) = memory::pair();
            benchkit::on_server(async move { serve(a) }).await;
            Connection::new(b)
        }
        Target::Tcp(addr) => Connection::new(tcp_connect(addr).await.unwrap()),
        Target::Ws(url) => Connection::new(ws::connect(url.as_str()).await.unwrap()),
    };
    BenchCap::bootstrap(&conn).await.expect("bootstrap")
}

async fn add(c: &BenchClient, a: u64, b: u64) -> u64 {
    c.add(AddArgs { a, b }).await.expect("rpc")
}

struct Conn(BenchClient);

impl benchkit::Adder for Conn {
    fn add(&mut self, a: u64, b: u64) -> impl Future<Output = u64> {
        add(&self.0, a, b)
    }
}

async fn run(ctx: &Ctx, arg: Option<String>) {
    let target = start(&ctx.transport, arg).await;
    let c = connect(&target).await;
    benchkit::w1(ctx, async |a, b| add(&c, a, b).await).await;
    benchkit::w2(ctx, async |a, b| add(&c, a, b).await).await;
    if ctx.wants("W3") {
        let mut conns = Vec::new();
        for _ in 0..W3_CONNS {
            conns.push(Conn(connect(&target).await));
        }
        let win = Window::new(&ctx.cfg);
        let handles: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(k, c)| tokio::spawn(benchkit::w3_conn(c, win, k as u64)))
            .collect();
        let res = join_all(handles).await.into_iter().map(|r| r.unwrap()).collect();
        benchkit::w3_report(ctx, win, res);
    }
    let wide = std::env::var("BUNITE_W4_WINDOW").as_deref() == Ok("1024");
    benchkit::w4(ctx, async |n| {
        let mut ticks = if wide {
            c.wide_ticks(TicksArgs { n })
        } else {
            c.ticks(TicksArgs { n })
        };
        let mut got = 0;
        while let Some(t) = ticks.next().await {
            assert_eq!(t.expect("stream").i, got, "W4 tick out of order");
            got += 1;
        }
        got
    })
    .await;
    let echo = async |p: &[u8]| c.echo(Blob::copy_from_slice(p)).await.expect("rpc").len();
    benchkit::w5_seq(ctx, echo).await;
    benchkit::w5_pipe(ctx, echo).await;
}

/// `serve-ws [PORT]`: print the URL on stdout, serve until SIGTERM or Ctrl-C, exit 0.
async fn serve_ws(port: Option<String>) {
    let addr = format!("127.0.0.1:{}", port.as_deref().unwrap_or("0"));
    let url = benchkit::on_server(async move { ws_server(&addr).await }).await;
    println!("{url}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let transport = args
        .next()
        .expect("usage: bench-bunite mem|tcp|ws | ws-remote URL | serve-ws [PORT]");
    let arg = args.next();
    let ctx = Ctx::new("bunite", &transport);
    if transport == "serve-ws" {
        benchkit::block_on(ctx.layout, serve_ws(arg));
    } else {
        benchkit::block_on(ctx.layout, run(&ctx, arg));
    }
}
