//! Typed results and stream values are serialized straight into their frames when the
//! session sends them (`bunite_wire::Outgoing`), not in the handler: what arrives is the
//! same, and a value that does not serialize or does not fit fails the call or the stream
//! exactly as it did when it was serialized first. Every test ends leak-free on both peers.

mod common;

use bunite_rpc::typed::{Emitter, Stream};
use bunite_rpc::wire::serde_bytes::ByteBuf;
use bunite_rpc::{cap, Blob, Code, Connection, Limits, LocalError, Status};
use common::{assert_clean, assert_remote, pair_with, run};
use futures::StreamExt;
use serde::ser::Error as _;
use serde::{Deserialize, Serialize, Serializer};
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i64,
    y: i64,
    label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Line {
    from: Point,
    to: Point,
}

/// Serializes as its number, except 13, which refuses, and 99, which panics.
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct Picky(u64);

impl Serialize for Picky {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            13 => Err(S::Error::custom("13 refused")),
            99 => panic!("99 panics while serializing"),
            n => s.serialize_u64(n),
        }
    }
}

#[cap(name = "test.Encoding")]
trait Encoding {
    /// A nested record.
    async fn line(&self, n: i64) -> Result<Line, Status>;

    /// `Picky(n)`: 13 does not serialize, 99 panics serializing.
    async fn picky(&self, n: u64) -> Result<Picky, Status>;

    /// `len` bytes.
    async fn blob(&self, len: u64) -> Result<ByteBuf, Status>;

    /// The bytes it was given, reversed (a `Blob` both ways).
    async fn reverse(&self, data: Blob) -> Result<Blob, Status>;

    /// The number in a `Picky` argument (counted in `UNWRAPPED`, as `unwraps` is).
    async fn unwrap(&self, p: Picky) -> Result<u64, Status>;

    /// A line's length along x, from a struct argument.
    async fn width(&self, l: Line) -> Result<i64, Status>;

    /// The number in a `Picky` argument, once (counted in `UNWRAPPED`).
    #[cap(stream)]
    fn unwraps(&self, p: Picky) -> impl Stream<Item = Result<u64, Status>>;

    /// Lines 0..n, then `Picky`s from `from` on: the one at 13 does not serialize.
    #[cap(stream)]
    fn lines(&self, n: i64) -> impl Stream<Item = Result<Line, Status>>;

    /// `Picky(from)`, `Picky(from + 1)`, … up to 15, emitter style.
    #[cap(stream)]
    async fn count(&self, from: u64, out: Emitter<Picky>) -> Result<(), Status>;
}

fn line(i: i64) -> Line {
    Line {
        from: Point {
            x: i,
            y: -i,
            label: (i % 2 == 0).then(|| format!("p{i}")),
        },
        to: Point {
            x: i * 1000,
            y: 7,
            label: None,
        },
    }
}

struct Imp;

/// Calls of `unwrap` and `unwraps` that reached the server.
static UNWRAPPED: AtomicUsize = AtomicUsize::new(0);

impl Encoding for Imp {
    async fn line(&self, n: i64) -> Result<Line, Status> {
        Ok(line(n))
    }

    async fn picky(&self, n: u64) -> Result<Picky, Status> {
        Ok(Picky(n))
    }

    async fn blob(&self, len: u64) -> Result<ByteBuf, Status> {
        Ok(ByteBuf::from(vec![0x5a; len as usize]))
    }

    async fn reverse(&self, data: Blob) -> Result<Blob, Status> {
        Ok(Blob::from(data.iter().rev().copied().collect::<Vec<u8>>()))
    }

    async fn unwrap(&self, p: Picky) -> Result<u64, Status> {
        UNWRAPPED.fetch_add(1, Ordering::SeqCst);
        Ok(p.0)
    }

    async fn width(&self, l: Line) -> Result<i64, Status> {
        Ok(l.to.x - l.from.x)
    }

    fn unwraps(&self, p: Picky) -> impl Stream<Item = Result<u64, Status>> + Send + 'static {
        UNWRAPPED.fetch_add(1, Ordering::SeqCst);
        futures::stream::iter([Ok(p.0)])
    }

    fn lines(&self, n: i64) -> impl Stream<Item = Result<Line, Status>> + Send + 'static {
        futures::stream::iter((0..n).map(|i| Ok(line(i))))
    }

    async fn count(&self, from: u64, mut out: Emitter<Picky>) -> Result<(), Status> {
        for n in from..=15 {
            out.send(Picky(n)).await?;
        }
        Ok(())
    }
}

/// A server serving `Imp`, and a client announcing `max_bytes` to it.
async fn setup(max_bytes: usize) -> (Connection, Connection, EncodingClient) {
    let limits = Limits {
        max_bytes,
        ..Limits::default()
    };
    let (server, client) = pair_with(Connection::builder(), Connection::builder().limits(limits));
    EncodingCap::serve(&server, Imp).await.unwrap().detach();
    let c = EncodingCap::bootstrap(&client).await.unwrap();
    (server, client, c)
}

