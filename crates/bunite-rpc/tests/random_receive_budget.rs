//! Seeded random contention on a listener's receive budget: many connections of one
//! listener (the byte-stream `TcpMessageListener` in one test, the `WsListener` in
//! another; with feature `tls` both again inside TLS, and with feature `axum` an axum
//! `RpcEndpoint`) draw the bytes of the messages they receive from one small budget
//! (`transport::budget`, "The budget"), with few connection slots and a short receive
//! deadline (`docs/RELIABILITY.md`, "Contention on a listener's receive budget").
//!
//! Each case is one seed: a listener whose budget is one to four times its `max_bytes`
//! (64 KiB), two to five connection slots, a receive deadline of 150 or 300 ms; raw peers
//! speaking the framing by hand (a length prefix, or a WebSocket handshake and masked
//! frames; through a rustls client at a TLS listener; at the axum endpoint, trying again
//! when an upgrade is answered 503 for want of a slot), each sending its hello and then a
//! script: bursts of small calls, long calls whole, long calls in two parts with a short
//! pause between, trickled, or (WebSocket) in fragments with pings between them; some read
//! what they are sent as it comes, some never do. A script ends by closing the socket, by
//! closing it in the middle of a message, by stalling in the middle of a long message for
//! good, by announcing a message longer than allowed (or, over WebSocket, sending
//! fragments that add up to one), or by ending its direction and reading to the end.
//! Beside them, one or two well-behaved clients (`Connection`s) bootstrap the counter and
//! echo values of up to nearly `max_bytes`, some at once.
//!
//! What must hold: the budget in use stays within its bound and never goes below nothing
//! (sampled every few milliseconds: bytes given back twice would show as more available
//! than the bound); every well-behaved echo comes back equal, however the raw peers hold
//! the budget and the slots (no two connections wait on each other); a peer that stalls
//! for good gets a goaway `deadline_exceeded`, and one that announces an oversize message
//! gets a goaway `resource_exhausted` (`max_frame_bytes`) before its socket closes
//! (PROTOCOL §11); no peer gets a goaway its script cannot explain; once every peer is
//! gone, every server connection closes, the budget is whole again, and every connection
//! slot is free (the listener accepts `max_connections` new sockets at once; the axum
//! endpoint counts no connection, then answers that many upgrades `101` at once, and axum
//! stops); and the harness's checks (connections clean and idle, no task left).
//!
//! `BUNITE_OPS_SEEDS=N` runs seeds `0..N` (or `A..B`) instead of [`CI_SEEDS`];
//! `BUNITE_OPS_SEED=S` runs seed S alone (a failing case prints its seed).
#![cfg(all(feature = "ws", feature = "byte-stream"))]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bunite_rpc::transport::budget::FREE_PER_CONNECTION;
use bunite_rpc::transport::byte_stream::{self, TcpMessageListener};
use bunite_rpc::transport::ws::{self, WsConnector, WsListener};
use bunite_rpc::transport::{ByteBudget, ListenerConfig, ReceiveDeadline};
use bunite_rpc::wire::{CapId, DecodeLimits as WireLimits, Decoder, Encoder, Frame, Goaway};
use bunite_rpc::{Connection, Limits, Value};
use common::deployment::{connect_raw, dial, framed, Kind, RawRead, RawWrite};
use common::seeded::{each_seed, Rng};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

/// Seeds of a plain run, per test (each case takes about a second of mostly waiting).
const CI_SEEDS: u64 = 20;

/// The listener's largest message.
const MAX: usize = 64 * 1024;

/// How long anything that must happen may take, however loaded the machine: a case's
/// stalls end at their deadline (300 ms at most) once the budget is theirs.
const LIVENESS: Duration = Duration::from_secs(60);

/// How long a whole case may take.
const CASE_BOUND: Duration = Duration::from_secs(120);

#[test]
fn random_contention_on_a_tcp_listeners_receive_budget() {
    run_seeds(
        Kind::Tcp,
        "random_contention_on_a_tcp_listeners_receive_budget",
    );
}

