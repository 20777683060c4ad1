//! The WebSocket transport (PROTOCOL §2, §11): binary messages at `/rpc`, the `Origin`
//! header, text and oversize messages, sockets that close under pending calls, wrong paths.
#![cfg(feature = "ws")]

mod common;

use std::time::Duration;

use bunite_rpc::transport::ws::{self, Accepted, WsListener};
use bunite_rpc::transport::{ListenerConfig, MessageSinkExt, MessageSourceExt, Transport};
use bunite_rpc::wire::{
    CapId, DecodeLimits as WireLimits, Decoder, Encoder, Frame, Goaway, Hello, ResultFrame,
};
use bunite_rpc::{Code, Connection, Record, Value};
use bytes::Bytes;
use common::*;
use futures::{SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

/// A listener at `/rpc` on a free port, and its URL.
async fn listener(max_bytes: Option<usize>) -> (WsListener, String) {
    let mut config = ListenerConfig::default();
    if let Some(max) = max_bytes {
        config = config.max_bytes(max);
    }
    let l = WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config)
        .await
        .unwrap();
    let url = format!("ws://{}/rpc", l.local_addr().unwrap());
    (l, url)
}

fn accept_one(l: WsListener) -> tokio::task::JoinHandle<Accepted> {
    tokio::spawn(async move { timeout(WAIT, l.accept()).await.unwrap().unwrap() })
}

#[test]
fn a_counter_over_websocket_and_the_origin_is_reported() {
    run(async {
        let (l, url) = listener(None).await;
        let accepted = accept_one(l);
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Origin", "https://app.example".parse().unwrap());
        let client = tracked(ws::connect(request).await.unwrap());
        let accepted = timeout(WAIT, accepted).await.unwrap().unwrap();
        assert_eq!(accepted.origin.as_deref(), Some("https://app.example"));
        assert!(accepted.peer_addr.ip().is_loopback());
        let server = tracked(accepted.transport);
        serve_counter(&server).await;

        let counter = client.bootstrap(&counter_def()).await.unwrap();
        let r = counter
            .call_value("increment", Value::Record(Record::new().with("delta", 3)))
            .await
            .unwrap();
        assert_eq!(r, Value::Record(Record::new().with("count", 3)));
        drop(counter);
        assert_clean(&[&server, &client]).await;
        client.close();
        timeout(WAIT, server.closed()).await.unwrap();
    });
}

#[test]
fn a_socket_without_origin_reports_none() {
    run(async {
        let (l, url) = listener(None).await;
        let accepted = accept_one(l);
        let _client = ws::connect(url.as_str()).await.unwrap();
        let accepted = timeout(WAIT, accepted).await.unwrap().unwrap();
        assert_eq!(accepted.origin, None);
    });
}

/// A raw tungstenite client connected to a server connection, past the server's hello.
async fn raw_client(
    max_bytes: Option<usize>,
) -> (
    Connection,
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Decoder,
) {
    let (l, url) = listener(max_bytes).await;
    raw_client_of(l, &url).await
}

/// A raw tungstenite client of `l` at `url` and the server connection it accepted, past the
/// server's hello.
async fn raw_client_of(
    l: WsListener,
    url: &str,
) -> (
    Connection,
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Decoder,
) {
    let accepted = accept_one(l);
    let (mut raw, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let server = tracked(timeout(WAIT, accepted).await.unwrap().unwrap().transport);
    let mut dec = Decoder::new(WireLimits::default());
    match next_frame(&mut raw, &mut dec).await {
        Some(Frame::Hello(h)) => assert_eq!(h.v, 1),
        other => panic!("expected hello, got {other:?}"),
    }
    (server, raw, dec)
}

/// The next frame from the server (binary messages only); `None` once the socket closes.
async fn next_frame<S>(raw: &mut S, dec: &mut Decoder) -> Option<Frame>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match timeout(WAIT, raw.next()).await.expect("timed out") {
            Some(Ok(Message::Binary(b))) => return Some(dec.decode_frame(&b).expect("frame")),
            Some(Ok(Message::Text(t))) => panic!("the server sent text: {t}"),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

async fn expect_goaway<S>(raw: &mut S, dec: &mut Decoder) -> Goaway
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match next_frame(raw, dec).await {
            Some(Frame::Goaway(g)) => return g,
            Some(_) => continue,
            None => panic!("closed without goaway"),
        }
    }
}

#[test]
fn a_text_message_gets_goaway_invalid_argument_then_close() {
    run(async {
        let (server, mut raw, mut dec) = raw_client(None).await;
        raw.send(Message::text("hello?")).await.unwrap();
        let g = expect_goaway(&mut raw, &mut dec).await;
        assert_eq!(g.reason.as_deref(), Some("invalid_argument"));
        let e = g.error.expect("goaway error");
        assert_eq!(e.code, "invalid_argument");
        assert_eq!(
            e.message.as_deref(),
            Some("text message on the bunite socket")
        );
        assert!(
            next_frame(&mut raw, &mut dec).await.is_none(),
            "socket closed"
        );
        timeout(WAIT, server.closed()).await.unwrap();
    });
}

#[test]
fn an_oversize_message_gets_goaway_resource_exhausted() {
    run(async {
        let (server, mut raw, mut dec) = raw_client(Some(1024)).await;
        raw.send(Message::binary(vec![0xc0u8; 4096])).await.unwrap();
        let g = expect_goaway(&mut raw, &mut dec).await;
        assert_eq!(g.reason.as_deref(), Some("resource_exhausted"));
        let e = g.error.expect("goaway error");
        assert_eq!(e.code, "resource_exhausted");
        assert_eq!(e.reason(), Some("max_frame_bytes"));
        timeout(WAIT, server.closed()).await.unwrap();
    });
}

