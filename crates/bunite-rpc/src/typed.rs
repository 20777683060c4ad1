//! The typed API: caps declared as Rust traits with [`#[cap]`](crate::cap), and the runtime
//! pieces the generated code stands on.
//!
//! For `#[cap(name = "demo.Counter")] trait Counter`, the macro generates the marker
//! `CounterCap` (a [`Cap`]: the definition), the typed client `CounterClient` (a
//! [`CapClient`] over a [`Handle`]) and the server `CounterServer<T>` (a
//! [`CapImpl`]). This module holds what those items share:
//!
//! - [`Cap`], [`CapClient`] and [`Serve`]: the traits linking the three generated items.
//! - [`Implementation`]: "`T` implements the trait of cap `C`", so the typed entry points
//!   take one type argument: `conn.serve_cap::<CounterCap>(imp)`.
//! - [`Exported`]: a cap a handler returns, typed by its marker.
//! - [`Handle`]: what every typed client wraps: a dynamic [`Client`] and per-call
//!   [`CallOptions`].
//! - [`Emitter`]: the typed emitter of emitter-style stream handlers.
//! - [`Schema`] and [`SchemaImplementation`]: tuples of caps served and bootstrapped
//!   together (`serve_schema`, `bootstrap_schema`).
//! - The typed methods of [`Connection`]: `serve_cap`, `serve_cap_with`, `replace_cap`,
//!   `unserve_cap`, `bootstrap_cap`, `serve_schema`, `bootstrap_schema`.
//!
//! The crate docs show a cap with a sub-cap and a stream. Here, an emitter-style stream and
//! a schema of two caps, served atomically and bootstrapped all-or-nothing:
//!
//! ```
//! use bunite_rpc::typed::Emitter;
//! use bunite_rpc::{cap, transport::memory, Connection, IfExists, Status};
//! use futures::StreamExt;
//!
//! #[cap(name = "demo.Clock")]
//! trait Clock {
//!     /// `n` ticks, sent as the client grants credit.
//!     #[cap(stream)]
//!     async fn ticks(&self, n: u32, out: Emitter<u32>) -> Result<(), Status>;
//! }
//!
//! #[cap(name = "demo.Echo")]
//! trait Echo {
//!     async fn echo(&self, text: String) -> Result<String, Status>;
//! }
//!
//! struct MyClock;
//!
//! impl Clock for MyClock {
//!     async fn ticks(&self, n: u32, mut out: Emitter<u32>) -> Result<(), Status> {
//!         for i in 0..n {
//!             out.send(i).await?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! struct MyEcho;
//!
//! impl Echo for MyEcho {
//!     async fn echo(&self, text: String) -> Result<String, Status> {
//!         Ok(text)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (a, b) = memory::pair();
//! let (server, client) = (Connection::new(a), Connection::new(b));
//! let served = server
//!     .serve_schema::<(ClockCap, EchoCap)>((MyClock, MyEcho), IfExists::Throw)
//!     .await?;
//! let (clock, echo) = client.bootstrap_schema::<(ClockCap, EchoCap)>().await?;
//! let ticks: Vec<u32> = clock.ticks(3).map(Result::unwrap).collect().await;
//! assert_eq!(ticks, [0, 1, 2]);
//! assert_eq!(echo.echo("hi".into()).await?, "hi");
//! drop(served); // unserves both
//! # Ok(())
//! # }
//! ```
//!
//! Marker traits rather than generic wrappers, because of Rust's orphan rules: generated
//! code in the user's crate may write `impl<T: Counter> Serve<T> for CounterCap` (its own
//! marker comes first) but not `impl<T: Counter> Implementation<CounterCap> for T`; the
//! blanket impl of [`Implementation`] here bridges the two.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bunite_wire::{AsOutgoing, Text};
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::{call, decode_result, CallOptions, Client};
use crate::client_stream::TypedStream;
use crate::connection::{Connection, ServeHandle};
use crate::error::Error;
use crate::handler::{CapImpl, ExportedCap};
use crate::schema::{CapDef, IfExists};
use crate::session::Expect;
use crate::status::Status;

