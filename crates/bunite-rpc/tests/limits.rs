//! Bounds against a hostile peer: a peer that never reads cannot grow our memory, and
//! bootstraps parked on a slow policy are bounded.

mod common;

use std::time::Duration;

use bunite_rpc::transport::{memory, MessageSinkExt, MessageSourceExt, Transport};
use bunite_rpc::wire::{Call, CallId, CapId, Decoder, Encoder, Frame, Hello};
use bunite_rpc::{Connection, Limits, Policy, Record, Value};
use common::*;

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_reads_stalls_instead_of_growing_our_backlog() {
    let limits = Limits {
        max_unsent_bytes: 64 * 1024,
        ..Limits::default()
    };
    let (a, b) = memory::pair();
    let server = Connection::builder().limits(limits).connect(a);
    server
        .serve(counter_def(), counter_impl())
        .unwrap()
        .detach();
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
    sink.send(enc.encode_to_vec(&Frame::Hello(hello).to_value()).into())
        .await
        .unwrap();
    assert!(matches!(
        dec.decode_frame(&source.recv().await.unwrap().unwrap())
            .unwrap(),
        Frame::Hello(_)
    ));
    let boot = Frame::Call(Call {
        id: CallId(1),
        target: CapId(0),
        method: "bootstrap".into(),
        args: Value::Record(Record::new().with("name", "test.counter")),
        meta: None,
    });
    sink.send(enc.encode_to_vec(&boot.to_value()).into())
        .await
        .unwrap();
    let cap = match dec
        .decode_frame(&source.recv().await.unwrap().unwrap())
        .unwrap()
    {
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
            sink.send(f.into()).await.unwrap();
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
        match dec
            .decode_frame(&source.recv().await.unwrap().unwrap())
            .unwrap()
        {
            Frame::Result(r) => assert_eq!(r.outcome, Ok(payload.clone())),
            other => panic!("{other:?}"),
        }
    }
    let _sink = flood.await.unwrap();
    assert_eq!(server.stats().unsent_bytes, 0);
}

#[tokio::test(start_paused = true)]
async fn bootstraps_waiting_on_the_policy_are_bounded() {
    let limits = Limits {
        max_pending_policy_checks: 2,
        ..Limits::default()
    };
    let never = Policy::from_async(|_, _| std::future::pending());
    let (server, mut raw) =
        RawPeer::connect(Connection::builder().limits(limits).policy(never)).await;
    server
        .serve(counter_def(), counter_impl())
        .unwrap()
        .detach();
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
}
