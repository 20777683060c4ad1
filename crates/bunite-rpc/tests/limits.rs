//! Limits and bounds: frames above the peer's `maxBytes` (calls fail locally, results are
//! replaced by the error), a peer that never reads cannot grow our memory, bootstraps
//! parked on a slow policy are bounded, and a reused call id cannot get past the in-flight
//! limit.

mod common;

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::{memory, MessageSink, MessageSource, Transport};
use bunite_rpc::wire::{Call, CallId, CapId, Decoder, Encoder, Frame, Hello};
use bunite_rpc::{CapDef, Code, Connection, Limits, LocalError, MethodDef, Policy, Record, Value};
use bytes::Bytes;
use common::*;

#[test]
fn a_peer_that_never_reads_stalls_instead_of_growing_our_backlog() {
    run_paused(async {
        let limits = Limits {
            max_unsent_bytes: 64 * 1024,
            ..Limits::default()
        };
        let (a, b) = memory::pair();
        let server = Connection::builder().limits(limits).connect(a);
        track(&server);
        serve_counter(&server).await;
        let (mut sink, mut source) = b.split();
        let mut enc = Encoder::new();
        let mut dec = Decoder::new(Default::default());
        let hello = Hello {
            v: 1,
            mode: "native".into(),
            features: vec![],
            max_bytes: 64 << 20,
            origin: String::new(),
        };
        send(
            &mut sink,
            enc.encode_to_vec(&Frame::Hello(hello).to_value()),
        )
        .await;
        assert!(matches!(
            dec.decode_frame(&recv(&mut source).await).unwrap(),
            Frame::Hello(_)
        ));
        let boot = Frame::Call(Call {
            id: CallId(1),
            target: CapId(0),
            method: "bootstrap".into(),
            args: Value::Record(Record::new().with("name", "test.counter")),
            meta: None,
        });
        send(&mut sink, enc.encode_to_vec(&boot.to_value())).await;
        let cap = match dec.decode_frame(&recv(&mut source).await).unwrap() {
            Frame::Result(r) => match r.outcome {
                Ok(Value::CapRef(id)) => id,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        // Flood with 3000 echo calls of 1 KiB from a task, reading nothing meanwhile.
        let payload = Value::Bin(vec![7; 1024]);
        let frames: Vec<Vec<u8>> = (2..3002u64)
            .map(|id| {
                let call = Frame::Call(Call {
                    id: CallId(id),
                    target: cap,
                    method: "echo".into(),
                    args: payload.clone(),
                    meta: None,
                });
                enc.encode_to_vec(&call.to_value())
            })
            .collect();
        let flood = tokio::spawn(async move {
            for f in frames {
                send(&mut sink, f).await;
            }
            sink
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        let stats = server.stats();
        // The memory channel holds 1024 answers (~1 MiB); without backpressure the other ~2 MiB
        // of answers would queue here. With it, the backlog stays near the limit: the limit plus
        // the answers of handlers already accepted when reading stopped.
        assert!(stats.unsent_bytes <= 4 * 64 * 1024, "{stats:?}");
        assert!(
            !flood.is_finished(),
            "the flood must be stalled by backpressure"
        );
        // Once the peer reads again, every call is answered.
        for _ in 0..3000 {
            match dec.decode_frame(&recv(&mut source).await).unwrap() {
                Frame::Result(r) => assert_eq!(r.outcome, Ok(payload.clone())),
                other => panic!("{other:?}"),
            }
        }
        let _sink = flood.await.unwrap();
        assert_eq!(server.current_stats().await.unsent_bytes, 0);
    });
}

#[test]
fn bootstraps_waiting_on_the_policy_are_bounded() {
    run_paused(async {
        let limits = Limits {
            max_pending_policy_checks: 2,
            ..Limits::default()
        };
        let never = Policy::from_async(|_, _| std::future::pending());
        let (server, mut raw) =
            RawPeer::connect(Connection::builder().limits(limits).policy(never)).await;
        serve_counter(&server).await;
        let args = || Value::Record(Record::new().with("name", "test.counter"));
        for id in [1, 2] {
            raw.send(Frame::Call(Call {
                id: CallId(id),
                target: CapId(0),
                method: "bootstrap".into(),
                args: args(),
                meta: None,
            }))
            .await;
        }
        let e = err_of(raw.call(3, 0, "bootstrap", args()).await);
        assert_wire(
            &e,
            "resource_exhausted",
            "pending bootstrap limit 2",
            Some("max_concurrent_calls"),
        );
    });
}

/// A peer that sends 200 calls under one id (PROTOCOL §4, §13.10): the second, while the
/// first still runs, is a protocol error, so at most one handler ever runs whatever
/// `max_in_flight` allows, and none outlives the connection.
#[test]
fn two_hundred_calls_with_one_id_never_run_more_than_one_handler() {
    run(async {
        let limits = Limits {
            max_in_flight: 4,
            ..Limits::default()
        };
        let (conn, mut raw) = RawPeer::connect(Connection::builder().limits(limits)).await;
        let entered = Arc::new(AtomicUsize::new(0));
        let counted = entered.clone();
        let def = CapDef::builder("test.hang")
            .method(MethodDef::call("hang"))
            .build();
        let imp = DynCap::new()
            .call("hang", move |_, _| {
                counted.fetch_add(1, Ordering::SeqCst);
                async {
                    std::future::pending::<()>().await;
                    Ok(Value::Undefined)
                }
            })
            .build();
        conn.serve(def, imp).await.unwrap().detach();
        let cap = raw.bootstrap(1, "test.hang").await;
        // The connection stops reading once it has shut down: sends fail from then on.
        for _ in 0..200 {
            let call = Frame::Call(Call {
                id: CallId(7),
                target: cap,
                method: "hang".into(),
                args: Value::Undefined,
                meta: None,
            });
            if !raw.try_send(call).await {
                break;
            }
        }
        match raw.recv().await {
            Frame::Goaway(g) => {
                let error = g.error.expect("goaway error");
                assert_wire(
                    &error,
                    "invalid_argument",
                    "call id 7 is still in use",
                    None,
                );
            }
            other => panic!("expected goaway, got {other:?}"),
        }
        tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("the connection and its handler tasks end");
        assert_eq!(entered.load(Ordering::SeqCst), 1);
        let stats = conn.stats();
        assert_eq!(stats.tasks, 0, "{stats:?}");
    });
}

#[test]
fn an_outbound_call_above_the_peer_max_bytes_fails_locally() {
    run(async {
        let limits = Limits {
            max_bytes: 1024,
            ..Limits::default()
        };
        let (server, client) =
            pair_with(Connection::builder().limits(limits), Connection::builder());
        serve_counter(&server).await;
        let c = client.bootstrap(&counter_def()).await.unwrap();
        let big = Value::Bin(vec![7; 4096]);
        let e = c.call_value("echo", big).await.unwrap_err();
        assert_eq!(e.local_kind(), Some(LocalError::TooLarge));
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert_eq!(e.reason(), Some("max_frame_bytes"));
        // The encoder state was rolled back: the connection still works, records and all.
        let r: Record = c
            .call("increment", &Record::new().with("delta", 2))
            .await
            .unwrap();
        assert_eq!(r.get("count"), Some(&Value::Int(2)));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(!server.is_closed());
    });
}

#[test]
fn a_result_above_the_peer_max_bytes_is_replaced_by_the_error() {
    run(async {
        let limits = Limits {
            max_bytes: 1024,
            ..Limits::default()
        };
        let (server, client) =
            pair_with(Connection::builder(), Connection::builder().limits(limits));
        let def = CapDef::builder("test.big")
            .method(MethodDef::call("big"))
            .build();
        let imp = DynCap::new()
            .call("big", |_, _| async { Ok(Value::Bin(vec![1; 4096])) })
            .build();
        server.serve(def.clone(), imp).await.unwrap().detach();
        let c = client.bootstrap(&def).await.unwrap();
        let e = c.call_value("big", Value::Undefined).await.unwrap_err();
        assert!(e.is_remote(), "{e:?}");
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert_eq!(e.reason(), Some("max_frame_bytes"));
        assert!(!client.is_closed());
    });
}

/// Sends one message through the sending half of a transport.
async fn send(sink: &mut impl MessageSink, msg: Vec<u8>) {
    poll_fn(|cx| sink.poll_ready(cx)).await.expect("ready");
    sink.start_send(msg.into()).expect("send");
    poll_fn(|cx| sink.poll_flush(cx)).await.expect("flush");
}

/// The next message from the receiving half of a transport.
async fn recv(source: &mut impl MessageSource) -> Bytes {
    let msg = poll_fn(|cx| source.poll_recv(cx)).await.expect("recv");
    msg.expect("the connection closed its transport")
}

/// Record definitions stay in the decoder's slots for the connection's life (PROTOCOL §3.3):
/// a peer that keeps defining wide records, each in a message well within its budget and
/// each to a cap that does not exist, fills the table to `max_record_table_bytes` and then
/// gets a goaway instead of making the connection keep more.
#[test]
fn wide_record_definitions_past_the_table_limit_get_a_goaway() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        // 1,000 keys of 100 bytes: about 260 KB kept per definition, each shape new.
        let wide = |n: u64| -> Value {
            (0..1_000)
                .map(|k| (format!("{n:02}{k:0>98}"), Value::Null))
                .collect::<Record>()
                .into()
        };
        let mut answered = 0;
        let goaway = loop {
            assert!(answered < 10, "ten wide definitions answered");
            raw.send(call_frame(CapId(77), answered + 1, "m", wide(answered)))
                .await;
            match raw.recv().await {
                Frame::Result(r) => {
                    let error = r.outcome.expect_err("no cap 77");
                    assert_eq!(error.code, "not_found", "{error:?}");
                    answered += 1;
                }
                Frame::Goaway(g) => break g,
                other => panic!("expected a result or goaway, got {other:?}"),
            }
        };
        assert!((2..10).contains(&answered), "{answered} answered first");
        let error = goaway.error.expect("goaway error");
        assert_eq!(error.code, "invalid_argument", "{error:?}");
        let message = error.message.unwrap_or_default();
        assert!(
            message.contains("more than the record table's limit of 1048576 bytes"),
            "{message}"
        );
        tokio::time::timeout(Duration::from_secs(10), conn.closed())
            .await
            .expect("the connection ends");
        let stats = conn.stats();
        assert_eq!(stats.tasks, 0, "{stats:?}");
    });
}

/// Names the peer chose are quoted in error messages (a cap that is not served, a version
/// that does not match, a method a cap does not have), and those answers are not paid from
/// a listener's send budget: the server quotes at most 1 KiB of each, so a 64 MiB name is
/// not sent back whole.
#[test]
fn long_names_in_error_messages_are_cut() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        serve_counter(&conn).await;
        let long = "n".repeat(300_000);
        let short_enough = |message: &str| {
            assert!(message.len() < 1100, "{} bytes", message.len());
            assert!(
                message.contains(&format!("{}…", "n".repeat(1024))),
                "{message}"
            );
        };
        let args = Value::Record(Record::new().with("name", long.as_str()));
        let e = raw.call(1, 0, "bootstrap", args).await.outcome.unwrap_err();
        assert_eq!(e.code, "not_found");
        short_enough(e.message.as_deref().unwrap_or_default());
        assert!(e
            .message
            .as_deref()
            .unwrap_or_default()
            .ends_with("…\" not served"));

        let cap = raw.bootstrap(2, "test.counter").await;
        let e = raw
            .call(3, cap.0, &long, Value::Undefined)
            .await
            .outcome
            .unwrap_err();
        assert_eq!(e.code, "not_found");
        short_enough(e.message.as_deref().unwrap_or_default());

        // Short names are quoted whole, as before.
        let e = raw
            .call(4, cap.0, "nope", Value::Undefined)
            .await
            .outcome
            .unwrap_err();
        assert_eq!(
            e.message.as_deref(),
            Some("method \"nope\" on cap \"test.counter\"")
        );
        drop(raw);
        conn.close();
        assert_clean(&[&conn]).await;
    });
}

