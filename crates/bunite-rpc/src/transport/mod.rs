//! Message transports (PROTOCOL §2): one encoded frame per message, in order, reliably.
//!
//! A transport splits into a [`MessageSink`] and a [`MessageSource`]. Both are poll-based,
//! so that one task can drive a connection's reads and writes together: a read is never held
//! up because a write is blocked, and frames that are ready together are written together
//! (the sink buffers them between [`start_send`](MessageSink::start_send) and
//! [`poll_flush`](MessageSink::poll_flush)). [`MessageSinkExt`] and [`MessageSourceExt`]
//! wrap the poll functions in `async` methods for tests and tools.
//!
//! Each adapter is small; the connection core knows nothing about sockets.
//!
//! # Features
//!
//! Each adapter beyond the in-memory pair is behind a cargo feature: `byte-stream`, `ws` and
//! `sealed` are on by default, `tls` and `axum` are not.
//!
//! - [`memory`]: an in-process pair. Always available.
//! - [`byte_stream`] (feature `byte-stream`): length-prefixed messages over a byte stream:
//!   TCP (with a bounded listener), Unix sockets, a child process's stdio, our own stdio.
//! - [`ws`] (feature `ws`): one message per binary WebSocket message; a bounded listener for
//!   hosts (path `/rpc`) and a client.
//! - [`sealed`] (feature `sealed`): the encrypted pipe, AES-256-GCM per message, wrapping any
//!   other transport.
//! - `tls` (feature `tls`): TLS with rustls for the socket transports: `wss://` clients,
//!   `tls://` byte streams, listeners that terminate TLS.
//! - `axum` (feature `axum`): bunite connections on a route of an existing axum `Router`.
//!
//! Under the socket transports is one [`Socket`] type (TCP, TLS over TCP, an upgraded HTTP
//! connection). Connecting takes at most [`CONNECT_TIMEOUT`] by default; TCP sockets get
//! keepalive ([`TCP_KEEPALIVE`]) and WebSocket connections ping ([`PING_INTERVAL`]), so a
//! peer that goes silent is noticed.
//!
//! The listeners share a [`ListenerConfig`] (bounds on connections, handshakes, the bytes
//! of partly received messages and the bytes waiting to be sent, each drawn from a
//! [`ByteBudget`]); see [`budget`].
//!
//! # Bounds
//!
//! Every buffer a transport keeps is bounded: inbound messages by `max_bytes` (refused
//! before their body is allocated), outbound buffers by each sink's documented high-water
//! mark (past it [`poll_ready`](MessageSink::poll_ready) waits for the peer to read).

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
pub mod budget;
#[cfg(feature = "byte-stream")]
#[cfg_attr(docsrs, doc(cfg(feature = "byte-stream")))]
pub mod byte_stream;
pub mod deadline;
#[cfg(feature = "ws")]
mod listen;
/// [`byte_stream`] under its name before the rename (issue 9: three modules were named for
/// streams). Kept, hidden and deprecated, so that code written against it (the comparison
/// harness's own adapter among it) still builds; new code uses [`byte_stream`].
#[cfg(feature = "byte-stream")]
#[deprecated(note = "renamed to `bunite_rpc::transport::byte_stream`")]
#[doc(hidden)]
pub mod stream {
    pub use super::byte_stream::*;
}
pub mod memory;
#[cfg(any(feature = "ws", feature = "byte-stream"))]
mod recycle;
#[cfg(feature = "sealed")]
#[cfg_attr(docsrs, doc(cfg(feature = "sealed")))]
pub mod sealed;
#[cfg(any(feature = "ws", feature = "byte-stream"))]
mod socket;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
#[cfg(feature = "ws")]
#[cfg_attr(docsrs, doc(cfg(feature = "ws")))]
pub mod ws;

use std::future::{poll_fn, Future};
use std::io;
use std::task::{Context, Poll};

use bytes::Bytes;

pub use budget::{BudgetPermit, ByteBudget, ListenerConfig};
pub use deadline::ReceiveDeadline;
#[cfg(any(feature = "ws", feature = "byte-stream"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "ws", feature = "byte-stream"))))]
pub use socket::{tune_tcp, Socket};

