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
//! `BUNITE_OPS_SEEDS=N` runs seeds `0..N` instead of [`CI_SEEDS`]; `BUNITE_OPS_SEED=S` runs
//! seed S alone (a failing case prints its seed).
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
use bunite_rpc::ConnectionBuilder;
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
    let l = WsListener::bind_with("127.0.0.1:0", ws::DEFAULT_PATH, config())
        .await
        .unwrap();
    let url = format!("ws://{}/rpc", l.local_addr().unwrap());
    let connector = || WsConnector::new().connect_timeout(Duration::from_secs(600));
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
    Pair {
        a,
        b,
        label: "ws listener",
        send_limit: Some(SEND_LIMIT),
        listener: Some(Box::new(Second {
            tasks: vec![second, next],
        })),
    }
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
    Pair {
        a,
        b,
        label: "tcp listener",
        send_limit: Some(SEND_LIMIT),
        listener: Some(Box::new(Second { tasks: vec![next] })),
    }
}

/// The tasks of a second client of a listener and of its acceptance.
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
