//! Messages over a byte stream (PROTOCOL §2): each message is prefixed by its length as a
//! 4-byte big-endian unsigned integer.
//!
//! [`ByteStream`] works over any pair of tokio `AsyncRead`/`AsyncWrite` halves; helpers build
//! one over TCP ([`ByteStream::tcp`], [`tcp_connect`], and the bounded
//! [`TcpMessageListener`]), a Unix socket ([`ByteStream::unix`], [`unix_connect`]), our own
//! stdin/stdout ([`stdio`]) and a child process's stdio ([`spawn_child`]).
//!
//! # Buffers
//!
//! **Writing** ([`ByteStreamSink`]): a batch of messages (everything taken between two
//! flushes) goes out in one vectored write (`writev`), prefixes included. A message of up to
//! [`COPY_MAX`] bytes is copied, with its prefix, into one coalescing buffer: copying a few
//! KiB costs less than an extra slice for the kernel to walk, and a burst of small frames
//! becomes one contiguous write. A larger message is not copied: its prefix ends the
//! coalescing buffer and its body is the next slice, so a 64 KiB message goes out as *one*
//! `writev` of prefix and body. Partial writes resume where they stopped. The sink holds at
//! most [`HIGH_WATER`] bytes (plus the one message that crossed it) before
//! [`poll_ready`](crate::transport::MessageSink::poll_ready) waits for the peer to read; once
//! everything is written it keeps at most [`WRITE_KEEP`] bytes of coalescing buffer.
//!
//! **Reading** ([`ByteStreamSource`]): bytes are read (`read_buf`, into spare capacity,
//! never zeroed) into one `BytesMut`; each complete message is split off as `Bytes` without
//! copying, so a read that brings several messages serves them all. A length above
//! `max_bytes` is refused before its body is allocated, and a long message's buffer grows
//! only with what has arrived (at most [`READ_AHEAD`] bytes or as much as has arrived,
//! whichever is larger, ahead of the data): a peer announcing 64 MiB and sending a little
//! costs a little. Under a [`ByteBudget`], which is charged for a long message whole before
//! its body is read, a message longer than [`READ_SLICE`] gets the rest of its buffer at
//! once when its first slice has arrived (its pages are touched only as its bytes arrive),
//! so it is copied into a larger buffer at most until then. Once no bytes have been pending for [`IDLE_RELEASE`]
//! the buffer is let go, so an idle connection holds no read buffer at all; the next read
//! allocates a fresh one sized for the last message received plus [`READ_CHUNK`] (at most [`READ_MAX_FIRST`] plus that), so a run of
//! 64 KiB messages is read one message per `read` call (under a [`ByteBudget`], the first
//! read stays within the free allowance instead). Each read asks for a little more
//! than it needs ([`READ_CHUNK`]): one that fills its buffer exactly costs an extra, empty
//! `read`. While reads keep filling their buffer (a burst of small messages, a stream's
//! values) that slack doubles, up to [`READ_BURST`], and it falls back once a read comes up
//! short or the buffer is let go; not under a [`ByteBudget`]. Around messages of 16 KiB or
//! more a read asks for whole messages instead (the rest of the one under way, as many
//! more of its size as the slack holds) and [`READ_CHUNK`], so that it does not leave most
//! of the next message at the end of a buffer it must then be copied out of. A read that needs room while
//! its buffer is still shared with messages being handled moves to an earlier allocation
//! whose messages are all gone (up to four are kept, each at most [`READ_MAX_FIRST`] plus
//! [`READ_BURST`], let go with the buffer when idle), instead of a fresh one: freed blocks
//! of 64 KiB and more go back to the kernel under glibc, and each fresh one faulted its
//! pages in again. A long message is read in slices: after [`READ_SLICE`] bytes of it, a
//! call returns `Pending` and wakes its task at once, so that the other tasks of its worker
//! thread run between two slices instead of waiting for the whole message.
//!
//! # Closing
//!
//! Closing the sink flushes and ends our direction (TCP FIN, pipe close). Then the source
//! keeps reading and discarding what the peer still sends for a while (see
//! [`LINGER`](super::LINGER)): closing a socket with unread input makes the kernel reset it,
//! which can destroy the goaway we just sent (e.g. after an oversize prefix with its body
//! still arriving) before the peer reads it. A connection lingers in its own task
//! ([`MessageSource::poll_linger`](super::MessageSource::poll_linger)), within
//! [`CLOSE_GRACE`](crate::connection::CLOSE_GRACE), so that once
//! [`Connection::closed`](crate::Connection::closed) returns the socket is closed and a
//! process may exit without resetting it. A source dropped before the peer's end without
//! having lingered (used on its own, or its connection's sink failed) lingers on a task of
//! its own instead. A listener's connection keeps its slot (`max_connections`) until the
//! lingering socket is closed.
//!
//! # Limits
//!
//! A length above the receiver's limit ([`ByteStream::with_max_bytes`], default
//! [`DEFAULT_MAX_BYTES`](bunite_wire::DecodeLimits::DEFAULT_MAX_BYTES)) is refused with
//! [`TransportError::TooLarge`](super::TransportError::TooLarge) (or
//! [`TransportError::TextForLength`](super::TransportError::TextForLength) when the four bytes are
//! printable text, e.g. a plugin that printed to its stdout; `"HTTP"`, an HTTP server's
//! answer, says that the peer looks like a WebSocket endpoint and names `ws://`, and an
//! HTTP method, a client's request, names `tcp://`): the connection answers with goaway
//! `resource_exhausted`. A [`tcp_connect`] client whose server closes without sending a
//! byte (a bunite server says hello first; a WebSocket server closes so a client whose
//! request is not HTTP) fails with an `UnexpectedEof` that says so
//! ([`SILENT_SERVER`], naming `ws://`) rather than a clean end, and a reset before the
//! first byte carries the same text after its own; from every other
//! constructor such a stream is a clean end. Keep the limit at the connection's
//! [`Limits::max_bytes`](crate::Limits::max_bytes); [`sealed::Sealed`](crate::transport::sealed)
//! adds its own overhead. With a [`ByteBudget`] ([`ByteStream::with_budget`]), a message
//! longer than [`FREE_PER_CONNECTION`](crate::transport::budget::FREE_PER_CONNECTION) draws
//! its whole length from the budget once that much of it has arrived, before its buffer
//! grows past that (no more of it is read before; a length prefix alone draws nothing), and
//! reading waits while the budget is spent, holding nothing of it. With a
//! send budget ([`ByteStream::with_send_budget`]) the connection pays what waits to be sent
//! beyond that allowance, and stops reading while it cannot.
//!
//! Every byte stream has a [`ReceiveDeadline`], the default one unless set otherwise
//! ([`ByteStream::with_receive_deadline`], `None` to switch it off; a
//! [`TcpMessageListener`] sets its config's): a message that stops arriving at the pace it
//! asks for once it has started is [`TransportError::TooSlow`](super::TransportError::TooSlow),
//! and the connection answers with goaway `deadline_exceeded` and closes. This holds for
//! every constructor ([`ByteStream::new`], [`ByteStream::tcp`], [`ByteStream::unix`],
//! [`tcp_connect`], [`unix_connect`], [`stdio`], [`spawn_child`]), so a child process or a
//! server that sends a length prefix and part of a message and then stalls is let go after
//! the grace, instead of holding the connection and its read buffer for as long as it
//! lives. A connection quiet between messages is never timed.
//!
//! # Example
//!
//! A server and a client over loopback TCP:
//!
//! ```
//! use bunite_rpc::dynamic::DynCap;
//! use bunite_rpc::transport::byte_stream::{self, TcpMessageListener};
//! use bunite_rpc::transport::ListenerConfig;
//! use bunite_rpc::{CapDef, Connection, MethodDef, Value};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let def = CapDef::builder("demo.Echo").method(MethodDef::call("echo")).build();
//! let imp = DynCap::new().call("echo", |args, _| async move { Ok(args) }).build();
//!
//! // Server: one connection per accepted socket, within the listener's bounds.
//! let listener = TcpMessageListener::bind("127.0.0.1:0", ListenerConfig::default()).await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn({
//!     let def = def.clone();
//!     async move {
//!         while let Ok((transport, _peer)) = listener.accept().await {
//!             Connection::builder().serve(def.clone(), imp.clone()).connect(transport);
//!         }
//!     }
//! });
//!
//! // Client.
//! let client = Connection::new(byte_stream::tcp_connect(addr).await?);
//! let echo = client.bootstrap(&def).await?;
//! assert_eq!(echo.call_value("echo", Value::from(7)).await?, Value::from(7));
//! client.close();
//! client.closed().await;
//! # Ok(())
//! # }
//! ```

