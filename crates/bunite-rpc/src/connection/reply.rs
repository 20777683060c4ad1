//! The hand-off of a call's (or bootstrap's) outcome from the connection's driver to its
//! caller: a one-shot slot whose allocation is used again by the next call on the thread.
//!
//! A slot is shared by the driver's [`ReplyTx`] (in the session's pending entry) and the
//! caller's [`ReplyRx`]. The handshake is one atomic state:
//!
//! | state | meaning |
//! | --- | --- |
//! | `WAITING` | neither end has finished |
//! | `SENT` | the outcome is in the slot, for the receiver to take |
//! | `CLOSED` | the sender was dropped without sending (the connection ended) |
//! | `ABANDONED` | the receiver stopped waiting |
//!
//! Each end moves the state out of `WAITING` once, so the end that moves it second knows
//! what the other did: a sender that finds the slot abandoned gets its outcome back (the
//! driver then releases the caps in it), and a receiver that abandons a slot already sent
//! takes the outcome out to release them itself. Nothing waits and no `Drop` takes a lock:
//! the outcome is set once (`OnceLock`) before `SENT` is published, and moved out by the
//! receiver as the slot's only owner (the sender lets go of its share before it wakes the
//! receiver; in the rare case the receiver looks in between, it takes a clone).
//!
//! **Why the slots are used again.** A call's reply channel was its one allocation of more
//! than 128 bytes, and a caller with many calls in flight frees them in batches (a read of
//! replies) and allocates them in batches (the calls that follow). glibc's malloc keeps 7
//! chunks of a size in its per-thread cache, so the rest of each batch took its slower
//! paths (about 450 instructions a call at 256 in flight, 8% of the client's). A receiver
//! that is the last owner of its slot when it finishes resets it and keeps it in a
//! per-thread list, from which the next call on the thread takes it. Measured
//! (`docs/BENCHMARKS.md`): one allocation a round trip fewer and 7% fewer instructions on
//! the client at 256 in flight; in time, 6% more calls a second at 256 in flight when both
//! ends share two workers, and no change beyond the noise with each end on its own thread
//! or at 64 in flight (a slot's handshake takes about as many atomic operations as tokio's
//! oneshot and the allocator's fast path together). The list holds at most [`KEPT`] slots
//! (about 45 KB, for a thread that once had as many replies finished at once): a batch of
//! replies is as large as the calls in flight that one read answers, and with 64 kept, 256
//! in flight still allocated 63% of their replies. Per thread rather than per connection,
//! so that a server with thousands of connections keeps no more than one with one.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;

use crate::error::Error;
use bunite_wire::Payload;

/// A call's outcome.
pub(crate) type Outcome = Result<Payload, Error>;

const WAITING: u8 = 0;
const SENT: u8 = 1;
const CLOSED: u8 = 2;
const ABANDONED: u8 = 3;

/// Reset slots each thread keeps for its next calls (see the module's docs).
const KEPT: usize = 256;

thread_local! {
    static SLOTS: RefCell<Vec<Arc<Slot>>> = const { RefCell::new(Vec::new()) };
}

struct Slot {
    state: AtomicU8,
    waker: AtomicWaker,
    outcome: OnceLock<Outcome>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: AtomicU8::new(WAITING),
            waker: AtomicWaker::new(),
            outcome: OnceLock::new(),
        }
    }
}

/// Takes the outcome out of a slot whose state said `SENT` (so it is set): moved out when
/// `slot` is its only owner, which it is once the sender has let go (it does before it
/// wakes the receiver); cloned in the rare case the sender has not let go yet.
fn take_sent(slot: &mut Arc<Slot>) -> Option<Outcome> {
    match Arc::get_mut(slot) {
        Some(only) => only.outcome.take(),
        None => slot.outcome.get().cloned(),
    }
}

/// A new reply channel: a slot kept by this thread if there is one, else a new one.
pub(crate) fn channel() -> (ReplyTx, ReplyRx) {
    let slot = SLOTS
        .try_with(|slots| slots.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Arc::new(Slot::new()));
    (ReplyTx(Some(Arc::clone(&slot))), ReplyRx(Some(slot)))
}

/// The driver's end: [`send`](Self::send) once, or drop it (the receiver sees the
/// connection closed).
pub(crate) struct ReplyTx(Option<Arc<Slot>>);

impl ReplyTx {
    /// Hands the outcome over; gives it back if the receiver has stopped waiting.
    pub(crate) fn send(mut self, outcome: Outcome) -> Result<(), Outcome> {
        let mut slot = self.0.take().expect("a reply is sent once");
        if slot.state.load(Ordering::Acquire) == ABANDONED {
            return Err(outcome);
        }
        // Set once a use of the slot (a reused slot is reset by its last owner).
        slot.outcome.set(outcome)?;
        match slot
            .state
            .compare_exchange(WAITING, SENT, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                // Our share of the slot goes before the wake, so that the receiver, once
                // woken, finds itself its only owner: it moves the outcome out and keeps
                // the slot for the next call.
                let waker = slot.waker.take();
                drop(slot);
                if let Some(waker) = waker {
                    waker.wake();
                }
                Ok(())
            }
            // Abandoned meanwhile: nobody will take it.
            Err(_) => Err(take_sent(&mut slot).expect("set just above")),
        }
    }
}

impl Drop for ReplyTx {
    fn drop(&mut self) {
        if let Some(slot) = self.0.take() {
            if slot
                .state
                .compare_exchange(WAITING, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                slot.waker.wake();
            }
        }
    }
}

/// The caller's end.
pub(crate) struct ReplyRx(Option<Arc<Slot>>);

