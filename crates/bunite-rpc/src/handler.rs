//! What a served cap is to the runtime: an object-safe [`CapImpl`] that runs methods by name,
//! and what its handlers return ([`Returned`], [`ExportedCap`]).
//!
//! The typed macro API generates a `CapImpl` from a trait implementation; the dynamic API
//! ([`crate::dynamic::DynCap`]) builds one from closures.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bunite_wire::{Outgoing, Value};
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::context::CallContext;
use crate::schema::CapDef;
use crate::status::Status;
use bunite_wire::Payload;

/// A boxed, sendable future: what object-safe handlers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A boxed stream of values: what stream handlers produce.
pub type ValueStream = Pin<Box<dyn Stream<Item = Result<Value, Status>> + Send + 'static>>;

/// A boxed stream of values to send, typed ones serialized straight into their frames:
/// what [`CapImpl::open_stream`] produces.
pub type OutgoingStream = Pin<Box<dyn Stream<Item = Result<Outgoing, Status>> + Send + 'static>>;

/// The server side of a cap: runs its methods by wire name.
///
/// The runtime checks the method against the cap's [`CapDef`] before calling in, so an
/// implementation only sees declared methods of the right kind.
pub trait CapImpl: Send + Sync + 'static {
    /// Whether a handler exists for a declared method. A declared method without one fails
    /// `not_found` `method "<m>" has no handler` (PROTOCOL §9).
    fn has_handler(&self, method: &str) -> bool {
        let _ = method;
        true
    }

    /// Runs a call method. `args` is what the peer sent, not yet decoded: decode it into
    /// the method's params type ([`Payload::deserialize`]) or a [`Value`].
    ///
    /// `args` is a slice of the message it came in, so keeping it keeps the whole message
    /// (and the record table it is read with) alive, outside any limit: a handler that
    /// runs for long should decode it first and drop it, as `#[cap]` and
    /// [`DynCap`](crate::dynamic::DynCap) handlers do, or keep it
    /// [unpinned](Payload::unpin).
    fn call(
        &self,
        method: &str,
        args: Payload,
        ctx: CallContext,
    ) -> BoxFuture<Result<Returned, Status>>;

    /// Opens a stream method.
    fn stream(&self, method: &str, args: Payload, ctx: CallContext) -> Result<ValueStream, Status> {
        let _ = (args, ctx);
        Err(Status::not_found(format!(
            "method \"{method}\" has no handler"
        )))
    }

    /// Opens a stream method whose values may be typed, each serialized straight into its
    /// frame when it is sent ([`Outgoing`]); this is what the runtime calls. The default
    /// sends the values of [`CapImpl::stream`]; `#[cap]` implements both.
    fn open_stream(
        &self,
        method: &str,
        args: Payload,
        ctx: CallContext,
    ) -> Result<OutgoingStream, Status> {
        let values = self.stream(method, args, ctx)?;
        Ok(Box::pin(values.map(|v| v.map(Outgoing::value))))
    }
}

/// The values of an [`OutgoingStream`] as a [`ValueStream`], typed ones serialized; one that
/// does not serialize is an `internal` `result: <error>` item.
pub(crate) fn values_of(stream: OutgoingStream) -> ValueStream {
    Box::pin(
        stream
            .map(|item| item.and_then(|v| v.into_value().map_err(|e| Status::unserializable(&e)))),
    )
}

/// What a call handler returns: a plain value, or caps it exported through its
/// [`CallContext`] in the shape its method declares (PROTOCOL §9).
#[derive(Debug)]
pub enum Returned {
    /// A plain value (`Undefined` for void).
    Value(Value),
    /// A value to send, a typed one serialized straight into the result frame
    /// ([`Returned::typed`]); what `#[cap]` methods return. A value that does not serialize
    /// fails the call `internal` with `result: <error>`.
    Typed(Outgoing),
    /// One cap.
    Cap(ExportedCap),
    /// An array of caps.
    CapArray(Vec<ExportedCap>),
    /// A string-keyed record of caps.
    CapRecord(Vec<(String, ExportedCap)>),
}

impl Returned {
    /// A typed value, serialized when the result frame is written.
    pub fn typed<T: Serialize + Send + 'static>(value: T) -> Returned {
        Returned::Typed(Outgoing::typed(value))
    }
}

impl From<Value> for Returned {
    fn from(v: Value) -> Self {
        Returned::Value(v)
    }
}

impl From<ExportedCap> for Returned {
    fn from(c: ExportedCap) -> Self {
        Returned::Cap(c)
    }
}

impl From<Vec<ExportedCap>> for Returned {
    fn from(c: Vec<ExportedCap>) -> Self {
        Returned::CapArray(c)
    }
}

/// A cap a handler exported to return to its caller: a definition and an implementation.
///
/// The runtime allocates its cap-id (refcount 1) when the result is sent. If the call fails,
/// is cancelled, or the result cannot be sent, nothing is allocated, so no cap can leak.
#[derive(Clone)]
pub struct ExportedCap {
    pub(crate) def: Arc<CapDef>,
    pub(crate) imp: Arc<dyn CapImpl>,
}

impl ExportedCap {
    /// Pairs a definition with its implementation.
    pub fn new(def: Arc<CapDef>, imp: Arc<dyn CapImpl>) -> Self {
        ExportedCap { def, imp }
    }

    /// The definition.
    pub fn def(&self) -> &Arc<CapDef> {
        &self.def
    }
}

impl fmt::Debug for ExportedCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportedCap")
            .field("cap", &self.def.name())
            .finish_non_exhaustive()
    }
}
