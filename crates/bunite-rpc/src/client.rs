//! Clients of the peer's caps: [`Client`] (one remote reference, shared by clones), the
//! bootstraps that make them, and the call path every client uses.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bunite_wire::{AsOutgoing, CallId, CapId, Outgoing, Text, Value};
use futures::future::join_all;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::task::coop;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::client_stream::{ClientStream, StreamQueue};
use crate::connection::reply::{self, ReplyRx};
use crate::connection::{spans_wanted, Command, Connection, Shared};
use crate::context::CallScope;
use crate::error::{Error, LocalError};
use crate::schema::CapDef;
use crate::session::{CallRequest, Expect, Parent};
use crate::status::{Code, Status};
use bunite_wire::Payload;

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
///
/// **A release and the calls racing it.** A call checks that the reference is live, then
/// queues its command; a release from another thread in between would be queued first, and
/// the call would reach a cap the peer has let go of (`not_found`) instead of failing
/// `Released` here. So `state` counts the calls between their check and their queueing
/// ([`enter`](Self::enter)), and a release that finds some leaves its command to the last
/// of them: every call that passed the check is queued before the release. One atomic, no
/// lock, no wait.
pub(crate) struct ClientRef {
    shared: Arc<Shared>,
    id: CapId,
    owned: bool,
    /// [`RELEASED`], [`RELEASE_SENT`], and [`ENTERED`] times the calls being queued.
    state: AtomicUsize,
    disposed: AtomicBool,
}

/// The reference is released: calls fail `Released` from now on.
const RELEASED: usize = 1;
/// Its release command has been queued (once, by whoever saw no call left being queued).
const RELEASE_SENT: usize = 2;
/// One call between its check and its queueing.
const ENTERED: usize = 4;

impl ClientRef {
    /// A reference we received and must release.
    pub(crate) fn owned(shared: Arc<Shared>, id: CapId) -> Arc<Self> {
        Self::make(shared, id, true)
    }

    /// A reserved id (the runtime), or an id a tool addresses directly: never released.
    pub(crate) fn borrowed(shared: Arc<Shared>, id: CapId) -> Arc<Self> {
        Self::make(shared, id, false)
    }

    fn make(shared: Arc<Shared>, id: CapId, owned: bool) -> Arc<Self> {
        Arc::new(ClientRef {
            shared,
            id,
            owned,
            state: AtomicUsize::new(0),
            disposed: AtomicBool::new(false),
        })
    }

    fn is_released(&self) -> bool {
        self.state.load(Ordering::Acquire) & RELEASED != 0
    }

    fn release(&self) {
        if !self.owned {
            return;
        }
        let before = self.state.fetch_or(RELEASED, Ordering::AcqRel);
        if before & RELEASED == 0 {
            self.send_release();
        }
    }

    /// Queues the release if it is due and no call is being queued: once, by whichever of
    /// the releaser and the last call leaving sees it so.
    fn send_release(&self) {
        if self
            .state
            .compare_exchange(
                RELEASED,
                RELEASED | RELEASE_SENT,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            self.shared.send(Command::Release(self.id));
        }
    }

    /// A call about to be queued: fails `Released` if the reference is; else the release
    /// waits until the returned guard is dropped (after the call's command is queued).
    fn enter(&self) -> Result<Queuing<'_>, Error> {
        let before = self.state.fetch_add(ENTERED, Ordering::AcqRel);
        let queuing = Queuing(self);
        if before & RELEASED != 0 {
            return Err(Error::local(
                LocalError::Released,
                Status::new(Code::FailedPrecondition, "cap released"),
            ));
        }
        Ok(queuing)
    }
}

/// A call of a [`ClientRef`] being queued (see [`ClientRef::enter`]).
struct Queuing<'a>(&'a ClientRef);

