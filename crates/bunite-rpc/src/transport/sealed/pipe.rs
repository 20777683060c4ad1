//! [`Sealed`]: any transport with every message sealed; our IVs, the replay window and the
//! reflection check (see the parent module's docs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use bytes::Bytes;

use super::{Cipher, Key, OpenError, IV_LEN, OVERHEAD};
use crate::transport::{
    ByteBudget, MaxBytes, MessageSink, MessageSource, Transport, TransportError, TransportInfo,
};

/// How many accepted IVs a [`SealedSource`] remembers to refuse replays.
pub const REPLAY_WINDOW: usize = 1024;

/// Any transport, with every message sealed under one key.
#[derive(Debug)]
pub struct Sealed<T> {
    inner: T,
    cipher: Cipher,
}

impl<T: Transport + MaxBytes> Sealed<T> {
    /// Wraps `inner`; both peers must use the same key. `inner`'s `max_bytes` becomes the
    /// bound on frames: the inner bound grows by [`OVERHEAD`] to make room for the seal.
    pub fn new(mut inner: T, key: Key) -> Self {
        let frames = inner.max_bytes();
        inner.set_max_bytes(frames.saturating_add(OVERHEAD));
        Sealed {
            inner,
            cipher: Cipher::new(&key),
        }
    }
}

impl<T: MaxBytes> MaxBytes for Sealed<T> {
    fn max_bytes(&self) -> usize {
        self.inner.max_bytes().saturating_sub(OVERHEAD)
    }

    fn set_max_bytes(&mut self, max_bytes: usize) {
        self.inner.set_max_bytes(max_bytes.saturating_add(OVERHEAD));
    }
}

/// The salts of our own IVs, shared by the sink (which adds one every 2^32 messages) and
/// the source (which refuses messages that carry one). Read without locking while nothing
/// changes.
#[derive(Debug, Default)]
struct OurSalts {
    generation: AtomicU64,
    salts: Mutex<Vec<[u8; 8]>>,
}

impl OurSalts {
    fn add(&self, salt: [u8; 8]) {
        self.salts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(salt);
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// The sending half of a [`Sealed`] transport.
#[derive(Debug)]
pub struct SealedSink<S> {
    inner: S,
    cipher: Cipher,
    salt: [u8; 8],
    counter: u32,
    ours: Arc<OurSalts>,
}

/// The receiving half of a [`Sealed`] transport.
#[derive(Debug)]
pub struct SealedSource<S> {
    inner: S,
    cipher: Cipher,
    /// The last [`REPLAY_WINDOW`] accepted IVs (their last 8 bytes), oldest overwritten.
    seen: Vec<u64>,
    next: usize,
    ours: Arc<OurSalts>,
    /// Our salts as of `generation`.
    known: (u64, Vec<[u8; 8]>),
    /// The salt and counter of the last IV accepted: a message with the same salt must
    /// carry the next counter (a peer that draws its IVs as ours do).
    last: Option<([u8; 8], u32)>,
    failed: bool,
}

impl<T: Transport> Transport for Sealed<T> {
    type Sink = SealedSink<T::Sink>;
    type Source = SealedSource<T::Source>;

    /// The inner transport's, its kind suffixed `+sealed`.
    fn info(&self) -> TransportInfo {
        let inner = self.inner.info();
        let kind = match inner.kind {
            "memory" => "memory+sealed",
            "tcp" => "tcp+sealed",
            "tls" => "tls+sealed",
            "unix" => "unix+sealed",
            "stdio" => "stdio+sealed",
            "child" => "child+sealed",
            "ws" => "ws+sealed",
            "wss" => "wss+sealed",
            _ => "sealed",
        };
        TransportInfo::new(kind, inner.peer)
    }

    fn split(self) -> (Self::Sink, Self::Source) {
        let (sink, source) = self.inner.split();
        let ours = Arc::new(OurSalts::default());
        let source = SealedSource {
            inner: source,
            cipher: self.cipher.clone(),
            seen: Vec::new(),
            next: 0,
            ours: Arc::clone(&ours),
            known: (0, Vec::new()),
            last: None,
            failed: false,
        };
        let sink = SealedSink {
            inner: sink,
            cipher: self.cipher,
            salt: [0; 8],
            counter: u32::MAX,
            ours,
        };
        (sink, source)
    }
}

impl<S> SealedSink<S> {
    /// The next IV: `salt ‖ counter`, with a fresh salt before the first message and after
    /// every 2^32.
    fn next_iv(&mut self) -> Result<[u8; IV_LEN], TransportError> {
        if self.counter == u32::MAX {
            OsRng
                .try_fill_bytes(&mut self.salt)
                .map_err(|e| TransportError::Io(std::io::Error::other(e.to_string())))?;
            self.ours.add(self.salt);
            self.counter = 0;
        } else {
            self.counter += 1;
        }
        let mut iv = [0u8; IV_LEN];
        let (salt, counter) = iv.split_at_mut(8);
        salt.copy_from_slice(&self.salt);
        counter.copy_from_slice(&self.counter.to_be_bytes());
        Ok(iv)
    }
}

impl<S: MessageSink> MessageSink for SealedSink<S> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.inner.poll_ready(cx)
    }

