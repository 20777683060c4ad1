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
//! it has been idle for [`IDLE_RELEASE`], and the reader lets everything go then.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::{Instant, Sleep};

/// How long a connection stays idle (nothing pending, nothing arriving) before its read
/// buffers are let go.
pub const IDLE_RELEASE: Duration = Duration::from_millis(100);

/// How many allocations of earlier reads are kept.
const KEPT: usize = 4;

/// Allocations smaller than this are not kept: small ones come back warm from the allocator.
const KEEP_MIN: usize = 16 * 1024;

/// Empty handles on the allocations of earlier reads, with their sizes, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Recycled {
    kept: Vec<(BytesMut, usize)>,
}

impl Recycled {
    /// Keeps `buf`, whose allocation is `alloc` bytes, if that is between [`KEEP_MIN`] and
    /// `max`; the oldest kept one goes when [`KEPT`] are held. Its content is dropped.
    pub(crate) fn keep(&mut self, mut buf: BytesMut, alloc: usize, max: usize) {
        if !(KEEP_MIN..=max).contains(&alloc) {
            return;
        }
        buf.clear();
        if self.kept.len() == KEPT {
            self.kept.remove(0);
        }
        self.kept.push((buf, alloc));
    }

    /// A kept allocation with room for `need` bytes that no message uses any more, empty,
    /// with its size.
    pub(crate) fn take(&mut self, need: usize) -> Option<(BytesMut, usize)> {
        let i = self
            .kept
            .iter_mut()
            .position(|(b, _)| b.try_reclaim(need))?;
        Some(self.kept.remove(i))
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
        assert!(r.kept.iter().all(|(_, a)| *a >= 30 << 10));
        r.clear();
        assert!(r.is_empty());
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
