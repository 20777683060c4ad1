//! bunite-rpc: the bunite capability RPC protocol in Rust, wire-compatible with the
//! bunite-core 0.10 TypeScript peer (`../shared/spec/PROTOCOL.md`).
//!
//! Two peers expose **capabilities** to each other over one connection: caps are
//! bootstrapped by name and version from a registry guarded by a policy, methods are unary
//! calls (which may return further caps) or server streams, caps are reference-counted
//! across the wire, and every connection enforces limits and reports events.
//!
//! # Typed API
//!
//! [`#[cap]`](cap) on a trait declares a cap: the trait is what a server implements (with
//! plain `async fn`s), and the macro generates the cap's definition and a typed client.
//! Here a folder cap returns note caps (sub-caps, with a disposal method) and streams its
//! titles:
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use bunite_rpc::typed::Stream;
//! use bunite_rpc::{cap, transport::memory, Code, Connection, Exported, Status};
//! use futures::StreamExt;
//!
//! /// A folder of notes.
//! #[cap(name = "demo.Folder", version = "1")]
//! pub trait Folder {
//!     /// How many notes it holds.
//!     #[cap(idempotent)]
//!     async fn count(&self) -> Result<u64, Status>;
//!
//!     /// Opens a note: returns a new cap.
//!     async fn open(&self, title: String) -> Result<Exported<NoteCap>, Status>;
//!
//!     /// The titles, one by one.
//!     #[cap(stream)]
//!     fn titles(&self) -> impl Stream<Item = Result<String, Status>> + Send + 'static;
//! }
//!
//! /// One open note.
//! #[cap(name = "demo.Note")]
//! pub trait Note {
//!     /// Its text.
//!     async fn read(&self) -> Result<String, Status>;
//!
//!     /// Runs once when the client disposes of the note.
//!     #[cap(dispose)]
//!     async fn close(&self) -> Result<(), Status>;
//! }
//!
//! // The server side: implement the traits.
//! struct MyFolder {
//!     titles: Vec<String>,
//!     closed: Arc<AtomicU64>,
//! }
//!
//! impl Folder for MyFolder {
//!     async fn count(&self) -> Result<u64, Status> {
//!         Ok(self.titles.len() as u64)
//!     }
//!
//!     async fn open(&self, title: String) -> Result<Exported<NoteCap>, Status> {
//!         if !self.titles.contains(&title) {
//!             return Err(Status::not_found(format!("no note {title:?}")));
//!         }
//!         Ok(NoteCap::export(MyNote { title, closed: self.closed.clone() }))
//!     }
//!
//!     fn titles(&self) -> impl Stream<Item = Result<String, Status>> + Send + 'static {
//!         futures::stream::iter(self.titles.clone().into_iter().map(Ok))
//!     }
//! }
//!
//! struct MyNote {
//!     title: String,
//!     closed: Arc<AtomicU64>,
//! }
//!
//! impl Note for MyNote {
//!     async fn read(&self) -> Result<String, Status> {
//!         Ok(format!("the text of {}", self.title))
//!     }
//!
//!     async fn close(&self) -> Result<(), Status> {
//!         self.closed.fetch_add(1, Ordering::SeqCst);
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (a, b) = memory::pair();
//! let (server, client) = (Connection::new(a), Connection::new(b));
//!
//! // Serve a folder; bootstrap it from the other peer.
//! let closed = Arc::new(AtomicU64::new(0));
//! let titles = vec!["todo".to_owned(), "ideas".to_owned()];
//! FolderCap::serve(&server, MyFolder { titles, closed: closed.clone() }).await?.detach();
//! let folder: FolderClient = FolderCap::bootstrap(&client).await?;
//!
//! // Calls, with per-call options when needed.
//! assert_eq!(folder.count().await?, 2);
//! let quick = folder.with_deadline(Duration::from_secs(1));
//! assert_eq!(quick.count().await?, 2);
//!
//! // A stream.
//! let titles: Vec<String> = folder.titles().map(Result::unwrap).collect().await;
//! assert_eq!(titles, ["todo", "ideas"]);
//!
//! // A sub-cap, its errors, and disposal.
//! let note: NoteClient = folder.open("todo".into()).await?;
//! assert_eq!(note.read().await?, "the text of todo");
//! let missing = folder.open("nope".into()).await.unwrap_err();
//! assert_eq!(missing.code(), Code::NotFound);
//! note.dispose().await; // runs `close` once, then releases the cap
//! assert_eq!(closed.load(Ordering::SeqCst), 1);
//! # Ok(())
//! # }
//! ```
//!
//! The [`typed`] module documents the rest: schemas of several caps served and bootstrapped
//! together, emitter-style streams, the connection's typed methods.
//!
//! # Dynamic API
//!
//! The same protocol without a trait: definitions built at run time, handlers as closures,
//! calls by method name with any serde value.
//!
//! ```
//! use bunite_rpc::{dynamic::DynCap, transport::memory, CapDef, Connection, MethodDef, Value};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let def = CapDef::builder("demo.Greeter").method(MethodDef::call("greet")).build();
//! let (a, b) = memory::pair();
//! let server = Connection::new(a);
//! let client = Connection::new(b);
//!
//! let imp = DynCap::new().call("greet", |args: Value, _ctx| async move {
//!     let name: String = bunite_rpc::from_value(args)?;
//!     Ok(Value::from(format!("hello, {name}")))
//! });
//! server.serve(def.clone(), imp.build()).await?.detach();
//!
//! let greeter = client.bootstrap(&def).await?;
//! let reply: String = greeter.call("greet", "ada").await?;
//! assert_eq!(reply, "hello, ada");
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! | feature | default | what |
//! | --- | --- | --- |
//! | `byte-stream` | yes | [`transport::byte_stream`]: length-prefixed messages over TCP (with a bounded listener), Unix sockets, a child's stdio, our own stdio |
//! | `ws` | yes | [`transport::ws`]: WebSocket server ([`WsListener`](transport::ws::WsListener)) and client ([`WsConnector`](transport::ws::WsConnector)), with pings |
//! | `sealed` | yes | [`transport::sealed`]: the AES-256-GCM pipe around any transport |
//! | `tls` | no | `transport::tls`: `wss://` and `tls://` with rustls (no OpenSSL); TLS for both listeners. Turns on `ws` and `byte-stream` |
//! | `axum` | no | `transport::axum`: bunite on a route of an existing axum `Router`. Turns on `ws` |
//! | `typescript` | no | `typescript::Bindings`: TypeScript definitions of `#[cap]` traits (types through ts-rs) for the web client in `js/` |
//! | `stream` | no | the former name of `byte-stream`, kept so code written for it still builds |
//!
//! Items behind a feature carry a badge saying so on docs.rs.
//!
//! # Tracing
//!
//! Each connection has a `bunite.connection` span (`connection.id`, `transport`, `peer`:
//! see [`Transport::info`](transport::Transport::info)); each call a `bunite.call` span,
//! `otel.kind` `"client"` (in the caller's span) or `"server"` (under the connection's),
//! with `rpc.system = "bunite"`, `rpc.service` (server side), `rpc.method`, `rpc.call_id`
//! and `rpc.code` (`"ok"` or the status code) once it ends, following tonic and tarpc. Until
//! a subscriber is installed (globally or with `tracing::subscriber::with_default`) the
//! spans are not built, so they cost a branch each even where a dependency turns on
//! tracing's `log` feature (they are not handed to the `log` crate); with a subscriber that
//! does not want them, a branch more. A `tracing-subscriber` fmt layer
//! with `FmtSpan::CLOSE` prints one line per call as it ends, with its duration as
//! `time.busy` + `time.idle`; `bunite-rpc --log` (or `RUST_LOG=info`) shows it:
//!
//! ```text
//! INFO bunite.call{otel.kind="client" rpc.system="bunite" rpc.method=makeChild rpc.cap_id=2 rpc.call_id=2 rpc.code="ok"}: bunite_rpc::client: close time.busy=22.2µs time.idle=1.01ms
//! INFO bunite.call{otel.kind="client" rpc.system="bunite" rpc.method=name rpc.cap_id=3 rpc.call_id=3 rpc.code="ok"}: bunite_rpc::client: close time.busy=22.7µs time.idle=903µs
//! INFO bunite.connection{connection.id=1 transport="wss" peer="127.0.0.1:42053"}: bunite_rpc::connection: close time.busy=3.67ms time.idle=1.76ms
//! ```
//!
//! (`README.md` shows both ends of the demo.) To print them from a program of your own, install
//! such a subscriber at its start, as `bunite-rpc --log` does (with `tracing-subscriber` 0.3,
//! features `fmt` and `env-filter`, among its dependencies):
//!
//! ```
//! use tracing_subscriber::fmt::format::FmtSpan;
//! use tracing_subscriber::EnvFilter;
//!
//! // `RUST_LOG` if set (e.g. `RUST_LOG=bunite_rpc=info`), else every `info` span and event.
//! let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
//! tracing_subscriber::fmt()
//!     .with_env_filter(filter)
//!     .with_span_events(FmtSpan::CLOSE)
//!     .with_writer(std::io::stderr)
//!     .init();
//! ```
//!
//! # Layout
//!
//! The module that decides never awaits; the module that awaits never decides.
//!
//! - [`status`]: the wire error model ([`Status`], [`Code`], `details.reason` strings).
//! - [`error`]: the local error layer ([`Error`]): the peer's answer, this process's own
//!   decision, or the connection ending, told apart.
//! - [`schema`]: cap definitions ([`CapDef`], [`MethodDef`], [`Returns`], [`IfExists`]).
//! - [`attestation`] and [`policy`]: who the peer is, who may bootstrap what.
//! - [`limits`], [`stats`], [`events`]: per-connection bounds, live counts, observer events.
//! - `session` (private): the protocol state machine that decides: cap table, registry,
//!   dispatch, pending calls, streams, deadlines, revocation. Pure: no I/O, no clock, no
//!   async runtime; generic over what it dispatches to.
//! - [`connection`]: [`Connection`] handles and the one driver task per connection that
//!   owns the session and the transport.
//! - [`client`] and [`client_stream`]: [`Client`], a reference to one of the peer's caps,
//!   and [`ClientStream`], the values of a stream call.
//! - [`handler`] and [`context`]: what a served cap is ([`CapImpl`]) and what a handler
//!   knows ([`CallContext`]); it receives its args as a [`Payload`] (from the codec: validated,
//!   decoded straight into the params type).
//! - [`emitter`], [`dynamic`], [`typed`]: the ways to write handlers: emitter-style
//!   streams, closures at run time, Rust traits with [`cap`].
//! - [`describe`]: what a `#[cap]` trait says about itself, for bindings in other languages
//!   ([`DescribeCap`](describe::DescribeCap)); `typescript` (feature `typescript`):
//!   TypeScript definitions of `#[cap]` traits.
//! - [`host_caps`]: definitions of the bunite host caps (`bunite.Runtime`, …).
//! - [`transport`]: message transports (in-memory, byte streams, WebSocket, sealed pipe).
//! - `__private` (hidden): the one path code generated by [`cap`] names.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod attestation;
pub mod client;
pub mod client_stream;
pub mod connection;
pub mod context;
pub mod describe;
pub mod dynamic;
pub mod emitter;
pub mod error;
pub mod events;
pub mod handler;
mod hashing;
pub mod host_caps;
pub mod limits;
pub mod policy;
pub mod schema;
mod session;
pub mod stats;
pub mod status;
pub mod transport;
pub mod typed;
#[cfg(feature = "typescript")]
#[cfg_attr(docsrs, doc(cfg(feature = "typescript")))]
pub mod typescript;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

