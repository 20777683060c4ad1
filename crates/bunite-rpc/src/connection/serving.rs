//! Serving on a connection: [`Connection::serve`] and friends, and the [`ServeHandle`] that
//! owns what it served.

use std::sync::{Arc, Weak};

use tokio::sync::oneshot;

use super::{Command, Connection, Shared};
use crate::handler::CapImpl;
use crate::schema::{CapDef, IfExists};
use crate::status::Status;

/// Owns served names: [`unserve`](ServeHandle::unserve) or dropping it unserves them.
#[must_use = "dropping a ServeHandle unserves its caps; call .detach() to serve for the connection's lifetime"]
#[derive(Debug)]
pub struct ServeHandle {
    names: Vec<String>,
    shared: Weak<Shared>,
}

impl ServeHandle {
    /// The handle of `names`, just served on the connection of `shared`.
    pub(super) fn new(names: Vec<String>, shared: &Arc<Shared>) -> Self {
        ServeHandle {
            names,
            shared: Arc::downgrade(shared),
        }
    }

    /// The names this handle owns (empty when `IfExists::Skip` skipped them).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Unserves the names now; completes once they are unserved (and their live instances
    /// revoked).
    ///
    /// Dropped at any point, the names are unserved all the same (by the handle's drop
    /// before the first poll, by the command queued at it after); only the wait is given up.
    pub async fn unserve(mut self) {
        let names = std::mem::take(&mut self.names);
        if let Some(shared) = self.shared.upgrade() {
            unserve(&shared, names).await;
        }
    }

    /// Keeps the names served for the connection's lifetime.
    pub fn detach(mut self) {
        self.names.clear();
    }
}

impl Drop for ServeHandle {
    /// Unserves the names: a command to the connection, never a wait.
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        if names.is_empty() {
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.send(Command::Unserve {
                names: names.into_boxed_slice(),
                done: None,
            });
        }
    }
}

async fn unserve(shared: &Shared, names: Vec<String>) {
    if names.is_empty() {
        return;
    }
    let (done, rx) = oneshot::channel();
    if shared.send(Command::Unserve {
        names: names.into_boxed_slice(),
        done: Some(done),
    }) {
        let _ = rx.await;
    }
}

impl Connection {
    /// Serves `imp` under `def.name()`; fails if the name is taken or reserved.
    pub async fn serve(
        &self,
        def: Arc<CapDef>,
        imp: Arc<dyn CapImpl>,
    ) -> Result<ServeHandle, Status> {
        self.serve_with(def, imp, IfExists::Throw).await
    }

    /// Serves with an explicit collision rule (PROTOCOL §8).
    pub async fn serve_with(
        &self,
        def: Arc<CapDef>,
        imp: Arc<dyn CapImpl>,
        if_exists: IfExists,
    ) -> Result<ServeHandle, Status> {
        self.serve_all(vec![(def, imp)], if_exists).await
    }

    /// Serves several caps atomically: every check passes before anything is registered.
    ///
    /// Cancel-safe, as [`serve`](Self::serve) and [`serve_with`](Self::serve_with) are: a
    /// future dropped before it returns its handle leaves nothing served (what the
    /// connection had served for it meanwhile is unserved, as the handle's drop would).
    pub async fn serve_all(
        &self,
        caps: Vec<(Arc<CapDef>, Arc<dyn CapImpl>)>,
        if_exists: IfExists,
    ) -> Result<ServeHandle, Status> {
        let (reply, rx) = oneshot::channel();
        let command = Command::Serve {
            caps: Box::new((caps, if_exists)),
            reply,
        };
        self.request(command, rx).await?
    }

    /// Unserves a name: disposes and revokes its live instance. A name not served is a
    /// silent no-op.
    ///
    /// Dropped before its first poll, it does nothing; dropped after, the unserve was queued
    /// and still happens: only the wait for it is given up.
    pub async fn unserve(&self, name: &str) {
        unserve(&self.shared, vec![name.to_owned()]).await;
    }

    /// Switches a served name to a new implementation (same version), live instances
    /// included, without revoking them.
    ///
    /// Dropped before its first poll, it does nothing; dropped after, the replace was
    /// queued and still applies if its checks pass: only its answer is given up.
    pub async fn replace(&self, def: Arc<CapDef>, imp: Arc<dyn CapImpl>) -> Result<(), Status> {
        let (reply, rx) = oneshot::channel();
        let cap = Box::new((def, imp));
        self.request(Command::Replace { cap, reply }, rx).await?
    }

    /// Sends a request to the driver and waits for its answer; `unavailable` once the
    /// connection is closed.
    async fn request<T>(&self, command: Command, rx: oneshot::Receiver<T>) -> Result<T, Status> {
        if self.shared.is_closed() || !self.shared.send(command) {
            return Err(Status::connection_closed());
        }
        rx.await.map_err(|_| Status::connection_closed())
    }
}
