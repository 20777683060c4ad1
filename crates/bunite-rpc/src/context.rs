//! The server context of a call (PROTOCOL §9): call id, peer, attestation, cancellation,
//! deadline, meta context, and exporting caps.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use bunite_wire::{CallId, CapId};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::attestation::Attestation;
use crate::connection::{Command, Connection, Shared};
use crate::handler::{CapImpl, ExportedCap};
use crate::schema::CapDef;
use crate::session::RunId;

/// What a handler knows about the call it serves. Cheap to clone.
#[derive(Clone)]
pub struct CallContext {
    shared: Arc<Shared>,
    call_id: CallId,
    /// The run of the handler it was made for (`None` for runtime-initiated work): a peer
    /// may use a call id again once its call is finished, and what this context asks for
    /// must not reach the call that reuses it.
    run: Option<RunId>,
    cap_id: CapId,
    signal: Signal,
    deadline: Option<Instant>,
    context: Option<Arc<[(String, String)]>>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("call_id", &self.call_id)
            .field("cap_id", &self.cap_id)
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// The handler a task is running, so calls it makes carry `parentCallId` and inherit its
/// deadline (PROTOCOL §11).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallScope {
    pub connection: u64,
    pub call_id: CallId,
    /// The handler's run: calls it makes are the call's children only while this run serves
    /// it (the peer may reuse the id once it is finished).
    pub run: RunId,
    pub deadline: Option<Instant>,
}

thread_local! {
    /// The call whose handler (or stream source) this thread is polling, if any. A plain
    /// thread-local: a handler is only ever polled inside [`CallScope::enter`], which sets it
    /// for that poll and puts back what was there before, so it never outlives the poll and
    /// needs nothing of tokio's task-locals (which cost a `RefCell` swap and its checks).
    static CURRENT_CALL: Cell<Option<CallScope>> = const { Cell::new(None) };
}

impl CallScope {
    /// Runs `f` with `self` as this thread's current call, and puts back the call that was
    /// current before when `f` returns or unwinds.
    pub(crate) fn enter<R>(self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<CallScope>);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT_CALL.set(self.0);
            }
        }
        let _restore = Restore(CURRENT_CALL.replace(Some(self)));
        f()
    }

    /// The call whose handler is being polled on this thread, if any.
    pub(crate) fn current() -> Option<CallScope> {
        CURRENT_CALL.get()
    }
}

/// A call's cancellation signal: a flag, and a [`CancellationToken`] made only when the
/// handler asks for one ([`CallContext::cancelled`], [`CallContext::cancellation_token`]).
///
/// Most handlers never look: a token made for every call cost an allocation of its tree
/// node and a lock of that node's mutex at each clone and drop (about 7% of the server's
/// time with 64 calls in flight, `perf`); a `Signal` costs one small allocation and atomic
/// reference counts, and the allocation is reused for the next call once nothing else
/// holds it ([`Signal::reuse`]).
#[derive(Clone, Default)]
pub(crate) struct Signal(Arc<SignalState>);

#[derive(Default)]
struct SignalState {
    fired: AtomicBool,
    token: OnceLock<CancellationToken>,
}

impl Signal {
    /// This signal as new, for the next call, if nothing else holds it (the handler of the
    /// finished call it was made for dropped its context, and no clone of that context
    /// outlived it); `None` otherwise.
    pub(crate) fn reuse(mut self) -> Option<Signal> {
        let state = Arc::get_mut(&mut self.0)?;
        *state = SignalState::default();
        Some(self)
    }

    /// Fires the signal: cancels the token if one was made, and any made later.
    pub(crate) fn fire(&self) {
        let state = &*self.0;
        state.fired.store(true, Ordering::Relaxed);
        // Pairs with the fence in `token`: of a `fire` and a `token` running at once, at
        // least one sees the other's write, so a token made meanwhile is still cancelled.
        fence(Ordering::SeqCst);
        if let Some(token) = state.token.get() {
            token.cancel();
        }
    }

    /// Whether the signal fired (or the handler cancelled its own token). The flag
    /// publishes nothing else, so a relaxed load is enough.
    pub(crate) fn is_fired(&self) -> bool {
        let state = &*self.0;
        state.fired.load(Ordering::Relaxed) || state.token.get().is_some_and(|t| t.is_cancelled())
    }

    /// The token, made at the first call; cancelled already if the signal fired.
    pub(crate) fn token(&self) -> &CancellationToken {
        let state = &*self.0;
        let token = state.token.get_or_init(CancellationToken::new);
        fence(Ordering::SeqCst);
        if state.fired.load(Ordering::Relaxed) {
            token.cancel();
        }
        token
    }
}

impl CallContext {
    pub(crate) fn new(
        shared: Arc<Shared>,
        call_id: CallId,
        run: RunId,
        cap_id: CapId,
        signal: Signal,
        deadline: Option<Instant>,
        context: Option<Vec<(String, String)>>,
    ) -> Self {
        CallContext {
            shared,
            call_id,
            run: Some(run),
            cap_id,
            signal,
            deadline,
            context: context.map(Arc::from),
        }
    }

