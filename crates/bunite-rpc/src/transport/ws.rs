//! Messages over WebSocket (PROTOCOL §2): one frame per **binary** message.
//!
//! A text message is a protocol error (the connection answers with goaway
//! `invalid_argument`); pings are answered by tungstenite (nothing more is read while
//! dozens of pongs cannot be written, so a peer that pings and reads nothing makes us hold
//! few); a close frame or the end of the socket ends the transport. Inbound messages are
//! bounded by `max_bytes` (default [`DEFAULT_MAX_BYTES`], 64 MiB); a larger one is refused
//! with [`TransportError::TooLarge`](super::TransportError::TooLarge) as soon as its frame
//! header announces it.
//!
//! [`WsListener`] serves the socket at one path (the bunite web host uses [`DEFAULT_PATH`])
//! within the bounds of a [`ListenerConfig`](crate::transport::ListenerConfig), and refuses
//! other paths with HTTP 404 during the handshake. Each accepted socket comes with the
//! request's `Origin` header and the peer address, for the host's attestation.
//!
//! # Liveness
//!
//! Every connection pings a peer it has heard nothing from for an interval (default
//! [`PING_INTERVAL`](super::PING_INTERVAL), 30 s; [`ListenerConfig::ping_interval`](
//! super::ListenerConfig::ping_interval) for servers, [`WsConnector::ping_interval`] for
//! clients; a ping goes out one to two intervals into a silence, as incoming frames only
//! set a flag the timer reads) and closes (transport error `TimedOut`) if the peer then
//! stays silent for another interval: a missed pong. Browsers and the TypeScript peer answer pings on their own.
//! TCP keepalive is on underneath as well (see [`TCP_KEEPALIVE`](super::TCP_KEEPALIVE)).
//!
//! A peer that answers pings can still stall inside a message sent in fragments (pings may
//! come between fragments), or trickle a frame: a listener's connections also have a
//! [`ListenerConfig::receive_deadline`](super::ListenerConfig::receive_deadline), the
//! pace a message must keep once it has started (see [`deadline`](super::deadline)), and
//! so has a client ([`WsConnector::receive_deadline`]: the same rule by default, as every
//! byte stream's).
//!
//! # Clients
//!
//! [`connect`] takes a URL or a handshake request; [`WsConnector`] sets the rest: a
//! connect timeout (default [`CONNECT_TIMEOUT`](super::CONNECT_TIMEOUT), 10 s, for TCP,
//! TLS and the WebSocket handshake together), the ping interval, the inbound bound and,
//! with feature `tls`, the roots `wss://` trusts (default: the platform's). Requests with
//! headers (an `Origin`, a token) are built with [`ClientRequestBuilder`] or the [`http`]
//! types re-exported here, so no version-matched tungstenite of your own is needed:
//!
//! ```no_run
//! use bunite_rpc::transport::ws::{self, http::Uri, ClientRequestBuilder};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let uri: Uri = "ws://127.0.0.1:8080/rpc".parse()?;
//! let request = ClientRequestBuilder::new(uri)
//!     .with_header("Origin", "https://app.example")
//!     .with_header("Authorization", "Bearer t0ken");
//! let transport = ws::connect(request).await?;
//! # drop(transport);
//! # Ok(())
//! # }
//! ```
//!
//! A handshake the server refuses fails with [`TransportError::Io`](super::TransportError::Io)
//! (`ConnectionRefused`, "WebSocket handshake refused: HTTP 503"). One whose answer is not
//! HTTP at all fails with `InvalidData` and says so, naming `tcp://`: a bunite byte-stream
//! server answers a WebSocket client with its hello, length first (and a TLS server with
//! an alert: `wss://`).
//!
//! # Closing
//!
//! Closing the sink sends a close frame, ends our direction (TCP FIN), then reads and
//! discards what the peer still sends until it closes too, goes quiet for
//! [`LINGER_QUIET`](super::LINGER_QUIET), or [`LINGER`](super::LINGER) or
//! [`LINGER_BYTES`](super::LINGER_BYTES) is reached. Dropping a socket with unread input makes the kernel send a reset,
//! which can destroy our last frames before the peer reads them: that is how a goaway
//! after an oversize message used to get lost (close code 1006) in about half the runs.
//!
//! # Buffers
//!
//! tungstenite's read buffer starts at [`READ_BUFFER`] bytes and it reads at most that much
//! per call (it zeroes the buffer's free room before each read, so a small buffer also
//! costs less per message: a 1 KiB echo took 15% fewer instructions than with 4 KiB); a
//! client's socket is made afresh after its handshake, whose 4 KiB buffer tungstenite
//! would otherwise keep for the connection's life. Under it, the socket is read ahead in
//! chunks of up to [`SOCKET_READ`] bytes (a 64 KiB message is one `recvfrom`), in a
//! buffer let go as soon as tungstenite has taken it and not held while the read waits
//! for the socket; a read buffer of 16 KiB or more
//! (one sized for a long message) is kept for the next read while the connection is busy,
//! and let go once it has been idle for 100 ms, so that a run of long messages does not
//! take a fresh allocation each (glibc faulted its pages in again every time: about one
//! page fault per 64 KiB echo, now none). tungstenite writes once
//! [`WRITE_BUFFER`] bytes are queued, and on every flush. Its
//! defaults (128 KiB each) made an idle connection cost about 140 KB per end; these make
//! it cost a few KB over a TCP connection (figures in `docs/BENCHMARKS.md`).
//!
//! tungstenite keeps its buffers at their high-water mark until the connection closes, and
//! each holds one frame whole, so neither may see a long frame:
//!
//! - A message longer than 8 KiB is written around tungstenite: the frame's header and
//!   payload go straight to the socket, after what tungstenite held before it and before
//!   what it writes after it; a server's payload without a copy (one vectored write), a
//!   client's masked 64 KiB at a time (a last piece of up to 8 KiB with the one before it)
//!   into a buffer it keeps for the next (so a client connection keeps up to 72 KiB after
//!   its first long message). One frame per message,
//!   as the TypeScript peer and browsers send.
//! - A message that arrives as one frame longer than 8 KiB (as every peer sends them) is
//!   read around tungstenite: its payload goes straight into the message's buffer (the
//!   socket read's own buffer when the whole frame arrived in it, so without a copy; else
//!   a buffer an earlier message left, once that one is gone, or a new one), unmasked in
//!   place, and leaves with the message, in its place among the others. Any other frame
//!   longer than 8 KiB (fragments of a message, text) is cut into fragments of 8 KiB on its
//!   way from the socket to tungstenite (only frame headers are written; the payload passes
//!   untouched, and the cut does not show on the wire).
//!
//! So after long messages a server connection keeps about 16 KB more (after one 120 KiB message
//! each way it kept about 250 KB per end before, when messages went through tungstenite
//! in 128 KiB fragments and frames were cut at 128 KiB; and 48 MiB after a 48 MiB message
//! before frames were cut at all).
//!
//! # Example
//!
//! A server and a client over loopback:
//!
//! ```
//! use bunite_rpc::dynamic::DynCap;
//! use bunite_rpc::transport::ws;
//! use bunite_rpc::{CapDef, Connection, MethodDef, Value};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let def = CapDef::builder("demo.Echo").method(MethodDef::call("echo")).build();
//! let imp = DynCap::new().call("echo", |args, _| async move { Ok(args) }).build();
//!
//! let listener = ws::WsListener::bind("127.0.0.1:0", ws::DEFAULT_PATH).await?;
//! let url = format!("ws://{}{}", listener.local_addr()?, ws::DEFAULT_PATH);
//! tokio::spawn({
//!     let def = def.clone();
//!     async move {
//!         while let Ok(accepted) = listener.accept().await {
//!             println!("origin {:?} from {}", accepted.origin, accepted.peer_addr);
//!             Connection::builder().serve(def.clone(), imp.clone()).connect(accepted.transport);
//!         }
//!     }
//! });
//!
//! let client = Connection::new(ws::connect(url.as_str()).await?);
//! let echo = client.bootstrap(&def).await?;
//! assert_eq!(echo.call_value("echo", Value::from("hi")).await?, Value::from("hi"));
//! client.close();
//! client.closed().await;
//! # Ok(())
//! # }
//! ```

