//! Run with: `cargo run -p bunite-rpc --example graceful_stop`
//!
//! Stopping a server gracefully: it stops accepting connections and drains the ones it
//! holds (`ConnectionSet::drain`). A call already running finishes and its caller gets the
//! answer; a call started after the drain began is refused `unavailable` (reason
//! `peer_closing`) without running, so its caller may retry elsewhere; then every
//! connection closes.

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
    // The server keeps every connection it accepts in a set.
    let listener = WsListener::bind("127.0.0.1:0", "/rpc").await?;
    let url = format!("ws://{}/rpc", listener.local_addr()?);
    let connections = ConnectionSet::new();
    let started = Arc::new(AtomicUsize::new(0));
    let accepting = tokio::spawn({
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

    // The server is asked to stop: no new connections, and every connection drains.
    accepting.abort();
    connections.drain(Duration::from_secs(10));

    // A job started now is refused, and never runs.
    let refused = jobs.run(1).await.expect_err("refused while draining");
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(refused.status().reason(), Some("peer_closing"));
    assert_eq!(started.load(Ordering::SeqCst), 1);
    println!("new call   -> {} ({})", refused.code(), refused.message());

    // The long job finishes, with its answer, and then the connection closes.
    let answer = long.await??;
    println!("long call  -> {answer}");
    connections.closed().await;
    conn.closed().await;
    assert!(connections.is_empty());
    println!("stopped    -> every connection closed");
    Ok(())
}
