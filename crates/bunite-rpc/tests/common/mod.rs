//! Test harness: every test that opens a connection runs through [`run`] or [`run_paused`],
//! which check for leaks after the test body (STYLE habit 15: leak checks are not opt-in).
//!
//! # How to use it
//!
//! ```ignore
//! #[test]
//! fn a_test() {
//!     run(async {
//!         let (server, client) = pair();
//!         // ...
//!     });
//! }
//! ```
//!
//! [`run`] builds a current-thread runtime with real time, [`run_paused`] one whose time is
//! paused (it advances only when every task waits, so timeouts and deadlines are exact and
//! instant). With real time, a body still running after five minutes ([`BODY_BOUND`]) fails
//! the test as hung, so a test that waits for something that never comes fails by its name
//! instead of holding the whole `cargo test` run. Connections are opened with [`pair`],
//! [`pair_with`] or [`RawPeer::connect`], over a socket transport with [`tracked`] or
//! [`tracked_with`], or built by hand and handed to [`track`]; each registers the connection
//! with the current run, and calling them outside a run panics, so no test can skip the
//! checks. Tests of the transports alone (no connection) run through [`run`] too, for its
//! last check: no task left.
//!
//! When the body returns (its locals, clients included, dropped), the run:
//!
//! 1. waits (bounded) until every connection from [`pair`], [`pair_with`] and [`track`] is
//!    clean ([`assert_clean`]): only the reserved caps, no pending, active or streaming
//!    call, nothing unsent, no task but its driver. Connections of a [`RawPeer`] are not
//!    held to it, since the raw peer keeps the references it took by hand; a test that
//!    expects them clean says so with [`assert_clean`];
//! 2. closes every connection and waits (bounded) for [`Connection::closed`], which returns
//!    once the driver and every task of the connection (handlers, policy checks,
//!    disposals) have ended;
//! 3. asserts [`Stats::is_idle`] on each: two reserved caps, no pending, active or
//!    streaming call, nothing unsent, `tasks == 0`;
//! 4. waits (bounded) until no task at all is left on the runtime: a connection opened
//!    without registering it, or a task the test spawned and forgot, fails the test here.
//!
//! # Features
//!
//! [`RawPeer`] speaks through `MemoryTransport::send_raw`, a test hook behind the crate's
//! hidden feature `test-util` (as is `Connection::client_for`). The crate's dev-dependency
//! on itself turns that feature on for every test target, so no target declares it; the
//! transports' features are another matter: a test over WebSocket, TCP, TLS or axum says
//! which it needs with `#![cfg(feature = ...)]` at its top (it then compiles to nothing
//! without them), and `cargo test --workspace --all-features` runs them all.
#![allow(dead_code)]

#[cfg(all(feature = "byte-stream", feature = "ws"))]
pub mod deployment;
pub mod seeded;
#[cfg(feature = "tls")]
pub mod tls;

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::memory::{self, MemoryTransport};
use bunite_rpc::transport::{MessageSink, MessageSource, Transport};
use bunite_rpc::wire::{
    Call, CallId, CapId, DecodeLimits as WireLimits, Decoder, Encoder, Frame, Hello, ResultFrame,
    WireStatus,
};
use bunite_rpc::{
    CapDef, Code, Connection, ConnectionBuilder, Disconnect, Error, LocalError, MethodDef, Record,
    Stats, Status, Value,
};

/// How long a connection may take to close once the test is over.
const CLOSE_BOUND: Duration = Duration::from_secs(30);

/// How long a test body with real time may run before the run fails it as hung, naming the
/// test, instead of holding the whole test command (`cargo test` has no per-test limit).
/// Far beyond any test's own waits. Runs with paused time have no such bound: their clock
/// jumps to the next timer whenever every task waits, also while one waits on a socket, so
/// a bound there could fire while the body still makes progress.
const BODY_BOUND: Duration = Duration::from_secs(300);

/// A connection registered with the current run.
struct Tracked {
    conn: Connection,
    /// Checked clean before it is closed.
    clean: bool,
}

/// The connections of one run, shared by the test's thread and the runtime's workers.
type Registry = Arc<std::sync::Mutex<Vec<Tracked>>>;

