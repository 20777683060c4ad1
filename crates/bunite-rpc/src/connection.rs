//! The connection: cheap cloneable [`Connection`] handles, and the one task that owns the
//! connection's state.
//!
//! # One owner
//!
//! Each connection has a single driver task (`driver`) that owns its `Session` (the pure
//! protocol state machine) and both halves of its transport. Nothing else touches either:
//! handles ([`Connection`], [`Client`](crate::Client), streams, serve handles, call
//! contexts) reach the driver through one command queue, and the driver answers through
//! reply slots (`reply`: one-shot, used again by the thread's next call) and per-stream
//! queues. No lock guards the session, so no `Drop` can
//! deadlock on it: releasing a cap, cancelling a dropped call and unserving on drop are
//! commands, sent without waiting.
//!
//! The driver is one hand-written poll loop rather than a reader task and a writer task: in
//! one pass it drains commands, reads every message the transport has ready (a blocked
//! write never stops reads; only the backpressure of what waits to be sent does: the
//! unsent-bytes limit in [`Limits`], and on a listener's connection its budget across
//! connections, see `room.rs`), runs
//! what the session decided, and writes every frame that became ready together in one
//! batch. Each source is polled until it is pending, so one pass per wake-up suffices and
//! the next pass comes at once only where work was left over (see `Driver::pass`); a pass
//! followed only for more stream values leaves its writes to the next pass's flush. A
//! handler is polled once right there, so one that completes at once costs no task
//! hop; one that has to wait moves to a task of its own (as does a method marked
//! [`own_task`](crate::MethodDef::own_task) from the start). Stream sources are polled by
//! the driver as credit allows.
//!
//! The command queue is unbounded, yet every command is bounded by something else: calls
//! and stream opens by the in-flight limit (reserved before they are queued), releases and
//! cancels by the handles that exist (each sends at most one), handler outcomes by the
//! in-flight limit, and the rest are the application's own requests, answered one by one.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bunite_wire::{CallId, Hello, PROTOCOL_VERSION};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::attestation::Attestation;
use crate::error::{Disconnect, Error};
use crate::events::Event;
use crate::handler::CapImpl;
use crate::limits::Limits;
use crate::policy::Policy;
use crate::schema::{CapDef, IfExists};
use crate::session::{self, Session};
use crate::stats::Stats;
use crate::status::Status;
use crate::transport::Transport;

mod command;
mod driver;
mod lifecycle;
pub(crate) mod reply;
mod room;
mod runs;
mod serving;
mod set;

pub(crate) use command::Command;
pub use driver::CLOSE_GRACE;
pub use lifecycle::SubscriptionId;
pub use serving::ServeHandle;
pub use set::ConnectionSet;

/// Whether a tracing subscriber has ever been installed (globally, or for a scope with
/// `tracing::subscriber::with_default`). Until one has, the per-call spans are not built at
/// all: with tracing's `log` feature on (some dependencies turn it on) a span that no
/// subscriber wants still has its fields gathered and offered to the `log` crate, a few
/// hundred instructions a call (`docs/BENCHMARKS.md`).
#[inline]
pub(crate) fn spans_wanted() -> bool {
    tracing::dispatcher::has_been_set()
}

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) type Observer = Arc<dyn Fn(&Event) + Send + Sync>;
pub(crate) type CloseHandler = Box<dyn FnOnce() + Send>;

/// Settings of one connection that handles and handlers read.
pub(crate) struct Settings {
    pub limits: Limits,
    pub attestation: Attestation,
    pub policy: Option<Policy>,
    pub peer_id: String,
}

/// What the handles of one connection share with its driver.
pub(crate) struct Shared {
    pub(crate) id: u64,
    commands: mpsc::UnboundedSender<Command>,
    next_call_id: AtomicU64,
    /// Outbound calls, streams and bootstraps reserved against the in-flight limit,
    /// including those still in the command queue.
    outbound: AtomicUsize,
    closed: AtomicBool,
    /// How the session shut down, once it has (set with `closed`; set once, read without
    /// a lock: the driver's `Drop` sets it).
    closed_by: OnceLock<Disconnect>,
    /// Set if the driver's task panicked (a bug of ours; logged, and the connection closed).
    driver_panicked: AtomicBool,
    /// Fired when the driver has finished: last frames delivered, transport closed.
    finished: CancellationToken,
    stats: Mutex<Stats>,
    peer_hello: Mutex<Option<Hello>>,
    observers: RwLock<Vec<(u64, Observer)>>,
    observed: AtomicBool,
    next_observer: AtomicU64,
    tasks: AtomicUsize,
    tasks_idle: Notify,
    /// `bunite.connection`: the parent of every span and event of this connection.
    pub(crate) span: tracing::Span,
    pub(crate) settings: Settings,
}

