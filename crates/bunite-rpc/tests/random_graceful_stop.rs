//! Seeded random graceful stops under connection churn: a listener (the byte-stream
//! `TcpMessageListener` in one test, the `WsListener` in another; with feature `tls` both
//! again inside TLS) whose accept loop inserts into a `ConnectionSet`, run through
//! `serve_with_shutdown(accepting, signal, grace)`; the signal fires at a random time, with
//! a random grace, while clients join and leave (`docs/RELIABILITY.md`, "Graceful stops
//! under churn" and "Graceful stops over TLS and axum"). With feature `axum`, an
//! `RpcEndpoint` under `axum::serve` whose route inserts into the set, stopped at the
//! signal by axum's graceful shutdown beside the set's `serve_with_shutdown`, then axum's
//! end, the endpoint's hand-overs and the set awaited (the module docs' `# Stopping`; see
//! [`start_axum`]), under the same checks; in about one case of three every hand-over is
//! slowed (a test hook) so that some are still in flight when axum has stopped.
//!
//! Each case is one seed. Well-behaved clients (`Connection`s) join at random times, before
//! and after the signal, bootstrap the server's cap and make short calls, slow calls (some
//! never end on their own), server streams paced on the server and consumed at a pace (their
//! credit returned as they go), relays (the server's handler bootstraps a cap the client
//! serves and calls it; that handler calls back into the server, on behalf of the server's
//! call, by a fresh bootstrap or a client it holds) and more bootstraps, some awaited in
//! turn, some at once; then they leave, or stay until the server closes them. Some close
//! mid-call. Raw sockets beside them connect (through TLS and the WebSocket upgrade, as
//! the server speaks) and say nothing, stall in the middle of a message, flood the server
//! with calls whose answers they never read, or make calls that never end and drop the
//! socket.
//!
//! What must hold, for every call of a client that did not close itself: a call whose
//! handler ran is answered, or fails with the goaway `peer_closing` the server closes with,
//! and then no earlier than the grace after the signal; one whose handler entered with time
//! to spare before the grace runs out is answered; one that never ends on its own fails with
//! the goaway. A call whose handler never ran was refused `unavailable` `peer_closing` (after
//! the signal), failed with the goaway (after the signal) or locally on the closed
//! connection, or (a client the server never took) with its transport; once a client has
//! seen a refusal, nothing it starts runs. A relay that is answered was served its callbacks.
//! Bootstraps reach the policy only when they run. `serve_with_shutdown` returns the number
//! of connections open at the signal, once every connection has finished (closed, tasks
//! ended), no earlier than the grace when a call that never ends was running, no earlier
//! than `CLOSE_GRACE` when a peer that reads nothing held answers the transport would not
//! take, and no later than grace + `CLOSE_GRACE` + a slack; then the listener accepts nothing,
//! the set is empty, every server connection is idle with no task, and the listener's
//! receive and send budgets are whole; and no connection joins the server after it (once
//! every peer has gone). Then the harness's checks (no task left).
//!
//! `BUNITE_OPS_SEEDS=N` runs seeds `0..N` (or `A..B`) instead of [`CI_SEEDS`];
//! `BUNITE_OPS_SEED=S` runs seed S alone (a failing case prints its seed).
#![cfg(all(feature = "ws", feature = "byte-stream"))]

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bunite_rpc::connection::CLOSE_GRACE;
use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::byte_stream::TcpMessageListener;
use bunite_rpc::transport::ws::{self, WsConnector, WsListener};
use bunite_rpc::transport::{ByteBudget, ListenerConfig};
use bunite_rpc::wire::{CapId, Encoder, Frame, Hello};
use bunite_rpc::{
    CallContext, CapDef, CapImpl, Client, Code, Connection, ConnectionBuilder, ConnectionSet,
    Disconnect, Error, LocalError, MethodDef, Policy, Record, Status, Value,
};
use common::deployment::{connect_raw, dial, framed, Kind};
use common::seeded::{each_seed, Rng};
use common::*;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout, Instant};

/// Seeds of a plain run, per test (a case takes one to two seconds, six or so with a flood).
const CI_SEEDS: u64 = 6;

/// Time a handler that entered before the grace ran out is given beyond what it sleeps to
/// get its answer out: a call that would end this long before the grace must be answered.
const MARGIN: Duration = Duration::from_millis(400);

/// What the stop may take beyond the grace and `CLOSE_GRACE`, however loaded the machine.
const SLACK: Duration = Duration::from_secs(4);

/// How long anything that must happen may take.
const LIVENESS: Duration = Duration::from_secs(60);

/// How long a whole case may take.
const CASE_BOUND: Duration = Duration::from_secs(120);

/// `slow`'s time for a call that waits until it is cancelled.
const FOREVER: i64 = -1;
/// Added to a relay's tag for its callback's (tags stay within 32 bits, which the codec
/// keeps as integers).
const CALLBACK: i64 = 1 << 24;
/// Added to the tags of the raw peers' calls.
const RAW: i64 = 1 << 25;

/// A flood: calls whose answers (as long) the peer never reads, 8 MiB in all, twice what
/// a socket and its peer's take (about 4 MiB on loopback, `tcp_wmem`'s bound the most of
/// it), then a `quick` tagged [`FLOOD_LAST`].
const FLOOD_CALLS: usize = 128;
const FLOOD_SIZE: usize = 64 * 1024;
const FLOOD_LAST: i64 = RAW | 0xffff;
/// Bytes of a flood's answers that wait to be sent at the signal, once all were answered,
/// past which its goaway cannot be delivered before `CLOSE_GRACE`: its peer reads nothing.
const FLOOD_HELD: usize = 512 * 1024;

#[test]
fn random_graceful_stops_of_a_tcp_listener_under_churn() {
    run_seeds(
        Kind::Tcp,
        "random_graceful_stops_of_a_tcp_listener_under_churn",
    );
}

