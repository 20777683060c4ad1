//! Seeded random operations on live connections over the other transports: a WebSocket
//! and the length-prefixed byte stream, each accepted by a listener that takes one
//! connection at a time and pays what waits to be sent from a small send budget, and the
//! sealed pipe over the in-memory transport and over loopback TCP. Each link is wrapped so
//! that a case can cut it (under the sealed pipe, whose messages then stop). The operations,
//! checks and case are in `ops/` (its module docs; `docs/RELIABILITY.md`, "Seeded random
//! operations on live connections").
//!
//! Through a listener, the case also checks its `max_connections` of one: a second client
//! started with the case is not accepted (a WebSocket one not handshaken) while the case's
//! connection lives, and is once it is gone (`transport::budget`, "Past it the listener
//! stops accepting (clients wait in the kernel's backlog) until a connection ends"); and
//! answers the budget cannot pay for are refused `resource_exhausted` (`ops::actor`, `big`).
//!
//! `BUNITE_OPS_SEEDS=N` runs seeds `0..N` (or `A..B`) instead of [`CI_SEEDS`];
//! `BUNITE_OPS_SEED=S` runs seed S alone (a failing case prints its seed).
#![cfg(all(feature = "ws", feature = "sealed", feature = "byte-stream"))]

mod common;
mod ops;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::transport::budget::FREE_PER_CONNECTION;
use bunite_rpc::transport::byte_stream::{ByteStream, TcpMessageListener};
use bunite_rpc::transport::sealed::{Key, Sealed};
use bunite_rpc::transport::ws::{self, WsConnector, WsListener};
use bunite_rpc::transport::{memory, ByteBudget, ListenerConfig};
use bunite_rpc::{Connection, ConnectionBuilder};
use common::{tcp_pair, tracked_with};
use ops::{pair_of, Cuttable, Listener, Pair, OP_BOUND};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// Seeds of a plain test run (about 45 ms each in debug on two cores: 9 s in all).
const CI_SEEDS: u64 = 200;

/// The listeners' send budget, and the overdraft an answer may take beyond it.
const SEND_BUDGET: usize = 32 * 1024;
const OVERDRAFT: usize = 32 * 1024;

type Builder = Arc<dyn Fn() -> ConnectionBuilder + Send + Sync>;

#[test]
fn random_operations_over_websocket_sealed_and_listeners() {
    ops::run_seeds(CI_SEEDS, |rng, cut, builder| {
        let link = rng.below(4);
        Box::pin(async move {
            match link {
                0 => through_ws_listener(cut, builder).await,
                1 => through_tcp_listener(cut, builder).await,
                2 => {
                    let (ta, tb) = memory::pair();
                    let sealed = sealed_over((Cuttable(ta, cut.clone()), Cuttable(tb, cut)));
                    pair_of(sealed, &*builder, "memory+sealed")
                }
                _ => {
                    let (ta, tb) = tcp_pair();
                    let sealed = sealed_over((Cuttable(ta, cut.clone()), Cuttable(tb, cut)));
                    pair_of(sealed, &*builder, "tcp+sealed")
                }
            }
        })
    });
}

fn sealed_over<T: bunite_rpc::transport::Transport + bunite_rpc::transport::MaxBytes>(
    (a, b): (T, T),
) -> (Sealed<T>, Sealed<T>) {
    let key = Key::new([9; 32]);
    (Sealed::new(a, key.clone()), Sealed::new(b, key))
}

/// The listeners' bounds: one connection, and a small send budget.
fn config() -> ListenerConfig {
    ListenerConfig::default()
        .max_connections(1)
        .send_budget(ByteBudget::new(SEND_BUDGET).with_answer_overdraft(OVERDRAFT))
}

/// The most one answer can be paid for on a listener's connection.
const SEND_LIMIT: usize = SEND_BUDGET + FREE_PER_CONNECTION + OVERDRAFT;

/// `a` a WebSocket client of a `WsListener`, `b` the connection it accepted.
async fn through_ws_listener(cut: CancellationToken, builder: Builder) -> Pair {
    let connector = || WsConnector::new().connect_timeout(Duration::from_secs(600));
    let url = |addr: std::net::SocketAddr| format!("ws://{addr}/rpc");
    ws_listened(config(), url, connector, cut, builder, "ws listener").await
}

/// `a` a client of a `WsListener` under `config` (at the address `url` makes of the
/// listener's, each client made by `connector`), `b` the connection it accepted.
async fn ws_listened(
    config: ListenerConfig,
    url: impl FnOnce(std::net::SocketAddr) -> String,
    connector: fn() -> WsConnector,
    cut: CancellationToken,
    builder: Builder,
    label: &'static str,
) -> Pair {
    let l = WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config)
        .await
        .unwrap();
    let url = url(l.local_addr().unwrap());
    let client = connector().connect(url.as_str()).await.unwrap();
    let accepted = timeout(OP_BOUND, l.accept()).await.unwrap().unwrap();
    let a = tracked_with(builder(), Cuttable(client, cut.clone()));
    let b = tracked_with(builder(), Cuttable(accepted.transport, cut));
    // The second client, and the listener's next accept.
    let second = tokio::spawn(async move {
        connector()
            .connect(url.as_str())
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    });
    let next = tokio::spawn(async move { l.accept().await.map(drop).map_err(|e| e.to_string()) });
    listened(a, b, label, vec![second, next])
}