/// A handle to one connection. Cheap to clone; `Send + Sync`.
///
/// Both peers are symmetric: each may serve caps and bootstrap the other's. The connection
/// runs until [`close`](Connection::close) is called, the peer sends goaway, or the
/// transport closes; dropping every handle does not close it (a server keeps serving).
/// [`ConnectionBuilder`] has an example of both ends.
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

/// Builds a [`Connection`] over a transport: its [`Limits`], the [`Attestation`] its
/// [`Policy`] sees, and the caps it serves from the start.
///
/// ```
/// use bunite_rpc::dynamic::DynCap;
/// use bunite_rpc::transport::memory;
/// use bunite_rpc::{Attestation, CapDef, Code, Connection, Limits, MethodDef, Policy, Value};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = CapDef::builder("demo.Clock").method(MethodDef::call("now")).build();
/// let admin = CapDef::builder("demo.Admin").method(MethodDef::call("reset")).build();
/// let now = DynCap::new().call("now", |_, _| async { Ok(Value::from(42)) }).build();
/// let reset = DynCap::new().call("reset", |_, _| async { Ok(Value::Null) }).build();
/// let (a, b) = memory::pair();
///
/// // The server end: its bounds, who the peer is, who may bootstrap what, and its caps.
/// let server = Connection::builder()
///     .limits(Limits { max_in_flight: 64, ..Limits::default() })
///     .attestation(Attestation { origin: "https://app.example".into(), ..Attestation::default() })
///     .policy(Policy::new(|name, attestation| {
///         name != "demo.Admin" && attestation.origin == "https://app.example"
///     }))
///     .serve(clock.clone(), now)
///     .serve(admin.clone(), reset)
///     .connect(a);
///
/// // The client end, with default settings.
/// let client = Connection::new(b);
/// let remote_clock = client.bootstrap(&clock).await?;
/// assert_eq!(remote_clock.call::<_, i64>("now", &()).await?, 42);
/// let denied = client.bootstrap(&admin).await.unwrap_err();
/// assert_eq!(denied.code(), Code::FailedPrecondition); // the policy said no
///
/// client.close();
/// server.closed().await;
/// # Ok(())
/// # }
/// ```
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

    /// Starts the connection: sends hello at once and spawns its driver task on the
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
        let cfg = session::Config {
            limits: self.limits.clone(),
            attestation: self.attestation.clone(),
            has_policy: self.policy.is_some(),
            hello,
        };
        let now = tokio::time::Instant::now().into_std();
        let mut session = Session::new(cfg, now);
        if let Some(RuntimeImpl(def, imp)) = self.runtime {
            session.set_runtime(def, imp);
        }
        if !self.served.0.is_empty() {
            session.serve(self.served.0, IfExists::Throw)?;
        }
        let (commands, queue) = mpsc::unbounded_channel();
        let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
        let info = transport.info();
        let span = tracing::info_span!(
            parent: None,
            "bunite.connection",
            connection.id = id,
            transport = info.kind,
            peer = info.peer.as_deref().unwrap_or(""),
        );
        let shared = Arc::new(Shared {
            id,
            commands,
            next_call_id: AtomicU64::new(1),
            outbound: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            closed_by: OnceLock::new(),
            driver_panicked: AtomicBool::new(false),
            finished: CancellationToken::new(),
            stats: Mutex::new(Stats::default()),
            peer_hello: Mutex::new(None),
            observers: RwLock::new(Vec::new()),
            observed: AtomicBool::new(false),
            next_observer: AtomicU64::new(1),
            tasks: AtomicUsize::new(0),
            tasks_idle: Notify::new(),
            span,
            settings: Settings {
                limits: self.limits,
                attestation: self.attestation,
                policy: self.policy,
                peer_id: self.peer_id.unwrap_or_else(|| "peer".to_owned()),
            },
        });
        driver::spawn(Arc::clone(&shared), session, queue, transport);
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
    /// Queues a command for the driver; false once the driver is gone.
    pub(crate) fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// New calls fail locally from now on (the driver, as the session shuts down `how`;
    /// the first cause known is kept).
    pub(crate) fn mark_closed(&self, how: Option<&Disconnect>) {
        if let Some(how) = how {
            if self.closed_by.get().is_none() {
                // Only the driver sets it; a second cause is dropped.
                let _ = self.closed_by.set(how.clone());
            }
        }
        self.closed.store(true, Ordering::Release);
    }

    pub(crate) fn closed_by(&self) -> Option<Disconnect> {
        self.closed_by.get().cloned()
    }

    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn driver_panicked(&self) -> bool {
        self.driver_panicked.load(Ordering::Acquire)
    }

    /// A fresh call id (PROTOCOL §4: from 1 upward, never reused).
    pub(crate) fn next_call_id(&self) -> CallId {
        CallId(self.next_call_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Reserves one outbound call against the in-flight limit, or fails it locally
    /// (PROTOCOL §9): closed first, then the limit. A call's reservation is given back as
    /// its caller takes the outcome or stops waiting (`client::ReplyGuard`); a stream's as
    /// its end is handed over or its consumer stops (`StreamQueue::take_reservation`).
    pub(crate) fn reserve_call(&self) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::closed());
        }
        let max = self.settings.limits.max_in_flight;
        if self.outbound.fetch_add(1, Ordering::AcqRel) >= max {
            self.outbound.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::in_flight_limit(max));
        }
        Ok(())
    }

    /// Gives back `n` reservations. Never below zero: a reservation given back twice (a
    /// bug, caught by the assertion in tests) would otherwise wrap the count and fail
    /// every later call.
    pub(crate) fn unreserve(&self, n: usize) {
        let _ = self
            .outbound
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                debug_assert!(held >= n, "{n} reservations given back, {held} held");
                Some(held.saturating_sub(n))
            });
    }

    /// Notifies observers of an event (PROTOCOL §15). A panicking observer is caught and
    /// never affects the connection.
    pub(crate) fn notify(&self, event: &Event) {
        let observers: Vec<Observer> = match self.observers.read() {
            Ok(o) => o.iter().map(|(_, f)| Arc::clone(f)).collect(),
            Err(_) => return,
        };
        for f in observers {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| f(event)));
        }
    }

    /// Drops every observer, once the driver has finished and the last task of the
    /// connection has ended: nothing reports an event from then on, and an observer that
    /// holds its own connection (to call back into it) would otherwise keep it, and
    /// itself, alive forever through the cycle. Dropped outside the lock, as a closure's
    /// drop may do anything.
    ///
    /// Never waits (it is called from [`TaskGuard`]'s `Drop`): when the lock is taken, it
    /// is by `subscribe` or `unsubscribe` (no event is reported any more, so nothing reads
    /// it), each of which calls this again once it has let go of the lock.
    pub(crate) fn forget_observers(&self) {
        let gone = match self.observers.try_write() {
            Ok(mut o) => {
                self.observed.store(false, Ordering::Release);
                std::mem::take(&mut *o)
            }
            Err(_) => return,
        };
        drop(gone);
    }

    /// Whether the driver has finished and no task of the connection is left: no event can
    /// be reported any more.
    pub(crate) fn is_done(&self) -> bool {
        self.finished.is_cancelled() && self.tasks.load(Ordering::Acquire) == 0
    }

    /// Counts a task of this connection until the guard drops.
    pub(crate) fn task(self: &Arc<Self>) -> TaskGuard {
        self.tasks.fetch_add(1, Ordering::AcqRel);
        TaskGuard(Arc::clone(self))
    }

    pub(crate) fn live_tasks(&self) -> usize {
        self.tasks.load(Ordering::Acquire)
    }
}

/// Holds one count of [`Shared::tasks`]; the count drops with it.
pub(crate) struct TaskGuard(Arc<Shared>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.tasks.fetch_sub(1, Ordering::AcqRel) == 1 {
            if self.0.finished.is_cancelled() {
                self.0.forget_observers();
            }
            self.0.tasks_idle.notify_waiters();
        }
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Connection>();
}
