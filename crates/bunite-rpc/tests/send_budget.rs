//! Answers waiting to be sent under a listener's send budget, and long messages under its
//! receive budget (`transport::budget`; one budget for both, or one each), as a property:
//! whatever the budgets, the pipe, the sizes and the way the
//! peers read (late, slowly, in small pieces), every answer arrives, in order, and once
//! the connections close the budget is whole and nothing is left. With answers longer
//! than the overdraft (`transport::budget::ANSWER_OVERDRAFT`), only those may be refused
//! (`resource_exhausted`, the budget had no room for them), and every other one arrives. Connections that cannot
//! pay stop reading; this checks that they always read again (a lost wake-up would leave a
//! peer waiting until the write-stall limit cut it off, and its answers would be missing).
//! Over the byte stream and over WebSocket (a listener's connection, made over the pipe
//! by `bunite_rpc::testing::ws_listener_side`), on in-memory pipes, with paused time.
#![cfg(all(feature = "byte-stream", feature = "ws"))]

mod common;

use std::time::Duration;

use bunite_rpc::testing::ws_listener_side;
use bunite_rpc::transport::budget::ANSWER_OVERDRAFT;
use bunite_rpc::transport::byte_stream::ByteStream;
use bunite_rpc::transport::ws::{WsSink, WsSource, WsTransport};
use bunite_rpc::transport::{
    ByteBudget, ListenerConfig, MessageSinkExt, MessageSourceExt, Transport,
};
use bunite_rpc::wire::{CallId, CapId, Decoder, Encoder, Frame};
use bunite_rpc::{Connection, Limits, Record, Value};
use common::*;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The largest message, over WebSocket.
const MAX: usize = 1 << 20;

/// The transport under test.
#[derive(Debug, Clone, Copy)]
enum Kind {
    ByteStream,
    Ws,
}

/// One call: `sized {n}` (a short call for an answer of `n` bytes) or `echo` of `n` bytes
/// (a call as long as its answer).
#[derive(Debug, Clone)]
struct Ask {
    echo: bool,
    n: usize,
}

/// One peer: its calls, and how it reads: after `start_ms`, `chunk` bytes a read with
/// `pause_ms` between reads.
#[derive(Debug, Clone)]
struct Peer {
    asks: Vec<Ask>,
    start_ms: u64,
    chunk: usize,
    pause_ms: u64,
}

fn ask() -> impl Strategy<Value = Ask> {
    (any::<bool>(), 0usize..=150_000).prop_map(|(echo, n)| Ask { echo, n })
}

/// As [`ask`], with answers up to 600,000 bytes, beyond [`ANSWER_OVERDRAFT`] (calls
/// stay short: a long call would be over the receive budget).
fn long_ask() -> impl Strategy<Value = Ask> {
    prop_oneof![
        ask(),
        (0usize..=600_000).prop_map(|n| Ask { echo: false, n })
    ]
}

fn peer() -> impl Strategy<Value = Peer> {
    peer_of(ask())
}

fn peer_of(ask: impl Strategy<Value = Ask>) -> impl Strategy<Value = Peer> {
    (
        proptest::collection::vec(ask, 1..16),
        0u64..=200,
        prop_oneof![Just(512usize), Just(4096), Just(65_536)],
        0u64..=3,
    )
        .prop_map(|(asks, start_ms, chunk, pause_ms)| Peer {
            asks,
            start_ms,
            chunk,
            pause_ms,
        })
}

/// The raw peer's sending half.
enum Writer {
    Bytes(WriteHalf<DuplexStream>),
    Ws(WsSink<DuplexStream>),
}

impl Writer {
    async fn send(&mut self, enc: &mut Encoder, frame: &Frame) {
        match self {
            Writer::Bytes(wr) => wr.write_all(&length_prefixed(enc, frame)).await.unwrap(),
            Writer::Ws(sink) => {
                let body = enc.encode_to_vec(&frame.to_value());
                sink.send(body.into()).await.unwrap();
            }
        }
    }
}

/// The raw peer's receiving half: a byte stream read `chunk` bytes at a time, or
/// WebSocket messages.
enum Reader {
    Bytes {
        rd: ReadHalf<DuplexStream>,
        buf: Vec<u8>,
        chunk: Vec<u8>,
    },
    Ws(WsSource<DuplexStream>),
}

