//! The fuzz harness of the opening side (`fuzz/fuzz_targets/sealed_open.rs`; its corpus is
//! replayed by `tests/fuzz_corpus.rs` on stable Rust). Hidden, behind `test-util`.
//!
//! The input is a sequence of operations against one
//! [`SealedSource`](super::SealedSource): raw messages, fresh sealed messages with chosen IVs
//! and plaintexts, replays and bit flips of earlier ones, and our own messages reflected
//! back. A model of the documented rules (replay window, reflection, the next counter under
//! the last salt, failure is final) says what each must give; any difference panics.

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use super::{Cipher, Key, Sealed, IV_LEN, REPLAY_WINDOW};
use crate::transport::memory;
use crate::transport::{MessageSink, MessageSource, Transport, TransportError};

/// What one input did: messages the source accepted, and whether it refused one (which
/// ends the input).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Messages opened.
    pub accepted: usize,
    /// A message was refused.
    pub refused: bool,
}

/// Runs one fuzz input. Panics when the source breaks a rule.
pub fn sealed_open(data: &[u8]) -> Outcome {
    let mut outcome = Outcome::default();
    let key = Key::new([7; 32]);
    let cipher = Cipher::new(&key);
    let (ours, mut theirs) = memory::pair();
    let (mut our_sink, mut source) = Sealed::new(ours, key).split();
    let mut input = Input(data);
    let mut sent: Vec<Bytes> = Vec::new();
    let mut window: VecDeque<u64> = VecDeque::new();
    let mut last: Option<([u8; 8], u32)> = None;
    let mut steps = 0;
    while let Some(op) = input.byte() {
        steps += 1;
        if steps > 512 {
            return outcome;
        }
        // What to deliver, and the plaintext the source must return (None: must refuse).
        let (msg, expect) = match op % 5 {
            0 => (
                Bytes::copy_from_slice(input.take(usize::from(op / 5) * 8)),
                None,
            ),
            1 => {
                let iv: [u8; IV_LEN] = input.array();
                let plaintext = input.take(usize::from(op / 5) * 16).to_vec();
                let Ok(msg) = cipher.seal_iv(&iv, &plaintext) else {
                    return outcome;
                };
                let key = u64::from_be_bytes(iv.last_chunk::<8>().copied().unwrap_or_default());
                let salt = iv.first_chunk::<8>().copied().unwrap_or_default();
                let counter = u32::from_be_bytes(iv.last_chunk::<4>().copied().unwrap_or_default());
                // Under the last accepted salt, only the next counter.
                let in_turn = match last {
                    Some((s, c)) => s != salt || counter == u32::wrapping_add(c, 1),
                    None => true,
                };
                let fresh = !window.contains(&key) && in_turn;
                if fresh {
                    window.push_back(key);
                    if window.len() > REPLAY_WINDOW {
                        window.pop_front();
                    }
                    last = Some((salt, counter));
                }
                let msg = Bytes::from(msg);
                sent.push(msg.clone());
                (msg, fresh.then_some(plaintext))
            }
            2 | 3 if !sent.is_empty() => {
                let i = usize::from(input.byte().unwrap_or(0)) % sent.len();
                let mut msg = sent.get(i).cloned().unwrap_or_default().to_vec();
                if op % 5 == 3 {
                    let at = usize::from(input.byte().unwrap_or(0)) % msg.len().max(1);
                    if let Some(b) = msg.get_mut(at) {
                        *b ^= input.byte().unwrap_or(1) | 1;
                    }
                }
                (Bytes::from(msg), None)
            }
            _ => {
                // Our own message, reflected: refused even though it authenticates.
                let plaintext = Bytes::copy_from_slice(input.take(usize::from(op / 5)));
                if poll(|cx| our_sink.poll_ready(cx)).is_err()
                    || our_sink.start_send(plaintext).is_err()
                {
                    return outcome;
                }
                match futures::executor::block_on(theirs.recv_raw()) {
                    Some(msg) => (msg, None),
                    None => return outcome,
                }
            }
        };
        if futures::executor::block_on(theirs.send_raw(msg)).is_err() {
            return outcome;
        }
        match (poll(|cx| source.poll_recv(cx)), expect) {
            (Ok(Some(got)), Some(want)) => {
                assert_eq!(got, want, "step {steps}");
                outcome.accepted += 1;
            }
            (Err(TransportError::Protocol(_)), None) => {
                // Failure is final: nothing more is read.
                let again = poll(|cx| source.poll_recv(cx));
                assert!(matches!(again, Err(TransportError::Closed)), "{again:?}");
                outcome.refused = true;
                return outcome;
            }
            (got, want) => panic!("step {steps}: got {got:?}, model says {want:?}"),
        }
    }
    outcome
}

/// Polls once; the memory channel is never empty or full here, so `Pending` is a bug.
fn poll<T>(mut f: impl FnMut(&mut Context<'_>) -> Poll<T>) -> T {
    match f(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the source or sink waited on a ready channel"),
    }
}

/// The fuzz input, consumed from the front.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let head = self.take(N);
        if let Some(dst) = out.get_mut(..head.len()) {
            dst.copy_from_slice(head);
        }
        out
    }
}