pub use futures::Stream;

/// A cap declared with [`#[cap]`](crate::cap), named by its generated marker type
/// (`CounterCap` for `trait Counter`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a cap marker",
    label = "not a cap marker",
    note = "`#[bunite_rpc::cap]` on `trait Child` generates the marker `ChildCap`: write \
            `Exported<ChildCap>`, `bootstrap_cap::<ChildCap>()`"
)]
pub trait Cap: Sized + Send + Sync + 'static {
    /// The typed client (`CounterClient`).
    type Client: CapClient<Cap = Self>;

    /// The cap's definition, built once and shared.
    fn definition() -> Arc<CapDef>;

    /// Wraps a dynamic client of this cap (it takes this cap's definition).
    fn client(client: Client) -> Self::Client {
        Self::Client::from_handle(Handle::new(client, Self::definition()))
    }
}

/// A generated typed client: a [`Handle`] with one method per cap method.
pub trait CapClient: Clone + Send + Sync + fmt::Debug + 'static {
    /// The cap this is a client of.
    type Cap: Cap<Client = Self>;

    /// Wraps a handle.
    fn from_handle(handle: Handle) -> Self;

    /// The handle.
    fn handle(&self) -> &Handle;
}

/// Serving `T` as cap `Self`: generated as `impl<T: Counter> Serve<T> for CounterCap`.
pub trait Serve<T>: Cap {
    /// The server dispatch of `imp`.
    fn server(imp: T) -> Arc<dyn CapImpl>;
}

/// `Self` implements the trait of cap `C`: what the typed entry points accept.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not implement the cap trait of `{C}`",
    label = "expected an implementation of the trait behind `{C}`",
    note = "for `CounterCap`, implement `trait Counter` (the trait `#[bunite_rpc::cap]` was put on)"
)]
pub trait Implementation<C: Cap>: Sized {
    /// The server dispatch of `self`.
    fn into_server(self) -> Arc<dyn CapImpl>;
}

impl<C: Serve<T>, T> Implementation<C> for T {
    fn into_server(self) -> Arc<dyn CapImpl> {
        C::server(self)
    }
}

/// The result of a cap method: `Result<T, E>`. Lets a trait spell its results through an
/// alias (`type R<T> = Result<T, Status>`), which the macro cannot see through: the client
/// method then returns `Result<<R<T> as MethodResult>::Ok, Status>`, that is `Result<T, Status>`.
#[diagnostic::on_unimplemented(
    message = "a cap method returns `Result<T, Status>`, not `{Self}`",
    label = "expected `Result<T, Status>` (the error may be any `E: Into<Status>`)",
    note = "for no value write `Result<(), Status>`"
)]
pub trait MethodResult {
    /// `T`.
    type Ok;
    /// `E`.
    type Err;
}

impl<T, E> MethodResult for Result<T, E> {
    type Ok = T;
    type Err = E;
}

/// A cap exported by a handler, to return from a cap-returning method: `Exported<C>`,
/// `Vec<Exported<C>>`, or a string-keyed map of them. Made by `CounterCap::export(imp)` or
/// [`Exported::new`].
///
/// Its cap-id is allocated when the result is sent; if the call fails or is cancelled first,
/// nothing is allocated and the implementation is dropped (PROTOCOL §9).
pub struct Exported<C: Cap> {
    cap: ExportedCap,
    _cap: PhantomData<fn() -> C>,
}

impl<C: Cap> Exported<C> {
    /// Exports `imp` as cap `C`.
    pub fn new(imp: impl Implementation<C>) -> Self {
        Exported {
            cap: ExportedCap::new(C::definition(), imp.into_server()),
            _cap: PhantomData,
        }
    }

    /// The untyped export.
    pub fn cap(&self) -> &ExportedCap {
        &self.cap
    }

    /// Unwraps the untyped export.
    pub fn into_inner(self) -> ExportedCap {
        self.cap
    }
}

/// For the dynamic API: a typed export where an [`ExportedCap`] is expected.
impl<C: Cap> From<Exported<C>> for ExportedCap {
    fn from(e: Exported<C>) -> ExportedCap {
        e.cap
    }
}