impl Reader {
    /// The next frame, waiting `pause` before each read; `None` once the server is gone.
    async fn next(&mut self, dec: &mut Decoder, pause: Duration) -> Option<Frame> {
        match self {
            Reader::Bytes { rd, buf, chunk } => loop {
                if let Some(frame) = take_frame(buf, dec) {
                    return Some(frame);
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                let n = rd.read(chunk).await.unwrap();
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            },
            Reader::Ws(source) => {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                let msg = source.recv().await.unwrap()?;
                Some(dec.decode_frame(&msg).expect("valid frame"))
            }
        }
    }
}

/// A server connection of `kind` over `a` under the two budgets, and the raw peer's halves
/// over `b`.
async fn connect(
    kind: Kind,
    builder: bunite_rpc::ConnectionBuilder,
    (a, b): (DuplexStream, DuplexStream),
    (receive, send): (&ByteBudget, &ByteBudget),
) -> (Connection, Writer, Reader) {
    match kind {
        Kind::ByteStream => {
            let (ar, aw) = tokio::io::split(a);
            let transport = ByteStream::new(ar, aw)
                .with_budget(receive.clone())
                .with_send_budget(send.clone());
            let (rd, wr) = tokio::io::split(b);
            let reader = Reader::Bytes {
                rd,
                buf: Vec::new(),
                chunk: vec![0; 4096],
            };
            (builder.connect(transport), Writer::Bytes(wr), reader)
        }
        Kind::Ws => {
            let config = ListenerConfig::default()
                .max_bytes(MAX)
                .receive_budget(receive.clone())
                .send_budget(send.clone())
                .receive_deadline(None);
            let server = builder.connect(ws_listener_side(a, &config).await);
            let (sink, source) = WsTransport::from_raw_socket(b, Role::Client, MAX)
                .await
                .split();
            (server, Writer::Ws(sink), Reader::Ws(source))
        }
    }
}

/// Runs `peers` against servers of `kind` under a receive budget and a send budget of
/// `budget` bytes each (one budget for both if `shared`), over pipes of `pipe` bytes, each
/// server with `max_unsent` as its own bound.
async fn run_peers(
    kind: Kind,
    (budget, shared): (usize, bool),
    pipe: usize,
    max_unsent: usize,
    peers: Vec<Peer>,
) {
    let receive = ByteBudget::new(budget);
    let send = match shared {
        true => receive.clone(),
        false => ByteBudget::new(budget),
    };
    let limits = Limits {
        max_unsent_bytes: max_unsent,
        ..Limits::default()
    };
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    for (i, peer) in peers.into_iter().enumerate() {
        let (def, imp) = sized_cap();
        let builder = Connection::builder().limits(limits.clone()).serve(def, imp);
        let pipes = tokio::io::duplex(pipe);
        let (server, mut writer, mut reader) =
            connect(kind, builder, pipes, (&receive, &send)).await;
        track(&server);
        servers.push(server);
        clients.push(tokio::spawn(async move {
            let (mut enc, mut dec) = (Encoder::new(), Decoder::new(Default::default()));
            let boot = Record::new().with("name", "test.sized").into();
            writer.send(&mut enc, &Frame::Hello(raw_hello())).await;
            writer
                .send(&mut enc, &call_frame(CapId(0), 1, "bootstrap", boot))
                .await;
            let cap = loop {
                let frame = reader.next(&mut dec, Duration::ZERO).await;
                match frame.expect("the server closed before the bootstrap") {
                    Frame::Result(r) => match r.outcome {
                        Ok(Value::CapRef(cap)) => break cap,
                        other => panic!("peer {i}: bootstrap {other:?}"),
                    },
                    _ => continue,
                }
            };
            let asks = peer.asks.clone();
            let sending = tokio::spawn(async move {
                for (k, a) in asks.iter().enumerate() {
                    let id = 2 + k as u64;
                    let frame = if a.echo {
                        call_frame(cap, id, "echo", Value::Bin(vec![7; a.n]))
                    } else {
                        let args = Record::new().with("n", a.n as i64).into();
                        call_frame(cap, id, "sized", args)
                    };
                    writer.send(&mut enc, &frame).await;
                }
                writer
            });
            tokio::time::sleep(Duration::from_millis(peer.start_ms)).await;
            if let Reader::Bytes { chunk, .. } = &mut reader {
                chunk.resize(peer.chunk, 0);
            }
            let pause = Duration::from_millis(peer.pause_ms);
            for (k, a) in peer.asks.iter().enumerate() {
                let id = 2 + k as u64;
                let frame = reader.next(&mut dec, pause).await;
                match frame.unwrap_or_else(|| panic!("peer {i}: ended before answer {id}")) {
                    Frame::Result(r) => {
                        assert_eq!(r.id, CallId(id), "peer {i}");
                        let fill = if a.echo { 7 } else { 5 };
                        match r.outcome {
                            // Only an answer beyond the overdraft may be refused, and only
                            // for the send budget.
                            Err(e) if a.n + 64 > ANSWER_OVERDRAFT => {
                                let message = e.message.as_deref().unwrap_or_default();
                                assert_eq!(e.code, "resource_exhausted", "peer {i}: {e:?}");
                                assert_eq!(e.reason(), Some("max_frame_bytes"), "peer {i}");
                                assert!(message.contains("send budget"), "{message}");
                            }
                            outcome => {
                                assert_eq!(outcome, Ok(Value::Bin(vec![fill; a.n])), "peer {i}")
                            }
                        }
                    }
                    other => panic!("peer {i}: {other:?}"),
                }
            }
            let writer = sending.await.unwrap();
            drop((writer, reader));
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
        assert!(server.stats().is_idle(), "{:?}", server.stats());
    }
    assert_eq!(receive.available(), receive.limit());
    assert_eq!(send.available(), send.limit());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn every_answer_arrives_under_any_budget_and_the_budget_comes_back_whole(
        budget_kib in 160usize..=1024,
        pipe in prop_oneof![Just(1024usize), Just(4096), Just(16_384), Just(65_536), Just(262_144)],
        small_unsent in any::<bool>(),
        shared in any::<bool>(),
        peers in proptest::collection::vec(peer(), 1..=3),
    ) {
        let max_unsent = if small_unsent { 64 * 1024 } else { 64 << 20 };
        run_paused(run_peers(Kind::ByteStream, (budget_kib * 1024, shared), pipe, max_unsent, peers));
    }

    /// The same over WebSocket (each peer's `chunk` does not apply: it reads messages).
    #[test]
    fn every_answer_arrives_over_websocket_and_the_budget_comes_back_whole(
        budget_kib in 160usize..=1024,
        pipe in prop_oneof![Just(1024usize), Just(4096), Just(16_384), Just(65_536), Just(262_144)],
        small_unsent in any::<bool>(),
        shared in any::<bool>(),
        peers in proptest::collection::vec(peer(), 1..=3),
    ) {
        let max_unsent = if small_unsent { 64 * 1024 } else { 64 << 20 };
        run_paused(run_peers(Kind::Ws, (budget_kib * 1024, shared), pipe, max_unsent, peers));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// As above with answers beyond the overdraft: those the budget cannot pay for when
    /// they are ready are refused (`resource_exhausted`), every other answer arrives.
    #[test]
    fn long_answers_arrive_or_are_refused_and_the_budget_comes_back_whole(
        budget_kib in 160usize..=1024,
        pipe in prop_oneof![Just(1024usize), Just(16_384), Just(262_144)],
        shared in any::<bool>(),
        ws in any::<bool>(),
        peers in proptest::collection::vec(peer_of(long_ask()), 1..=3),
    ) {
        let kind = if ws { Kind::Ws } else { Kind::ByteStream };
        run_paused(run_peers(kind, (budget_kib * 1024, shared), pipe, 64 << 20, peers));
    }
}

/// The case the property found: two connections, each reading the start of a long message
/// while the last one's buffer was still paid for, each held part of the budget and waited
/// for the rest, with the answers to their earlier messages paid from it too. They waited
/// for good (the byte stream now holds nothing of the budget while it waits).
#[test]
fn two_connections_holding_part_of_the_budget_do_not_wait_on_each_other() {
    let echo = |n| Ask { echo: true, n };
    let peers = vec![
        Peer {
            asks: vec![echo(86_432), echo(88_481)],
            start_ms: 0,
            chunk: 512,
            pause_ms: 2,
        },
        Peer {
            asks: vec![
                echo(962),
                Ask {
                    echo: false,
                    n: 41_567,
                },
                echo(108_069),
            ],
            start_ms: 1,
            chunk: 512,
            pause_ms: 0,
        },
    ];
    run_paused(run_peers(
        Kind::ByteStream,
        (160 * 1024, true),
        1024,
        64 << 20,
        peers,
    ));
}

/// The second case it found: the start of the next message, read within the free
/// allowance (16,383 bytes of it), was too long for the buffer the first fix moved it to,
/// so the connection kept what the last long message drew and waited for one byte more.
#[test]
fn a_connection_with_the_start_of_a_long_message_waits_holding_nothing() {
    let echo = |n| Ask { echo: true, n };
    let peers = vec![
        Peer {
            asks: vec![echo(16_353), echo(104_175), echo(104_176)],
            start_ms: 0,
            chunk: 512,
            pause_ms: 0,
        },
        Peer {
            asks: vec![
                Ask { echo: false, n: 0 },
                echo(92_373),
                echo(2021),
                echo(92_374),
            ],
            start_ms: 0,
            chunk: 512,
            pause_ms: 1,
        },
    ];
    run_paused(run_peers(
        Kind::ByteStream,
        (160 * 1024, true),
        16_384,
        64 << 20,
        peers,
    ));
}

/// The third: a small message read into the large buffer a long message had left (still
/// paid for) brought 64 KiB of the next long message with it, before that one was paid
/// for; the connection then waited for the rest of its charge holding those bytes.
#[test]
fn a_read_after_a_small_message_takes_no_more_of_the_next_than_the_allowance() {
    let echo = |n| Ask { echo: true, n };
    let peers = vec![
        Peer {
            asks: vec![echo(65_505), echo(111_740), echo(111_741)],
            start_ms: 0,
            chunk: 512,
            pause_ms: 0,
        },
        Peer {
            asks: vec![echo(84_808), echo(3344), echo(137_721)],
            start_ms: 102,
            chunk: 4096,
            pause_ms: 3,
        },
    ];
    run_paused(run_peers(
        Kind::ByteStream,
        (160 * 1024, true),
        65_536,
        64 << 20,
        peers,
    ));
}
