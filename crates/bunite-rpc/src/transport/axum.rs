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
//! joins a [`ConnectionSet`](crate::ConnectionSet) that is stopping, which the stop
//! below waits for (`# Stopping`). The HTTP side
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
//!
//! # Stopping
//!
//! axum stops its HTTP server (`with_graceful_shutdown`); the connections an endpoint
//! hands over are the app's to stop, most simply by having the route's callback insert
//! each into a [`ConnectionSet`](crate::ConnectionSet) and return. A graceful stop then
//! takes four steps, in this order:
//!
//! 1. signal axum's graceful shutdown (it accepts nothing more, finishes its HTTP requests
//!    and hands over the upgrades it answered) and [`drain`](crate::ConnectionSet::drain)
//!    the set (new calls refused, running ones answered, each connection closed once
//!    idle, the rest when the grace runs out, and a connection joining from now on drained
//!    at once);
//! 2. wait for axum's `serve` to return: from then on no upgrade is answered;
//! 3. wait for [`RpcEndpoint::handed_over`]: every upgrade axum answered, until it
//!    stopped, has reached the callback and the callback has returned, so has joined the
//!    set. Without this step the stop can return in the window between hyper handing a
//!    connection over and the callback inserting it (the endpoint's task still receives
//!    the socket and builds the transport), and that connection then drains on its own,
//!    after the stop returned;
//! 4. wait for the set's [`closed`](crate::ConnectionSet::closed): every connection has
//!    closed and its tasks have ended (within the grace and
//!    [`CLOSE_GRACE`](crate::connection::CLOSE_GRACE)).
//!
//! Step 2 needs axum's graceful shutdown, whose `serve` returns once its connections have
//! ended; a `serve` future dropped instead leaves its connections to wind down on their
//! own tasks, and one may still answer an upgrade after `handed_over` returned.
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Duration;
//!
//! use axum::Router;
//! use bunite_rpc::transport::{axum::RpcEndpoint, ws, ListenerConfig};
//! use bunite_rpc::{Connection, ConnectionSet};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let connections = ConnectionSet::new();
//! let endpoint = RpcEndpoint::new(ListenerConfig::default());
//! let rpc = endpoint.clone().route({
//!     let connections = connections.clone();
//!     move |up| {
//!         let connections = connections.clone();
//!         // The connection joins the set, and the hand-over is done as this returns.
//!         async move { connections.insert(&Connection::new(up.transport)) }
//!     }
//! });
//! let app = Router::new().route("/rpc", rpc);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop_http, http_stopping) = tokio::sync::oneshot::channel::<()>();
//! let http = tokio::spawn(async move {
//!     let service = app.into_make_service_with_connect_info::<SocketAddr>();
//!     axum::serve(listener, service)
//!         .with_graceful_shutdown(async { let _ = http_stopping.await; })
//!         .await
//! });
//! let client = Connection::new(ws::connect(format!("ws://{addr}/rpc")).await?);
//!
//! // … until the server is asked to stop (say, `tokio::signal::ctrl_c().await?`):
//! let grace = Duration::from_secs(10);
//! let _ = stop_http.send(()); // 1.
//! connections.drain(grace);
//! http.await??; // 2.
//! endpoint.handed_over().await; // 3.
//! connections.closed().await; // 4.
//! assert!(connections.is_empty() && endpoint.handovers() == 0);
//! client.closed().await; // closed by the server, with a goaway
//! # Ok(())
//! # }
//! ```
//!
//! Why the endpoint counts its hand-overs and offers a wait, rather than taking a set to
//! insert into: it does not make the connections (the callback builds each, with its own
//! policy, attestation and caps) and does not know where the app keeps them (a
//! `ConnectionSet`, a registry of its own, or nowhere), so it counts the work it has
//! started and lets the app wait for it, as tokio-util's `TaskTracker` does for tasks and
//! hyper-util's graceful-shutdown watcher for connections. The count begins as the
//! upgrade is answered, before hyper writes the `101`, so none can slip past a stop that
//! waits for axum first; it ends as the callback's future returns, or its task ends
//! otherwise. A callback that runs on (awaiting its connection's close, as the first
//! example does) holds `handed_over` until it returns; one that inserts its connection
//! into the set before awaiting returns within the grace of step 1.

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
use handovers::Handovers;

mod handovers;

/// One bunite endpoint of an axum app: the bounds its connections share, and its
/// hand-overs in flight (see `# Stopping` in the [module docs](self)). Cheap to clone
/// (clones share both).
#[derive(Debug, Clone)]
pub struct RpcEndpoint {
    config: ListenerConfig,
    slots: Arc<Semaphore>,
    handovers: Arc<Handovers>,
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
            handovers: Arc::default(),
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

    /// Hand-overs in flight: upgrades this endpoint answered (`101`) whose callback has
    /// not returned yet, whether hyper has not handed the connection over, the transport
    /// is being built, or the callback runs.
    pub fn handovers(&self) -> usize {
        self.handovers.in_flight()
    }

    /// Waits until no hand-over is in flight ([`handovers`](Self::handovers) is zero),
    /// those begun meanwhile included. Awaited once axum has stopped (its `serve` returned
    /// after its graceful shutdown), when no upgrade is answered any more: then every
    /// connection the endpoint answered has been given to its callback and the callback
    /// has returned, so a callback that inserts each connection into a
    /// [`ConnectionSet`](crate::ConnectionSet) has inserted them all, and the set's
    /// [`closed`](crate::ConnectionSet::closed) waits for every one (see `# Stopping` in
    /// the [module docs](self)). A callback that runs on (awaiting its connection's close,
    /// say) holds this until it returns.
    ///
    /// Cancel-safe: it only waits.
    pub async fn handed_over(&self) {
        self.handovers.none_in_flight().await;
    }

    /// Test hook: while `hold` is true, each hand-over waits after hyper hands its
    /// connection over, before the transport is built and the callback runs.
    #[cfg(feature = "test-util")]
    #[doc(hidden)]
    pub fn hold_handovers(&self, hold: bool) {
        self.handovers.hold.hold(hold);
    }

    /// Test hook: each hand-over begun from now on sleeps `delay` after hyper hands its
    /// connection over, before the hold, the transport and the callback.
    #[cfg(feature = "test-util")]
    #[doc(hidden)]
    pub fn delay_handovers(&self, delay: std::time::Duration) {
        self.handovers.hold.delay(delay);
    }

    /// Test hook: hand-overs waiting at the hold of [`hold_handovers`](Self::hold_handovers).
    #[cfg(feature = "test-util")]
    #[doc(hidden)]
    pub fn handovers_held(&self) -> usize {
        self.handovers.hold.waiting()
    }

    /// A route that upgrades `GET` requests and runs `on_connect` for each connection (on
    /// a task of its own): a hand-over in flight ([`handovers`](Self::handovers)) until
    /// `on_connect`'s future returns.
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
    /// and, once the connection is upgraded, runs `f` with it on a task of its own; the
    /// hand-over is in flight ([`RpcEndpoint::handovers`]) until `f`'s future returns.
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
        // Counted before the 101 goes out, so before axum can stop with it answered.
        let handover = endpoint.handovers.begin();
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
            #[cfg(feature = "test-util")]
            handover.pass_test_hooks().await;
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
            // Done as the callback returns (and on every return above, the guard dropped).
            drop(handover);
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
