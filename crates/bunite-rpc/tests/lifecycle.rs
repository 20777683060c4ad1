//! Connection lifecycle (PROTOCOL §6, §11): hello, goaway, protocol errors, shutdown, close
//! handlers, transport close.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::memory;
use bunite_rpc::wire::{Call, CallId, Encoder, Frame, Goaway, Hello, Record, Value, WireStatus};
use bunite_rpc::{CapDef, Code, Connection, ConnectionSet, Disconnect, Limits, MethodDef, Status};
use common::*;
use tokio::sync::Notify;

#[test]
fn each_peer_sends_hello_at_once_and_records_the_other() {
    run(async {
        let (a, b) = pair();
        eventually(|| a.peer_hello().is_some() && b.peer_hello().is_some()).await;
        let h = a.peer_hello().unwrap();
        assert_eq!((h.v, h.mode.as_str(), h.max_bytes), (1, "native", 64 << 20));
    });
}

#[test]
fn bootstrap_waits_for_the_peer_hello_and_calls_before_it_are_answered() {
    run_paused(async {
        let (a, mut b) = memory::pair();
        let conn = Connection::new(a);
        track(&conn);
        serve_counter(&conn).await;
        let client = conn.clone();
        let pending = tokio::spawn(async move { client.bootstrap_name("x", None).await });
        // Our hello arrives, nothing else: the bootstrap is waiting.
        let mut dec = bunite_rpc::wire::Decoder::new(Default::default());
        let hello = dec.decode_frame(&b.recv_raw().await.unwrap()).unwrap();
        assert!(matches!(hello, Frame::Hello(_)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!pending.is_finished());
        // A call from the raw side before its hello is answered.
        let mut enc = Encoder::new();
        let call = Frame::Call(bunite_rpc::wire::Call {
            id: bunite_rpc::CallId(1),
            target: bunite_rpc::CapId(0),
            method: "bootstrap".into(),
            args: Value::Record(Record::new().with("name", "test.counter")),
            meta: None,
        });
        b.send_raw(enc.encode_to_vec(&call.to_value()).into())
            .await
            .unwrap();
        let reply = dec.decode_frame(&b.recv_raw().await.unwrap()).unwrap();
        assert!(
            matches!(reply, Frame::Result(r) if r.outcome == Ok(Value::CapRef(bunite_rpc::CapId(2))))
        );
        // Now the hello: the waiting bootstrap goes out.
        let hello = Frame::Hello(Hello {
            v: 1,
            mode: "web".into(),
            features: vec![],
            max_bytes: 1 << 20,
            origin: "o".into(),
        });
        b.send_raw(enc.encode_to_vec(&hello.to_value()).into())
            .await
            .unwrap();
        let call = dec.decode_frame(&b.recv_raw().await.unwrap()).unwrap();
        assert!(matches!(call, Frame::Call(c) if c.method == "bootstrap"));
        assert_eq!(conn.peer_hello().unwrap().mode, "web");
    });
}

#[test]
fn a_hello_with_another_version_is_a_protocol_error() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        let mut r = Record::new();
        for (k, v) in [
            ("op", Value::from("hello")),
            ("v", Value::Int(2)),
            ("mode", "native".into()),
            ("features", Value::Array(vec![])),
            ("maxBytes", Value::Int(1024)),
            ("origin", "x".into()),
        ] {
            r.insert(k, v);
        }
        raw.send_bytes(Encoder::new().encode_to_vec(&Value::Record(r)))
            .await;
        let goaway = expect_goaway(&mut raw).await;
        assert_eq!(goaway.reason.as_deref(), Some("invalid_argument"));
        assert_eq!(
            goaway.error.as_ref().map(|e| e.code.as_str()),
            Some("invalid_argument")
        );
        conn.closed().await;
    });
}

async fn expect_goaway(raw: &mut RawPeer) -> Goaway {
    loop {
        match raw.try_recv().await {
            Some(Frame::Goaway(g)) => return g,
            Some(_) => continue,
            None => panic!("closed without goaway"),
        }
    }
}