thread_local! {
    /// The connections of the run this thread belongs to (the test's thread, or a worker of
    /// its multi-thread runtime); `None` outside a run.
    static TRACKED: RefCell<Option<Registry>> = const { RefCell::new(None) };
    /// Whether the run on this thread has paused time.
    static PAUSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs a test body on a current-thread runtime with real time, then checks for leaks
/// (see the module docs). With `BUNITE_TEST_RUNTIME=multi` in the environment, on a
/// multi-thread runtime of two workers instead (as applications run; `.ci/run` runs the
/// integration tests that way in memory and over TCP).
pub fn run(body: impl Future<Output = ()>) {
    match std::env::var("BUNITE_TEST_RUNTIME").as_deref() {
        Ok("multi") => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(2).enable_all();
            run_on(builder, Clock::Real(BODY_BOUND), body);
        }
        Ok("current") | Err(_) => run_on_one_thread(body),
        Ok(other) => panic!("BUNITE_TEST_RUNTIME={other}: expected multi or current"),
    }
}

/// [`run`] always on a current-thread runtime, whatever `BUNITE_TEST_RUNTIME` says: for a
/// test whose assertion is about what one thread does in turn (what a driver reads before
/// it writes).
pub fn run_on_one_thread(body: impl Future<Output = ()>) {
    run_within(BODY_BOUND, body);
}

/// [`run_on_one_thread`] with `bound` instead of [`BODY_BOUND`] as the time the body may
/// take: for the harness's own test of that bound.
pub fn run_within(bound: Duration, body: impl Future<Output = ()>) {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    run_on(builder, Clock::Real(bound), body);
}

/// [`run`] always on a runtime of two workers, whatever `BUNITE_TEST_RUNTIME` says: for a
/// test about what a task on another worker may see while a driver is mid-pass.
pub fn run_on_two_workers(body: impl Future<Output = ()>) {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2).enable_all();
    run_on(builder, Clock::Real(BODY_BOUND), body);
}

/// Heap blocks allocated while `work` runs, for a test binary whose global allocator is
/// dhat's with a testing profiler running (dhat allows one profiler per process, so each such
/// test is a binary of its own).
pub async fn blocks_allocated_by(work: impl Future<Output = ()>) -> u64 {
    let before = dhat::HeapStats::get().total_blocks;
    work.await;
    dhat::HeapStats::get().total_blocks - before
}

/// [`run`] with paused time: sleeps, timeouts and deadlines complete as soon as every task
/// waits, at their exact virtual instant.
pub fn run_paused(body: impl Future<Output = ()>) {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all().start_paused(true);
    run_on(builder, Clock::Paused, body);
}

/// The clock of a run.
enum Clock {
    /// Real time; the body fails if it takes longer than this.
    Real(Duration),
    /// Paused time (the runtime must start paused); the body has no bound.
    Paused,
}

/// Runs `body` on the runtime `builder` makes, with the time limit `clock` gives it, then
/// the checks of [`finish`].
fn run_on(mut builder: tokio::runtime::Builder, clock: Clock, body: impl Future<Output = ()>) {
    let paused = matches!(clock, Clock::Paused);
    let registry = Registry::default();
    let workers = registry.clone();
    // A worker of a multi-thread runtime (a connection accepted in a spawned task) tracks
    // into the same run.
    builder.on_thread_start(move || {
        TRACKED.with(|t| *t.borrow_mut() = Some(workers.clone()));
    });
    let rt = builder.build().expect("test runtime");
    TRACKED.with(|t| {
        let mut t = t.borrow_mut();
        assert!(t.is_none(), "common::run inside common::run");
        *t = Some(registry);
    });
    PAUSED.with(|p| p.set(paused));
    // Forgets the run's connections and its clock however the test ends (a failed
    // assertion unwinds).
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            TRACKED.with(|t| t.borrow_mut().take());
            PAUSED.with(|p| p.set(false));
        }
    }
    let _reset = Reset;
    rt.block_on(async {
        match clock {
            Clock::Real(bound) => {
                if tokio::time::timeout(bound, body).await.is_err() {
                    panic!(
                        "the test body did not finish within {bound:?}: it waits for \
                         something that never comes"
                    );
                }
            }
            Clock::Paused => body.await,
        }
        finish().await;
    });
}

/// Registers a connection with the current run, to be checked clean, closed and checked idle
/// when the test body returns. Panics outside [`run`] / [`run_paused`].
pub fn track(conn: &Connection) {
    register(conn, true);
}

