//! [`ConnectionSet`]: a server's live connections, to drain or close together when it stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::Connection;

/// The live connections of a server (or any set of connections that stop together), so
/// that it can stop gracefully: [`drain`](Self::drain) every one, then wait until all have
/// [`closed`](Self::closed). A connection leaves the set when it closes; one added once the
/// set is draining or closing is drained or closed at once. Cheap to clone (clones share
/// the set).
///
/// ```
/// # use std::time::Duration;
/// use bunite_rpc::transport::ws::WsListener;
/// use bunite_rpc::{Connection, ConnectionSet};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = WsListener::bind("127.0.0.1:0", "/rpc").await?;
/// let connections = ConnectionSet::new();
/// let accepting = tokio::spawn({
///     let connections = connections.clone();
///     async move {
///         while let Ok(accepted) = listener.accept().await {
///             connections.insert(&Connection::new(accepted.transport));
///         }
///     }
/// });
/// // … until the server is asked to stop (say, `tokio::signal::ctrl_c().await`):
/// accepting.abort(); // no new connections
/// connections.drain(Duration::from_secs(10)); // the calls running may finish
/// connections.closed().await;
/// assert!(connections.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct ConnectionSet {
    inner: Arc<Mutex<Members>>,
}

#[derive(Default)]
struct Members {
    live: HashMap<u64, Connection>,
    /// What a connection added from now on gets at once.
    stopping: Option<Stop>,
}

#[derive(Clone, Copy)]
enum Stop {
    Drain(Duration),
    Close,
}

impl std::fmt::Debug for ConnectionSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSet")
            .field("len", &self.len())
            .finish()
    }
}

impl ConnectionSet {
    /// An empty set.
    pub fn new() -> ConnectionSet {
        ConnectionSet::default()
    }

    /// Adds a connection until it closes. If the set is draining or closing, the
    /// connection is drained or closed at once; [`closed`](Self::closed) waits for it
    /// too.
    pub fn insert(&self, conn: &Connection) {
        let stop = {
            let mut members = self.lock();
            members.live.insert(conn.shared.id, conn.clone());
            members.stopping
        };
        // Outside the lock: a connection already closed runs this at once.
        let set = Arc::downgrade(&self.inner);
        let id = conn.shared.id;
        conn.on_close(move || {
            if let Some(set) = set.upgrade() {
                let mut members = set.lock().unwrap_or_else(PoisonError::into_inner);
                members.live.remove(&id);
            }
        });
        match stop {
            Some(Stop::Drain(grace)) => conn.drain(grace),
            Some(Stop::Close) => conn.close(),
            None => {}
        }
    }

    /// How many connections of the set have not closed yet.
    pub fn len(&self) -> usize {
        self.lock().live.len()
    }

    /// Whether every connection of the set has closed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drains every connection ([`Connection::drain`]: new calls refused, the running
    /// ones finished, for up to `grace`), and the ones added from now on. Returns at once;
    /// await [`closed`](Self::closed) to know when all have closed. Draining again never
    /// extends a grace.
    pub fn drain(&self, grace: Duration) {
        for conn in self.stop(Stop::Drain(grace)) {
            conn.drain(grace);
        }
    }

    /// Closes every connection ([`Connection::close`]), and the ones added from now on.
    /// Returns at once; await [`closed`](Self::closed) to know when all have closed.
    pub fn close(&self) {
        for conn in self.stop(Stop::Close) {
            conn.close();
        }
    }

    /// Waits until every connection of the set has closed ([`Connection::closed`]),
    /// those added meanwhile included.
    pub async fn closed(&self) {
        loop {
            let next = self.lock().live.values().next().cloned();
            let Some(conn) = next else {
                return;
            };
            conn.closed().await;
            // Its close handler took it out already, unless it runs later than `closed`.
            self.lock().live.remove(&conn.shared.id);
        }
    }

    /// Marks the set stopping (a close overrides a drain); the connections to stop now.
    fn stop(&self, stop: Stop) -> Vec<Connection> {
        let mut members = self.lock();
        members.stopping = match (members.stopping, stop) {
            (Some(Stop::Close), _) => Some(Stop::Close),
            (Some(Stop::Drain(a)), Stop::Drain(b)) => Some(Stop::Drain(a.min(b))),
            (_, stop) => Some(stop),
        };
        members.live.values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Members> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
