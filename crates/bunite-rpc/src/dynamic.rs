//! The dynamic API: define a cap's implementation at run time with closures as handlers.
//!
//! ```
//! use bunite_rpc::{dynamic::DynCap, CapDef, MethodDef, Value};
//!
//! let def = CapDef::builder("demo.Echo")
//!     .method(MethodDef::call("echo"))
//!     .build();
//! let imp = DynCap::new()
//!     .call("echo", |args: Value, _ctx| async move { Ok(args) })
//!     .build();
//! # let _ = (def, imp);
//! ```

use crate::hashing::Map;
use std::future::Future;
use std::sync::Arc;

use bunite_wire::Value;

use crate::context::CallContext;
use crate::emitter::{emitter_stream, ValueEmitter};
use crate::handler::{BoxFuture, CapImpl, Returned, ValueStream};
use crate::status::Status;
use bunite_wire::Payload;

type CallFn = Arc<dyn Fn(Value, CallContext) -> BoxFuture<Result<Returned, Status>> + Send + Sync>;
type StreamFn = Arc<dyn Fn(Value, CallContext) -> Result<ValueStream, Status> + Send + Sync>;

/// An implementation built from closures, one per method.
#[derive(Default)]
pub struct DynCap {
    calls: Map<String, CallFn>,
    streams: Map<String, StreamFn>,
}

impl std::fmt::Debug for DynCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynCap")
            .field("calls", &self.calls.keys().collect::<Vec<_>>())
            .field("streams", &self.streams.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl DynCap {
    /// An implementation with no handlers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles a call method. The closure may return a [`Value`], an
    /// [`ExportedCap`](crate::ExportedCap), a `Vec` of them, or any `Into<Returned>`.
    pub fn call<F, Fut, R>(mut self, method: impl Into<String>, f: F) -> Self
    where
        F: Fn(Value, CallContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Status>> + Send + 'static,
        R: Into<Returned>,
    {
        let f: CallFn = Arc::new(move |args, ctx| {
            let fut = f(args, ctx);
            Box::pin(async move { fut.await.map(Into::into) })
        });
        self.calls.insert(method.into(), f);
        self
    }

    /// Handles a stream method: the closure returns the stream of values to send.
    pub fn stream<F>(mut self, method: impl Into<String>, f: F) -> Self
    where
        F: Fn(Value, CallContext) -> Result<ValueStream, Status> + Send + Sync + 'static,
    {
        self.streams.insert(method.into(), Arc::new(f));
        self
    }

    /// Handles a stream method in the emitter style: the closure gets an
    /// [`ValueEmitter`](crate::emitter::ValueEmitter) and pushes values into it.
    pub fn stream_emitter<F, Fut>(self, method: impl Into<String>, f: F) -> Self
    where
        F: Fn(Value, CallContext, ValueEmitter) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.stream(method, move |args, ctx| {
            let f = Arc::clone(&f);
            Ok(emitter_stream(move |em| f(args, ctx, em)))
        })
    }

    /// Finishes the implementation.
    pub fn build(self) -> Arc<dyn CapImpl> {
        Arc::new(self)
    }
}

impl CapImpl for DynCap {
    fn has_handler(&self, method: &str) -> bool {
        self.calls.contains_key(method) || self.streams.contains_key(method)
    }

    fn call(
        &self,
        method: &str,
        args: Payload,
        ctx: CallContext,
    ) -> BoxFuture<Result<Returned, Status>> {
        match self.calls.get(method) {
            Some(f) => match args_value(args) {
                Ok(args) => f(args, ctx),
                Err(status) => Box::pin(async move { Err(status) }),
            },
            None => {
                let status = Status::not_found(format!("method \"{method}\" has no handler"));
                Box::pin(async move { Err(status) })
            }
        }
    }

    fn stream(&self, method: &str, args: Payload, ctx: CallContext) -> Result<ValueStream, Status> {
        match self.streams.get(method) {
            Some(f) => f(args_value(args)?, ctx),
            None => Err(Status::not_found(format!(
                "method \"{method}\" has no handler"
            ))),
        }
    }
}

/// The args as a value; `invalid_argument` if they cannot be decoded within the budget.
fn args_value(args: Payload) -> Result<Value, Status> {
    args.into_value()
        .map_err(|e| Status::invalid_argument(format!("params: {e}")))
}