/// `Connection::new(transport)`, [`track`]ed: for connections over the socket transports,
/// which tests open by hand.
pub fn tracked<T: Transport>(transport: T) -> Connection {
    tracked_with(Connection::builder(), transport)
}

/// `builder.connect(transport)`, [`track`]ed.
pub fn tracked_with<T: Transport>(builder: ConnectionBuilder, transport: T) -> Connection {
    let conn = builder.connect(transport);
    track(&conn);
    conn
}

fn register(conn: &Connection, clean: bool) {
    in_run();
    TRACKED.with(|t| {
        if let Some(list) = t.borrow().as_ref() {
            list.lock().unwrap().push(Tracked {
                conn: conn.clone(),
                clean,
            });
        }
    });
}

/// Panics outside a run.
fn in_run() {
    let inside = TRACKED.with(|t| t.borrow().is_some());
    assert!(
        inside,
        "a connection opened outside common::run: every test that opens a connection runs \
         through common::run or common::run_paused, which check it for leaks"
    );
}

/// The checks after the test body (see the module docs).
async fn finish() {
    let tracked = TRACKED.with(|t| {
        t.borrow()
            .as_ref()
            .map(|list| std::mem::take(&mut *list.lock().unwrap()))
            .unwrap_or_default()
    });
    let expected: Vec<&Connection> = tracked
        .iter()
        .filter(|t| t.clean)
        .map(|t| &t.conn)
        .collect();
    assert_clean(&expected).await;
    for t in &tracked {
        t.conn.close();
    }
    for (i, t) in tracked.iter().enumerate() {
        if tokio::time::timeout(CLOSE_BOUND, t.conn.closed())
            .await
            .is_err()
        {
            panic!(
                "connection #{i} did not close within {CLOSE_BOUND:?}: {:?}",
                t.conn.stats()
            );
        }
        let stats = t.conn.stats();
        assert!(
            stats.is_idle(),
            "connection #{i} leaked past its close: {stats:?}"
        );
        // A panic in a connection's own task closes it cleanly, which would hide it.
        assert!(!t.conn.driver_panicked(), "connection #{i}'s task panicked");
    }
    let metrics = tokio::runtime::Handle::current().metrics();
    // Longer than a closed socket's linger (`transport::LINGER`, 2 s), whose reader task
    // may outlive its connection's close by that much when the peer keeps sending.
    for _ in 0..1000 {
        if metrics.num_alive_tasks() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "{} task(s) outlived the test: a connection opened without common::pair, pair_with, \
         RawPeer::connect or track, or a task the test spawned and never ended",
        metrics.num_alive_tasks()
    );
}

/// Two connected peers with default settings: (server, client). Both are tracked.
pub fn pair() -> (Connection, Connection) {
    pair_with(Connection::builder(), Connection::builder())
}

/// Two connected peers built from the given builders. Both are tracked.
///
/// Over the in-memory transport, or, under [`run`] with `BUNITE_TEST_TRANSPORT` set to
/// `tcp`, `ws` or `sealed` in the environment, over a loopback TCP connection (the
/// length-prefixed byte stream, a WebSocket, or the sealed pipe over the byte stream):
/// `.ci/run` runs the capability tests all four ways (STYLE habit 6). Under [`run_paused`]
/// it is always the in-memory transport: paused time jumps ahead whenever every task
/// waits, and with bytes in flight in the kernel every task waits, so timers would fire
/// early.
pub fn pair_with(a: ConnectionBuilder, b: ConnectionBuilder) -> (Connection, Connection) {
    in_run();
    let (a, b) = match transport_kind() {
        TransportKind::Memory => {
            let (ta, tb) = memory::pair();
            (a.connect(ta), b.connect(tb))
        }
        #[cfg(feature = "byte-stream")]
        TransportKind::Tcp => {
            let (ta, tb) = tcp_pair();
            (a.connect(ta), b.connect(tb))
        }
        #[cfg(feature = "ws")]
        TransportKind::Ws => {
            let (ta, tb) = ws_pair();
            (a.connect(ta), b.connect(tb))
        }
        #[cfg(all(feature = "sealed", feature = "byte-stream"))]
        TransportKind::Sealed => {
            let (ta, tb) = sealed_pair();
            (a.connect(ta), b.connect(tb))
        }
    };
    track(&a);
    track(&b);
    (a, b)
}