mod client;
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod fuzz;
mod halves;
mod keepalive;
mod listener;
mod metered;
mod reframe;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

pub use client::{connect, connect_with_max_bytes, WsConnector};
pub use halves::{WsSink, WsSource};
pub use listener::{accept_upgrade, Accepted, WsListener};
/// Building a client's handshake request (a URL with headers) without naming tungstenite.
pub use tokio_tungstenite::tungstenite::client::{ClientRequestBuilder, IntoClientRequest};
/// The `http` types of WebSocket handshakes (`Uri`, `HeaderValue`, `Request`), as
/// tungstenite uses them.
pub use tokio_tungstenite::tungstenite::http;
/// Which end of a WebSocket a socket is, for [`WsTransport::from_raw_socket`] (a client
/// masks what it sends).
pub use tokio_tungstenite::tungstenite::protocol::Role;

use super::{MaxBytes, Socket, Transport, TransportInfo};
use keepalive::Keepalive;
use metered::Metered;

/// The path the bunite web host serves the socket at.
pub const DEFAULT_PATH: &str = "/rpc";

/// The default bound on an inbound message: 64 MiB, the protocol's default `maxBytes`.
pub const DEFAULT_MAX_BYTES: usize = bunite_wire::DecodeLimits::DEFAULT_MAX_BYTES;