/// PROTOCOL §11: the goaway comes before the close, every time, even when the oversize
/// message's body is still arriving as the server closes (a reset would destroy the goaway
/// before the client reads it: close code 1006 in about half the runs before the fix).
#[test]
fn an_oversize_message_gets_goaway_then_a_close_frame_in_every_run() {
    run(async {
        for run in 0..50 {
            let (server, mut raw, mut dec) = raw_client(Some(1024)).await;
            // Large enough that the client is still sending when the server closes.
            let sent = raw.send(Message::binary(vec![0xc0u8; 4 << 20])).await;
            assert!(
                sent.is_ok(),
                "run {run}: the server reset the socket: {sent:?}"
            );
            let mut goaway = None;
            let close = loop {
                match timeout(WAIT, raw.next()).await.expect("timed out") {
                    Some(Ok(Message::Binary(b))) => {
                        if let Frame::Goaway(g) = dec.decode_frame(&b).expect("frame") {
                            goaway = Some(g);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => break Ok(frame),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break Err(e.to_string()),
                    None => break Err("ended without a close frame".into()),
                }
            };
            let g = goaway.unwrap_or_else(|| panic!("run {run}: no goaway before {close:?}"));
            assert_eq!(g.reason.as_deref(), Some("resource_exhausted"), "run {run}");
            let e = g.error.expect("goaway error");
            assert_eq!(e.reason(), Some("max_frame_bytes"), "run {run}");
            assert!(close.is_ok(), "run {run}: {close:?}");
            drop(raw);
            timeout(WAIT, server.closed()).await.unwrap();
        }
    });
}

/// A client connection against a hand-driven server socket that answers the bootstrap,
/// receives one more call, then goes away (with a close frame or without). The client's call must fail
/// `unavailable`.
async fn client_sees_the_socket_close(send_close_frame: bool) {
    let (l, url) = listener(None).await;
    let accepted = accept_one(l);
    let client = tracked(ws::connect(url.as_str()).await.unwrap());
    let (mut sink, mut source) = timeout(WAIT, accepted)
        .await
        .unwrap()
        .unwrap()
        .transport
        .split();
    let (mut enc, mut dec) = (Encoder::new(), Decoder::new(WireLimits::default()));
    sink.send(raw_hello().into()).await.unwrap();
    sink.flush().await.unwrap();

    let bootstrap = {
        let client = client.clone();
        tokio::spawn(async move {
            let counter = client.bootstrap(&counter_def()).await?;
            counter.call_value("wait", Value::Undefined).await
        })
    };
    let mut calls = 0;
    while calls < 2 {
        let msg = timeout(WAIT, source.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Frame::Call(call) = dec.decode_frame(&msg).unwrap() else {
            continue;
        };
        calls += 1;
        if call.method == "bootstrap" {
            let reply = Frame::Result(ResultFrame {
                id: call.id,
                outcome: Ok(Value::CapRef(CapId(2))),
            });
            sink.send(enc.encode_to_vec(&reply.to_value()).into())
                .await
                .unwrap();
            sink.flush().await.unwrap();
        }
    }
    if send_close_frame {
        sink.close().await.unwrap();
    }
    drop((sink, source));

    let e = timeout(WAIT, bootstrap)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    timeout(WAIT, client.closed()).await.unwrap();
    assert_eq!(client.stats().pending_calls, 0);
}

#[test]
fn a_close_frame_fails_the_clients_pending_calls_unavailable() {
    run(async {
        client_sees_the_socket_close(true).await;
    });
}

#[test]
fn a_socket_dropped_without_close_fails_the_clients_pending_calls_unavailable() {
    run(async {
        client_sees_the_socket_close(false).await;
    });
}

#[test]
fn a_wrong_path_is_refused_and_the_listener_goes_on() {
    run(async {
        let (l, url) = listener(None).await;
        let accepted = accept_one(l);
        let wrong = url.replace("/rpc", "/elsewhere");
        let e = ws::connect(wrong.as_str()).await.unwrap_err();
        assert!(e.report().contains("HTTP 404"), "{}", e.report());
        assert_eq!(e.io_kind(), Some(std::io::ErrorKind::ConnectionRefused));
        // The listener is still accepting.
        let _client = ws::connect(url.as_str()).await.unwrap();
        timeout(WAIT, accepted).await.unwrap().unwrap();
    });
}

#[test]
fn a_silent_client_does_not_hold_up_the_next_handshake() {
    run(async {
        let (l, url) = listener(None).await;
        // Connects and never sends a handshake: it would hold a serial listener for
        // HANDSHAKE_TIMEOUT (10 s).
        let addr = url
            .trim_start_matches("ws://")
            .trim_end_matches("/rpc")
            .to_owned();
        let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let client = tokio::spawn(async move { ws::connect(url.as_str()).await });
        let accepted = timeout(WAIT, l.accept())
            .await
            .expect("the real client waited behind the silent one");
        assert!(accepted.is_ok());
        assert!(timeout(WAIT, client).await.unwrap().unwrap().is_ok());
        assert!(WAIT < ListenerConfig::default().handshake_timeout);
    });
}

/// Dropping the listener (a server stopping) ends the handshakes it started: a client
/// halfway through its HTTP head has its socket closed at once, not at the handshake
/// timeout (60 s here), which kept the task, the socket and its slot that long.
#[test]
fn dropping_the_listener_ends_the_handshakes_in_progress() {
    run(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let config = ListenerConfig::default().handshake_timeout(Duration::from_secs(60));
        let l = WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config)
            .await
            .unwrap();
        let mut peer = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        peer.write_all(b"GET /rpc HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        // The handshake has started and waits for the rest of the head.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut rest = Vec::new();
        let early = timeout(Duration::from_millis(100), peer.read_to_end(&mut rest)).await;
        assert!(
            early.is_err(),
            "the socket closed before the listener was dropped"
        );
        drop(l);
        let end = timeout(WAIT, peer.read_to_end(&mut rest)).await;
        assert!(end.is_ok(), "the handshake outlived its listener");
    });
}

/// A dropped listener (a server stopping) refuses connections from then on, not once
/// its background accept loop next runs: the loop owned the socket and was only aborted,
/// so until the runtime dropped it the kernel went on accepting into its backlog (a
/// graceful stop under load returned with the port still taking connections, and a
/// server restarted on it could not bind). The connect below is made without yielding to
/// the runtime.
#[test]
fn a_dropped_listener_refuses_connections_at_once() {
    run(async {
        let (l, url) = listener(None).await;
        let addr = l.local_addr().unwrap();
        let client = ws::connect(url.as_str());
        let (accepted, client) = tokio::join!(l.accept(), client);
        let (_accepted, _client) = (accepted.unwrap(), client.unwrap());
        drop(l);
        let refused = std::net::TcpStream::connect(addr);
        assert!(refused.is_err(), "the dropped listener still accepts");
    });
}

/// A socket accepted elsewhere and handed to `accept_upgrade` has the config's
/// `handshake_timeout`, as the listener's sockets have: a peer that sends half an HTTP head
/// and stops is dropped then (it held the socket, and the caller's task, for as long as it
/// kept the connection open).
#[test]
fn accept_upgrade_gives_up_on_a_stalled_head_after_the_handshake_timeout() {
    run(async {
        use bunite_rpc::transport::TransportError;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = tokio::net::TcpStream::connect(tcp.local_addr().unwrap())
            .await
            .unwrap();
        let (socket, _) = tcp.accept().await.unwrap();
        peer.write_all(b"GET /rpc HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n")
            .await
            .unwrap();
        let limit = Duration::from_millis(200);
        let config = ListenerConfig::default().handshake_timeout(limit);
        let started = tokio::time::Instant::now();
        let upgraded = timeout(WAIT, ws::accept_upgrade(socket, "/rpc", &config))
            .await
            .expect("gave up at the handshake timeout");
        let took = started.elapsed();
        assert!(
            matches!(&upgraded, Err(TransportError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut),
            "{upgraded:?}"
        );
        assert!(took >= limit, "{took:?}");
        // The socket went with it: the peer sees its end.
        let mut rest = Vec::new();
        let end = timeout(WAIT, peer.read_to_end(&mut rest)).await;
        assert!(end.is_ok(), "the socket is still open");
    });
}

#[test]
fn the_listener_accepts_no_more_than_max_connections() {
    run(async {
        let config = ListenerConfig::default().max_connections(1);
        let l = WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config)
            .await
            .unwrap();
        let url = format!("ws://{}/rpc", l.local_addr().unwrap());
        let _c1 = ws::connect(url.as_str()).await.unwrap();
        let first = timeout(WAIT, l.accept()).await.unwrap().unwrap();
        let second = tokio::spawn(async move { ws::connect(url.as_str()).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!second.is_finished(), "a second socket was handshaken");
        // The slot comes back once the first transport is dropped.
        drop(first);
        timeout(WAIT, second).await.unwrap().unwrap().unwrap();
        timeout(WAIT, l.accept()).await.unwrap().unwrap();
    });
}

/// The bytes of a message being received are drawn from the listener's budget while it is
/// partly read, and come back once it is complete; small messages on other connections
/// never wait for them.
#[test]
fn a_partly_received_message_holds_the_listeners_budget_until_complete() {
    run(async {
        use bunite_rpc::transport::budget::FREE_PER_CONNECTION;
        use bunite_rpc::transport::ByteBudget;
        use tokio::io::AsyncWriteExt;

        let budget = ByteBudget::new(256 * 1024);
        let config = ListenerConfig::default()
            .max_bytes(200 * 1024)
            .receive_budget(budget.clone());
        let l = WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config)
            .await
            .unwrap();
        let addr = l.local_addr().unwrap();
        let url = format!("ws://{addr}/rpc");
        let serving = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok(a) = l.accept().await {
                let conn = tracked(a.transport);
                serve_counter(&conn).await;
                conns.push(conn);
            }
        });

        // A client that sends the header and part of a 150 KiB binary frame, by hand.
        let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut slow, _) = tokio_tungstenite::client_async(url.as_str(), socket)
            .await
            .unwrap();
        let len: u64 = 150 * 1024;
        let mut header = vec![0x82u8, 0x80 | 127];
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(&[0, 0, 0, 0]); // mask: the payload goes as it is
        let raw = slow.get_mut();
        raw.write_all(&header).await.unwrap();
        raw.write_all(&vec![0xc0u8; 100 * 1024]).await.unwrap();
        eventually(|| budget.available() <= 256 * 1024 - (100 * 1024 - FREE_PER_CONNECTION)).await;

        // Meanwhile another client is served as usual.
        let client = tracked(ws::connect(url.as_str()).await.unwrap());
        let counter = timeout(WAIT, client.bootstrap(&counter_def()))
            .await
            .unwrap()
            .unwrap();
        counter
            .call_value("increment", Value::Undefined)
            .await
            .unwrap();

        // The rest of the message: its bytes go back to the budget.
        let raw = slow.get_mut();
        raw.write_all(&vec![0xc0u8; 50 * 1024]).await.unwrap();
        eventually(|| budget.available() == 256 * 1024).await;
        serving.abort();
    });
}

