//! Observer events (PROTOCOL §15) against the spec and a hostile peer: one event for each
//! outcome, none twice and none missing (a connection closing with calls and streams in
//! flight included); the peer's text in them bounded; a subscriber that panics or calls
//! back into its connection harmless.

mod common;

use std::sync::{Arc, Mutex};

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::events::{BootstrapResult, Event, StreamPhase};
use bunite_rpc::wire::{
    Call, CallId, CallMeta, Cancel, CapId, DropEntry, DropFrame, Frame, StreamEvent, Text,
};
use bunite_rpc::{CapDef, Code, Connection, Limits, MethodDef, Policy, Record, Status, Value};
use common::*;
use futures::StreamExt;

/// A `call` event: call id, cap name, method, result, whether it has a duration.
type Seen = (u64, Option<String>, String, Result<(), Code>, bool);

/// Every event a connection reported, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Event>>>);

impl Log {
    /// A log subscribed to `conn`.
    fn of(conn: &Connection) -> Log {
        let log = Log::default();
        let l = log.clone();
        conn.subscribe(move |e| l.0.lock().unwrap().push(e.clone()));
        log
    }

    fn all(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    /// The `call` events.
    fn calls(&self) -> Vec<Seen> {
        (self.all().into_iter())
            .filter_map(|e| match e {
                Event::Call(c) => Some((
                    c.call_id.0,
                    c.cap_name,
                    c.method,
                    c.result,
                    c.duration.is_some(),
                )),
                _ => None,
            })
            .collect()
    }

    /// The `stream` events: (call id, phase, count).
    fn streams(&self) -> Vec<(u64, StreamPhase, u64)> {
        (self.all().into_iter())
            .filter_map(|e| match e {
                Event::Stream(s) => Some((s.call_id.0, s.phase, s.count)),
                _ => None,
            })
            .collect()
    }
}

/// A cap with a call that waits until signalled and then fails `deadline_exceeded`, a
/// stream of `n` values, an endless stream (eight values, its initial credit, then it
/// waits), and one failing after two values.
fn slow_def() -> Arc<CapDef> {
    CapDef::builder("test.slow")
        .method(MethodDef::call("wait"))
        .method(MethodDef::stream("ticks"))
        .method(MethodDef::stream("forever").initial_credit(8))
        .method(MethodDef::stream("failing"))
        .build()
}

fn slow_impl() -> Arc<dyn bunite_rpc::CapImpl> {
    DynCap::new()
        .call("wait", |_, ctx: bunite_rpc::CallContext| async move {
            ctx.cancelled().await;
            Err::<Value, _>(Status::new(Code::DeadlineExceeded, "gave up"))
        })
        .stream("ticks", |args: Value, _| {
            let n = args.as_integer().unwrap_or(0) as i64;
            Ok(futures::stream::iter((0..n).map(|i| Ok(Value::from(i)))).boxed())
        })
        .stream("forever", |_, _| {
            Ok(futures::stream::iter(0..)
                .map(|i: i64| Ok(Value::from(i)))
                .boxed())
        })
        .stream("failing", |_, _| {
            let items = (0..3).map(|i| match i {
                2 => Err(Status::internal("late boom")),
                i => Ok(Value::from(i as i64)),
            });
            Ok(futures::stream::iter(items).boxed())
        })
        .build()
}

/// A call frame with `meta`.
fn call_with_meta(target: CapId, id: u64, method: &str, args: Value, meta: CallMeta) -> Frame {
    Frame::Call(Call {
        id: CallId(id),
        target,
        method: Text::copy_from(method),
        args,
        meta: Some(meta),
    })
}

fn bootstrap_args(name: Value, version: Option<&str>) -> Value {
    let mut r = Record::new().with("name", name);
    if let Some(v) = version {
        r.insert("version", v);
    }
    Value::Record(r)
}

/// The raw peer gives back one reference to `cap`.
async fn release(raw: &mut RawPeer, cap: CapId) {
    raw.send(Frame::Drop(DropFrame {
        caps: vec![DropEntry { id: cap, delta: 1 }],
    }))
    .await;
}

/// The next frames until one answers call `id` (a result, or a stream's end or error).
async fn answer_of(raw: &mut RawPeer, id: u64) -> Frame {
    loop {
        match raw.recv().await {
            Frame::Result(r) if r.id == CallId(id) => return Frame::Result(r),
            Frame::Stream(s)
                if s.id == CallId(id)
                    && matches!(s.event, StreamEvent::End | StreamEvent::Error(_)) =>
            {
                return Frame::Stream(s)
            }
            _ => continue,
        }
    }
}

/// Reads frames until `n` values of stream `id` came.
async fn values(raw: &mut RawPeer, id: u64, n: usize) {
    let mut seen = 0;
    while seen < n {
        if let Frame::Stream(s) = raw.recv().await {
            if s.id == CallId(id) && matches!(s.event, StreamEvent::Next(_)) {
                seen += 1;
            }
        }
    }
}

/// PROTOCOL §15: each bootstrap outcome is reported once, with its result, the name and
/// version the peer sent, and a cap-id only on `ok`.
#[test]
fn every_bootstrap_outcome_is_reported_once_with_a_cap_id_only_on_ok() {
    run(async {
        let policy = Policy::from_async(|name: String, _| async move {
            match name.as_str() {
                "test.denied" => Ok(false),
                "test.broken" => Err("policy backend down".to_owned()),
                _ => Ok(true),
            }
        });
        // Room for one instance besides the two reserved ids.
        let limits = Limits {
            max_caps: 3,
            ..Limits::default()
        };
        let builder = Connection::builder().policy(policy).limits(limits);
        let (conn, mut raw) = RawPeer::connect(builder).await;
        let log = Log::of(&conn);
        let versioned = CapDef::builder("test.versioned").version("1").build();
        for def in [
            versioned,
            CapDef::builder("test.denied").build(),
            CapDef::builder("test.broken").build(),
            CapDef::builder("test.other").build(),
        ] {
            conn.serve(def, counter_impl()).await.unwrap().detach();
        }
        let cases: [(Value, Option<&str>); 7] = [
            (Value::from("test.versioned"), Some("1")),
            (Value::from("test.denied"), None),
            (Value::from("nope"), None),
            (Value::from("test.versioned"), Some("2")),
            (Value::from(5i64), None),
            (Value::from("test.other"), None),
            (Value::from("test.broken"), None),
        ];
        let mut ok = None;
        for (i, (name, version)) in cases.into_iter().enumerate() {
            let r = raw
                .call(i as u64 + 1, 0, "bootstrap", bootstrap_args(name, version))
                .await;
            if let Ok(Value::CapRef(id)) = r.outcome {
                ok = Some(id);
            }
        }
        let ok = ok.expect("one bootstrap succeeded");
        let got: Vec<_> = (log.all().into_iter())
            .filter_map(|e| match e {
                Event::Bootstrap(b) => Some((b.name, b.version, b.result, b.cap_id)),
                _ => None,
            })
            .collect();
        let s = |s: &str| s.to_owned();
        assert_eq!(
            got,
            vec![
                (
                    s("test.versioned"),
                    Some(s("1")),
                    BootstrapResult::Ok,
                    Some(ok)
                ),
                (s("test.denied"), None, BootstrapResult::Denied, None),
                (s("nope"), None, BootstrapResult::NotFound, None),
                (
                    s("test.versioned"),
                    Some(s("2")),
                    BootstrapResult::VersionMismatch,
                    None
                ),
                (s("5"), None, BootstrapResult::InvalidArgument, None),
                (
                    s("test.other"),
                    None,
                    BootstrapResult::ResourceExhausted,
                    None
                ),
                (s("test.broken"), None, BootstrapResult::Internal, None),
            ]
        );
        release(&mut raw, ok).await;
        assert_clean(&[&conn]).await;
    });
}

/// PROTOCOL §15: each call outcome is reported by exactly one `call` event: ok, a handler's
/// error, the peer's cancel (its handler's later result suppressed, not reported again), a
/// deadline the handler honoured, and the calls refused before they run (unknown cap,
/// unknown method, a method without a handler, the in-flight limit), which have no duration.
#[test]
fn every_call_outcome_is_reported_by_exactly_one_call_event() {
    run_paused(async {
        let limits = Limits {
            max_in_flight: 1,
            ..Limits::default()
        };
        let (conn, mut raw) = RawPeer::connect(Connection::builder().limits(limits)).await;
        let log = Log::of(&conn);
        serve_counter(&conn).await;
        conn.serve(slow_def(), slow_impl()).await.unwrap().detach();
        let counter = raw.bootstrap(1, "test.counter").await;
        let slow = raw.bootstrap(2, "test.slow").await;
        let undefined = Value::Undefined;
        assert!(raw
            .call(10, counter.0, "get", undefined.clone())
            .await
            .outcome
            .is_ok());
        assert!(raw
            .call(11, counter.0, "boom", undefined.clone())
            .await
            .outcome
            .is_err());
        assert!(raw
            .call(12, 77, "get", undefined.clone())
            .await
            .outcome
            .is_err());
        assert!(raw
            .call(13, counter.0, "nope", undefined.clone())
            .await
            .outcome
            .is_err());
        let no_handler = raw
            .call(14, counter.0, "undeclared", undefined.clone())
            .await;
        assert!(no_handler.outcome.is_err());
        // The peer's cancel.
        raw.send(call_frame(slow, 20, "wait", undefined.clone()))
            .await;
        // The in-flight limit, while `wait` runs.
        let refused = raw.call(21, counter.0, "get", undefined.clone()).await;
        assert_eq!(err_of(refused).code, "resource_exhausted");
        raw.send(Frame::Cancel(Cancel {
            id: CallId(20),
            reason: Some("enough".into()),
        }))
        .await;
        assert!(matches!(answer_of(&mut raw, 20).await, Frame::Result(_)));
        eventually(|| conn.stats().active_calls == 0).await;
        // A deadline: the handler is signalled and gives up.
        let meta = CallMeta {
            deadline_ms: Some(100.0),
            ..CallMeta::default()
        };
        raw.send(call_with_meta(slow, 30, "wait", undefined.clone(), meta))
            .await;
        let late = answer_of(&mut raw, 30).await;
        assert!(matches!(late, Frame::Result(r) if r.outcome.is_err()));
        let c = Some("test.counter".to_owned());
        let w = Some("test.slow".to_owned());
        let s = |s: &str| s.to_owned();
        assert_eq!(
            log.calls(),
            vec![
                (10, c.clone(), s("get"), Ok(()), true),
                (11, c.clone(), s("boom"), Err(Code::Internal), true),
                (12, None, s("get"), Err(Code::NotFound), false),
                (13, c.clone(), s("nope"), Err(Code::NotFound), false),
                (14, c.clone(), s("undeclared"), Err(Code::NotFound), false),
                (21, c.clone(), s("get"), Err(Code::ResourceExhausted), false),
                (20, w.clone(), s("wait"), Err(Code::Cancelled), true),
                (30, w, s("wait"), Err(Code::DeadlineExceeded), true),
            ]
        );
        release(&mut raw, counter).await;
        release(&mut raw, slow).await;
        assert_clean(&[&conn]).await;
    });
}

/// PROTOCOL §15: a stream reports `start`, then one of `end` (with the count of values
/// sent), `error`, or `cancel` (the peer's cancel, or its cap unserved), once each.
#[test]
fn stream_events_report_start_and_one_end_with_the_count() {
    run_paused(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        let log = Log::of(&conn);
        let handle = conn.serve(slow_def(), slow_impl()).await.unwrap();
        let slow = raw.bootstrap(1, "test.slow").await;
        raw.send(call_frame(slow, 10, "ticks", Value::from(3i64)))
            .await;
        answer_of(&mut raw, 10).await;
        raw.send(call_frame(slow, 11, "failing", Value::Undefined))
            .await;
        answer_of(&mut raw, 11).await;
        // Eight values within its credit, then cancelled.
        raw.send(call_frame(slow, 12, "forever", Value::Undefined))
            .await;
        values(&mut raw, 12, 8).await;
        raw.send(Frame::Cancel(Cancel {
            id: CallId(12),
            reason: None,
        }))
        .await;
        answer_of(&mut raw, 12).await;
        // Ended by its cap's revocation.
        raw.send(call_frame(slow, 13, "forever", Value::Undefined))
            .await;
        values(&mut raw, 13, 8).await;
        handle.unserve().await;
        eventually(|| log.streams().len() == 8).await;
        assert_eq!(
            log.streams(),
            vec![
                (10, StreamPhase::Start, 0),
                (10, StreamPhase::End, 3),
                (11, StreamPhase::Start, 0),
                (11, StreamPhase::Error, 2),
                (12, StreamPhase::Start, 0),
                (12, StreamPhase::Cancel, 8),
                (13, StreamPhase::Start, 0),
                (13, StreamPhase::Cancel, 8),
            ]
        );
        assert_clean(&[&conn]).await;
    });
}