use std::time::Duration;

/// Idle time before TCP keepalive sends its first probe.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Time between TCP keepalive probes.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Unanswered probes after which the kernel fails the socket (so a silent peer is noticed
/// after about `TCP_KEEPALIVE + TCP_KEEPALIVE_RETRIES × TCP_KEEPALIVE_INTERVAL`, 60 s).
pub const TCP_KEEPALIVE_RETRIES: u32 = 3;

/// How long connecting may take by default (TCP connect, TLS and WebSocket handshakes
/// together): long enough for a slow network, short enough that a wrong address fails
/// while someone still waits for it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a WebSocket connection pings a peer it has heard nothing from (and how long
/// it then waits for the pong before closing), by default. Browsers and the TypeScript peer
/// answer pings on their own.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);

/// How long a socket transport, once closed, keeps reading and discarding what the peer
/// still sends, at most. Closing a socket with unread input makes the kernel reset it,
/// which can destroy our last frames (a goaway) before the peer reads them.
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Lingering stops once the peer has sent nothing for this long: with our input drained,
/// the close sends no reset.
pub const LINGER_QUIET: std::time::Duration = std::time::Duration::from_millis(250);

/// How many bytes lingering reads and discards, at most.
pub const LINGER_BYTES: usize = 64 << 20;

/// Why a transport failed.
///
/// [`Io`](TransportError::Io) keeps the [`io::Error`] (and so its [`io::ErrorKind`]) as its
/// [`source`](std::error::Error::source); its own message does not repeat it, so print the
/// chain (as the connection does) to see both.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// An I/O error.
    #[error("transport I/O error")]
    Io(#[source] io::Error),
    /// A message above the receiver's `maxBytes` (the transport refused to read it).
    #[error("message of {len} bytes exceeds maxBytes {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A byte-stream peer sent printable text where a length prefix belongs: something else
    /// writes to the stream (a plugin printing to its stdout), or the peer speaks HTTP. Its
    /// message says which when the text tells: `"HTTP"` is an HTTP server's answer (a
    /// `tcp://` client at a WebSocket endpoint, which should use `ws://`), an HTTP method
    /// (`"GET "`) a client's request (a WebSocket client at a byte-stream port). Treated
    /// like [`TooLarge`](TransportError::TooLarge): the connection answers
    /// `resource_exhausted`.
    #[error("{}", text_for_length(text, *len, *max))]
    TextForLength {
        /// The four bytes, as text.
        text: String,
        /// The length they announce.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The peer broke the transport's framing (e.g. a text WebSocket message, a sealed
    /// message that fails authentication).
    #[error("{0}")]
    Protocol(String),
    /// A message under way fell behind its [`ReceiveDeadline`] (a listener's, a byte
    /// stream's default, or one a client set): the peer stalled or trickled it.
    /// The connection answers `deadline_exceeded` in a goaway.
    #[error(
        "the peer sent too little of one message{} in {after:?} (the receive deadline's \
         grace and a second per its minimum rate of bytes that arrived)",
        len.map(|n| format!(" of {n} bytes")).unwrap_or_default()
    )]
    TooSlow {
        /// The time the message had: the deadline's grace and a second per `min_rate`
        /// bytes of it that arrived after it first stalled.
        after: Duration,
        /// Its length, as far as its header told.
        len: Option<u64>,
    },
    /// The transport is closed.
    #[error("transport closed")]
    Closed,
}