/// `a` a byte-stream client of a `TcpMessageListener`, `b` the connection it accepted.
async fn through_tcp_listener(cut: CancellationToken, builder: Builder) -> Pair {
    let l = TcpMessageListener::bind("127.0.0.1:0", config())
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (accepted, _) = timeout(OP_BOUND, l.accept()).await.unwrap().unwrap();
    let a = tracked_with(builder(), Cuttable(ByteStream::tcp(client), cut.clone()));
    let b = tracked_with(builder(), Cuttable(accepted, cut));
    // The second client (its connect completes in the kernel's backlog), and the
    // listener's next accept.
    let second = tokio::net::TcpStream::connect(addr).await.unwrap();
    let next = tokio::spawn(async move {
        let r = l.accept().await.map(drop).map_err(|e| e.to_string());
        drop(second);
        r
    });
    listened(a, b, "tcp listener", vec![next])
}

/// The tasks of a second client of a listener and of its acceptance.
/// The pair `a`, `b` through a listener of one slot, whose [`Second`] checks are `tasks`.
fn listened(
    a: Connection,
    b: Connection,
    label: &'static str,
    tasks: Vec<JoinHandle<Result<(), String>>>,
) -> Pair {
    Pair {
        a,
        b,
        label,
        send_limit: Some(SEND_LIMIT),
        listener: Some(Box::new(Second { tasks })),
    }
}

struct Second {
    tasks: Vec<JoinHandle<Result<(), String>>>,
}

impl Listener for Second {
    fn accepted_another(&self) -> bool {
        self.tasks.iter().any(JoinHandle::is_finished)
    }

    fn after(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            for task in self.tasks {
                match timeout(OP_BOUND, task).await {
                    Ok(Ok(Ok(()))) => {}
                    other => panic!("the listener's slot did not come back: {other:?}"),
                }
            }
        })
    }
}

/// Seeds of a plain run of the deployment paths (TLS and axum; a TLS handshake and an
/// axum server per case: about 3 s in all in debug on two cores).
#[cfg(all(feature = "tls", feature = "axum"))]
const DEPLOYMENT_SEEDS: u64 = 60;

/// The same operations through the deployment paths: a `tls://` byte-stream client of a
/// TLS `TcpMessageListener`, a `wss://` client of a TLS `WsListener`, and a WebSocket
/// client of an axum `RpcEndpoint`, each with the bounds above (one connection, a small
/// send budget) and a receive budget just above the longest message. Through axum, a second upgrade during the case is answered 503, and once
/// the case's connection is gone the next one is handed over.
#[cfg(all(feature = "tls", feature = "axum"))]
#[test]
fn random_operations_through_tls_and_axum() {
    ops::run_seeds(DEPLOYMENT_SEEDS, |rng, cut, builder| {
        let link = rng.below(3);
        Box::pin(async move {
            match link {
                0 => deployment::through_tls_listener(cut, builder).await,
                1 => deployment::through_wss_listener(cut, builder).await,
                _ => deployment::through_axum(cut, builder).await,
            }
        })
    });
}

#[cfg(all(feature = "tls", feature = "axum"))]
mod deployment {
    use std::net::SocketAddr;

    use bunite_rpc::transport::axum::RpcEndpoint;
    use bunite_rpc::transport::tls;
    use common::tls::roots;
    use tokio::sync::mpsc;

    use super::*;

    /// The listeners' bounds (above), with a receive budget of its own just above the
    /// longest message a case sends (`big`'s 300,000 bytes): each long message is paid
    /// from it, and all of it must be back once the case's connections are gone.
    fn deployment_config() -> ListenerConfig {
        config().receive_budget(ByteBudget::new(RECEIVE_BUDGET))
    }

    const RECEIVE_BUDGET: usize = 320 * 1024;

    fn tls_config() -> ListenerConfig {
        deployment_config().tls(common::tls::server())
    }

    /// A listener's checks, then its receive budget whole again.
    struct Budgeted {
        inner: Box<dyn Listener>,
        budget: ByteBudget,
    }

    impl Listener for Budgeted {
        fn accepted_another(&self) -> bool {
            self.inner.accepted_another()
        }

        fn after(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
            Box::pin(async move {
                let Budgeted { inner, budget } = *self;
                inner.after().await;
                common::eventually(|| budget.available() == budget.limit()).await;
            })
        }
    }

    /// `pair` with its listener's receive budget checked after the case.
    fn budgeted(mut pair: Pair, config: &ListenerConfig) -> Pair {
        let inner = pair.listener.take().expect("a listener");
        pair.listener = Some(Box::new(Budgeted {
            inner,
            budget: config.receive_budget.clone(),
        }));
        pair
    }

