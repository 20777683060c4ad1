//! [`WsListener`]: accepts sockets, runs their handshakes concurrently within the bounds
//! of a [`ListenerConfig`], and hands over the ones that succeed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::MaybeTlsStream;

use super::metered::Metered;
use super::{config, WsTransport};
use crate::transport::ListenerConfig;

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

/// How many handshaken sockets wait for [`WsListener::accept`] before handshakes pause.
const ACCEPT_QUEUE: usize = 64;

/// A WebSocket server for bunite connections at one path.
///
/// A background task accepts TCP connections and runs their handshakes concurrently, so a
/// slow or silent client never delays the others. Its [`ListenerConfig`] bounds the live
/// connections (a transport's slot is given back when both its halves are dropped; until
/// then no socket is accepted and new clients wait in the kernel's backlog), the handshakes
/// in progress and their duration, each connection's inbound messages, and the bytes of
/// messages being received across all connections. Dropping the listener stops it.
#[derive(Debug)]
pub struct WsListener {
    local_addr: SocketAddr,
    accepted: tokio::sync::Mutex<mpsc::Receiver<Accepted>>,
    config: ListenerConfig,
    acceptor: tokio::task::JoinHandle<()>,
}

impl Drop for WsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl WsListener {
    /// Binds `addr` and serves the socket at `path` (e.g. [`DEFAULT_PATH`](super::DEFAULT_PATH))
    /// with the default [`ListenerConfig`].
    pub async fn bind(addr: impl ToSocketAddrs, path: &str) -> io::Result<Self> {
        WsListener::bind_with(addr, path, ListenerConfig::default()).await
    }

    /// Binds `addr` and serves the socket at `path` within the bounds of `config`.
    pub async fn bind_with(
        addr: impl ToSocketAddrs,
        path: &str,
        config: ListenerConfig,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = tokio::spawn(accept_loop(listener, Arc::from(path), config.clone(), tx));
        Ok(WsListener {
            local_addr,
            accepted: tokio::sync::Mutex::new(rx),
            config,
            acceptor,
        })
    }

    /// The bound address (to learn the port after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    /// The bounds.
    pub fn config(&self) -> &ListenerConfig {
        &self.config
    }

    /// The next socket whose handshake succeeded. Handshakes that fail (wrong path, not a
    /// WebSocket, slower than the handshake timeout) are dropped and the listener goes on.
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

/// Accepts TCP connections (one per free connection slot) and hands each to its own
/// handshake task (one per free handshake permit).
async fn accept_loop(
    listener: TcpListener,
    path: Arc<str>,
    config: ListenerConfig,
    tx: mpsc::Sender<Accepted>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let handshakes = Arc::new(Semaphore::new(config.max_handshakes));
    loop {
        let (Ok(slot), Ok(permit)) = (
            Arc::clone(&slots).acquire_owned().await,
            Arc::clone(&handshakes).acquire_owned().await,
        ) else {
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
        let (path, tx, config) = (Arc::clone(&path), tx.clone(), config.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let shake = handshake(stream, &path, &config, Some(slot));
            match tokio::time::timeout(config.handshake_timeout, shake).await {
                // The handshake permit is held until the socket is handed over, so sockets
                // waiting for `accept` count toward the bound too.
                Ok(Ok((transport, origin))) => {
                    let accepted = Accepted {
                        transport,
                        origin,
                        peer_addr,
                    };
                    let _ = tx.send(accepted).await;
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
    cfg: &ListenerConfig,
    slot: Option<OwnedSemaphorePermit>,
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
    let stream = Metered::new(MaybeTlsStream::Plain(stream), Some(&cfg.receive_budget));
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config(cfg.max_bytes)))
            .await?;
    let transport = WsTransport::from_stream(ws, cfg.max_bytes, slot);
    Ok((transport, origin))
}

/// Completes the WebSocket upgrade of `path` on a socket accepted elsewhere (a server that
/// also answers plain HTTP on the same port peeks at the request, then hands an upgrade of
/// its bunite path here). Returns the transport, its inbound messages bounded by
/// `config.max_bytes` and drawn from `config.receive_budget`, and the request's `Origin`.
/// Bounding how many such sockets exist is the caller's job.
pub async fn accept_upgrade(
    stream: TcpStream,
    path: &str,
    config: &ListenerConfig,
) -> Result<(WsTransport, Option<String>), crate::transport::TransportError> {
    handshake(stream, path, config, None)
        .await
        .map_err(super::handshake_error)
}
