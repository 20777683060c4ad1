//! Messages over WebSocket (PROTOCOL §2): one frame per **binary** message.
//!
//! A text message is a protocol error (the connection answers with goaway
//! `invalid_argument`); pings are answered by tungstenite; a close frame or the end of the
//! socket ends the transport. Inbound messages and frames are bounded by `max_bytes`
//! (default [`DEFAULT_MAX_BYTES`], 64 MiB); a larger one is refused with
//! [`TransportError::TooLarge`].
//!
//! [`WsListener`] serves the socket at one path (the bunite web host uses [`DEFAULT_PATH`])
//! and refuses others with HTTP 404 during the handshake. Each accepted socket comes with the
//! request's `Origin` header and the peer address, for the host's attestation.
//!
//! ```no_run
//! use bunite_rpc::{transport::ws, Connection};
//!
//! # async fn run() -> Result<(), bunite_rpc::transport::TransportError> {
//! let listener = ws::WsListener::bind("127.0.0.1:0", ws::DEFAULT_PATH).await?;
//! let url = format!("ws://{}/rpc", listener.local_addr()?);
//! tokio::spawn(async move {
//!     while let Ok(accepted) = listener.accept().await {
//!         println!("origin {:?} from {}", accepted.origin, accepted.peer_addr);
//!         let _conn = Connection::new(accepted.transport);
//!     }
//! });
//! let client = Connection::new(ws::connect(url.as_str()).await?);
//! # drop(client);
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{error::ProtocolError, Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{MessageSink, MessageSource, Transport, TransportError};

/// The path the bunite web host serves the socket at.
pub const DEFAULT_PATH: &str = "/rpc";

/// The default bound on an inbound message (and frame): 64 MiB, the protocol's default
/// `maxBytes`.
pub const DEFAULT_MAX_BYTES: usize = bunite_wire::Limits::DEFAULT_MAX_BYTES;

/// The protocol error for a text message (PROTOCOL §2).
const TEXT_MESSAGE: &str = "text message on the bunite socket";

/// How long [`WsListener::accept`] waits for one client's handshake before dropping it, so
/// a silent client cannot stall the listener.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One end of a WebSocket carrying bunite messages.
#[derive(Debug)]
pub struct WsTransport<S = MaybeTlsStream<TcpStream>>(WebSocketStream<S>);

impl<S> WsTransport<S> {
    /// Wraps a WebSocket whose handshake is done (e.g. from another server framework).
    /// Configure its size limits when building it.
    pub fn new(ws: WebSocketStream<S>) -> Self {
        WsTransport(ws)
    }
}

/// A socket accepted by [`WsListener::accept`].
#[derive(Debug)]
pub struct Accepted {
    /// The transport.
    pub transport: WsTransport,
    /// The request's `Origin` header, if it had one (and it was valid text).
    pub origin: Option<String>,
    /// The peer's address.
    pub peer_addr: SocketAddr,
}

/// How many handshakes may run at once. A flood of connections that never finish their
/// handshake holds at most this many sockets, each for at most [`HANDSHAKE_TIMEOUT`].
pub const MAX_CONCURRENT_HANDSHAKES: usize = 256;

/// How many handshaken sockets wait for [`WsListener::accept`] before handshakes pause.
const ACCEPT_QUEUE: usize = 64;

/// A WebSocket server for bunite connections at one path.
///
/// A background task accepts TCP connections and runs their handshakes concurrently (at most
/// [`MAX_CONCURRENT_HANDSHAKES`] at once, each bounded by [`HANDSHAKE_TIMEOUT`]), so a slow
/// or silent client never delays the others. Dropping the listener stops it.
#[derive(Debug)]
pub struct WsListener {
    local_addr: SocketAddr,
    accepted: tokio::sync::Mutex<mpsc::Receiver<Accepted>>,
    max_bytes: Arc<AtomicUsize>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl Drop for WsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl WsListener {
    /// Binds `addr` and serves the socket at `path` (e.g. [`DEFAULT_PATH`]).
    pub async fn bind(addr: impl ToSocketAddrs, path: &str) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let max_bytes = Arc::new(AtomicUsize::new(DEFAULT_MAX_BYTES));
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = tokio::spawn(accept_loop(
            listener,
            Arc::from(path),
            Arc::clone(&max_bytes),
            tx,
        ));
        Ok(WsListener {
            local_addr,
            accepted: tokio::sync::Mutex::new(rx),
            max_bytes,
            acceptor,
        })
    }

    /// Sets the bound on inbound messages of the sockets handshaken from now on.
    pub fn with_max_bytes(self, max_bytes: usize) -> Self {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        self
    }

    /// The bound address (to learn the port after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    /// The next socket whose handshake succeeded. Handshakes that fail (wrong path, not a
    /// WebSocket, slower than [`HANDSHAKE_TIMEOUT`]) are dropped and the listener goes on.
    /// An error means the listener stopped.
    pub async fn accept(&self) -> io::Result<Accepted> {
        self.accepted
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| io::Error::other("the WebSocket listener stopped"))
    }
}