#[test]
fn undecodable_bytes_get_goaway_then_shutdown() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        raw.send_bytes(vec![0xc1]).await;
        let g = expect_goaway(&mut raw).await;
        assert_eq!(g.reason.as_deref(), Some("invalid_argument"));
        assert_eq!(g.error.unwrap().code, "invalid_argument");
        conn.closed().await;
        // The transport was closed after the goaway.
        assert!(raw.try_recv().await.is_none());
    });
}

#[test]
fn an_unknown_op_gets_goaway_unknown_opcode() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        let frame = Value::Record(Record::new().with("op", "teleport").with("id", 1));
        raw.send_bytes(Encoder::new().encode_to_vec(&frame)).await;
        let g = expect_goaway(&mut raw).await;
        let e = g.error.unwrap();
        assert_eq!(
            (e.code.as_str(), e.message.as_deref()),
            ("invalid_argument", Some("unknown opcode"))
        );
        conn.closed().await;
    });
}

#[test]
fn a_msgpack_map_frame_is_a_protocol_error() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        // {"op": "hello"} as a msgpack map, not a record.
        raw.send_bytes(vec![
            0x81, 0xa2, b'o', b'p', 0xa5, b'h', b'e', b'l', b'l', b'o',
        ])
        .await;
        expect_goaway(&mut raw).await;
        conn.closed().await;
    });
}

#[test]
fn an_oversize_message_gets_goaway_resource_exhausted() {
    run(async {
        let limits = Limits {
            max_bytes: 256,
            ..Limits::default()
        };
        let (conn, mut raw) = RawPeer::connect(Connection::builder().limits(limits)).await;
        raw.send_bytes(vec![0xc0; 1000]).await;
        let g = expect_goaway(&mut raw).await;
        assert_eq!(g.reason.as_deref(), Some("resource_exhausted"));
        let e = g.error.unwrap();
        assert_eq!(e.code, "resource_exhausted");
        assert_eq!(e.reason(), Some("max_frame_bytes"));
        conn.closed().await;
    });
}

#[test]
fn goaway_from_the_peer_shuts_down_and_fails_pending_calls() {
    run(async {
        let (server, client, c) = counter_pair().await;
        let waiting = tokio::spawn(async move { c.call_value("wait", Value::Undefined).await });
        eventually(|| server.stats().active_calls == 1).await;
        server.close();
        let e = waiting.await.unwrap().unwrap_err();
        assert_failed_by_the_peers_close(&e);
        client.closed().await;
        assert_eq!(server.current_stats().await.active_calls, 0);
    });
}

#[test]
fn a_bootstrap_waiting_for_hello_fails_with_the_goaway_error() {
    run(async {
        let (a, mut b) = memory::pair();
        let conn = Connection::new(a);
        track(&conn);
        let pending = tokio::spawn({
            let conn = conn.clone();
            async move { conn.bootstrap_name("x", None).await }
        });
        let _ = b.recv_raw().await;
        let goaway = Frame::Goaway(Goaway {
            reason: Some("bye".into()),
            error: Some(
                WireStatus::new("unavailable", "host shutting down")
                    .with_reason("plugin_unloading"),
            ),
        });
        b.send_raw(Encoder::new().encode_to_vec(&goaway.to_value()).into())
            .await
            .unwrap();
        let e = pending.await.unwrap().unwrap_err();
        let goaway = Disconnect::Goaway {
            reason: Some("bye".into()),
            error: Some(Box::new(
                Status::new(Code::Unavailable, "host shutting down")
                    .with_reason("plugin_unloading"),
            )),
        };
        assert_disconnected(
            &e,
            &goaway,
            Code::Unavailable,
            "host shutting down",
            Some("plugin_unloading"),
        );
    });
}