#[test]
fn random_contention_on_a_ws_listeners_receive_budget() {
    run_seeds(
        Kind::Ws,
        "random_contention_on_a_ws_listeners_receive_budget",
    );
}

#[cfg(feature = "tls")]
#[test]
fn random_contention_on_a_tls_byte_stream_listeners_receive_budget() {
    run_seeds(
        Kind::Tls,
        "random_contention_on_a_tls_byte_stream_listeners_receive_budget",
    );
}

#[cfg(feature = "tls")]
#[test]
fn random_contention_on_a_wss_listeners_receive_budget() {
    run_seeds(
        Kind::Wss,
        "random_contention_on_a_wss_listeners_receive_budget",
    );
}

#[cfg(feature = "axum")]
#[test]
fn random_contention_on_an_axum_endpoints_receive_budget() {
    run_seeds(
        Kind::Axum,
        "random_contention_on_an_axum_endpoints_receive_budget",
    );
}

fn run_seeds(kind: Kind, test: &'static str) {
    // Cases whose budget was more than half in use at some point: the reach check.
    let contended = Arc::new(AtomicUsize::new(0));
    let seeds = each_seed(test, CI_SEEDS, CASE_BOUND, run, |seed| {
        let contended = Arc::clone(&contended);
        async move {
            if case(kind, seed).await {
                contended.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let contended = contended.load(Ordering::Relaxed);
    if seeds >= 10 {
        assert!(
            contended * 4 >= seeds,
            "only {contended} of {seeds} cases had more than half the budget in use"
        );
    }
}

/// What a case draws.
#[derive(Debug)]
struct Setup {
    budget: usize,
    max_connections: usize,
    grace: Duration,
    peers: Vec<Script>,
    clients: Vec<Echoes>,
}

/// A raw peer's script.
#[derive(Debug, Clone)]
struct Script {
    /// Reads what it is sent as it comes (else only at its end, if at all).
    reads: bool,
    steps: Vec<Step>,
    end: End,
}

#[derive(Debug, Clone)]
enum Step {
    /// `count` calls of `size` bytes each, in one write or one write each.
    Small {
        count: usize,
        size: usize,
        one_write: bool,
    },
    /// A call of `size` bytes, whole.
    Long { size: usize },
    /// A call of `size` bytes: `cut` bytes of it, a pause, the rest.
    Paused {
        size: usize,
        cut: usize,
        pause: Duration,
    },
    /// A call of `size` bytes in `pieces` writes, `pause` apart.
    Trickled {
        size: usize,
        pieces: usize,
        pause: Duration,
    },
    /// (WebSocket) a call of `size` bytes in `fragments` frames, a ping between each if
    /// `pings`.
    Fragmented {
        size: usize,
        fragments: usize,
        pings: bool,
    },
    /// Nothing for a while.
    Quiet(Duration),
}

#[derive(Debug, Clone)]
enum End {
    /// Drops the socket.
    Close,
    /// `cut` bytes of a call of `size` bytes, then drops the socket.
    CloseMid { size: usize, cut: usize },
    /// `cut` bytes of a call of `size` bytes, then nothing more: reads to the end, which
    /// must bring a goaway `deadline_exceeded`.
    Stall { size: usize, cut: usize },
    /// Announces a message of `len` bytes (above the listener's bounds) and sends `sent`
    /// bytes of it, or (WebSocket, `fragments`) sends all of it in fragments of 16 KiB:
    /// reads to the end, which must bring a goaway `resource_exhausted`.
    Oversize {
        len: usize,
        sent: usize,
        fragments: bool,
    },
    /// Ends its direction (FIN) and reads to the end.
    HalfClose,
}

/// A well-behaved client's echoes: after `delay`, rounds of values of these sizes, each
/// round's echoes at once.
#[derive(Debug, Clone)]
struct Echoes {
    delay: Duration,
    rounds: Vec<Vec<usize>>,
}

/// The call frame's bytes around its argument, at most.
const CALL_ROOM: usize = 256;

fn draw(kind: Kind, rng: &mut Rng) -> Setup {
    let budget = MAX + rng.below(3 * MAX as u64 + 1) as usize;
    let max_connections = 2 + rng.below(4) as usize;
    let grace = Duration::from_millis([150, 300][rng.below(2) as usize]);
    let long = |rng: &mut Rng| {
        FREE_PER_CONNECTION / 2
            + rng.below((MAX - CALL_ROOM - FREE_PER_CONNECTION / 2) as u64) as usize
    };
    let peers = (0..2 + rng.below(6))
        .map(|_| {
            let steps = (0..rng.below(5))
                .map(|_| match rng.below(if kind.ws() { 7 } else { 6 }) {
                    0 => Step::Small {
                        count: 1 + rng.below(20) as usize,
                        size: rng.below(4096) as usize,
                        one_write: rng.chance(50),
                    },
                    1 | 2 => Step::Long { size: long(rng) },
                    3 => {
                        let size = long(rng);
                        Step::Paused {
                            size,
                            cut: 1 + rng.below(size as u64) as usize,
                            pause: grace / 4 * rng.below(2) as u32,
                        }
                    }
                    4 => Step::Trickled {
                        size: long(rng),
                        pieces: 2 + rng.below(6) as usize,
                        pause: grace / 16,
                    },
                    5 => Step::Quiet(Duration::from_millis(rng.below(100))),
                    _ => Step::Fragmented {
                        size: long(rng),
                        fragments: 2 + rng.below(3) as usize,
                        pings: rng.chance(50),
                    },
                })
                .collect();
            // Anywhere from the first byte of the length prefix or frame header.
            let cut = |rng: &mut Rng, size: usize| 1 + rng.below(size as u64) as usize;
            let end = match rng.below(6) {
                0 => End::Close,
                1 => {
                    let size = long(rng);
                    End::CloseMid {
                        size,
                        cut: cut(rng, size),
                    }
                }
                2 | 3 => {
                    let size = long(rng);
                    End::Stall {
                        size,
                        cut: cut(rng, size),
                    }
                }
                4 => {
                    // Above max_bytes (and the WebSocket frame limit), or beyond what the
                    // budget and a connection's free allowance could ever pay for.
                    let len = match rng.chance(50) {
                        true => MAX + 100 + rng.below(MAX as u64) as usize,
                        false => 5 * MAX + rng.below(MAX as u64) as usize,
                    };
                    End::Oversize {
                        len,
                        sent: rng.below(8192) as usize,
                        fragments: kind.ws() && rng.chance(50),
                    }
                }
                _ => End::HalfClose,
            };
            Script {
                reads: rng.chance(60),
                steps,
                end,
            }
        })
        .collect();
    let clients = (0..1 + rng.below(2))
        .map(|_| Echoes {
            delay: Duration::from_millis(rng.below(300)),
            rounds: (0..1 + rng.below(3))
                .map(|_| {
                    (0..1 + rng.below(3))
                        .map(|_| rng.below((MAX - CALL_ROOM) as u64) as usize)
                        .collect()
                })
                .collect(),
        })
        .collect();
    Setup {
        budget,
        max_connections,
        grace,
        peers,
        clients,
    }
}

/// One case; whether more than half of the budget was in use at some point.
async fn case(kind: Kind, seed: u64) -> bool {
    let mut rng = Rng(seed);
    let setup = draw(kind, &mut rng);
    let budget = ByteBudget::new(setup.budget);
    let config = ListenerConfig::default()
        .max_bytes(MAX)
        .max_connections(setup.max_connections)
        .receive_budget(budget.clone())
        .receive_deadline(Some(ReceiveDeadline::new(setup.grace, 1 << 20)))
        .ping_interval(None);
    let listener = Listener::bind(kind, config).await;
    let addr = listener.addr();

    // The server: every accepted connection serves the counter.
    let accepted: Arc<Mutex<Vec<Connection>>> = Arc::default();
    let serving = {
        let (listener, accepted) = (listener.clone(), Arc::clone(&accepted));
        tokio::spawn(async move {
            while let Some(transport) = listener.accept().await {
                let conn = match transport {
                    Accepted::Tcp(t) => tracked_with(server_builder(), t),
                    Accepted::Ws(t) => tracked_with(server_builder(), t),
                };
                accepted.lock().unwrap().push(conn);
            }
        })
    };

    // The budget in use, sampled.
    let (stop_sampling, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let sampling = {
        let budget = budget.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while stopped.try_recv().is_err() {
                // The semaphore holds the use within the bound; bytes given back twice
                // (or never drawn) would show as more than the bound available.
                let available = budget.available();
                assert!(available <= budget.limit(), "{available} bytes available");
                peak = peak.max(budget.limit() - available);
                sleep(Duration::from_millis(2)).await;
            }
            peak
        })
    };

    let peers: Vec<JoinHandle<()>> = setup
        .peers
        .iter()
        .enumerate()
        .map(|(i, script)| {
            let script = script.clone();
            tokio::spawn(async move { raw_peer(kind, addr, i, script).await })
        })
        .collect();
    let clients: Vec<JoinHandle<()>> = setup
        .clients
        .iter()
        .cloned()
        .map(|echoes| tokio::spawn(client(kind, addr, echoes)))
        .collect();
    for (i, peer) in peers.into_iter().enumerate() {
        match timeout(LIVENESS, peer).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!(
                "raw peer {i} ({:?}) did not end; {} bytes of the budget in use: {setup:?}",
                setup.peers[i],
                budget.limit() - budget.available()
            ),
        }
    }
    for client in clients {
        match timeout(LIVENESS, client).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("a well-behaved client was not served: {setup:?}"),
        }
    }

    // Every server connection closes, and the budget is whole again.
    serving.abort();
    let _ = serving.await;
    let conns = std::mem::take(&mut *accepted.lock().unwrap());
    for (i, conn) in conns.iter().enumerate() {
        if timeout(LIVENESS, conn.closed()).await.is_err() {
            panic!("server connection {i} did not close: {:?}", conn.stats());
        }
    }
    let whole = async {
        while budget.available() != budget.limit() {
            sleep(Duration::from_millis(5)).await;
        }
    };
    if timeout(LIVENESS, whole).await.is_err() {
        panic!(
            "the budget did not come back: {} of {} bytes in use, {setup:?}",
            budget.limit() - budget.available(),
            budget.limit()
        );
    }
    let _ = stop_sampling.send(());
    let peak = sampling.await.unwrap();

    // Every slot is free: max_connections new sockets are accepted at once.
    listener.every_slot_free(kind, setup.max_connections).await;
    peak > setup.budget / 2
}

/// A server connection: the counter served from its start (a bootstrap may come with
/// the client's hello), messages up to the listener's `max_bytes`.
fn server_builder() -> bunite_rpc::ConnectionBuilder {
    Connection::builder()
        .limits(Limits {
            max_bytes: MAX,
            ..Limits::default()
        })
        .serve(counter_def(), counter_impl())
}

/// A listener of any kind, shared by the case's tasks.
#[derive(Clone)]
enum Listener {
    /// The byte stream, plain or inside TLS.
    Tcp(Arc<TcpMessageListener>),
    /// WebSocket, plain or inside TLS.
    Ws(Arc<WsListener>),
    #[cfg(feature = "axum")]
    Axum(Arc<axum_server::Server>),
}

enum Accepted {
    Tcp(byte_stream::TcpTransport),
    Ws(ws::WsTransport),
}

impl Listener {
    async fn bind(kind: Kind, config: ListenerConfig) -> Listener {
        #[cfg(feature = "tls")]
        let config = match kind.tls() {
            true => config.tls(common::tls::server()),
            false => config,
        };
        match kind.ws() {
            #[cfg(feature = "axum")]
            true if kind == Kind::Axum => {
                Listener::Axum(Arc::new(axum_server::Server::start(config).await))
            }
            false => Listener::Tcp(Arc::new(
                TcpMessageListener::bind("127.0.0.1:0", config)
                    .await
                    .unwrap(),
            )),
            true => Listener::Ws(Arc::new(
                WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config)
                    .await
                    .unwrap(),
            )),
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Listener::Tcp(l) => l.local_addr().unwrap(),
            Listener::Ws(l) => l.local_addr().unwrap(),
            #[cfg(feature = "axum")]
            Listener::Axum(s) => s.addr,
        }
    }

    /// The next connection; `None` once the listener stopped.
    async fn accept(&self) -> Option<Accepted> {
        match self {
            Listener::Tcp(l) => l.accept().await.ok().map(|(t, _)| Accepted::Tcp(t)),
            Listener::Ws(l) => l.accept().await.ok().map(|a| Accepted::Ws(a.transport)),
            #[cfg(feature = "axum")]
            Listener::Axum(s) => s.handed.lock().await.recv().await.map(Accepted::Ws),
        }
    }

    /// Every slot free, then `max_connections` new sockets taken at once (through their
    /// TLS and WebSocket handshakes; an axum endpoint must answer each `101` at once).
    async fn every_slot_free(&self, kind: Kind, max_connections: usize) {
        #[cfg(feature = "axum")]
        if let Listener::Axum(s) = self {
            // The endpoint counts its live connections: all of them gone.
            let free = async {
                while s.endpoint.connections() != 0 {
                    sleep(Duration::from_millis(5)).await;
                }
            };
            if timeout(LIVENESS, free).await.is_err() {
                panic!(
                    "{} slots of the axum endpoint still held",
                    s.endpoint.connections()
                );
            }
        }
        let addr = self.addr();
        let mut held = Vec::new();
        for i in 0..max_connections {
            let socket = timeout(LIVENESS, connect_raw_to(kind, addr, false))
                .await
                .unwrap_or_else(|_| panic!("slot {i} of {max_connections}: no handshake"));
            match timeout(LIVENESS, self.accept()).await {
                Ok(Some(transport)) => held.push((socket, transport)),
                other => panic!(
                    "slot {i} of {max_connections} did not come back: {}",
                    other.is_ok()
                ),
            }
        }
        drop(held);
        #[cfg(feature = "axum")]
        if let Listener::Axum(s) = self {
            s.stop().await;
        }
    }
}