impl Drop for Queuing<'_> {
    /// The call is queued (or failed): a release that waited for it goes out now. Atomics
    /// and a command, never a wait.
    fn drop(&mut self) {
        let r = self.0;
        if r.state.fetch_sub(ENTERED, Ordering::AcqRel) == RELEASED | ENTERED && r.owned {
            r.send_release();
        }
    }
}

impl Drop for ClientRef {
    /// Releases the reference: a command to the connection, never a wait.
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
    pub async fn call<A, R>(&self, method: &str, args: &A) -> Result<R, Error>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let args = encode_args(args)?;
        let payload = self
            .call_payload(method, args, CallOptions::default())
            .await?;
        decode_result(&payload)
    }

    /// Calls `method` with a raw value.
    ///
    /// `args` is a [`Value`], or any [`Outgoing`]: `Outgoing::typed(x)` serializes `x`
    /// straight into the call frame (no `Value` tree in between); if it does not serialize,
    /// the call fails here with `invalid_argument` "params: …" and nothing is sent. The same
    /// holds for every call and stream method of `Client`.
    pub fn call_value<'a>(
        &'a self,
        method: &'a str,
        args: impl Into<Outgoing>,
    ) -> impl Future<Output = Result<Value, Error>> + 'a {
        self.call_with(method, args, CallOptions::default())
    }

    /// Calls `method` with options (deadline, context, cancellation).
    pub fn call_with<'a>(
        &'a self,
        method: &'a str,
        args: impl Into<Outgoing>,
        opts: CallOptions,
    ) -> impl Future<Output = Result<Value, Error>> + 'a {
        self.call_payload(method, args, opts).map(|payload| {
            payload?
                .into_value()
                .map_err(|e| Error::bad_answer(format!("result: {e}")))
        })
    }

    /// Calls `method` and returns the result undecoded, for decoding into a type.
    ///
    /// The returned future is lazy like an `async fn`'s: nothing is checked or sent until it
    /// is first polled.
    ///
    /// Cancel-safe, as every call of `Client` is: dropped before its first poll, it sent
    /// nothing; dropped after, it queues the call's `cancel` and gives its in-flight slot
    /// back at once. The cap-returning calls ([`call_cap`](Self::call_cap) and the others)
    /// also release the caps of an answer that arrived meanwhile or arrives later.
    pub fn call_payload<'a>(
        &'a self,
        method: &'a str,
        args: impl Into<Outgoing>,
        opts: CallOptions,
    ) -> impl Future<Output = Result<Payload, Error>> + 'a {
        // Not an `async fn` around `call`: each layer of `async fn` keeps its own copy of
        // the arguments for the whole call, and a caller that spawns or queues the future
        // moves all of it.
        call(
            self,
            Text::copy_from(method),
            args.into(),
            opts,
            Expect::Value,
        )
    }

    /// Calls a method that returns one cap (the client's definition, if any, describes the
    /// returned cap).
    pub async fn call_cap(&self, method: &str, args: impl Into<Outgoing>) -> Result<Client, Error> {
        self.call_cap_with(method, args, CallOptions::default())
            .await
    }

    /// [`call_cap`](Self::call_cap) with options.
    pub async fn call_cap_with(
        &self,
        method: &str,
        args: impl Into<Outgoing>,
        opts: CallOptions,
    ) -> Result<Client, Error> {
        self.cap_call(Text::copy_from(method), args.into(), opts, Client::one_cap)
            .await
    }

    /// Calls a method that returns an array of caps.
    pub async fn call_caps(
        &self,
        method: &str,
        args: impl Into<Outgoing>,
    ) -> Result<Vec<Client>, Error> {
        self.call_caps_with(method, args, CallOptions::default())
            .await
    }

    /// [`call_caps`](Self::call_caps) with options.
    pub async fn call_caps_with(
        &self,
        method: &str,
        args: impl Into<Outgoing>,
        opts: CallOptions,
    ) -> Result<Vec<Client>, Error> {
        self.cap_call(
            Text::copy_from(method),
            args.into(),
            opts,
            Client::cap_array,
        )
        .await
    }

    /// Calls a method that returns a string-keyed record of caps.
    pub async fn call_cap_record(
        &self,
        method: &str,
        args: impl Into<Outgoing>,
    ) -> Result<Vec<(String, Client)>, Error> {
        self.call_cap_record_with(method, args, CallOptions::default())
            .await
    }

    /// [`call_cap_record`](Self::call_cap_record) with options.
    pub async fn call_cap_record_with(
        &self,
        method: &str,
        args: impl Into<Outgoing>,
        opts: CallOptions,
    ) -> Result<Vec<(String, Client)>, Error> {
        self.cap_call(
            Text::copy_from(method),
            args.into(),
            opts,
            Client::cap_record,
        )
        .await
    }

    /// Every cap-returning call: the call, then its value made into clients by `adopt`
    /// ([`one_cap`](Self::one_cap), [`cap_array`](Self::cap_array) or
    /// [`cap_record`](Self::cap_record), given the returned cap's definition if the
    /// client's describes it). The name is a [`Text`]: a typed client's is static, no copy.
    pub(crate) async fn cap_call<T, A: AsOutgoing + Send + 'static>(
        &self,
        method: Text,
        args: A,
        opts: CallOptions,
        adopt: Adopt<T>,
    ) -> Result<T, Error> {
        let def = self.returned_def(&method);
        let shared = &self.inner.shared;
        let payload = call(self, method, args, opts, Expect::Caps).await?;
        match payload.to_value() {
            Ok(value) => adopt(self, value, def),
            Err(e) => {
                // Every CapRef in it is still ours to release.
                for id in payload.cap_refs() {
                    shared.send(Command::Release(id));
                }
                Err(Error::bad_answer(format!("result: {e}")))
            }
        }
    }

    /// One cap.
    pub(crate) fn one_cap(&self, value: Value, def: Option<Arc<CapDef>>) -> Result<Client, Error> {
        match value {
            Value::CapRef(id) => Ok(self.adopt(id, def)),
            other => Err(self.reject(&other, "expected CapRef")),
        }
    }

    /// An array of caps.
    pub(crate) fn cap_array(
        &self,
        value: Value,
        def: Option<Arc<CapDef>>,
    ) -> Result<Vec<Client>, Error> {
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

    /// A string-keyed record of caps.
    pub(crate) fn cap_record(
        &self,
        value: Value,
        def: Option<Arc<CapDef>>,
    ) -> Result<Vec<(String, Client)>, Error> {
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
    pub fn stream(&self, method: &str, args: impl Into<Outgoing>) -> ClientStream {
        self.stream_with(method, args, CallOptions::default())
    }

    /// [`stream`](Self::stream) with options: the deadline and context go out in the call's
    /// meta (the server sees them in its [`CallContext`](crate::CallContext)).
    pub fn stream_with(
        &self,
        method: &str,
        args: impl Into<Outgoing>,
        opts: CallOptions,
    ) -> ClientStream {
        self.open_stream(Text::copy_from(method), args.into(), opts)
    }

    /// [`stream_with`](Self::stream_with) with the method's name as a [`Text`].
    pub(crate) fn open_stream<A: AsOutgoing + Send + 'static>(
        &self,
        method: Text,
        args: A,
        opts: CallOptions,
    ) -> ClientStream {
        let shared = Arc::clone(&self.inner.shared);
        let started = self
            .prepare(self.request(method, args, Expect::Value), opts)
            .map(|(req, _queuing)| {
                let id = req.id;
                let queue = StreamQueue::new(true);
                let command = Command::Stream {
                    req,
                    queue: Arc::clone(&queue),
                };
                (id, queue, shared.send(command))
            });
        match started {
            Ok((id, queue, true)) => ClientStream::new(shared, Some(id), queue),
            Ok((_, _, false)) => {
                shared.unreserve(1);
                ClientStream::failed(shared, Error::closed())
            }
            Err(error) => ClientStream::failed(shared, error),
        }
    }

    /// Releases this reference now (a `drop` frame). Clones can no longer call.
    pub fn release(self) {
        self.inner.release();
    }

    /// Calls the cap's disposal method once (errors ignored), then releases the reference.
    /// The disposal method is called as an ordinary call (PROTOCOL §7), so an in-flight
    /// limit, ours or the peer's, that refuses it means it does not run; the release goes
    /// out all the same.
    /// Disposing twice, from any clone, calls the disposal method once (PROTOCOL §13.8).
    ///
    /// The release does not wait for the disposal method's answer: the `drop` goes out
    /// right behind the call, as 0.10.0 sends it (PROTOCOL §7), so a server slow to answer
    /// the disposal method, or one that never does, still gets it. The returned future
    /// waits for the answer all the same.
    ///
    /// Dropped before its first poll, the disposal method is not called: the client it
    /// owns is dropped (which releases the reference if no clone is left). Dropped after,
    /// the disposal method was called and the release has gone out; the drop cancels the
    /// disposal call, as dropping any call does (its server sees `cancel`), and a later
    /// `dispose` from a clone does not call it again. Await it, or spawn it, for a disposal
    /// method that must run to its end.
    pub async fn dispose(self) {
        let method = self
            .def
            .as_ref()
            .and_then(|d| d.disposal().map(str::to_owned));
        let disposes = method.as_deref().filter(|_| {
            !self.inner.disposed.swap(true, Ordering::AcqRel) && !self.inner.is_released()
        });
        let Some(method) = disposes else {
            return self.inner.release();
        };
        let mut call = std::pin::pin!(self.call_value(method, Value::Undefined));
        // The call is queued at its first poll; the release queued after it.
        let answered =
            std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_ready())).await;
        self.inner.release();
        if !answered {
            let _ = call.await;
        }
    }

    /// A call or stream open of this cap, boxed once with its args (a typed client's
    /// params value lives in this allocation; see [`CallRequest`]). Its meta is set when it
    /// is queued ([`prepare`](Self::prepare)).
    fn request<A: AsOutgoing + Send + 'static>(
        &self,
        method: Text,
        args: A,
        expect: Expect,
    ) -> Box<CallRequest> {
        Box::new(CallRequest {
            id: CallId(0),
            cap_id: self.inner.id,
            method,
            parent: None,
            deadline: None,
            context: Vec::new(),
            expect,
            args,
        })
    }

    /// What every call and stream open does before it is queued: checks this reference is
    /// live, reserves an in-flight slot, takes a call id and sets the request's meta. A
    /// release of the reference waits until the returned guard is dropped, which the caller
    /// does once the call's command is queued.
    fn prepare(
        &self,
        mut req: Box<CallRequest>,
        opts: CallOptions,
    ) -> Result<(Box<CallRequest>, Queuing<'_>), Error> {
        let queuing = self.inner.enter()?;
        let shared = &self.inner.shared;
        shared.reserve_call()?;
        req.id = shared.next_call_id();
        set_meta(shared, &mut req, opts);
        Ok((req, queuing))
    }

    fn returned_def(&self, method: &str) -> Option<Arc<CapDef>> {
        self.def.as_ref()?.method(method)?.return_shape().cap()
    }

    fn adopt(&self, id: CapId, def: Option<Arc<CapDef>>) -> Client {
        Client::new(ClientRef::owned(Arc::clone(&self.inner.shared), id), def)
    }

    /// A cap-returning call got the wrong shape: release whatever caps it carried and fail
    /// with `invalid_argument` (PROTOCOL §13.4).
    fn reject(&self, value: &Value, message: &str) -> Error {
        for id in Payload::from_value(value.clone()).cap_refs() {
            self.inner.shared.send(Command::Release(id));
        }
        Error::bad_answer(message)
    }
}