/// A call's `meta.context` is kept by its handler's `CallContext` for as long as the handler
/// runs, so its size is bounded (`Limits::max_context_bytes`, 64 KiB): a call over it fails
/// `invalid_argument` and its handler never runs; one within it runs as before.
#[test]
fn a_call_with_an_oversized_context_fails_and_never_runs() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        serve_counter(&conn).await;
        let cap = raw.bootstrap(1, "test.counter").await;
        let increment = |id: u64, context: Vec<(String, String)>| {
            Frame::Call(Call {
                id: CallId(id),
                target: cap,
                method: "increment".into(),
                args: Value::Record(Record::new().with("delta", 1)),
                meta: Some(bunite_rpc::wire::CallMeta {
                    context: Some(context),
                    ..Default::default()
                }),
            })
        };
        let answer = |r: bunite_rpc::wire::ResultFrame| r.outcome;
        let big = vec![
            ("trace".to_owned(), "t".repeat(40_000)),
            ("baggage".to_owned(), "b".repeat(30_000)),
        ];
        raw.send(increment(2, big)).await;
        let Frame::Result(r) = raw.recv().await else {
            panic!("expected the call's result");
        };
        let e = answer(r).unwrap_err();
        assert_eq!(e.code, "invalid_argument");
        assert_eq!(
            e.message.as_deref(),
            Some(
                "meta.context of 70012 bytes is over the limit of 65536 bytes (max_context_bytes)"
            )
        );
        // Within the bound: runs, and it is the first increment that did.
        raw.send(increment(3, vec![("trace".to_owned(), "t".repeat(60_000))]))
            .await;
        let Frame::Result(r) = raw.recv().await else {
            panic!("expected the call's result");
        };
        assert_eq!(
            answer(r).unwrap(),
            Value::Record(Record::new().with("count", 1))
        );
        drop(raw);
        conn.close();
        assert_clean(&[&conn]).await;
    });
}