/// A connection observed by a log, serving `test.slow` to a raw peer that has call 10
/// (`wait`) running and stream 11 (`forever`) open with 8 values read.
async fn waiting_and_streaming() -> (Connection, RawPeer, Log, CapId) {
    let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
    let log = Log::of(&conn);
    conn.serve(slow_def(), slow_impl()).await.unwrap().detach();
    let slow = raw.bootstrap(1, "test.slow").await;
    raw.send(call_frame(slow, 10, "wait", Value::Undefined))
        .await;
    raw.send(call_frame(slow, 11, "forever", Value::Undefined))
        .await;
    values(&mut raw, 11, 8).await;
    (conn, raw, log, slow)
}

/// A connection that closes with a call and a stream in flight reports each once, as
/// cancelled (the close cancels them): a subscriber that pairs each stream's `start` with
/// its end, or counts calls, is not left with one that never ends. A call the peer
/// cancelled before the close is not reported again.
#[test]
fn a_close_with_calls_and_streams_in_flight_reports_each_once_cancelled() {
    run_paused(async {
        let (conn, _raw, log, _) = waiting_and_streaming().await;
        eventually(|| conn.stats().active_calls == 1).await;
        conn.close();
        conn.closed().await;
        let w = Some("test.slow".to_owned());
        assert_eq!(
            log.calls(),
            vec![(10, w, "wait".to_owned(), Err(Code::Cancelled), false)]
        );
        assert_eq!(
            log.streams(),
            vec![(11, StreamPhase::Start, 0), (11, StreamPhase::Cancel, 8)]
        );
    });
}