/// Makes a cap-returning call's value into clients: [`Client::one_cap`],
/// [`Client::cap_array`] or [`Client::cap_record`], given the returned cap's definition.
pub(crate) type Adopt<T> = fn(&Client, Value, Option<Arc<CapDef>>) -> Result<T, Error>;

/// Arguments as a value; `invalid_argument` if they do not serialize (nothing is sent).
pub(crate) fn encode_args<A: Serialize + ?Sized>(args: &A) -> Result<Value, Error> {
    bunite_wire::to_value(args).map_err(Error::args_failed)
}

/// A result decoded into `R`; `invalid_argument` if it does not fit.
pub(crate) fn decode_result<R: DeserializeOwned>(payload: &Payload) -> Result<R, Error> {
    payload
        .deserialize()
        .map_err(|e| Error::bad_answer(format!("result: {e}")))
}

/// The handler of `shared`'s connection this thread is polling, if any: what a call or
/// bootstrap queued now names as its `parentCallId` (PROTOCOL §11).
fn parent_of(shared: &Shared) -> Option<Parent> {
    let scope = CallScope::current()?;
    (scope.connection == shared.id).then_some(Parent {
        call: scope.call_id,
        run: scope.run,
    })
}

/// The meta of a call queued now: `parentCallId` when made inside a handler of the same
/// connection, the deadline (explicit, or what remains of the handler's), the context map.
fn set_meta(shared: &Shared, req: &mut CallRequest, opts: CallOptions) {
    let scope = CallScope::current();
    req.parent = parent_of(shared);
    req.deadline = opts.deadline.or_else(|| {
        scope
            .and_then(|s| s.deadline)
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    });
    req.context = opts.context;
}