/// For the dynamic API: a [`DynCap`](crate::dynamic::DynCap) handler may return a typed
/// export.
impl<C: Cap> From<Exported<C>> for crate::handler::Returned {
    fn from(e: Exported<C>) -> Self {
        crate::handler::Returned::Cap(e.cap)
    }
}

impl<C: Cap> fmt::Debug for Exported<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Exported").field(&self.cap).finish()
    }
}

/// What every generated client wraps: a dynamic [`Client`] and the [`CallOptions`] its
/// calls use. Its methods are the typed call paths the generated methods delegate to.
#[derive(Debug, Clone)]
pub struct Handle {
    client: Client,
    /// Shared by the clones made with the same options; `None` for the defaults, so a
    /// handle (held per sub-cap) stays three words.
    options: Option<Arc<CallOptions>>,
}

/// The options of a handle made without any.
static DEFAULT_OPTIONS: CallOptions = CallOptions {
    deadline: None,
    context: Vec::new(),
    cancel: None,
};

impl Handle {
    /// Wraps `client`, giving it `def` as its definition.
    pub fn new(client: Client, def: Arc<CapDef>) -> Handle {
        Handle {
            client: client.with_def(def),
            options: None,
        }
    }

    /// The dynamic client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Unwraps the dynamic client.
    pub fn into_client(self) -> Client {
        self.client
    }

    /// The options every call through this handle uses.
    pub fn options(&self) -> &CallOptions {
        self.options.as_deref().unwrap_or(&DEFAULT_OPTIONS)
    }

    /// The options for one call.
    fn call_options(&self) -> CallOptions {
        match &self.options {
            Some(options) => CallOptions::clone(options),
            None => CallOptions::default(),
        }
    }

    /// A clone with other options.
    pub fn with_options(&self, options: CallOptions) -> Handle {
        Handle {
            client: self.client.clone(),
            options: Some(Arc::new(options)),
        }
    }

    /// A clone whose calls have the relative deadline `deadline`.
    pub fn with_deadline(&self, deadline: Duration) -> Handle {
        self.with_options(CallOptions {
            deadline: Some(deadline),
            ..self.options().clone()
        })
    }

    /// A clone whose calls carry `key = value` in their context map (replacing an earlier
    /// value of `key`).
    pub fn with_context(&self, key: impl Into<String>, value: impl Into<String>) -> Handle {
        let (key, value) = (key.into(), value.into());
        let mut options = self.options().clone();
        options.context.retain(|(k, _)| *k != key);
        options.context.push((key, value));
        self.with_options(options)
    }

