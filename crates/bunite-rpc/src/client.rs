//! Clients of the peer's caps: [`Client`] (one remote reference, shared by clones) and the
//! call path every client uses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_wire::{CallId, CallMeta, CapId, Value};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::connection::{Connection, Shared, DEADLINE_GRACE};
use crate::context::CURRENT_CALL;
use crate::schema::CapDef;
use crate::session::outbound::CallRequest;
use crate::session::streams::CLIENT_BUFFER;
use crate::status::{Code, Status};
use crate::stream::ClientStream;

/// Options of one call.
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// A relative deadline, sent as `meta.deadlineMs`. The call fails `deadline_exceeded`
    /// at deadline + 500 ms (PROTOCOL §11). Calls made inside a handler inherit the
    /// remaining deadline unless given their own.
    pub deadline: Option<Duration>,
    /// The `meta.context` string map.
    pub context: Vec<(String, String)>,
    /// Cancels the call when fired: `cancel {reason:"client_cancel"}` goes to the server
    /// and the call fails `cancelled` at once. (Dropping the call's future also cancels it.)
    pub cancel: Option<CancellationToken>,
}

impl CallOptions {
    /// Options with a deadline.
    pub fn deadline(d: Duration) -> Self {
        CallOptions {
            deadline: Some(d),
            ..CallOptions::default()
        }
    }
}

/// One reference to a peer's cap. Released (a `drop` frame) when the last [`Client`] clone
/// holding it is dropped, unless released or disposed earlier.
pub(crate) struct ClientRef {
    shared: Arc<Shared>,
    id: CapId,
    owned: bool,
    released: AtomicBool,
    disposed: AtomicBool,
}

impl ClientRef {
    /// A reference we received and must release.
    pub(crate) fn owned(shared: Arc<Shared>, id: CapId) -> Arc<Self> {
        Self::make(shared, id, true)
    }

    /// A reserved id (the runtime): never released.
    pub(crate) fn borrowed(shared: Arc<Shared>, id: CapId) -> Arc<Self> {
        Self::make(shared, id, false)
    }

    fn make(shared: Arc<Shared>, id: CapId, owned: bool) -> Arc<Self> {
        Arc::new(ClientRef {
            shared,
            id,
            owned,
            released: AtomicBool::new(false),
            disposed: AtomicBool::new(false),
        })
    }

    fn release(&self) {
        if self.owned && !self.released.swap(true, Ordering::AcqRel) {
            self.shared.with(|s| s.release(self.id));
        }
    }
}

impl Drop for ClientRef {
    fn drop(&mut self) {
        self.release();
    }
}

/// A client of one of the peer's caps, untyped: call any method by name with a serde value.
/// Cheap to clone; clones share one remote reference. `Send + Sync`.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientRef>,
    def: Option<Arc<CapDef>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("cap_id", &self.inner.id)
            .field("cap", &self.def.as_ref().map(|d| d.name().to_owned()))
            .finish()
    }
}

impl Client {
    pub(crate) fn new(inner: Arc<ClientRef>, def: Option<Arc<CapDef>>) -> Self {
        Client { inner, def }
    }

    /// The remote cap-id.
    pub fn id(&self) -> CapId {
        self.inner.id
    }

    /// The same reference, described by `def` (e.g. so [`dispose`](Client::dispose) knows
    /// the disposal method of a cap obtained through the untyped API).
    pub fn with_def(mut self, def: Arc<CapDef>) -> Client {
        self.def = Some(def);
        self
    }

    /// The definition this client was made with, if any.
    pub fn def(&self) -> Option<&Arc<CapDef>> {
        self.def.as_ref()
    }

    /// The connection this client belongs to.
    pub fn connection(&self) -> Connection {
        Connection {
            shared: Arc::clone(&self.inner.shared),
        }
    }