/// A server transport whose peer completed the handshake and then reads nothing (so never
/// answers a ping) fails with `TimedOut` after about two ping intervals.
#[test]
fn a_peer_that_misses_a_pong_is_noticed() {
    run(async {
        let interval = Duration::from_millis(100);
        let config = ListenerConfig::default().ping_interval(Some(interval));
        let l = WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config)
            .await
            .unwrap();
        let url = format!("ws://{}/rpc", l.local_addr().unwrap());
        // Before the connection exists: its ping timer starts as the listener takes it,
        // which may be well before `accept` returns here on a loaded machine.
        let started = tokio::time::Instant::now();
        let (_silent, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        let accepted = timeout(WAIT, l.accept()).await.unwrap().unwrap();
        let (_sink, mut source) = accepted.transport.split();
        let error = timeout(WAIT, source.recv()).await.unwrap().unwrap_err();
        assert_eq!(
            error.io_kind(),
            Some(std::io::ErrorKind::TimedOut),
            "{error}"
        );
        assert!(
            error.report().contains("no WebSocket ping"),
            "{}",
            error.report()
        );
        assert!(started.elapsed() >= interval * 2, "{:?}", started.elapsed());
    });
}

/// Two ends that ping each other every 50 ms and read stay connected while idle.
#[test]
fn peers_that_answer_pings_stay_connected_while_idle() {
    run(async {
        let interval = Some(Duration::from_millis(50));
        let config = ListenerConfig::default().ping_interval(interval);
        let l = WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config)
            .await
            .unwrap();
        let url = format!("ws://{}/rpc", l.local_addr().unwrap());
        let client = ws::WsConnector::new()
            .ping_interval(interval)
            .connect(url.as_str())
            .await
            .unwrap();
        let (_client_sink, mut client_source) = client.split();
        let client_reads = tokio::spawn(async move { client_source.recv().await });
        let accepted = timeout(WAIT, l.accept()).await.unwrap().unwrap();
        let (_sink, mut source) = accepted.transport.split();
        let idle = timeout(Duration::from_millis(600), source.recv()).await;
        assert!(idle.is_err(), "the server's source ended: {idle:?}");
        assert!(!client_reads.is_finished(), "the client's source ended");
    });
}