    fn start_send(&mut self, msg: Bytes) -> Result<(), TransportError> {
        let iv = self.next_iv()?;
        let sealed = self.cipher.seal_iv(&iv, &msg)?;
        self.inner.start_send(sealed.into())
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.inner.poll_flush(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.inner.poll_close(cx)
    }

    fn written(&self) -> u64 {
        self.inner.written()
    }

    fn queued(&self) -> usize {
        self.inner.queued()
    }

    fn send_budget(&self) -> Option<ByteBudget> {
        self.inner.send_budget()
    }
}

impl<S> SealedSource<S> {
    /// Refuses our own IVs, IVs already accepted, and an IV with the salt of the last one
    /// accepted but not its next counter; remembers `iv`.
    fn admit(&mut self, iv: &[u8; IV_LEN]) -> Result<(), OpenError> {
        let generation = self.ours.generation.load(Ordering::Acquire);
        if generation != self.known.0 {
            let salts = self.ours.salts.lock().unwrap_or_else(|e| e.into_inner());
            self.known = (generation, salts.clone());
        }
        let salt = iv.first_chunk::<8>().copied().unwrap_or_default();
        if self.known.1.contains(&salt) {
            return Err(OpenError::Reflected);
        }
        // The last 8 bytes: a peer's counter and most of its salt, or 64 random bits.
        let key = u64::from_be_bytes(iv.last_chunk::<8>().copied().unwrap_or_default());
        if self.seen.contains(&key) {
            return Err(OpenError::Replay);
        }
        // A peer that sends `salt ‖ counter` sends its counters one after another under one
        // salt: a gap or a step back is a message dropped, reordered or replayed from beyond
        // the window. (Random IVs never repeat a salt: nothing to check.)
        let counter = u32::from_be_bytes(iv.last_chunk::<4>().copied().unwrap_or_default());
        if let Some((last_salt, last)) = self.last {
            if last_salt == salt && counter != last.wrapping_add(1) {
                return Err(OpenError::OutOfSequence {
                    after: last,
                    got: counter,
                });
            }
        }
        self.last = Some((salt, counter));
        if self.seen.len() < REPLAY_WINDOW {
            self.seen.push(key);
        } else if let Some(slot) = self.seen.get_mut(self.next) {
            *slot = key;
        }
        self.next = (self.next + 1) % REPLAY_WINDOW;
        Ok(())
    }
}

impl<S: MessageSource> MessageSource for SealedSource<S> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, TransportError>> {
        if self.failed {
            return Poll::Ready(Err(TransportError::Closed));
        }
        let msg = match ready!(self.inner.poll_recv(cx)) {
            Ok(Some(msg)) => msg,
            Ok(None) => return Poll::Ready(Ok(None)),
            // In frame bytes, as the connection's `max_bytes` counts them.
            Err(TransportError::TooLarge { len, max }) => {
                return Poll::Ready(Err(TransportError::TooLarge {
                    len: len.saturating_sub(OVERHEAD as u64),
                    max: max.saturating_sub(OVERHEAD),
                }))
            }
            Err(e) => return Poll::Ready(Err(e)),
        };
        let opened = self
            .cipher
            .open_bytes(msg)
            .and_then(|(plaintext, iv)| self.admit(&iv).map(|()| plaintext));
        self.failed = opened.is_err();
        Poll::Ready(Ok(Some(opened?)))
    }

    fn pause(&mut self) {
        self.inner.pause();
    }

    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.poll_linger(cx)
    }
}