/// The caller's end of a call's (or bootstrap's) reply channel, and what to do if the
/// caller stops waiting before it takes the outcome: send `cancel`, and, for an answer that
/// carries caps, release the caps of one that arrived meanwhile (it is in the channel,
/// where nobody would adopt it; one that arrives later finds the channel closed, and the
/// connection releases its caps).
///
/// It holds the call's in-flight reservation (PROTOCOL §9) and gives it back as the
/// caller takes the outcome or stops waiting, before the caller can start another call:
/// a call counts against the limit while its caller waits for it, and no longer.
struct ReplyGuard<'a> {
    shared: &'a Shared,
    id: CallId,
    rx: ReplyRx,
    /// The answer's caps are ours to release if nobody takes it (`Expect::Caps`).
    caps: bool,
    armed: bool,
}

impl<'a> ReplyGuard<'a> {
    /// Queues `command` (call `id`'s start, whose reply goes to `rx`, and for which a
    /// reservation was taken) and arms the guard.
    #[inline]
    fn send(
        shared: &'a Shared,
        id: CallId,
        command: Command,
        rx: ReplyRx,
        caps: bool,
    ) -> Result<Self, Error> {
        if !shared.send(command) {
            shared.unreserve(1);
            return Err(Error::closed());
        }
        Ok(ReplyGuard {
            shared,
            id,
            rx,
            caps,
            armed: true,
        })
    }