/// A raw socket connected to the listener at `addr` ([`connect_raw`]). An axum endpoint
/// without a free slot answers the upgrade 503: tried again shortly if `retry`, else the
/// case fails.
async fn connect_raw_to(kind: Kind, addr: SocketAddr, retry: bool) -> (RawRead, RawWrite) {
    loop {
        let socket = connect_raw(kind, addr).await;
        match socket.expect("a raw peer's socket, TLS handshake or upgrade's response") {
            Ok(halves) => return halves,
            Err(503) if retry => sleep(Duration::from_millis(10)).await,
            Err(status) => panic!("the upgrade was answered {status}"),
        }
    }
}

/// An axum server with an `RpcEndpoint` at `/rpc`, whose connections are handed over on a
/// channel.
#[cfg(feature = "axum")]
mod axum_server {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use bunite_rpc::transport::axum::RpcEndpoint;
    use bunite_rpc::transport::ws::WsTransport;
    use bunite_rpc::transport::ListenerConfig;
    use tokio::sync::{mpsc, oneshot};

    use super::LIVENESS;

    pub struct Server {
        pub endpoint: RpcEndpoint,
        pub addr: SocketAddr,
        pub handed: tokio::sync::Mutex<mpsc::UnboundedReceiver<WsTransport>>,
        stop: Mutex<Option<(oneshot::Sender<()>, super::AxumTask)>>,
    }

