//! `interop-server --stats`: the server's live counts on request, for the chaos harness
//! (`benches/chaos.rs`), which runs the server as a child process so that its memory is the
//! server's alone, and after each scenario asks whether anything was left behind.
//!
//! Each line read on stdin is answered with one line on stdout:
//!
//! ```text
//! stats connections=N tasks=N handlers=N streams=N unsent=N runtime_tasks=N
//! ```
//!
//! `connections` counts the connections not yet finished (still open, or closed with a task
//! still running); `tasks`, `handlers`, `streams` and `unsent` sum their [`Stats`] (`tasks`,
//! `active_calls`, `server_streams`, `unsent_bytes`); `runtime_tasks` is every task alive in the server's
//! runtime (listeners, handshakes, lingering closes included).

use std::sync::{Arc, Mutex};

use bunite_rpc::{Connection, Stats};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The connections a server made, until each has finished.
#[derive(Debug, Default)]
pub struct Registry {
    conns: Mutex<Vec<Connection>>,
}

/// The sums over a [`Registry`]'s unfinished connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connections not yet finished.
    pub connections: usize,
    /// Their tasks (drivers, handlers on their own tasks, policy checks, disposals).
    pub tasks: usize,
    /// Handlers running.
    pub handlers: usize,
    /// Streams served.
    pub streams: usize,
    /// Bytes encoded and not yet handed to the transport.
    pub unsent: usize,
}

fn finished(c: &Connection) -> bool {
    c.is_closed() && c.stats().tasks == 0
}

impl Registry {
    /// Remembers `conn` until it has finished. Finished connections are let go here too,
    /// whenever the list has doubled, so a server that is never asked stays bounded.
    pub fn add(&self, conn: Connection) {
        let Ok(mut conns) = self.conns.lock() else {
            return;
        };
        if conns.len() >= 64 && conns.len() == conns.capacity() {
            conns.retain(|c| !finished(c));
        }
        conns.push(conn);
    }

    /// Lets finished connections go and sums the others.
    pub fn counts(&self) -> Counts {
        let Ok(mut conns) = self.conns.lock() else {
            return Counts::default();
        };
        conns.retain(|c| !finished(c));
        conns.shrink_to(64);
        let mut counts = Counts {
            connections: conns.len(),
            ..Counts::default()
        };
        for c in conns.iter() {
            let Stats {
                tasks,
                active_calls,
                server_streams,
                unsent_bytes,
                ..
            } = c.stats();
            counts.unsent += unsent_bytes;
            counts.tasks += tasks;
            counts.handlers += active_calls;
            counts.streams += server_streams;
        }
        counts
    }
}

/// Answers each line of stdin with a `stats …` line, until stdin closes.
pub async fn answer_stdin(registry: Arc<Registry>) {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Ok(Some(_)) = lines.next_line().await {
        let c = registry.counts();
        let runtime = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        let line = format!(
            "stats connections={} tasks={} handlers={} streams={} unsent={} runtime_tasks={runtime}{}\n",
            c.connections,
            c.tasks,
            c.handlers,
            c.streams,
            c.unsent,
            heap()
        );
        if out.write_all(line.as_bytes()).await.is_err() || out.flush().await.is_err() {
            return;
        }
    }
}

/// The allocator's figures, when the binary keeps them (feature `jemalloc-stats`): bytes
/// allocated and live, in active pages, resident (dirty pages not yet purged included), and
/// the allocator's own metadata.
#[cfg(all(feature = "jemalloc-stats", not(target_env = "msvc")))]
fn heap() -> String {
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return String::new();
    }
    let read = |r: tikv_jemalloc_ctl::Result<usize>| r.unwrap_or(0);
    format!(
        " heap_allocated={} heap_active={} heap_resident={} heap_metadata={}",
        read(stats::allocated::read()),
        read(stats::active::read()),
        read(stats::resident::read()),
        read(stats::metadata::read()),
    )
}

#[cfg(not(all(feature = "jemalloc-stats", not(target_env = "msvc"))))]
fn heap() -> String {
    String::new()
}

#[cfg(test)]
mod tests {
    use bunite_rpc::transport::memory;

    use super::*;

    /// A registry holding an interop server's connection, the client's end, and the
    /// client's `interop.counter`.
    async fn counted() -> (Registry, Connection, Connection, bunite_rpc::Client) {
        let registry = Registry::default();
        let (a, b) = memory::pair();
        let server = crate::interop_server::builder(Default::default()).connect(a);
        let client = Connection::new(b);
        registry.add(server.clone());
        let counter = client
            .bootstrap_name("interop.counter", None)
            .await
            .unwrap();
        (registry, server, client, counter)
    }

    #[tokio::test]
    async fn a_connection_is_counted_until_it_has_finished() {
        let (registry, server, client, counter) = counted().await;
        let mut watch = counter.stream("watch", bunite_rpc::Value::Undefined);
        futures::StreamExt::next(&mut watch).await.unwrap().unwrap();
        let live = registry.counts();
        assert_eq!((live.connections, live.streams), (1, 1), "{live:?}");
        assert!(live.tasks >= 1, "{live:?}");
        drop(watch);
        drop(counter);
        client.close();
        client.closed().await;
        server.closed().await;
        assert_eq!(registry.counts(), Counts::default());
        assert!(registry.conns.lock().unwrap().is_empty());
        assert!(server.stats().is_idle(), "{:?}", server.stats());
        assert!(client.stats().is_idle(), "{:?}", client.stats());
    }
}