#[test]
fn random_graceful_stops_of_a_ws_listener_under_churn() {
    run_seeds(
        Kind::Ws,
        "random_graceful_stops_of_a_ws_listener_under_churn",
    );
}

#[cfg(feature = "tls")]
#[test]
fn random_graceful_stops_of_a_tls_byte_stream_listener_under_churn() {
    run_seeds(
        Kind::Tls,
        "random_graceful_stops_of_a_tls_byte_stream_listener_under_churn",
    );
}

#[cfg(feature = "tls")]
#[test]
fn random_graceful_stops_of_a_wss_listener_under_churn() {
    run_seeds(
        Kind::Wss,
        "random_graceful_stops_of_a_wss_listener_under_churn",
    );
}

#[cfg(feature = "axum")]
#[test]
fn random_graceful_stops_of_an_axum_endpoint_under_churn() {
    run_seeds(
        Kind::Axum,
        "random_graceful_stops_of_an_axum_endpoint_under_churn",
    );
}

/// What the cases of a run reached, summed: the reach checks.
#[derive(Debug, Default)]
struct Reach {
    /// Calls refused `peer_closing`.
    refused: AtomicUsize,
    /// Calls whose handler ran that the grace cut off.
    cut: AtomicUsize,
    /// Calls answered whose handler entered before the signal and ended after it.
    answered_across: AtomicUsize,
    /// Callbacks served after the signal for a relay that was answered.
    callbacks_after: AtomicUsize,
    /// Stops held by a flood the peer never read.
    floods_held: AtomicUsize,
    /// Connections open at the signal, over all cases.
    open: AtomicUsize,
    /// axum's hand-overs still in flight (slowed by the test hook) when axum had stopped.
    handovers_after_axum: AtomicUsize,
}

fn run_seeds(kind: Kind, test: &'static str) {
    let reach = Arc::new(Reach::default());
    let seeds = each_seed(test, CI_SEEDS, CASE_BOUND, run, |seed| {
        let reach = Arc::clone(&reach);
        async move { case(kind, seed, &reach).await }
    });
    eprintln!("{test}: {seeds} seeds, {reach:?}");
    let n = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    if seeds >= CI_SEEDS as usize {
        assert!(n(&reach.refused) > 0, "no call was refused: {reach:?}");
        assert!(n(&reach.cut) > 0, "no call was cut off: {reach:?}");
        assert!(n(&reach.open) > 0, "no connection was open: {reach:?}");
    }
    if seeds >= 40 {
        assert!(n(&reach.callbacks_after) > 0, "{reach:?}");
        assert!(n(&reach.answered_across) > 0, "{reach:?}");
        assert!(n(&reach.floods_held) > 0, "{reach:?}");
        #[cfg(feature = "axum")]
        if kind == Kind::Axum {
            let late = n(&reach.handovers_after_axum);
            assert!(late > 0, "no hand-over in flight after axum: {reach:?}");
        }
    }
}

// ---- What a case draws ----

#[derive(Debug)]
struct Setup {
    signal_at: Duration,
    grace: Duration,
    clients: Vec<Plan>,
    raws: Vec<RawPlan>,
}

/// A well-behaved client's plan.
#[derive(Debug, Clone)]
struct Plan {
    join: Duration,
    ops: Vec<Op>,
    /// Closes once its operations are done (else waits for the server to close it).
    leave: bool,
    /// Closes itself at this time, whatever is in progress.
    abrupt: Option<Duration>,
}

#[derive(Debug, Clone)]
struct Op {
    pause: Duration,
    /// Awaited before the next (else it runs beside them).
    wait: bool,
    what: What,
}

#[derive(Debug, Clone, Copy)]
enum What {
    Quick,
    /// A handler that sleeps `ms` ([`FOREVER`]: until cancelled).
    Slow {
        ms: i64,
    },
    /// The server sleeps `pre`, calls the client back (through a fresh bootstrap of the
    /// client's cap, whose handler calls the server back through a fresh bootstrap or the
    /// client it holds), sleeps `post`.
    Relay {
        pre: i64,
        post: i64,
        fresh: bool,
    },
    /// `n` values, `pace` ms apart on the server, consumed `consume` ms apart.
    Stream {
        n: i64,
        pace: i64,
        consume: u64,
    },
    Bootstrap,
}