/// A long message arrives whole, in order with the messages around it, at a raw
/// tungstenite peer and between bunite ends, each way. (Either end writes it as one frame
/// around tungstenite, so that tungstenite's write buffer does not keep its size:
/// `tests/ws_memory.rs`.)
#[test]
fn a_long_message_arrives_whole_and_in_order() {
    run(async {
        let long: Bytes = (0..3 * 128 * 1024 + 123)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>()
            .into();

        // Server to a raw peer: a short message, the long one, a short one.
        let (l, url) = listener(None).await;
        let accepted = accept_one(l);
        let (mut raw, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        let (mut sink, _source) = timeout(WAIT, accepted)
            .await
            .unwrap()
            .unwrap()
            .transport
            .split();
        let (before, after) = (Bytes::from_static(b"before"), Bytes::from_static(b"after"));
        for msg in [&before, &long, &after] {
            timeout(WAIT, sink.feed(msg.clone()))
                .await
                .unwrap()
                .unwrap();
        }
        timeout(WAIT, sink.flush()).await.unwrap().unwrap();
        for msg in [before, long.clone(), after] {
            let got = timeout(WAIT, raw.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(got, Message::Binary(msg));
        }

        // Between two bunite ends, each way.
        let (l, url) = listener(None).await;
        let accepted = accept_one(l);
        let (mut client_sink, mut client_source) = ws::connect(url.as_str()).await.unwrap().split();
        let (mut server_sink, mut server_source) = timeout(WAIT, accepted)
            .await
            .unwrap()
            .unwrap()
            .transport
            .split();
        passes(&mut client_sink, &mut server_source, &long).await;
        passes(&mut server_sink, &mut client_source, &long).await;
        // Closing after a long message: the close comes after its last fragment.
        timeout(WAIT, client_sink.feed(long.clone()))
            .await
            .unwrap()
            .unwrap();
        timeout(WAIT, client_sink.close()).await.unwrap().unwrap();
        let got = timeout(WAIT, server_source.recv()).await.unwrap().unwrap();
        assert_eq!(got.as_deref(), Some(&long[..]));
        assert_eq!(
            timeout(WAIT, server_source.recv()).await.unwrap().unwrap(),
            None
        );
    });
}

/// `msg` sent on `sink` arrives whole at `source`.
async fn passes(
    sink: &mut impl bunite_rpc::transport::MessageSink,
    source: &mut impl bunite_rpc::transport::MessageSource,
    msg: &Bytes,
) {
    timeout(WAIT, sink.send(msg.clone()))
        .await
        .unwrap()
        .unwrap();
    let got = timeout(WAIT, source.recv()).await.unwrap().unwrap();
    assert_eq!(got.as_deref(), Some(&msg[..]));
}

/// Eight messages of the largest size at once, each sent as one frame (as browsers send
/// them), under a budget of four: each is paid for whole when its header arrives, so four
/// are received at a time and every sender gets its answer (a goaway: the bytes are no
/// frame). Drawn read by read, all eight took a share of the budget and waited for more
/// until the server dropped them for missed pongs.
#[test]
fn eight_maximal_messages_at_once_under_a_budget_of_four_all_get_answered() {
    run(async {
        use bunite_rpc::transport::ByteBudget;

        let max = 1 << 20;
        let budget = ByteBudget::new(4 * max);
        let config = ListenerConfig::default()
            .max_bytes(max)
            .receive_budget(budget.clone());
        let l = WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config)
            .await
            .unwrap();
        let url = format!("ws://{}/rpc", l.local_addr().unwrap());
        let serving = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok(a) = l.accept().await {
                conns.push(tracked(a.transport));
            }
        });
        let senders = (0..8).map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let (mut raw, _) = tokio_tungstenite::connect_async(url.as_str())
                    .await
                    .unwrap();
                let mut dec = Decoder::new(WireLimits::default());
                raw.send(Message::binary(vec![0xc1u8; max])).await.unwrap();
                expect_goaway(&mut raw, &mut dec).await
            })
        });
        let answers = timeout(Duration::from_secs(20), futures::future::join_all(senders))
            .await
            .expect("every sender is answered");
        for goaway in answers {
            let goaway = goaway.unwrap();
            assert_eq!(
                goaway.error.map(|e| e.code).as_deref(),
                Some("invalid_argument")
            );
        }
        eventually(|| budget.available() == budget.limit()).await;
        serving.abort();
    });
}

/// A listener whose budget is below its frame limit: a message longer than the budget and
/// a connection's free allowance could never be paid for. It gets goaway
/// `resource_exhausted` (`max_frame_bytes`), as over the byte stream, whether its one
/// frame announces its size or its fragments (a ping between each) add up to it; the
/// budget comes back whole. (It used to take the whole budget and wait for more that nothing could give, holding
/// the budget for as long as the peer kept its socket open.)
#[test]
fn a_message_longer_than_the_listeners_budget_gets_goaway_and_the_budget_comes_back() {
    run(async {
        use bunite_rpc::transport::ByteBudget;
        use tokio::io::AsyncWriteExt;

        let budget = ByteBudget::new(256 * 1024);
        let config = ListenerConfig::default()
            .max_bytes(1 << 20)
            .receive_budget(budget.clone());
        let len = 512 * 1024;
        let one_frame = [ws_client_header(0x82, len), vec![0; len]].concat();
        let mut fragments = Vec::new();
        for (i, first) in [0x02, 0x00, 0x00, 0x80].into_iter().enumerate() {
            fragments.extend(ws_client_header(first, len / 4));
            fragments.extend(vec![i as u8; len / 4]);
            fragments.extend(ws_client_header(0x89, 0));
        }
        for (what, bytes) in [("one frame", one_frame), ("fragments", fragments)] {
            let l = WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config.clone())
                .await
                .unwrap();
            let url = format!("ws://{}/rpc", l.local_addr().unwrap());
            let (server, mut raw, mut dec) = raw_client_of(l, &url).await;
            // The server drains what follows its goaway: the whole message goes.
            let sent = timeout(WAIT, raw.get_mut().write_all(&bytes)).await;
            assert!(matches!(sent, Ok(Ok(()))), "{what}: {sent:?}");
            let goaway = expect_goaway(&mut raw, &mut dec).await;
            assert_eq!(
                goaway.reason.as_deref(),
                Some("resource_exhausted"),
                "{what}"
            );
            let e = goaway.error.expect("goaway error");
            assert_eq!(e.reason(), Some("max_frame_bytes"), "{what}");
            timeout(WAIT, server.closed()).await.unwrap();
            assert_eq!(server.stats().pending_calls, 0);
            eventually(|| budget.available() == budget.limit()).await;
        }
    });
}