    /// The outcome once it arrives; the guard is then disarmed. Outside tokio's
    /// cooperative budget (the reply slot takes none): a call's first poll always waits
    /// (its reply comes from the connection's task), so it cannot starve the runtime, and a
    /// caller that awaits many calls at once (a `FuturesUnordered`, `join_all`) would
    /// otherwise find its budget spent after 128 replies and poll every other call in
    /// flight once more for nothing (1.2 extra polls per call at 256 in flight;
    /// `docs/BENCHMARKS.md`).
    #[inline]
    fn poll_outcome(&mut self, cx: &mut Context<'_>) -> Poll<Result<Payload, Error>> {
        let outcome = ready!(self.rx.poll(cx));
        if std::mem::take(&mut self.armed) {
            self.shared.unreserve(1);
        }
        Poll::Ready(outcome.unwrap_or_else(|_| Err(Error::closed())))
    }
}

impl Drop for ReplyGuard<'_> {
    /// Commands to the connection, never a wait or a lock another task may hold (the
    /// reply slot's handshake is one atomic swap; see `connection::reply`).
    fn drop(&mut self) {
        if self.armed {
            self.abandon();
        }
    }
}

impl ReplyGuard<'_> {
    /// The caller stopped waiting before it took the outcome.
    #[cold]
    fn abandon(&mut self) {
        // The cancel is queued first: a call that reserves the slot given back here is
        // queued after it, so the session has let go of this call (one whose answer brings
        // caps stays until the answer comes, and counts until then) when it sees that one.
        self.shared.send(Command::Cancel(self.id));
        self.shared.unreserve(1);
        // Nothing can arrive once abandoned (the driver gets it back and releases its
        // caps); what arrived before is handed over here.
        let arrived = self.rx.abandon();
        if self.caps {
            if let Some(Ok(payload)) = arrived {
                for id in payload.cap_refs() {
                    self.shared.send(Command::Release(id));
                }
            }
        }
    }
}