/// The same when the peer goes away (its goaway, or the transport ending).
#[test]
fn a_peer_that_leaves_with_calls_in_flight_gets_each_reported_once() {
    run_paused(async {
        let (conn, mut raw, log, slow) = waiting_and_streaming().await;
        raw.send(Frame::Cancel(Cancel {
            id: CallId(10),
            reason: None,
        }))
        .await;
        raw.send(call_frame(slow, 12, "wait", Value::Undefined))
            .await;
        eventually(|| log.calls().len() == 1 && conn.stats().active_calls == 1).await;
        drop(raw);
        conn.closed().await;
        let calls: Vec<_> = log.calls().into_iter().map(|c| (c.0, c.3)).collect();
        assert_eq!(
            calls,
            vec![(10, Err(Code::Cancelled)), (12, Err(Code::Cancelled))]
        );
        let streams: Vec<_> = log.streams().into_iter().map(|s| (s.0, s.1)).collect();
        assert_eq!(
            streams,
            vec![(11, StreamPhase::Start), (11, StreamPhase::Cancel)]
        );
    });
}

/// A cap whose disposal method fails.
fn disposable() -> (Arc<CapDef>, Arc<dyn bunite_rpc::CapImpl>) {
    let def = CapDef::builder("test.disposable")
        .method(MethodDef::call("wait"))
        .method(MethodDef::call("close"))
        .disposal("close")
        .build();
    let imp = DynCap::new()
        .call("wait", |_, ctx: bunite_rpc::CallContext| async move {
            ctx.cancelled().await;
            Ok(Value::Undefined)
        })
        .call("close", |_, _| async {
            Err::<Value, _>(Status::internal("close failed"))
        })
        .build();
    (def, imp)
}