    impl Server {
        pub async fn start(config: ListenerConfig) -> Server {
            let endpoint = RpcEndpoint::new(config);
            let (tx, handed) = mpsc::unbounded_channel();
            let rpc = endpoint.clone().route(move |up| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(up.transport);
                }
            });
            let app = axum::Router::new().route("/rpc", rpc);
            let (addr, stop, server) = super::serve_axum(app).await;
            Server {
                endpoint,
                addr,
                handed: tokio::sync::Mutex::new(handed),
                stop: Mutex::new(Some((stop, server))),
            }
        }

        /// Stops serving, gracefully: axum's task ends.
        pub async fn stop(&self) {
            let Some((stop, server)) = self.stop.lock().unwrap().take() else {
                return;
            };
            let _ = stop.send(());
            match tokio::time::timeout(LIVENESS, server).await {
                Ok(ended) => ended.unwrap().unwrap(),
                Err(_) => panic!("axum did not stop"),
            }
        }
    }
}

/// A call (to cap 0, which answers it with an error) whose encoding is `size` bytes and
/// a little more.
fn call(enc: &mut Encoder, id: u64, size: usize) -> Vec<u8> {
    let frame = call_frame(CapId(0), id, "echo", Value::Bin(vec![0x5a; size]));
    enc.encode_to_vec(&frame.to_value())
}