#[derive(Debug, Clone, Copy)]
enum RawPlan {
    /// Connects (and handshakes), sends its hello or not, then nothing; never reads.
    Silent { at: Duration, hello: bool },
    /// Sends its hello and part of a call, then nothing; never reads.
    Stall { at: Duration, cut: usize },
    /// Sends its hello, [`FLOOD_CALLS`] echoes of [`FLOOD_SIZE`] and a `quick` tagged
    /// [`FLOOD_LAST`]; never reads.
    Flood { at: Duration },
    /// Sends its hello and calls that never end, then drops its socket after `after`.
    Abrupt {
        at: Duration,
        calls: i64,
        after: Duration,
    },
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn draw(rng: &mut Rng) -> Setup {
    let grace = ms([300, 600, 1000][rng.below(3) as usize]);
    let signal_at = ms(100 + rng.below(700));
    let g = grace.as_millis() as u64;
    let what = |rng: &mut Rng| match rng.below(8) {
        0 | 1 => What::Quick,
        2 | 3 => What::Slow {
            ms: match rng.below(4) {
                0 | 1 => rng.below(g / 2) as i64,
                2 => rng.below(g * 3 / 2) as i64,
                _ => FOREVER,
            },
        },
        4 | 5 => What::Relay {
            pre: rng.below(g / 2) as i64,
            post: rng.below(g / 4) as i64,
            fresh: rng.chance(50),
        },
        6 => What::Stream {
            n: 1 + rng.below(24) as i64,
            pace: rng.below(20) as i64,
            consume: rng.below(15),
        },
        _ => What::Bootstrap,
    };
    let clients = (0..2 + rng.below(4))
        .map(|_| Plan {
            join: ms(rng.below(signal_at.as_millis() as u64 + 400)),
            ops: (0..1 + rng.below(6))
                .map(|_| Op {
                    pause: ms(rng.below(150)),
                    wait: rng.chance(40),
                    what: what(rng),
                })
                .collect(),
            leave: rng.chance(50),
            abrupt: rng
                .chance(15)
                .then(|| ms(rng.below(signal_at.as_millis() as u64 + g))),
        })
        .collect();
    let mut raws: Vec<RawPlan> = (0..rng.below(4))
        .map(|_| {
            let at = ms(rng.below(signal_at.as_millis() as u64 + 200));
            match rng.below(3) {
                0 => RawPlan::Silent {
                    at,
                    hello: rng.chance(50),
                },
                1 => RawPlan::Stall {
                    at,
                    cut: 1 + rng.below(40) as usize,
                },
                _ => RawPlan::Abrupt {
                    at,
                    calls: 1 + rng.below(3) as i64,
                    after: ms(rng.below(g * 2)),
                },
            }
        })
        .collect();
    if rng.chance(20) {
        raws.push(RawPlan::Flood {
            at: ms(rng.below(signal_at.as_millis() as u64)),
        });
    }
    Setup {
        signal_at,
        grace,
        clients,
        raws,
    }
}

// ---- The server ----

/// What the server's handlers and policy saw.
#[derive(Default)]
struct Seen {
    /// When each tagged handler entered (its closure ran, as the driver dispatched it).
    entries: Mutex<HashMap<i64, Instant>>,
    /// Bootstraps of `test.stop` that reached the policy.
    policy: AtomicUsize,
}

impl Seen {
    fn enter(&self, tag: i64) {
        let now = Instant::now();
        let first = self.entries.lock().unwrap().insert(tag, now).is_none();
        assert!(first, "the handler of tag {tag:#x} ran twice");
    }

    fn entered(&self, tag: i64) -> Option<Instant> {
        self.entries.lock().unwrap().get(&tag).copied()
    }
}

fn int(args: &Value, key: &str) -> i64 {
    args.as_record()
        .and_then(|r| r.get(key))
        .and_then(Value::as_integer)
        .map_or(0, |n| n as i64)
}

fn stop_def(name: &str) -> Arc<CapDef> {
    CapDef::builder(name)
        .method(MethodDef::call("quick"))
        .method(MethodDef::call("slow"))
        .method(MethodDef::call("relay"))
        .method(MethodDef::call("echo"))
        .method(MethodDef::stream("ticks").initial_credit(8))
        .build()
}

fn back_def() -> Arc<CapDef> {
    CapDef::builder("test.back")
        .method(MethodDef::call("ping"))
        .build()
}

fn status_of(e: Error) -> Status {
    e.into_status()
}

/// The server's cap (served as `test.stop` to clients, `test.raw` to raw peers).
fn stop_impl(seen: &Arc<Seen>) -> Arc<dyn CapImpl> {
    let (s1, s2, s3, s4) = (seen.clone(), seen.clone(), seen.clone(), seen.clone());
    DynCap::new()
        .call("quick", move |args, _| {
            let tag = int(&args, "tag");
            s1.enter(tag);
            async move { Ok(Value::from(tag)) }
        })
        .call("slow", move |args, ctx: CallContext| {
            let (tag, ms) = (int(&args, "tag"), int(&args, "ms"));
            s2.enter(tag);
            async move {
                match ms {
                    FOREVER => ctx.cancelled().await,
                    ms => sleep(Duration::from_millis(ms as u64)).await,
                }
                Ok(Value::from(tag))
            }
        })
        .call("relay", move |args, ctx: CallContext| {
            let tag = int(&args, "tag");
            let (pre, post, fresh) = (int(&args, "pre"), int(&args, "post"), int(&args, "fresh"));
            s3.enter(tag);
            async move {
                sleep(Duration::from_millis(pre as u64)).await;
                let back = ctx
                    .connection()
                    .bootstrap(&back_def())
                    .await
                    .map_err(status_of)?;
                let args = Record::new()
                    .with("tag", tag + CALLBACK)
                    .with("fresh", fresh);
                let called = back
                    .call_value("ping", Value::Record(args))
                    .await
                    .map_err(status_of)?;
                sleep(Duration::from_millis(post as u64)).await;
                Ok(Value::Record(
                    Record::new().with("tag", tag).with("called", called),
                ))
            }
        })
        .call("echo", |args, _| async move { Ok(args) })
        .stream("ticks", move |args, _| {
            let (tag, n, pace) = (int(&args, "tag"), int(&args, "n"), int(&args, "pace"));
            s4.enter(tag);
            let pace = Duration::from_millis(pace as u64);
            Ok(futures::stream::unfold(0i64, move |i| async move {
                if i == n {
                    return None;
                }
                sleep(pace).await;
                Some((Ok(Value::from(i)), i + 1))
            })
            .boxed())
        })
        .build()
}

fn server_builder(seen: &Arc<Seen>, imp: &Arc<dyn CapImpl>) -> ConnectionBuilder {
    let counted = seen.clone();
    Connection::builder()
        .policy(Policy::new(move |name, _| {
            if name == "test.stop" {
                counted.policy.fetch_add(1, Ordering::SeqCst);
            }
            true
        }))
        .serve(stop_def("test.stop"), imp.clone())
        .serve(stop_def("test.raw"), imp.clone())
}

/// A listener of the byte stream or WebSocket (plain or inside TLS), owned by the accept
/// loop (dropped with it).
enum Listener {
    Tcp(TcpMessageListener),
    Ws(WsListener),
}

impl Listener {
    async fn bind(kind: Kind, config: ListenerConfig) -> Listener {
        #[cfg(feature = "tls")]
        let config = match kind.tls() {
            true => config.tls(common::tls::server()),
            false => config,
        };
        match kind.ws() {
            false => Listener::Tcp(
                TcpMessageListener::bind("127.0.0.1:0", config)
                    .await
                    .unwrap(),
            ),
            true => Listener::Ws(
                WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config)
                    .await
                    .unwrap(),
            ),
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Listener::Tcp(l) => l.local_addr().unwrap(),
            Listener::Ws(l) => l.local_addr().unwrap(),
        }
    }