/// A listener whose messages must arrive within `grace` (the rate allowance is
/// negligible), that never pings (so only the deadline can end a connection), drawing on
/// `budget`; its address and URL.
async fn timed_listener(
    grace: Duration,
    budget: &bunite_rpc::transport::ByteBudget,
) -> (WsListener, String) {
    use bunite_rpc::transport::ReceiveDeadline;
    let config = ListenerConfig::default()
        .ping_interval(None)
        .receive_budget(budget.clone())
        .receive_deadline(Some(ReceiveDeadline::new(grace, 1 << 30)));
    let l = WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config)
        .await
        .unwrap();
    let url = format!("ws://{}/rpc", l.local_addr().unwrap());
    (l, url)
}

/// A peer that sends the header and part of a long frame (enough to be paid for), then
/// stops, gets a goaway `deadline_exceeded` once the listener's receive deadline has
/// passed, and its message's bytes go back to the budget.
#[test]
fn a_stalled_frame_gets_goaway_deadline_exceeded() {
    run(async {
        use tokio::io::AsyncWriteExt;
        let grace = Duration::from_millis(300);
        let budget = bunite_rpc::transport::ByteBudget::new(1 << 20);
        let (l, url) = timed_listener(grace, &budget).await;
        let (server, mut raw, mut dec) = raw_client_of(l, &url).await;
        let len = 150 * 1024;
        // Before the bytes go: on two workers the server may take them, and start the
        // message's clock, before the writes return here.
        let started = tokio::time::Instant::now();
        raw.get_mut()
            .write_all(&ws_client_header(0x82, len))
            .await
            .unwrap();
        raw.get_mut().write_all(&[0u8; 20 * 1024]).await.unwrap();
        eventually(|| budget.available() < 1 << 20).await;
        let goaway = expect_goaway(&mut raw, &mut dec).await;
        assert!(started.elapsed() >= grace, "{:?}", started.elapsed());
        assert_eq!(goaway.reason.as_deref(), Some("deadline_exceeded"));
        let e = goaway.error.expect("goaway error");
        assert_eq!(e.code, "deadline_exceeded");
        let message = e.message.unwrap_or_default();
        assert!(
            message.contains(&format!("{} bytes", len + 14)),
            "{message}"
        );
        timeout(WAIT, server.closed()).await.unwrap();
        assert_eq!(server.stats().pending_calls, 0);
        eventually(|| budget.available() == 1 << 20).await;
    });
}

/// A hello as a raw peer sends it.
fn raw_hello() -> Vec<u8> {
    let hello = Frame::Hello(Hello {
        v: 1,
        mode: "native".into(),
        features: vec![],
        max_bytes: 64 << 20,
        origin: "test://raw".into(),
    });
    Encoder::new().encode_to_vec(&hello.to_value())
}

/// A server frame's header announcing 150 KiB and its first KiB, then nothing more.
async fn write_a_stalled_frame(raw: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut header = vec![0x82, 127];
    header.extend_from_slice(&(150u64 * 1024).to_be_bytes());
    raw.write_all(&header).await.unwrap();
    raw.write_all(&[0u8; 1024]).await.unwrap();
}

/// A WebSocket server that accepts one client, sends it the start of a long frame
/// ([`write_a_stalled_frame`]), says so, and keeps the socket open until the client goes:
/// its URL, the word that the frame's start is written, and its task.
async fn stalling_server() -> (
    String,
    tokio::sync::oneshot::Receiver<()>,
    tokio::task::JoinHandle<()>,
) {
    use tokio::io::AsyncReadExt;
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/rpc", tcp.local_addr().unwrap());
    let (stalled_tx, stalled) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let (socket, _) = tcp.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
        write_a_stalled_frame(ws.get_mut()).await;
        let _ = stalled_tx.send(());
        let mut rest = Vec::new();
        let _ = ws.get_mut().read_to_end(&mut rest).await;
    });
    (url, stalled, server)
}

/// A client may bound how long a server's message takes to arrive: against a server that
/// sends the start of a long frame and stops, its source fails with `TooSlow` once the
/// deadline has passed; without one (`None`) it keeps waiting.
#[test]
fn a_client_with_a_receive_deadline_gives_up_on_a_stalled_server() {
    run(async {
        use bunite_rpc::transport::{ReceiveDeadline, TransportError};
        let grace = Duration::from_millis(300);
        for deadline in [Some(ReceiveDeadline::new(grace, 1 << 30)), None] {
            let (url, _stalled, server) = stalling_server().await;
            // Before the connection exists: the stalled frame's clock cannot start sooner.
            let started = tokio::time::Instant::now();
            let transport = ws::WsConnector::new()
                .ping_interval(None)
                .receive_deadline(deadline)
                .connect(url.as_str())
                .await
                .unwrap();
            let (sink, mut source) = transport.split();
            match deadline {
                Some(_) => {
                    let got = timeout(WAIT, source.recv())
                        .await
                        .expect("the deadline fires");
                    assert!(
                        matches!(got, Err(TransportError::TooSlow { len: Some(_), .. })),
                        "{got:?}"
                    );
                    assert!(started.elapsed() >= grace, "{:?}", started.elapsed());
                }
                None => {
                    let waited = timeout(grace * 3, source.recv()).await;
                    assert!(
                        waited.is_err(),
                        "no deadline: still waiting, got {waited:?}"
                    );
                }
            }
            drop((sink, source));
            timeout(WAIT, server).await.unwrap().unwrap();
        }
    });
}

/// A connector left at its defaults has the default receive deadline, as every byte stream
/// does: a server that sends the start of a long frame and stops is let go at the default
/// grace (30 s), where it used to be waited for as long as it kept the socket open.
#[test]
fn a_default_client_gives_up_on_a_stalled_server_at_the_default_deadline() {
    run_on_one_thread(async {
        use bunite_rpc::transport::{ReceiveDeadline, TransportError};
        let grace = ReceiveDeadline::default().grace;
        let (url, stalled, server) = stalling_server().await;
        let transport = ws::WsConnector::new()
            .ping_interval(None)
            .connect(url.as_str())
            .await
            .unwrap();
        let (sink, mut source) = transport.split();
        // The frame's start is in our socket before time is paused, so the first timer the
        // paused clock jumps to is the message's deadline.
        stalled.await.unwrap();
        tokio::time::pause();
        let started = tokio::time::Instant::now();
        // Two minutes, well inside the run's own bound of five (on the same paused clock).
        let got = timeout(Duration::from_secs(120), source.recv()).await;
        let took = started.elapsed();
        tokio::time::resume();
        let got = got.expect("no TooSlow within two minutes: the stalled message is not timed");
        assert!(
            matches!(got, Err(TransportError::TooSlow { len: Some(_), .. })),
            "{got:?}"
        );
        assert!(
            took >= grace && took < grace + Duration::from_secs(1),
            "{took:?}"
        );
        drop((sink, source));
        timeout(WAIT, server).await.unwrap().unwrap();
    });
}

