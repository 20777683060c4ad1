//! Stopping a server gracefully (`ConnectionSet::serve_with_shutdown`): no more accepted
//! connections, new calls refused, the calls in flight answered, then every connection
//! closed with a goaway (PROTOCOL §11, local close), and what is still running after the
//! grace cancelled.
#![cfg(all(feature = "byte-stream", feature = "ws"))]

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::connection::CLOSE_GRACE;
use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::byte_stream::{self, TcpMessageListener};
use bunite_rpc::transport::ws::{self, WsListener};
use bunite_rpc::transport::ListenerConfig;
use bunite_rpc::wire::{CallId, Frame, Record};
use bunite_rpc::{
    CapDef, CapImpl, Code, Connection, ConnectionSet, Disconnect, LocalError, MethodDef, Value,
};
use common::*;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// A cap whose `pass` waits for `gate` (after notifying `started`), and whose `quick`
/// answers at once.
#[derive(Clone)]
struct Gate {
    def: Arc<CapDef>,
    imp: Arc<dyn CapImpl>,
    started: Arc<Notify>,
    gate: Arc<Notify>,
}

fn gate_cap() -> Gate {
    let (started, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let def = CapDef::builder("test.gate")
        .method(MethodDef::call("pass"))
        .method(MethodDef::call("quick"))
        .build();
    let (s, g) = (started.clone(), gate.clone());
    let imp = DynCap::new()
        .call("pass", move |_, _| {
            let (s, g) = (s.clone(), g.clone());
            async move {
                s.notify_one();
                g.notified().await;
                Ok(Value::from("passed"))
            }
        })
        .call("quick", |_, _| async move { Ok(Value::from("quick")) })
        .build();
    Gate {
        def,
        imp,
        started,
        gate,
    }
}

/// A server connection serving the gate, tracked, in `set`, and sent on `conns`.
fn serve_gate(
    gate: &Gate,
    set: &ConnectionSet,
    conns: &mpsc::UnboundedSender<Connection>,
    transport: impl bunite_rpc::transport::Transport,
) {
    let conn = tracked_with(
        Connection::builder().serve(gate.def.clone(), gate.imp.clone()),
        transport,
    );
    set.insert(&conn);
    let _ = conns.send(conn);
}

/// `set` serving `accepting` on a task until the sender is used (or dropped), then stopping
/// within `grace`; the task answers how many connections were drained.
fn spawn_stop(
    set: &ConnectionSet,
    accepting: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<usize>) {
    let (stop, signal) = oneshot::channel::<()>();
    let set = set.clone();
    let server = tokio::spawn(async move {
        let signal = async {
            let _ = signal.await;
        };
        set.serve_with_shutdown(accepting, signal, grace).await
    });
    (stop, server)
}

/// The scenario over a real listener: `accepting` is its accept loop (serving the gate
/// into `set`), `client` a connection to it, `refused` whether a new connection to it now
/// fails.
async fn stop_while_a_call_runs<R: Future<Output = bool>>(
    gate: Gate,
    set: ConnectionSet,
    mut conns: mpsc::UnboundedReceiver<Connection>,
    accepting: impl Future<Output = ()> + Send + 'static,
    client: Connection,
    refused: impl FnOnce() -> R,
) {
    let (stop, server) = spawn_stop(&set, accepting, Duration::from_secs(60));
    let cap = timeout(WAIT, client.bootstrap(&gate.def))
        .await
        .unwrap()
        .unwrap();
    let running = tokio::spawn({
        let cap = cap.clone();
        async move { cap.call_value("pass", Value::Undefined).await }
    });
    timeout(WAIT, gate.started.notified()).await.unwrap();
    stop.send(()).unwrap();

    // Once the stop has begun, a new call is answered `unavailable` `peer_closing` and
    // never runs (before it began, `quick` is answered).
    let refused_call = timeout(WAIT, async {
        loop {
            match cap.call_value("quick", Value::Undefined).await {
                Ok(v) => assert_eq!(v, Value::from("quick")),
                Err(e) => break e,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the stop began");
    assert_remote(
        &refused_call,
        Code::Unavailable,
        "draining: no new calls",
        Some("peer_closing"),
    );
    // Nothing more is accepted, and the stop waits for the call in flight.
    assert!(refused().await, "the listener still accepts");
    assert!(
        !server.is_finished(),
        "the stop waits for the call in flight"
    );
    assert!(!client.is_closed());

    // The call in flight is answered; then the connection closes with a goaway.
    gate.gate.notify_one();
    let answer = timeout(WAIT, running).await.unwrap().unwrap();
    assert_eq!(answer.unwrap(), Value::from("passed"));
    let open = timeout(WAIT, server).await.unwrap().unwrap();
    assert_eq!(open, 1, "one connection was open when the stop began");
    timeout(WAIT, client.closed()).await.unwrap();
    // After the goaway, a call fails locally as PROTOCOL §9 says, sending nothing.
    let after = cap.call_value("quick", Value::Undefined).await.unwrap_err();
    assert_local(
        &after,
        LocalError::Closed,
        Code::Unavailable,
        "connection closed",
        None,
    );
    drop(cap);
    assert!(set.is_empty());
    let server_conn = conns.try_recv().expect("the server's connection");
    assert!(server_conn.is_closed());
    assert_clean(&[&client, &server_conn]).await;
}

#[test]
fn a_stop_over_tcp_answers_the_call_in_flight_refuses_new_ones_and_accepts_no_more() {
    run(async {
        let gate = gate_cap();
        let listener = TcpMessageListener::bind("127.0.0.1:0", ListenerConfig::default())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let set = ConnectionSet::new();
        let (tx, conns) = mpsc::unbounded_channel();
        let accepting = {
            let (set, g) = (set.clone(), gate.clone());
            async move {
                while let Ok((t, _)) = listener.accept().await {
                    serve_gate(&g, &set, &tx, t);
                }
            }
        };
        let client = tracked(byte_stream::tcp_connect(addr).await.unwrap());
        let refused = || async move { tokio::net::TcpStream::connect(addr).await.is_err() };
        stop_while_a_call_runs(gate, set, conns, accepting, client, refused).await;
    });
}

#[test]
fn a_stop_over_websocket_answers_the_call_in_flight_refuses_new_ones_and_accepts_no_more() {
    run(async {
        let gate = gate_cap();
        let listener = WsListener::bind("127.0.0.1:0", "/rpc").await.unwrap();
        let url = format!("ws://{}/rpc", listener.local_addr().unwrap());
        let set = ConnectionSet::new();
        let (tx, conns) = mpsc::unbounded_channel();
        let accepting = {
            let (set, g) = (set.clone(), gate.clone());
            async move {
                while let Ok(accepted) = listener.accept().await {
                    serve_gate(&g, &set, &tx, accepted.transport);
                }
            }
        };
        let client = tracked(ws::connect(url.as_str()).await.unwrap());
        let refused = || async move { ws::connect(url.as_str()).await.is_err() };
        stop_while_a_call_runs(gate, set, conns, accepting, client, refused).await;
    });
}

/// On the wire: the peer's call in flight gets its result, a new call gets `unavailable`
/// `peer_closing`, then the goaway `peer_closing` comes, and the stream ends.
#[test]
fn the_peer_sees_the_answer_then_the_goaway() {
    run(async {
        let gate = gate_cap();
        let builder = Connection::builder().serve(gate.def.clone(), gate.imp.clone());
        let (server, mut raw) = RawPeer::connect(builder).await;
        let set = ConnectionSet::new();
        set.insert(&server);
        let cap = raw.bootstrap(1, "test.gate").await;
        raw.send(call_frame(cap, 2, "pass", Value::Undefined)).await;
        timeout(WAIT, gate.started.notified()).await.unwrap();
        let (stop, stopping) = spawn_stop(&set, std::future::pending(), WAIT);
        stop.send(()).unwrap();
        // Once the stop has begun, a new call is refused (before, `quick` is answered).
        let mut id = 3;
        let refused = loop {
            let r = raw.call(id, cap.0, "quick", Value::Undefined).await;
            id += 1;
            match r.outcome {
                Ok(v) => assert_eq!(v, Value::from("quick")),
                Err(e) => break e,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_wire(
            &refused,
            "unavailable",
            "draining: no new calls",
            Some("peer_closing"),
        );
        gate.gate.notify_one();
        match raw.recv().await {
            Frame::Result(r) => {
                assert_eq!(r.id, CallId(2));
                assert_eq!(r.outcome, Ok(Value::from("passed")));
            }
            other => panic!("expected the answer, got {other:?}"),
        }
        // A drop of the bootstrapped cap may come before the goaway; nothing else.
        let goaway = loop {
            match raw.recv().await {
                Frame::Goaway(g) => break g,
                Frame::Drop(_) => continue,
                other => panic!("expected goaway, got {other:?}"),
            }
        };
        assert_eq!(goaway.reason.as_deref(), Some("peer_closing"));
        assert!(
            raw.try_recv().await.is_none(),
            "the stream ends after the goaway"
        );
        assert_eq!(timeout(WAIT, stopping).await.unwrap().unwrap(), 1);
        assert!(server.is_closed());
        assert_clean(&[&server]).await;
    });
}

/// A handler still running when the grace runs out is cancelled: its caller gets the
/// goaway's `unavailable` at the grace, and the stop returns then, leaving nothing.
#[test]
fn a_stop_closes_what_still_runs_when_its_grace_runs_out() {
    run_paused(async {
        let (server, client, counter) = counter_pair().await;
        let set = ConnectionSet::new();
        set.insert(&server);
        let waiting = tokio::spawn({
            let counter = counter.clone();
            async move { counter.call_value("wait", Value::Undefined).await }
        });
        eventually(|| server.stats().active_calls == 1).await;
        let grace = Duration::from_secs(5);
        let (open, took) = stop_at_once(&set, grace).await;
        assert_eq!(open, 1);
        assert!(
            took >= grace && took < grace + Duration::from_secs(1),
            "{took:?}"
        );
        // The call was failed by the goaway `peer_closing` the server closed with.
        let e = waiting.await.unwrap().unwrap_err();
        let goaway = Disconnect::Goaway {
            reason: Some("peer_closing".into()),
            error: None,
        };
        assert_disconnected(
            &e,
            &goaway,
            Code::Unavailable,
            "peer_closing",
            Some("goaway"),
        );
        assert!(set.is_empty() && server.is_closed());
        drop(counter);
        client.closed().await;
        assert_clean(&[&server, &client]).await;
    });
}

/// An accept loop that ends on its own (its listener failed) starts the stop: the
/// connections are drained without waiting for the signal.
#[test]
fn a_stop_begins_when_the_accept_loop_ends() {
    run(async {
        let (server, client, _counter) = counter_pair().await;
        let set = ConnectionSet::new();
        set.insert(&server);
        let open = timeout(
            WAIT,
            set.serve_with_shutdown(async {}, std::future::pending(), Duration::from_secs(60)),
        )
        .await
        .expect("stopped without the signal");
        assert_eq!(open, 1);
        assert!(server.is_closed());
        client.closed().await;
        assert_clean(&[&server, &client]).await;
    });
}

/// A socket whose WebSocket handshake is under way when the stop begins goes with the
/// listener: the stop drops the accept loop, and the handshake's task and socket end then,
/// not at the handshake timeout. (They outlived the listener and the stop by up to
/// `handshake_timeout`, at most `max_handshakes` of them: a peer that connected and said
/// nothing held a task and a socket of a stopped server.)
#[test]
fn a_handshake_under_way_when_the_stop_begins_ends_with_the_listener() {
    run(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let config = ListenerConfig::default().handshake_timeout(Duration::from_secs(600));
        let listener = WsListener::bind_with("127.0.0.1:0", "/rpc", config)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let set = ConnectionSet::new();
        let accepting = {
            let set = set.clone();
            async move {
                while let Ok(accepted) = listener.accept().await {
                    set.insert(&tracked(accepted.transport));
                }
            }
        };
        let (stop, server) = spawn_stop(&set, accepting, WAIT);
        let metrics = tokio::runtime::Handle::current().metrics();
        let tasks = || metrics.num_alive_tasks();
        // The stop's task and the listener's accept loop.
        eventually(|| tasks() == 2).await;
        // Connects and sends half an HTTP head: its handshake starts, on a task of its own.
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        silent.write_all(b"GET /rpc HTTP/1.1\r\n").await.unwrap();
        eventually(|| tasks() == 3).await;
        stop.send(()).unwrap();
        assert_eq!(timeout(WAIT, server).await.unwrap().unwrap(), 0);
        let mut buf = [0u8; 64];
        let read = timeout(WAIT, silent.read(&mut buf))
            .await
            .expect("the handshake's socket was closed with the listener");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        eventually(|| tasks() == 0).await;
    });
}

/// A peer that reads nothing and keeps a call running holds the stop no longer than its
/// grace and the [`CLOSE_GRACE`] its goaway is given: its answers fill the transport, the
/// call is cancelled at the grace, and the connection gives up on the goaway after that.
#[test]
fn a_peer_that_reads_nothing_holds_the_stop_no_longer_than_the_grace_and_close_grace() {
    run_paused(async {
        let (def, imp) = sized_cap();
        let builder = Connection::builder()
            .serve(def, imp)
            .serve(counter_def(), counter_impl());
        let (server, mut raw) = RawPeer::connect(builder).await;
        let set = ConnectionSet::new();
        set.insert(&server);
        let sized = raw.bootstrap(1, "test.sized").await;
        let counter = raw.bootstrap(2, "test.counter").await;
        raw.send(call_frame(counter, 3, "wait", Value::Undefined))
            .await;
        // More answers than the transport holds, none of them read.
        let calls = bunite_rpc::transport::memory::CHANNEL_CAPACITY as u64 + 100;
        for id in 4..4 + calls {
            let args = Value::Record(Record::new().with("n", 10i64));
            raw.send(call_frame(sized, id, "sized", args)).await;
        }
        eventually(|| server.stats().unsent_bytes > 0).await;
        assert_eq!(server.stats().active_calls, 1);
        let grace = Duration::from_secs(3);
        let (open, took) = stop_at_once(&set, grace).await;
        assert_eq!(open, 1);
        assert!(took >= grace && took <= grace + CLOSE_GRACE, "{took:?}");
        assert!(set.is_empty() && server.is_closed());
        assert!(server.stats().is_idle(), "{:?}", server.stats());
        drop(raw);
    });
}

/// A connection that shut down but still gives its peer the [`CLOSE_GRACE`] to take its
/// goaway is waited for: its peer reads nothing, so once the drain has closed it (by the
/// grace) it finishes only when the close grace runs out. The stop returned at the grace:
/// the connection's close handler took it out of the set as it shut down, so
/// `ConnectionSet::closed` found the set empty while the connection was still closing.
#[test]
fn a_stop_waits_for_a_connection_still_giving_its_goaway_the_close_grace() {
    run_paused(async {
        let (def, imp) = sized_cap();
        let (server, mut raw) = RawPeer::connect(Connection::builder().serve(def, imp)).await;
        let set = ConnectionSet::new();
        set.insert(&server);
        let sized = raw.bootstrap(1, "test.sized").await;
        // More answers than the transport holds, none of them read.
        let calls = bunite_rpc::transport::memory::CHANNEL_CAPACITY as u64 + 100;
        for id in 2..2 + calls {
            let args = Value::Record(Record::new().with("n", 10i64));
            raw.send(call_frame(sized, id, "sized", args)).await;
        }
        eventually(|| server.stats().unsent_bytes > 0).await;
        let grace = Duration::from_secs(3);
        let (open, took) = stop_at_once(&set, grace).await;
        assert_eq!(open, 1);
        let finished = futures::FutureExt::now_or_never(server.closed()).is_some();
        assert!(
            finished,
            "the stop returned after {took:?}, the connection still closing"
        );
        assert!(
            took >= CLOSE_GRACE && took <= grace + CLOSE_GRACE,
            "{took:?}"
        );
        assert!(
            set.is_empty() && server.stats().is_idle(),
            "{:?}",
            server.stats()
        );
        drop(raw);
    });
}

/// Stops `set` at once (no accept loop, the signal already given) with `grace`: how many
/// connections were open, and how long the stop took.
async fn stop_at_once(set: &ConnectionSet, grace: Duration) -> (usize, Duration) {
    let started = tokio::time::Instant::now();
    let open = set
        .serve_with_shutdown(std::future::pending(), async {}, grace)
        .await;
    (open, started.elapsed())
}