    /// A TLS handshake with the listener at `addr`, with no time limit (the listener
    /// takes it up only once the case's connection is gone).
    async fn tls_handshake(addr: SocketAddr) -> Result<(), String> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        common::tls::connect(tcp)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// `a` a `tls://` client of a TLS `TcpMessageListener`, `b` the connection it accepted.
    pub async fn through_tls_listener(cut: CancellationToken, builder: Builder) -> Pair {
        let config = tls_config();
        let l = TcpMessageListener::bind("127.0.0.1:0", config.clone())
            .await
            .unwrap();
        let addr = l.local_addr().unwrap();
        let client = tls::tcp_connect("localhost", addr.port(), &roots())
            .await
            .unwrap();
        let (accepted, _) = timeout(OP_BOUND, l.accept()).await.unwrap().unwrap();
        let a = tracked_with(builder(), Cuttable(client, cut.clone()));
        let b = tracked_with(builder(), Cuttable(accepted, cut));
        // The second client's handshake, which the listener takes up only once the case's
        // connection is gone, and the listener's next accept.
        let second = tokio::spawn(tls_handshake(addr));
        let next =
            tokio::spawn(async move { l.accept().await.map(drop).map_err(|e| e.to_string()) });
        let pair = listened(a, b, "tls listener", vec![second, next]);
        budgeted(pair, &config)
    }

    /// `a` a `wss://` client of a TLS `WsListener`, `b` the connection it accepted.
    pub async fn through_wss_listener(cut: CancellationToken, builder: Builder) -> Pair {
        let config = tls_config();
        let connector = || {
            WsConnector::new()
                .tls(roots())
                .connect_timeout(Duration::from_secs(600))
        };
        let url = |addr: std::net::SocketAddr| format!("wss://localhost:{}/rpc", addr.port());
        let label = "wss listener";
        let pair = super::ws_listened(config.clone(), url, connector, cut, builder, label).await;
        budgeted(pair, &config)
    }

    /// `a` a WebSocket client of an axum `RpcEndpoint` (one connection, the small send
    /// budget) served by `axum::serve`, `b` the connection it handed over.
    pub async fn through_axum(cut: CancellationToken, builder: Builder) -> Pair {
        let config = deployment_config();
        let endpoint = RpcEndpoint::new(config.clone());
        let (tx, mut handed) = mpsc::unbounded_channel();
        let rpc = endpoint.clone().route(move |up| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(up.transport);
            }
        });
        let app = axum::Router::new().route("/rpc", rpc);
        let (addr, stop, server) = common::serve_axum(app).await;
        let url = format!("ws://{addr}/rpc");
        let client = ws::connect(url.as_str()).await.unwrap();
        let transport = timeout(OP_BOUND, handed.recv()).await.unwrap().unwrap();
        let a = tracked_with(builder(), Cuttable(client, cut.clone()));
        let b = tracked_with(builder(), Cuttable(transport, cut));
        // Past its one slot, the endpoint answers an upgrade 503 at once.
        let refused = ws::connect(url.as_str()).await.map(drop);
        let refused = refused.map_err(|e| e.report());
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("HTTP 503")),
            "a second upgrade: {refused:?}"
        );
        let pair = Pair {
            a,
            b,
            label: "axum",
            send_limit: Some(SEND_LIMIT),
            listener: Some(Box::new(Axum {
                endpoint,
                url,
                handed,
                stop,
                server,
            })),
        };
        budgeted(pair, &config)
    }

    /// An axum server and its endpoint of one slot.
    struct Axum {
        endpoint: RpcEndpoint,
        url: String,
        handed: mpsc::UnboundedReceiver<
            bunite_rpc::transport::ws::WsTransport<bunite_rpc::transport::Socket>,
        >,
        stop: tokio::sync::oneshot::Sender<()>,
        server: common::AxumTask,
    }

    impl Listener for Axum {
        /// The endpoint hands over no second connection while the case's lives.
        fn accepted_another(&self) -> bool {
            !self.handed.is_empty() || self.endpoint.connections() > 1
        }

        /// Once the case's connection is gone its slot comes back: the next upgrade is
        /// handed over. Then axum stops, gracefully, and its task ends.
        fn after(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
            Box::pin(async move {
                let Axum {
                    endpoint,
                    url,
                    mut handed,
                    stop,
                    server,
                } = *self;
                common::eventually(|| endpoint.connections() == 0).await;
                let next = ws::connect(url.as_str())
                    .await
                    .expect("the endpoint's slot did not come back");
                let transport = timeout(OP_BOUND, handed.recv()).await.unwrap().unwrap();
                drop((next, transport));
                let _ = stop.send(());
                match timeout(OP_BOUND, server).await {
                    Ok(Ok(Ok(()))) => {}
                    other => panic!("axum did not stop: {other:?}"),
                }
            })
        }
    }
}
