//! The connection: cheap cloneable [`Connection`] handles over one shared session, and the
//! driver tasks that do all the I/O (a reader and a writer per connection).
//!
//! Every operation locks the session (never across an `.await`), lets it decide, then
//! applies the [`Effects`] outside the lock: wakes the writer, spawns handlers and policy
//! checks, notifies observers.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use bunite_wire::{CallId, CapId, Decoder, FrameDecodeError, Hello, Value, PROTOCOL_VERSION};
use futures::{FutureExt, StreamExt};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::context::{CallContext, CallScope, CURRENT_CALL};
use crate::events::{ErrorEvent, Event};
use crate::handler::{CapImpl, Returned};
use crate::limits::Limits;
use crate::policy::{Attestation, Policy};
use crate::schema::{CapDef, MethodKind};
use crate::session::streams::Credit;
use crate::session::{Action, Config, Effects, Invocation, PeerState, Session};
use crate::status::{reason, Code, Status};
use crate::transport::{MessageSink, MessageSource, Transport, TransportError};

mod api;

pub use api::{ServeHandle, SubscriptionId};

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

    /// Starts the connection: sends hello at once and spawns the driver tasks on the
    /// current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn connect<T: Transport>(self, transport: T) -> Connection {
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
        Connection { shared }
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

/// Runs one handler: signals it at its deadline, drops it on cancel, catches panics, and
/// reports the outcome to the session.
async fn invoke(shared: Arc<Shared>, inv: Invocation) {
    let scope = CallScope {
        connection: shared.id,
        call_id: inv.call_id,
        deadline: inv.deadline.map(|d| Instant::now() + d),
    };
    let ctx = CallContext::new(Arc::clone(&shared), &inv, scope.deadline);
    if inv.kind == MethodKind::Stream {
        return run_stream(shared, inv, scope, ctx).await;
    }
    let fut = inv.imp.call(&inv.method, inv.args, ctx);
    let signal = inv.signal.clone();
    let deadline = async move {
        match inv.signal_after {
            Some(after) => {
                tokio::time::sleep(after).await;
                signal.cancel();
                std::future::pending::<()>().await
            }
            None => std::future::pending::<()>().await,
        }
    };
    let run = CURRENT_CALL.scope(scope, AssertUnwindSafe(fut).catch_unwind());
    // Biased: once aborted, the handler is not polled again.
    let outcome: Option<Result<Returned, Status>> = tokio::select! {
        biased;
        _ = inv.abort.cancelled() => None,
        r = run => Some(r.unwrap_or_else(|_| Err(Status::internal("handler panicked")))),
        _ = deadline => None,
    };
    if let Some(result) = outcome {
        shared.with(|s| s.finish_call(inv.call_id, result, Instant::now()));
    }
}

/// Drives one server stream: waits for credit before pulling each value from the source,
/// stops at once on cancel (even while waiting for credit), catches panics.
async fn run_stream(shared: Arc<Shared>, inv: Invocation, scope: CallScope, ctx: CallContext) {
    let id = inv.call_id;
    let opened = CURRENT_CALL.sync_scope(scope, || {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            inv.imp.stream(&inv.method, inv.args, ctx)
        }))
    });
    let mut source = match opened {
        Ok(Ok(source)) => source,
        Ok(Err(status)) => return shared.with(|s| s.stream_error(id, status)),
        Err(_) => {
            return shared.with(|s| s.stream_error(id, Status::internal("stream handler panicked")))
        }
    };
    loop {
        loop {
            match shared.with(|s| s.stream_credit(id)) {
                Credit::Ready => break,
                Credit::Gone => return,
                Credit::Wait(wake) => tokio::select! {
                    _ = wake.notified() => {}
                    _ = inv.abort.cancelled() => return,
                },
            }
        }
        shared
            .cfg
            .backlog
            .wait_below(shared.cfg.limits.max_unsent_bytes)
            .await;
        let next = CURRENT_CALL.scope(scope, AssertUnwindSafe(source.next()).catch_unwind());
        let item = tokio::select! {
            item = next => item,
            _ = inv.abort.cancelled() => return,
        };
        match item {
            Ok(Some(Ok(value))) => {
                if !shared.with(|s| s.stream_next(id, value)) {
                    return;
                }
            }
            Ok(Some(Err(status))) => return shared.with(|s| s.stream_error(id, status)),
            Ok(None) => return shared.with(|s| s.stream_end(id)),
            Err(_) => {
                return shared
                    .with(|s| s.stream_error(id, Status::internal("stream source panicked")))
            }
        }
    }
}

/// How long the writer keeps trying to deliver its last frames (a goaway) once the
/// connection has shut down, before it gives up on a transport that does not drain.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

async fn write_loop<S: MessageSink>(shared: Arc<Shared>, mut sink: S) {
    write_batches(&shared, &mut sink).await;
    shared.finished.cancel();
}

async fn write_batches<S: MessageSink>(shared: &Arc<Shared>, sink: &mut S) {
    loop {
        let (batch, closing) = shared.with(|s| s.take_outbox());
        let wrote = !batch.is_empty();
        let written = async {
            for msg in batch {
                let len = msg.len();
                sink.send(msg).await?;
                shared.cfg.backlog.written(len);
            }
            if wrote {
                sink.flush().await?;
            }
            Ok::<(), TransportError>(())
        };
        let result = if closing {
            tokio::time::timeout(CLOSE_GRACE, written)
                .await
                .unwrap_or(Err(TransportError::Closed))
        } else {
            written.await
        };
        if let Err(e) = result {
            return fail_transport(shared, e);
        }
        if closing && !wrote {
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
            return;
        }
        if !wrote {
            shared.wake_writer.notified().await;
        }
    }
}

fn fail_transport(shared: &Arc<Shared>, e: TransportError) {
    shared.with(|s| s.transport_closed(&format!("transport closed: {e}")));
}

async fn read_loop<S: MessageSource>(shared: Arc<Shared>, mut source: S) {
    let limits = &shared.cfg.limits;
    let max = limits.max_bytes;
    let mut decoder = Decoder::new(limits.wire());
    loop {
        let msg = tokio::select! {
            _ = shared.stop.cancelled() => return,
            msg = async {
                // Backpressure: a peer that does not read our answers stops being read.
                shared.cfg.backlog.wait_below(limits.max_unsent_bytes).await;
                source.recv().await
            } => msg,
        };
        let bytes = match msg {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return shared.with(|s| s.transport_closed("transport closed")),
            Err(TransportError::TooLarge { len, max }) => return oversize(&shared, len, max),
            Err(TransportError::Protocol(m)) => {
                return shared.with(|s| s.protocol_error(Status::invalid_argument(m)))
            }
            Err(e) => return fail_transport(&shared, e),
        };
        if bytes.len() > max {
            return oversize(&shared, bytes.len() as u64, max);
        }
        match decoder.decode_frame(&bytes) {
            Ok(frame) => shared.with(|s| s.on_frame(frame, Instant::now())),
            Err(e) => {
                let message = match &e {
                    FrameDecodeError::Frame(bunite_wire::FrameError::UnknownOp(_)) => {
                        "unknown opcode".to_owned()
                    }
                    other => other.to_string(),
                };
                return shared.with(|s| s.protocol_error(Status::invalid_argument(message)));
            }
        }
    }
}

fn oversize(shared: &Arc<Shared>, len: u64, max: usize) {
    let status = Status::resource_exhausted(
        format!("message of {len} bytes exceeds maxBytes {max}"),
        reason::MAX_FRAME_BYTES,
    );
    shared.with(|s| s.protocol_error(status));
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