/// What [`pair`] and [`pair_with`] connect over in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Memory,
    #[cfg(feature = "byte-stream")]
    Tcp,
    #[cfg(feature = "ws")]
    Ws,
    #[cfg(all(feature = "sealed", feature = "byte-stream"))]
    Sealed,
}

impl TransportKind {
    /// The transport's name in spans and [`TransportInfo`](bunite_rpc::transport::TransportInfo).
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Memory => "memory",
            #[cfg(feature = "byte-stream")]
            TransportKind::Tcp => "tcp",
            #[cfg(feature = "ws")]
            TransportKind::Ws => "ws",
            #[cfg(all(feature = "sealed", feature = "byte-stream"))]
            TransportKind::Sealed => "tcp+sealed",
        }
    }
}

/// The transport of this run's pairs (see [`pair_with`]).
pub fn transport_kind() -> TransportKind {
    let paused = PAUSED.with(|p| p.get());
    match std::env::var("BUNITE_TEST_TRANSPORT").as_deref() {
        #[cfg(feature = "byte-stream")]
        Ok("tcp") if !paused => TransportKind::Tcp,
        #[cfg(feature = "ws")]
        Ok("ws") if !paused => TransportKind::Ws,
        #[cfg(all(feature = "sealed", feature = "byte-stream"))]
        Ok("sealed") if !paused => TransportKind::Sealed,
        Ok("tcp" | "ws" | "sealed" | "memory") | Err(_) => TransportKind::Memory,
        Ok(other) => {
            panic!("BUNITE_TEST_TRANSPORT={other}: expected tcp, ws, sealed or memory")
        }
    }
}

/// Two connected loopback TCP sockets, made without waiting (the kernel completes a
/// loopback connect at once), ready for tokio: (accepted, connecting).
#[cfg(any(feature = "byte-stream", feature = "ws"))]
fn loopback() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let a = std::net::TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
    let (b, _) = listener.accept().expect("accept");
    let end = |s: std::net::TcpStream| {
        s.set_nonblocking(true).unwrap();
        s.set_nodelay(true).unwrap();
        tokio::net::TcpStream::from_std(s).unwrap()
    };
    (end(b), end(a))
}

/// The two ends of a WebSocket over a loopback TCP connection, past a handshake that did
/// not take place (`from_raw_socket`; `tests/transport_ws.rs` tests handshakes): the
/// framing, masking, metering and pings of the `ws` transport.
#[cfg(feature = "ws")]
fn ws_pair() -> (
    bunite_rpc::transport::ws::WsTransport<tokio::net::TcpStream>,
    bunite_rpc::transport::ws::WsTransport<tokio::net::TcpStream>,
) {
    use bunite_rpc::transport::ws::{Role, WsTransport};
    use futures::FutureExt;
    let (server, client) = loopback();
    let max = bunite_rpc::Limits::default().max_bytes;
    // Wrapping a socket does no I/O: the futures are ready at their first poll.
    let server = WsTransport::from_raw_socket(server, Role::Server, max)
        .now_or_never()
        .expect("wrapping a socket does not wait");
    let client = WsTransport::from_raw_socket(client, Role::Client, max)
        .now_or_never()
        .expect("wrapping a socket does not wait");
    (server, client)
}

/// Two ends of the sealed pipe over a loopback TCP byte stream, with one key.
#[cfg(all(feature = "sealed", feature = "byte-stream"))]
fn sealed_pair() -> (
    bunite_rpc::transport::sealed::Sealed<bunite_rpc::transport::byte_stream::TcpTransport>,
    bunite_rpc::transport::sealed::Sealed<bunite_rpc::transport::byte_stream::TcpTransport>,
) {
    use bunite_rpc::transport::sealed::{Key, Sealed};
    let (a, b) = tcp_pair();
    let key = Key::new([7; 32]);
    (Sealed::new(a, key.clone()), Sealed::new(b, key))
}

/// Two ends of a loopback TCP connection, each a length-prefixed byte stream.
#[cfg(feature = "byte-stream")]
pub fn tcp_pair() -> (
    bunite_rpc::transport::byte_stream::TcpTransport,
    bunite_rpc::transport::byte_stream::TcpTransport,
) {
    use bunite_rpc::transport::byte_stream::ByteStream;
    let (a, b) = loopback();
    (ByteStream::tcp(a), ByteStream::tcp(b))
}

