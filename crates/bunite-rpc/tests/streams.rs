//! Server streams with credit (PROTOCOL §10, §13.1–13.3). The tests against a raw peer run
//! with paused time (they wait for a quiet second to count what was sent); those between two
//! of our peers run in real time, so that `.ci/run` also runs them over TCP.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::events::{Event, StreamPhase};
use bunite_rpc::wire::{CallId, Cancel, Frame, StreamEvent, StreamFrame};
use bunite_rpc::{CapDef, Code, Connection, Error, LocalError, MethodDef, Record, Status, Value};
use common::*;
use futures::StreamExt;

/// `ticks {n}` → `{i}` for i in 0..n with the given initial credit; `forever` yields until
/// cancelled and counts how many values its source produced; `failing` yields 3 then fails.
fn ticker(credit: u32, produced: Arc<AtomicU64>) -> (Arc<CapDef>, Arc<dyn bunite_rpc::CapImpl>) {
    let def = CapDef::builder("test.ticks")
        .method(MethodDef::stream("ticks").initial_credit(credit))
        .method(MethodDef::stream("forever").initial_credit(credit))
        .method(MethodDef::stream("failing"))
        .method(MethodDef::stream("emit"))
        .build();
    let imp =
        DynCap::new()
            .stream("ticks", |args: Value, _| {
                let n = args
                    .as_record()
                    .and_then(|r| r.get("n"))
                    .and_then(Value::as_integer)
                    .unwrap_or(0) as i64;
                Ok(futures::stream::iter(
                    (0..n).map(|i| Ok(Value::Record(Record::new().with("i", i)))),
                )
                .boxed())
            })
            .stream("forever", move |_, _| {
                let produced = produced.clone();
                Ok(futures::stream::iter(0..)
                    .map(move |i: i64| {
                        produced.fetch_add(1, Ordering::SeqCst);
                        Ok(Value::from(i))
                    })
                    .boxed())
            })
            .stream("failing", |_, _| {
                let items = (0..4).map(|i| {
                    if i < 3 {
                        Ok(Value::from(i as i64))
                    } else {
                        Err(Status::internal("late boom"))
                    }
                });
                Ok(futures::stream::iter(items).boxed())
            })
            .stream_emitter("emit", |_, _, mut em| async move {
                for i in 0..5i64 {
                    em.send(Value::from(i)).await?;
                }
                Err(Status::new(Code::FailedPrecondition, "emitter done"))
            })
            .build();
    (def, imp)
}

fn open(id: u64, cap: u32, method: &str, args: Value) -> Frame {
    Frame::Call(bunite_rpc::wire::Call {
        id: CallId(id),
        target: bunite_rpc::CapId(cap),
        method: bunite_rpc::wire::Text::copy_from(method),
        args,
        meta: None,
    })
}

fn n(n: i64) -> Value {
    Value::Record(Record::new().with("n", n))
}

/// Counts `next` frames until nothing more arrives for a (paused) second.
async fn drain_nexts(raw: &mut RawPeer) -> (u64, Option<StreamEvent>) {
    let mut count = 0;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(1), raw.recv()).await;
        match frame {
            Ok(Frame::Stream(StreamFrame {
                event: StreamEvent::Next(_),
                ..
            })) => count += 1,
            Ok(Frame::Stream(StreamFrame { event, .. })) => return (count, Some(event)),
            Ok(_) => continue,
            Err(_) => return (count, None),
        }
    }
}

#[test]
fn a_slow_consumer_bounds_what_the_server_sends_to_the_window() {
    run_paused(async {
        let produced = Arc::new(AtomicU64::new(0));
        let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
        let (def, imp) = ticker(16, produced.clone());
        server.serve(def, imp).await.unwrap().detach();
        let cap = raw.bootstrap(1, "test.ticks").await;
        raw.send(open(2, cap.0, "forever", Value::Undefined)).await;
        assert_eq!(drain_nexts(&mut raw).await, (16, None));
        // The source is not pulled past the window either.
        assert_eq!(produced.load(Ordering::SeqCst), 16);
        // A zero or missing credit does not unblock it (PROTOCOL §13.2).
        for credit in [Some(0), None] {
            raw.send(Frame::Stream(StreamFrame {
                id: CallId(2),
                event: StreamEvent::Credit(credit),
            }))
            .await;
        }
        assert_eq!(drain_nexts(&mut raw).await, (0, None));
        // Credit 5 lets exactly 5 more out.
        raw.send(Frame::Stream(StreamFrame {
            id: CallId(2),
            event: StreamEvent::Credit(Some(5)),
        }))
        .await;
        assert_eq!(drain_nexts(&mut raw).await, (5, None));
        // Cancel while stalled: the source stops and the stream ends with `end`.
        raw.send(Frame::Cancel(Cancel {
            id: CallId(2),
            reason: Some("client_cancel".into()),
        }))
        .await;
        assert_eq!(drain_nexts(&mut raw).await, (0, Some(StreamEvent::End)));
        assert_eq!(server.stats().server_streams, 0);
        assert_eq!(produced.load(Ordering::SeqCst), 21);
    });
}

