//! Serving bunite connections on a route of an existing axum `Router` (feature
//! `axum`): the web page and `/rpc` on one port, one HTTP server.
//!
//! [`RpcEndpoint::route`] is the whole of it for most servers: a `MethodRouter` that
//! upgrades `GET` requests to WebSocket and hands each connection, with the request's
//! `Origin`, headers and peer address (for the [`Attestation`](crate::Attestation)), to a
//! callback. A handler of your own can take the [`WsUpgrade`] extractor instead (to look at
//! the request, or refuse it, before upgrading) and call [`WsUpgrade::on_upgrade`].
//!
//! # Limits
//!
//! An endpoint applies the [`ListenerConfig`] of [`WsListener`](super::ws::WsListener):
//! `max_connections` live connections (past it an upgrade is answered
//! `503 Service Unavailable` rather than queued, as the HTTP request is already accepted),
//! `max_bytes` per inbound message, one `receive_budget` and one `send_budget` across its
//! connections, the `receive_deadline`, and
//! `ping_interval`. An upgrade holds its connection slot from the `101` on; hyper hands the
//! connection over once the `101` is written, and one it has not handed over within
//! `handshake_timeout` (a client that reads nothing) gives the slot back. When axum stops
//! (its graceful shutdown, or `axum::serve`'s future dropped), hyper ends such a wait at
//! once, by handing the connection over with its `101` cut short: the route's callback
//! runs once more, maybe after axum has returned, with a connection whose client never read
//! its `101`. It ends at the client's close or the hello timeout, or is drained as it
//! joins a [`ConnectionSet`](crate::ConnectionSet) that is stopping. The HTTP side
//! (header sizes, timeouts, TLS, how many requests are parsed at once) is axum's and
//! hyper's; `max_handshakes`, `tcp_keepalive` and `tls` are not used here. A connection
//! that never says hello is closed after the connection's
//! [`Limits::hello_timeout`](crate::Limits::hello_timeout), as any other.
//!
//! The peer address is known when the app is served with
//! `into_make_service_with_connect_info::<SocketAddr>()`.
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! use axum::{response::Html, routing::get, Router};
//! use bunite_rpc::transport::{axum::RpcEndpoint, ListenerConfig};
//! use bunite_rpc::{Attestation, Connection};
//!
//! # async fn run() -> std::io::Result<()> {
//! let rpc = RpcEndpoint::new(ListenerConfig::default()).route(|up| async move {
//!     let origin = up.origin.unwrap_or_default();
//!     let conn = Connection::builder()
//!         .attestation(Attestation { origin, ..Attestation::default() })
//!         .connect(up.transport);
//!     conn.closed().await;
//! });
//! let app = Router::new()
//!     .route("/", get(|| async { Html("<h1>hello</h1>") }))
//!     .route("/rpc", rpc);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use ::axum::extract::{ConnectInfo, FromRequestParts};
use ::axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode, Version};
use ::axum::response::{IntoResponse, Response};
use ::axum::routing::{get, MethodRouter};
use hyper::upgrade::OnUpgrade;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::ws::WsTransport;
use super::{ListenerConfig, Socket};

/// One bunite endpoint of an axum app: the bounds its connections share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RpcEndpoint {
    config: ListenerConfig,
    slots: Arc<Semaphore>,
}

/// A connection upgraded by an [`RpcEndpoint`], with what the request said about the peer.
#[derive(Debug)]
#[non_exhaustive]
pub struct Upgraded {
    /// The transport.
    pub transport: WsTransport,
    /// The request's `Origin` header, if it had one (and it was valid text).
    pub origin: Option<String>,
    /// The request's headers.
    pub headers: HeaderMap,
    /// The peer's address, when the app is served with connect info.
    pub peer_addr: Option<SocketAddr>,
}

impl RpcEndpoint {
    /// An endpoint within the bounds of `config` (see `# Limits` in the [module docs](self)).
    pub fn new(config: ListenerConfig) -> Self {
        RpcEndpoint {
            slots: Arc::new(Semaphore::new(config.max_connections)),
            config,
        }
    }

