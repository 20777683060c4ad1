//! The connection: cheap cloneable [`Connection`] handles over one shared session, and the
//! driver tasks that do all the I/O (a reader and a writer per connection).
//!
//! Every operation locks the session (never across an `.await`), lets it decide, then
//! applies the `Effects` outside the lock: wakes the writer, spawns handlers and policy
//! checks, notifies observers.
//!
//! The I/O is split over two tasks rather than one: a single task selecting over reads and
//! writes would stop reading whenever a write blocks on a slow peer, so the peer's results
//! and credit could not arrive while we wait for it to read. With a reader and a writer, the
//! reader pauses only by policy (the unsent-bytes backpressure in [`Limits`]); handlers and
//! streams run as their own tasks.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bunite_wire::{CallId, CapId, Hello, Value, PROTOCOL_VERSION};
use futures::FutureExt;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::context::CallContext;
use crate::events::{ErrorEvent, Event};
use crate::handler::CapImpl;
use crate::limits::Limits;
use crate::policy::{Attestation, Policy};
use crate::schema::CapDef;
use crate::session::{Action, Config, Effects, PeerState, Session};
use crate::status::{Code, Status};
use crate::transport::Transport;

mod api;
mod driver;

pub use api::{ServeHandle, SubscriptionId};
pub use driver::CLOSE_GRACE;
use driver::{invoke, read_loop, write_loop};

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

type Observer = Arc<dyn Fn(&Event) + Send + Sync>;
type CloseHandler = Box<dyn FnOnce() + Send>;

/// State shared by all handles and the driver tasks of one connection.
pub(crate) struct Shared {
    pub(crate) id: u64,
    session: Mutex<Session>,
    wake_writer: Notify,
    stop: CancellationToken,
    /// Fired when the writer has delivered its last frames and closed the transport.
    finished: CancellationToken,
    pub(crate) peer_state: watch::Receiver<PeerState>,
    observers: RwLock<Vec<(u64, Observer)>>,
    next_observer: AtomicU64,
    close_handlers: Mutex<Option<Vec<CloseHandler>>>,
    pub(crate) cfg: Arc<Config>,
}

/// A handle to one connection. Cheap to clone; `Send + Sync`.
///
/// Both peers are symmetric: each may serve caps and bootstrap the other's. The connection
/// runs until [`close`](Connection::close) is called, the peer sends goaway, or the
/// transport closes.
#[derive(Clone)]
pub struct Connection {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.shared.id)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Builds a [`Connection`] over a transport.
#[derive(Debug, Default)]
pub struct ConnectionBuilder {
    limits: Limits,
    attestation: Attestation,
    policy: Option<Policy>,
    peer_id: Option<String>,
    mode: Option<String>,
    origin: String,
    features: Vec<String>,
    runtime: Option<RuntimeImpl>,
    served: Served,
}

/// Caps to serve before the connection starts reading.
#[derive(Default)]
struct Served(Vec<(Arc<CapDef>, Arc<dyn CapImpl>)>);

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(d, _)| d.name()))
            .finish()
    }
}

struct RuntimeImpl(Arc<CapDef>, Arc<dyn CapImpl>);

impl std::fmt::Debug for RuntimeImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RuntimeImpl({:?})", self.0.name())
    }
}

impl ConnectionBuilder {
    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets the attestation the policy sees (default: untrusted).
    pub fn attestation(mut self, attestation: Attestation) -> Self {
        self.attestation = attestation;
        self
    }

    /// Sets the bootstrap policy (default: allow everything served).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Names the peer in call contexts (default `"peer"`).
    pub fn peer_id(mut self, id: impl Into<String>) -> Self {
        self.peer_id = Some(id.into());
        self
    }

    /// Our `hello.mode` (default `"native"`).
    pub fn mode(mut self, mode: impl Into<String>) -> Self {
        self.mode = Some(mode.into());
        self
    }

    /// Our `hello.origin` claim.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = origin.into();
        self
    }

    /// Our `hello.features`.
    pub fn features(mut self, features: Vec<String>) -> Self {
        self.features = features;
        self
    }

    /// Installs a runtime implementation at cap-id 1 (PROTOCOL §14).
    pub fn runtime(mut self, def: Arc<CapDef>, imp: Arc<dyn CapImpl>) -> Self {
        self.runtime = Some(RuntimeImpl(def, imp));
        self
    }

    /// Serves a cap from the start: it is registered before the connection reads its first
    /// frame, so a peer that bootstraps as soon as it sees our hello always finds it.
    /// (Serving through [`Connection::serve`] right after `connect` races with such a peer.)
    pub fn serve(mut self, def: Arc<CapDef>, imp: Arc<dyn CapImpl>) -> Self {
        self.served.0.push((def, imp));
        self
    }

    /// Starts the connection: sends hello at once and spawns the driver tasks on the
    /// current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, or when the caps given to [`serve`](Self::serve) collide or
    /// use the reserved `bunite.` prefix (use [`try_connect`](Self::try_connect) to handle
    /// that as an error).
    pub fn connect<T: Transport>(self, transport: T) -> Connection {
        match self.try_connect(transport) {
            Ok(conn) => conn,
            Err(status) => panic!("serving the builder's caps failed: {status}"),
        }
    }

    /// [`connect`](Self::connect), failing instead when the caps given to
    /// [`serve`](Self::serve) cannot all be served (nothing is sent then).
    pub fn try_connect<T: Transport>(self, transport: T) -> Result<Connection, Status> {
        let hello = Hello {
            v: PROTOCOL_VERSION,
            mode: self.mode.unwrap_or_else(|| "native".to_owned()),
            features: self.features,
            max_bytes: self.limits.max_bytes as u64,
            origin: self.origin,
        };
        let cfg = Arc::new(Config {
            limits: self.limits,
            attestation: self.attestation,
            policy: self.policy,
            peer_id: self.peer_id.unwrap_or_else(|| "peer".to_owned()),
            hello,
            backlog: Arc::default(),
        });
        let (state_tx, state_rx) = watch::channel(PeerState::Waiting);
        let mut session = Session::new(Arc::clone(&cfg), state_tx);
        if let Some(RuntimeImpl(def, imp)) = self.runtime {
            session.set_runtime(def, imp);
        }
        if !self.served.0.is_empty() {
            session.serve(self.served.0, crate::IfExists::Throw)?;
        }
        let _ = session.take_effects();
        let shared = Arc::new(Shared {
            id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            session: Mutex::new(session),
            wake_writer: Notify::new(),
            stop: CancellationToken::new(),
            finished: CancellationToken::new(),
            peer_state: state_rx,
            observers: RwLock::new(Vec::new()),
            next_observer: AtomicU64::new(1),
            close_handlers: Mutex::new(Some(Vec::new())),
            cfg,
        });
        let (sink, source) = transport.split();
        tokio::spawn(write_loop(Arc::clone(&shared), sink));
        tokio::spawn(read_loop(Arc::clone(&shared), source));
        shared.wake_writer.notify_one();
        Ok(Connection { shared })
    }
}