    /// A context for work the runtime starts on its own (disposal at unserve or shutdown).
    pub(crate) fn detached(shared: Arc<Shared>, cap_id: CapId) -> Self {
        CallContext {
            shared,
            call_id: CallId(0),
            run: None,
            cap_id,
            signal: Signal::default(),
            deadline: None,
            context: None,
        }
    }

    /// The call id (0 for runtime-initiated disposal).
    pub fn call_id(&self) -> CallId {
        self.call_id
    }

    /// The cap-id the call targets.
    pub fn cap_id(&self) -> CapId {
        self.cap_id
    }

    /// The peer id the host gave the connection.
    pub fn peer_id(&self) -> &str {
        &self.shared.settings.peer_id
    }

    /// The connection's attestation.
    pub fn attestation(&self) -> &Attestation {
        &self.shared.settings.attestation
    }

    /// Whether the call was cancelled (or, for non-idempotent methods, its deadline passed).
    pub fn is_cancelled(&self) -> bool {
        self.signal.is_fired()
    }

    /// Completes when the call is cancelled or its deadline passes.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.signal.token().cancelled()
    }

    /// The cancellation token itself, to hand to other tasks.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.signal.token().clone()
    }

    /// The call's deadline, if the client set one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The `meta.context` string map the client sent.
    pub fn context(&self) -> &[(String, String)] {
        self.context.as_deref().unwrap_or_default()
    }

    /// One value of the `meta.context` map.
    pub fn context_value(&self, key: &str) -> Option<&str> {
        self.context()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The connection the call arrived on (to call the peer back).
    pub fn connection(&self) -> Connection {
        Connection {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs `f` once this call's result (success or error) has been queued for the peer, so
    /// anything `f` sends reaches the peer after the reply: e.g. a cap that unserves itself
    /// on request replies first and revokes after. `f` runs on the connection's task; keep
    /// it short and spawn for async work. If the call is cancelled, or the
    /// connection closes, before it replies, `f` is dropped without running; from a stream
    /// or a disposal it never runs.
    pub fn after_reply(&self, f: impl FnOnce() + Send + 'static) {
        if let Some(run) = self.run {
            let work = Box::new((self.call_id, run, Box::new(f) as _));
            self.shared.send(Command::AfterReply(work));
        }
    }

    /// Exports a cap to return from this call. Its cap-id is allocated (refcount 1) when the
    /// result is sent; if the call fails or is cancelled, nothing is allocated.
    pub fn export(&self, def: Arc<CapDef>, imp: Arc<dyn CapImpl>) -> ExportedCap {
        ExportedCap::new(def, imp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(call_id: u64) -> CallScope {
        CallScope {
            connection: 1,
            call_id: CallId(call_id),
            run: RunId(call_id),
            deadline: None,
        }
    }

    fn current_id() -> Option<u64> {
        CallScope::current().map(|s| s.call_id.0)
    }

    #[test]
    fn a_call_is_current_only_inside_its_scope_and_an_inner_scope_gives_the_outer_back() {
        assert_eq!(current_id(), None);
        scope(1).enter(|| {
            assert_eq!(current_id(), Some(1));
            scope(2).enter(|| assert_eq!(current_id(), Some(2)));
            assert_eq!(current_id(), Some(1));
        });
        assert_eq!(current_id(), None);
    }

    #[test]
    fn a_signal_cancels_its_token_whether_the_token_was_made_before_or_after_it_fired() {
        let before = Signal::default();
        let token = before.token().clone();
        assert!(!before.is_fired() && !token.is_cancelled());
        before.clone().fire();
        assert!(before.is_fired() && token.is_cancelled());

        let after = Signal::default();
        after.clone().fire();
        assert!(after.is_fired());
        assert!(
            after.token().is_cancelled(),
            "a token made after the signal fired"
        );
    }

    #[test]
    fn a_signal_is_reused_only_when_nothing_else_holds_it_and_comes_back_new() {
        let signal = Signal::default();
        let held = signal.clone();
        assert!(signal.reuse().is_none(), "a context still holds it");

        let token = held.token().clone();
        held.fire();
        let again = held.reuse().expect("the only holder");
        assert!(!again.is_fired(), "reused, it has not fired");
        assert!(
            !again.token().is_cancelled(),
            "reused, it makes a new token"
        );
        assert!(token.is_cancelled(), "the old token stays cancelled");
    }

    #[test]
    fn a_handler_that_cancels_its_own_token_reads_as_cancelled() {
        let signal = Signal::default();
        signal.token().cancel();
        assert!(signal.is_fired());
    }

    #[test]
    fn a_token_made_while_the_signal_fires_on_another_thread_is_cancelled() {
        for _ in 0..2_000 {
            let signal = Signal::default();
            let firing = signal.clone();
            let other = std::thread::spawn(move || firing.fire());
            let token = signal.token().clone();
            other.join().unwrap();
            assert!(token.is_cancelled());
        }
    }

    #[test]
    fn a_scope_whose_code_panics_gives_the_outer_call_back() {
        scope(1).enter(|| {
            let unwound = std::panic::catch_unwind(|| scope(2).enter(|| panic!("handler")));
            assert!(unwound.is_err());
            assert_eq!(current_id(), Some(1));
        });
        assert_eq!(current_id(), None);
    }
}