mod listener;
mod read;
mod tcp;
mod write;

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::OwnedSemaphorePermit;

pub use listener::TcpMessageListener;
pub use read::{
    ByteStreamSource, IDLE_RELEASE, READ_AHEAD, READ_BURST, READ_CHUNK, READ_MAX_FIRST, READ_SLICE,
};
pub use tcp::{TcpReader, TcpWriter};
pub use write::{ByteStreamSink, COPY_MAX, HIGH_WATER, WRITE_KEEP};

use super::socket::{self, Socket};
use super::{ByteBudget, MaxBytes, ReceiveDeadline, Transport, TransportInfo};

/// A message transport over a byte stream: a reader half and a writer half.
#[derive(Debug)]
pub struct ByteStream<R, W> {
    reader: R,
    writer: W,
    max_bytes: usize,
    budget: Option<ByteBudget>,
    send_budget: Option<ByteBudget>,
    deadline: Option<ReceiveDeadline>,
    /// A listener's connection slot, given back when both halves are dropped and the
    /// source's socket has stopped lingering.
    slot: Option<Arc<OwnedSemaphorePermit>>,
    /// What it is, for traces and logs.
    info: TransportInfo,
    /// Why a peer may end the stream before its first byte, given as the error when it
    /// does (see [`SILENT_SERVER`]); `None` reads that as a clean end.
    silent: Option<&'static str>,
}