    /// The next connection's transport; `None` once the listener failed.
    async fn accept(&self) -> Option<Box<dyn FnOnce(ConnectionBuilder) -> Connection + Send>> {
        match self {
            Listener::Tcp(l) => {
                let (t, _) = l.accept().await.ok()?;
                Some(Box::new(move |b| tracked_with(b, t)))
            }
            Listener::Ws(l) => {
                let t = l.accept().await.ok()?.transport;
                Some(Box::new(move |b| tracked_with(b, t)))
            }
        }
    }
}

/// What the server does with each connection it takes: the set, the case's list, the count
/// of those open.
type Take = Arc<dyn Fn(Connection) + Send + Sync>;

/// The stop's task: the count `serve_with_shutdown` returned, and when the stop was over.
type Stopping = JoinHandle<(usize, Instant)>;

/// Serves a listener of `kind` (not axum) through `serve_with_shutdown`: its accept loop
/// hands every connection, served by `builder`, to `take`.
async fn start_listener(
    kind: Kind,
    config: ListenerConfig,
    builder: impl Fn() -> ConnectionBuilder + Send + 'static,
    take: Take,
    set: ConnectionSet,
    signal: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> (SocketAddr, Stopping) {
    let listener = Listener::bind(kind, config).await;
    let addr = listener.addr();
    let accepting = async move {
        while let Some(connect) = listener.accept().await {
            take(connect(builder()));
        }
    };
    let stopping = tokio::spawn(async move {
        let open = set.serve_with_shutdown(accepting, signal, grace).await;
        (open, Instant::now())
    });
    (addr, stopping)
}

/// Serves an axum `RpcEndpoint` at `/rpc` under `axum::serve`, whose route hands every
/// connection, served by `builder`, to `take`; stopped as the endpoint's module docs say
/// (`# Stopping`): at the signal, axum's graceful shutdown (no connection accepted, HTTP
/// connections finished, upgrades handed over) and `serve_with_shutdown` of the set (the
/// connections handed over drain), whose accept loop is axum's serving; then axum's end
/// awaited, then the endpoint's `handed_over` (every upgrade axum answered has reached the
/// route, so the set), and the set's `closed` again for what axum handed over as it stopped
/// (drained at once as it joined).
///
/// Every hand-over sleeps `axum.hold` (the endpoint's test hook) between hyper's hand-over
/// and the route, so that those axum answered just before or as it stopped are still in
/// flight when it has: the window `handed_over` closes, made wide.
#[cfg(feature = "axum")]
async fn start_axum(
    config: ListenerConfig,
    builder: impl Fn() -> ConnectionBuilder + Clone + Send + Sync + 'static,
    take: Take,
    set: ConnectionSet,
    signal: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    axum: Axum,
) -> (SocketAddr, Stopping) {
    use bunite_rpc::transport::axum::RpcEndpoint;
    use futures::FutureExt;
    let Axum { hold, late } = axum;
    let endpoint = RpcEndpoint::new(config);
    endpoint.delay_handovers(hold);
    let rpc = endpoint.clone().route(move |up| {
        let (builder, take) = (builder.clone(), take.clone());
        async move { take(tracked_with(builder(), up.transport)) }
    });
    let app = axum::Router::new().route(ws::DEFAULT_PATH, rpc);
    let (addr, stop_http, http) = serve_axum(app).await;
    // axum's task ends only after its graceful shutdown began (or if it failed).
    let http = async move { http.await.unwrap().unwrap() }.boxed().shared();
    let stopping = tokio::spawn(async move {
        let signal = async move {
            signal.await;
            let _ = stop_http.send(());
        };
        let open = set.serve_with_shutdown(http.clone(), signal, grace).await;
        if timeout(LIVENESS, http).await.is_err() {
            panic!("axum did not stop");
        }
        late.fetch_add(endpoint.handovers(), Ordering::SeqCst);
        if timeout(LIVENESS, endpoint.handed_over()).await.is_err() {
            panic!("a hand-over of the endpoint never ended");
        }
        set.closed().await;
        assert_eq!(
            endpoint.handovers(),
            0,
            "a hand-over began after axum stopped"
        );
        (open, Instant::now())
    });
    (addr, stopping)
}

/// How an axum case stops ([`start_axum`]).
#[cfg(feature = "axum")]
struct Axum {
    /// How long each hand-over sleeps between hyper and the route: zero in about two
    /// cases of three, else 50-200 ms.
    hold: Duration,
    /// Counts the hand-overs in flight once axum had stopped.
    late: Arc<AtomicUsize>,
}

/// Seeds the axum cases' own draws (the hold), apart from the case's.
#[cfg(feature = "axum")]
const HOLD_DRAWS: u64 = 0x686f_6c64;

/// What the signal saw as it completed.
#[derive(Debug, Default, Clone, Copy)]
struct AtSignal {
    /// Server connections whose close handler had not run.
    open: usize,
    /// A flood's connection held at least [`FLOOD_HELD`] unsent bytes.
    flood_held: bool,
}

// ---- A case ----

async fn case(kind: Kind, seed: u64, reach: &Reach) {
    let mut rng = Rng(seed);
    let setup = draw(&mut rng);
    let grace = setup.grace;
    let seen = Arc::new(Seen::default());
    let imp = stop_impl(&seen);
    let receive_budget = ByteBudget::new(64 << 20);
    let send_budget = ByteBudget::new(64 << 20);
    let config = ListenerConfig::default()
        .receive_budget(receive_budget.clone())
        .send_budget(send_budget.clone());

    // The server: every connection it takes goes into the set, and into `conns`.
    let set = ConnectionSet::new();
    let conns: Arc<Mutex<Vec<Connection>>> = Arc::default();
    let open_now = Arc::new(AtomicUsize::new(0));
    let take: Take = {
        let (set, conns, open_now) = (set.clone(), conns.clone(), open_now.clone());
        Arc::new(move |conn: Connection| {
            open_now.fetch_add(1, Ordering::SeqCst);
            set.insert(&conn);
            let open_now = open_now.clone();
            conn.on_close(move || {
                open_now.fetch_sub(1, Ordering::SeqCst);
            });
            conns.lock().unwrap().push(conn);
        })
    };
    let builder = {
        let (seen, imp) = (seen.clone(), imp.clone());
        move || server_builder(&seen, &imp)
    };
    let (fire, fired) = oneshot::channel::<()>();
    let at_signal: Arc<Mutex<Option<AtSignal>>> = Arc::default();
    let signal = {
        let (conns, open_now, at_signal) = (conns.clone(), open_now.clone(), at_signal.clone());
        let seen = seen.clone();
        async move {
            let _ = fired.await;
            let listed = conns.lock().unwrap().clone();
            let mut flood_held = false;
            for conn in &listed {
                let flood = conn.peer_hello().is_some_and(|h| h.origin == "raw-flood");
                // Every call of the flood answered (its last one ran, after the others,
                // before the drain can come): more than its transport can take.
                let answered = seen.entered(FLOOD_LAST).is_some();
                if flood && answered && conn.current_stats().await.unsent_bytes >= FLOOD_HELD {
                    flood_held = true;
                }
            }
            // Last, with nothing awaited after it: serve_with_shutdown counts at once.
            let open = open_now.load(Ordering::SeqCst);
            *at_signal.lock().unwrap() = Some(AtSignal { open, flood_held });
        }
    };
    // axum's hand-overs in flight once axum had stopped.
    let late = Arc::new(AtomicUsize::new(0));
    let (addr, stopping) = match kind {
        #[cfg(feature = "axum")]
        Kind::Axum => {
            // From its own stream of draws, so that the case's draws are those of the
            // other transports.
            let mut draws = Rng(seed ^ HOLD_DRAWS);
            let held = draws.below(3) == 0;
            let hold = Duration::from_millis(if held { 50 + draws.below(151) } else { 0 });
            let axum = Axum {
                hold,
                late: late.clone(),
            };
            start_axum(config, builder, take, set.clone(), signal, grace, axum).await
        }
        _ => start_listener(kind, config, builder, take, set.clone(), signal, grace).await,
    };

    let start = Instant::now();
    let (release, released) = watch::channel(false);
    let raws: Vec<JoinHandle<()>> = setup
        .raws
        .iter()
        .enumerate()
        .map(|(i, &plan)| tokio::spawn(raw_peer(kind, addr, start, i, plan, released.clone())))
        .collect();
    let clients: Vec<JoinHandle<Report>> = setup
        .clients
        .iter()
        .enumerate()
        .map(|(i, plan)| tokio::spawn(client(kind, addr, start, i, plan.clone())))
        .collect();

    sleep_until(start + setup.signal_at).await;
    let t_sig = Instant::now();
    fire.send(()).unwrap();
    let (open, returned) = match timeout(LIVENESS, stopping).await {
        Ok(joined) => joined.unwrap(),
        Err(_) => panic!("seed {seed}: the stop did not return: {setup:?}"),
    };
    let took = returned - t_sig;

    // At its return: every connection finished, the set empty, the listener gone, the
    // budgets whole.
    let server_conns = conns.lock().unwrap().clone();
    for (i, conn) in server_conns.iter().enumerate() {
        assert!(
            futures::FutureExt::now_or_never(conn.closed()).is_some(),
            "seed {seed}: the stop returned after {took:?}, server connection {i} not finished: \
             {:?}",
            conn.stats()
        );
        let stats = conn.stats();
        assert!(
            stats.is_idle(),
            "seed {seed}: server connection {i}: {stats:?}"
        );
    }
    assert!(set.is_empty(), "seed {seed}: {} left in the set", set.len());
    assert_eq!(
        receive_budget.available(),
        receive_budget.limit(),
        "seed {seed}: the receive budget is not whole"
    );
    assert_eq!(
        send_budget.available(),
        send_budget.limit(),
        "seed {seed}: the send budget is not whole"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "seed {seed}: the listener still accepts"
    );
    let at_signal = at_signal.lock().unwrap().expect("the signal completed");
    assert!(
        took <= grace + CLOSE_GRACE + SLACK,
        "seed {seed}: the stop took {took:?} with a grace of {grace:?}"
    );
    match std::env::var("BUNITE_TEST_RUNTIME").as_deref() {
        // One thread: nothing ran between the signal's count and the stop's.
        Ok("current") | Err(_) => assert_eq!(open, at_signal.open, "seed {seed}"),
        // Connections may close on their own between the two, none may join.
        _ => assert!(
            open <= at_signal.open,
            "seed {seed}: {open} > {at_signal:?}"
        ),
    }
    if at_signal.flood_held {
        assert!(
            took >= CLOSE_GRACE,
            "seed {seed}: the stop took {took:?}, a flood's goaway still unsent"
        );
        reach.floods_held.fetch_add(1, Ordering::Relaxed);
    }
    reach.open.fetch_add(open, Ordering::Relaxed);
    let late = late.load(Ordering::SeqCst);
    reach
        .handovers_after_axum
        .fetch_add(late, Ordering::Relaxed);

    // The peers go; every client ends, its connection closed.
    release.send(true).unwrap();
    for (i, raw) in raws.into_iter().enumerate() {
        match timeout(LIVENESS, raw).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("seed {seed}: raw peer {i} did not end"),
        }
    }
    let mut reports = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        match timeout(LIVENESS, client).await {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!(
                "seed {seed}: client {i} did not end: {:?}",
                setup.clients[i]
            ),
        }
    }
    // Nothing joined once the stop was over (an axum upgrade handed over late would).
    let joined = conns.lock().unwrap().len();
    assert_eq!(
        joined,
        server_conns.len(),
        "seed {seed}: a connection joined the server after the stop returned"
    );

    let check = Check {
        seed,
        t_sig,
        grace,
        seen: &seen,
        reach,
    };
    // Connections that had a call running at the signal that never ends on its own: open
    // until the grace, so counted.
    let mut held_open = 0;
    let mut known_bootstraps = 0;
    let mut unknown_bootstraps = 0;
    for (i, report) in reports.iter().enumerate() {
        let plan = &setup.clients[i];
        let c = check.client(i, plan, report);
        held_open += c.held_open as usize;
        known_bootstraps += c.bootstraps_ran;
        unknown_bootstraps += c.bootstraps_unknown;
    }
    assert!(
        open >= held_open,
        "seed {seed}: {open} open at the signal, {held_open} held by calls"
    );
    if held_open > 0 {
        assert!(
            took >= grace,
            "seed {seed}: the stop took {took:?}, calls running at the signal never end"
        );
    }
    let policy = seen.policy.load(Ordering::SeqCst);
    assert!(
        policy >= known_bootstraps && policy <= known_bootstraps + unknown_bootstraps,
        "seed {seed}: {policy} bootstraps reached the policy, {known_bootstraps} ran \
         (and {unknown_bootstraps} unknown)"
    );
}

