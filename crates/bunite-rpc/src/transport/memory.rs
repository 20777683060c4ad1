//! An in-memory transport pair: two channels of messages, each bounded to
//! [`CHANNEL_CAPACITY`] messages.
//!
//! ```
//! let (a, b) = bunite_rpc::transport::memory::pair();
//! # drop((a, b));
//! ```
//!
//! Each direction is an unbounded tokio channel plus a count of the messages in it: the
//! sink is ready while fewer than [`CHANNEL_CAPACITY`] wait, and the source wakes a waiting
//! sink as it drains. (tokio's bounded channel, driven through `PollSender`, costs a boxed
//! acquire future and a semaphore round per message: a visible share of an in-memory round
//! trip.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio::sync::mpsc;

use super::{MaxBytes, MessageSink, MessageSource, Transport, TransportError, TransportInfo};

/// How many messages may wait in each direction before the sink is not ready. Bounds
/// memory when a reader stalls; the protocol's own limits (in-flight calls, stream credit)
/// keep a healthy connection far below it.
pub const CHANNEL_CAPACITY: usize = 1024;

/// The count of one direction, shared by its two ends.
#[derive(Debug, Default)]
struct Queued {
    messages: AtomicUsize,
    /// A sink that found the channel full.
    sink: AtomicWaker,
}

/// One end of an in-memory pair.
#[derive(Debug)]
pub struct MemoryTransport {
    tx: mpsc::UnboundedSender<Bytes>,
    rx: mpsc::UnboundedReceiver<Bytes>,
    sent: Arc<Queued>,
    received: Arc<Queued>,
}

/// Two connected ends.
pub fn pair() -> (MemoryTransport, MemoryTransport) {
    let (a_tx, b_rx) = mpsc::unbounded_channel();
    let (b_tx, a_rx) = mpsc::unbounded_channel();
    let (a_to_b, b_to_a) = (Arc::<Queued>::default(), Arc::<Queued>::default());
    (
        MemoryTransport {
            tx: a_tx,
            rx: a_rx,
            sent: Arc::clone(&a_to_b),
            received: Arc::clone(&b_to_a),
        },
        MemoryTransport {
            tx: b_tx,
            rx: b_rx,
            sent: b_to_a,
            received: a_to_b,
        },
    )
}

#[cfg(feature = "test-util")]
impl MemoryTransport {
    /// Sends one raw message (for tests that speak frames by hand). Does not wait for room.
    pub async fn send_raw(&mut self, msg: Bytes) -> Result<(), TransportError> {
        self.sent.messages.fetch_add(1, Ordering::AcqRel);
        self.tx.send(msg).map_err(|_| TransportError::Closed)
    }

    /// Receives one raw message; `None` once the other end closed.
    pub async fn recv_raw(&mut self) -> Option<Bytes> {
        let msg = self.rx.recv().await?;
        took(&self.received);
        Some(msg)
    }
}

/// The in-memory pair carries messages of any size: the connection's own `max_bytes` check
/// applies. Setting a bound is a no-op.
impl MaxBytes for MemoryTransport {
    fn max_bytes(&self) -> usize {
        usize::MAX
    }

    fn set_max_bytes(&mut self, _max_bytes: usize) {}
}

/// The sending half of a [`MemoryTransport`]: the channel itself is its buffer.
#[derive(Debug)]
pub struct MemorySink {
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    queued: Arc<Queued>,
}

/// The receiving half of a [`MemoryTransport`].
#[derive(Debug)]
pub struct MemorySource {
    rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<Queued>,
}

impl Transport for MemoryTransport {
    type Sink = MemorySink;
    type Source = MemorySource;

    fn split(self) -> (MemorySink, MemorySource) {
        let sink = MemorySink {
            tx: Some(self.tx),
            queued: self.sent,
        };
        let source = MemorySource {
            rx: self.rx,
            queued: self.received,
        };
        (sink, source)
    }

    fn info(&self) -> TransportInfo {
        TransportInfo::new("memory", None)
    }
}

/// The source took one message: one more fits; wake a sink that waited for room.
fn took(queued: &Queued) {
    if queued.messages.fetch_sub(1, Ordering::AcqRel) == CHANNEL_CAPACITY {
        queued.sink.wake();
    }
}

impl MessageSink for MemorySink {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let Some(tx) = &self.tx else {
            return Poll::Ready(Err(TransportError::Closed));
        };
        if tx.is_closed() {
            return Poll::Ready(Err(TransportError::Closed));
        }
        if self.queued.messages.load(Ordering::Acquire) < CHANNEL_CAPACITY {
            return Poll::Ready(Ok(()));
        }
        self.queued.sink.register(cx.waker());
        // The source may have drained between the load and the registration.
        if self.queued.messages.load(Ordering::Acquire) < CHANNEL_CAPACITY {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    fn start_send(&mut self, msg: Bytes) -> Result<(), TransportError> {
        let tx = self.tx.as_ref().ok_or(TransportError::Closed)?;
        self.queued.messages.fetch_add(1, Ordering::AcqRel);
        tx.send(msg).map_err(|_| TransportError::Closed)
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        // A message taken is already in the channel.
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        // Dropping our sender ends the peer's source once it has read what we sent.
        self.tx = None;
        Poll::Ready(Ok(()))
    }
}

impl MessageSource for MemorySource {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, TransportError>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(msg)) => {
                took(&self.queued);
                Poll::Ready(Ok(Some(msg)))
            }
            Poll::Ready(None) => Poll::Ready(Ok(None)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{MessageSinkExt, MessageSourceExt};

    #[tokio::test]
    async fn a_full_channel_waits_for_the_reader_and_keeps_order() {
        let (a, b) = pair();
        let (mut sink, _a_source) = a.split();
        let (_b_sink, mut source) = b.split();
        for i in 0..CHANNEL_CAPACITY {
            sink.feed(Bytes::from(i.to_be_bytes().to_vec()))
                .await
                .unwrap();
        }
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(
            sink.poll_ready(&mut cx).is_pending(),
            "full at the capacity"
        );
        let first = source.recv().await.unwrap().unwrap();
        assert_eq!(first, Bytes::from(0usize.to_be_bytes().to_vec()));
        assert!(sink.poll_ready(&mut cx).is_ready(), "one more fits");
        sink.feed(Bytes::from_static(b"last")).await.unwrap();
        for i in 1..CHANNEL_CAPACITY {
            let msg = source.recv().await.unwrap().unwrap();
            assert_eq!(msg, Bytes::from(i.to_be_bytes().to_vec()));
        }
        assert_eq!(
            source.recv().await.unwrap().unwrap(),
            Bytes::from_static(b"last")
        );
        sink.close().await.unwrap();
        assert_eq!(
            source.recv().await.unwrap(),
            None,
            "closing ends the peer's source"
        );
    }
}