/// Accepts TCP connections and hands each to its own handshake task.
async fn accept_loop(
    listener: TcpListener,
    path: Arc<str>,
    max_bytes: Arc<AtomicUsize>,
    tx: mpsc::Sender<Accepted>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let (stream, peer_addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("WebSocket listener accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        let (path, tx) = (Arc::clone(&path), tx.clone());
        let max = max_bytes.load(Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, &path, max)).await {
                // The permit is held until the socket is handed over, so sockets waiting for
                // `accept` count toward the bound too.
                Ok(Ok((transport, origin))) => {
                    let _ = tx
                        .send(Accepted {
                            transport,
                            origin,
                            peer_addr,
                        })
                        .await;
                    drop(permit);
                }
                Ok(Err(e)) => tracing::debug!(%peer_addr, "WebSocket handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer_addr, "WebSocket handshake timed out"),
            }
        });
    }
}

// The callback's `Result<Response, ErrorResponse>` is tungstenite's `Callback` signature.
#[allow(clippy::result_large_err)]
async fn handshake(
    stream: TcpStream,
    path: &str,
    max_bytes: usize,
) -> Result<(WsTransport, Option<String>), WsError> {
    let mut origin = None;
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() != path {
            let mut refused = ErrorResponse::new(Some("no bunite socket at this path".into()));
            *refused.status_mut() = StatusCode::NOT_FOUND;
            return Err(refused);
        }
        origin = req
            .headers()
            .get("origin")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(resp)
    };
    let stream = MaybeTlsStream::Plain(stream);
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config(max_bytes)))
            .await?;
    Ok((WsTransport(ws), origin))
}

/// Connects to a bunite WebSocket: a URL (`"ws://host:port/rpc"`) or a request built with
/// [`IntoClientRequest`] (e.g. to set an `Origin` header). Inbound messages are bounded by
/// [`DEFAULT_MAX_BYTES`].
pub async fn connect(
    request: impl IntoClientRequest + Unpin,
) -> Result<WsTransport, TransportError> {
    connect_with_max_bytes(request, DEFAULT_MAX_BYTES).await
}

/// [`connect`] with another bound on inbound messages.
pub async fn connect_with_max_bytes(
    request: impl IntoClientRequest + Unpin,
    max_bytes: usize,
) -> Result<WsTransport, TransportError> {
    let config = Some(config(max_bytes));
    match tokio_tungstenite::connect_async_with_config(request, config, true).await {
        Ok((ws, _response)) => Ok(WsTransport(ws)),
        Err(WsError::Io(e)) => Err(TransportError::Io(e)),
        Err(WsError::Http(r)) => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("WebSocket handshake refused: HTTP {}", r.status()),
        )
        .into()),
        Err(e) => Err(io::Error::other(format!("WebSocket handshake failed: {e}")).into()),
    }
}

fn config(max_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_bytes))
        .max_frame_size(Some(max_bytes))
}

/// The sending half of a [`WsTransport`].
#[derive(Debug)]
pub struct WsSink<S>(SplitSink<WebSocketStream<S>, Message>);

/// The receiving half of a [`WsTransport`].
#[derive(Debug)]
pub struct WsSource<S>(SplitStream<WebSocketStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for WsTransport<S> {
    type Sink = WsSink<S>;
    type Source = WsSource<S>;

    fn split(self) -> (WsSink<S>, WsSource<S>) {
        let (sink, source) = self.0.split();
        (WsSink(sink), WsSource(source))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MessageSink for WsSink<S> {
    async fn send(&mut self, msg: Bytes) -> Result<(), TransportError> {
        // `feed` queues without flushing; the writer flushes once per batch.
        self.0.feed(Message::Binary(msg)).await.map_err(send_error)
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.0.flush().await.map_err(send_error)
    }

    async fn close(&mut self) -> Result<(), TransportError> {
        // Sends a close frame; a socket already gone is closed enough.
        match self.0.close().await {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Ok(()),
            Err(e) => Err(send_error(e)),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MessageSource for WsSource<S> {
    async fn recv(&mut self) -> Result<Option<Bytes>, TransportError> {
        loop {
            match self.0.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(Message::Binary(bytes))) => return Ok(Some(bytes)),
                Some(Ok(Message::Text(_))) => {
                    return Err(TransportError::Protocol(TEXT_MESSAGE.to_owned()))
                }
                // Pings are answered by tungstenite itself; pongs need nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Err(e)) => return recv_error(e),
            }
        }
    }
}

fn send_error(e: WsError) -> TransportError {
    match e {
        WsError::Io(e) => TransportError::Io(e),
        WsError::ConnectionClosed | WsError::AlreadyClosed => TransportError::Closed,
        other => TransportError::Io(io::Error::other(other.to_string())),
    }
}

fn recv_error(e: WsError) -> Result<Option<Bytes>, TransportError> {
    use tokio_tungstenite::tungstenite::error::CapacityError;
    match e {
        // The end of the socket, with or without a closing handshake.
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ok(None),
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            Err(TransportError::TooLarge {
                len: size as u64,
                max: max_size,
            })
        }
        WsError::Io(e) => Err(TransportError::Io(e)),
        WsError::Protocol(e) => Err(TransportError::Protocol(format!("WebSocket: {e}"))),
        other => Err(TransportError::Io(io::Error::other(other.to_string()))),
    }
}
