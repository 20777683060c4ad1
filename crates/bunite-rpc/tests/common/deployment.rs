//! The deployment paths the seeded listener tests drive (`random_receive_budget.rs`,
//! `random_graceful_stop.rs`): which one a case serves on, how a well-behaved client dials
//! it, and how a raw peer connects and frames its messages.

use std::net::SocketAddr;

use bunite_rpc::transport::byte_stream;
use bunite_rpc::transport::ws::{self, WsConnector};
use bunite_rpc::{Connection, ConnectionBuilder};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::{tracked_with, ws_client_header, ws_upgrade_by_hand};

/// Where a case's server listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The byte stream: a `TcpMessageListener`.
    Tcp,
    /// WebSocket: a `WsListener`.
    Ws,
    /// The byte stream inside TLS: a `TcpMessageListener` with a certificate.
    #[cfg(feature = "tls")]
    Tls,
    /// WebSocket inside TLS: a `WsListener` with a certificate.
    #[cfg(feature = "tls")]
    Wss,
    /// WebSocket through an axum `RpcEndpoint` under `axum::serve` (past its slots, an
    /// upgrade is answered 503).
    #[cfg(feature = "axum")]
    Axum,
}

impl Kind {
    /// Whether its messages are WebSocket messages (else length-prefixed).
    pub fn ws(self) -> bool {
        match self {
            Kind::Tcp => false,
            Kind::Ws => true,
            #[cfg(feature = "tls")]
            Kind::Tls => false,
            #[cfg(feature = "tls")]
            Kind::Wss => true,
            #[cfg(feature = "axum")]
            Kind::Axum => true,
        }
    }

    /// Whether its sockets speak TLS.
    pub fn tls(self) -> bool {
        match self {
            #[cfg(feature = "tls")]
            Kind::Tls | Kind::Wss => true,
            _ => false,
        }
    }
}

/// How to start a connection over a transport a dial made.
pub type Dialed = Box<dyn FnOnce(ConnectionBuilder) -> Connection + Send>;

/// A well-behaved client's transport to the server of `kind` at `addr` (WebSocket kinds
/// through `connector`, given the tests' roots inside TLS); the error's report if it
/// failed.
pub async fn dial(kind: Kind, addr: SocketAddr, connector: WsConnector) -> Result<Dialed, String> {
    match kind {
        Kind::Tcp => {
            let t = byte_stream::tcp_connect(addr).await;
            let t = t.map_err(|e| e.to_string())?;
            Ok(Box::new(move |b| tracked_with(b, t)))
        }
        #[cfg(feature = "tls")]
        Kind::Tls => {
            let roots = super::tls::roots();
            let port = addr.port();
            let t = bunite_rpc::transport::tls::tcp_connect("localhost", port, &roots);
            let t = t.await.map_err(|e| e.report())?;
            Ok(Box::new(move |b| tracked_with(b, t)))
        }
        _ => {
            let url = match kind.tls() {
                false => format!("ws://{addr}{}", ws::DEFAULT_PATH),
                true => format!("wss://localhost:{}{}", addr.port(), ws::DEFAULT_PATH),
            };
            #[cfg(feature = "tls")]
            let connector = match kind.tls() {
                true => connector.tls(super::tls::roots()),
                false => connector,
            };
            let t = connector.connect(url.as_str()).await;
            let t = t.map_err(|e| e.report())?;
            Ok(Box::new(move |b| tracked_with(b, t)))
        }
    }
}

/// A raw peer's halves: of a TCP socket, or of a TLS client's stream.
pub type RawRead = Box<dyn AsyncRead + Send + Unpin>;
pub type RawWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A raw socket connected to the server at `addr`, inside TLS and past the WebSocket
/// upgrade as `kind` speaks: `Err` with the status an upgrade was answered with if not
/// 101; `None` if the socket, the TLS handshake or the upgrade's response failed.
pub async fn connect_raw(kind: Kind, addr: SocketAddr) -> Option<Result<(RawRead, RawWrite), u16>> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let (mut r, mut w): (RawRead, RawWrite) = match kind.tls() {
        #[cfg(feature = "tls")]
        true => {
            let (r, w) = tokio::io::split(super::tls::connect(tcp).await.ok()?);
            (Box::new(r), Box::new(w))
        }
        _ => {
            let (r, w) = tcp.into_split();
            (Box::new(r), Box::new(w))
        }
    };
    if kind.ws() {
        match ws_upgrade_by_hand(&mut r, &mut w, addr).await? {
            101 => {}
            status => return Some(Err(status)),
        }
    }
    Some(Ok((r, w)))
}

/// A message's bytes on the wire: its length prefix, or a client frame's header (FIN,
/// binary, masked with a zero key so that the payload goes as it is).
pub fn framed(kind: Kind, body: &[u8]) -> Vec<u8> {
    let mut out = match kind.ws() {
        false => (body.len() as u32).to_be_bytes().to_vec(),
        true => ws_client_header(0x82, body.len()),
    };
    out.extend_from_slice(body);
    out
}
