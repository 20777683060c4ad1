//! The hand-overs in flight of an [`RpcEndpoint`](super::RpcEndpoint), counted from the
//! `101` to the return of the route's callback, and the wait for none (see `# Stopping` in
//! the [module docs](super)); with `test-util`, the hooks that delay or hold them between
//! hyper's hand-over and the callback.

#[cfg(feature = "test-util")]
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
#[cfg(feature = "test-util")]
use std::time::Duration;

use tokio::sync::Notify;

/// The upgrades an endpoint answered whose callback has not returned: counted from the
/// `101` on (before hyper writes it), so that once axum has stopped, a count of zero means
/// every connection it answered has been through the callback.
#[derive(Debug, Default)]
pub(super) struct Handovers {
    in_flight: AtomicUsize,
    /// Woken as `in_flight` drops to zero.
    done: Notify,
    /// Test hook: while held, hand-overs wait between hyper's hand-over and the callback.
    #[cfg(feature = "test-util")]
    pub(super) hold: HoldHandovers,
}

/// One hand-over in flight, counted until dropped: as its task ends, the callback
/// returned, panicked, or the runtime dropped the task.
pub(super) struct HandoverGuard(Arc<Handovers>);

impl Handovers {
    /// A hand-over begins: counted until the guard is dropped.
    pub(super) fn begin(self: &Arc<Self>) -> HandoverGuard {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        HandoverGuard(Arc::clone(self))
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until none is in flight, those begun meanwhile included.
    pub(super) async fn none_in_flight(&self) {
        loop {
            let done = self.done.notified();
            let mut done = std::pin::pin!(done);
            // Registered before the count is read: a hand-over ending in between wakes it.
            done.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            done.await;
        }
    }
}

impl HandoverGuard {
    /// The test hooks: the delay, then the hold.
    #[cfg(feature = "test-util")]
    pub(super) async fn pass_test_hooks(&self) {
        self.0.hold.pass().await;
    }
}

impl Drop for HandoverGuard {
    fn drop(&mut self) {
        // Takes no lock of ours and never blocks (Notify's waiter list is held only
        // inside its own calls), as STYLE's habit 11 asks.
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

/// The test hooks' state: a delay and a hold between hyper's hand-over and the callback.
#[cfg(feature = "test-util")]
#[derive(Debug)]
pub(super) struct HoldHandovers {
    held: tokio::sync::watch::Sender<bool>,
    waiting: AtomicUsize,
    /// Microseconds each hand-over sleeps before the hold.
    delay_micros: AtomicU64,
}

#[cfg(feature = "test-util")]
impl Default for HoldHandovers {
    fn default() -> Self {
        HoldHandovers {
            held: tokio::sync::watch::Sender::new(false),
            waiting: AtomicUsize::new(0),
            delay_micros: AtomicU64::new(0),
        }
    }
}

#[cfg(feature = "test-util")]
impl HoldHandovers {
    pub(super) fn hold(&self, hold: bool) {
        self.held.send_replace(hold);
    }

    pub(super) fn delay(&self, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay_micros.store(micros, Ordering::SeqCst);
    }

    pub(super) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Sleeps the delay, then waits while the hand-overs are held.
    async fn pass(&self) {
        let delay = self.delay_micros.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_micros(delay)).await;
        }
        let mut held = self.held.subscribe();
        if !*held.borrow_and_update() {
            return;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // The sender lives in the endpoint this task holds: this ends at the release.
        let _ = held.wait_for(|held| !held).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}
