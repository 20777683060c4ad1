//! The byte-stream transport (PROTOCOL §2): length-prefixed messages over TCP and Unix
//! sockets, framing edge cases, oversize prefixes, peers that vanish mid-call.
#![cfg(feature = "byte-stream")]

mod common;

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bunite_rpc::testing::Recorder;
use bunite_rpc::transport::budget::FREE_PER_CONNECTION;
use bunite_rpc::transport::byte_stream::{self, ByteStream, TcpMessageListener};
use bunite_rpc::transport::{ByteBudget, ListenerConfig, ReceiveDeadline};
use bunite_rpc::transport::{MessageSinkExt, MessageSourceExt, Transport, TransportError};
use bunite_rpc::wire::{
    Call, CallId, CapId, DecodeLimits as WireLimits, Decoder, Encoder, Frame, Hello,
};
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

/// A client transport made by [`byte_stream::tcp_connect`] and the socket its server end
/// accepted.
async fn tcp_connected() -> (byte_stream::TcpTransport, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
    let client = byte_stream::tcp_connect(addr).await.unwrap();
    (client, timeout(WAIT, accept).await.unwrap().unwrap())
}

#[test]
fn a_counter_over_tcp() {
    run(async {
        let (client, socket) = tcp_connected().await;
        let client = tracked(client);
        let server = tracked(ByteStream::tcp(socket));
        serve_counter(&server).await;
        exercise_counter(&server, &client).await;
    });
}

/// The module's name before the rename still names the same transport: the comparison
/// harness's own adapter (`../shared/bench/peers/bunite-bench`) imports it from there, with
/// the feature `stream`.
#[test]
#[allow(deprecated)]
fn the_old_module_name_still_connects_over_tcp() {
    run(async {
        use bunite_rpc::transport::stream;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
        let transport: byte_stream::TcpTransport = stream::tcp_connect(addr).await.unwrap();
        let client = tracked(transport);
        let socket = timeout(WAIT, accept).await.unwrap().unwrap();
        let server = tracked(stream::ByteStream::tcp(socket));
        serve_counter(&server).await;
        exercise_counter(&server, &client).await;
    });
}

#[cfg(unix)]
#[test]
fn a_counter_over_a_unix_socket() {
    run(async {
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
        let client = tracked(byte_stream::unix_connect(&path).await.unwrap());
        let socket = timeout(WAIT, accept).await.unwrap().unwrap();
        let _ = std::fs::remove_file(&path);
        let server = tracked(ByteStream::unix(socket));
        serve_counter(&server).await;
        exercise_counter(&server, &client).await;
    });
}

#[test]
fn a_peer_closing_its_socket_mid_call_fails_the_pending_call_unavailable() {
    run(async {
        let (client, socket) = tcp_connected().await;
        let client = tracked(client);
        // A second handle on the server's socket, to shut it down under the connection's feet.
        let std_socket = socket.into_std().unwrap();
        let killer = std_socket.try_clone().unwrap();
        let server = tracked(ByteStream::tcp(TcpStream::from_std(std_socket).unwrap()));
        serve_counter(&server).await;

        let counter = client.bootstrap(&counter_def()).await.unwrap();
        let pending =
            tokio::spawn(async move { counter.call_value("wait", Value::Undefined).await });
        eventually(|| server.stats().active_calls == 1).await;
        killer.shutdown(std::net::Shutdown::Both).unwrap();

        let e = timeout(WAIT, pending).await.unwrap().unwrap().unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        timeout(WAIT, client.closed()).await.unwrap();
        timeout(WAIT, server.closed()).await.unwrap();
        assert_eq!(client.stats().pending_calls, 0);
    });
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
    let server = tracked(ByteStream::tcp(socket));
    serve_counter(&server).await;
    let mut dec = Decoder::new(WireLimits::default());
    match read_frame(&mut raw, &mut dec).await {
        Some(Frame::Hello(h)) => assert_eq!(h.v, 1),
        other => panic!("expected hello, got {other:?}"),
    }
    (server, raw, dec)
}

#[test]
fn an_oversize_length_prefix_gets_goaway_resource_exhausted_and_close() {
    run(async {
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
    });
}

#[test]
fn frames_written_one_byte_at_a_time_are_reassembled() {
    run(async {
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
                method: bunite_rpc::Text::copy_from(method),
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
    });
}

/// The framing on its own, over in-memory byte streams.
#[test]
fn framing_round_trips_and_ends_cleanly_only_between_messages() {
    run(async {
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
    });
}