#[test]
fn every_initial_credit_completes_a_hundred_items_against_our_client() {
    run(async {
        for credit in [1, 3, 8, 1024] {
            let (server, client) = pair();
            let (def, imp) = ticker(credit, Arc::default());
            server.serve(def.clone(), imp).await.unwrap().detach();
            let c = client.bootstrap(&def).await.unwrap();
            let items: Vec<Record> = c
                .stream("ticks", n(100))
                .typed::<Record>()
                .map(|r| r.unwrap())
                .collect()
                .await;
            assert_eq!(items.len(), 100, "credit {credit}");
            assert!(items
                .iter()
                .enumerate()
                .all(|(i, r)| r.get("i") == Some(&Value::Int(i as i64))));
            drop(c);
            assert_clean(&[&server, &client]).await;
        }
    });
}

#[test]
fn a_server_completes_against_a_client_returning_credit_only_per_eight() {
    run_paused(async {
        // The 0.10 client: credit 8 after every 8 values consumed, never otherwise.
        let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
        let (def, imp) = ticker(32, Arc::default());
        server.serve(def, imp).await.unwrap().detach();
        let cap = raw.bootstrap(1, "test.ticks").await;
        raw.send(open(2, cap.0, "ticks", n(100))).await;
        let (mut got, mut consumed) = (0, 0);
        loop {
            match raw.recv().await {
                Frame::Stream(StreamFrame {
                    event: StreamEvent::Next(_),
                    ..
                }) => {
                    got += 1;
                    consumed += 1;
                    if consumed == 8 {
                        consumed = 0;
                        raw.send(Frame::Stream(StreamFrame {
                            id: CallId(2),
                            event: StreamEvent::Credit(Some(8)),
                        }))
                        .await;
                    }
                }
                Frame::Stream(StreamFrame {
                    event: StreamEvent::End,
                    ..
                }) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, 100);
        assert_eq!(server.stats().server_streams, 0);
    });
}

#[test]
fn an_initial_credit_below_eight_is_raised_to_eight() {
    run_paused(async {
        let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
        let (def, imp) = ticker(1, Arc::default());
        server.serve(def, imp).await.unwrap().detach();
        let cap = raw.bootstrap(1, "test.ticks").await;
        raw.send(open(2, cap.0, "forever", Value::Undefined)).await;
        assert_eq!(drain_nexts(&mut raw).await, (8, None));
    });
}

#[test]
fn a_source_error_sends_the_values_then_the_status() {
    run(async {
        let (server, client) = pair();
        let (def, imp) = ticker(8, Arc::default());
        server.serve(def.clone(), imp).await.unwrap().detach();
        let c = client.bootstrap(&def).await.unwrap();
        for method in ["failing", "emit"] {
            let items: Vec<Result<Value, Error>> =
                c.stream(method, Value::Undefined).collect().await;
            let (ok, err): (Vec<_>, Vec<_>) = items.into_iter().partition(Result::is_ok);
            assert_eq!(
                ok.len(),
                if method == "failing" { 3 } else { 5 },
                "{method}"
            );
            assert_eq!(err.len(), 1);
            assert!(
                err[0].as_ref().unwrap_err().is_remote(),
                "{method}: {err:?}"
            );
        }
        let last = c
            .stream("failing", Value::Undefined)
            .collect::<Vec<_>>()
            .await
            .pop()
            .unwrap();
        assert_remote(&last.unwrap_err(), Code::Internal, "late boom", None);
        drop(c);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn dropping_a_client_stream_cancels_it_and_events_report_it() {
    run(async {
        let phases = Arc::new(std::sync::Mutex::new(Vec::new()));
        let p2 = phases.clone();
        let (server, client) = pair();
        server.subscribe(move |e| {
            if let Event::Stream(s) = e {
                p2.lock().unwrap().push(s.phase);
            }
        });
        let (def, imp) = ticker(8, Arc::default());
        server.serve(def.clone(), imp).await.unwrap().detach();
        let c = client.bootstrap(&def).await.unwrap();
        let mut s = c.stream("forever", Value::Undefined);
        for _ in 0..3 {
            s.next().await.unwrap().unwrap();
        }
        drop(s);
        eventually(|| server.stats().server_streams == 0).await;
        let _ = c.stream("ticks", n(2)).collect::<Vec<_>>().await;
        eventually(|| phases.lock().unwrap().len() == 4).await;
        assert_eq!(
            phases.lock().unwrap().clone(),
            vec![
                StreamPhase::Start,
                StreamPhase::Cancel,
                StreamPhase::Start,
                StreamPhase::End
            ]
        );
        drop(c);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn a_result_frame_for_a_stream_fails_it() {
    run_paused(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        // The raw side serves nothing; the connection opens a stream on a made-up cap.
        let client = conn.clone();
        let def = CapDef::builder("x").method(MethodDef::stream("s")).build();
        let _ = def;
        let cap = {
            // Serve on the raw side by answering the bootstrap by hand.
            let boot = tokio::spawn(async move { client.bootstrap_name("x", None).await });
            let call = loop {
                if let Frame::Call(c) = raw.recv().await {
                    break c;
                }
            };
            raw.send(Frame::Result(bunite_rpc::wire::ResultFrame {
                id: call.id,
                outcome: Ok(Value::CapRef(bunite_rpc::CapId(2))),
            }))
            .await;
            boot.await.unwrap().unwrap()
        };
        let mut s = cap.stream("s", Value::Undefined);
        let id = s.call_id().unwrap();
        raw.send(Frame::Result(bunite_rpc::wire::ResultFrame {
            id,
            outcome: Ok(Value::Null),
        }))
        .await;
        let e = s.next().await.unwrap().unwrap_err();
        assert_local(
            &e,
            LocalError::WrongKind,
            Code::InvalidArgument,
            "stream method returned result frame",
            None,
        );
        assert!(s.next().await.is_none());
    });
}

#[test]
fn active_streams_count_toward_the_in_flight_limit() {
    run(async {
        let limits = bunite_rpc::Limits {
            max_in_flight: 1,
            ..Default::default()
        };
        let (server, client) =
            pair_with(Connection::builder().limits(limits), Connection::builder());
        let (def, imp) = ticker(8, Arc::default());
        server.serve(def.clone(), imp).await.unwrap().detach();
        let c = client.bootstrap(&def).await.unwrap();
        let mut s = c.stream("forever", Value::Undefined);
        s.next().await.unwrap().unwrap();
        // The server refuses it: the limit is the peer's.
        let e = c.stream("ticks", n(1)).next().await.unwrap().unwrap_err();
        assert_remote(
            &e,
            Code::ResourceExhausted,
            "in-flight calls limit 1",
            Some("max_concurrent_calls"),
        );
    });
}

/// A [`client_limited_pair`] whose first end serves `ticker(8, ..)`, and the second end's
/// client of it: (server, client connection, ticks client).
async fn ticks_limited(max_in_flight: usize) -> (Connection, Connection, bunite_rpc::Client) {
    let (server, client) = client_limited_pair(max_in_flight);
    let (def, imp) = ticker(8, Arc::default());
    server.serve(def.clone(), imp).await.unwrap().detach();
    let ticks = client.bootstrap(&def).await.unwrap();
    (server, client, ticks)
}

/// A stream whose end its consumer has seen no longer counts against the consumer's
/// in-flight limit: with a limit of one, a consumer on another worker than the driver's
/// opens one stream after another and each gets through.
#[test]
fn an_ended_stream_no_longer_counts_against_the_in_flight_limit() {
    run_on_two_workers(async {
        let (_server, client, c) = ticks_limited(1).await;
        let streams = tokio::spawn(async move {
            for i in 0..2_000 {
                let items = c.stream("ticks", n(2)).collect::<Vec<_>>().await;
                assert_eq!(items.len(), 2, "stream {i}: {items:?}");
                assert!(items.iter().all(Result::is_ok), "stream {i}: {items:?}");
            }
        });
        streams.await.unwrap();
        assert_eq!(client.current_stats().await.client_streams, 0);
    });
}

/// A stream its consumer dropped before the end no longer counts against the consumer's
/// in-flight limit: with a limit of one, the next stream, opened at once, gets through.
#[test]
fn a_dropped_stream_no_longer_counts_against_the_in_flight_limit() {
    run(async {
        let (server, client, c) = ticks_limited(1).await;
        for i in 0..3 {
            let mut forever = c.stream("forever", Value::Undefined);
            forever.next().await.unwrap().unwrap();
            drop(forever);
            let items = c.stream("ticks", n(2)).collect::<Vec<_>>().await;
            assert!(
                items.len() == 2 && items.iter().all(Result::is_ok),
                "{i}: {items:?}"
            );
        }
        eventually(|| server.stats().server_streams == 0).await;
        assert_eq!(client.current_stats().await.client_streams, 0);
    });
}

/// Every in-flight slot comes back, whatever callers on two workers do with their calls
/// and streams: answered, timed out, dropped at once, consumed to the end, dropped midway
/// or as their end arrives, all at a limit they keep hitting. Afterwards as many calls as
/// the limit allows run at once (a slot kept by mistake would fail one of them; one given
/// back twice trips a debug assertion), and the session holds nothing.
#[test]
fn in_flight_slots_all_come_back_whatever_callers_do() {
    run_on_two_workers(async {
        const LIMIT: usize = 6;
        let (server, client, ticks) = ticks_limited(LIMIT).await;
        serve_counter(&server).await;
        let counter = client.bootstrap(&counter_def()).await.unwrap();
        let tasks: Vec<_> = (1..=12u64)
            .map(|seed| {
                let (counter, ticks) = (counter.clone(), ticks.clone());
                tokio::spawn(async move {
                    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    for _ in 0..150 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let short = Duration::from_micros(x % 2_000);
                        match x % 7 {
                            0 => drop(counter.call_value("get", Value::Undefined).await),
                            1 => {
                                let wait = counter.call_value("wait", Value::Undefined);
                                let _ = tokio::time::timeout(short, wait).await;
                            }
                            2 => {
                                let mut call =
                                    Box::pin(counter.call_value("get", Value::Undefined));
                                let _ = futures::poll!(call.as_mut());
                            }
                            3 => drop(ticks.stream("ticks", n(3)).collect::<Vec<_>>().await),
                            4 => {
                                let mut s = ticks.stream("forever", Value::Undefined);
                                let _ = tokio::time::timeout(short, s.next()).await;
                            }
                            5 => {
                                // Its end may be handed over as it is dropped.
                                let mut s = ticks.stream("ticks", n(1));
                                let _ = s.next().await;
                            }
                            _ => tokio::task::yield_now().await,
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        eventually(|| server.stats().active_calls == 0 && server.stats().server_streams == 0).await;
        let all = futures::future::join_all(
            (0..LIMIT).map(|_| counter.call_value("get", Value::Undefined)),
        )
        .await;
        assert!(all.iter().all(Result::is_ok), "{all:?}");
        let stats = client.current_stats().await;
        assert_eq!(
            (stats.pending_calls, stats.client_streams),
            (0, 0),
            "{stats:?}"
        );
    });
}

/// Asserts that `stream`'s next item, within five seconds (`waits` says what hung
/// otherwise), is an error of a closed connection.
async fn ends_closed(stream: &mut bunite_rpc::ClientStream, waits: &str) {
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect(waits);
    let e = end.expect("an error, not a clean end").unwrap_err();
    assert_eq!(e.local_kind(), Some(LocalError::Closed), "{e:?}");
}

/// A connection whose runtime shuts down while it is open lets go of what waits on it
/// elsewhere: a stream consumed on another runtime gets the value already sent and then
/// `closed` (it waited forever), and so does one whose open was still queued; a pending
/// call fails `closed`, the close handlers run, `closed()` returns, and no task of the
/// connection is left.
#[test]
fn a_connection_whose_runtime_shuts_down_ends_its_streams_and_calls() {
    let one_thread = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let first = one_thread();
    let handlers_run = Arc::new(AtomicU64::new(0));
    let (server, client, stream, call, queued) = first.block_on(async {
        let (a, b) = bunite_rpc::transport::memory::pair();
        let (server, client) = (Connection::new(a), Connection::new(b));
        for conn in [&server, &client] {
            let run = Arc::clone(&handlers_run);
            conn.on_close(move || {
                run.fetch_add(1, Ordering::SeqCst);
            });
        }
        let def = CapDef::builder("test.stall")
            .method(MethodDef::stream("one_then_wait"))
            .build();
        let imp = DynCap::new()
            .stream("one_then_wait", |_, _| {
                Ok(futures::stream::iter([Ok(Value::from(1i64))])
                    .chain(futures::stream::pending())
                    .boxed())
            })
            .build();
        server.serve(def.clone(), imp).await.unwrap().detach();
        serve_counter(&server).await;
        let stall = client.bootstrap(&def).await.unwrap();
        let counter = client.bootstrap(&counter_def()).await.unwrap();
        let mut stream = stall.stream("one_then_wait", Value::Undefined);
        assert_eq!(stream.next().await.unwrap().unwrap(), Value::from(1i64));
        // A call that waits, queued here and awaited on the second runtime.
        let stall_again = stall.clone();
        let mut call = Box::pin(async move {
            let _keep = stall;
            counter.call_value("wait", Value::Undefined).await
        });
        assert!(futures::poll!(call.as_mut()).is_pending());
        eventually(|| server.stats().active_calls == 1).await;
        // A stream opened last: its command is still queued when the runtime goes.
        let queued = stall_again.stream("one_then_wait", Value::Undefined);
        (server, client, stream, call, queued)
    });
    drop(first);
    assert_eq!(
        handlers_run.load(Ordering::SeqCst),
        2,
        "each end's close handler, once"
    );
    let second = one_thread();
    second.block_on(async move {
        let mut stream = stream;
        ends_closed(&mut stream, "the stream still waits").await;
        assert!(stream.next().await.is_none());
        let e = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the call still waits")
            .unwrap_err();
        assert_eq!(e.local_kind(), Some(LocalError::Closed), "{e:?}");
        let mut queued = queued;
        ends_closed(&mut queued, "the stream whose open was still queued waits").await;
        for conn in [&server, &client] {
            tokio::time::timeout(Duration::from_secs(5), conn.closed())
                .await
                .expect("closed() still waits");
            assert!(conn.is_closed());
            assert_eq!(conn.stats().tasks, 0, "{:?}", conn.stats());
        }
    });
}

#[test]
fn our_client_returns_credit_when_it_waits_on_an_empty_buffer() {
    run_paused(async {
        // A 0.10 TypeScript server does not raise a small initial credit: here it is 3, and
        // the server sends nothing more until credit comes back (PROTOCOL §13.1).
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        let c2 = conn.clone();
        let boot = tokio::spawn(async move { c2.bootstrap_name("ts.ticks", None).await });
        let call = loop {
            if let Frame::Call(c) = raw.recv().await {
                break c;
            }
        };
        raw.send(Frame::Result(bunite_rpc::wire::ResultFrame {
            id: call.id,
            outcome: Ok(Value::CapRef(bunite_rpc::CapId(2))),
        }))
        .await;
        let ticks = boot.await.unwrap().unwrap();
        let consumer =
            tokio::spawn(async move { ticks.stream("ticks", n(10)).collect::<Vec<_>>().await });
        let open = loop {
            if let Frame::Call(c) = raw.recv().await {
                break c;
            }
        };
        let (mut sent, mut window) = (0i64, 3u64);
        while sent < 10 {
            while window > 0 && sent < 10 {
                let next = StreamEvent::Next(Value::Record(Record::new().with("i", sent)));
                raw.send(Frame::Stream(StreamFrame {
                    id: open.id,
                    event: next,
                }))
                .await;
                sent += 1;
                window -= 1;
            }
            if sent == 10 {
                break;
            }
            match raw.recv().await {
                Frame::Stream(StreamFrame {
                    event: StreamEvent::Credit(Some(k)),
                    ..
                }) => {
                    assert!(k > 0 && k < 8, "credit {k} came back before a batch of 8");
                    window += k;
                }
                other => panic!("expected credit, got {other:?}"),
            }
        }
        raw.send(Frame::Stream(StreamFrame {
            id: open.id,
            event: StreamEvent::End,
        }))
        .await;
        let items = consumer.await.unwrap();
        assert_eq!(items.len(), 10);
        assert!(items.iter().all(Result::is_ok));
    });
}

/// A server that unserves a cap stops the streams it serves on it: the consumer's stream
/// fails `revoked` at the `cap_revoked` (PROTOCOL §12) and sends no cancel, so the source
/// would otherwise wait for credit, counted in flight, until the connection closed.
#[test]
fn unserving_a_cap_stops_the_streams_served_on_it() {
    run(async {
        let produced = Arc::new(AtomicU64::new(0));
        let (server, client) = pair();
        let (def, imp) = ticker(8, Arc::clone(&produced));
        let served = server.serve(def.clone(), imp).await.unwrap();
        let c = client.bootstrap(&def).await.unwrap();
        let mut s = c.stream("forever", Value::Undefined);
        s.next().await.unwrap().unwrap();
        eventually(|| server.stats().server_streams == 1).await;
        served.unserve().await;
        let e = loop {
            match s.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e,
                None => panic!("the stream ended without the revocation"),
            }
        };
        assert_eq!(
            (e.code(), e.reason()),
            (Code::FailedPrecondition, Some("revoked"))
        );
        assert!(s.next().await.is_none());
        eventually(|| server.stats().server_streams == 0).await;
        let made = produced.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            produced.load(Ordering::SeqCst),
            made,
            "the source was stopped"
        );
        drop((s, c));
        assert_clean(&[&server, &client]).await;
    });
}