impl ReplyRx {
    /// The outcome once sent; `Err(())` if the sender was dropped without sending. Once it
    /// is ready the receiver is spent (a later poll panics, as a finished future's would).
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Outcome, ()>> {
        let slot = self.0.as_mut().expect("a reply is taken once");
        let mut state = slot.state.load(Ordering::Acquire);
        if state == WAITING {
            slot.waker.register(cx.waker());
            state = slot.state.load(Ordering::Acquire);
        }
        let ready = match state {
            WAITING => return Poll::Pending,
            SENT => Ok(take_sent(slot).expect("sent")),
            _ => Err(()),
        };
        self.finish();
        Poll::Ready(ready)
    }

    /// Stops waiting: the outcome, if it was already sent (its caps are then the caller's
    /// to release); later the sender gets it back.
    pub(crate) fn abandon(&mut self) -> Option<Outcome> {
        let slot = self.0.as_mut()?;
        let taken = match slot.state.swap(ABANDONED, Ordering::AcqRel) {
            SENT => take_sent(slot),
            _ => None,
        };
        self.finish();
        taken
    }

    /// Lets go of the slot; keeps it for this thread's next call if nobody else holds it.
    fn finish(&mut self) {
        let Some(mut slot) = self.0.take() else {
            return;
        };
        let Some(only) = Arc::get_mut(&mut slot) else {
            return;
        };
        *only.state.get_mut() = WAITING;
        drop(only.waker.take());
        // Empty but in one race: the receiver abandoned the slot between the sender's
        // setting the outcome and its publishing it, and still held the slot, so the
        // sender took a clone (whose caps it releases) and left the outcome here.
        drop(only.outcome.take());
        let _ = SLOTS.try_with(|slots| {
            let mut slots = slots.borrow_mut();
            if slots.len() < KEPT {
                slots.push(slot);
            }
        });
    }
}

impl Drop for ReplyRx {
    fn drop(&mut self) {
        // A receiver dropped unfinished abandons its slot (what was sent goes with it).
        drop(self.abandon());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;

    fn cx() -> Context<'static> {
        Context::from_waker(noop_waker_ref())
    }

    fn ok(n: u64) -> Outcome {
        Ok(Payload::from_value(bunite_wire::Value::from(n as i64)))
    }

    fn int(outcome: Outcome) -> u64 {
        outcome.unwrap().deserialize().unwrap()
    }

    #[test]
    fn an_outcome_sent_is_received_once() {
        let (tx, mut rx) = channel();
        assert!(rx.poll(&mut cx()).is_pending());
        tx.send(ok(7)).unwrap();
        let Poll::Ready(Ok(outcome)) = rx.poll(&mut cx()) else {
            panic!("sent, so ready");
        };
        assert_eq!(int(outcome), 7);
        assert!(rx.abandon().is_none(), "spent once taken");
    }

    #[test]
    fn a_sender_dropped_unsent_closes_the_receiver() {
        let (tx, mut rx) = channel();
        drop(tx);
        assert!(matches!(rx.poll(&mut cx()), Poll::Ready(Err(()))));
    }

    #[test]
    fn a_sender_finds_an_abandoned_slot_and_gets_its_outcome_back() {
        let (tx, rx) = channel();
        drop(rx);
        let back = tx.send(ok(3)).expect_err("nobody waits");
        assert_eq!(int(back), 3);
    }

    #[test]
    fn a_receiver_that_abandons_a_sent_slot_takes_the_outcome() {
        let (tx, mut rx) = channel();
        tx.send(ok(5)).unwrap();
        assert_eq!(int(rx.abandon().expect("sent before")), 5);
    }

    #[test]
    fn the_sender_wakes_the_receiver() {
        let (tx, mut rx) = channel();
        let (waker, count) = futures_test_waker();
        assert!(rx.poll(&mut Context::from_waker(&waker)).is_pending());
        tx.send(ok(1)).unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let (tx, mut rx) = channel();
        assert!(rx.poll(&mut Context::from_waker(&waker)).is_pending());
        drop(tx);
        assert_eq!(count.load(Ordering::SeqCst), 2, "closing wakes too");
    }

    /// A finished slot whose sender is gone is used again by the next call on the thread,
    /// reset; one whose sender still holds it is not.
    #[test]
    fn a_finished_slot_is_used_again_on_its_thread() {
        let (tx, mut rx) = channel();
        let first = Arc::as_ptr(rx.0.as_ref().unwrap());
        tx.send(ok(1)).unwrap();
        assert!(rx.poll(&mut cx()).is_ready());
        let (tx, mut rx) = channel();
        assert_eq!(Arc::as_ptr(rx.0.as_ref().unwrap()), first, "the same slot");
        assert!(rx.poll(&mut cx()).is_pending(), "reset to waiting");
        // The receiver finishes while the sender still holds the slot: not kept.
        let abandoned = rx.abandon();
        assert!(abandoned.is_none());
        let (_tx2, rx2) = channel();
        assert_ne!(Arc::as_ptr(rx2.0.as_ref().unwrap()), first);
        assert!(tx.send(ok(2)).is_err());
    }

    #[test]
    fn a_thread_keeps_at_most_kept_slots() {
        let pairs: Vec<_> = (0..KEPT + 10).map(|_| channel()).collect();
        for (tx, mut rx) in pairs {
            tx.send(ok(0)).unwrap();
            assert!(rx.poll(&mut cx()).is_ready());
        }
        assert_eq!(SLOTS.with(|s| s.borrow().len()), KEPT);
    }

    fn futures_test_waker() -> (std::task::Waker, Arc<std::sync::atomic::AtomicUsize>) {
        struct Count(Arc<std::sync::atomic::AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        (Arc::new(Count(Arc::clone(&count))).into(), count)
    }
}
