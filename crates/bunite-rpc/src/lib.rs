//! bunite-rpc: the bunite capability RPC protocol in Rust, wire-compatible with the
//! bunite-core 0.10 TypeScript peer (`../shared/spec/PROTOCOL.md`).
//!
//! Two peers expose **capabilities** to each other over one connection: caps are
//! bootstrapped by name and version from a registry guarded by a policy, methods are unary
//! calls (which may return further caps) or server streams, caps are reference-counted
//! across the wire, and every connection enforces limits and reports events.
//!
//! ```
//! use bunite_rpc::{dynamic::DynCap, transport::memory, CapDef, Connection, MethodDef, Value};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), bunite_rpc::Status> {
//! let def = CapDef::builder("demo.Greeter").method(MethodDef::call("greet")).build();
//! let (a, b) = memory::pair();
//! let server = Connection::new(a);
//! let client = Connection::new(b);
//!
//! let imp = DynCap::new().call("greet", |args: Value, _ctx| async move {
//!     let name: String = bunite_rpc::from_value(args)?;
//!     Ok(Value::from(format!("hello, {name}")))
//! });
//! server.serve(def.clone(), imp.build())?.detach();
//!
//! let greeter = client.bootstrap(&def).await?;
//! let reply: String = greeter.call("greet", "ada").await?;
//! assert_eq!(reply, "hello, ada");
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - [`status`]: the wire error model ([`Status`], [`Code`], `details.reason` strings).
//! - [`schema`]: cap definitions ([`CapDef`], [`MethodDef`], [`Returns`]).
//! - [`handler`]: what a served cap is ([`CapImpl`]) and what handlers return.
//! - [`context`]: the server context of a call ([`CallContext`]).
//! - [`emitter`]: the emitter style of stream handler ([`Emitter`](emitter::Emitter)).
//! - [`dynamic`]: caps built from closures at run time ([`DynCap`](dynamic::DynCap)).
//! - `session` (private): the state machine that decides: cap table, registry, dispatch,
//!   pending calls, revocation. No I/O, no clock.
//! - [`connection`]: the [`Connection`] handle and the driver tasks that do the I/O.
//! - [`client`]: [`Client`], a reference to one of the peer's caps.
//! - [`stream`]: [`ClientStream`], the values of a stream call.
//! - [`framework`]: definitions of the bunite framework caps (`bunite.Runtime`, …).
//! - [`policy`]: [`Attestation`] and [`Policy`].
//! - [`events`]: observer [`Event`]s.
//! - [`limits`]: per-connection [`Limits`].
//! - [`transport`]: message transports (in-memory).
#![deny(missing_docs)]

pub mod client;
pub mod connection;
pub mod context;
pub mod dynamic;
pub mod emitter;
pub mod events;
pub mod framework;
pub mod handler;
pub mod limits;
pub mod policy;
pub mod schema;
mod session;
pub mod status;
pub mod stream;
pub mod transport;
pub mod typed;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use bunite_rpc_macros::cap;
/// The serde this crate uses, for crates that derive without depending on serde themselves
/// (`#[serde(crate = "bunite_rpc::serde")]`).
pub use serde;
pub use bunite_wire::{self as wire, from_value, to_value, CallId, CapId, CapRef, Record, Value};
pub use client::{CallOptions, Client};
pub use connection::{Connection, ConnectionBuilder, ServeHandle, SubscriptionId};
pub use context::CallContext;
pub use events::Event;
pub use handler::{BoxFuture, CapImpl, ExportedCap, Returned, ValueStream};
pub use limits::Limits;
pub use policy::{Attestation, Policy, TrustLevel};
pub use schema::{CapDef, CapDefRef, MethodDef, MethodKind, Returns};
pub use session::registry::IfExists;
pub use session::Stats;
pub use status::{Code, Retry, Status};
pub use stream::{ClientStream, TypedStream};
pub use typed::Exported;

/// The README's examples, compiled as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
