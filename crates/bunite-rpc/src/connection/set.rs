//! [`ConnectionSet`]: a server's live connections, to drain or close together when it stops,
//! and [`ConnectionSet::serve_with_shutdown`], the accept loop and the graceful stop in one.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use super::{Connection, Shared};
use crate::hashing::{self, Map};

/// The live connections of a server (or any set of connections that stop together), so
/// that it can stop gracefully: [`drain`](Self::drain) every one, then wait until all have
/// [`closed`](Self::closed). A connection leaves the set when it closes; one added once the
/// set is draining or closing is drained or closed at once. Cheap to clone (clones share
/// the set).
///
/// By hand, as below, or in one call with
/// [`serve_with_shutdown`](Self::serve_with_shutdown) (accept loop, signal, drain, grace):
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
    /// Given back its room as connections leave ([`hashing::take`]): a flood of thousands
    /// of connections is not kept for the server's life.
    live: Map<u64, Connection>,
    /// Connections that left `live` as they shut down and may not have finished yet: they
    /// still give their peers the [`CLOSE_GRACE`](super::CLOSE_GRACE) to take their last
    /// frames, and their tasks may still run, so [`closed`](ConnectionSet::closed) waits
    /// for them too. Held weakly: a connection whose driver and tasks have ended, and whose
    /// handles are all dropped, is freed at once; finished ones are let go as others shut
    /// down or join.
    closing: Vec<Weak<Shared>>,
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