#[test]
fn typed_results_and_stream_values_arrive_as_they_were() {
    run(async {
        let (server, client, c) = setup(Limits::default().max_bytes).await;
        // Three times: the first teaches the encoder the struct keys, the rest use them.
        for n in [4, 5, 6] {
            assert_eq!(c.line(n).await.unwrap(), line(n));
        }
        let lines: Vec<Line> = c.lines(40).map(|l| l.expect("a line")).collect().await;
        assert_eq!(lines, (0..40).map(line).collect::<Vec<_>>());
        let blob = c.blob(200_000).await.unwrap();
        assert_eq!(blob.len(), 200_000);
        assert!(blob.iter().all(|&b| b == 0x5a));
        drop(c);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn blobs_go_both_ways_short_and_long() {
    run(async {
        let (server, client, c) = setup(Limits::default().max_bytes).await;
        // Short ones are copied out of the message, long ones shared with it
        // (`bunite_wire::Blob`); either way the handler and the caller see the bytes sent.
        for len in [0, 5, Blob::SHARE_MIN - 1, Blob::SHARE_MIN, 65_536, 300_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let back = c.reverse(Blob::from(data.clone())).await.unwrap();
            let expect: Vec<u8> = data.into_iter().rev().collect();
            assert_eq!(&back[..], &expect[..], "{len} bytes");
        }
        drop(c);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn a_result_that_does_not_serialize_fails_the_call_internal() {
    run(async {
        let (server, client, c) = setup(Limits::default().max_bytes).await;
        assert_eq!(c.picky(12).await.unwrap(), Picky(12));
        let e = c.picky(13).await.unwrap_err();
        assert_remote(&e, Code::Internal, "result: 13 refused", None);
        // The encoder is as it was: later calls are fine.
        assert_eq!(c.picky(14).await.unwrap(), Picky(14));
        assert_eq!(c.line(1).await.unwrap(), line(1));
        drop(c);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn a_result_that_panics_while_serializing_fails_the_call_not_the_connection() {
    run(async {
        let (server, client, c) = setup(Limits::default().max_bytes).await;
        let e = c.picky(99).await.unwrap_err();
        assert_remote(
            &e,
            Code::Internal,
            "result: the value panicked while serializing",
            None,
        );
        assert!(!server.is_closed() && !client.is_closed());
        assert_eq!(c.picky(98).await.unwrap(), Picky(98));
        assert_eq!(c.line(3).await.unwrap(), line(3));
        drop(c);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn a_stream_value_that_does_not_serialize_ends_the_stream_after_the_values_before_it() {
    run(async {
        let (server, client, c) = setup(Limits::default().max_bytes).await;
        let mut count = c.count(10);
        for n in 10..13 {
            assert_eq!(count.next().await.unwrap().unwrap(), Picky(n));
        }
        let e = count.next().await.unwrap().unwrap_err();
        assert_remote(&e, Code::Internal, "result: 13 refused", None);
        assert!(
            count.next().await.is_none(),
            "the stream ends with its error"
        );
        drop(count);
        assert_eq!(c.picky(3).await.unwrap(), Picky(3));
        drop(c);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn typed_values_above_the_peer_max_bytes_fail_like_any_other() {
    run(async {
        let (server, client, c) = setup(4096).await;
        let e = c.blob(8192).await.unwrap_err();
        assert!(e.is_remote(), "{e:?}");
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert_eq!(e.reason(), Some("max_frame_bytes"));
        // Below the limit, and records after the failed frame, still work.
        assert_eq!(c.blob(1000).await.unwrap().len(), 1000);
        assert_eq!(c.line(2).await.unwrap(), line(2));
        drop(c);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn typed_args_go_straight_into_the_call_frame_and_one_that_fails_is_never_sent() {
    run(async {
        let (server, client, c) = setup(Limits::default().max_bytes).await;
        // Three times: the first teaches the encoder the struct keys, the rest use them.
        for n in [2, 3, 4] {
            assert_eq!(c.width(line(n)).await.unwrap(), line(n).to.x - n);
        }
        assert_eq!(c.unwrap(Picky(7)).await.unwrap(), 7);
        // An argument that refuses to serialize, and one that panics: each fails its own
        // call here, before anything is sent, and the connection carries on.
        let e = c.unwrap(Picky(13)).await.unwrap_err();
        assert_eq!(e.local_kind(), Some(LocalError::Encode), "{e:?}");
        assert_eq!(
            (e.code(), e.message()),
            (Code::InvalidArgument, "params: 13 refused")
        );
        let e = c.unwrap(Picky(99)).await.unwrap_err();
        assert_eq!(e.local_kind(), Some(LocalError::Encode), "{e:?}");
        assert_eq!(e.message(), "params: the value panicked while serializing");
        assert_eq!(c.unwrap(Picky(8)).await.unwrap(), 8);
        // The same for a stream's arguments: the stream ends with the error at once.
        let items: Vec<_> = c.unwraps(Picky(13)).collect().await;
        let [Err(e)] = &items[..] else {
            panic!("expected one error, got {items:?}");
        };
        assert_eq!(e.local_kind(), Some(LocalError::Encode), "{e:?}");
        assert_eq!(e.message(), "params: 13 refused");
        let items: Vec<_> = c.unwraps(Picky(9)).collect().await;
        assert!(matches!(&items[..], [Ok(9)]), "{items:?}");
        assert_eq!(c.width(line(5)).await.unwrap(), line(5).to.x - 5);
        assert_eq!(
            UNWRAPPED.load(Ordering::SeqCst),
            3,
            "only the calls that serialized"
        );
        assert!(!server.is_closed() && !client.is_closed());
        drop(c);
        assert_clean(&[&server, &client]).await;
    });
}