impl Connection {
    /// A builder with default settings.
    pub fn builder() -> ConnectionBuilder {
        ConnectionBuilder::default()
    }

    /// A connection with default settings over `transport`.
    pub fn new<T: Transport>(transport: T) -> Connection {
        ConnectionBuilder::default().connect(transport)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Session> {
        // A panic while holding the lock is a bug in this crate; keep serving rather than
        // cascading it into every handle.
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the session, then applies its effects outside the lock.
    pub(crate) fn with<R>(self: &Arc<Self>, f: impl FnOnce(&mut Session) -> R) -> R {
        let (r, fx) = {
            let mut s = self.lock();
            let r = f(&mut s);
            (r, s.take_effects())
        };
        self.apply(fx);
        r
    }

    fn apply(self: &Arc<Self>, fx: Effects) {
        if fx.wrote {
            self.wake_writer.notify_one();
        }
        for event in &fx.events {
            self.notify(event);
        }
        for action in fx.actions {
            self.run(action);
        }
        drop(fx.graveyard);
        drop(fx.discarded);
    }

    fn notify(&self, event: &Event) {
        let observers: Vec<Observer> = match self.observers.read() {
            Ok(o) => o.iter().map(|(_, f)| Arc::clone(f)).collect(),
            Err(_) => return,
        };
        for f in observers {
            // A failing subscriber never affects the connection (PROTOCOL §15).
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| f(event)));
        }
    }

    fn run(self: &Arc<Self>, action: Action) {
        match action {
            Action::Invoke(inv) => {
                tokio::spawn(invoke(Arc::clone(self), inv));
            }
            Action::Policy {
                call_id,
                name,
                version,
            } => {
                let shared = Arc::clone(self);
                tokio::spawn(async move {
                    let allowed = match &shared.cfg.policy {
                        Some(policy) => {
                            let check = policy.check(&name, &shared.cfg.attestation);
                            match AssertUnwindSafe(check).catch_unwind().await {
                                Ok(r) => r,
                                Err(_) => Err("policy panicked".to_owned()),
                            }
                        }
                        None => Ok(true),
                    };
                    shared.with(|s| s.finish_bootstrap(call_id, name, version, allowed));
                });
            }
            Action::Dispose {
                imp,
                method,
                cap_id,
            } => {
                let ctx = CallContext::detached(Arc::clone(self), cap_id);
                let shared = Arc::clone(self);
                tokio::spawn(async move {
                    let fut = imp.call(&method, Value::Undefined, ctx);
                    let error = match AssertUnwindSafe(fut).catch_unwind().await {
                        Ok(Ok(_)) => None,
                        Ok(Err(status)) => Some(status.to_string()),
                        Err(_) => Some("disposal method panicked".to_owned()),
                    };
                    if let Some(error) = error {
                        shared.notify(&Event::Error(ErrorEvent {
                            phase: "dispose",
                            error,
                        }));
                    }
                });
            }
            Action::Run(f) => {
                if std::panic::catch_unwind(AssertUnwindSafe(f)).is_err() {
                    self.notify(&Event::Error(ErrorEvent {
                        phase: "after_reply",
                        error: "after_reply closure panicked".to_owned(),
                    }));
                }
            }
            Action::Closed => {
                self.stop.cancel();
                let handlers = self
                    .close_handlers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                for h in handlers.into_iter().flatten() {
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(h));
                }
            }
        }
    }
}

/// Waits for the peer's hello (bootstrap needs it, PROTOCOL §6).
pub(crate) async fn peer_ready(shared: &Shared) -> Result<(), Status> {
    let mut rx = shared.peer_state.clone();
    loop {
        match &*rx.borrow_and_update() {
            PeerState::Ready => return Ok(()),
            PeerState::Closed(status) => return Err(status.clone()),
            PeerState::Waiting => {}
        }
        if rx.changed().await.is_err() {
            return Err(Status::connection_closed());
        }
    }
}

/// How long a client waits past a call's deadline before failing it (PROTOCOL §5).
pub const DEADLINE_GRACE: Duration = Duration::from_millis(500);

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Connection>();
    let _ = (CapId(0), CallId(0), Code::Internal);
}