/// The `test.counter` cap: `get` (idempotent), `increment {delta?}`, `fail {code, message,
/// reason}`, `boom`, `echo`, `wait` (until cancelled), `typed {n}`, and `undeclared`
/// (declared, no handler).
pub fn counter_def() -> Arc<CapDef> {
    CapDef::builder("test.counter")
        .method(MethodDef::call("get").idempotent())
        .method(MethodDef::call("increment"))
        .method(MethodDef::call("fail"))
        .method(MethodDef::call("boom"))
        .method(MethodDef::call("echo"))
        .method(MethodDef::call("wait"))
        .method(MethodDef::call("typed"))
        .method(MethodDef::call("undeclared"))
        .build()
}

/// The `test.sized` cap: `sized {n}`, an answer of `n` bytes (all 5) at once, and `echo`,
/// its arguments back: short calls for long answers, and calls as long as their answers.
pub fn sized_cap() -> (Arc<CapDef>, Arc<dyn bunite_rpc::CapImpl>) {
    let def = CapDef::builder("test.sized")
        .method(MethodDef::call("sized"))
        .method(MethodDef::call("echo"))
        .build();
    let imp = DynCap::new()
        .call("sized", |args: Value, _| {
            let n = args
                .as_record()
                .and_then(|r| r.get("n"))
                .and_then(Value::as_integer)
                .unwrap_or(0) as usize;
            async move { Ok(Value::Bin(vec![5; n])) }
        })
        .call("echo", |args, _| async move { Ok(args) })
        .build();
    (def, imp)
}

/// Serves `test.counter` on `conn` for the connection's life.
pub async fn serve_counter(conn: &Connection) {
    conn.serve(counter_def(), counter_impl())
        .await
        .unwrap()
        .detach();
}

/// A [`pair`] whose first end serves `test.counter`, and the second end's client of it:
/// (server, client connection, counter client).
pub async fn counter_pair() -> (Connection, Connection, bunite_rpc::Client) {
    counter_pair_from(pair()).await
}

/// A [`counter_pair`] whose client end allows `max_in_flight` calls in flight.
pub async fn counter_pair_limited(
    max_in_flight: usize,
) -> (Connection, Connection, bunite_rpc::Client) {
    counter_pair_from(client_limited_pair(max_in_flight)).await
}

/// A [`pair`] whose second end (the client) allows `max_in_flight` calls in flight.
pub fn client_limited_pair(max_in_flight: usize) -> (Connection, Connection) {
    let limits = bunite_rpc::Limits {
        max_in_flight,
        ..Default::default()
    };
    pair_with(Connection::builder(), Connection::builder().limits(limits))
}

async fn counter_pair_from(
    (server, client): (Connection, Connection),
) -> (Connection, Connection, bunite_rpc::Client) {
    serve_counter(&server).await;
    let counter = client.bootstrap(&counter_def()).await.unwrap();
    (server, client, counter)
}

/// A counter implementation.
pub fn counter_impl() -> Arc<dyn bunite_rpc::CapImpl> {
    let count = Arc::new(AtomicI64::new(0));
    let (c1, c2) = (count.clone(), count);
    DynCap::new()
        .call("get", move |_, _| {
            let n = c1.load(Ordering::SeqCst);
            async move { Ok(Value::Record(Record::new().with("count", n))) }
        })
        .call("increment", move |args: Value, _| {
            let delta = args
                .as_record()
                .and_then(|r| r.get("delta"))
                .and_then(Value::as_integer)
                .unwrap_or(1) as i64;
            let n = c2.fetch_add(delta, Ordering::SeqCst) + delta;
            async move { Ok(Value::Record(Record::new().with("count", n))) }
        })
        .call("fail", |args: Value, _| async move {
            let r = args.as_record().cloned().unwrap_or_default();
            let code = r
                .get("code")
                .and_then(Value::as_str)
                .and_then(Code::parse)
                .unwrap_or(Code::Internal);
            let message = r
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("requested failure");
            let mut status = Status::new(code, message);
            if let Some(reason) = r.get("reason").and_then(Value::as_str) {
                status = status.with_reason(reason);
            }
            Err::<Value, _>(status)
        })
        .call("boom", |_, _| async move {
            Err::<Value, _>(Status::internal("boom"))
        })
        .call("echo", |args, _| async move { Ok(args) })
        .call("wait", |_, ctx: bunite_rpc::CallContext| async move {
            ctx.cancelled().await;
            Ok(Value::from("aborted"))
        })
        .call("typed", |args, _| async move {
            #[derive(serde::Deserialize)]
            struct Args {
                #[allow(dead_code)]
                n: u32,
            }
            let _: Args = bunite_rpc::from_value(args)?;
            Ok(Value::Undefined)
        })
        .build()
}