// ---- The checks of a client's calls ----

struct Check<'a> {
    seed: u64,
    t_sig: Instant,
    grace: Duration,
    seen: &'a Seen,
    reach: &'a Reach,
}

/// What a client's checks found.
struct ClientCheck {
    /// A call that never ends on its own ran before the signal.
    held_open: bool,
    /// Bootstraps of `test.stop` that ran (answered), callbacks' included.
    bootstraps_ran: usize,
    /// Bootstraps whose outcome is unknown (the client closed, or a callback's caller
    /// was cut off).
    bootstraps_unknown: usize,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Answered,
    /// `unavailable` `peer_closing`, from the server's drain: never ran.
    Refused,
    /// The server's goaway `peer_closing` came first.
    Goaway,
    /// Failed locally on a closed connection: nothing sent.
    Closed,
    /// The client closed itself.
    OwnClose,
    /// Its transport ended (a client the server never took).
    Transport,
}

fn class(e: &Error) -> Option<Class> {
    let s = e.status();
    if e.is_remote() {
        let refused = s.code == Code::Unavailable
            && s.message == "draining: no new calls"
            && s.reason() == Some("peer_closing");
        return refused.then_some(Class::Refused);
    }
    if e.local_kind() == Some(LocalError::Closed) {
        let closed = s.code == Code::Unavailable && s.message == "connection closed";
        return (closed && s.reason().is_none()).then_some(Class::Closed);
    }
    match e.disconnect()? {
        Disconnect::Goaway { reason, error } => {
            let goaway = reason.as_deref() == Some("peer_closing")
                && error.is_none()
                && s.code == Code::Unavailable
                && s.message == "peer_closing"
                && s.reason() == Some("goaway");
            goaway.then_some(Class::Goaway)
        }
        Disconnect::LocalClose => Some(Class::OwnClose),
        Disconnect::Eof | Disconnect::Transport { .. } => {
            (s.code == Code::Unavailable).then_some(Class::Transport)
        }
        _ => None,
    }
}

