//! Answers waiting to be sent under a listener's send budget, and long messages under its
//! receive budget (one budget for both, or one each), over WebSocket: the property of
//! `tests/send_budget.rs` (every answer arrives, in order; the budget comes back whole;
//! nothing is left), with the server's socket under `Metered` as a listener makes it. A
//! unit test because a listener's transport over an in-memory pipe is built with
//! crate-private parts, so that time can be paused.

use std::sync::Arc;
use std::time::Duration;

use bunite_wire::{Call, CallId, CapId, Decoder, Encoder, Frame, Hello, Text};
use proptest::prelude::*;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::{config, frame_bound, Metered, WsTransport};
use crate::dynamic::DynCap;
use crate::transport::{ByteBudget, MessageSinkExt, MessageSourceExt, Transport};
use crate::{CapDef, Connection, MethodDef, Record, Value};

const MAX: usize = 1 << 20;

#[derive(Debug, Clone)]
struct Peer {
    /// `(echo, n)`: an echo of `n` bytes, or a short call for an answer of `n` bytes.
    asks: Vec<(bool, usize)>,
    start_ms: u64,
    pause_ms: u64,
}

fn peer() -> impl Strategy<Value = Peer> {
    (
        proptest::collection::vec((any::<bool>(), 0usize..=150_000), 1..12),
        0u64..=200,
        0u64..=3,
    )
        .prop_map(|(asks, start_ms, pause_ms)| Peer {
            asks,
            start_ms,
            pause_ms,
        })
}

fn cap() -> (Arc<CapDef>, Arc<dyn crate::CapImpl>) {
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

fn call(target: CapId, id: u64, method: &str, args: Value) -> Frame {
    Frame::Call(Call {
        id: CallId(id),
        target,
        method: Text::copy_from(method),
        args,
        meta: None,
    })
}

async fn run_peers(budget: usize, pipe: usize, shared: bool, peers: Vec<Peer>) {
    let receive = ByteBudget::new(budget);
    let send = match shared {
        true => receive.clone(),
        false => ByteBudget::new(budget),
    };
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for (i, peer) in peers.into_iter().enumerate() {
        let (a, b) = tokio::io::duplex(pipe);
        let metered = Metered::new(
            a,
            Some(&receive),
            None,
            frame_bound(MAX),
            false,
            Role::Server,
        );
        let ws = WebSocketStream::from_raw_socket(metered, Role::Server, Some(config(MAX))).await;
        let (def, imp) = cap();
        let server = Connection::builder().serve(def, imp).connect(
            WsTransport::from_stream(ws, Role::Server, MAX, None).with_send_budget(send.clone()),
        );
        servers.push(server);
        let client = WsTransport::from_raw_socket(b, Role::Client, MAX).await;
        clients.push(tokio::spawn(async move {
            let (mut sink, mut source) = client.split();
            let (mut enc, mut dec) = (Encoder::new(), Decoder::new(Default::default()));
            let hello = Frame::Hello(Hello {
                v: 1,
                mode: "native".into(),
                features: vec![],
                max_bytes: MAX as u64,
                origin: String::new(),
            });
            let boot = call(
                CapId(0),
                1,
                "bootstrap",
                Record::new().with("name", "test.sized").into(),
            );
            for frame in [hello, boot] {
                let bytes = enc.encode_to_vec(&frame.to_value());
                sink.send(bytes.into()).await.unwrap();
            }
            let cap = loop {
                let msg = source
                    .recv()
                    .await
                    .unwrap()
                    .expect("the bootstrap's answer");
                if let Frame::Result(r) = dec.decode_frame(&msg).unwrap() {
                    match r.outcome {
                        Ok(Value::CapRef(cap)) => break cap,
                        other => panic!("peer {i}: bootstrap {other:?}"),
                    }
                }
            };
            let asks = peer.asks.clone();
            let writer = tokio::spawn(async move {
                for (k, &(echo, n)) in asks.iter().enumerate() {
                    let id = 2 + k as u64;
                    let frame = match echo {
                        true => call(cap, id, "echo", Value::Bin(vec![7; n])),
                        false => call(cap, id, "sized", Record::new().with("n", n as i64).into()),
                    };
                    let bytes = enc.encode_to_vec(&frame.to_value());
                    sink.send(bytes.into()).await.unwrap();
                }
                sink
            });
            tokio::time::sleep(Duration::from_millis(peer.start_ms)).await;
            for (k, &(echo, n)) in peer.asks.iter().enumerate() {
                if peer.pause_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(peer.pause_ms)).await;
                }
                let id = 2 + k as u64;
                let msg = source.recv().await.unwrap();
                let msg = msg.unwrap_or_else(|| panic!("peer {i}: ended before answer {id}"));
                match dec.decode_frame(&msg).unwrap() {
                    Frame::Result(r) => {
                        assert_eq!(r.id, CallId(id), "peer {i}");
                        let fill = if echo { 7 } else { 5 };
                        assert_eq!(r.outcome, Ok(Value::Bin(vec![fill; n])), "peer {i}");
                    }
                    other => panic!("peer {i}: {other:?}"),
                }
            }
            let sink = writer.await.unwrap();
            drop((sink, source));
        }));
    }
    for client in clients {
        timeout(Duration::from_secs(600), client)
            .await
            .expect("every answer arrives")
            .unwrap();
    }
    for server in &servers {
        timeout(Duration::from_secs(30), server.closed())
            .await
            .expect("a connection whose peer is gone closes");
        let stats = server.stats();
        assert!(stats.is_idle(), "{stats:?}");
    }
    assert_eq!(receive.available(), receive.limit());
    assert_eq!(send.available(), send.limit());
}

fn run_paused(body: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(body);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_answer_arrives_under_any_budget_and_the_budget_comes_back_whole(
        budget_kib in 160usize..=1024,
        pipe in prop_oneof![Just(1024usize), Just(4096), Just(16_384), Just(65_536), Just(262_144)],
        shared in any::<bool>(),
        peers in proptest::collection::vec(peer(), 1..=3),
    ) {
        run_paused(run_peers(budget_kib * 1024, pipe, shared, peers));
    }
}
