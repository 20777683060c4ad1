//! A connection's life: observing its events, closing it, waiting for it to close, and its
//! live counts.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bunite_wire::Hello;
use tokio::sync::oneshot;

use super::{Command, Connection};
use crate::error::Disconnect;
use crate::events::Event;
use crate::stats::Stats;

/// Identifies an observer registered with [`Connection::subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

impl Connection {
    /// Registers an observer of this connection's events (PROTOCOL §15). A panicking
    /// observer is caught and never affects the connection. Events are only built while
    /// someone observes. The [`events`](crate::events) module has an example.
    ///
    /// The observer runs on the connection's task: it may call back into the connection
    /// (close it, subscribe, start a call on a task of its own) but should not block on
    /// it. Observers are dropped once the connection has closed and its last task ended
    /// (no event comes after), so one may hold a clone of its connection.
    ///
    /// An observer sees the events of everything that happens after `subscribe` returns:
    /// a call, stream or bootstrap started after it, by this end or by the peer, is
    /// reported to it.
    pub fn subscribe(&self, f: impl Fn(&Event) + Send + Sync + 'static) -> SubscriptionId {
        let shared = &self.shared;
        let id = shared.next_observer.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut o) = shared.observers.write() {
            o.push((id, Arc::new(f)));
            shared.observed.store(true, Ordering::Release);
        }
        // On a connection already done, no event will come and nothing else would drop it
        // (checked after the push: the last task may end in between, finding the lock
        // taken by us, and forgetting twice is harmless).
        if shared.is_done() {
            shared.forget_observers();
        }
        SubscriptionId(id)
    }

    /// Removes an observer (dropped outside the lock, as a closure's drop may do anything).
    ///
    /// On a runtime of several workers, an event the connection's task is reporting as
    /// this runs may still reach the observer after `unsubscribe` returns (the task calls
    /// the observers it found when the event came); none that happens later does.
    pub fn unsubscribe(&self, id: SubscriptionId) {
        let shared = &self.shared;
        let removed = match shared.observers.write() {
            Ok(mut o) => {
                let gone = o
                    .iter()
                    .position(|(i, _)| *i == id.0)
                    .map(|at| o.remove(at));
                shared.observed.store(!o.is_empty(), Ordering::Release);
                gone
            }
            Err(_) => return,
        };
        drop(removed);
        if shared.is_done() {
            shared.forget_observers(); // It may have found the lock taken by us.
        }
    }

    /// Runs `f` once when the connection closes (at once if it already has).
    pub fn on_close(&self, f: impl FnOnce() + Send + 'static) {
        let f: super::CloseHandler = Box::new(f);
        if self.shared.is_closed() {
            return f();
        }
        // If the driver is gone the command comes back unsent: run it now.
        if let Err(mpsc_error) = self.shared.commands.send(Command::OnClose(f)) {
            if let Command::OnClose(f) = mpsc_error.0 {
                f();
            }
        }
    }

    /// Closes the connection: sends goaway, fails pending calls with `unavailable`, cancels
    /// handlers, runs disposals and close handlers, closes the transport.
    pub fn close(&self) {
        self.shared.send(Command::Close);
    }

    /// Closes the connection gracefully: the work in progress may finish first, for up to
    /// `grace`.
    ///
    /// From now on, calls and bootstraps the peer starts are answered `unavailable` with
    /// reason `peer_closing` and never run, so a client can retry them elsewhere (an
    /// observer added with [`subscribe`](Self::subscribe) sees each as a
    /// [`CallEvent`](crate::events::CallEvent) ending `unavailable`); calls
    /// the peer makes on behalf of a call or stream of ours still in progress (a callback,
    /// its `meta.parentCallId` naming ours) are still served. What is already in progress
    /// either way goes on: the handlers and server streams running, the bootstraps
    /// waiting for the policy, and the calls, streams and bootstraps made here (including
    /// ones made while draining, which are not refused). Once none is left, or when
    /// `grace` runs out, the connection closes as [`close`](Self::close) does, cancelling
    /// what still runs. Returns at once; await [`closed`](Self::closed) to know when it
    /// is done. Draining again never extends the grace; [`close`](Self::close) ends it
    /// at once.
    ///
    /// A server that stops stops accepting connections, then drains every connection it
    /// holds: a [`ConnectionSet`](super::ConnectionSet) keeps them, drains them together
    /// and waits until all have closed.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use bunite_rpc::transport::memory;
    /// # use bunite_rpc::Connection;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let (a, b) = memory::pair();
    /// # let (conn, _peer) = (Connection::new(a), Connection::new(b));
    /// conn.drain(Duration::from_secs(10));
    /// conn.closed().await; // nothing ran: closed at once
    /// # }
    /// ```
    pub fn drain(&self, grace: std::time::Duration) {
        self.shared.send(Command::Drain(grace));
    }

    /// Whether the connection has shut down.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// How the connection shut down, once it has: the cause the calls pending then were
    /// given ([`Error::Disconnected`](crate::Error::Disconnected)). A call made after it
    /// fails locally ([`LocalError::Closed`](crate::LocalError::Closed), "connection
    /// closed") without it; this tells why, e.g. when the connection ended before the
    /// first call was made (a server that closed at once).
    pub fn closed_by(&self) -> Option<Disconnect> {
        self.shared.closed_by()
    }

    /// Waits until the connection has shut down, its last frames (such as a goaway) were
    /// delivered and the transport closed (a socket after reading what the peer still sent,
    /// so that closing it resets nothing: see
    /// [`MessageSource::poll_linger`](crate::transport::MessageSource::poll_linger); or
    /// [`CLOSE_GRACE`](super::CLOSE_GRACE) passed on a transport that does not drain), and
    /// every task it started has ended (handlers, policy checks, disposals). A connection whose runtime shut down while it was open
    /// counts as shut down, without its last frames: its calls and streams fail `closed`.
    ///
    /// Cancel-safe: it only waits.
    pub async fn closed(&self) {
        self.shared.finished.cancelled().await;
        loop {
            let idle = self.shared.tasks_idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.shared.live_tasks() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Live counts as of the driver's last pass: cap-table entries, pending calls, active
    /// handlers and streams, unsent bytes, tasks (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        let mut stats = self.shared.stats.lock().map(|s| *s).unwrap_or_default();
        stats.tasks = self.shared.live_tasks();
        stats
    }

    /// Exact live counts, asked of the driver (the last published ones once it is gone).
    ///
    /// Cancel-safe: dropped while it waits, the driver's answer finds nobody and is dropped.
    pub async fn current_stats(&self) -> Stats {
        let (reply, rx) = oneshot::channel();
        if self.shared.send(Command::Stats(reply)) {
            if let Ok(mut stats) = rx.await {
                stats.tasks = self.shared.live_tasks();
                return stats;
            }
        }
        self.stats()
    }

    /// The peer's hello, once received.
    pub fn peer_hello(&self) -> Option<Hello> {
        self.shared.peer_hello.lock().ok()?.clone()
    }
}
