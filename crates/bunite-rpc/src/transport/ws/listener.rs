//! [`WsListener`]: accepts sockets, runs their handshakes (TLS with feature `tls`, then
//! WebSocket) concurrently within the bounds of a [`ListenerConfig`], and hands over the
//! ones that succeed.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Error as WsError;

use super::metered::Metered;
use super::{config, WsTransport};
use crate::transport::listen::Handshaken;
use crate::transport::{ListenerConfig, Socket, TransportInfo};

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

/// A WebSocket server for bunite connections at one path.
///
/// A background task accepts TCP connections and runs their handshakes concurrently, so a
/// slow or silent client never delays the others. Its [`ListenerConfig`] bounds the live
/// connections (a transport's slot is given back when both its halves are dropped; until
/// then no socket is accepted and new clients wait in the kernel's backlog), the handshakes
/// in progress and their duration, each connection's inbound messages, and the bytes of
/// messages being received across all connections; it sets the ping interval, TCP
/// keepalive and, with feature `tls`, the certificate (`wss://`). Dropping the listener
/// stops it: from then on its port refuses connections (on Linux at once, elsewhere as its
/// accept task ends), and the handshakes under way end.
#[derive(Debug)]
pub struct WsListener {
    local_addr: SocketAddr,
    config: ListenerConfig,
    accepted: Handshaken<Accepted>,
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
        let (path, cfg): (Arc<str>, _) = (Arc::from(path), config.clone());
        let accepted = Handshaken::spawn(listener, config.clone(), move |stream, peer, slot| {
            let (path, cfg) = (Arc::clone(&path), cfg.clone());
            async move {
                let socket = open(stream, &cfg).await.map_err(|e| e.to_string())?;
                let (transport, origin) = handshake(socket, &path, &cfg, Some(slot))
                    .await
                    .map_err(|e| e.to_string())?;
                let kind = if transport_is_tls(&cfg) { "wss" } else { "ws" };
                Ok(Accepted {
                    transport: transport
                        .with_info(TransportInfo::new(kind, Some(peer.to_string()))),
                    origin,
                    peer_addr: peer,
                })
            }
        });
        Ok(WsListener {
            local_addr,
            config,
            accepted,
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
    ///
    /// Cancel-safe: a socket already handshaken waits for the next `accept`.
    pub async fn accept(&self) -> io::Result<Accepted> {
        self.accepted
            .next()
            .await
            .map_err(|_| io::Error::other("the WebSocket listener stopped"))
    }
}

fn transport_is_tls(_config: &ListenerConfig) -> bool {
    #[cfg(feature = "tls")]
    if _config.tls.is_some() {
        return true;
    }
    false
}

/// The accepted socket, inside TLS when the config has a certificate.
async fn open(stream: TcpStream, _config: &ListenerConfig) -> io::Result<Socket> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &_config.tls {
        return tls.accept(stream).await;
    }
    Ok(Socket::from(stream))
}

// The callback's `Result<Response, ErrorResponse>` is tungstenite's `Callback` signature.
#[allow(clippy::result_large_err)]
async fn handshake(
    stream: Socket,
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
    let bound = super::frame_bound(cfg.max_bytes);
    let stream = Metered::new(
        stream,
        Some(&cfg.receive_budget),
        cfg.receive_deadline,
        bound,
        true,
        Role::Server,
    );
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config(cfg.max_bytes)))
            .await?;
    let transport = WsTransport::from_stream(ws, Role::Server, cfg.max_bytes, slot)
        .with_ping_interval(cfg.ping_interval)
        .with_send_budget(cfg.send_budget.clone());
    Ok((transport, origin))
}

/// Completes the WebSocket upgrade of `path` on a socket accepted elsewhere (a server that
/// also answers plain HTTP on the same port peeks at the request, then hands an upgrade of
/// its bunite path here). Returns the transport, its inbound messages bounded by
/// `config.max_bytes` and drawn from `config.receive_budget`, its answers paid from
/// `config.send_budget`, pinging at
/// `config.ping_interval`, and the request's `Origin`. The socket is plain (the config's
/// TLS, if any, is not applied). The handshake fails with [`io::ErrorKind::TimedOut`]
/// after `config.handshake_timeout`, as a [`WsListener`]'s do: a peer that sends half a
/// request head and stops would otherwise hold the socket, and the caller's task, for as
/// long as it kept the connection open. Bounding how many such sockets exist is the
/// caller's job.
pub async fn accept_upgrade(
    stream: TcpStream,
    path: &str,
    config: &ListenerConfig,
) -> Result<(WsTransport, Option<String>), crate::transport::TransportError> {
    crate::transport::tune_tcp(&stream, config.tcp_keepalive);
    let peer = stream.peer_addr().ok().map(|a| a.to_string());
    let handshake = handshake(Socket::from(stream), path, config, None);
    let Ok(handshaken) = tokio::time::timeout(config.handshake_timeout, handshake).await else {
        let after = config.handshake_timeout.as_millis();
        let e = format!("the WebSocket handshake took longer than {after} ms");
        return Err(io::Error::new(io::ErrorKind::TimedOut, e).into());
    };
    let (transport, origin) = handshaken.map_err(super::client::handshake_error)?;
    Ok((transport.with_info(TransportInfo::new("ws", peer)), origin))
}
