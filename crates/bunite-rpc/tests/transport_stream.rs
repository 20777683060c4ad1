//! The byte-stream transport (PROTOCOL §2): length-prefixed messages over TCP and Unix
//! sockets, framing edge cases, oversize prefixes, peers that vanish mid-call.
#![cfg(feature = "stream")]

mod common;

use std::time::Duration;

use bunite_rpc::transport::stream::{self, ByteStream};
use bunite_rpc::transport::{MessageSink, MessageSource, Transport, TransportError};
use bunite_rpc::wire::{Call, CallId, CapId, Decoder, Encoder, Frame, Hello, Limits as WireLimits};
use bunite_rpc::{Code, Connection, Record, Value};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

/// Bootstraps the counter, increments it, releases it and checks both peers are clean.
async fn exercise_counter(server: &Connection, client: &Connection) {
    let counter = timeout(WAIT, client.bootstrap(&counter_def()))
        .await
        .expect("bootstrap timed out")
        .expect("bootstrap");
    let r = counter
        .call_value("increment", Value::Record(Record::new().with("delta", 5)))
        .await
        .expect("increment");
    assert_eq!(r, Value::Record(Record::new().with("count", 5)));
    let r = counter.call_value("get", Value::Undefined).await.unwrap();
    assert_eq!(r, Value::Record(Record::new().with("count", 5)));
    drop(counter);
    assert_clean(&[server, client]).await;
    client.close();
    timeout(WAIT, server.closed()).await.expect("server closes");
}