    /// Calls `method` with a serde value and decodes the result.
    pub async fn call<A, R>(&self, method: &str, args: &A) -> Result<R, Status>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let args = bunite_wire::to_value(args)?;
        let value = self.call_value(method, args).await?;
        bunite_wire::from_value(value).map_err(|e| Status::invalid_argument(format!("result: {e}")))
    }

    /// Calls `method` with a raw value.
    pub async fn call_value(&self, method: &str, args: Value) -> Result<Value, Status> {
        self.call_with(method, args, CallOptions::default()).await
    }

    /// Calls `method` with options (deadline, context).
    pub async fn call_with(
        &self,
        method: &str,
        args: Value,
        opts: CallOptions,
    ) -> Result<Value, Status> {
        self.check_live()?;
        call_raw(&self.inner.shared, self.inner.id, method, args, opts, false).await
    }

    /// Calls a method that returns one cap; `def` describes it (the client's definition, if
    /// any, is used to find the method's declared return).
    pub async fn call_cap(&self, method: &str, args: Value) -> Result<Client, Status> {
        self.call_cap_with(method, args, CallOptions::default())
            .await
    }

    /// [`call_cap`](Self::call_cap) with options (deadline, context).
    pub async fn call_cap_with(
        &self,
        method: &str,
        args: Value,
        opts: CallOptions,
    ) -> Result<Client, Status> {
        self.check_live()?;
        let value = call_raw(&self.inner.shared, self.inner.id, method, args, opts, true).await?;
        let def = self.returned_def(method);
        match value {
            Value::CapRef(id) => Ok(self.adopt(id, def)),
            other => Err(self.reject(&other, "expected CapRef")),
        }
    }

    /// Calls a method that returns an array of caps.
    pub async fn call_caps(&self, method: &str, args: Value) -> Result<Vec<Client>, Status> {
        self.call_caps_with(method, args, CallOptions::default())
            .await
    }

    /// [`call_caps`](Self::call_caps) with options (deadline, context).
    pub async fn call_caps_with(
        &self,
        method: &str,
        args: Value,
        opts: CallOptions,
    ) -> Result<Vec<Client>, Status> {
        self.check_live()?;
        let value = call_raw(&self.inner.shared, self.inner.id, method, args, opts, true).await?;
        let def = self.returned_def(method);
        match value {
            Value::Array(items) if items.iter().all(|v| matches!(v, Value::CapRef(_))) => Ok(items
                .into_iter()
                .filter_map(|v| match v {
                    Value::CapRef(id) => Some(self.adopt(id, def.clone())),
                    _ => None,
                })
                .collect()),
            Value::Array(items) => {
                Err(self.reject(&Value::Array(items), "expected CapRef in array"))
            }
            other => Err(self.reject(&other, "expected array")),
        }
    }

    /// Calls a method that returns a string-keyed record of caps.
    pub async fn call_cap_record(
        &self,
        method: &str,
        args: Value,
    ) -> Result<Vec<(String, Client)>, Status> {
        self.call_cap_record_with(method, args, CallOptions::default())
            .await
    }

    /// [`call_cap_record`](Self::call_cap_record) with options (deadline, context).
    pub async fn call_cap_record_with(
        &self,
        method: &str,
        args: Value,
        opts: CallOptions,
    ) -> Result<Vec<(String, Client)>, Status> {
        self.check_live()?;
        let value = call_raw(&self.inner.shared, self.inner.id, method, args, opts, true).await?;
        let def = self.returned_def(method);
        match value {
            Value::Record(r) if r.0.iter().all(|(_, v)| matches!(v, Value::CapRef(_))) => Ok(r
                .0
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::CapRef(id) => Some((k.into(), self.adopt(id, def.clone()))),
                    _ => None,
                })
                .collect()),
            Value::Record(r) => Err(self.reject(&Value::Record(r), "expected CapRef in record")),
            other => Err(self.reject(&other, "expected record")),
        }
    }

    /// Opens a stream method. Local failures (closed, revoked, in-flight limit) arrive as
    /// the stream's only item.
    pub fn stream(&self, method: &str, args: Value) -> ClientStream {
        self.stream_with(method, args, CallOptions::default())
    }

    /// [`stream`](Self::stream) with options: the deadline and context go out in the call's
    /// meta (the server sees them in its [`CallContext`](crate::CallContext)).
    pub fn stream_with(&self, method: &str, args: Value, opts: CallOptions) -> ClientStream {
        let shared = Arc::clone(&self.inner.shared);
        let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
        let started = self.check_live().and_then(|()| {
            let req = CallRequest {
                cap_id: self.inner.id,
                method: method.to_owned(),
                args,
                meta: current_meta(&shared, opts.deadline, opts.context).0,
                returns_caps: false,
            };
            shared.with(|s| s.start_stream(req, tx.clone()))
        });
        match started {
            Ok(id) => ClientStream::new(shared, Some(id), rx),
            Err(status) => {
                let _ = tx.try_send(Err(status));
                ClientStream::new(shared, None, rx)
            }
        }
    }

    /// A stream that fails at once with `status`, sending nothing (for a stream whose args
    /// could not be encoded).
    pub(crate) fn failed_stream(&self, status: Status) -> ClientStream {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Err(status));
        ClientStream::new(Arc::clone(&self.inner.shared), None, rx)
    }

    /// Releases this reference now (a `drop` frame). Clones can no longer call.
    pub fn release(self) {
        self.inner.release();
    }

    /// Calls the cap's disposal method once (errors ignored), then releases the reference.
    /// Disposing twice, from any clone, calls the disposal method once (PROTOCOL §13.8).
    pub async fn dispose(self) {
        let method = self
            .def
            .as_ref()
            .and_then(|d| d.disposal().map(str::to_owned));
        if let Some(method) = method {
            if !self.inner.disposed.swap(true, Ordering::AcqRel)
                && !self.inner.released.load(Ordering::Acquire)
            {
                let _ = self.call_value(&method, Value::Undefined).await;
            }
        }
        self.inner.release();
    }

    fn check_live(&self) -> Result<(), Status> {
        if self.inner.released.load(Ordering::Acquire) {
            return Err(Status::new(Code::FailedPrecondition, "cap released"));
        }
        Ok(())
    }

    fn returned_def(&self, method: &str) -> Option<Arc<CapDef>> {
        self.def.as_ref()?.method(method)?.return_shape().cap()
    }

    fn adopt(&self, id: CapId, def: Option<Arc<CapDef>>) -> Client {
        Client::new(ClientRef::owned(Arc::clone(&self.inner.shared), id), def)
    }

    /// A cap-returning call got the wrong shape: release whatever caps it carried and fail
    /// with `invalid_argument` (PROTOCOL §13.4).
    fn reject(&self, value: &Value, message: &str) -> Status {
        fn walk(v: &Value, out: &mut Vec<CapId>) {
            match v {
                Value::CapRef(id) => out.push(*id),
                Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
                Value::Record(r) => r.0.iter().for_each(|(_, i)| walk(i, out)),
                _ => {}
            }
        }
        let mut ids = Vec::new();
        walk(value, &mut ids);
        if !ids.is_empty() {
            self.inner
                .shared
                .with(|s| ids.into_iter().for_each(|id| s.release(id)));
        }
        Status::invalid_argument(message)
    }
}