impl Check<'_> {
    fn client(&self, i: usize, plan: &Plan, report: &Report) -> ClientCheck {
        let seed = self.seed;
        let ctx = |what: &dyn std::fmt::Debug| {
            format!(
                "seed {seed}: client {i} ({plan:?}, server hello {}): {what:?}",
                report.hello
            )
        };
        if let Some(failed) = report.connect_failed {
            // The listener was open until the signal: only the stop refuses a connection.
            assert!(failed >= self.t_sig, "{}", ctx(&"connect failed early"));
        }
        let mut out = ClientCheck {
            held_open: false,
            bootstraps_ran: report.callback_bootstraps_ok.load(Ordering::SeqCst),
            bootstraps_unknown: report.callback_bootstraps_started.load(Ordering::SeqCst)
                - report.callback_bootstraps_ok.load(Ordering::SeqCst),
        };
        let first_refusal = report
            .done
            .iter()
            .filter(|d| matches!(d.outcome, Err(ref e) if class(e) == Some(Class::Refused)))
            .map(|d| d.received)
            .min();
        for done in &report.done {
            let class = match &done.outcome {
                Ok(_) => Class::Answered,
                Err(e) => class(e).unwrap_or_else(|| panic!("{}", ctx(&(done, "unexpected")))),
            };
            let entered = done.tag.and_then(|t| self.seen.entered(t));
            match class {
                Class::OwnClose => assert!(plan.abrupt.is_some(), "{}", ctx(done)),
                Class::Transport => assert!(!report.hello, "{}", ctx(done)),
                Class::Refused | Class::Goaway => {
                    assert!(done.received >= self.t_sig, "{}", ctx(&(done, "before")))
                }
                Class::Answered | Class::Closed => {}
            }
            if class == Class::Refused {
                self.reach.refused.fetch_add(1, Ordering::Relaxed);
            }
            // Nothing started after a refusal runs.
            if first_refusal.is_some_and(|r| done.issued > r) {
                assert!(
                    entered.is_none()
                        && matches!(
                            class,
                            Class::Refused | Class::Goaway | Class::Closed | Class::OwnClose
                        ),
                    "{}",
                    ctx(&(done, "after a refusal"))
                );
            }
            if let What::Bootstrap = done.what {
                match class {
                    Class::Answered => out.bootstraps_ran += 1,
                    Class::OwnClose => out.bootstraps_unknown += 1,
                    _ => {}
                }
                continue;
            }
            let Some(entered) = entered else {
                // Never ran: never answered.
                assert!(
                    class != Class::Answered,
                    "{}",
                    ctx(&(done, "answered unrun"))
                );
                continue;
            };
            assert!(
                matches!(class, Class::Answered | Class::Goaway | Class::OwnClose),
                "{}",
                ctx(&(done, "ran, then"))
            );
            if class == Class::Goaway {
                // Only the grace closes a connection with a handler running.
                assert!(
                    done.received >= self.t_sig + self.grace,
                    "{}",
                    ctx(&(done, "cut off before the grace"))
                );
                self.reach.cut.fetch_add(1, Ordering::Relaxed);
            }
            if class == Class::Answered {
                self.answered(done, entered, &ctx);
            }
            if plan.abrupt.is_some() {
                continue;
            }
            // The grace runs from the drain, after the signal and after the handler entered.
            let grace_ends = entered.max(self.t_sig) + self.grace;
            match planned(done.what) {
                None => {
                    assert_eq!(class, Class::Goaway, "{}", ctx(done));
                    out.held_open |= entered < self.t_sig;
                }
                Some(planned) if entered + planned + MARGIN <= grace_ends => {
                    assert_eq!(class, Class::Answered, "{}", ctx(&(done, entered)))
                }
                Some(_) => {}
            }
        }
        out
    }

    /// The answer of a call that ran: what its method returns.
    fn answered(
        &self,
        done: &Done,
        entered: Instant,
        ctx: &dyn Fn(&dyn std::fmt::Debug) -> String,
    ) {
        let tag = done.tag.unwrap();
        let value = done.outcome.as_ref().unwrap();
        match done.what {
            What::Quick | What::Slow { .. } => {
                assert_eq!(value, &Value::from(tag), "{}", ctx(done))
            }
            What::Relay { .. } => {
                // Its callback was served, as the client's handler's answer shows.
                let called = Record::new()
                    .with("tag", tag)
                    .with("called", Value::from(tag + CALLBACK));
                assert_eq!(value, &Value::Record(called), "{}", ctx(done));
                let back = self.seen.entered(tag + CALLBACK).expect("the callback ran");
                if back > self.t_sig {
                    self.reach.callbacks_after.fetch_add(1, Ordering::Relaxed);
                }
            }
            What::Stream { n, .. } => {
                let all: Vec<Value> = (0..n).map(Value::from).collect();
                assert_eq!(value, &Value::Array(all), "{}", ctx(done));
            }
            What::Bootstrap => unreachable!(),
        }
        if entered < self.t_sig && done.received > self.t_sig {
            self.reach.answered_across.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How long a call's handler takes, at least, once entered; `None`: until cancelled.
fn planned(what: What) -> Option<Duration> {
    let ms = |n: i64| Duration::from_millis(n as u64);
    match what {
        What::Quick | What::Bootstrap => Some(Duration::ZERO),
        What::Slow { ms: FOREVER } => None,
        What::Slow { ms: n } => Some(ms(n)),
        What::Relay { pre, post, .. } => Some(ms(pre + post)),
        What::Stream { n, pace, consume } => Some(ms(n * (pace + consume as i64))),
    }
}

// ---- A well-behaved client ----

/// One call, stream or bootstrap of a client, and how it ended.
#[derive(Debug)]
struct Done {
    tag: Option<i64>,
    what: What,
    issued: Instant,
    received: Instant,
    /// A stream's values as an array.
    outcome: Result<Value, Error>,
}

#[derive(Debug, Default)]
struct Report {
    connect_failed: Option<Instant>,
    /// The server's hello came: the server took the connection.
    hello: bool,
    done: Vec<Done>,
    callback_bootstraps_started: Arc<AtomicUsize>,
    callback_bootstraps_ok: Arc<AtomicUsize>,
}

async fn client(kind: Kind, addr: SocketAddr, start: Instant, i: usize, plan: Plan) -> Report {
    let mut report = Report::default();
    sleep_until(start + plan.join).await;
    let Ok(connect) = dial(kind, addr, WsConnector::new()).await else {
        report.connect_failed = Some(Instant::now());
        return report;
    };
    // The cap the server's relays call back: its `ping` calls the server's `quick`, on
    // behalf of the server's call, through a fresh bootstrap or the client held.
    let held: Arc<OnceLock<Client>> = Arc::default();
    let back = {
        let held = held.clone();
        let (started, ok) = (
            report.callback_bootstraps_started.clone(),
            report.callback_bootstraps_ok.clone(),
        );
        DynCap::new()
            .call("ping", move |args, ctx: CallContext| {
                let (held, started, ok) = (held.clone(), started.clone(), ok.clone());
                async move {
                    let stop = match int(&args, "fresh") {
                        0 => held.get().cloned().expect("bootstrapped before any relay"),
                        _ => {
                            started.fetch_add(1, Ordering::SeqCst);
                            let stop = ctx
                                .connection()
                                .bootstrap(&stop_def("test.stop"))
                                .await
                                .map_err(status_of)?;
                            ok.fetch_add(1, Ordering::SeqCst);
                            stop
                        }
                    };
                    let tag = Record::new().with("tag", int(&args, "tag"));
                    stop.call_value("quick", Value::Record(tag))
                        .await
                        .map_err(status_of)
                }
            })
            .build()
    };
    let conn = connect(
        Connection::builder()
            .origin(format!("client-{i}"))
            .serve(back_def(), back),
    );
    let closer = plan.abrupt.map(|at| {
        let conn = conn.clone();
        tokio::spawn(async move {
            sleep_until(start + at).await;
            conn.close();
        })
    });
    let issued = Instant::now();
    let booted = conn.bootstrap(&stop_def("test.stop")).await;
    report.done.push(Done {
        tag: None,
        what: What::Bootstrap,
        issued,
        received: Instant::now(),
        outcome: booted.as_ref().map(|_| Value::Null).map_err(Clone::clone),
    });
    if let Ok(stop) = booted {
        let _ = held.set(stop.clone());
        let mut beside = Vec::new();
        for (n, op) in plan.ops.iter().enumerate() {
            sleep(op.pause).await;
            let tag = ((i as i64) << 8) | n as i64;
            let running = tokio::spawn(op_run(stop.clone(), op.what, tag));
            if op.wait {
                report.done.push(running.await.unwrap());
            } else {
                beside.push(running);
            }
        }
        for running in beside {
            report.done.push(running.await.unwrap());
        }
    }
    report.hello = conn.peer_hello().is_some();
    if plan.leave {
        conn.close();
    }
    // Else the server closes it (at the stop, if not before).
    if timeout(LIVENESS, conn.closed()).await.is_err() {
        panic!("client {i} never closed: {:?}", conn.stats());
    }
    if let Some(closer) = closer {
        closer.abort();
        let _ = closer.await;
    }
    // Held until here: a callback may still use it.
    drop(held);
    report
}

async fn op_run(stop: Client, what: What, tag: i64) -> Done {
    let issued = Instant::now();
    let with = |r: Record| Value::Record(r.with("tag", tag));
    let outcome = match what {
        What::Quick => stop.call_value("quick", with(Record::new())).await,
        What::Slow { ms } => {
            stop.call_value("slow", with(Record::new().with("ms", ms)))
                .await
        }
        What::Relay { pre, post, fresh } => {
            let args = Record::new()
                .with("pre", pre)
                .with("post", post)
                .with("fresh", fresh as i64);
            stop.call_value("relay", with(args)).await
        }
        What::Stream { n, pace, consume } => {
            let args = Record::new().with("n", n).with("pace", pace);
            let mut stream = stop.stream("ticks", with(args));
            let mut values = Vec::new();
            loop {
                match stream.next().await {
                    None => break Ok(Value::Array(values)),
                    Some(Ok(v)) => values.push(v),
                    Some(Err(e)) => break Err(e),
                }
                sleep(Duration::from_millis(consume)).await;
            }
        }
        What::Bootstrap => {
            let conn = stop.connection();
            conn.bootstrap(&stop_def("test.stop"))
                .await
                .map(|_| Value::Null)
        }
    };
    Done {
        tag: (!matches!(what, What::Bootstrap)).then_some(tag),
        what,
        issued,
        received: Instant::now(),
        outcome,
    }
}

// ---- Raw peers ----

/// A frame's bytes on the wire ([`framed`]).
fn frame_bytes(kind: Kind, enc: &mut Encoder, frame: &Frame) -> Vec<u8> {
    framed(kind, &enc.encode_to_vec(&frame.to_value()))
}

fn hello(origin: &str) -> Frame {
    Frame::Hello(Hello {
        origin: origin.into(),
        ..raw_hello()
    })
}

fn tagged(tag: i64, more: Record) -> Value {
    Value::Record(more.with("tag", tag))
}

/// A raw peer: plays its plan, then holds its socket (reading nothing) until released.
async fn raw_peer(
    kind: Kind,
    addr: SocketAddr,
    start: Instant,
    i: usize,
    plan: RawPlan,
    mut released: watch::Receiver<bool>,
) {
    let (RawPlan::Silent { at, .. }
    | RawPlan::Stall { at, .. }
    | RawPlan::Flood { at }
    | RawPlan::Abrupt { at, .. }) = plan;
    sleep_until(start + at).await;
    let Some(Ok((socket_read, mut socket))) = connect_raw(kind, addr).await else {
        return;
    };
    let mut enc = Encoder::new();
    let mut bytes = Vec::new();
    let origin = match plan {
        RawPlan::Flood { .. } => "raw-flood",
        _ => "raw",
    };
    if !matches!(plan, RawPlan::Silent { hello: false, .. }) {
        bytes.extend(frame_bytes(kind, &mut enc, &hello(origin)));
    }
    let boot = Record::new().with("name", "test.raw");
    let bootstrap = call_frame(CapId(0), 1, "bootstrap", Value::Record(boot));
    // The first cap a connection exports is 2 (PROTOCOL §7).
    let raw = CapId(2);
    match plan {
        RawPlan::Silent { .. } => {}
        RawPlan::Stall { cut, .. } => {
            let call = call_frame(
                raw,
                2,
                "quick",
                tagged(RAW | (i as i64) << 8, Record::new()),
            );
            let call = frame_bytes(kind, &mut enc, &call);
            bytes.extend_from_slice(&call[..cut.min(call.len() - 1)]);
        }
        RawPlan::Flood { .. } => {
            bytes.extend(frame_bytes(kind, &mut enc, &bootstrap));
            for id in 0..FLOOD_CALLS as u64 {
                let args = Value::Bin(vec![0x5a; FLOOD_SIZE]);
                bytes.extend(frame_bytes(
                    kind,
                    &mut enc,
                    &call_frame(raw, 2 + id, "echo", args),
                ));
            }
            let last = call_frame(raw, 1_000, "quick", tagged(FLOOD_LAST, Record::new()));
            bytes.extend(frame_bytes(kind, &mut enc, &last));
        }
        RawPlan::Abrupt { calls, .. } => {
            bytes.extend(frame_bytes(kind, &mut enc, &bootstrap));
            for n in 0..calls {
                let args = tagged(RAW | (i as i64) << 8 | n, Record::new().with("ms", FOREVER));
                let call = call_frame(raw, 2 + n as u64, "slow", args);
                bytes.extend(frame_bytes(kind, &mut enc, &call));
            }
        }
    }
    // Fails once the server has closed and stopped lingering.
    let _ = socket.write_all(&bytes).await;
    let _ = socket.flush().await;
    match plan {
        RawPlan::Abrupt { after, .. } => {
            tokio::select! {
                _ = sleep(after) => {}
                _ = released.wait_for(|r| *r) => {}
            }
        }
        _ => {
            let _ = released.wait_for(|r| *r).await;
        }
    }
    drop((socket_read, socket));
}