/// And over a connection: the client answers the stalled message with a goaway
/// `deadline_exceeded`, as a listener does, and closes with nothing left.
#[test]
fn a_client_connection_sends_goaway_when_the_server_stalls_a_message() {
    run(async {
        use bunite_rpc::transport::ReceiveDeadline;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/rpc", tcp.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (socket, _) = tcp.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
            ws.send(Message::binary(raw_hello())).await.unwrap();
            write_a_stalled_frame(ws.get_mut()).await;
            let mut dec = Decoder::new(WireLimits::default());
            expect_goaway(&mut ws, &mut dec).await
        });
        let grace = Duration::from_millis(300);
        let transport = ws::WsConnector::new()
            .ping_interval(None)
            .receive_deadline(Some(ReceiveDeadline::new(grace, 1 << 30)))
            .connect(url.as_str())
            .await
            .unwrap();
        let client = tracked(transport);
        let goaway = timeout(WAIT, server).await.unwrap().unwrap();
        assert_eq!(goaway.reason.as_deref(), Some("deadline_exceeded"));
        assert_eq!(goaway.error.expect("an error").code, "deadline_exceeded");
        timeout(WAIT, client.closed()).await.unwrap();
        assert_clean(&[&client]).await;
    });
}

/// Pings between the fragments of a message keep the socket alive but do not extend the
/// message's deadline: a peer that sends one fragment and then only pings is cut off.
#[test]
fn pings_inside_a_fragmented_message_do_not_extend_its_deadline() {
    run(async {
        use tokio::io::AsyncWriteExt;
        let grace = Duration::from_millis(400);
        let budget = bunite_rpc::transport::ByteBudget::new(256 << 20);
        let (l, url) = timed_listener(grace, &budget).await;
        let (server, mut raw, mut dec) = raw_client_of(l, &url).await;
        // A first fragment (no FIN), whole.
        let mut first = ws_client_header(0x02, 1000);
        first.extend_from_slice(&[0u8; 1000]);
        // Before the bytes go: on two workers the server may take them, and start the
        // message's clock, before the write returns here.
        let started = tokio::time::Instant::now();
        raw.get_mut().write_all(&first).await.unwrap();
        let mut pings = 0;
        let goaway = loop {
            raw.get_mut()
                .write_all(&ws_client_header(0x89, 0))
                .await
                .unwrap();
            pings += 1;
            assert!(started.elapsed() < WAIT, "no goaway after {pings} pings");
            match timeout(Duration::from_millis(100), raw.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(Message::Binary(b)))) => match dec.decode_frame(&b).expect("frame") {
                    Frame::Goaway(g) => break g,
                    _ => continue,
                },
                Ok(Some(Ok(_))) => continue,
                other => panic!("closed without goaway: {other:?}"),
            }
        };
        let took = started.elapsed();
        assert!(took >= grace && took < grace * 3, "{took:?}");
        assert!(pings >= 3, "{pings} pings");
        assert_eq!(goaway.reason.as_deref(), Some("deadline_exceeded"));
        timeout(WAIT, server.closed()).await.unwrap();
        assert_eq!(server.stats().pending_calls, 0);
        eventually(|| budget.available() == 256 << 20).await;
    });
}

/// A message sent slowly, but within its deadline, arrives whole; so does the next one,
/// after a pause longer than the deadline between the two.
#[test]
fn a_slow_message_within_its_deadline_arrives() {
    run(async {
        use tokio::io::AsyncWriteExt;
        let budget = bunite_rpc::transport::ByteBudget::new(1 << 20);
        let (l, url) = timed_listener(Duration::from_millis(800), &budget).await;
        let accepted = accept_one(l);
        let (mut raw, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        let (_sink, mut source) = timeout(WAIT, accepted)
            .await
            .unwrap()
            .unwrap()
            .transport
            .split();
        let body = vec![9u8; 3000];
        let mut frame = ws_client_header(0x82, body.len());
        frame.extend_from_slice(&body);
        for round in 0..2 {
            let reading = tokio::spawn(async move {
                let got = source.recv().await;
                (source, got)
            });
            for piece in frame.chunks(700) {
                raw.get_mut().write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let (back, got) = timeout(WAIT, reading).await.unwrap().unwrap();
            assert_eq!(got.unwrap().unwrap(), &body[..], "round {round}");
            source = back;
            // Quiet between messages for longer than a message's deadline.
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    });
}

/// The `ws_frames` fuzz target's corpus (`fuzz/corpus/ws_frames`), replayed on stable Rust:
/// each input runs the harness, which checks that cutting long frames into fragments, or
/// taking them whole, changes nothing tungstenite reads.
#[test]
fn the_ws_frames_fuzz_corpus_replays_cleanly() {
    let outcomes = replay_corpus("ws_frames", 5, ws::fuzz::ws_frames);
    let messages: usize = outcomes.iter().map(|o| o.messages).sum();
    let refused = outcomes.iter().filter(|o| o.refused).count();
    let cut = outcomes.iter().filter(|o| o.cut).count();
    let whole: usize = outcomes.iter().map(|o| o.taken_whole).sum();
    // The corpus reaches every side: messages read, inputs refused, frames cut or taken
    // whole.
    assert!(
        messages > 0 && refused > 0 && cut > 0 && whole > 0,
        "{messages} messages, {refused} refused, {cut} cut, {whole} taken whole"
    );
}

/// Frames a server sends with its handshake response reach the client, in one write with
/// it or cut anywhere: the client's socket is made afresh after the handshake (so that it
/// does not keep tungstenite's handshake buffer), which is safe only because the handshake
/// read took the response's head and nothing after it.
#[test]
fn frames_sent_with_the_handshake_response_are_not_lost() {
    run(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
        let small = b"first".to_vec();
        let long: Vec<u8> = (0..3_000u32).map(|i| (i % 251) as u8).collect();
        // All in one write (the client's first read takes the response and both frames), and
        // in pieces of 3, 5 and 150 bytes (reads that end inside the head's blank line, inside
        // a frame header, inside a payload). Not of 1 or 2: tungstenite takes a head in more
        // than 64 reads averaging under 128 bytes for an attack.
        for piece in [usize::MAX, 3, 5, 150] {
            let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("ws://{}/rpc", tcp.local_addr().unwrap());
            let (to_send, long_sent) = (small.clone(), long.clone());
            let server = tokio::spawn(async move {
                let (mut socket, _) = tcp.accept().await.unwrap();
                socket.set_nodelay(true).unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    socket.read_exact(&mut byte).await.unwrap();
                    head.push(byte[0]);
                }
                let head = String::from_utf8(head).unwrap();
                let key = head
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("sec-websocket-key:"))
                    .and_then(|l| l.split_once(':'))
                    .expect("a key")
                    .1
                    .trim();
                let mut out = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                 Upgrade: websocket\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                    derive_accept_key(key.as_bytes())
                )
                .into_bytes();
                out.extend([0x82, to_send.len() as u8]);
                out.extend(&to_send);
                out.extend([0x82, 126]);
                out.extend((long_sent.len() as u16).to_be_bytes());
                out.extend(&long_sent);
                for chunk in out.chunks(piece.min(out.len())) {
                    socket.write_all(chunk).await.unwrap();
                    tokio::task::yield_now().await;
                }
                let mut rest = Vec::new();
                let _ = socket.read_to_end(&mut rest).await;
            });
            let transport = ws::WsConnector::new()
                .ping_interval(None)
                .connect(url.as_str())
                .await
                .unwrap();
            let (sink, mut source) = transport.split();
            let first = timeout(WAIT, source.recv()).await.unwrap().unwrap();
            assert_eq!(first.as_deref(), Some(&small[..]), "pieces of {piece}");
            let second = timeout(WAIT, source.recv()).await.unwrap().unwrap();
            assert_eq!(second.as_deref(), Some(&long[..]), "pieces of {piece}");
            drop((sink, source));
            timeout(WAIT, server).await.unwrap().unwrap();
        }
    });
}