/// tungstenite's read size and initial read buffer (reads are served from a larger
/// read-ahead, so this bounds only what an idle connection keeps). A message of up to
/// 8 KiB that does not fit grows it to the message's size, for the connection's life.
pub const READ_BUFFER: usize = 1024;

/// The largest socket read: a 64 KiB message and its frame header in one `recvfrom`. The
/// read-ahead buffer exists only while it holds bytes, or, sized for a long message, until
/// the connection has been idle for 100 ms.
pub const SOCKET_READ: usize = 68 * 1024;

/// Queued bytes past which tungstenite writes before the flush.
pub const WRITE_BUFFER: usize = 8 * 1024;

/// Room tungstenite leaves above `max_bytes`, so that a wrapper (the sealed pipe) can raise
/// the bound by its overhead after the handshake. The source enforces `max_bytes` itself.
const WRAPPER_ROOM: usize = 64;

/// One end of a WebSocket carrying bunite messages, over a [`Socket`] (TCP, TLS, or an
/// HTTP server's upgraded connection) unless made with [`from_raw_socket`](Self::from_raw_socket).
#[derive(Debug)]
pub struct WsTransport<S = Socket> {
    shared: Arc<Mutex<Shared<S>>>,
    info: TransportInfo,
}

/// The socket, shared by the two halves (each locks it for one poll, never across an
/// `.await`).
#[derive(Debug)]
struct Shared<S> {
    ws: WebSocketStream<Metered<S>>,
    max_bytes: usize,
    /// The source has ended or failed, or the sink started closing: reads are over.
    read_done: bool,
    /// Pings (see `# Liveness`).
    keepalive: Option<Keepalive>,
    /// A listener's connection slot, given back when both halves are dropped.
    _slot: Option<OwnedSemaphorePermit>,
    /// Frames we send are masked: a client's (RFC 6455 §5.3).
    mask: bool,
    /// What the connection pays what waits to be sent from
    /// ([`MessageSink::send_budget`](super::MessageSink::send_budget)).
    send_budget: Option<super::ByteBudget>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsTransport<S> {
    /// Wraps a socket whose WebSocket handshake is done (e.g. by another server framework),
    /// for `role`, bounding inbound messages by `max_bytes`. It pings every
    /// [`PING_INTERVAL`](super::PING_INTERVAL) (see [`with_ping_interval`](Self::with_ping_interval)).
    pub async fn from_raw_socket(socket: S, role: Role, max_bytes: usize) -> Self {
        let ws = WebSocketStream::from_raw_socket(
            Metered::new(socket, None, None, frame_bound(max_bytes), false, role),
            role,
            Some(config(max_bytes)),
        )
        .await;
        WsTransport::from_stream(ws, role, max_bytes, None)
    }

    fn from_stream(
        ws: WebSocketStream<Metered<S>>,
        role: Role,
        max_bytes: usize,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let shared = Shared {
            ws,
            max_bytes,
            read_done: false,
            keepalive: Some(Keepalive::new(super::PING_INTERVAL)),
            _slot: slot,
            mask: role == Role::Client,
            send_budget: None,
        };
        WsTransport {
            shared: Arc::new(Mutex::new(shared)),
            info: TransportInfo::new("ws", None),
        }
    }

    /// Pings a silent peer after `interval` and closes if it stays silent as long again
    /// (`None`: never ping). See `# Liveness` in the [module docs](self).
    pub fn with_ping_interval(self, interval: Option<Duration>) -> Self {
        halves::lock(&self.shared).keepalive = interval.map(Keepalive::new);
        self
    }

    /// Describes the transport in traces and logs (see [`Transport::info`]).
    pub fn with_info(mut self, info: TransportInfo) -> Self {
        self.info = info;
        self
    }

    /// Has the connection pay what waits to be sent beyond a free allowance from
    /// `budget`, and stop reading while it cannot (see
    /// [`budget`](super::budget#what-waits-to-be-sent)); a listener gives its
    /// [`send_budget`](super::ListenerConfig::send_budget).
    pub fn with_send_budget(self, budget: super::ByteBudget) -> Self {
        halves::lock(&self.shared).send_budget = Some(budget);
        self
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WsTransport<S> {
    /// The server end of a socket whose upgrade was answered elsewhere (another HTTP
    /// server, or a test), within the bounds of `config` (inbound bound, budgets, receive
    /// deadline, pings) as a listener's connection, holding a connection `slot` if given.
    #[cfg(any(feature = "axum", feature = "test-util"))]
    pub(crate) async fn upgraded(
        socket: S,
        config: &super::ListenerConfig,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let bound = frame_bound(config.max_bytes);
        let budget = Some(&config.receive_budget);
        let socket = Metered::new(
            socket,
            budget,
            config.receive_deadline,
            bound,
            false,
            Role::Server,
        );
        let cfg = Some(self::config(config.max_bytes));
        let ws = WebSocketStream::from_raw_socket(socket, Role::Server, cfg).await;
        WsTransport::from_stream(ws, Role::Server, config.max_bytes, slot)
            .with_ping_interval(config.ping_interval)
            .with_send_budget(config.send_budget.clone())
    }
}

impl<S> MaxBytes for WsTransport<S> {
    fn max_bytes(&self) -> usize {
        halves::lock(&self.shared).max_bytes
    }

    /// Sets the bound; after the handshake it can rise by at most 64 bytes (room for a
    /// wrapper's overhead) above the bound the socket was made with.
    fn set_max_bytes(&mut self, max_bytes: usize) {
        let mut shared = halves::lock(&self.shared);
        let room = shared
            .ws
            .get_config()
            .max_message_size
            .unwrap_or(usize::MAX);
        shared.max_bytes = max_bytes.min(room);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for WsTransport<S> {
    type Sink = WsSink<S>;
    type Source = WsSource<S>;

    fn split(self) -> (WsSink<S>, WsSource<S>) {
        halves::split(self.shared)
    }

    fn info(&self) -> TransportInfo {
        self.info.clone()
    }
}

/// The longest frame and message tungstenite takes: `max_bytes` plus a wrapper's room.
fn frame_bound(max_bytes: usize) -> usize {
    max_bytes.saturating_add(WRAPPER_ROOM)
}

/// tungstenite's settings: small buffers (see `# Buffers`), frames and messages bounded by
/// `max_bytes` plus a wrapper's room.
fn config(max_bytes: usize) -> WebSocketConfig {
    let bound = frame_bound(max_bytes);
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(Some(bound))
        .max_frame_size(Some(bound))
}