#[tokio::test]
async fn a_counter_over_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
    let client = Connection::new(stream::tcp_connect(addr).await.unwrap());
    let socket = timeout(WAIT, accept).await.unwrap().unwrap();
    let server = Connection::new(ByteStream::tcp(socket));
    server
        .serve(counter_def(), counter_impl())
        .unwrap()
        .detach();
    exercise_counter(&server, &client).await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_counter_over_a_unix_socket() {
    let path = std::env::temp_dir().join(format!(
        "bunite-transport-{}-{:?}.sock",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
    let client = Connection::new(stream::unix_connect(&path).await.unwrap());
    let socket = timeout(WAIT, accept).await.unwrap().unwrap();
    let _ = std::fs::remove_file(&path);
    let server = Connection::new(ByteStream::unix(socket));
    server
        .serve(counter_def(), counter_impl())
        .unwrap()
        .detach();
    exercise_counter(&server, &client).await;
}

#[tokio::test]
async fn a_peer_closing_its_socket_mid_call_fails_the_pending_call_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
    let client = Connection::new(stream::tcp_connect(addr).await.unwrap());
    let socket = timeout(WAIT, accept).await.unwrap().unwrap();
    // A second handle on the server's socket, to shut it down under the connection's feet.
    let std_socket = socket.into_std().unwrap();
    let killer = std_socket.try_clone().unwrap();
    let server = Connection::new(ByteStream::tcp(TcpStream::from_std(std_socket).unwrap()));
    server
        .serve(counter_def(), counter_impl())
        .unwrap()
        .detach();

    let counter = client.bootstrap(&counter_def()).await.unwrap();
    let pending = tokio::spawn(async move { counter.call_value("wait", Value::Undefined).await });
    eventually(|| server.stats().active_calls == 1).await;
    killer.shutdown(std::net::Shutdown::Both).unwrap();

    let e = timeout(WAIT, pending).await.unwrap().unwrap().unwrap_err();
    assert_eq!(e.code, Code::Unavailable, "{e:?}");
    timeout(WAIT, client.closed()).await.unwrap();
    timeout(WAIT, server.closed()).await.unwrap();
    assert_eq!(client.stats().pending_calls, 0);
}

/// Reads one length-prefixed frame from a raw socket; `None` at a clean end.
async fn read_frame(socket: &mut TcpStream, dec: &mut Decoder) -> Option<Frame> {
    let mut prefix = [0u8; 4];
    match timeout(WAIT, socket.read_exact(&mut prefix)).await.unwrap() {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
        Err(e) => panic!("read: {e}"),
    }
    let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
    timeout(WAIT, socket.read_exact(&mut body))
        .await
        .unwrap()
        .unwrap();
    Some(dec.decode_frame(&body).expect("valid frame"))
}

fn framed(enc: &mut Encoder, frame: &Frame) -> Vec<u8> {
    let body = enc.encode_to_vec(&frame.to_value());
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// A server connection on a TCP socket and the raw client socket, past the server's hello.
async fn raw_client() -> (Connection, TcpStream, Decoder) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let (socket, _) = listener.accept().await.unwrap();
    let server = Connection::new(ByteStream::tcp(socket));
    server
        .serve(counter_def(), counter_impl())
        .unwrap()
        .detach();
    let mut dec = Decoder::new(WireLimits::default());
    match read_frame(&mut raw, &mut dec).await {
        Some(Frame::Hello(h)) => assert_eq!(h.v, 1),
        other => panic!("expected hello, got {other:?}"),
    }
    (server, raw, dec)
}

#[tokio::test]
async fn an_oversize_length_prefix_gets_goaway_resource_exhausted_and_close() {
    let (server, mut raw, mut dec) = raw_client().await;
    raw.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    let goaway = loop {
        match read_frame(&mut raw, &mut dec).await {
            Some(Frame::Goaway(g)) => break g,
            Some(_) => continue,
            None => panic!("closed without goaway"),
        }
    };
    assert_eq!(goaway.reason.as_deref(), Some("resource_exhausted"));
    let e = goaway.error.expect("goaway error");
    assert_eq!(e.code, "resource_exhausted");
    assert_eq!(e.reason(), Some("max_frame_bytes"));
    assert!(
        read_frame(&mut raw, &mut dec).await.is_none(),
        "socket closed"
    );
    timeout(WAIT, server.closed()).await.unwrap();
}

#[tokio::test]
async fn frames_written_one_byte_at_a_time_are_reassembled() {
    let (server, mut raw, mut dec) = raw_client().await;
    let mut enc = Encoder::new();
    let hello = Frame::Hello(Hello {
        v: 1,
        mode: "native".into(),
        features: vec![],
        max_bytes: 64 << 20,
        origin: "test://trickle".into(),
    });
    let call = |id: u64, target: u32, method: &str, args: Value| {
        Frame::Call(Call {
            id: CallId(id),
            target: CapId(target),
            method: bunite_rpc::wire::Text::copy_from(method),
            args,
            meta: None,
        })
    };
    let mut bytes = framed(&mut enc, &hello);
    let bootstrap = call(
        1,
        0,
        "bootstrap",
        Value::Record(Record::new().with("name", "test.counter")),
    );
    bytes.extend(framed(&mut enc, &bootstrap));
    // The counter will be cap-id 2, the first id the server allocates.
    bytes.extend(framed(&mut enc, &call(2, 2, "increment", Value::Undefined)));
    for b in bytes {
        raw.write_all(&[b]).await.unwrap();
        raw.flush().await.unwrap();
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let mut results = Vec::new();
    while results.len() < 2 {
        match read_frame(&mut raw, &mut dec).await {
            Some(Frame::Result(r)) => results.push(r),
            Some(_) => continue,
            None => panic!("closed early"),
        }
    }
    assert_eq!(results[0].id, CallId(1));
    assert_eq!(results[0].outcome, Ok(Value::CapRef(CapId(2))));
    assert_eq!(results[1].id, CallId(2));
    assert_eq!(
        results[1].outcome,
        Ok(Value::Record(Record::new().with("count", 1)))
    );
    server.close();
    timeout(WAIT, server.closed()).await.unwrap();
}

/// The framing on its own, over in-memory byte streams.
#[tokio::test]
async fn framing_round_trips_and_ends_cleanly_only_between_messages() {
    let (a, b) = tokio::io::duplex(64);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let (mut sink, _) = ByteStream::new(ar, aw).split();
    let (_, mut source) = ByteStream::new(br, bw).split();
    let big = bytes::Bytes::from(vec![7u8; 1000]);
    let writer = tokio::spawn(async move {
        for msg in [bytes::Bytes::from_static(b"one"), bytes::Bytes::new(), big] {
            sink.send(msg).await.unwrap();
        }
        sink.flush().await.unwrap();
        sink.close().await.unwrap();
    });
    assert_eq!(source.recv().await.unwrap().unwrap(), &b"one"[..]);
    assert_eq!(source.recv().await.unwrap().unwrap(), &b""[..]);
    assert_eq!(source.recv().await.unwrap().unwrap(), vec![7u8; 1000]);
    assert!(source.recv().await.unwrap().is_none());
    writer.await.unwrap();

    // Truncated inside the prefix and inside the body: errors, not a clean end.
    for input in [&[0u8, 0][..], &[0, 0, 0, 5, 1, 2][..]] {
        let (_, mut source) = ByteStream::new(input, tokio::io::sink()).split();
        let e = source.recv().await.unwrap_err();
        assert!(matches!(e, TransportError::Io(_)), "{e:?}");
    }
}

#[tokio::test]
async fn a_length_above_the_configured_max_is_too_large() {
    let input: &[u8] = &[0, 0, 1, 1, 0];
    let t = ByteStream::new(input, tokio::io::sink()).with_max_bytes(256);
    assert_eq!(t.max_bytes(), 256);
    let (_, mut source) = t.split();
    match source.recv().await {
        Err(TransportError::TooLarge { len: 257, max: 256 }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