/// A subscriber that panics on every event, the events of the close path included (the
/// calls cancelled by it and a failing disposal), affects neither the connection nor the
/// other subscribers.
#[test]
fn a_subscriber_that_panics_even_while_the_connection_closes_is_harmless() {
    run(async {
        let (server, client) = pair();
        server.subscribe(|_| panic!("subscriber bug"));
        let log = Log::of(&server);
        server.subscribe(|_| panic!("another subscriber bug"));
        let (def, imp) = disposable();
        server.serve(def.clone(), imp).await.unwrap().detach();
        let c = client.bootstrap(&def).await.unwrap();
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.call_value("wait", Value::Undefined).await }
        });
        eventually(|| server.stats().active_calls == 1).await;
        assert!(!server.is_closed());
        server.close();
        server.closed().await;
        assert!(waiting.await.unwrap().is_err());
        let seen: Vec<String> = (log.all().into_iter())
            .map(|e| match e {
                Event::Bootstrap(b) => format!("bootstrap {:?}", b.result),
                Event::Call(c) => format!("call {} {:?}", c.method, c.result),
                Event::Error(e) => format!("error {} {}", e.phase, e.error),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            seen,
            [
                "bootstrap Ok",
                "call wait Err(Cancelled)",
                "error dispose internal: close failed",
            ]
        );
        assert!(!server.driver_panicked());
        drop(c);
        assert_clean(&[&client]).await;
    });
}

