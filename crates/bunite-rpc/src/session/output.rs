//! What a session yields besides messages to send: work for the runtime above.

use std::sync::Arc;
use std::time::Duration;

use bunite_wire::{CallId, CapId, Hello};

use super::Types;
use crate::error::{Disconnect, Error};
use crate::events::Event;
use crate::schema::CapDef;
use bunite_wire::Payload;

/// One run of a handler or stream source. Call ids are the peer's and a peer may misuse
/// them; run ids are ours, so an outcome always reaches the run it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RunId(pub u64);

/// A handler (or stream source) to start.
pub(crate) struct Invocation<I> {
    pub run: RunId,
    pub call_id: CallId,
    pub cap_id: CapId,
    /// The cap's definition (its name for traces, and the method's for the handler).
    pub def: Arc<CapDef>,
    pub imp: I,
    /// The method's position in `def`'s methods ([`Invocation::method_name`]).
    pub method: usize,
    pub args: Payload,
    /// A stream method: open a source rather than run a call.
    pub stream: bool,
    /// Start on a task of its own ([`crate::MethodDef::own_task`]).
    pub own_task: bool,
    /// The call's relative deadline, if the client sent one (calls made inside the handler
    /// inherit what remains of it).
    pub deadline: Option<Duration>,
    /// The meta `context` map.
    pub context: Option<Vec<(String, String)>>,
}

impl<I> Invocation<I> {
    /// The method's name, as declared (a `&str` with no UTF-8 check to make).
    #[cfg(any(test, feature = "test-util"))]
    pub fn method_name(&self) -> &str {
        self.def.method_name(self.method)
    }
}

/// What the runtime must do. Outputs come in the order the session decided them.
pub(crate) enum Output<T: Types> {
    /// The peer's hello arrived (publish it).
    Hello(Hello),
    /// An outbound call or bootstrap finished. If the caller is gone and `caps` is set, the
    /// runtime releases the CapRefs of an `Ok` outcome.
    Reply {
        to: T::Reply,
        outcome: Result<Payload, Error>,
        caps: bool,
    },
    /// One value of a client stream.
    StreamItem { to: T::Sink, item: Payload },
    /// A client stream ended: cleanly (`None`) or with an error.
    StreamEnd { to: T::Sink, error: Option<Error> },
    /// Start a handler or stream source.
    Invoke(Invocation<T::Imp>),
    /// Fire a run's cancellation signal (cancel, or its deadline passed); it keeps running.
    Signal(RunId),
    /// Stop a run: drop its future or source (after signalling it).
    Abort(RunId),
    /// A stream run has credit again: poll its source.
    Credit(RunId),
    /// Ask the policy about a bootstrap of `name`, then call `policy_done`.
    Policy { call_id: CallId, name: String },
    /// Run a cap's disposal method (unserve, shutdown); errors become `error` events.
    Dispose {
        imp: T::Imp,
        method: String,
        cap_id: CapId,
    },
    /// Run a call's `after_reply` work: its reply is queued.
    Run(T::Deferred),
    /// An observer event (only while observed).
    Event(Event),
    /// The session shut down: deliver what is queued to send, then close the transport.
    Closed(Disconnect),
}