/// Sends `cancel` if the caller stops waiting before the outcome arrives.
struct CancelOnDrop<'a> {
    shared: &'a Arc<Shared>,
    id: CallId,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared
                .with(|s| s.cancel_call(self.id, "client_cancel", None));
        }
    }
}

/// The meta of a call made now: `parentCallId` when made inside a handler of the same
/// connection, the deadline (explicit, or the handler's remaining one), the context map.
fn current_meta(
    shared: &Shared,
    deadline: Option<Duration>,
    context: Vec<(String, String)>,
) -> (Option<CallMeta>, Option<Duration>) {
    let scope = CURRENT_CALL.try_with(|s| *s).ok();
    let parent = scope
        .filter(|s| s.connection == shared.id)
        .map(|s| s.call_id);
    let now = Instant::now();
    let deadline = deadline.or_else(|| {
        scope
            .and_then(|s| s.deadline)
            .map(|d| d.saturating_duration_since(now))
    });
    let meta = (parent.is_some() || deadline.is_some() || !context.is_empty()).then(|| CallMeta {
        parent_call_id: parent,
        // deadlineMs ≤ 0 means none on the wire, so an expired deadline goes out as 1 ms.
        deadline_ms: deadline.map(|d| (d.as_secs_f64() * 1000.0).ceil().max(1.0)),
        context: (!context.is_empty()).then_some(context),
    });
    (meta, deadline)
}

/// The call path of every client: meta (parent, deadline, context), local checks, the
/// pending entry, the deadline timer, and cancel on drop.
pub(crate) async fn call_raw(
    shared: &Arc<Shared>,
    cap_id: CapId,
    method: &str,
    args: Value,
    opts: CallOptions,
    returns_caps: bool,
) -> Result<Value, Status> {
    let opts_cancel = opts.cancel;
    let (meta, deadline) = current_meta(shared, opts.deadline, opts.context);
    let (tx, rx) = oneshot::channel();
    let req = CallRequest {
        cap_id,
        method: method.to_owned(),
        args,
        meta,
        returns_caps,
    };
    let id = shared.with(|s| s.start_call(req, tx))?;
    let mut guard = CancelOnDrop {
        shared,
        id,
        armed: true,
    };
    let cancelled = async {
        match &opts_cancel {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let expired = async {
        match deadline {
            Some(d) => tokio::time::sleep(d + DEADLINE_GRACE).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        outcome = rx => outcome,
        () = cancelled => {
            guard.armed = false;
            shared.with(|s| s.cancel_call(id, "client_cancel", None));
            return Err(Status::new(Code::Cancelled, "client_cancel"));
        }
        () = expired => {
            guard.armed = false;
            shared.with(|s| s.cancel_call(id, "deadline_exceeded", None));
            return Err(Status::new(Code::DeadlineExceeded, "deadline exceeded"));
        }
    };
    guard.armed = false;
    outcome.unwrap_or_else(|_| Err(Status::connection_closed()))
}