/// The longest text of the peer's an event may carry: 1,024 bytes (the session's
/// `PEER_TEXT`, its bound on the peer's text it keeps) and the `…` that marks the cut.
const BOUND: usize = 1024 + '…'.len_utf8();

/// The text a peer chooses (a method name, a bootstrap name or version) lands in events
/// cut as the rest of the peer's text the connection keeps: a 1 MiB name makes no 1 MiB
/// event.
#[test]
fn the_peer_text_in_events_is_bounded() {
    run_paused(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        let log = Log::of(&conn);
        serve_counter(&conn).await;
        let versioned = CapDef::builder("test.versioned").version("1").build();
        conn.serve(versioned, counter_impl())
            .await
            .unwrap()
            .detach();
        let counter = raw.bootstrap(1, "test.counter").await;
        let long = "m\u{7}".repeat(512 << 10);
        for (id, target) in [(10, counter.0), (11, 77), (12, 0)] {
            assert!(raw
                .call(id, target, &long, Value::Undefined)
                .await
                .outcome
                .is_err());
        }
        let name = bootstrap_args(Value::from(long.as_str()), None);
        assert!(raw.call(13, 0, "bootstrap", name).await.outcome.is_err());
        let version = bootstrap_args(Value::from("test.versioned"), Some(&long));
        assert!(raw.call(14, 0, "bootstrap", version).await.outcome.is_err());
        let events = log.all();
        // The first is the raw peer's bootstrap of the counter.
        assert_eq!(events.len(), 6, "{}", events.len());
        for e in &events {
            let texts: Vec<&str> = match e {
                Event::Call(c) => vec![&c.method],
                Event::Bootstrap(b) => [Some(b.name.as_str()), b.version.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect(),
                other => panic!("unexpected {other:?}"),
            };
            for t in texts {
                assert!(t.len() <= BOUND, "an event carries {} bytes", t.len());
            }
        }
        match &events[4] {
            Event::Bootstrap(b) => {
                assert_eq!(b.result, BootstrapResult::NotFound);
                assert!(b.name.starts_with("m\u{7}m") && b.name.ends_with('…'));
            }
            other => panic!("{other:?}"),
        }
        release(&mut raw, counter).await;
        assert_clean(&[&conn]).await;
    });
}

/// Sets a flag when dropped: whether a subscriber's closure was freed.
struct Freed(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Freed {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A subscriber may call back into its connection from the callback: read its stats,
/// subscribe and unsubscribe, start a call, close it. None of it deadlocks or panics; the
/// call it started runs; and a subscriber that holds its own connection is freed once the
/// connection is done (it would otherwise keep the connection alive through the cycle).
#[test]
fn a_subscriber_that_calls_back_into_its_connection_neither_deadlocks_nor_leaks() {
    run(async {
        let (server, client) = pair();
        serve_counter(&server).await;
        serve_counter(&client).await;
        // The server's client of the client's counter, for a call made from the callback.
        let back = server.bootstrap(&counter_def()).await.unwrap();
        let freed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let conn = server.clone();
        let guard = Freed(freed.clone());
        server.subscribe(move |e| {
            let _ = &guard;
            let Event::Call(c) = e else { return };
            let _ = conn.stats();
            let inner = conn.subscribe(|_| {});
            conn.unsubscribe(inner);
            match c.method.as_str() {
                "get" => {
                    let back = back.clone();
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let r = back.call_value("increment", Value::Undefined).await;
                        let _ = tx.send(r.is_ok());
                    });
                }
                "echo" => conn.close(),
                _ => {}
            }
        });
        let counter = client.bootstrap(&counter_def()).await.unwrap();
        counter.call_value("get", Value::Undefined).await.unwrap();
        assert_eq!(rx.recv().await, Some(true));
        let _ = counter.call_value("echo", Value::Undefined).await;
        server.closed().await;
        client.closed().await;
        assert!(!server.driver_panicked());
        drop((server, counter));
        eventually(|| freed.load(std::sync::atomic::Ordering::SeqCst)).await;
    });
}