/// The call path of every client: check the client is live, reserve an in-flight slot,
/// queue the call, wait for the outcome, cancel on drop or when the caller's token fires.
/// Deadlines are the session's (it fails the call and tells the server).
///
/// The request is boxed here, with the args in it (the one allocation of a typed client's
/// call besides its reply channel), and checked and queued at the first poll.
pub(crate) fn call<'a, A: AsOutgoing + Send + 'static>(
    client: &'a Client,
    method: Text,
    args: A,
    opts: CallOptions,
    expect: Expect,
) -> Call<'a> {
    Call(CallState::Start(Start {
        client,
        req: client.request(method, args, expect),
        opts,
    }))
}

/// A call's future: lazy like an `async fn`'s (nothing is checked or sent before the first
/// poll), but written out, so that it holds either the arguments or the wait, never both.
/// Nested `async fn`s each kept a copy of the arguments for the whole call, and a caller
/// that spawns each call, or queues it in a `FuturesUnordered`, allocates and moves the
/// whole future per call (`docs/BENCHMARKS.md` has the sizes).
pub(crate) struct Call<'a>(CallState<'a>);

enum CallState<'a> {
    Start(Start<'a>),
    Waiting(Waiting<'a>),
    /// Failed before it was queued; boxed, as rare, to keep the future small.
    Failed(Box<Error>),
    Done,
}

/// A call not yet queued: its request (the method's name in it static for a typed
/// client's methods, copied, inline when short, for a name given at run time).
struct Start<'a> {
    client: &'a Client,
    req: Box<CallRequest>,
    opts: CallOptions,
}

/// A queued call: the outcome to wait for, and what to do if the caller stops waiting.
struct Waiting<'a> {
    reply: ReplyGuard<'a>,
    /// The caller's token, if it gave one.
    cancel: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// The call's span, if a subscriber wants it: entered while the call is polled.
    span: Option<tracing::Span>,
}

impl<'a> Start<'a> {
    /// Checks, reserves and queues the call.
    fn queue(mut self) -> Result<Waiting<'a>, Error> {
        // Taken, not cloned: the request has no use for it, and a token's clone locks it.
        let cancel = self.opts.cancel.take();
        let (req, queuing) = self.client.prepare(self.req, self.opts)?;
        let (id, caps) = (req.id, req.expect == Expect::Caps);
        let shared = &self.client.inner.shared;
        // Only built if a subscriber may want it; then kept only if one does (entering and
        // leaving a disabled span on every poll is pure cost).
        let span = spans_wanted()
            .then(|| {
                tracing::info_span!(
                    "bunite.call",
                    otel.kind = "client",
                    rpc.system = "bunite",
                    rpc.method = %req.method,
                    rpc.cap_id = req.cap_id.0,
                    rpc.call_id = id.0,
                    rpc.code = tracing::field::Empty,
                )
            })
            .filter(|span| !span.is_disabled());
        let (tx, rx) = reply::channel();
        let command = Command::Call { req, reply: tx };
        let reply = ReplyGuard::send(shared, id, command, rx, caps)?;
        drop(queuing); // Queued: a release that waited for it may go.
        Ok(Waiting {
            reply,
            cancel: cancel.map(|t| Box::pin(t.cancelled_owned())),
            span,
        })
    }
}