/// A peer that speaks frames by hand over one end of an in-memory pair, or, in a real-time
/// run with `BUNITE_TEST_TRANSPORT` set (see [`pair_with`]), over the other end of the same
/// socket transport as the pairs ([`RawPeer::connect`]; [`RawPeer::connect_through`] is
/// always in memory).
pub struct RawPeer {
    t: RawEnd,
    enc: Encoder,
    dec: Decoder,
}

/// The raw peer's end: whole messages in and out.
enum RawEnd {
    Memory(MemoryTransport),
    /// The two halves of a socket transport.
    Socket(Box<dyn MessageSink>, Box<dyn MessageSource>),
}

impl RawEnd {
    async fn send(&mut self, msg: bytes::Bytes) -> bool {
        match self {
            RawEnd::Memory(t) => t.send_raw(msg).await.is_ok(),
            RawEnd::Socket(sink, _) => {
                use bunite_rpc::transport::MessageSinkExt;
                sink.send(msg).await.is_ok()
            }
        }
    }

    async fn recv(&mut self) -> Option<bytes::Bytes> {
        match self {
            RawEnd::Memory(t) => t.recv_raw().await,
            RawEnd::Socket(_, source) => {
                use bunite_rpc::transport::MessageSourceExt;
                source.recv().await.ok().flatten()
            }
        }
    }
}

impl RawPeer {
    /// A connection built from `builder` with a raw peer on the other end. The raw peer has
    /// already read the connection's hello and sent its own. The connection is tracked, but
    /// not held clean before its close: the raw peer keeps the references it took.
    pub async fn connect(builder: ConnectionBuilder) -> (Connection, RawPeer) {
        /// The connection over `a`, the raw peer over `b`.
        fn over<T: Transport>(builder: ConnectionBuilder, (a, b): (T, T)) -> (Connection, RawEnd) {
            let conn = builder.connect(a);
            let (sink, source) = b.split();
            (conn, RawEnd::Socket(Box::new(sink), Box::new(source)))
        }
        let (conn, end) = match transport_kind() {
            TransportKind::Memory => return Self::connect_through(builder, |t| t).await,
            #[cfg(feature = "byte-stream")]
            TransportKind::Tcp => over(builder, tcp_pair()),
            #[cfg(feature = "ws")]
            TransportKind::Ws => over(builder, ws_pair()),
            #[cfg(all(feature = "sealed", feature = "byte-stream"))]
            TransportKind::Sealed => over(builder, sealed_pair()),
        };
        Self::start(conn, end).await
    }

    /// [`RawPeer::connect`] with the connection's end of the pair wrapped by `wrap` (a
    /// transport that records what the connection does with it).
    pub async fn connect_through<T: Transport>(
        builder: ConnectionBuilder,
        wrap: impl FnOnce(MemoryTransport) -> T,
    ) -> (Connection, RawPeer) {
        in_run();
        let (a, b) = memory::pair();
        let conn = builder.connect(wrap(a));
        Self::start(conn, RawEnd::Memory(b)).await
    }

    /// Registers `conn`, reads its hello and sends ours.
    async fn start(conn: Connection, end: RawEnd) -> (Connection, RawPeer) {
        register(&conn, false);
        let mut raw = RawPeer {
            t: end,
            enc: Encoder::new(),
            dec: Decoder::new(WireLimits::default()),
        };
        match raw.recv().await {
            Frame::Hello(h) => assert_eq!(h.v, 1),
            other => panic!("expected hello, got {other:?}"),
        }
        raw.send(Frame::Hello(raw_hello())).await;
        (conn, raw)
    }

    /// Sends one frame.
    pub async fn send(&mut self, frame: Frame) {
        let bytes = self.enc.encode_to_vec(&frame.to_value());
        assert!(self.t.send(bytes.into()).await, "send");
    }