/// An observer sees the events of everything that follows its `subscribe`, however soon:
/// here the peer's bootstrap and call arrive with nothing else for the connection to do in
/// between (the driver learned of observers only once it had applied a pass's outputs, so
/// a message it read first was handled as unobserved, its events never built: two workers
/// lost the first bootstrap's event of the test above in CI).
#[test]
fn a_subscriber_sees_the_events_of_what_follows_at_once() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        serve_counter(&conn).await;
        let log = Log::of(&conn);
        let counter = raw.bootstrap(1, "test.counter").await;
        let got = raw.call(2, counter.0, "get", Value::Undefined).await;
        assert!(got.outcome.is_ok());
        let bootstraps: Vec<_> = (log.all().into_iter())
            .filter_map(|e| match e {
                Event::Bootstrap(b) => Some((b.name, b.result, b.cap_id)),
                _ => None,
            })
            .collect();
        let name = "test.counter".to_owned();
        assert_eq!(
            bootstraps,
            vec![(name.clone(), BootstrapResult::Ok, Some(counter))]
        );
        let calls = log.calls();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!((calls[0].0, &calls[0].1), (2, &Some(name)));
        release(&mut raw, counter).await;
        assert_clean(&[&conn]).await;
    });
}

/// An observer subscribed once the connection is done is dropped at once: no event can come,
/// and nothing else would ever drop it (one holding its connection kept both).
#[test]
fn a_subscriber_added_after_the_connection_is_done_is_dropped_at_once() {
    run(async {
        let (server, client) = pair();
        client.close();
        server.closed().await;
        eventually(|| server.stats().tasks == 0).await;
        let freed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let guard = Freed(freed.clone());
        let conn = server.clone();
        server.subscribe(move |_| {
            let _ = (&guard, &conn);
        });
        assert!(freed.load(std::sync::atomic::Ordering::SeqCst));
    });
}

/// The call spans carry their documented fields on both sides (the client's: method,
/// cap-id, call id, code; the server's: service, method, call id, whether a stream,
/// code), and the method a server's span records is the one its cap declares: a call
/// of a 1 MiB name the peer made up is refused before any span is built, so no span or
/// event line carries it. (A subscriber for this thread only, so the test runs on one
/// thread; the other tests of this binary are unaffected.)
#[test]
fn call_spans_carry_their_fields_and_no_peer_text_unbounded() {
    use tracing_subscriber::fmt::format::FmtSpan;
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::CLOSE)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        run_on_one_thread(async {
            let (server, client, counter) = counter_pair().await;
            counter.call_value("get", Value::Undefined).await.unwrap();
            let long = "x".repeat(1 << 20);
            let e = counter
                .call_value(&long, Value::Undefined)
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::NotFound);
            assert!(
                e.status().message.len() < 2 * BOUND,
                "{}",
                e.status().message.len()
            );
            drop(counter);
            assert_clean(&[&server, &client]).await;
        })
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let closed = |kind: &str, method: &str| {
        (text.lines())
            .find(|l| {
                l.contains(&format!("otel.kind=\"{kind}\""))
                    && l.contains(&format!("rpc.method={method}"))
                    && l.contains("close")
            })
            .unwrap_or_else(|| panic!("no {kind} span for {method} in:\n{text}"))
            .to_owned()
    };
    let client_span = closed("client", "get");
    for field in ["rpc.cap_id=2", "rpc.call_id=", "rpc.code=\"ok\""] {
        assert!(client_span.contains(field), "{field}: {client_span}");
    }
    let server_span = closed("server", "get");
    for field in [
        "rpc.service=test.counter",
        "rpc.call_id=",
        "rpc.stream=false",
        "rpc.code=\"ok\"",
    ] {
        assert!(server_span.contains(field), "{field}: {server_span}");
    }
    // The client's own span names the method it chose; the server built none for it.
    let long_lines: Vec<&str> = text.lines().filter(|l| l.len() > 4 * BOUND).collect();
    assert_eq!(
        long_lines.len(),
        1,
        "lines of the long name: {}",
        long_lines.len()
    );
    assert!(
        long_lines[0].contains("otel.kind=\"client\""),
        "{:.200}",
        long_lines[0]
    );
}