    /// Calls `method` and decodes its value straight into `R`.
    ///
    /// The returned future is lazy like an `async fn`'s: nothing is checked or sent until it
    /// is first polled. (Not an `async fn` itself, so that the call's arguments are kept
    /// once, by the call's own future, not once per layer.)
    ///
    /// `args` is an [`Outgoing`](crate::Outgoing), or what a generated client passes: its
    /// params value itself, which the call's request keeps in its own allocation (no box of
    /// its own) until the frame is written.
    ///
    /// Method names are `'static`, as the generated clients' are: the call frame borrows
    /// the name instead of copying it (a name longer than 22 bytes took an allocation per
    /// call). [`Client`] takes names made at run time.
    pub fn call<'a, R: DeserializeOwned + 'a>(
        &'a self,
        method: &'static str,
        args: impl AsOutgoing + Send + 'static,
    ) -> impl Future<Output = Result<R, Error>> + 'a {
        call(
            &self.client,
            Text::from_static(method),
            args,
            self.call_options(),
            Expect::Value,
        )
        .map(|payload| decode_result(&payload?))
    }

    /// Calls a method returning one cap `C`.
    pub async fn call_cap<C: Cap>(
        &self,
        method: &'static str,
        args: impl AsOutgoing + Send + 'static,
    ) -> Result<C::Client, Error> {
        let client = self
            .client
            .cap_call(
                Text::from_static(method),
                args,
                self.call_options(),
                Client::one_cap,
            )
            .await?;
        Ok(C::client(client))
    }

    /// Calls a method returning an array of caps `C`, collected into `V` (a `Vec`).
    pub async fn call_caps<C: Cap, V: FromIterator<C::Client>>(
        &self,
        method: &'static str,
        args: impl AsOutgoing + Send + 'static,
    ) -> Result<V, Error> {
        let clients = self
            .client
            .cap_call(
                Text::from_static(method),
                args,
                self.call_options(),
                Client::cap_array,
            )
            .await?;
        Ok(clients.into_iter().map(C::client).collect())
    }

    /// Calls a method returning a record of caps `C`, collected into `M` (a `BTreeMap`, a
    /// `HashMap`, or a `Vec` of pairs in the server's order).
    pub async fn call_cap_record<C: Cap, M: FromIterator<(String, C::Client)>>(
        &self,
        method: &'static str,
        args: impl AsOutgoing + Send + 'static,
    ) -> Result<M, Error> {
        let clients = self
            .client
            .cap_call(
                Text::from_static(method),
                args,
                self.call_options(),
                Client::cap_record,
            )
            .await?;
        Ok(clients
            .into_iter()
            .map(|(k, c)| (k, C::client(c)))
            .collect())
    }

    /// Opens a stream method.
    pub fn stream<T: DeserializeOwned>(
        &self,
        method: &'static str,
        args: impl AsOutgoing + Send + 'static,
    ) -> TypedStream<T> {
        self.client
            .open_stream(Text::from_static(method), args, self.call_options())
            .typed()
    }

    /// Releases the reference now.
    pub fn release(self) {
        self.client.release();
    }

    /// Calls the disposal method once (errors ignored), then releases the reference.
    pub async fn dispose(self) {
        self.client.dispose().await;
    }
}

/// Where an emitter-style stream handler sends its values: `async fn watch(&self, out:
/// Emitter<Tick>) -> Result<(), Status>`.
///
/// [`send`](Emitter::send) completes once the stream takes the value, which it does only
/// while the client has granted credit; it fails `cancelled` once the client has gone.
pub struct Emitter<T> {
    inner: crate::emitter::ValueEmitter,
    _item: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for Emitter<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Emitter").field(&self.inner).finish()
    }
}

impl<T: Serialize + Send + 'static> Emitter<T> {
    pub(crate) fn new(inner: crate::emitter::ValueEmitter) -> Self {
        Emitter {
            inner,
            _item: PhantomData,
        }
    }

    /// Sends one value; waits until the stream takes it. The value is serialized straight
    /// into its frame when it is sent.
    ///
    /// Dropped after its first poll, the value may have been handed over already and
    /// still goes out (see [`ValueEmitter::send_outgoing`](crate::emitter::ValueEmitter::send_outgoing)).
    pub async fn send(&mut self, value: T) -> Result<(), Status> {
        self.inner
            .send_outgoing(bunite_wire::Outgoing::typed(value))
            .await
    }
}

/// A group of caps served and bootstrapped together: a tuple of markers, `(CounterCap,
/// EchoCap)` (up to 8; a single cap is `(CounterCap,)`).
pub trait Schema: 'static {
    /// The typed clients, a tuple in the same order.
    type Clients;

    /// The definitions, in order.
    fn definitions() -> Vec<Arc<CapDef>>;

    /// Wraps bootstrapped clients, one per definition in order.
    fn clients(clients: Vec<Client>) -> Result<Self::Clients, Error>;
}

/// Implementations of every cap of schema `S`: a tuple in the same order.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not implement the caps of schema `{S}`",
    note = "give a tuple of implementations, one per cap of the schema, in the same order"
)]
pub trait SchemaImplementation<S: Schema> {
    /// One (definition, server) per cap, in order.
    fn into_servers(self) -> Vec<(Arc<CapDef>, Arc<dyn CapImpl>)>;
}

