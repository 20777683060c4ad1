//! The public operations of a [`Connection`]: serving, bootstrapping, observing, closing.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bunite_wire::{CapId, Hello, Record, Value};
use futures::future::join_all;

use super::{peer_ready, Connection, Shared};
use crate::client::{Client, ClientRef};
use crate::events::Event;
use crate::handler::CapImpl;
use crate::schema::CapDef;
use crate::session::registry::IfExists;
use crate::session::Stats;
use crate::status::Status;

/// Owns served names: [`unserve`](ServeHandle::unserve) or dropping it unserves them.
#[must_use = "dropping a ServeHandle unserves its caps; call .detach() to serve for the connection's lifetime"]
#[derive(Debug)]
pub struct ServeHandle {
    names: Vec<String>,
    shared: Weak<Shared>,
}

impl ServeHandle {
    /// The names this handle owns (empty when `IfExists::Skip` skipped them).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Unserves the names now.
    pub fn unserve(mut self) {
        self.release();
    }

    /// Keeps the names served for the connection's lifetime.
    pub fn detach(mut self) {
        self.names.clear();
    }

    fn release(&mut self) {
        let names = std::mem::take(&mut self.names);
        if names.is_empty() {
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.with(|s| s.unserve(&names));
        }
    }
}

impl Drop for ServeHandle {
    fn drop(&mut self) {
        self.release();
    }
}

/// Identifies an observer registered with [`Connection::subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(u64);

impl Connection {
    /// Serves `imp` under `def.name()`; fails if the name is taken or reserved.
    pub fn serve(&self, def: Arc<CapDef>, imp: Arc<dyn CapImpl>) -> Result<ServeHandle, Status> {
        self.serve_with(def, imp, IfExists::Throw)
    }

    /// Serves with an explicit collision rule (PROTOCOL §8).
    pub fn serve_with(
        &self,
        def: Arc<CapDef>,
        imp: Arc<dyn CapImpl>,
        if_exists: IfExists,
    ) -> Result<ServeHandle, Status> {
        self.serve_all(vec![(def, imp)], if_exists)
    }

    /// Serves several caps atomically: every check passes before anything is registered.
    pub fn serve_all(
        &self,
        caps: Vec<(Arc<CapDef>, Arc<dyn CapImpl>)>,
        if_exists: IfExists,
    ) -> Result<ServeHandle, Status> {
        let names = self.shared.with(|s| s.serve(caps, if_exists))?;
        Ok(ServeHandle {
            names,
            shared: Arc::downgrade(&self.shared),
        })
    }

    /// Unserves a name: disposes and revokes its live instance. A name not served is a
    /// silent no-op.
    pub fn unserve(&self, name: &str) {
        self.shared.with(|s| s.unserve(&[name.to_owned()]));
    }

    /// Switches a served name to a new implementation (same version), live instances
    /// included, without revoking them.
    pub fn replace(&self, def: Arc<CapDef>, imp: Arc<dyn CapImpl>) -> Result<(), Status> {
        self.shared.with(|s| s.replace(def, imp))
    }

    /// Bootstraps the peer's cap named `def.name()` (sending `def.version()` if any).
    /// Waits for the peer's hello first.
    pub async fn bootstrap(&self, def: &Arc<CapDef>) -> Result<Client, Status> {
        let id = self.bootstrap_id(def.name(), def.version()).await?;
        Ok(Client::new(
            ClientRef::owned(Arc::clone(&self.shared), id),
            Some(Arc::clone(def)),
        ))
    }

    /// Bootstraps by name and optional version, without a definition.
    pub async fn bootstrap_name(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Client, Status> {
        let id = self.bootstrap_id(name, version).await?;
        Ok(Client::new(
            ClientRef::owned(Arc::clone(&self.shared), id),
            None,
        ))
    }

    /// Bootstraps several caps concurrently; if any fails, releases the ones that succeeded
    /// and fails with the first failure in the given order (PROTOCOL §8).
    pub async fn bootstrap_all(&self, defs: &[Arc<CapDef>]) -> Result<Vec<Client>, Status> {
        let results = join_all(defs.iter().map(|d| self.bootstrap(d))).await;
        // Dropping the successful clients releases them.
        results.into_iter().collect()
    }

    async fn bootstrap_id(&self, name: &str, version: Option<&str>) -> Result<CapId, Status> {
        peer_ready(&self.shared).await?;
        let mut args = Record::new().with("name", name);
        if let Some(v) = version {
            args.insert("version", v);
        }
        let value = crate::client::call_raw(
            &self.shared,
            CapId::BOOTSTRAP,
            "bootstrap",
            Value::Record(args),
            Default::default(),
            true,
        )
        .await?;
        match value {
            Value::CapRef(id) => Ok(id),
            _ => Err(Status::invalid_argument(
                "bootstrap did not return a CapRef",
            )),
        }
    }

    /// The client of the peer's runtime (cap-id 1). Never released.
    pub fn runtime(&self) -> Client {
        Client::new(
            ClientRef::borrowed(Arc::clone(&self.shared), CapId::RUNTIME),
            None,
        )
    }

    /// A client for an arbitrary cap-id of the peer that owns no reference: dropping it
    /// sends nothing. For tools and tests that address caps by id; ordinary code gets its
    /// clients from [`bootstrap`](Connection::bootstrap) and cap-returning methods.
    pub fn client_for(&self, id: CapId) -> Client {
        Client::new(ClientRef::borrowed(Arc::clone(&self.shared), id), None)
    }

    /// Registers an observer of this connection's events (PROTOCOL §15). A panicking
    /// observer is caught and never affects the connection.
    pub fn subscribe(&self, f: impl Fn(&Event) + Send + Sync + 'static) -> SubscriptionId {
        let id = self.shared.next_observer.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut o) = self.shared.observers.write() {
            o.push((id, Arc::new(f)));
        }
        SubscriptionId(id)
    }

    /// Removes an observer.
    pub fn unsubscribe(&self, id: SubscriptionId) {
        if let Ok(mut o) = self.shared.observers.write() {
            o.retain(|(i, _)| *i != id.0);
        }
    }

    /// Runs `f` once when the connection closes (at once if it already has).
    pub fn on_close(&self, f: impl FnOnce() + Send + 'static) {
        let mut handlers = self
            .shared
            .close_handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match handlers.as_mut() {
            Some(list) => list.push(Box::new(f)),
            None => {
                drop(handlers);
                f();
            }
        }
    }

    /// Closes the connection: sends goaway, fails pending calls with `unavailable`, cancels
    /// handlers, runs disposals and close handlers, closes the transport.
    pub fn close(&self) {
        self.shared.with(|s| s.close("peer_closing"));
    }

    /// Whether the connection has shut down.
    pub fn is_closed(&self) -> bool {
        self.shared.stop.is_cancelled()
    }

    /// Waits until the connection has shut down and its last frames (such as a goaway) were
    /// delivered and the transport closed (or [`CLOSE_GRACE`](super::CLOSE_GRACE) passed on
    /// a transport that does not drain).
    pub async fn closed(&self) {
        self.shared.stop.cancelled().await;
        self.shared.finished.cancelled().await;
    }

    /// Live counts: cap-table entries, pending calls, active handlers and streams.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats()
    }

    /// The peer's hello, once received.
    pub fn peer_hello(&self) -> Option<Hello> {
        self.shared.lock().peer_hello().cloned()
    }
}