#[test]
fn a_length_above_the_configured_max_is_too_large() {
    run(async {
        let input: &[u8] = &[0, 0, 1, 1, 0];
        let t = ByteStream::new(input, tokio::io::sink()).with_max_bytes(256);
        assert_eq!(t.max_bytes(), 256);
        let (_, mut source) = t.split();
        match source.recv().await {
            Err(TransportError::TooLarge { len: 257, max: 256 }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    });
}

#[test]
fn printable_text_instead_of_a_prefix_says_so() {
    run(async {
        let input: &[u8] = b"Listening on port 8080\n";
        let (_, mut source) = ByteStream::new(input, tokio::io::sink()).split();
        match source.recv().await {
            Err(e @ TransportError::TextForLength { .. }) => {
                assert!(e.to_string().contains("\"List\""), "{e}");
                assert!(e.to_string().contains("printing to stdout"), "{e}");
            }
            other => panic!("expected TextForLength, got {other:?}"),
        }
    });
}

/// An HTTP server's answer or an HTTP client's request where a length prefix belongs:
/// the error says which, and which scheme the other side wants.
#[test]
fn http_instead_of_a_prefix_says_which_scheme_to_use() {
    run(async {
        let cases: [(&[u8], &[&str]); 2] = [
            (
                b"HTTP/1.1 400 Bad Request\r\n",
                &["\"HTTP\"", "answered with HTTP", "use ws://HOST:PORT/PATH"],
            ),
            (
                b"GET /rpc HTTP/1.1\r\n",
                &["\"GET \"", "an HTTP request", "tcp://HOST:PORT"],
            ),
        ];
        for (input, says) in cases {
            let (_, mut source) = ByteStream::new(input, tokio::io::sink()).split();
            match source.recv().await {
                Err(e @ TransportError::TextForLength { .. }) => {
                    for s in says {
                        assert!(e.to_string().contains(s), "{e}");
                    }
                    assert!(!e.to_string().contains("printing to stdout"), "{e}");
                }
                other => panic!("expected TextForLength, got {other:?}"),
            }
        }
    });
}

/// A stream that ends before its first byte is a clean end for a byte stream made from
/// halves (a listener's connection, a child's stdio): only a `tcp_connect` client reads
/// it as a server that is not a bunite one.
#[test]
fn a_stream_that_ends_before_a_byte_is_a_clean_end() {
    run(async {
        let (_, mut source) = ByteStream::new(&b""[..], tokio::io::sink()).split();
        assert!(matches!(source.recv().await, Ok(None)));
    });
}

/// A reader that serves `data`, then ends (`eof`) or waits forever, counting its reads and
/// recording the largest one offered (the spare capacity the source allocated ahead of the
/// data).
#[derive(Default)]
struct Feed {
    data: Vec<u8>,
    eof: bool,
    reads: Arc<AtomicUsize>,
    largest_offer: Arc<AtomicUsize>,
    /// The room each read offered and the bytes it was given, in order.
    given: Arc<std::sync::Mutex<Vec<(usize, usize)>>>,
    /// If not 0, the data arrives this much at a time: each read finds one more piece.
    piece: usize,
    arrived: usize,
}

impl tokio::io::AsyncRead for Feed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.reads.fetch_add(1, AtomicOrdering::SeqCst);
        self.largest_offer
            .fetch_max(buf.remaining(), AtomicOrdering::SeqCst);
        if self.data.is_empty() && !self.eof {
            return Poll::Pending;
        }
        let mut n = buf.remaining().min(self.data.len());
        if self.piece > 0 {
            self.arrived += self.piece;
            n = n.min(self.arrived);
            self.arrived -= n;
        }
        self.given.lock().unwrap().push((buf.remaining(), n));
        let rest = self.data.split_off(n);
        buf.put_slice(&self.data);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

/// Reads `count` 20-byte messages, all there at once, through a source over a [`Feed`]: (reads, largest offer).
async fn read_burst(count: usize, budget: Option<ByteBudget>) -> (usize, usize) {
    let msgs: Vec<Vec<u8>> = (0..count).map(|i| vec![(i % 251) as u8; 20]).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    let (reads, largest_offer) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let reader = Feed {
        data: framed_bytes(&refs),
        eof: true,
        reads: Arc::clone(&reads),
        largest_offer: Arc::clone(&largest_offer),
        ..Feed::default()
    };
    let mut stream = ByteStream::new(reader, tokio::io::sink());
    if let Some(budget) = budget {
        stream = stream.with_budget(budget);
    }
    let (_, mut source) = stream.split();
    for want in &msgs {
        assert_eq!(&source.recv().await.unwrap().unwrap()[..], &want[..]);
    }
    assert_eq!(source.recv().await.unwrap(), None, "ends between messages");
    (
        reads.load(AtomicOrdering::SeqCst),
        largest_offer.load(AtomicOrdering::SeqCst),
    )
}

#[test]
fn a_burst_of_small_messages_is_read_in_growing_chunks_but_not_under_a_budget() {
    run(async {
        // 10,000 messages of 24 bytes on the wire: 240,000 bytes, 118 reads of READ_CHUNK
        // (2 KiB) if reads did not grow while they fill their buffer.
        let (reads, largest) = read_burst(10_000, None).await;
        assert!(
            largest > 4 * byte_stream::READ_CHUNK && largest <= 2 * byte_stream::READ_BURST,
            "largest read offered: {largest}"
        );
        assert!(reads <= 12, "{reads} reads for 240,000 bytes");

        // A listener's connection keeps the fixed slack: its reads stay about the size of its
        // free allowance (a buffer's growth may round a read up a little), far below the above.
        let (reads, largest) = read_burst(10_000, Some(ByteBudget::new(1 << 20))).await;
        assert!(
            largest <= FREE_PER_CONNECTION + 64,
            "largest read offered under a budget: {largest}"
        );
        assert!(reads >= 240_000 / FREE_PER_CONNECTION, "{reads} reads");
    });
}

#[test]
fn a_huge_announced_length_allocates_only_with_what_arrives() {
    run(async {
        let largest_offer = Arc::new(AtomicUsize::new(0));
        let mut data = (64u32 << 20).to_be_bytes().to_vec();
        data.extend(vec![0u8; 10_000]);
        let reader = Feed {
            data,
            largest_offer: Arc::clone(&largest_offer),
            ..Feed::default()
        };
        let (_, mut source) = ByteStream::new(reader, tokio::io::sink()).split();
        let waited = timeout(Duration::from_millis(50), source.recv()).await;
        assert!(waited.is_err(), "the message cannot be complete");
        let offered = largest_offer.load(AtomicOrdering::SeqCst);
        assert!(
            offered <= byte_stream::READ_AHEAD + 10_004,
            "offered {offered} bytes ahead for a 64 MiB announcement"
        );
    });
}

/// Long messages arriving back to back (a peer with several 64 KiB calls in flight), after
/// a burst of small ones has grown the reads: a read that completes long messages takes at
/// most `READ_CHUNK` of the one after them. Before, a read asked for the last message's size
/// and the burst's slack (about two long messages), so it left most of the next message at
/// the end of a buffer still shared with the one before; moved (copied) into another
/// allocation when it needed room, it came a few bytes short of its end again, and so
/// every long message was copied once (a peer's comparison benchmark, 8 echoes of 64 KiB
/// in flight over TCP).
#[test]
fn a_read_that_completes_a_long_message_takes_little_of_the_next() {
    run(async {
        // A 64 KiB payload and its call around it, and a shorter one, several of which a read
        // may take. All there at once, and arriving in pieces of various sizes.
        for long in [64 * 1024 + 20, 20_000] {
            for piece in [
                0,
                10_000,
                40_000,
                70_000,
                3 * (4 + long) / 2,
                2 * (4 + long),
            ] {
                let reads = long_messages_back_to_back(long, piece).await;
                if piece == 0 && long == 20_000 {
                    // Not one read a message: as many as the slack holds.
                    assert!(
                        reads <= 6,
                        "{reads} reads for twelve messages of 20,000 bytes"
                    );
                }
            }
        }
    });
}

/// Reads the burst and the long messages of `long` bytes through a source whose input
/// arrives `piece` bytes at a time (all at once if 0): how many reads the long ones took.
async fn long_messages_back_to_back(long: usize, piece: usize) -> usize {
    let small = (0..4_000u32).map(|i| vec![(i % 251) as u8; 20]);
    let long_ones = (0..12u8).map(|i| vec![i; long]);
    let msgs: Vec<Vec<u8>> = small.chain(long_ones).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    let given = Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = Feed {
        data: framed_bytes(&refs),
        eof: true,
        given: Arc::clone(&given),
        piece,
        ..Feed::default()
    };
    let (_, mut source) = ByteStream::new(reader, tokio::io::sink()).split();
    // All held, as a handler that answers with its argument holds them.
    let mut held = Vec::new();
    for want in &msgs {
        let got = source.recv().await.unwrap().unwrap();
        assert_eq!(&got[..], &want[..]);
        held.push(got);
    }
    assert_eq!(source.recv().await.unwrap(), None);
    // Where each long message ends in the byte stream.
    let mut ends = Vec::new();
    let mut pos = 0;
    for m in &msgs {
        pos += 4 + m.len();
        if m.len() == long {
            ends.push(pos);
        }
    }
    let first_long = ends[0] - (4 + long);
    let mut at = 0;
    let mut long_reads = 0;
    for &(offered, n) in given.lock().unwrap().iter() {
        // What the read asked for, whatever had arrived: it ends at most READ_CHUNK past
        // the last message it could complete. (The read that runs from the burst into the
        // long ones cannot know their size, nor those near the end that there is no more.)
        let (start, end) = (at, at + offered);
        let last_done = ends.iter().filter(|&&e| e > start && e <= end).max();
        if let Some(e) = last_done.filter(|_| start >= first_long && end <= pos) {
            assert!(
                end - e <= byte_stream::READ_CHUNK,
                "pieces of {piece}: a read asking for {offered} bytes at {start} ran {} \
                 bytes past the last long message it could complete",
                end - e
            );
        }
        long_reads += usize::from(at + n > first_long && n > 0);
        at += n;
    }
    assert_eq!(at, pos);
    long_reads
}

fn framed_bytes(msgs: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in msgs {
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

#[test]
fn a_64_kib_message_is_one_vectored_write_and_small_ones_are_coalesced() {
    run(async {
        let recorder = Recorder {
            limit: usize::MAX,
            ..Recorder::default()
        };
        let (mut sink, _) = ByteStream::new(tokio::io::empty(), recorder).split();
        let big = vec![9u8; 64 * 1024];
        sink.send(big.clone().into()).await.unwrap();
        for small in [&b"a"[..], b"bc", b"def"] {
            sink.feed(bytes::Bytes::copy_from_slice(small))
                .await
                .unwrap();
        }
        sink.flush().await.unwrap();
        let recorder = sink.into_inner();
        // The big message: one call, prefix and body as two slices. The three small ones: one
        // call, one contiguous slice.
        assert_eq!(recorder.calls, vec![vec![4, 64 * 1024], vec![18]]);
        assert_eq!(recorder.written, framed_bytes(&[&big, b"a", b"bc", b"def"]));
    });
}

#[test]
fn partial_writes_resume_where_they_stopped() {
    run(async {
        let recorder = Recorder {
            limit: 1000,
            ..Recorder::default()
        };
        let (mut sink, _) = ByteStream::new(tokio::io::empty(), recorder).split();
        let msgs: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 300 * i as usize]).collect();
        for m in &msgs {
            sink.feed(m.clone().into()).await.unwrap();
        }
        sink.flush().await.unwrap();
        let recorder = sink.into_inner();
        let expected: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        assert_eq!(recorder.written, framed_bytes(&expected));
        assert!(recorder.calls.len() > 20, "{} calls", recorder.calls.len());
    });
}

/// Two sources share a budget that holds one long message beyond their free allowance: the
/// second long message waits (reading paused) until the first is complete.
#[test]
fn long_messages_wait_for_the_shared_budget_and_small_ones_never_do() {
    run(async {
        let budget = ByteBudget::new(10_000);
        let long = FREE_PER_CONNECTION + 8_000;
        let (mut w1, r1) = tokio::io::duplex(1 << 20);
        let (mut w2, r2) = tokio::io::duplex(1 << 20);
        let (_, mut s1) = ByteStream::new(r1, tokio::io::sink())
            .with_budget(budget.clone())
            .split();
        let (_, mut s2) = ByteStream::new(r2, tokio::io::sink())
            .with_budget(budget.clone())
            .split();
        // The start of a long message on each, more than the free allowance: paid for.
        let body = vec![5u8; long];
        let start = FREE_PER_CONNECTION + 1000;
        let half = [&(long as u32).to_be_bytes()[..], &body[..start]].concat();
        w1.write_all(&half).await.unwrap();
        assert!(timeout(Duration::from_millis(20), s1.recv()).await.is_err());
        assert_eq!(
            budget.available(),
            10_000 - (long + 4 - FREE_PER_CONNECTION)
        );
        w2.write_all(&half).await.unwrap();
        let second = tokio::spawn(async move { s2.recv().await.map(|m| m.map(|m| m.len())) });
        // The rest of both: the second stays paused while the first holds the budget.
        w2.write_all(&body[start..]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !second.is_finished(),
            "the second long message did not wait"
        );
        w1.write_all(&body[start..]).await.unwrap();
        assert_eq!(s1.recv().await.unwrap().unwrap().len(), long);
        // The first is complete and its bytes are back: the second goes on.
        let second = timeout(WAIT, second).await.unwrap().unwrap().unwrap();
        assert_eq!(second, Some(long));
        // Small messages never draw from the budget, even when it is spent.
        let hold = budget.try_acquire(10_000).unwrap();
        w1.write_all(&framed_bytes(&[b"small"])).await.unwrap();
        assert_eq!(s1.recv().await.unwrap().unwrap(), &b"small"[..]);
        drop(hold);
        // A message longer than the whole budget can never fit: refused.
        w1.write_all(&(20_000u32 + FREE_PER_CONNECTION as u32).to_be_bytes())
            .await
            .unwrap();
        assert!(matches!(
            s1.recv().await,
            Err(TransportError::TooLarge { max: 10_000, .. })
        ));
    });
}

/// The read buffer a long message leaves behind is paid from the listener's budget while
/// the connection keeps it for the next message, and is let go as soon as another
/// connection's message waits for the budget, even while its own connection stays busy
/// (it would otherwise be held outside the budget, or hold the budget, for as long as the
/// peer keeps sending a little).
#[test]
fn a_buffer_left_by_a_long_message_is_paid_from_the_budget_and_yields_to_a_waiting_one() {
    run(async {
        let budget = ByteBudget::new(300 * 1024);
        let (mut w1, r1) = tokio::io::duplex(1 << 20);
        let (mut w2, r2) = tokio::io::duplex(1 << 20);
        let (_, mut s1) = ByteStream::new(r1, tokio::io::sink())
            .with_budget(budget.clone())
            .split();
        let (_, mut s2) = ByteStream::new(r2, tokio::io::sink())
            .with_budget(budget.clone())
            .split();
        let long = 200 * 1024;
        w1.write_all(&framed_bytes(&[&vec![1u8; long]]))
            .await
            .unwrap();
        assert_eq!(s1.recv().await.unwrap().unwrap().len(), long);
        // The message is gone; its buffer stays for the next one, paid for.
        let held = budget.limit() - budget.available();
        assert!(
            (long - FREE_PER_CONNECTION..=2 * long).contains(&held),
            "{held} bytes held"
        );
        // The first connection stays busy: a small message every 10 ms (never idle long
        // enough to let its buffer go on its own).
        let busy = tokio::spawn(async move {
            for i in 0..500u32 {
                w1.write_all(&framed_bytes(&[&i.to_be_bytes()]))
                    .await
                    .unwrap();
                assert_eq!(s1.recv().await.unwrap().unwrap(), &i.to_be_bytes()[..]);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (w1, s1)
        });
        // A second long message needs more than is left: it waits, and the first
        // connection's buffer yields to it.
        let second = 250 * 1024;
        assert!(second - FREE_PER_CONNECTION > budget.available());
        w2.write_all(&framed_bytes(&[&vec![2u8; second]]))
            .await
            .unwrap();
        let got = timeout(Duration::from_secs(2), s2.recv())
            .await
            .expect("the kept buffer yielded to the waiting message")
            .unwrap()
            .unwrap();
        assert_eq!(got.len(), second);
        assert!(
            !busy.is_finished(),
            "the first connection was busy throughout"
        );
        busy.abort();
        drop((s2, w2, got));
        eventually(|| budget.available() == budget.limit()).await;
    });
}

/// A TCP listener with room for one connection, and its address.
async fn one_slot_listener() -> (Arc<TcpMessageListener>, std::net::SocketAddr) {
    let config = ListenerConfig::default().max_connections(1);
    let listener = TcpMessageListener::bind("127.0.0.1:0", config)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    (Arc::new(listener), addr)
}

#[test]
fn the_tcp_listener_accepts_no_more_than_max_connections() {
    run(async {
        let (listener, addr) = one_slot_listener().await;
        let _c1 = byte_stream::tcp_connect(addr).await.unwrap();
        let _c2 = byte_stream::tcp_connect(addr).await.unwrap();
        let (first, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let second = {
            let listener = Arc::clone(&listener);
            tokio::spawn(async move { listener.accept().await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "a second connection was accepted");
        // The slot comes back once both halves of the first are dropped.
        let (sink, source) = first.split();
        drop(sink);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !second.is_finished(),
            "the slot came back with one half alive"
        );
        drop(source);
        timeout(WAIT, second).await.unwrap().unwrap().unwrap();
    });
}

/// A source dropped before its peer's end lingers, reading and discarding for up to
/// `LINGER`, so that the peer gets to read our goaway; its socket stays open meanwhile, and
/// so does its connection slot. (The slot went back at once: with `max_connections(1)`,
/// forty connect-and-close cycles of peers that kept sending left forty server sockets
/// open.)
#[test]
fn a_lingering_socket_keeps_its_connection_slot_until_it_closes() {
    run(async {
        let (listener, addr) = one_slot_listener().await;
        let mut first_peer = TcpStream::connect(addr).await.unwrap();
        let (first, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        // The peer keeps sending, so the dropped source lingers until the peer closes.
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let trickle = tokio::spawn(async move {
            while stopped.try_recv().is_err() {
                first_peer.write_all(b"x").await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        drop(first.split());
        let _second_peer = TcpStream::connect(addr).await.unwrap();
        let second = {
            let listener = Arc::clone(&listener);
            tokio::spawn(async move { listener.accept().await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !second.is_finished(),
            "a second connection was accepted while the first socket lingered"
        );
        // The first peer closes: the linger reads its end, closes the socket, and the slot
        // goes back.
        stop.send(()).unwrap();
        trickle.await.unwrap();
        timeout(WAIT, second).await.unwrap().unwrap().unwrap();
    });
}

/// [`Connection::closed`] waits for the linger (within `CLOSE_GRACE`): a server that
/// drops its runtime as soon as `closed` returns, as a process that exits then does (the
/// CLI's servers on SIGTERM), still lets a peer that went on sending read its goaway and a
/// clean end, and the listener's slot is free by then. (The linger ran on a task of its
/// own that `closed` did not wait for: `closed` returned at once, the runtime's end cut the
/// linger off, the socket closed over unread input, and the kernel reset it: the peer's
/// next write failed and its read after the goaway ended in a reset.)
#[test]
fn closed_waits_for_the_linger_so_a_server_that_then_exits_resets_nothing() {
    use std::io::{Read, Write};
    const TRICKLE: Duration = Duration::from_millis(800);
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (closed_after, second_after) = rt.block_on(async {
            let (listener, addr) = one_slot_listener().await;
            addr_tx.send(addr).unwrap();
            let (transport, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
            let conn = Connection::new(transport);
            tokio::task::spawn_blocking(move || close_rx.recv().unwrap())
                .await
                .unwrap();
            let start = std::time::Instant::now();
            conn.close();
            timeout(WAIT, conn.closed()).await.expect("closed");
            let closed_after = start.elapsed();
            // The slot is free: the second peer, waiting in the backlog, is accepted now.
            timeout(Duration::from_millis(500), listener.accept())
                .await
                .expect("the slot is free once closed returns")
                .unwrap();
            (closed_after, start.elapsed())
        });
        // The process exits: whatever it still ran is gone.
        drop(rt);
        (closed_after, second_after)
    });
    let addr = addr_rx.recv().unwrap();
    let mut peer = std::net::TcpStream::connect(addr).unwrap();
    let _second_peer = std::net::TcpStream::connect(addr).unwrap();
    let mut enc = Encoder::new();
    peer.write_all(&framed(&mut enc, &Frame::Hello(raw_hello())))
        .unwrap();
    // A long message under way, its body trickling in while the server closes.
    peer.write_all(&100_000u32.to_be_bytes()).unwrap();
    close_tx.send(()).unwrap();
    let trickle_start = std::time::Instant::now();
    while trickle_start.elapsed() < TRICKLE {
        let sent = peer.write_all(&[0u8; 16]);
        assert!(sent.is_ok(), "the server reset the socket: {sent:?}");
        // Well within `LINGER_QUIET`, after which the linger would end.
        std::thread::sleep(Duration::from_millis(10));
    }
    peer.shutdown(std::net::Shutdown::Write).unwrap();
    let trickled = trickle_start.elapsed();
    let mut got = Vec::new();
    let read = peer.read_to_end(&mut got);
    assert!(read.is_ok(), "the server reset the socket: {read:?}");
    let mut dec = Decoder::new(WireLimits::default());
    let mut frames = Vec::new();
    let mut rest = &got[..];
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        frames.push(dec.decode_frame(&rest[4..4 + len]).expect("valid frame"));
        rest = &rest[4 + len..];
    }
    assert!(rest.is_empty(), "a frame cut short");
    assert!(
        matches!(frames.first(), Some(Frame::Hello(_))),
        "{frames:?}"
    );
    assert!(
        matches!(frames.last(), Some(Frame::Goaway(_))),
        "{frames:?}"
    );
    let (closed_after, second_after) = server.join().unwrap();
    // `closed` returned once the linger read the peer's end, not before it.
    assert!(
        closed_after + Duration::from_millis(100) >= trickled,
        "closed returned after {closed_after:?}, the peer sent for {trickled:?}"
    );
    assert!(second_after < closed_after + Duration::from_millis(500));
}

/// PROTOCOL §11 over TCP: an oversize prefix followed by a long body still gets its goaway
/// before the close, every time (the unread body must not make the kernel reset the socket
/// before the client reads the goaway).
#[test]
fn an_oversize_prefix_with_a_body_behind_it_gets_goaway_in_every_run() {
    run(async {
        for run in 0..50 {
            let (server, mut raw, mut dec) = raw_client().await;
            let mut bytes = (65u32 << 20).to_be_bytes().to_vec();
            bytes.extend(vec![0u8; 4 << 20]);
            let sent = raw.write_all(&bytes).await;
            assert!(
                sent.is_ok(),
                "run {run}: the server reset the socket: {sent:?}"
            );
            let goaway = loop {
                match read_frame(&mut raw, &mut dec).await {
                    Some(Frame::Goaway(g)) => break g,
                    Some(_) => continue,
                    None => panic!("run {run}: closed without goaway"),
                }
            };
            let e = goaway.error.expect("goaway error");
            assert_eq!(e.reason(), Some("max_frame_bytes"), "run {run}");
            drop(raw);
            timeout(WAIT, server.closed()).await.unwrap();
        }
    });
}

/// Counts the wake-ups of the task polling a source by hand.
struct CountWakes(AtomicUsize);

impl std::task::Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, AtomicOrdering::SeqCst);
    }
}

/// Polls `source` by hand until it gives a message: the message and the polls it took.
fn poll_until_message(
    source: &mut impl bunite_rpc::transport::MessageSource,
    wakes: &Arc<CountWakes>,
) -> (bytes::Bytes, usize) {
    let waker = std::task::Waker::from(Arc::clone(wakes));
    let mut cx = Context::from_waker(&waker);
    for polls in 1..=64 {
        let before = wakes.0.load(AtomicOrdering::SeqCst);
        match source.poll_recv(&mut cx) {
            Poll::Ready(msg) => return (msg.unwrap().expect("a message"), polls),
            // All the bytes are there: it waits only for its turn, and has asked for it.
            Poll::Pending => assert_eq!(wakes.0.load(AtomicOrdering::SeqCst), before + 1),
        }
    }
    panic!("no message after 64 polls");
}

#[test]
fn a_long_message_is_read_in_slices_with_the_task_woken_between_them() {
    let long = vec![7u8; 5 * byte_stream::READ_SLICE + 12_345];
    let short = vec![9u8; byte_stream::READ_SLICE / 2];
    let data = std::io::Cursor::new(framed_bytes(&[&long, &short]));
    let (_, mut source) = ByteStream::new(data, tokio::io::sink()).split();
    let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
    // Every byte is there at once, yet each poll reads one slice and ends its turn.
    let (msg, polls) = poll_until_message(&mut source, &wakes);
    assert_eq!(&msg[..], &long[..]);
    assert!(
        (6..=8).contains(&polls),
        "{polls} polls for 5 slices and a bit"
    );
    // A message no longer than a slice is read in one poll, as before.
    let (msg, polls) = poll_until_message(&mut source, &wakes);
    assert_eq!((&msg[..], polls), (&short[..], 1));
}

/// A source with a receive deadline of `grace` plus a second per 1,000 bytes, and the
/// writing end of its pipe.
fn timed_source(
    grace: Duration,
    budget: Option<ByteBudget>,
) -> (
    tokio::io::DuplexStream,
    impl bunite_rpc::transport::MessageSource,
) {
    let (w, r) = tokio::io::duplex(1 << 20);
    let mut stream = ByteStream::new(r, tokio::io::sink())
        .with_receive_deadline(Some(ReceiveDeadline::new(grace, 1_000)));
    if let Some(budget) = budget {
        stream = stream.with_budget(budget);
    }
    (w, stream.split().1)
}

/// A message that stops arriving fails the source once its grace has passed since it
/// stalled (nothing arrived since to earn more), not before.
#[test]
fn a_message_that_stalls_fails_at_its_receive_deadline() {
    run_paused(async {
        let (mut w, mut source) = timed_source(Duration::from_secs(10), None);
        let len = 5_000u32;
        w.write_all(&len.to_be_bytes()).await.unwrap();
        w.write_all(&[1u8; 100]).await.unwrap();
        let started = tokio::time::Instant::now();
        let err = source.recv().await.unwrap_err();
        let after = Duration::from_secs(10);
        assert!(
            matches!(err, TransportError::TooSlow { after: a, len: Some(5_004) } if a == after),
            "{err:?}"
        );
        let took = started.elapsed();
        assert!(
            took >= after && took < after + Duration::from_millis(5),
            "{took:?}"
        );
        assert!(err.to_string().contains("5004 bytes"), "{err}");
    });
}

/// A slow message within its deadline arrives; the next message's clock starts afresh;
/// and a connection quiet between messages is never timed.
#[test]
fn a_slow_message_within_its_deadline_arrives_and_quiet_between_messages_is_not_timed() {
    run_paused(async {
        let (mut w, mut source) = timed_source(Duration::from_secs(1), None);
        let body = vec![3u8; 2_000];
        let framed = framed_bytes(&[&body, &body]);
        // The first message over 2.8 s of its 3.004 s, a few bytes at a time.
        let writer = tokio::spawn(async move {
            for piece in framed[..2_004].chunks(143) {
                w.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // Quiet for an hour between the two messages, then the second, as slowly.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            for piece in framed[2_004..].chunks(143) {
                w.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            w
        });
        assert_eq!(source.recv().await.unwrap().unwrap(), &body[..]);
        assert_eq!(source.recv().await.unwrap().unwrap(), &body[..]);
        let _w = writer.await.unwrap();
    });
}

/// Time spent waiting for the listener's budget is not the peer's: a long message that
/// waits longer than its deadline for the budget still arrives.
#[test]
fn waiting_for_the_budget_does_not_count_against_the_deadline() {
    run_paused(async {
        let budget = ByteBudget::new(100_000);
        let (mut w, mut source) = timed_source(Duration::from_secs(1), Some(budget.clone()));
        let hold = budget.try_acquire(100_000).unwrap();
        let body = vec![4u8; FREE_PER_CONNECTION + 50_000];
        let reading = tokio::spawn(async move { source.recv().await.map(|m| m.map(|m| m.len())) });
        // Half of the length prefix, then a pause: the clock starts (the length is not known).
        let framed = framed_bytes(&[&body]);
        w.write_all(&framed[..2]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Enough of it to be paid for, and then ten times the longest it could take (1 s +
        // 66 s) waiting for the budget.
        let paid = 4 + FREE_PER_CONNECTION + 100;
        w.write_all(&framed[2..paid]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(670)).await;
        assert!(!reading.is_finished());
        drop(hold);
        // Then the rest, within the grace of the stall after the wait.
        tokio::time::sleep(Duration::from_millis(900)).await;
        w.write_all(&framed[paid..]).await.unwrap();
        let got = reading.await.unwrap().unwrap();
        assert_eq!(got, Some(body.len()));
    });
}

/// Over a listener (which sets a receive deadline by default), a peer that announces a
/// long message and stops gets a goaway `deadline_exceeded` and the connection closes.
#[test]
fn a_stalled_message_on_a_listener_gets_goaway_deadline_exceeded() {
    run(async {
        assert_eq!(
            ListenerConfig::default().receive_deadline,
            Some(ReceiveDeadline::default())
        );
        let grace = Duration::from_millis(300);
        let budget = ByteBudget::new(1 << 20);
        let config = ListenerConfig::default()
            .receive_budget(budget.clone())
            .receive_deadline(Some(ReceiveDeadline::new(grace, 1 << 30)));
        let listener = TcpMessageListener::bind("127.0.0.1:0", config)
            .await
            .unwrap();
        let mut raw = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (transport, _) = listener.accept().await.unwrap();
        let server = tracked(transport);
        serve_counter(&server).await;
        let mut dec = Decoder::new(WireLimits::default());
        assert!(matches!(
            read_frame(&mut raw, &mut dec).await,
            Some(Frame::Hello(_))
        ));
        let len = 200_000u32;
        // Before the bytes go: on two workers the server may take them, and start the
        // message's clock, before the writes return here.
        let started = tokio::time::Instant::now();
        raw.write_all(&len.to_be_bytes()).await.unwrap();
        raw.write_all(&[0u8; 30_000]).await.unwrap();
        eventually(|| budget.available() < 1 << 20).await;
        let goaway = loop {
            match read_frame(&mut raw, &mut dec).await {
                Some(Frame::Goaway(g)) => break g,
                Some(_) => continue,
                None => panic!("closed without goaway"),
            }
        };
        assert!(started.elapsed() >= grace, "{:?}", started.elapsed());
        assert_eq!(goaway.reason.as_deref(), Some("deadline_exceeded"));
        let e = goaway.error.expect("goaway error");
        assert_eq!(e.code, "deadline_exceeded");
        let message = e.message.unwrap_or_default();
        assert!(message.contains("200004 bytes"), "{message}");
        assert!(read_frame(&mut raw, &mut dec).await.is_none(), "closed");
        timeout(WAIT, server.closed()).await.unwrap();
        assert_eq!(server.stats().pending_calls, 0);
        assert_eq!(budget.available(), 1 << 20, "the message's bytes went back");
    });
}

/// Peers that announce maximal messages and stall hold the listener's budget only until
/// their deadline: a well-behaved client's long call, which waits for that budget behind
/// them, is answered once they are cut off (without a deadline it waited for as long as
/// they kept their sockets open), and each staller gets its goaway.
#[test]
fn stalled_messages_give_the_budget_back_at_their_deadline() {
    run(async {
        let max = 2 << 20;
        let budget = ByteBudget::new(4 << 20);
        let grace = Duration::from_secs(1);
        let config = ListenerConfig::default()
            .max_bytes(max)
            .receive_budget(budget.clone())
            .receive_deadline(Some(ReceiveDeadline::new(grace, 1 << 30)));
        let listener = TcpMessageListener::bind("127.0.0.1:0", config)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (conns_tx, mut conns) = tokio::sync::mpsc::unbounded_channel();
        let serving = tokio::spawn(async move {
            while let Ok((t, _)) = listener.accept().await {
                let conn = tracked(t);
                serve_counter(&conn).await;
                let _ = conns_tx.send(conn);
            }
        });
        // Three stallers announce a maximal message and send a little of it: two hold the
        // budget (almost 4 MiB), the third waits for it.
        let mut stallers = Vec::new();
        for _ in 0..3 {
            let mut raw = TcpStream::connect(addr).await.unwrap();
            raw.write_all(&(max as u32).to_be_bytes()).await.unwrap();
            raw.write_all(&[0u8; 100_000]).await.unwrap();
            stallers.push(raw);
        }
        eventually(|| budget.available() < 64 * 1024).await;
        // A well-behaved client's 1 MiB echo waits for the budget behind them.
        let client = tracked(byte_stream::tcp_connect(addr).await.unwrap());
        let counter = timeout(WAIT, client.bootstrap(&counter_def()))
            .await
            .unwrap()
            .unwrap();
        // The stallers still hold the budget: the call has to wait for it.
        assert!(budget.available() < 1 << 20, "{}", budget.available());
        let big = Value::Bin(vec![7u8; 1 << 20]);
        let echoed = timeout(WAIT, counter.call_value("echo", big.clone()))
            .await
            .expect("answered once the stallers were cut off")
            .unwrap();
        assert_eq!(echoed, big);
        // Each staller, the one that waited too, was cut off with a goaway.
        let mut dec = Decoder::new(WireLimits::default());
        for (i, raw) in stallers.iter_mut().enumerate() {
            let goaway = loop {
                match read_frame(raw, &mut dec).await {
                    Some(Frame::Goaway(g)) => break g,
                    Some(_) => continue,
                    None => panic!("staller {i} closed without goaway"),
                }
            };
            assert_eq!(goaway.reason.as_deref(), Some("deadline_exceeded"), "{i}");
        }
        drop(counter);
        client.close();
        timeout(WAIT, client.closed()).await.unwrap();
        serving.abort();
        // Every server connection (three stallers, the client) has closed and holds nothing.
        let mut closed = 0;
        while let Ok(conn) = conns.try_recv() {
            timeout(WAIT, conn.closed()).await.unwrap();
            assert_eq!(conn.stats().pending_calls, 0);
            closed += 1;
        }
        assert_eq!(closed, 4);
        eventually(|| budget.available() == 4 << 20).await;
    });
}

/// Polls `source` once: whether it is still waiting for its message.
async fn still_waiting(source: &mut impl bunite_rpc::transport::MessageSource) -> bool {
    std::future::poll_fn(|cx| Poll::Ready(source.poll_recv(cx).is_pending())).await
}

/// A length prefix alone draws nothing from the listener's budget (a long message is paid
/// for once the free allowance's worth of it has arrived), and a peer that sends nothing
/// after it is let go once the grace has passed, whatever length it announced. Before,
/// four prefixes (16 bytes) announcing 64 MiB each held the default 256 MiB budget for
/// grace + 64 MiB / min rate: 286 s, and every other long message waited.
#[test]
fn a_bare_length_prefix_holds_no_budget_and_is_let_go_after_the_grace() {
    run_paused(async {
        let budget = ByteBudget::new(256 << 20);
        let rule = ReceiveDeadline::default();
        let (mut w, r) = tokio::io::duplex(64 * 1024);
        let (_, mut source) = ByteStream::new(r, tokio::io::sink())
            .with_max_bytes(64 << 20)
            .with_budget(budget.clone())
            .with_receive_deadline(Some(rule))
            .split();
        w.write_all(&((64u32 << 20) - 4).to_be_bytes())
            .await
            .unwrap();
        assert!(still_waiting(&mut source).await);
        assert_eq!(budget.available(), budget.limit(), "nothing drawn");
        let started = tokio::time::Instant::now();
        let err = source.recv().await.unwrap_err();
        assert!(
            matches!(err, TransportError::TooSlow { after, len: Some(len) }
                if after == rule.grace && len == 64 << 20),
            "{err:?}"
        );
        assert_eq!(started.elapsed(), rule.grace);
    });
}

/// Once the start of a long message has arrived it is paid for whole, and from then on
/// it must keep arriving at the minimum rate (after the grace): a peer that trickles it at
/// half that rate is let go as soon as it falls behind (1.8 s here), not at grace +
/// length / min rate (501 s), and what the message drew goes back.
#[test]
fn a_message_that_falls_behind_the_minimum_rate_is_let_go_when_it_does() {
    run_paused(async {
        let budget = ByteBudget::new(1 << 20);
        let (mut w, mut source) = timed_source(Duration::from_secs(1), Some(budget.clone()));
        w.write_all(&500_000u32.to_be_bytes()).await.unwrap();
        w.write_all(&[0u8; FREE_PER_CONNECTION]).await.unwrap();
        assert!(still_waiting(&mut source).await);
        let drawn = budget.limit() - budget.available();
        assert!(
            drawn >= 500_004 - FREE_PER_CONNECTION,
            "paid for whole: {drawn}"
        );
        let started = tokio::time::Instant::now();
        // 100 bytes every 200 ms: 500 bytes a second, half the minimum rate. Behind once the
        // time passed reaches 1 s + what arrived / 1,000 bytes a second: at 1.8 s.
        let trickle = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if w.write_all(&[0u8; 100]).await.is_err() {
                    break;
                }
            }
        });
        let err = source.recv().await.unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, TransportError::TooSlow { .. }), "{err:?}");
        assert_eq!(took, Duration::from_millis(1800), "{err:?}");
        assert_eq!(budget.available(), budget.limit(), "given back");
        drop(source);
        trickle.await.unwrap();
    });
}

/// A sender that keeps the minimum rate gets a maximal message through under the default
/// deadline, a pause shorter than the grace included: the rule asks for progress, and
/// progress is all a slow but steady client on a 2 Mbit/s uplink can give.
#[test]
fn a_maximal_message_sent_steadily_at_the_minimum_rate_arrives() {
    run_paused(async {
        let budget = ByteBudget::new(256 << 20);
        let rule = ReceiveDeadline::default();
        let (mut w, r) = tokio::io::duplex(1 << 20);
        let (_, mut source) = ByteStream::new(r, tokio::io::sink())
            .with_budget(budget.clone())
            .with_receive_deadline(Some(rule))
            .split();
        let len = 64 << 20;
        let writer = tokio::spawn(async move {
            w.write_all(&(len as u32).to_be_bytes()).await.unwrap();
            let piece = vec![7u8; rule.min_rate as usize];
            for second in 0..len / piece.len() {
                if second == 128 {
                    // Halfway, a pause of half the grace (at exactly the minimum rate, the
                    // grace is all the slack there is).
                    tokio::time::sleep(rule.grace / 2).await;
                }
                w.write_all(&piece).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            w
        });
        let msg = source.recv().await.unwrap().unwrap();
        assert_eq!(msg.len(), len);
        drop((msg, source));
        let _w = writer.await.unwrap();
        assert_eq!(budget.available(), budget.limit());
    });
}

/// Every way to make a byte stream gives it the receive deadline of a listener's
/// connections, [`ReceiveDeadline::default`]: before, only a listener's connections had
/// one, so a child process, a server reached with `tcp_connect` or `unix_connect`, or the
/// parent on our stdin could start a message and stall it for as long as it lived.
#[test]
fn every_byte_stream_constructor_has_the_default_receive_deadline() {
    run(async {
        let default = Some(ReceiveDeadline::default());
        let (r, w) = tokio::io::split(tokio::io::duplex(64).0);
        assert_eq!(ByteStream::new(r, w).receive_deadline(), default, "new");
        let (client, socket) = tcp_connected().await;
        assert_eq!(client.receive_deadline(), default, "tcp_connect");
        assert_eq!(
            ByteStream::tcp(socket).receive_deadline(),
            default,
            "ByteStream::tcp"
        );
        assert_eq!(byte_stream::stdio().receive_deadline(), default, "stdio");
        #[cfg(unix)]
        {
            let dir = std::env::temp_dir().join(format!("bunite-deadline-{}", std::process::id()));
            let _ = std::fs::remove_file(&dir);
            let listener = tokio::net::UnixListener::bind(&dir).unwrap();
            let client = byte_stream::unix_connect(&dir).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            assert_eq!(client.receive_deadline(), default, "unix_connect");
            assert_eq!(
                ByteStream::unix(accepted).receive_deadline(),
                default,
                "ByteStream::unix"
            );
            let _ = std::fs::remove_file(&dir);
            let (mut child, transport) =
                byte_stream::spawn_child(tokio::process::Command::new("true")).unwrap();
            assert_eq!(transport.receive_deadline(), default, "spawn_child");
            child.wait().await.unwrap();
        }
        // And it can be switched off, or set, as on a listener.
        let (r, w) = tokio::io::split(tokio::io::duplex(64).0);
        let off = ByteStream::new(r, w).with_receive_deadline(None);
        assert_eq!(off.receive_deadline(), None);
    });
}

/// The frame a raw peer's stream carries next, read from any byte reader (no timeout of
/// its own: the tests here run on paused time).
async fn next_frame(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
    dec: &mut Decoder,
) -> Option<Frame> {
    let mut prefix = [0u8; 4];
    if r.read_exact(&mut prefix).await.is_err() {
        return None;
    }
    let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
    r.read_exact(&mut body).await.ok()?;
    Some(dec.decode_frame(&body).expect("valid frame"))
}

/// A connection over a byte stream made by hand (no listener, no deadline set), and the
/// raw peer's halves, after the peer's hello.
async fn raw_peer_of_a_plain_byte_stream() -> (
    Connection,
    tokio::io::ReadHalf<tokio::io::DuplexStream>,
    tokio::io::WriteHalf<tokio::io::DuplexStream>,
) {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (r, w) = tokio::io::split(theirs);
    let conn = tracked(ByteStream::new(r, w));
    let (raw_r, mut raw_w) = tokio::io::split(ours);
    let mut enc = Encoder::new();
    let hello = length_prefixed(&mut enc, &Frame::Hello(raw_hello()));
    raw_w.write_all(&hello).await.unwrap();
    (conn, raw_r, raw_w)
}

/// A peer that sends a length prefix and part of a message, then stalls, is let go at the
/// default deadline's grace (30 s) with goaway `deadline_exceeded`, on a byte stream no
/// listener made; before, the connection waited for the rest for as long as the peer
/// kept the stream open.
#[test]
fn a_stalled_message_on_a_byte_stream_made_by_hand_gets_goaway_at_the_default_deadline() {
    run_paused(async {
        let grace = ReceiveDeadline::default().grace;
        let (conn, mut raw_r, mut raw_w) = raw_peer_of_a_plain_byte_stream().await;
        raw_w.write_all(&100_000u32.to_be_bytes()).await.unwrap();
        raw_w.write_all(&[0u8; 1_000]).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut dec = Decoder::new(WireLimits::default());
        let goaway = timeout(Duration::from_secs(3600), async {
            loop {
                match next_frame(&mut raw_r, &mut dec).await {
                    Some(Frame::Goaway(g)) => break g,
                    Some(_) => continue,
                    None => panic!("closed without goaway"),
                }
            }
        })
        .await
        .expect("no goaway within an hour: the stalled message is not timed");
        let took = started.elapsed();
        assert!(
            took >= grace && took < grace + Duration::from_secs(1),
            "{took:?}"
        );
        assert_eq!(goaway.reason.as_deref(), Some("deadline_exceeded"));
        let e = goaway.error.expect("goaway error");
        assert_eq!(e.code, "deadline_exceeded");
        let message = e.message.unwrap_or_default();
        assert!(message.contains("100004 bytes"), "{message}");
        assert!(next_frame(&mut raw_r, &mut dec).await.is_none(), "closed");
        conn.closed().await;
        assert_clean(&[&conn]).await;
        drop(raw_w);
    });
}

/// A long message that keeps arriving at the default deadline's minimum rate (256 KiB/s)
/// is not cut off, a pause shorter than the grace included: the default asks for
/// progress, not speed.
#[test]
fn a_slow_but_steady_long_message_is_not_cut_off_by_the_default_deadline() {
    run_paused(async {
        let rule = ReceiveDeadline::default();
        let (conn, mut raw_r, mut raw_w) = raw_peer_of_a_plain_byte_stream().await;
        let mut enc = Encoder::new();
        let big = Value::Bin(vec![7u8; 4 << 20]);
        let call = length_prefixed(&mut enc, &call_frame(CapId(1), 1, "anything", big));
        let writer = tokio::spawn(async move {
            // 64 KiB every 250 ms: the minimum rate; a pause of 20 s after the first MiB.
            for (i, piece) in call.chunks(64 * 1024).enumerate() {
                if i == 16 {
                    tokio::time::sleep(rule.grace * 2 / 3).await;
                }
                raw_w.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            raw_w
        });
        let started = tokio::time::Instant::now();
        let mut dec = Decoder::new(WireLimits::default());
        let answer = loop {
            match next_frame(&mut raw_r, &mut dec).await {
                Some(Frame::Result(r)) => break r,
                Some(Frame::Hello(_)) => continue,
                other => panic!("cut off: {other:?}"),
            }
        };
        assert!(
            started.elapsed() > Duration::from_secs(35),
            "{:?}",
            started.elapsed()
        );
        // Cap 1 has no runtime here: the answer says so, so the whole message was read.
        assert_eq!(err_of(answer).code, "not_found");
        assert!(!conn.is_closed());
        let raw_w = writer.await.unwrap();
        drop((raw_w, raw_r));
        conn.closed().await;
        assert_clean(&[&conn]).await;
    });
}

/// `with_receive_deadline(None)` switches it off: a stalled message is waited for.
#[test]
fn a_byte_stream_without_a_receive_deadline_waits_for_a_stalled_message() {
    run_paused(async {
        let (w, r) = tokio::io::duplex(1 << 16);
        let (_, mut source) = ByteStream::new(r, tokio::io::sink())
            .with_receive_deadline(None)
            .split();
        let mut w = w;
        w.write_all(&100_000u32.to_be_bytes()).await.unwrap();
        w.write_all(&[0u8; 1_000]).await.unwrap();
        let waited = timeout(Duration::from_secs(3600), source.recv()).await;
        assert!(
            waited.is_err(),
            "no deadline: still waiting, got {waited:?}"
        );
    });
}

/// A child process (`spawn_child`) that says hello, starts a message and stalls is let go
/// at the default deadline: the call waiting on it fails with the connection's reason,
/// which names the message. Before, the connection, its read buffer and the call waited
/// for as long as the child lived.
#[cfg(unix)]
#[test]
fn a_child_that_stalls_inside_a_message_is_let_go_at_the_default_deadline() {
    run_paused(async {
        // What the child prints: its hello, then a prefix announcing 100,000 bytes and the
        // first 1,000 of them (as `printf` octal escapes), then it sleeps.
        let mut out = length_prefixed(&mut Encoder::new(), &Frame::Hello(raw_hello()));
        out.extend_from_slice(&100_000u32.to_be_bytes());
        out.extend_from_slice(&[b'x'; 1_000]);
        let format: String = out.iter().map(|b| format!("\\{b:03o}")).collect();
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg("printf \"$1\"; exec sleep 3600")
            .arg("sh")
            .arg(format);
        let (mut child, transport) = byte_stream::spawn_child(cmd).unwrap();
        // The hello timeout is switched off: on paused time it would fire before the child
        // has started.
        let limits = bunite_rpc::Limits {
            hello_timeout: None,
            ..bunite_rpc::Limits::default()
        };
        let conn = tracked_with(Connection::builder().limits(limits), transport);
        // Paused time jumps to the next timer whenever the runtime is idle, which it is
        // while the child starts: wait for what it prints without idling (and without a
        // timer), so that the clock moves only once everything printed has been read.
        let real = std::time::Instant::now();
        while conn.peer_hello().is_none() || real.elapsed() < Duration::from_millis(20) {
            assert!(real.elapsed() < WAIT, "the child said nothing");
            tokio::task::yield_now().await;
        }
        let runtime = conn.runtime();
        let call =
            tokio::spawn(async move { runtime.call_value("appName", Value::Undefined).await });
        let started = tokio::time::Instant::now();
        let e = timeout(Duration::from_secs(3600), call)
            .await
            .expect("no end within an hour: the stalled message is not timed")
            .unwrap()
            .unwrap_err();
        assert!(started.elapsed() >= ReceiveDeadline::default().grace);
        let Some(bunite_rpc::Disconnect::ProtocolError { message }) = e.disconnect() else {
            panic!("not ended by the deadline: {e:?}");
        };
        assert!(
            message.contains("too little of one message of 100004 bytes"),
            "{message}"
        );
        assert_eq!(e.code(), Code::Unavailable);
        conn.closed().await;
        assert_clean(&[&conn]).await;
        child.kill().await.unwrap();
    });
}

/// How a `tcp_connect` client's connection ended when its server reset it after reading a
/// byte of our hello, having sent `first` (nothing, or bytes short of a message): the
/// disconnect's kind and message.
async fn reset_by_the_server(first: &'static [u8]) -> (std::io::ErrorKind, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        // Our hello arrives; read a byte of it and leave the rest unread.
        let mut byte = [0u8; 1];
        socket.read_exact(&mut byte).await.unwrap();
        if !first.is_empty() {
            socket.write_all(first).await.unwrap();
            socket.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        socket.set_zero_linger().unwrap();
    });
    let client = tracked(byte_stream::tcp_connect(addr).await.unwrap());
    timeout(WAIT, server).await.unwrap().unwrap();
    timeout(WAIT, client.closed()).await.unwrap();
    match client.closed_by() {
        Some(bunite_rpc::Disconnect::Transport { kind, message }) => (kind, message),
        other => panic!("a transport failure: {other:?}"),
    }
}

/// A `tcp://` client whose server resets the connection before sending a byte (a WebSocket
/// server closing with bytes of ours unread in its socket, rather than closing cleanly): the
/// client's error keeps the reset's kind and text and adds the hint a silent end gives,
/// naming `ws://` (it said only "connection reset by peer").
#[test]
fn a_reset_before_the_first_byte_names_ws() {
    run(async {
        let (kind, message) = reset_by_the_server(b"").await;
        assert_eq!(kind, std::io::ErrorKind::ConnectionReset, "{message}");
        assert!(message.contains("without sending a byte"), "{message}");
        assert!(message.contains("use ws://HOST:PORT/PATH"), "{message}");
    });
}

/// A reset after the server's first byte is a reset and nothing more: the hint is for a
/// server that never spoke.
#[test]
fn a_reset_after_the_first_byte_carries_no_hint() {
    run(async {
        // Half a length prefix: a byte heard, no message.
        let (kind, message) = reset_by_the_server(&[0, 0]).await;
        assert_eq!(kind, std::io::ErrorKind::ConnectionReset, "{message}");
        assert!(!message.contains("ws://"), "{message}");
    });
}
