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
//! takes the outcome out to release them itself. Nothing waits and no lock is taken from a
//! `Drop` while another end may hold it: the outcome's mutex is taken by the sender only
//! before it publishes `SENT`, and by the receiver only after it has seen `SENT`.
//!
//! **Why the slots are used again.** A call's reply channel was its one allocation of more
//! than 128 bytes, and a caller with many calls in flight frees them in batches (a read of
//! replies) and allocates them in batches (the calls that follow). glibc's malloc keeps 7
//! chunks of a size in its per-thread cache, so the rest of each batch took its slower
//! paths: about 450 instructions a call, 8% of the client's time at 256 calls in flight
//! (`docs/BENCHMARKS.md`). A receiver that is the last owner of its slot when it finishes
//! resets it and keeps it in a per-thread list, from which the next call on the thread
//! takes it. The list holds at most [`KEPT`] slots of 176 bytes (45 KB, for a thread that
//! once had as many replies finished at once): a batch of replies is as large as the calls
//! in flight that one read answers, and with 64 kept, 256 in flight still allocated 63% of
//! their replies. Per thread rather than per connection, so that a server with thousands
//! of connections keeps no more than one with one.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
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
    outcome: Mutex<Option<Outcome>>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            state: AtomicU8::new(WAITING),
            waker: AtomicWaker::new(),
            outcome: Mutex::new(None),
        }
    }

    /// Takes the outcome out (the state said `SENT`, so the sender is done with it).
    fn take(&self) -> Option<Outcome> {
        self.outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
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
        let slot = self.0.take().expect("a reply is sent once");
        *slot
            .outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(outcome);
        match slot
            .state
            .compare_exchange(WAITING, SENT, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                // Our share of the slot goes before the wake, so that the receiver, once
                // woken, usually finds itself its last owner and keeps it for the next call.
                let waker = slot.waker.take();
                drop(slot);
                if let Some(waker) = waker {
                    waker.wake();
                }
                Ok(())
            }
            // Abandoned: nobody will take it.
            Err(_) => Err(slot.take().expect("put just above")),
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
        let slot = self.0.as_ref().expect("a reply is taken once");
        let mut state = slot.state.load(Ordering::Acquire);
        if state == WAITING {
            slot.waker.register(cx.waker());
            state = slot.state.load(Ordering::Acquire);
        }
        let ready = match state {
            WAITING => return Poll::Pending,
            SENT => Ok(slot.take().expect("sent")),
            _ => Err(()),
        };
        self.finish();
        Poll::Ready(ready)
    }

    /// Stops waiting: the outcome, if it was already sent (its caps are then the caller's
    /// to release); later the sender gets it back.
    pub(crate) fn abandon(&mut self) -> Option<Outcome> {
        let slot = self.0.as_ref()?;
        let taken = match slot.state.swap(ABANDONED, Ordering::AcqRel) {
            SENT => slot.take(),
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
        let outcome = only
            .outcome
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        debug_assert!(outcome.is_none(), "a finished slot holds no outcome");
        *outcome = None;
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