/// The message of [`TransportError::TextForLength`]: what the text suggests the peer is.
fn text_for_length(text: &str, len: u64, max: usize) -> String {
    const METHODS: [&str; 9] = [
        "GET ", "HEAD", "POST", "PUT ", "DELE", "OPTI", "PATC", "CONN", "TRAC",
    ];
    let what = format!("{text:?} where a 4-byte length prefix belongs");
    if text.starts_with("HTTP") {
        format!(
            "the peer answered with HTTP ({what}): this looks like a WebSocket endpoint, \
             not a byte stream (use ws://HOST:PORT/PATH)"
        )
    } else if METHODS.contains(&text) {
        format!(
            "the peer sent an HTTP request ({what}): a WebSocket or HTTP client at a \
             byte-stream port (bunite clients reach it with tcp://HOST:PORT)"
        )
    } else {
        format!(
            "the peer sent text {what} (read as a message of {len} bytes, above maxBytes \
             {max}); is something else writing to this stream, e.g. a plugin printing to \
             stdout?"
        )
    }
}

impl From<io::Error> for TransportError {
    fn from(e: io::Error) -> Self {
        TransportError::Io(e)
    }
}

impl TransportError {
    /// The kind of the underlying I/O error, for [`Io`](TransportError::Io).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            TransportError::Io(e) => Some(e.kind()),
            _ => None,
        }
    }

    /// The error and its sources on one line, each once.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            out.push_str(": ");
            out.push_str(&e.to_string());
            source = e.source();
        }
        out
    }
}

/// The receiving half of a message transport.
pub trait MessageSource: Send + Unpin + 'static {
    /// The next message; `Ready(Ok(None))` once the peer closed cleanly.
    ///
    /// After an error or the end, the source is done: polling it again returns an error or
    /// the end again, never a message.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, TransportError>>;

    /// The connection stops polling this source for a reason of its own (too much of what
    /// it sends waits for the peer, or a listener's send budget cannot pay for more) until
    /// it has room again: a source that times the message under way (a
    /// [`ReceiveDeadline`]) does not count that time against the
    /// peer, which could send no faster than we read. The default does nothing; a source
    /// that wraps another passes it on.
    fn pause(&mut self) {}

    /// The connection has closed its sink (our last frames, a goaway among them, are
    /// written and our direction ended) and is about to drop this source: read and discard
    /// what the peer still sends until it ends its direction, goes quiet, or the source has
    /// waited long enough (a socket source: [`LINGER_QUIET`], [`LINGER`], [`LINGER_BYTES`]),
    /// then return `Ready`. Closing a socket with unread input makes the kernel reset it,
    /// which can destroy those last frames before the peer reads them. The connection waits
    /// for this within [`CLOSE_GRACE`](crate::connection::CLOSE_GRACE), so that
    /// [`Connection::closed`](crate::Connection::closed) means the socket is closed. The
    /// default returns `Ready` at once (nothing to reset); a source that wraps another passes
    /// it on.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Ready(())
    }
}

/// The sending half of a message transport, with `futures::Sink<Bytes>` semantics.
///
/// A sink may buffer: [`start_send`](MessageSink::start_send) takes a message without
/// writing it; [`poll_ready`](MessageSink::poll_ready) returns `Pending` only when the sink's
/// own bounded buffer is full and cannot be written out now; [`poll_flush`](
/// MessageSink::poll_flush) writes everything taken so far.
pub trait MessageSink: Send + Unpin + 'static {
    /// Ready to take one more message.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>>;

    /// Takes one message. Call it only after [`poll_ready`](MessageSink::poll_ready)
    /// returned `Ready(Ok(()))`.
    fn start_send(&mut self, msg: Bytes) -> Result<(), TransportError>;

    /// Writes out every message taken so far.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>>;

    /// Flushes, then closes our direction; the peer's source then ends.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>>;

    /// Bytes written out so far, for a sink that writes a message in parts (a byte stream, a
    /// WebSocket):
    /// the connection counts any change as progress, so a slow reader of a large message is
    /// not taken for a stalled one ([`Limits::write_stall_timeout`](
    /// crate::Limits::write_stall_timeout)). The default, always 0, leaves progress to
    /// [`poll_ready`](MessageSink::poll_ready) and [`poll_flush`](MessageSink::poll_flush)
    /// returning `Ready`.
    fn written(&self) -> u64 {
        0
    }

    /// Bytes taken by [`start_send`](MessageSink::start_send) and not yet written out
    /// (what the sink holds of the messages it took). A sink may leave out a small buffer of
    /// its own (a few KiB); it must count every message it holds whole. The default, always
    /// 0, is for a sink that holds nothing of its own (or under no
    /// [`send_budget`](MessageSink::send_budget)).
    fn queued(&self) -> usize {
        0
    }

    /// The budget that bytes waiting to be sent on this connection are paid from: a
    /// listener's [`send_budget`](ListenerConfig::send_budget) (see
    /// [`budget`](budget#what-waits-to-be-sent)). The connection pays for what its session
    /// and this sink hold beyond [`FREE_PER_CONNECTION`](budget::FREE_PER_CONNECTION), and
    /// stops reading the peer while it cannot. The default is none.
    fn send_budget(&self) -> Option<ByteBudget> {
        None
    }
}