impl Members {
    /// Lets go of the closing connections that have finished (and of `also`, which the
    /// caller saw finish), and of the room a burst of them took.
    fn forget_finished(&mut self, also: Option<u64>) {
        self.closing.retain(|c| {
            c.upgrade()
                .is_some_and(|s| !s.is_done() && Some(s.id) != also)
        });
        if self.closing.capacity() > 2 * self.closing.len() + 8 {
            self.closing.shrink_to_fit();
        }
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
            members.forget_finished(None);
            members.live.insert(conn.shared.id, conn.clone());
            members.stopping
        };
        // Outside the lock: a connection already closed runs this at once.
        let set = Arc::downgrade(&self.inner);
        let id = conn.shared.id;
        conn.on_close(move || {
            if let Some(set) = set.upgrade() {
                let mut members = set.lock().unwrap_or_else(PoisonError::into_inner);
                members.forget_finished(None);
                if let Some(conn) = hashing::take(&mut members.live, &id) {
                    members.closing.push(Arc::downgrade(&conn.shared));
                }
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
    /// those added meanwhile included, and those that shut down before but are still
    /// delivering their last frames (within [`CLOSE_GRACE`](super::CLOSE_GRACE)) or
    /// waiting for their tasks.
    ///
    /// Cancel-safe: it only waits.
    pub async fn closed(&self) {
        loop {
            let next = {
                let members = self.lock();
                let live = members.live.values().next().cloned();
                let closing = || members.closing.iter().find_map(Weak::upgrade);
                live.or_else(|| closing().map(|shared| Connection { shared }))
            };
            let Some(conn) = next else {
                return;
            };
            conn.closed().await;
            // Its close handler moved it to `closing` already, unless it runs later.
            let mut members = self.lock();
            hashing::take(&mut members.live, &conn.shared.id);
            members.forget_finished(Some(conn.shared.id));
        }
    }

    /// Serves until `signal` completes, then stops gracefully, as axum's
    /// `with_graceful_shutdown` and tonic's `serve_with_shutdown` do:
    ///
    /// 1. `accepting`, the loop that accepts connections and [`insert`](Self::insert)s
    ///    them into this set, is dropped with the listener it owns: nothing more is
    ///    accepted and the listening socket closes (pass the loop itself, not the handle
    ///    of a task running it, which dropping would not stop);
    /// 2. every connection [`drain`](Self::drain)s: the calls and bootstraps its peer
    ///    starts from now on are answered `unavailable` (reason `peer_closing`) and never
    ///    run, while the handlers and server streams already running go on and answer;
    /// 3. each connection closes once nothing is in progress, with a goaway `peer_closing`
    ///    (PROTOCOL §11, a local close), after which its peer fails new calls locally
    ///    (`unavailable`, "connection closed"); when `grace` has passed, the connections
    ///    still open are closed the same way, cancelling what still runs;
    /// 4. it returns once every connection has closed and the tasks each started have
    ///    ended, with how many connections were open when the stop began: at most
    ///    [`CLOSE_GRACE`](super::CLOSE_GRACE) after `grace`, the time a connection closed
    ///    then has to deliver its goaway to a peer that reads nothing.
    ///
    /// If `accepting` ends first (its listener failed), the stop begins then. The goaway
    /// comes last, not first: a peer shuts down as it receives one, failing its pending
    /// calls, so a goaway sent first would throw away the answers a graceful stop waits for.
    ///
    /// Dropped before `signal` completes, it drops `accepting` (and its listener) and stops
    /// nothing. Dropped once the stop began, the connections drain on and close when
    /// `grace` runs out by their own timers, as they would with the future; only the wait
    /// is given up.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use bunite_rpc::dynamic::DynCap;
    /// use bunite_rpc::transport::byte_stream::{self, TcpMessageListener};
    /// use bunite_rpc::transport::ListenerConfig;
    /// use bunite_rpc::{CapDef, Code, Connection, ConnectionSet, MethodDef, Value};
    /// use tokio::sync::Notify;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let def = CapDef::builder("demo.Jobs").method(MethodDef::call("run")).build();
    /// let started = Arc::new(Notify::new());
    /// let imp = DynCap::new()
    ///     .call("run", {
    ///         let started = started.clone();
    ///         move |_, _| {
    ///             started.notify_one();
    ///             async move {
    ///                 tokio::time::sleep(Duration::from_millis(200)).await;
    ///                 Ok(Value::from("done"))
    ///             }
    ///         }
    ///     })
    ///     .build();
    /// let listener = TcpMessageListener::bind("127.0.0.1:0", ListenerConfig::default()).await?;
    /// let addr = listener.local_addr()?;
    /// let connections = ConnectionSet::new();
    /// let accepting = {
    ///     let (connections, def, imp) = (connections.clone(), def.clone(), imp.clone());
    ///     async move {
    ///         while let Ok((transport, _peer)) = listener.accept().await {
    ///             let conn = Connection::builder()
    ///                 .serve(def.clone(), imp.clone())
    ///                 .connect(transport);
    ///             connections.insert(&conn);
    ///         }
    ///     }
    /// };
    /// // In a real server: `async { let _ = tokio::signal::ctrl_c().await; }`.
    /// let (stop, signal) = tokio::sync::oneshot::channel::<()>();
    /// let server = tokio::spawn(async move {
    ///     let signal = async { let _ = signal.await; };
    ///     connections.serve_with_shutdown(accepting, signal, Duration::from_secs(10)).await
    /// });
    ///
    /// let client = Connection::new(byte_stream::tcp_connect(addr).await?);
    /// let jobs = client.bootstrap(&def).await?;
    /// let running = tokio::spawn({
    ///     let jobs = jobs.clone();
    ///     async move { jobs.call_value("run", Value::Undefined).await }
    /// });
    /// started.notified().await;
    /// stop.send(()).ok();
    /// // The job already running finishes and answers; then the server's connection
    /// // closes with a goaway, and the stop is over.
    /// assert_eq!(running.await??, Value::from("done"));
    /// assert_eq!(server.await?, 1);
    /// client.closed().await;
    /// // Calls on the closed connection fail locally.
    /// let after = jobs.call_value("run", Value::Undefined).await.unwrap_err();
    /// assert_eq!(after.code(), Code::Unavailable);
    /// assert!(byte_stream::tcp_connect(addr).await.is_err(), "no longer accepting");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn serve_with_shutdown<A, S>(&self, accepting: A, signal: S, grace: Duration) -> usize
    where
        A: Future<Output = ()>,
        S: Future<Output = ()>,
    {
        // Both futures are dropped as the first completes: `accepting` with its listener.
        tokio::select! {
            () = accepting => {}
            () = signal => {}
        }
        let open = self.len();
        self.drain(grace);
        if tokio::time::timeout(grace, self.closed()).await.is_err() {
            // The drain's own timer closes them at `grace` too; this makes sure of it.
            self.close();
            self.closed().await;
        }
        open
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::memory;

    /// A flood of connections that then close leaves the set as small as it was: the room
    /// of a thousand entries is given back as they leave, not kept for the server's life
    /// (a `std` map kept room for 2,048).
    #[tokio::test]
    async fn a_flood_of_connections_gives_its_room_back_as_they_close() {
        let set = ConnectionSet::new();
        let mut ends = Vec::new();
        for _ in 0..1_000 {
            let (a, b) = memory::pair();
            let ours = Connection::new(a);
            set.insert(&ours);
            ends.push((ours, Connection::new(b)));
        }
        assert_eq!(set.len(), 1_000);
        assert!(hashing::room(&set.lock().live) >= 1_000);
        for (ours, theirs) in &ends {
            ours.close();
            theirs.close();
        }
        set.closed().await;
        for (_, theirs) in &ends {
            theirs.closed().await;
        }
        assert!(set.is_empty());
        let room = hashing::room(&set.lock().live);
        assert!(room <= 2 * hashing::KEPT_ROOM, "room for {room} kept");
    }
}