/// A peer that sends pings and never reads the pongs: tungstenite moves each pong it
/// cannot write into its write buffer, one more per ping, outside every budget (64 MiB of
/// pings were all read, the pongs held). The server stops reading such a peer once a few
/// dozen pongs are owed, as it stops reading one that does not read its answers; once the
/// peer goes, so does the connection.
#[test]
fn a_peer_that_floods_pings_and_reads_no_pong_is_not_read_without_bound() {
    run(async {
        use tokio::io::AsyncWriteExt;
        let config = ListenerConfig::default().ping_interval(None);
        let l = WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config)
            .await
            .unwrap();
        let url = format!("ws://{}/rpc", l.local_addr().unwrap());
        let accepted = accept_one(l);
        // A small receive window, so that the server's pongs back up at once.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        socket.set_send_buffer_size(64 * 1024).unwrap();
        let addr = url.trim_start_matches("ws://").trim_end_matches("/rpc");
        let tcp = socket.connect(addr.parse().unwrap()).await.unwrap();
        let (mut raw, _) = tokio_tungstenite::client_async(url.as_str(), tcp)
            .await
            .unwrap();
        let server = tracked(timeout(WAIT, accepted).await.unwrap().unwrap().transport);
        // Pings of the largest size (125 bytes), about a MiB of them per write.
        let mut ping = ws_client_header(0x89, 125);
        ping.extend_from_slice(&[7u8; 125]);
        let chunk: Vec<u8> = ping
            .iter()
            .copied()
            .cycle()
            .take(ping.len() * 8000)
            .collect();
        const FLOOD: usize = 64 << 20;
        let mut sent = 0;
        while sent < FLOOD {
            match timeout(Duration::from_secs(2), raw.get_mut().write_all(&chunk)).await {
                Ok(written) => written.unwrap(),
                Err(_) => break, // The server stopped reading.
            }
            sent += chunk.len();
        }
        assert!(
            sent < 16 << 20,
            "the server read {} MiB of pings whose pongs it could not send",
            sent >> 20
        );
        drop(raw);
        timeout(WAIT, server.closed()).await.unwrap();
        assert_eq!(server.stats().pending_calls, 0);
    });
}