/// What a raw peer's reader saw: the goaways, and how many frames in all.
#[derive(Debug, Default)]
struct Seen {
    goaways: Vec<Goaway>,
    frames: usize,
}

/// Reads the server's messages until the socket ends (or fails: a reset after the
/// server's close).
async fn read_all(kind: Kind, mut socket: RawRead) -> Seen {
    let mut seen = Seen::default();
    let mut dec = Decoder::new(WireLimits::default());
    while let Some(body) = next_message(kind, &mut socket).await {
        let frame = dec
            .decode_frame(&body)
            .expect("a valid frame from the server");
        seen.frames += 1;
        if let Frame::Goaway(g) = frame {
            seen.goaways.push(g);
        }
    }
    seen
}

/// The next message from the server; `None` at the end (a close frame, the socket's end,
/// an error).
async fn next_message(kind: Kind, socket: &mut RawRead) -> Option<Vec<u8>> {
    match kind.ws() {
        false => {
            let mut prefix = [0u8; 4];
            socket.read_exact(&mut prefix).await.ok()?;
            let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
            socket.read_exact(&mut body).await.ok()?;
            Some(body)
        }
        true => {
            let mut message = Vec::new();
            loop {
                let mut head = [0u8; 2];
                socket.read_exact(&mut head).await.ok()?;
                assert_eq!(head[1] & 0x80, 0, "a server's frame is not masked");
                let len = match head[1] & 0x7f {
                    126 => {
                        let mut n = [0u8; 2];
                        socket.read_exact(&mut n).await.ok()?;
                        u16::from_be_bytes(n) as usize
                    }
                    127 => {
                        let mut n = [0u8; 8];
                        socket.read_exact(&mut n).await.ok()?;
                        u64::from_be_bytes(n) as usize
                    }
                    n => n as usize,
                };
                let mut payload = vec![0u8; len];
                socket.read_exact(&mut payload).await.ok()?;
                match head[0] & 0x0f {
                    0x8 => return None,
                    0x9 | 0xa => continue,
                    0x0 | 0x2 => {
                        message.extend_from_slice(&payload);
                        if head[0] & 0x80 != 0 {
                            return Some(message);
                        }
                    }
                    op => panic!("the server sent opcode {op:#x}"),
                }
            }
        }
    }
}