/// A message transport that splits into its two halves.
pub trait Transport: Send + 'static {
    /// The sending half.
    type Sink: MessageSink;
    /// The receiving half.
    type Source: MessageSource;

    /// Splits the transport.
    fn split(self) -> (Self::Sink, Self::Source);

    /// What the transport is and whom it reaches, for traces and logs.
    fn info(&self) -> TransportInfo {
        TransportInfo::default()
    }
}

/// What a transport is and whom it reaches (see [`Transport::info`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportInfo {
    /// Its kind: `"memory"`, `"tcp"`, `"ws"`, … (empty if unknown).
    pub kind: &'static str,
    /// The peer's address, when the transport has one.
    pub peer: Option<String>,
}

impl TransportInfo {
    /// A transport of `kind`, reaching `peer`.
    pub fn new(kind: &'static str, peer: Option<String>) -> Self {
        TransportInfo { kind, peer }
    }
}

/// A transport whose inbound messages are bounded (`maxBytes`), so that a wrapper such as
/// [`sealed::Sealed`] can make room for its own overhead.
pub trait MaxBytes {
    /// The largest inbound message.
    fn max_bytes(&self) -> usize;
    /// Sets the largest inbound message.
    fn set_max_bytes(&mut self, max_bytes: usize);
}

/// `async` helpers over [`MessageSink`], for tests and tools (the connection polls).
pub trait MessageSinkExt: MessageSink {
    /// Waits until the sink takes `msg`; does not flush (as `futures::SinkExt::feed`).
    fn feed(&mut self, msg: Bytes) -> impl Future<Output = Result<(), TransportError>> + Send {
        async move {
            poll_fn(|cx| self.poll_ready(cx)).await?;
            self.start_send(msg)
        }
    }

    /// Sends `msg` and flushes (as `futures::SinkExt::send`).
    fn send(&mut self, msg: Bytes) -> impl Future<Output = Result<(), TransportError>> + Send {
        async move {
            self.feed(msg).await?;
            self.flush().await
        }
    }

    /// Writes out every buffered message.
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send {
        poll_fn(|cx| self.poll_flush(cx))
    }

    /// Flushes, then closes our direction.
    fn close(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send {
        poll_fn(|cx| self.poll_close(cx))
    }
}

impl<S: MessageSink + ?Sized> MessageSinkExt for S {}

/// `async` helpers over [`MessageSource`], for tests and tools (the connection polls).
pub trait MessageSourceExt: MessageSource {
    /// The next message; `Ok(None)` once the peer closed cleanly.
    fn recv(&mut self) -> impl Future<Output = Result<Option<Bytes>, TransportError>> + Send {
        poll_fn(|cx| self.poll_recv(cx))
    }
}

impl<S: MessageSource + ?Sized> MessageSourceExt for S {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_is_the_source_and_printed_once() {
        let e = TransportError::from(io::Error::new(io::ErrorKind::ConnectionRefused, "refused!"));
        assert_eq!(e.io_kind(), Some(io::ErrorKind::ConnectionRefused));
        assert!(!e.to_string().contains("refused!"), "{e}");
        let source = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("refused!"));
        assert_eq!(e.report(), "transport I/O error: refused!");
        assert_eq!(TransportError::Closed.io_kind(), None);
    }
}