impl Waiting<'_> {
    /// The outcome, or `None` while there is none yet. The caller's token firing first is a
    /// local `cancelled`, and leaves the guard armed: dropping it sends `cancel`.
    fn poll_outcome(&mut self, cx: &mut Context<'_>) -> Option<Result<Payload, Error>> {
        let _entered = self.span.as_ref().map(tracing::Span::enter);
        if let Poll::Ready(result) = self.reply.poll_outcome(cx) {
            if let Some(span) = &self.span {
                let code = result.as_ref().map_or_else(|e| e.code().as_str(), |_| "ok");
                span.record("rpc.code", code);
            }
            return Some(result);
        }
        if let Some(cancel) = &mut self.cancel {
            if cancel.as_mut().poll(cx).is_ready() {
                return Some(Err(Error::local(
                    LocalError::Cancelled,
                    Status::new(Code::Cancelled, "client_cancel"),
                )));
            }
        }
        None
    }
}

impl Future for Call<'_> {
    type Output = Result<Payload, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let state = &mut self.get_mut().0;
        if let CallState::Start(_) = state {
            let CallState::Start(start) = std::mem::replace(state, CallState::Done) else {
                unreachable!("matched just above");
            };
            *state = match start.queue() {
                Ok(waiting) => CallState::Waiting(waiting),
                Err(error) => CallState::Failed(Box::new(error)),
            };
        }
        let CallState::Waiting(waiting) = state else {
            return failed(state, cx);
        };
        match waiting.poll_outcome(cx) {
            Some(result) => {
                // Drops the guard: a call whose caller's token fired sends `cancel`.
                *state = CallState::Done;
                Poll::Ready(result)
            }
            None => Poll::Pending,
        }
    }
}

/// A call that failed before it was queued: its error, once [`poll_local_failure`] allows.
#[cold]
fn failed(state: &mut CallState<'_>, cx: &mut Context<'_>) -> Poll<Result<Payload, Error>> {
    if !matches!(state, CallState::Failed(_)) {
        panic!("a call's future polled after it completed");
    }
    ready!(poll_local_failure(cx));
    let CallState::Failed(error) = std::mem::replace(state, CallState::Done) else {
        unreachable!("matched just above");
    };
    Poll::Ready(Err(*error))
}

/// Takes a unit of the task's cooperative budget for an error that is ready at once: a
/// call, bootstrap or stream that failed before it was sent (a closed connection, the
/// in-flight limit), as a ready tokio resource does. A loop that retries it still yields to
/// the other tasks of its runtime, which may be the ones that would end the loop. `Pending`
/// (the task woken again later) when the budget is spent.
pub(crate) fn poll_local_failure(cx: &mut Context<'_>) -> Poll<()> {
    coop::poll_proceed(cx).map(|progress| progress.made_progress())
}

/// Bootstrapping the peer's caps (PROTOCOL §8).
impl Connection {
    /// Bootstraps the peer's cap named `def.name()` (sending `def.version()` if any).
    /// Waits for the peer's hello first.
    ///
    /// Cancel-safe, as every bootstrap is: dropped before the peer's hello, nothing was
    /// sent; after, the bootstrap is cancelled and the cap of its answer, whenever it
    /// comes, is released.
    pub async fn bootstrap(&self, def: &Arc<CapDef>) -> Result<Client, Error> {
        let id = self.bootstrap_id(def.name(), def.version()).await?;
        Ok(self.adopt(id, Some(Arc::clone(def))))
    }