/// A raw peer: connects, exchanges hellos, plays its script, and checks the goaways it
/// read against it.
async fn raw_peer(kind: Kind, addr: SocketAddr, i: usize, script: Script) {
    let (mut r, mut w) = connect_raw_to(kind, addr, true).await;
    // The server's hello, once the listener has taken the socket.
    let mut dec = Decoder::new(WireLimits::default());
    let hello = timeout(LIVENESS, next_message(kind, &mut r))
        .await
        .unwrap_or_else(|_| panic!("raw peer {i}: no hello"));
    let hello = hello.map(|b| dec.decode_frame(&b).expect("a valid frame"));
    assert!(
        matches!(hello, Some(Frame::Hello(_))),
        "raw peer {i}: {hello:?}"
    );
    let mut enc = Encoder::new();
    let hello = enc.encode_to_vec(&Frame::Hello(raw_hello()).to_value());
    w.write_all(&framed(kind, &hello)).await.unwrap();

    let (mut reader, mut r) = match script.reads {
        true => (Some(tokio::spawn(read_all(kind, r))), None),
        false => (None, Some(r)),
    };
    // Writes fail once the server has closed (a step cut off at its deadline): the rest
    // of the script is skipped.
    let mut open = true;
    let mut id = 1;
    for step in &script.steps {
        if !open {
            break;
        }
        open = play(kind, &mut w, &mut enc, &mut id, step).await;
    }
    let must = match (&script.end, open) {
        (End::Close, _) => None,
        (End::CloseMid { size, cut }, true) => {
            let bytes = framed(kind, &call(&mut enc, id, *size));
            let _ = w.write_all(&bytes[..(*cut).min(bytes.len() - 1)]).await;
            None
        }
        (End::Stall { size, cut }, true) => {
            let bytes = framed(kind, &call(&mut enc, id, *size));
            let sent = w.write_all(&bytes[..(*cut).min(bytes.len() - 1)]).await;
            sent.is_ok().then_some("deadline_exceeded")
        }
        (
            End::Oversize {
                len,
                sent,
                fragments,
            },
            true,
        ) => {
            let bytes = match kind.ws() && *fragments {
                true => {
                    let piece = 16 * 1024;
                    let mut bytes = Vec::new();
                    for n in 0..len.div_ceil(piece) {
                        let opcode = if n == 0 { 0x02 } else { 0x00 };
                        let fin = if (n + 1) * piece >= *len { 0x80 } else { 0 };
                        let part = piece.min(len - n * piece);
                        bytes.extend(ws_client_header(fin | opcode, part));
                        bytes.extend(vec![0u8; part]);
                    }
                    bytes
                }
                false => {
                    let mut bytes = match kind.ws() {
                        false => (*len as u32).to_be_bytes().to_vec(),
                        true => ws_client_header(0x82, *len),
                    };
                    bytes.extend(vec![0u8; *sent]);
                    bytes
                }
            };
            let sent = w.write_all(&bytes).await;
            sent.is_ok().then_some("resource_exhausted")
        }
        (End::HalfClose, true) => {
            let _ = w.shutdown().await;
            None
        }
        (_, false) => None,
    };
    let reads_to_end = matches!(
        script.end,
        End::Stall { .. } | End::Oversize { .. } | End::HalfClose
    );
    if reader.is_none() && reads_to_end {
        reader = Some(tokio::spawn(read_all(kind, r.take().unwrap())));
    }
    let seen = match reader {
        None => return,
        Some(reader) if reads_to_end => timeout(LIVENESS, reader)
            .await
            .unwrap_or_else(|_| panic!("raw peer {i}: the server never closed: {script:?}"))
            .unwrap(),
        Some(reader) => {
            // Closing: what was read so far.
            reader.abort();
            match reader.await {
                Ok(seen) => seen,
                Err(_) => return,
            }
        }
    };
    drop(w);
    // Every goaway is one the script explains.
    let stalls = script.steps.iter().any(|s| {
        matches!(
            s,
            Step::Paused { .. } | Step::Trickled { .. } | Step::Fragmented { .. }
        )
    }) || matches!(script.end, End::Stall { .. });
    let oversize = matches!(script.end, End::Oversize { .. });
    for g in &seen.goaways {
        let reason = g.reason.as_deref();
        let explained = match reason {
            Some("deadline_exceeded") => stalls,
            Some("resource_exhausted") => {
                oversize && g.error.as_ref().and_then(|e| e.reason()) == Some("max_frame_bytes")
            }
            _ => false,
        };
        assert!(explained, "raw peer {i}: goaway {g:?} after {script:?}");
    }
    if let Some(reason) = must {
        assert!(
            seen.goaways
                .iter()
                .any(|g| g.reason.as_deref() == Some(reason)
                    || (stalls && g.reason.as_deref() == Some("deadline_exceeded"))),
            "raw peer {i}: no goaway {reason} before the close ({} frames, goaways {:?}): \
             {script:?}",
            seen.frames,
            seen.goaways
        );
    }
}

