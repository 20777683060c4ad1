//! Connecting to a bunite WebSocket: [`connect`] and the [`WsConnector`] that sets the
//! timeout, pings, bound, receive deadline and TLS roots.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

use super::metered::Metered;
use super::{config, WsTransport, DEFAULT_MAX_BYTES};
use crate::transport::socket::{self, Socket};
use crate::transport::{ReceiveDeadline, TransportError, TransportInfo};

/// How a client connects (see `# Clients` in the [module docs](super)). Cheap to clone.
#[derive(Debug, Clone)]
pub struct WsConnector {
    max_bytes: usize,
    connect_timeout: Duration,
    ping_interval: Option<Duration>,
    receive_deadline: Option<ReceiveDeadline>,
    #[cfg(feature = "tls")]
    tls: Option<crate::transport::tls::ClientTls>,
}

impl Default for WsConnector {
    fn default() -> Self {
        WsConnector {
            max_bytes: DEFAULT_MAX_BYTES,
            connect_timeout: crate::transport::CONNECT_TIMEOUT,
            ping_interval: Some(crate::transport::PING_INTERVAL),
            receive_deadline: Some(ReceiveDeadline::default()),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl WsConnector {
    /// The defaults: 64 MiB inbound bound, [`CONNECT_TIMEOUT`](crate::transport::CONNECT_TIMEOUT),
    /// [`PING_INTERVAL`](crate::transport::PING_INTERVAL), the default
    /// [`ReceiveDeadline`], the platform's roots for `wss://`.
    pub fn new() -> Self {
        WsConnector::default()
    }

    /// Bounds inbound messages.
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// How long TCP connect, TLS and the WebSocket handshake may take together.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Pings a silent server after `interval` (`None`: never).
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Fails a message from the server that falls behind the pace `deadline` asks for once
    /// it has started (see [`deadline`](crate::transport::deadline)), with
    /// [`TransportError::TooSlow`]; the connection then sends a goaway `deadline_exceeded`
    /// and closes. By default [`ReceiveDeadline::default()`] (30 s from the first stall,
    /// then 256 KiB/s), the rule of a listener's connections and of every byte stream: a
    /// server that stalls inside a message (a reply or a stream item) would otherwise hold
    /// the connection for as long as it keeps the socket open, and every later answer with
    /// it, since messages arrive in order (a call's own deadline fails that call, not the
    /// connection). `None` waits for as long as the server keeps the socket open.
    ///
    /// ```
    /// use std::time::Duration;
    /// use bunite_rpc::transport::{ws::WsConnector, ReceiveDeadline};
    ///
    /// let connector = WsConnector::new()
    ///     .receive_deadline(Some(ReceiveDeadline::new(Duration::from_secs(10), 1 << 20)));
    /// # let _ = connector;
    /// ```
    pub fn receive_deadline(mut self, deadline: Option<ReceiveDeadline>) -> Self {
        self.receive_deadline = deadline;
        self
    }

    /// The roots `wss://` trusts (default: [`ClientTls::platform`](crate::transport::tls::ClientTls::platform)).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, tls: crate::transport::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Connects: a URL (`"ws://host:port/rpc"`, `"wss://…"` with feature `tls`) or a
    /// request with headers (see [`ClientRequestBuilder`](super::ClientRequestBuilder)).
    pub async fn connect(
        &self,
        request: impl IntoClientRequest + Unpin,
    ) -> Result<WsTransport, TransportError> {
        let request = request.into_client_request().map_err(handshake_error)?;
        let uri = request.uri().clone();
        let what = uri.to_string();
        let transport = socket::within(self.connect_timeout, &what, async {
            let socket = self.open_socket(&uri).await?;
            let peer = socket.peer_addr().map(|a| a.to_string());
            let kind = if socket.is_tls() { "wss" } else { "ws" };
            let bound = super::frame_bound(self.max_bytes);
            let socket = Metered::new(
                socket,
                None,
                self.receive_deadline,
                bound,
                true,
                Role::Client,
            );
            let config = Some(config(self.max_bytes));
            match tokio_tungstenite::client_async_with_config(request, socket, config).await {
                Ok((ws, _response)) => {
                    // tungstenite's handshake hands its read buffer (4 KiB) to the socket
                    // it makes, for the connection's life. The meter passed it the head
                    // and nothing after it, so a fresh socket over the same stream loses
                    // no frame and starts from `READ_BUFFER`, as a server's does.
                    let ws =
                        WebSocketStream::from_raw_socket(ws.into_inner(), Role::Client, config)
                            .await;
                    Ok(
                        WsTransport::from_stream(ws, Role::Client, self.max_bytes, None)
                            .with_info(TransportInfo::new(kind, peer)),
                    )
                }
                Err(e) => Err(answer_error(e)),
            }
        })
        .await?;
        Ok(transport.with_ping_interval(self.ping_interval))
    }

    /// The TCP connection, inside TLS for `wss://`.
    async fn open_socket(&self, uri: &super::http::Uri) -> Result<Socket, TransportError> {
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => {
                let e = format!("unsupported WebSocket URL {uri}: use ws:// or wss://");
                return Err(io::Error::new(io::ErrorKind::InvalidInput, e).into());
            }
        };
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
        socket::tune_tcp(&tcp, Some(crate::transport::TCP_KEEPALIVE));
        if !secure {
            return Ok(Socket::from(tcp));
        }
        #[cfg(feature = "tls")]
        {
            let tls = match &self.tls {
                Some(tls) => tls.clone(),
                None => crate::transport::tls::ClientTls::platform()?,
            };
            Ok(tls.connect(host, tcp).await?)
        }
        #[cfg(not(feature = "tls"))]
        {
            let e = format!("{uri}: wss:// needs bunite-rpc's `tls` feature");
            Err(io::Error::new(io::ErrorKind::Unsupported, e).into())
        }
    }
}

/// Connects to a bunite WebSocket with the defaults of [`WsConnector`]: a URL
/// (`"ws://host:port/rpc"`) or a request built with
/// [`ClientRequestBuilder`](super::ClientRequestBuilder) (e.g. to set an `Origin` header).
pub async fn connect(
    request: impl IntoClientRequest + Unpin,
) -> Result<WsTransport, TransportError> {
    WsConnector::new().connect(request).await
}

/// [`connect`] with another bound on inbound messages.
pub async fn connect_with_max_bytes(
    request: impl IntoClientRequest + Unpin,
    max_bytes: usize,
) -> Result<WsTransport, TransportError> {
    WsConnector::new()
        .max_bytes(max_bytes)
        .connect(request)
        .await
}

/// A client's handshake error: as [`handshake_error`], saying so when the server's answer
/// is not HTTP (a bunite byte-stream server answers with its hello, length first).
fn answer_error(e: WsError) -> TransportError {
    match e {
        WsError::Protocol(ProtocolError::HttparseError(e)) => io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "WebSocket handshake failed: the server's answer is not HTTP ({e}): a bunite \
                 byte-stream server answers so (use tcp://HOST:PORT), and a TLS one (use \
                 wss://)"
            ),
        )
        .into(),
        e => handshake_error(e),
    }
}

pub(super) fn handshake_error(e: WsError) -> TransportError {
    match e {
        WsError::Io(e) => TransportError::Io(e),
        WsError::Http(r) => io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("WebSocket handshake refused: HTTP {}", r.status()),
        )
        .into(),
        e => io::Error::other(format!("WebSocket handshake failed: {e}")).into(),
    }
}