    /// Bootstraps by name and optional version, without a definition.
    pub async fn bootstrap_name(&self, name: &str, version: Option<&str>) -> Result<Client, Error> {
        let id = self.bootstrap_id(name, version).await?;
        Ok(self.adopt(id, None))
    }

    /// Bootstraps several caps concurrently; if any fails, releases the ones that succeeded
    /// and fails with the first failure in the given order (PROTOCOL §8).
    ///
    /// Cancel-safe: dropped part way, the caps already answered are released and the
    /// bootstraps still waiting are cancelled (their caps released when they come).
    pub async fn bootstrap_all(&self, defs: &[Arc<CapDef>]) -> Result<Vec<Client>, Error> {
        let results = join_all(defs.iter().map(|d| self.bootstrap(d))).await;
        // Dropping the successful clients releases them.
        results.into_iter().collect()
    }

    async fn bootstrap_id(&self, name: &str, version: Option<&str>) -> Result<CapId, Error> {
        let shared = &self.shared;
        let queued = shared.reserve_call().and_then(|()| {
            let id = shared.next_call_id();
            let (reply, rx) = reply::channel();
            let command = Command::Bootstrap {
                id,
                cap: Box::new((
                    name.to_owned(),
                    version.map(str::to_owned),
                    parent_of(shared),
                )),
                reply,
            };
            ReplyGuard::send(shared, id, command, rx, true)
        });
        let mut reply = match queued {
            Ok(queued) => queued,
            Err(error) => {
                std::future::poll_fn(poll_local_failure).await;
                return Err(error);
            }
        };
        // The bootstrap's own timer, not a call deadline: the session sends a bootstrap
        // with no `meta.deadlineMs` and parks it until the peer's hello, where no call
        // deadline runs. On timeout the guard cancels the call and releases the cap of an
        // answer that came meanwhile (one that arrives later is released by the connection).
        let answer = std::future::poll_fn(|cx| reply.poll_outcome(cx));
        let outcome = match shared.settings.limits.bootstrap_timeout {
            None => answer.await,
            Some(limit) => match tokio::time::timeout(limit, answer).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    let message = format!(
                        "bootstrap of \"{name}\" not answered within {} ms",
                        limit.as_millis()
                    );
                    let status = Status::new(Code::DeadlineExceeded, message);
                    return Err(Error::local(LocalError::DeadlineExceeded, status));
                }
            },
        };
        let payload = outcome?;
        match payload.to_value() {
            Ok(Value::CapRef(id)) => Ok(id),
            _ => {
                for id in payload.cap_refs() {
                    shared.send(Command::Release(id));
                }
                Err(Error::bad_answer("bootstrap did not return a CapRef"))
            }
        }
    }

    fn adopt(&self, id: CapId, def: Option<Arc<CapDef>>) -> Client {
        Client::new(ClientRef::owned(Arc::clone(&self.shared), id), def)
    }

    /// The client of the peer's runtime (cap-id 1). Never released.
    pub fn runtime(&self) -> Client {
        Client::new(
            ClientRef::borrowed(Arc::clone(&self.shared), CapId::RUNTIME),
            None,
        )
    }

    /// A client for an arbitrary cap-id of the peer that owns no reference: dropping it
    /// sends nothing. For tests that address caps by id; ordinary code gets its clients
    /// from [`bootstrap`](Connection::bootstrap) and cap-returning methods.
    #[cfg(any(test, feature = "test-util"))]
    #[doc(hidden)]
    pub fn client_for(&self, id: CapId) -> Client {
        Client::new(ClientRef::borrowed(Arc::clone(&self.shared), id), None)
    }

    /// Whether this connection's task panicked (the tests' leak check asserts it never
    /// does: the connection would close cleanly and hide it).
    #[cfg(any(test, feature = "test-util"))]
    #[doc(hidden)]
    pub fn driver_panicked(&self) -> bool {
        self.shared.driver_panicked()
    }
}