    /// Sends one frame; false once the connection no longer reads (it shut down).
    pub async fn try_send(&mut self, frame: Frame) -> bool {
        let bytes = self.enc.encode_to_vec(&frame.to_value());
        self.t.send(bytes.into()).await
    }

    /// Sends raw bytes (hostile input).
    pub async fn send_bytes(&mut self, bytes: Vec<u8>) {
        let _ = self.t.send(bytes.into()).await;
    }

    /// The next frame (fails the test after 60 s).
    pub async fn recv(&mut self) -> Frame {
        self.try_recv().await.expect("connection closed")
    }

    /// The next frame, or `None` if the connection closed its transport.
    pub async fn try_recv(&mut self) -> Option<Frame> {
        self.recv_within(Duration::from_secs(60))
            .await
            .expect("timed out waiting for a frame")
    }

    /// The next frame within `d`: `Err` on timeout, `Ok(None)` if the transport closed.
    pub async fn recv_within(
        &mut self,
        d: Duration,
    ) -> Result<Option<Frame>, tokio::time::error::Elapsed> {
        let bytes = tokio::time::timeout(d, self.t.recv()).await?;
        Ok(bytes.map(|b| self.dec.decode_frame(&b).expect("valid frame")))
    }

    /// Sends a call and returns the result frame for it (skipping nothing else).
    pub async fn call(&mut self, id: u64, target: u32, method: &str, args: Value) -> ResultFrame {
        self.send(call_frame(CapId(target), id, method, args)).await;
        loop {
            match self.recv().await {
                Frame::Result(r) if r.id == CallId(id) => return r,
                Frame::Result(r) => panic!("result for another call: {r:?}"),
                _ => continue,
            }
        }
    }

    /// Bootstraps `name` and returns the cap-id.
    pub async fn bootstrap(&mut self, id: u64, name: &str) -> CapId {
        let r = self
            .call(
                id,
                0,
                "bootstrap",
                Value::Record(Record::new().with("name", name)),
            )
            .await;
        match r.outcome {
            Ok(Value::CapRef(id)) => id,
            other => panic!("bootstrap failed: {other:?}"),
        }
    }
}

/// The error of a result frame.
/// The hello a raw peer sends: version 1, native, no features, 64 MiB.
pub fn raw_hello() -> Hello {
    Hello {
        v: 1,
        mode: "native".into(),
        features: vec![],
        max_bytes: 64 << 20,
        origin: "test://raw".into(),
    }
}

/// A `call` frame of `method` on `target`.
pub fn call_frame(target: CapId, id: u64, method: &str, args: Value) -> Frame {
    Frame::Call(Call {
        id: CallId(id),
        target,
        method: bunite_rpc::wire::Text::copy_from(method),
        args,
        meta: None,
    })
}

/// The task of [`serve_axum`]: it ends with axum's result.
#[cfg(feature = "axum")]
pub type AxumTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// An axum app served on a loopback port, on a task of its own, until `stop` fires (axum's
/// graceful shutdown): the port's address, `stop`, and the task.
#[cfg(feature = "axum")]
pub async fn serve_axum(
    app: axum::Router,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    AxumTask,
) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(tcp, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    (addr, stop, task)
}

/// A WebSocket upgrade of `/rpc` at `addr` by hand, for raw peers: the request, then the
/// response's head; its status, `None` if the socket failed or ended before it.
pub async fn ws_upgrade_by_hand(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    addr: std::net::SocketAddr,
) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "GET /rpc HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    w.write_all(request.as_bytes()).await.ok()?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        match r.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.strip_prefix("HTTP/1.1 ").and_then(|h| h.get(..3));
    Some(status.and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// The header of a WebSocket client's frame (`first`: FIN and opcode) of `len` payload
/// bytes, masked with a zero key, so that the payload goes as it is: for raw peers that
/// write frames by hand.
pub fn ws_client_header(first: u8, len: usize) -> Vec<u8> {
    let mut out = vec![first];
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 4]);
    out
}

