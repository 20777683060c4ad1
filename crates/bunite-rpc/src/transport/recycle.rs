//! Read buffers kept for reuse while a connection is busy, and let go once it idles.
//!
//! A socket transport reads into a `BytesMut` and splits its messages off without a copy,
//! so a message keeps its read buffer's allocation alive until it has been handled. The
//! next read that needs room finds its buffer still shared; rather than a fresh allocation
//! for it, a [`Recycled`] hands back an allocation of an earlier read whose messages are
//! gone. That matters for the long ones: glibc hands out an allocation of 64 KiB or more
//! from the top of its heap and gives those pages back to the kernel when it is freed, so
//! a fresh one per message faulted its pages in again each time (a 64 KiB echo: about 18
//! page faults per round trip over the byte stream, about one per echo over WebSocket).
//!
//! What is kept is held only while the connection is busy: an [`IdleRelease`] says when
//! it has been idle for [`IDLE_RELEASE`], and the reader lets everything go then. On a
//! listener's connection every kept allocation is paid for from the listener's
//! [`ByteBudget`] while it is kept, is not kept when the budget cannot pay for it, and is
//! let go as soon as a request on the budget has to wait: a peer that sends a few long
//! messages and then trickles a byte now and then would otherwise hold four of them per
//! connection outside the budget for as long as it trickles, and a cache must never keep a
//! message from being received.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::{Instant, Sleep};

use super::budget::Pressure;
use super::{BudgetPermit, ByteBudget};

/// How long a connection stays idle (nothing pending, nothing arriving) before its read
/// buffers are let go.
pub const IDLE_RELEASE: Duration = Duration::from_millis(100);

/// How many allocations of earlier reads are kept.
const KEPT: usize = 4;

/// Allocations smaller than this are not kept: small ones come back warm from the allocator.
const KEEP_MIN: usize = 16 * 1024;

/// Empty handles on the allocations of earlier reads, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Recycled {
    kept: Vec<Kept>,
    /// What pays for the kept allocations (a listener's connection), if anything does.
    budget: Option<(ByteBudget, Pressure)>,
}

#[derive(Debug)]
struct Kept {
    buf: BytesMut,
    /// The allocation's size.
    alloc: usize,
    /// Its bytes, drawn from the budget while it is kept.
    _paid: BudgetPermit,
}

impl Recycled {
    /// Allocations kept only while `budget` (if any) can pay for them.
    pub(crate) fn within(budget: Option<ByteBudget>) -> Self {
        Recycled {
            kept: Vec::new(),
            budget: budget.map(|b| {
                let pressure = b.pressure();
                (b, pressure)
            }),
        }
    }

    /// Whether a request on the budget has had to wait since the last look; if so, every
    /// kept allocation has been let go (and the caller lets go of what else it holds only
    /// to spare an allocation). Readers look whenever they are polled, and at once after
    /// their own request had to wait.
    pub(crate) fn under_pressure(&mut self) -> bool {
        let felt = match &mut self.budget {
            Some((_, pressure)) => pressure.felt(),
            None => false,
        };
        if felt {
            self.clear();
        }
        felt
    }

    /// Keeps `buf`, whose allocation is `alloc` bytes, if that is between [`KEEP_MIN`] and
    /// `max` and the budget (if any) has its bytes; the oldest kept one goes when [`KEPT`]
    /// are held. Its content is dropped.
    pub(crate) fn keep(&mut self, mut buf: BytesMut, alloc: usize, max: usize) {
        if !(KEEP_MIN..=max).contains(&alloc) || self.under_pressure() {
            return;
        }
        if self.kept.len() == KEPT {
            self.kept.remove(0);
        }
        let paid = match &self.budget {
            Some((budget, _)) => match budget.try_acquire(alloc) {
                Some(paid) => paid,
                None => return,
            },
            None => BudgetPermit::default(),
        };
        buf.clear();
        self.kept.push(Kept {
            buf,
            alloc,
            _paid: paid,
        });
    }

    /// A kept allocation with room for `need` bytes that no message uses any more, empty,
    /// with its size. Its bytes go back to the budget: it is the reader's again, paid for as
    /// the reader's buffer is.
    pub(crate) fn take(&mut self, need: usize) -> Option<(BytesMut, usize)> {
        let i = self.kept.iter_mut().position(|k| k.buf.try_reclaim(need))?;
        let kept = self.kept.remove(i);
        Some((kept.buf, kept.alloc))
    }

    /// [`take`](Self::take), or else a new allocation of `fresh` bytes (at least `need`).
    pub(crate) fn take_or_new(&mut self, need: usize, fresh: usize) -> (BytesMut, usize) {
        self.take(need)
            .unwrap_or_else(|| (BytesMut::with_capacity(fresh), fresh))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.kept.len()
    }

    /// The bytes of the kept allocations (what they draw from the budget).
    #[cfg(test)]
    pub(crate) fn kept_bytes(&self) -> usize {
        self.kept.iter().map(|k| k.alloc).sum()
    }

    /// Lets every kept allocation go (those still shared with a message go with it).
    pub(crate) fn clear(&mut self) {
        self.kept = Vec::new();
    }
}