/// Plays one step; false once a write failed (the server closed).
async fn play(kind: Kind, w: &mut RawWrite, enc: &mut Encoder, id: &mut u64, step: &Step) -> bool {
    let mut next = || {
        *id += 1;
        *id
    };
    match step {
        Step::Small {
            count,
            size,
            one_write,
        } => {
            let calls: Vec<Vec<u8>> = (0..*count)
                .map(|_| framed(kind, &call(enc, next(), *size)))
                .collect();
            if *one_write {
                w.write_all(&calls.concat()).await.is_ok()
            } else {
                for c in calls {
                    if w.write_all(&c).await.is_err() {
                        return false;
                    }
                }
                true
            }
        }
        Step::Long { size } => {
            let bytes = framed(kind, &call(enc, next(), *size));
            w.write_all(&bytes).await.is_ok()
        }
        Step::Paused { size, cut, pause } => {
            let bytes = framed(kind, &call(enc, next(), *size));
            let cut = (*cut).min(bytes.len());
            if w.write_all(&bytes[..cut]).await.is_err() {
                return false;
            }
            sleep(*pause).await;
            w.write_all(&bytes[cut..]).await.is_ok()
        }
        Step::Trickled {
            size,
            pieces,
            pause,
        } => {
            let bytes = framed(kind, &call(enc, next(), *size));
            for piece in bytes.chunks(bytes.len().div_ceil(*pieces)) {
                if w.write_all(piece).await.is_err() {
                    return false;
                }
                sleep(*pause).await;
            }
            true
        }
        Step::Fragmented {
            size,
            fragments,
            pings,
        } => {
            let body = call(enc, next(), *size);
            let parts: Vec<&[u8]> = body.chunks(body.len().div_ceil(*fragments)).collect();
            let mut bytes = Vec::new();
            for (n, part) in parts.iter().enumerate() {
                let opcode = if n == 0 { 0x02 } else { 0x00 };
                let fin = if n + 1 == parts.len() { 0x80 } else { 0 };
                bytes.extend(ws_client_header(fin | opcode, part.len()));
                bytes.extend_from_slice(part);
                if *pings && fin == 0 {
                    bytes.extend(ws_client_header(0x89, 0));
                }
            }
            w.write_all(&bytes).await.is_ok()
        }
        Step::Quiet(d) => {
            sleep(*d).await;
            true
        }
    }
}