/// A ping that arrives while a long message of ours is on its way (its pong waits behind
/// the message) does not stop the server reading: the peer, which hears nothing of ours
/// until the message ends, may ping then and is still reading; it may be waiting for its
/// own message to go through before it reads on.
#[test]
fn a_ping_while_a_long_message_is_on_its_way_does_not_stop_reading() {
    run(async {
        let (l, url) = listener(None).await;
        let accepted = accept_one(l);
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let addr = url.trim_start_matches("ws://").trim_end_matches("/rpc");
        let tcp = socket.connect(addr.parse().unwrap()).await.unwrap();
        let (mut raw, _) = tokio_tungstenite::client_async(url.as_str(), tcp)
            .await
            .unwrap();
        let (mut sink, mut source) = timeout(WAIT, accepted)
            .await
            .unwrap()
            .unwrap()
            .transport
            .split();
        let long = Bytes::from(vec![5u8; 8 << 20]);
        let sending = tokio::spawn(async move {
            sink.send(long).await.unwrap();
            sink
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!sending.is_finished(), "the long message went out unread");
        raw.send(Message::Ping(Bytes::from_static(b"p")))
            .await
            .unwrap();
        raw.send(Message::binary(b"after".to_vec())).await.unwrap();
        let got = timeout(WAIT, source.recv()).await.expect("reading stopped");
        assert_eq!(got.unwrap().as_deref(), Some(&b"after"[..]));
        // The peer reads on: the long message (after the server's hello), then the pong.
        let mut long_ones = 0;
        loop {
            match timeout(WAIT, raw.next()).await.unwrap().unwrap().unwrap() {
                Message::Binary(b) if b.len() == 8 << 20 => long_ones += 1,
                Message::Binary(_) => {}
                Message::Pong(p) => {
                    assert_eq!(&p[..], b"p");
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(long_ones, 1, "the pong came before the long message ended");
        let mut sink = timeout(WAIT, sending).await.unwrap().unwrap();
        sink.close().await.unwrap();
        drop(raw);
        assert!(matches!(
            timeout(WAIT, source.recv()).await.unwrap(),
            Ok(None) | Err(_)
        ));
    });
}

/// A message in fragments is paid for at the frame limit; one that goes on beyond it (its
/// fragments' headers count) while the budget is held by another message waiting for its
/// whole is refused (goaway `resource_exhausted`, `max_frame_bytes`) instead of waiting
/// for a top-up holding what it drew, and the waiting message goes through. It used to
/// wait behind the other, which waited for what it held: neither connection read again
/// (`tests/random_receive_budget.rs`, seed 31).
#[test]
fn a_message_in_fragments_past_its_charge_never_waits_on_a_message_waiting_for_it() {
    run(async {
        use bunite_rpc::transport::budget::FREE_PER_CONNECTION;
        use bunite_rpc::transport::ByteBudget;
        use tokio::io::AsyncWriteExt;

        let max = 64 * 1024;
        let budget = ByteBudget::new(80_000);
        let config = ListenerConfig::default()
            .max_bytes(max)
            .ping_interval(None)
            .receive_budget(budget.clone());
        let l = WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config)
            .await
            .unwrap();
        let url = format!("ws://{}/rpc", l.local_addr().unwrap());
        let serving = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok(a) = l.accept().await {
                let conn = tracked(a.transport);
                serve_counter(&conn).await;
                conns.push(conn);
            }
        });
        let limits = bunite_rpc::Limits {
            max_bytes: max,
            ..Default::default()
        };
        let transport = ws::connect(url.as_str()).await.unwrap();
        let client = tracked_with(Connection::builder().limits(limits), transport);
        let counter = timeout(WAIT, client.bootstrap(&counter_def()))
            .await
            .unwrap()
            .unwrap();

        // A message in fragments of 16 KiB, 80 KiB in all: its first fragment and a little
        // of the second are paid for at the frame limit.
        let (mut raw, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        let mut dec = Decoder::new(WireLimits::default());
        assert!(matches!(
            next_frame(&mut raw, &mut dec).await,
            Some(Frame::Hello(_))
        ));
        raw.send(Message::binary(raw_hello())).await.unwrap();
        let piece = 16 * 1024;
        let mut fragments = Vec::new();
        for (i, first) in [0x02, 0x00, 0x00, 0x00, 0x80].into_iter().enumerate() {
            fragments.extend(ws_client_header(first, piece));
            fragments.extend(vec![i as u8; piece]);
        }
        let start = piece + 2 * 8 + 1000;
        raw.get_mut().write_all(&fragments[..start]).await.unwrap();
        eventually(|| budget.limit() - budget.available() > max - FREE_PER_CONNECTION).await;

        // A 48 KiB echo waits for its whole, more than is left.
        let value = Value::Bin(vec![3u8; 48 * 1024]);
        let echo = {
            let (counter, value) = (counter.clone(), value.clone());
            tokio::spawn(async move { counter.call_value("echo", value).await })
        };
        eventually(|| budget.available() == 0).await;

        // The rest of the fragments: refused, and the echo goes through.
        raw.get_mut().write_all(&fragments[start..]).await.unwrap();
        let goaway = expect_goaway(&mut raw, &mut dec).await;
        assert_eq!(goaway.reason.as_deref(), Some("resource_exhausted"));
        assert_eq!(
            goaway
                .error
                .and_then(|e| e.reason().map(str::to_owned))
                .as_deref(),
            Some("max_frame_bytes")
        );
        let echoed = timeout(WAIT, echo).await.expect("the echo went through");
        assert_eq!(echoed.unwrap().unwrap(), value);
        drop((raw, counter));
        client.close();
        timeout(WAIT, client.closed()).await.unwrap();
        eventually(|| budget.available() == budget.limit()).await;
        serving.abort();
    });
}

// The wrong scheme: a byte-stream client at a WebSocket port and the reverse (RELIABILITY,
// "Two loose ends").

/// A `tcp://` client at a WebSocket listener: the listener reads our hello as a request
/// that is not HTTP and closes without a byte, and the client's error says that a
/// WebSocket endpoint wants `ws://` (it said only "transport closed").
#[cfg(feature = "byte-stream")]
#[test]
fn a_tcp_client_at_a_websocket_listener_is_told_to_use_ws() {
    use bunite_rpc::transport::byte_stream;
    run(async {
        let (l, _url) = listener(None).await;
        let client = tracked(
            byte_stream::tcp_connect(l.local_addr().unwrap())
                .await
                .unwrap(),
        );
        let e = client.bootstrap(&counter_def()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e}");
        timeout(WAIT, client.closed()).await.unwrap();
        let hint = ["without sending a byte", "use ws://HOST:PORT/PATH"];
        // The bootstrap waits for the server's hello and gets the cause, unless (on two
        // workers) the connection had closed before it was made: `closed_by` tells then.
        if e.local_kind() != Some(bunite_rpc::LocalError::Closed) {
            assert!(hint.iter().all(|h| e.to_string().contains(h)), "{e}");
        }
        let why = client.closed_by().expect("the cause").status().message;
        assert!(hint.iter().all(|h| why.contains(h)), "{why}");
    });
}

/// A `ws://` client at a byte-stream listener: the server's answer is its hello, length
/// first, and the client's error says the answer is not HTTP and names `tcp://` (it said
/// only "httparse error: invalid HTTP version"). The server reads the upgrade request's
/// `"GET "` as a length and says it is an HTTP request.
#[cfg(feature = "byte-stream")]
#[test]
fn a_websocket_client_at_a_byte_stream_listener_is_told_to_use_tcp() {
    use bunite_rpc::transport::byte_stream::TcpMessageListener;
    run(async {
        let l = TcpMessageListener::bind("127.0.0.1:0", ListenerConfig::default())
            .await
            .unwrap();
        let url = format!("ws://{}/rpc", l.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (transport, _) = l.accept().await.unwrap();
            let server = tracked(transport);
            timeout(WAIT, server.closed()).await.unwrap();
        });
        let e = ws::connect(url.as_str()).await.unwrap_err();
        assert!(
            e.report().contains("the server's answer is not HTTP"),
            "{}",
            e.report()
        );
        assert!(e.report().contains("use tcp://HOST:PORT"), "{}", e.report());
        timeout(WAIT, server).await.unwrap().unwrap();
    });
}