/// When a reader has been idle for [`IDLE_RELEASE`]. A busy connection costs one clock
/// read per idle spell and no timer work per message: the timer is set when the reader
/// first goes idle and moved only when it fires early (bytes came and went since), to the
/// end of the current idle spell.
#[derive(Debug, Default)]
pub(crate) struct IdleRelease {
    /// When the current idle spell began; `None` while bytes come in.
    since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl IdleRelease {
    /// Bytes arrived: the idle spell, if any, is over.
    pub(crate) fn busy(&mut self) {
        self.since = None;
    }

    /// Idle now: whether the spell has lasted [`IDLE_RELEASE`] (then the timer is dropped,
    /// and the reader lets its buffers go). Otherwise `cx` is woken when it will have.
    pub(crate) fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> bool {
        let end = *self.since.get_or_insert_with(Instant::now) + IDLE_RELEASE;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(end)));
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= end {
                self.timer = None;
                self.since = None;
                return true;
            }
            timer.as_mut().reset(end);
        }
        false
    }

    /// Nothing is held any more: no timer either.
    #[cfg_attr(not(feature = "byte-stream"), allow(dead_code))]
    pub(crate) fn stop(&mut self) {
        self.timer = None;
        self.since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn an_allocation_comes_back_once_its_messages_are_gone() {
        let mut r = Recycled::default();
        let mut buf = BytesMut::with_capacity(64 * 1024);
        buf.put_bytes(7, 40 * 1024);
        let msg = buf.split_to(40 * 1024).freeze();
        r.keep(buf, 64 * 1024, 1 << 20);
        // Still shared with the message: not reclaimed.
        assert!(r.take(60 * 1024).is_none());
        drop(msg);
        let (back, alloc) = r.take(60 * 1024).expect("reclaimed");
        assert_eq!(alloc, 64 * 1024);
        assert!(back.is_empty() && back.capacity() >= 60 * 1024);
        assert!(r.is_empty());
    }

    #[test]
    fn small_and_huge_allocations_are_not_kept_and_the_oldest_goes_first() {
        let mut r = Recycled::default();
        r.keep(BytesMut::with_capacity(4096), 4096, 1 << 20);
        r.keep(BytesMut::with_capacity(2 << 20), 2 << 20, 1 << 20);
        assert!(r.is_empty());
        for size in [20, 30, 40, 50, 60] {
            r.keep(BytesMut::with_capacity(size << 10), size << 10, 1 << 20);
        }
        assert_eq!(r.kept.len(), KEPT);
        // The 20 KiB one went first.
        assert!(r.kept.iter().all(|k| k.alloc >= 30 << 10));
        r.clear();
        assert!(r.is_empty());
    }

    #[test]
    fn kept_allocations_are_paid_from_the_budget_and_not_kept_beyond_it() {
        let budget = ByteBudget::new(100 << 10);
        let mut r = Recycled::within(Some(budget.clone()));
        r.keep(BytesMut::with_capacity(64 << 10), 64 << 10, 1 << 20);
        assert_eq!(budget.available(), 36 << 10);
        // The budget cannot pay for a second one: not kept.
        r.keep(BytesMut::with_capacity(64 << 10), 64 << 10, 1 << 20);
        assert_eq!(r.len(), 1);
        assert_eq!(budget.available(), 36 << 10);
        r.keep(BytesMut::with_capacity(20 << 10), 20 << 10, 1 << 20);
        assert_eq!((r.len(), budget.available()), (2, 16 << 10));
        // Taken back: its bytes return.
        let (buf, alloc) = r.take(50 << 10).expect("the 64 KiB one");
        assert_eq!((alloc, budget.available()), (64 << 10, 80 << 10));
        drop(buf);
        // At most KEPT: the oldest goes (and its bytes with it) before a new one is paid.
        for _ in 0..KEPT {
            r.keep(BytesMut::with_capacity(20 << 10), 20 << 10, 1 << 20);
        }
        assert_eq!(
            (r.len(), budget.available()),
            (KEPT, (100 - 20 * KEPT) << 10)
        );
        r.clear();
        assert_eq!(budget.available(), 100 << 10);
    }

    #[tokio::test]
    async fn kept_allocations_go_when_a_request_on_the_budget_waits() {
        let budget = ByteBudget::new(100 << 10);
        let mut r = Recycled::within(Some(budget.clone()));
        r.keep(BytesMut::with_capacity(64 << 10), 64 << 10, 1 << 20);
        assert!(!r.under_pressure());
        // A message needs 80 KiB: it waits, and the kept allocation goes at the next look.
        let mut waiter = budget.waiter();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(waiter.poll_acquire(&mut cx, 80 << 10).is_pending());
        assert!(r.under_pressure());
        assert!(r.is_empty());
        let permit = match waiter.poll_acquire(&mut cx, 80 << 10) {
            std::task::Poll::Ready(p) => p.expect("within the budget"),
            std::task::Poll::Pending => panic!("the kept bytes went back"),
        };
        // Nothing is kept while the budget cannot pay, and the pressure was seen once.
        r.keep(BytesMut::with_capacity(64 << 10), 64 << 10, 1 << 20);
        assert!(r.is_empty() && !r.under_pressure());
        drop(permit);
        assert_eq!(budget.available(), 100 << 10);
    }

    #[tokio::test(start_paused = true)]
    async fn the_release_comes_after_an_idle_spell_not_after_a_busy_one() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut idle = IdleRelease::default();
        assert!(!idle.poll_elapsed(&mut cx));
        tokio::time::advance(IDLE_RELEASE / 2).await;
        // Bytes came: the spell starts again when the reader next idles.
        idle.busy();
        assert!(!idle.poll_elapsed(&mut cx));
        tokio::time::advance(IDLE_RELEASE / 2 + Duration::from_millis(1)).await;
        // The first timer fired, but the spell began later: moved, not elapsed.
        assert!(!idle.poll_elapsed(&mut cx));
        tokio::time::advance(IDLE_RELEASE / 2).await;
        assert!(idle.poll_elapsed(&mut cx));
        assert!(idle.timer.is_none());
    }
}