#[test]
fn shutdown_runs_close_handlers_once_and_closes_the_transport() {
    run(async {
        let (a, b) = pair();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        a.on_close(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        a.close();
        a.close();
        a.closed().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // Registered after close: runs at once.
        let r = runs.clone();
        a.on_close(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // The other side saw the transport close and shut down too.
        b.closed().await;
    });
}

#[test]
fn a_closed_transport_shuts_the_connection_down() {
    run(async {
        let (a, b) = memory::pair();
        let conn = Connection::new(a);
        track(&conn);
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .unwrap();
        assert!(conn.is_closed());
    });
}

#[test]
fn a_call_id_still_in_use_gets_goaway_then_shutdown() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        serve_counter(&conn).await;
        let cap = raw.bootstrap(1, "test.counter").await;
        // Call 7 waits until cancelled, so it still runs when its id comes again.
        for _ in 0..2 {
            raw.send(Frame::Call(Call {
                id: CallId(7),
                target: cap,
                method: "wait".into(),
                args: Value::Undefined,
                meta: None,
            }))
            .await;
        }
        let g = expect_goaway(&mut raw).await;
        assert_eq!(g.reason.as_deref(), Some("invalid_argument"));
        let error = g.error.expect("goaway error");
        assert_wire(
            &error,
            "invalid_argument",
            "call id 7 is still in use",
            None,
        );
        conn.closed().await;
        assert!(raw.try_recv().await.is_none(), "shutdown after the goaway");
    });
}

/// A call pending when the connection ends fails `Disconnected`, saying how it ended: our
/// own close, the transport's end, or the peer breaking the protocol (PROTOCOL §11).
#[test]
fn a_pending_call_says_how_the_connection_ended() {
    run(async {
        let (server, client, c) = counter_pair().await;
        let waiting = tokio::spawn(async move { c.call_value("wait", Value::Undefined).await });
        eventually(|| server.stats().active_calls == 1).await;
        client.close();
        let e = waiting.await.unwrap().unwrap_err();
        let (code, why) = (Code::Unavailable, Some("peer_closing"));
        assert_disconnected(&e, &Disconnect::LocalClose, code, "peer_closing", why);

        // The peer's end of the transport goes away.
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        let pending = runtime_call(&conn);
        assert!(matches!(raw.recv().await, Frame::Call(_)));
        drop(raw);
        let e = pending.await.unwrap().unwrap_err();
        assert_disconnected(&e, &Disconnect::Eof, code, "transport closed", why);

        // The peer sends a frame with an unknown op.
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        let pending = runtime_call(&conn);
        assert!(matches!(raw.recv().await, Frame::Call(_)));
        let frame = Value::Record(Record::new().with("op", "teleport"));
        raw.send_bytes(Encoder::new().encode_to_vec(&frame)).await;
        let e = pending.await.unwrap().unwrap_err();
        let cause = Disconnect::ProtocolError {
            message: "unknown opcode".into(),
        };
        assert_disconnected(&e, &cause, code, "protocol error: unknown opcode", why);
        expect_goaway(&mut raw).await;
    });
}

/// A call to the peer's runtime, pending until the peer answers.
fn runtime_call(conn: &Connection) -> tokio::task::JoinHandle<Result<Value, bunite_rpc::Error>> {
    let runtime = conn.runtime();
    tokio::spawn(async move { runtime.call_value("appName", Value::Undefined).await })
}