/// The error of a [`tcp_connect`] client whose server ends the connection before sending
/// a byte: a bunite server sends its hello first, and a WebSocket server
/// closes a client whose request is not HTTP (ours is its hello) without a word. A reset
/// before the first byte (such a server closing with bytes of ours unread) carries it too,
/// after the reset's own text.
pub const SILENT_SERVER: &str = "the server closed the connection without sending a byte \
    (a bunite server says hello first): if it is a WebSocket endpoint, which closes a \
    byte-stream client so, use ws://HOST:PORT/PATH";

/// A [`ByteStream`] over a TCP socket, plain or inside TLS (feature `tls`).
pub type TcpTransport = ByteStream<TcpReader, TcpWriter>;

/// A [`ByteStream`] over a Unix socket.
#[cfg(unix)]
pub type UnixTransport =
    ByteStream<tokio::net::unix::OwnedReadHalf, tokio::net::unix::OwnedWriteHalf>;

/// A [`ByteStream`] over this process's stdin and stdout.
pub type StdioTransport = ByteStream<tokio::io::Stdin, tokio::io::Stdout>;

/// A [`ByteStream`] over a child process's stdout and stdin.
pub type ChildTransport = ByteStream<ChildStdout, ChildStdin>;

impl<R, W> ByteStream<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// A transport reading messages from `reader` and writing them to `writer`, with the
    /// default [`ReceiveDeadline`] (see [`with_receive_deadline`](Self::with_receive_deadline)).
    pub fn new(reader: R, writer: W) -> Self {
        ByteStream {
            reader,
            writer,
            max_bytes: bunite_wire::DecodeLimits::DEFAULT_MAX_BYTES,
            budget: None,
            send_budget: None,
            deadline: Some(ReceiveDeadline::default()),
            slot: None,
            info: TransportInfo::new("byte-stream", None),
            silent: None,
        }
    }

    /// Describes the transport in traces and logs (see [`Transport::info`]).
    pub fn with_info(mut self, info: TransportInfo) -> Self {
        self.info = info;
        self
    }

    /// Sets the largest inbound message; a longer length prefix is refused with
    /// [`TransportError::TooLarge`](super::TransportError::TooLarge) before anything is
    /// allocated.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Draws the bytes of long inbound messages from `budget` (see the module docs).
    pub fn with_budget(mut self, budget: ByteBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Has the connection pay what waits to be sent beyond a free allowance from `budget`,
    /// and stop reading while it cannot (see [`budget`](super::budget#what-waits-to-be-sent)).
    pub fn with_send_budget(mut self, budget: ByteBudget) -> Self {
        self.send_budget = Some(budget);
        self
    }

    /// Fails a message that falls behind the pace `deadline` asks for once it has started
    /// (see [`deadline`](super::deadline)), with
    /// [`TransportError::TooSlow`](super::TransportError::TooSlow); `None` waits for as
    /// long as the peer keeps the stream open. Every constructor sets
    /// [`ReceiveDeadline::default()`] (30 s, then 256 KiB/s), the rule of a listener's
    /// connections; a [`TcpMessageListener`] sets its
    /// [`ListenerConfig::receive_deadline`](super::ListenerConfig::receive_deadline).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use bunite_rpc::transport::{byte_stream, ReceiveDeadline};
    ///
    /// # fn run() -> std::io::Result<()> {
    /// // A plugin that may take a minute between the bytes of one message.
    /// let cmd = tokio::process::Command::new("./plugin");
    /// let (_child, transport) = byte_stream::spawn_child(cmd)?;
    /// let transport = transport
    ///     .with_receive_deadline(Some(ReceiveDeadline::new(Duration::from_secs(60), 1 << 16)));
    /// # let _ = transport;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_receive_deadline(mut self, deadline: Option<ReceiveDeadline>) -> Self {
        self.deadline = deadline;
        self
    }

    /// The largest inbound message.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The receive deadline of inbound messages (see
    /// [`with_receive_deadline`](Self::with_receive_deadline)).
    pub fn receive_deadline(&self) -> Option<ReceiveDeadline> {
        self.deadline
    }

    fn with_slot(mut self, slot: OwnedSemaphorePermit) -> Self {
        self.slot = Some(Arc::new(slot));
        self
    }
}