/// `frame` encoded with its 4-byte length prefix, as a byte stream carries it.
pub fn length_prefixed(enc: &mut Encoder, frame: &Frame) -> Vec<u8> {
    let body = enc.encode_to_vec(&frame.to_value());
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Takes one whole length-prefixed frame off the front of `buf`, if there is one.
pub fn take_frame(buf: &mut Vec<u8>, dec: &mut Decoder) -> Option<Frame> {
    let prefix: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let len = u32::from_be_bytes(prefix) as usize;
    let body = buf.get(4..4 + len)?.to_vec();
    buf.drain(..4 + len);
    Some(dec.decode_frame(&body).expect("valid frame"))
}

pub fn err_of(r: ResultFrame) -> WireStatus {
    match r.outcome {
        Err(e) => e,
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

/// Asserts code, message and `details.reason` of a status.
#[track_caller]
pub fn assert_status(s: &Status, code: Code, message: &str, reason: Option<&str>) {
    assert_eq!(s.code, code, "code of {s:?}");
    assert_eq!(s.message, message, "message of {s:?}");
    assert_eq!(s.reason(), reason, "reason of {s:?}");
}

/// Asserts that the peer answered (`Error::Remote`) with this code, message and reason.
#[track_caller]
pub fn assert_remote(e: &Error, code: Code, message: &str, reason: Option<&str>) {
    assert!(e.is_remote(), "expected the peer's answer, got {e:?}");
    assert_status(e.status(), code, message, reason);
}

/// Asserts that this process decided (`Error::Local` of `kind`), with this code, message and
/// reason.
#[track_caller]
pub fn assert_local(e: &Error, kind: LocalError, code: Code, message: &str, reason: Option<&str>) {
    assert_eq!(e.local_kind(), Some(kind), "local kind of {e:?}");
    assert_status(e.status(), code, message, reason);
}

/// Asserts that the connection ended (`Error::Disconnected` with `cause`), with this code,
/// message and reason.
#[track_caller]
pub fn assert_disconnected(
    e: &Error,
    cause: &Disconnect,
    code: Code,
    message: &str,
    reason: Option<&str>,
) {
    assert_eq!(e.disconnect(), Some(cause), "cause of {e:?}");
    assert_status(e.status(), code, message, reason);
}

/// Asserts code, message and `details.reason` of a wire status.
#[track_caller]
pub fn assert_wire(s: &WireStatus, code: &str, message: &str, reason: Option<&str>) {
    assert_eq!(s.code, code, "code of {s:?}");
    assert_eq!(s.message.as_deref(), Some(message), "message of {s:?}");
    assert_eq!(s.reason(), reason, "reason of {s:?}");
}

/// Waits (bounded) until every connection is clean, and fails the test otherwise: only the
/// reserved caps, no pending, active or streaming call, nothing unsent, and no task but its
/// driver (none once it has finished).
pub async fn assert_clean(conns: &[&Connection]) {
    for _ in 0..200 {
        let mut clean = true;
        for c in conns {
            clean &= is_clean(&c.current_stats().await);
        }
        if clean {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for c in conns {
        let stats = c.current_stats().await;
        assert!(is_clean(&stats), "leak: {stats:?}");
    }
}

fn is_clean(s: &Stats) -> bool {
    s.live_caps == 2
        && s.pending_calls == 0
        && s.active_calls == 0
        && s.server_streams == 0
        && s.client_streams == 0
        && s.unsent_bytes == 0
        && s.tasks <= 1
}

/// Waits (bounded) for a condition.
pub async fn eventually(mut f: impl FnMut() -> bool) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(f(), "condition never became true");
}

/// Runs `harness` on every input of a fuzz target's corpus (`fuzz/corpus/<target>`, or
/// `$BUNITE_FUZZ_CORPUS/<target>` to replay a fuzzer's working corpus), failing with the
/// input's path if it panics; what each input gave, after checking there are at least
/// `min` of them.
pub fn replay_corpus<T>(
    target: &str,
    min: usize,
    harness: impl Fn(&[u8]) -> T + std::panic::RefUnwindSafe,
) -> Vec<T> {
    let dir = match std::env::var_os("BUNITE_FUZZ_CORPUS") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus")),
    }
    .join(target);
    let mut outcomes = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("the fuzz corpus") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let run = std::panic::catch_unwind(|| harness(&data));
        outcomes.push(run.unwrap_or_else(|_| panic!("corpus input {} fails", path.display())));
    }
    let inputs = outcomes.len();
    assert!(
        inputs >= min,
        "only {inputs} corpus inputs in {}",
        dir.display()
    );
    outcomes
}

/// Captures what a `tracing-subscriber` fmt layer writes (`.with_writer(captured.clone())`),
/// for tests of the spans and their fields.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}