/// A well-behaved client: bootstraps the counter and echoes its values, each round's at
/// once; every echo must come back equal.
async fn client(kind: Kind, addr: SocketAddr, echoes: Echoes) {
    sleep(echoes.delay).await;
    let limits = Limits {
        max_bytes: MAX,
        bootstrap_timeout: Some(LIVENESS),
        ..Limits::default()
    };
    let builder = Connection::builder().limits(limits);
    // Past an axum endpoint's slots, an upgrade is answered 503: tried again shortly.
    let connect = loop {
        let connector = WsConnector::new()
            .connect_timeout(LIVENESS)
            .ping_interval(None);
        match dial(kind, addr, connector).await {
            Ok(connect) => break connect,
            Err(e) if kind.ws() && e.contains("HTTP 503") => sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("{e}"),
        }
    };
    let conn = connect(builder);
    let counter = conn
        .bootstrap(&counter_def())
        .await
        .expect("a well-behaved client's bootstrap");
    for round in &echoes.rounds {
        let calls = round.iter().map(|&size| {
            let value = Value::Bin((0..size).map(|b| b as u8).collect());
            let counter = counter.clone();
            async move {
                let got = counter.call_value("echo", value.clone()).await;
                assert_eq!(
                    got.as_ref().ok(),
                    Some(&value),
                    "echo of {size} bytes: {got:?}"
                );
            }
        });
        futures::future::join_all(calls).await;
    }
    drop(counter);
    conn.close();
    conn.closed().await;
}