/// Fuzz harnesses over crate-private state (the `session_ops` target in `fuzz/`). Hidden,
/// behind `test-util`; not part of the public API.
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::session::fuzz::{session_ops, session_ops_traced, Report};
}

/// Test helpers shared by unit and integration tests. Hidden, behind `test-util`; not part
/// of the public API.
#[cfg(any(test, feature = "test-util"))]
#[doc(hidden)]
pub mod testing;

pub use attestation::{Attestation, TrustLevel};
/// A typed cap from a trait: an example that compiles and runs (a cap served on one end
/// of a connection and called from the other), then the attribute's reference.
///
/// ```
/// use bunite_rpc::{cap, transport::memory, Connection, Status};
///
/// /// A counter.
/// #[cap(name = "demo.Counter", version = "1")]
/// pub trait Counter {
///     /// The count.
///     #[cap(idempotent)]
///     async fn get(&self) -> Result<u64, Status>;
///     /// Adds `by`; the new count.
///     async fn add(&self, by: u64) -> Result<u64, Status>;
/// }
///
/// struct MyCounter(std::sync::atomic::AtomicU64);
///
/// impl Counter for MyCounter {
///     async fn get(&self) -> Result<u64, Status> {
///         Ok(self.0.load(std::sync::atomic::Ordering::SeqCst))
///     }
///     async fn add(&self, by: u64) -> Result<u64, Status> {
///         Ok(self.0.fetch_add(by, std::sync::atomic::Ordering::SeqCst) + by)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (a, b) = memory::pair();
/// let (server, client) = (Connection::new(a), Connection::new(b));
/// // `#[cap]` made `CounterCap` (the definition and its server) and `CounterClient`.
/// CounterCap::serve(&server, MyCounter(0.into())).await?.detach();
/// let counter: CounterClient = CounterCap::bootstrap(&client).await?;
/// assert_eq!(counter.add(2).await?, 2);
/// assert_eq!(counter.get().await?, 2);
/// # Ok(())
/// # }
/// ```
///
/// ---
///
#[doc(inline)]
pub use bunite_rpc_macros::cap;
pub use bunite_wire::{
    self as wire, from_value, to_value, AsOutgoing, Blob, CallId, CapId, CapRef, Outgoing, Payload,
    Record, Text, Value,
};
pub use client::{CallOptions, Client};
pub use client_stream::{ClientStream, TypedStream};
pub use connection::{Connection, ConnectionBuilder, ConnectionSet, ServeHandle, SubscriptionId};
pub use context::CallContext;
pub use error::{Disconnect, Error, LocalError};
pub use events::Event;
pub use handler::{BoxFuture, CapImpl, ExportedCap, OutgoingStream, Returned, ValueStream};
pub use limits::Limits;
pub use policy::Policy;
pub use schema::{CapDef, CapDefRef, IfExists, MethodDef, MethodKind, Returns};
/// The serde this crate uses, for crates that derive without depending on serde themselves
/// (`#[serde(crate = "bunite_rpc::serde")]`).
pub use serde;
pub use stats::Stats;
pub use status::{Code, Retry, Status};
/// The cancellation token of [`CallOptions::cancel`] and
/// [`CallContext::cancellation_token`], re-exported so callers need no version-matched
/// `tokio-util` of their own.
pub use tokio_util::sync::CancellationToken;
pub use typed::Exported;

/// The README's examples, compiled as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
