//! Observer events (PROTOCOL §15), reported on the serving side to any number of
//! subscribers ([`Connection::subscribe`](crate::Connection::subscribe)). A subscriber that
//! panics is caught and never affects the connection.
//!
//! Each outcome is reported once: every bootstrap answered, every call of the peer's
//! (refused ones included: unknown cap or method, the in-flight limit, a drain), and every
//! server stream's `start` and its one end. A connection that closes (either side, or its
//! transport failing) reports each call and server stream still in progress as the close
//! ends it: a call `cancelled` without a duration, a stream [`StreamPhase::Cancel`]. A
//! bootstrap still waiting for the policy then is not reported (no result fits it).
//!
//! The text the peer chose (a method it called, a bootstrap's name and version) is cut to
//! 1,024 bytes and marked `…`, as everywhere the connection keeps the peer's text; it is
//! not escaped (the `Debug` form of an event escapes control characters).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use bunite_rpc::dynamic::DynCap;
//! use bunite_rpc::events::Event;
//! use bunite_rpc::transport::memory;
//! use bunite_rpc::{CapDef, Connection, MethodDef, Status, Value};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let def = CapDef::builder("demo.Calc").method(MethodDef::call("div")).build();
//! let imp = DynCap::new().call("div", |_, _| async {
//!     Err::<Value, _>(Status::invalid_argument("division by zero"))
//! });
//! let (a, b) = memory::pair();
//! let server = Connection::builder().serve(def.clone(), imp.build()).connect(a);
//! let client = Connection::new(b);
//!
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let log = seen.clone();
//! server.subscribe(move |event| {
//!     let line = match event {
//!         Event::Bootstrap(b) => format!("bootstrap {} {:?}", b.name, b.result),
//!         Event::Call(c) => format!("call {} {:?}", c.method, c.result),
//!         other => format!("{other:?}"),
//!     };
//!     log.lock().unwrap().push(line);
//! });
//!
//! let calc = client.bootstrap(&def).await?;
//! assert!(calc.call_value("div", Value::Undefined).await.is_err());
//! client.close();
//! server.closed().await;
//! assert_eq!(
//!     *seen.lock().unwrap(),
//!     ["bootstrap demo.Calc Ok", "call div Err(InvalidArgument)"]
//! );
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use bunite_wire::{CallId, CapId};

use crate::attestation::Attestation;
use crate::status::Code;

/// One observed event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A bootstrap was answered.
    Bootstrap(BootstrapEvent),
    /// A call finished.
    Call(CallEvent),
    /// A server stream changed state.
    Stream(ServerStreamEvent),
    /// Caps were revoked (unserve) or switched (replace).
    Revoke(RevokeEvent),
    /// Something failed off the call path (policy, disposal, …).
    Error(ErrorEvent),
}

/// The outcome of a bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootstrapResult {
    /// A CapRef was returned.
    Ok,
    /// The policy denied it.
    Denied,
    /// The name is not served.
    NotFound,
    /// The versions differ.
    VersionMismatch,
    /// The args were malformed.
    InvalidArgument,
    /// The cap table is full.
    ResourceExhausted,
    /// The policy failed.
    Internal,
}

/// `bootstrap`: name, client version, attestation, result, cap-id on ok.
#[derive(Debug, Clone)]
pub struct BootstrapEvent {
    /// The requested name (cut to 1,024 bytes when it is not served).
    pub name: String,
    /// The client's version, if it sent one (cut to 1,024 bytes).
    pub version: Option<String>,
    /// The connection's attestation.
    pub attestation: Attestation,
    /// The outcome.
    pub result: BootstrapResult,
    /// The instance's cap-id on success.
    pub cap_id: Option<CapId>,
}

/// The outcome of a call: `Ok`, `Err(Code::Cancelled)` for cancellation, or the error code.
pub type CallResult = Result<(), Code>;

/// `call`: cap-id, cap name, method, call id, duration, result.
#[derive(Debug, Clone)]
pub struct CallEvent {
    /// The target cap.
    pub cap_id: CapId,
    /// The cap's name, when known.
    pub cap_name: Option<String>,
    /// The method (cut to 1,024 bytes when the peer called one its cap does not have).
    pub method: String,
    /// The call id.
    pub call_id: CallId,
    /// How long the handler ran, from the call being read to its outcome (absent for
    /// calls refused before running, and for calls the connection's close ended). The
    /// clock is read for it only while the connection has subscribers.
    pub duration: Option<Duration>,
    /// The result.
    pub result: CallResult,
}

/// What happened to a server stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamPhase {
    /// The stream started.
    Start,
    /// The source ended.
    End,
    /// The client cancelled, the stream's cap was unserved, or the connection closed.
    Cancel,
    /// The source failed.
    Error,
}

/// `stream`: cap-id, cap name, method, call id, event, count of values sent.
#[derive(Debug, Clone)]
pub struct ServerStreamEvent {
    /// The target cap.
    pub cap_id: CapId,
    /// The cap's name.
    pub cap_name: Option<String>,
    /// The method.
    pub method: String,
    /// The stream's call id.
    pub call_id: CallId,
    /// The phase.
    pub phase: StreamPhase,
    /// Values sent so far.
    pub count: u64,
}

/// Why caps were revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevokeReason {
    /// `unserve`: the instances are gone.
    Unserve,
    /// `replace`: the instances switched implementation.
    Replace,
}

/// `revoke`: cap-ids and reason.
#[derive(Debug, Clone)]
pub struct RevokeEvent {
    /// The affected cap-ids.
    pub cap_ids: Vec<CapId>,
    /// Why.
    pub reason: RevokeReason,
}

/// `error`: the phase (`policy`, `dispose`, `subscriber`, …) and the error text.
#[derive(Debug, Clone)]
pub struct ErrorEvent {
    /// Where it happened.
    pub phase: &'static str,
    /// What happened.
    pub error: String,
}