    /// The bounds.
    pub fn config(&self) -> &ListenerConfig {
        &self.config
    }

    /// Live connections of this endpoint.
    pub fn connections(&self) -> usize {
        self.config.max_connections - self.slots.available_permits()
    }

    /// A route that upgrades `GET` requests and runs `on_connect` for each connection (on
    /// a task of its own).
    pub fn route<S, F, Fut>(self, on_connect: F) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
        F: Fn(Upgraded) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        get(move |upgrade: WsUpgrade| {
            let (endpoint, on_connect) = (self.clone(), on_connect.clone());
            async move { upgrade.on_upgrade(&endpoint, on_connect) }
        })
    }
}

/// The extractor of a WebSocket upgrade request (HTTP/1.1 `GET` with `Upgrade:
/// websocket`, version 13); a request that is not one is refused with the status
/// axum's own WebSocket extractor gives.
#[derive(Debug)]
pub struct WsUpgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
    headers: HeaderMap,
    peer_addr: Option<SocketAddr>,
}

/// Why a request is not a WebSocket upgrade: a status and a reason.
#[derive(Debug)]
pub struct WsUpgradeRejection(StatusCode, &'static str);

impl IntoResponse for WsUpgradeRejection {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

impl std::fmt::Display for WsUpgradeRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0, self.1)
    }
}

impl std::error::Error for WsUpgradeRejection {}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = WsUpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let refuse = |status, why| Err(WsUpgradeRejection(status, why));
        if parts.version > Version::HTTP_11 {
            return refuse(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "WebSocket needs HTTP/1.1",
            );
        }
        if parts.method != Method::GET {
            return refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "WebSocket upgrades are GET requests",
            );
        }
        if !header_has(&parts.headers, header::CONNECTION, "upgrade")
            || !header_has(&parts.headers, header::UPGRADE, "websocket")
        {
            return refuse(
                StatusCode::UPGRADE_REQUIRED,
                "a bunite WebSocket: upgrade to websocket",
            );
        }
        if !header_has(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Version must be 13");
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key missing");
        };
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return refuse(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            );
        };
        let peer_addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(WsUpgrade {
            key,
            on_upgrade,
            headers: parts.headers.clone(),
            peer_addr,
        })
    }
}

impl WsUpgrade {
    /// The request's `Origin` header, if it is valid text.
    pub fn origin(&self) -> Option<&str> {
        self.headers.get(header::ORIGIN)?.to_str().ok()
    }

    /// The request's headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The peer's address, when the app is served with connect info.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// Answers the upgrade (`101`, or `503` when `endpoint` has no free connection slot)
    /// and, once the connection is upgraded, runs `f` with it on a task of its own.
    pub fn on_upgrade<F, Fut>(self, endpoint: &RpcEndpoint, f: F) -> Response
    where
        F: FnOnce(Upgraded) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Ok(slot) = Arc::clone(&endpoint.slots).try_acquire_owned() else {
            let why = "too many bunite connections; try again later";
            return (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
        };
        let accept = derive_accept_key(self.key.as_bytes());
        let config = endpoint.config.clone();
        let WsUpgrade {
            on_upgrade,
            headers,
            peer_addr,
            ..
        } = self;
        tokio::spawn(async move {
            // hyper hands the connection over once the 101 is written: a client that reads
            // nothing would hold the slot for as long as it kept the connection open.
            let io = match tokio::time::timeout(config.handshake_timeout, on_upgrade).await {
                Ok(Ok(io)) => io,
                Ok(Err(e)) => return tracing::debug!("WebSocket upgrade failed: {e}"),
                Err(_) => return tracing::debug!("WebSocket upgrade timed out"),
            };
            let peer = peer_addr.map(|a| a.to_string());
            let transport = WsTransport::upgraded(Socket::upgraded(io), &config, Some(slot))
                .await
                .with_info(super::TransportInfo::new("ws", peer));
            let origin = headers
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            f(Upgraded {
                transport,
                origin,
                headers,
                peer_addr,
            })
            .await;
        });
        let mut response = Response::new(::axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = response.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(v) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        response
    }
}