macro_rules! schema_tuple {
    ($($C:ident $T:ident $v:ident),+) => {
        impl<$($C: Cap),+> Schema for ($($C,)+) {
            type Clients = ($($C::Client,)+);

            fn definitions() -> Vec<Arc<CapDef>> {
                vec![$($C::definition()),+]
            }

            fn clients(clients: Vec<Client>) -> Result<Self::Clients, Error> {
                let mut clients = clients.into_iter();
                $(
                    let $v = $C::client(clients.next().ok_or_else(|| {
                        Error::bad_answer("bootstrap returned fewer clients than the schema has")
                    })?);
                )+
                Ok(($($v,)+))
            }
        }

        impl<$($C: Cap, $T: Implementation<$C>),+> SchemaImplementation<($($C,)+)>
            for ($($T,)+)
        {
            fn into_servers(self) -> Vec<(Arc<CapDef>, Arc<dyn CapImpl>)> {
                let ($($v,)+) = self;
                vec![$(($C::definition(), $v.into_server())),+]
            }
        }
    };
}

schema_tuple!(A TA a);
schema_tuple!(A TA a, B TB b);
schema_tuple!(A TA a, B TB b, C TC c);
schema_tuple!(A TA a, B TB b, C TC c, D TD d);
schema_tuple!(A TA a, B TB b, C TC c, D TD d, E TE e);
schema_tuple!(A TA a, B TB b, C TC c, D TD d, E TE e, F TF f);
schema_tuple!(A TA a, B TB b, C TC c, D TD d, E TE e, F TF f, G TG g);
schema_tuple!(A TA a, B TB b, C TC c, D TD d, E TE e, F TF f, G TG g, H TH h);

/// The typed API of a connection.
impl crate::ConnectionBuilder {
    /// Serves `imp` as cap `C` from the start, before the connection reads its first frame
    /// (see [`ConnectionBuilder::serve`](crate::ConnectionBuilder::serve)).
    pub fn serve_cap<C: Cap>(self, imp: impl Implementation<C>) -> Self {
        self.serve(C::definition(), imp.into_server())
    }
}

impl Connection {
    /// Serves `imp` as cap `C` (`conn.serve_cap::<CounterCap>(imp)`); fails if the name is
    /// taken or reserved. Dropping the handle unserves it.
    pub async fn serve_cap<C: Cap>(
        &self,
        imp: impl Implementation<C>,
    ) -> Result<ServeHandle, Status> {
        self.serve_cap_with::<C>(imp, IfExists::Throw).await
    }

    /// Serves `imp` as cap `C` with an explicit collision rule (PROTOCOL §8).
    pub async fn serve_cap_with<C: Cap>(
        &self,
        imp: impl Implementation<C>,
        if_exists: IfExists,
    ) -> Result<ServeHandle, Status> {
        self.serve_with(C::definition(), imp.into_server(), if_exists)
            .await
    }

    /// Switches the served cap `C` to `imp`, live instances included (PROTOCOL §8).
    pub async fn replace_cap<C: Cap>(&self, imp: impl Implementation<C>) -> Result<(), Status> {
        self.replace(C::definition(), imp.into_server()).await
    }

    /// Unserves cap `C`: disposes and revokes its live instance. A no-op if not served.
    pub async fn unserve_cap<C: Cap>(&self) {
        self.unserve(C::definition().name()).await;
    }

    /// Bootstraps the peer's cap `C` (`conn.bootstrap_cap::<CounterCap>().await`).
    pub async fn bootstrap_cap<C: Cap>(&self) -> Result<C::Client, Error> {
        self.bootstrap(&C::definition()).await.map(C::client)
    }

    /// Serves every cap of schema `S` atomically: all checks pass before anything is
    /// registered (PROTOCOL §8). `impls` is a tuple in the schema's order.
    pub async fn serve_schema<S: Schema>(
        &self,
        impls: impl SchemaImplementation<S>,
        if_exists: IfExists,
    ) -> Result<ServeHandle, Status> {
        self.serve_all(impls.into_servers(), if_exists).await
    }

    /// Bootstraps every cap of schema `S` concurrently; if any fails, releases the others and
    /// fails with the first failure in schema order (PROTOCOL §8).
    pub async fn bootstrap_schema<S: Schema>(&self) -> Result<S::Clients, Error> {
        let clients = self.bootstrap_all(&S::definitions()).await?;
        S::clients(clients)
    }
}
