//! Run with: `cargo run -p bunite-rpc --example graceful_stop`
//!
//! Stopping a server gracefully with `ConnectionSet::serve_with_shutdown`: when its signal
//! completes (in a real server, Ctrl-C or SIGTERM), it stops accepting connections and
//! drains the ones it holds. A call already running finishes and its caller gets the
//! answer; a call started after the drain began is refused `unavailable` (reason
//! `peer_closing`) without running, so its caller may retry elsewhere; then every
//! connection closes with a goaway, and the server returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::transport::ws::{self, WsListener};
use bunite_rpc::{cap, Code, Connection, ConnectionSet, Status};

/// A job that takes a while.
#[cap(name = "demo.Jobs", version = "1")]
pub trait Jobs {
    /// Runs for `ms` milliseconds, then says so.
    async fn run(&self, ms: u64) -> Result<String, Status>;
}

/// Counts the jobs it started.
struct Worker(Arc<AtomicUsize>);

impl Jobs for Worker {
    async fn run(&self, ms: u64) -> Result<String, Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(format!("ran for {ms} ms"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server keeps every connection it accepts in a set, and serves until its signal.
    let listener = WsListener::bind("127.0.0.1:0", "/rpc").await?;
    let url = format!("ws://{}/rpc", listener.local_addr()?);
    let connections = ConnectionSet::new();
    let started = Arc::new(AtomicUsize::new(0));
    let accepting = {
        let connections = connections.clone();
        let started = started.clone();
        async move {
            while let Ok(accepted) = listener.accept().await {
                let conn = Connection::builder()
                    .serve_cap::<JobsCap>(Worker(started.clone()))
                    .connect(accepted.transport);
                connections.insert(&conn);
            }
        }
    };
    // In a real server the signal is `tokio::signal::ctrl_c()` (and SIGTERM on Unix).
    let (stop, signal) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let connections = connections.clone();
        async move {
            let signal = async {
                let _ = signal.await;
            };
            connections
                .serve_with_shutdown(accepting, signal, Duration::from_secs(10))
                .await
        }
    });

    // A client starts a long job; the server sees it start.
    let conn = Connection::new(ws::connect(url.as_str()).await?);
    let jobs: JobsClient = JobsCap::bootstrap(&conn).await?;
    let long = tokio::spawn({
        let jobs = jobs.clone();
        async move { jobs.run(300).await }
    });
    while started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The server is asked to stop: no new connections, and every connection drains. A job
    // started once the stop has reached the connection is refused, and never runs (one
    // started in the instant before runs, as any call made before a stop does).
    stop.send(()).ok();
    let refused = loop {
        match jobs.run(1).await {
            Err(refused) => break refused,
            Ok(_) => tokio::task::yield_now().await,
        }
    };
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(refused.status().reason(), Some("peer_closing"));
    println!("new call   -> {} ({})", refused.code(), refused.message());

    // The long job finishes, with its answer; then the connection closes and the server
    // returns how many connections it drained.
    let answer = long.await??;
    println!("long call  -> {answer}");
    let drained = server.await?;
    conn.closed().await;
    assert_eq!(drained, 1);
    assert!(connections.is_empty());
    assert!(
        ws::connect(url.as_str()).await.is_err(),
        "no longer accepting"
    );
    println!("stopped    -> {drained} connection drained, every connection closed");
    Ok(())
}
