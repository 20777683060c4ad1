//! The allocations of large messages already sent, reused for the next ones.
//!
//! A large message is encoded into the session's scratch buffer and handed to the transport
//! whole, without a copy, so the scratch buffer goes with it and the next large message
//! would be encoded into a fresh allocation. With glibc's allocator that fresh allocation is
//! often fresh pages: a freed block of 64 KiB or more next to the top of the heap is given
//! back to the kernel and faulted in again on the next use (a 64 KiB echo took about 18 page
//! faults a round trip, most of its time after the copies). So the session keeps a handle
//! (a `Bytes` clone) on each of the last [`KEEP`] large messages; once the transport has
//! written one and let go of it, the handle is the only owner left and the next large
//! message is encoded into its allocation.
//!
//! What this holds is bounded: [`KEEP`] allocations of at most [`LARGEST`] bytes, more
//! (up to [`KEEP_MOST`]) while they hold at most [`KEEP_BYTES`] together, and only for
//! [`RELEASE`] after the first of them was kept (a timer of the session), so an idle
//! connection holds none.

use std::time::Duration;

use bytes::Bytes;

/// Messages at least this large keep their allocation for reuse.
pub(crate) const LARGE: usize = 16 * 1024;
/// ... and at most this large: a larger one's allocation is not held past its message.
pub(crate) const LARGEST: usize = 4 << 20;
/// How many allocations are kept at least: a message may still be in the transport while
/// the next one is encoded.
pub(crate) const KEEP: usize = 2;
/// How many are kept while they hold at most [`KEEP_BYTES`]: a caller with several long
/// calls in flight has them all encoded before the first is written (8 echoes of 64 KiB
/// in flight made a fresh allocation for 6 of every 8 calls with 2 kept).
pub(crate) const KEEP_MOST: usize = 8;
/// The most the allocations beyond [`KEEP`] may hold together.
pub(crate) const KEEP_BYTES: usize = 1 << 20;
/// How long spares are kept once the first is made (they are all let go then; a busy
/// connection makes them again, once per `RELEASE`).
pub(crate) const RELEASE: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub(crate) struct Spares {
    /// The messages last sent large, oldest first: each allocation is reusable once this is
    /// its only handle.
    held: Vec<Bytes>,
    /// The bytes of the messages in `held`.
    bytes: usize,
    /// Whether the release timer is armed.
    pub(crate) armed: bool,
}

impl Spares {
    /// The message encoded in `buf`, to send, keeping a handle on its allocation.
    pub fn retire(&mut self, buf: Vec<u8>) -> Bytes {
        let msg = Bytes::from(buf);
        self.held.push(msg.clone());
        self.bytes += msg.len();
        while self.held.len() > KEEP && (self.held.len() > KEEP_MOST || self.bytes > KEEP_BYTES) {
            self.bytes -= self.held.remove(0).len();
        }
        msg
    }

    /// An allocation no message uses any more, as an empty `Vec`.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        let i = self.held.iter().position(Bytes::is_unique)?;
        let held = self.held.remove(i);
        self.bytes -= held.len();
        let mut buf = held.try_into_mut().ok()?;
        // Emptied first, so that turning it into a `Vec` copies nothing.
        buf.clear();
        Some(Vec::from(buf))
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Lets every spare go (the transport may still hold the messages themselves).
    pub fn release(&mut self) {
        self.held = Vec::new();
        self.bytes = 0;
        self.armed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 100);
        v.resize(len, 7);
        v
    }

    #[test]
    fn an_allocation_is_reused_once_its_message_is_gone() {
        let mut spares = Spares::default();
        let msg = spares.retire(message(LARGE));
        let at = msg.as_ptr();
        assert_eq!(msg.len(), LARGE);
        // Still in the transport: not reusable.
        assert!(spares.take().is_none());
        drop(msg);
        let v = spares.take().expect("reusable");
        assert_eq!((v.len(), v.as_ptr()), (0, at));
        assert!(v.capacity() >= LARGE + 100);
        assert!(spares.is_empty());
    }

    #[test]
    fn at_most_keep_most_are_held_and_the_oldest_goes_first() {
        let mut spares = Spares::default();
        let sent: Vec<_> = (0..KEEP_MOST + 1)
            .map(|_| spares.retire(message(LARGE)))
            .collect();
        let newest: Vec<_> = sent[1..].iter().map(|m| m.as_ptr()).collect();
        drop(sent);
        let mut got = Vec::new();
        while let Some(v) = spares.take() {
            got.push(v.as_ptr());
        }
        got.sort();
        let mut want = newest;
        want.sort();
        assert_eq!(got, want);
    }

    /// Long messages: no more than [`KEEP`] once they hold more than [`KEEP_BYTES`].
    #[test]
    fn beyond_keep_they_hold_at_most_keep_bytes() {
        let mut spares = Spares::default();
        let sent: Vec<_> = (0..KEEP_MOST)
            .map(|_| spares.retire(message(KEEP_BYTES / 2)))
            .collect();
        assert_eq!(spares.held.len(), KEEP);
        assert_eq!(spares.bytes, KEEP * KEEP_BYTES / 2);
        drop(sent);
        while spares.take().is_some() {}
        assert_eq!(spares.bytes, 0);
    }

    #[test]
    fn release_lets_every_spare_go() {
        let mut spares = Spares::default();
        drop(spares.retire(message(LARGE)));
        spares.armed = true;
        spares.release();
        assert!(spares.is_empty() && !spares.armed);
        assert!(spares.take().is_none());
    }
}