impl<R, W> MaxBytes for ByteStream<R, W> {
    fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    fn set_max_bytes(&mut self, max_bytes: usize) {
        self.max_bytes = max_bytes;
    }
}

impl TcpTransport {
    /// A transport over a connected (or accepted) TCP socket. Sets `TCP_NODELAY` (the
    /// sink already coalesces each batch, so Nagle's algorithm would only add latency) and
    /// TCP keepalive (see [`TCP_KEEPALIVE`](super::TCP_KEEPALIVE)).
    pub fn tcp(stream: TcpStream) -> Self {
        socket::tune_tcp(&stream, Some(super::TCP_KEEPALIVE));
        Self::from_socket(Socket::from(stream))
    }

    /// A transport over a [`Socket`] whose options are already set (e.g. inside TLS).
    pub fn from_socket(socket: Socket) -> Self {
        let kind = if socket.is_tls() { "tls" } else { "tcp" };
        let peer = socket.peer_addr().map(|a| a.to_string());
        let (r, w) = tcp::split(socket);
        ByteStream::new(r, w).with_info(TransportInfo::new(kind, peer))
    }
}

#[cfg(unix)]
impl UnixTransport {
    /// A transport over a connected (or accepted) Unix socket.
    pub fn unix(stream: tokio::net::UnixStream) -> Self {
        let peer = stream
            .peer_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.display().to_string()));
        let (r, w) = stream.into_split();
        ByteStream::new(r, w).with_info(TransportInfo::new("unix", peer))
    }
}

/// Connects to a TCP address, within [`CONNECT_TIMEOUT`](super::CONNECT_TIMEOUT).
pub async fn tcp_connect(addr: impl ToSocketAddrs) -> io::Result<TcpTransport> {
    tcp_connect_within(addr, super::CONNECT_TIMEOUT).await
}

/// Connects to a TCP address, failing with [`io::ErrorKind::TimedOut`] after `timeout`.
pub async fn tcp_connect_within(
    addr: impl ToSocketAddrs,
    timeout: std::time::Duration,
) -> io::Result<TcpTransport> {
    let stream = socket::within(timeout, "the TCP address", TcpStream::connect(addr)).await?;
    let mut transport = ByteStream::tcp(stream);
    transport.silent = Some(SILENT_SERVER);
    Ok(transport)
}

/// Connects to a Unix socket.
#[cfg(unix)]
pub async fn unix_connect(path: impl AsRef<std::path::Path>) -> io::Result<UnixTransport> {
    Ok(ByteStream::unix(
        tokio::net::UnixStream::connect(path).await?,
    ))
}

/// The child side of [`spawn_child`]: this process's stdin and stdout.
///
/// Nothing else may write to stdout. Tokio reads stdin on a blocking thread that cannot be
/// interrupted, so end the runtime with `shutdown_timeout`/`shutdown_background` rather than
/// waiting for that read.
pub fn stdio() -> StdioTransport {
    ByteStream::new(tokio::io::stdin(), tokio::io::stdout())
        .with_info(TransportInfo::new("stdio", None))
}

/// Spawns `cmd` with piped stdin and stdout (stderr is left as configured) and returns the
/// child with a transport over its stdio. The child is killed if the handle is dropped.
pub fn spawn_child(mut cmd: Command) -> io::Result<(Child, ChildTransport)> {
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let missing = || io::Error::other("child spawned without piped stdio");
    let stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = child.stdout.take().ok_or_else(missing)?;
    let info = TransportInfo::new("child", child.id().map(|pid| format!("pid {pid}")));
    Ok((child, ByteStream::new(stdout, stdin).with_info(info)))
}

impl<R, W> Transport for ByteStream<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Sink = ByteStreamSink<W>;
    type Source = ByteStreamSource<R>;

    fn info(&self) -> TransportInfo {
        self.info.clone()
    }

    fn split(self) -> (ByteStreamSink<W>, ByteStreamSource<R>) {
        let sink = ByteStreamSink::new(self.writer, self.send_budget, self.slot.clone());
        let source = ByteStreamSource::new(
            self.reader,
            self.max_bytes,
            self.budget,
            self.deadline,
            self.slot,
        )
        .silent_means(self.silent);
        (sink, source)
    }
}