#[test]
fn draining_refuses_new_calls_lets_the_running_one_finish_then_closes() {
    run(async {
        let (server, client) = pair();
        let (started, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let def = CapDef::builder("test.gate")
            .method(MethodDef::call("pass"))
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
            .build();
        server.serve(def.clone(), imp).await.unwrap().detach();
        let cap = client.bootstrap(&def).await.unwrap();
        let first = tokio::spawn({
            let cap = cap.clone();
            async move { cap.call_value("pass", Value::Undefined).await }
        });
        started.notified().await;
        server.drain(Duration::from_secs(60));
        // Commands are taken in order: once this is answered, the drain has begun.
        server.current_stats().await;

        // New calls and bootstraps are answered and never run; the first still runs.
        let refused = cap.call_value("pass", Value::Undefined).await.unwrap_err();
        let message = "draining: no new calls";
        assert_remote(&refused, Code::Unavailable, message, Some("peer_closing"));
        let refused = client.bootstrap(&def).await.unwrap_err();
        assert_remote(&refused, Code::Unavailable, message, Some("peer_closing"));
        assert!(!server.is_closed());
        assert_eq!(server.current_stats().await.active_calls, 1);

        // It finishes with its result, and the connection closes after it.
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap(), Value::from("passed"));
        server.closed().await;
        client.closed().await;
        let after = cap.call_value("pass", Value::Undefined).await.unwrap_err();
        assert_eq!(after.code(), Code::Unavailable);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn a_drain_closes_when_its_grace_runs_out_cancelling_what_still_runs() {
    run_paused(async {
        let (server, client, c) = counter_pair().await;
        let waiting = tokio::spawn(async move { c.call_value("wait", Value::Undefined).await });
        eventually(|| server.stats().active_calls == 1).await;
        let start = tokio::time::Instant::now();
        server.drain(Duration::from_secs(5));
        server.closed().await;
        assert!(
            start.elapsed() >= Duration::from_secs(5),
            "closed before its grace"
        );
        let e = waiting.await.unwrap().unwrap_err();
        assert_failed_by_the_peers_close(&e);
        client.closed().await;
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn an_idle_connection_drains_at_once() {
    run(async {
        let (server, client, _c) = counter_pair().await;
        server.drain(Duration::from_secs(3600));
        tokio::time::timeout(Duration::from_secs(10), server.closed())
            .await
            .expect("closed at once");
        client.closed().await;
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn a_connection_set_drains_every_connection_and_waits_for_all() {
    run(async {
        let set = ConnectionSet::new();
        let (s1, c1, counter1) = counter_pair().await;
        let (s2, c2, counter2) = counter_pair().await;
        set.insert(&s1);
        set.insert(&s2);
        assert_eq!(set.len(), 2);
        // One connection has a call running; the other is idle.
        let waiting = tokio::spawn({
            let counter1 = counter1.clone();
            async move { counter1.call_value("wait", Value::Undefined).await }
        });
        eventually(|| s1.stats().active_calls == 1).await;
        set.drain(Duration::from_secs(60));
        let draining = tokio::spawn({
            let set = set.clone();
            async move { set.closed().await }
        });
        s2.closed().await;
        assert_eq!(set.len(), 1, "the idle one closed and left the set");
        s1.current_stats().await; // Its drain has begun too.
        let refused = counter1
            .call_value("get", Value::Undefined)
            .await
            .unwrap_err();
        assert_remote(
            &refused,
            Code::Unavailable,
            "draining: no new calls",
            Some("peer_closing"),
        );
        assert!(!draining.is_finished(), "waits for the running call");

        // A connection added while the set drains is drained at once.
        let (s3, c3, _counter3) = counter_pair().await;
        set.insert(&s3);
        s3.closed().await;

        // The running call is cancelled by its client: the last connection closes.
        waiting.abort();
        drop(counter1);
        let _ = waiting.await;
        tokio::time::timeout(Duration::from_secs(10), draining)
            .await
            .expect("the drain ends")
            .unwrap();
        assert!(set.is_empty());
        assert!(s1.is_closed());
        assert!(counter2.call_value("get", Value::Undefined).await.is_err());
        assert_clean(&[&s1, &c1, &s2, &c2, &s3, &c3]).await;
    });
}

#[test]
fn a_connection_set_closes_every_connection_and_forgets_closed_ones() {
    run(async {
        let set = ConnectionSet::new();
        let (s1, c1, _k1) = counter_pair().await;
        let (s2, c2, _k2) = counter_pair().await;
        set.insert(&s1);
        set.insert(&s2);
        // A connection that closes on its own leaves the set.
        c1.close();
        s1.closed().await;
        eventually(|| set.len() == 1).await;
        // One already closed is never held.
        set.insert(&s1);
        assert_eq!(set.len(), 1);
        set.close();
        set.closed().await;
        assert!(set.is_empty() && s2.is_closed());
        c2.closed().await;
        assert_clean(&[&s1, &c1, &s2, &c2]).await;
    });
}

/// Asserts that a call failed because the peer closed (goaway `peer_closing`).
#[track_caller]
fn assert_failed_by_the_peers_close(e: &bunite_rpc::Error) {
    let goaway = Disconnect::Goaway {
        reason: Some("peer_closing".into()),
        error: None,
    };
    assert_disconnected(
        e,
        &goaway,
        Code::Unavailable,
        "peer_closing",
        Some("goaway"),
    );
}

/// Unserves that had not ended when they were first polled.
type Waiting = Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>;

/// A thread that sends unserves on `conn` back to back until it has closed, and returns
/// those still waiting then; the flag is set once it has sent one.
fn unserves_until_closed(
    conn: Connection,
) -> (
    std::thread::JoinHandle<Waiting>,
    Arc<std::sync::atomic::AtomicBool>,
) {
    use futures::FutureExt;
    let sending = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Arc::clone(&sending);
    let sender = std::thread::spawn(move || {
        let mut waiting: Waiting = Vec::new();
        loop {
            let finished = conn.closed().now_or_never().is_some();
            let handle = conn.clone();
            let mut unserve = Box::pin(async move {
                let _ = handle.unserve("x").await;
            });
            if unserve.as_mut().now_or_never().is_none() {
                waiting.push(unserve);
            }
            started.store(true, Ordering::Release);
            if finished {
                return waiting;
            }
        }
    });
    (sender, sending)
}

/// A command sent as the driver finishes is still answered: an `unserve` (or a `serve`, a
/// call) whose command tokio had counted but not yet put in the queue when the driver took
/// its last commands arrived after the queue was dropped, kept by the connection's own
/// sender, and its caller waited for as long as a handle lived (found by
/// `tests/random_ops.rs`, seed 2262 under load: an `unserve` of `ops.flip` that never
/// ended). A race of a few instructions, so the test sends unserves back to back from a
/// thread of its own while each connection closes, for about two seconds (the old driver
/// left one waiting about once in 5,000 closes, some 4,000 a second here).
#[test]
fn a_command_sent_as_the_driver_finishes_is_answered() {
    run_on_two_workers(async {
        let start = std::time::Instant::now();
        let mut closes = 0;
        while start.elapsed() < Duration::from_secs(2) {
            let (ta, tb) = memory::pair();
            let (a, b) = (tracked(ta), tracked(tb));
            let (sender, _) = unserves_until_closed(a.clone());
            b.close();
            a.close();
            let waiting = tokio::task::spawn_blocking(move || sender.join().unwrap())
                .await
                .unwrap();
            let all = futures::future::join_all(waiting);
            if tokio::time::timeout(Duration::from_secs(2), all)
                .await
                .is_err()
            {
                panic!("close {closes}: an unserve sent as the driver finished never ended");
            }
            closes += 1;
        }
    });
}

/// The same race on the driver's other way out: a driver dropped before it finished (its
/// runtime shut down with the connection open) let go only of the commands it found in
/// its closed queue, so one that tokio had counted but not yet put in stayed there, kept by
/// the connection's own sender, and its caller (here an `unserve`) waited for as long as a
/// handle lived. Each round opens a pair on a runtime of its own, has a thread send
/// unserves back to back, and shuts that runtime down under it, for about two seconds;
/// every unserve must then end, and neither end hold anything.
#[test]
fn a_command_sent_as_the_driver_is_dropped_is_let_go() {
    let one_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let check = one_thread();
    let start = std::time::Instant::now();
    let mut drops = 0;
    while start.elapsed() < Duration::from_secs(2) {
        let doomed = one_thread();
        let (a, b) = doomed.block_on(async {
            let (ta, tb) = memory::pair();
            (Connection::new(ta), Connection::new(tb))
        });
        let (sender, sending) = unserves_until_closed(a.clone());
        while !sending.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        drop(doomed);
        let waiting = sender.join().unwrap();
        check.block_on(async {
            let all = futures::future::join_all(waiting);
            if tokio::time::timeout(Duration::from_secs(2), all)
                .await
                .is_err()
            {
                panic!("round {drops}: an unserve sent as the driver was dropped never ended");
            }
            for conn in [&a, &b] {
                // `is_idle` counts the built-in caps a driver that ran would have
                // published; one dropped before its first poll published nothing.
                let stats = conn.stats();
                assert!(conn.is_closed(), "{stats:?}");
                let held = [
                    stats.pending_calls,
                    stats.active_calls,
                    stats.server_streams,
                    stats.client_streams,
                    stats.unsent_bytes,
                    stats.tasks,
                ];
                assert_eq!(held, [0; 6], "{stats:?}");
            }
        });
        drops += 1;
    }
    assert!(drops > 0);
}
