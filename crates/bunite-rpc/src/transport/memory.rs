//! An in-memory transport pair: two bounded channels of messages.
//!
//! ```
//! let (a, b) = bunite_rpc::transport::memory::pair();
//! # drop((a, b));
//! ```

use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use super::{MaxBytes, MessageSink, MessageSource, Transport, TransportError, TransportInfo};

/// How many messages may wait in each direction before the sink is not ready. Bounds
/// memory when a reader stalls; the protocol's own limits (in-flight calls, stream credit)
/// keep a healthy connection far below it.
pub const CHANNEL_CAPACITY: usize = 1024;

/// One end of an in-memory pair.
#[derive(Debug)]
pub struct MemoryTransport {
    tx: mpsc::Sender<Bytes>,
    rx: mpsc::Receiver<Bytes>,
}

/// Two connected ends.
pub fn pair() -> (MemoryTransport, MemoryTransport) {
    let (a_tx, b_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (b_tx, a_rx) = mpsc::channel(CHANNEL_CAPACITY);
    (
        MemoryTransport { tx: a_tx, rx: a_rx },
        MemoryTransport { tx: b_tx, rx: b_rx },
    )
}

#[cfg(feature = "test-util")]
impl MemoryTransport {
    /// Sends one raw message (for tests that speak frames by hand).
    pub async fn send_raw(&mut self, msg: Bytes) -> Result<(), TransportError> {
        self.tx.send(msg).await.map_err(|_| TransportError::Closed)
    }

    /// Receives one raw message; `None` once the other end closed.
    pub async fn recv_raw(&mut self) -> Option<Bytes> {
        self.rx.recv().await
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
pub struct MemorySink(PollSender<Bytes>);

/// The receiving half of a [`MemoryTransport`].
#[derive(Debug)]
pub struct MemorySource(mpsc::Receiver<Bytes>);

impl Transport for MemoryTransport {
    type Sink = MemorySink;
    type Source = MemorySource;

    fn split(self) -> (MemorySink, MemorySource) {
        (MemorySink(PollSender::new(self.tx)), MemorySource(self.rx))
    }

    fn info(&self) -> TransportInfo {
        TransportInfo::new("memory", None)
    }
}

impl MessageSink for MemorySink {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.0.poll_reserve(cx).map_err(|_| TransportError::Closed)
    }

    fn start_send(&mut self, msg: Bytes) -> Result<(), TransportError> {
        self.0.send_item(msg).map_err(|_| TransportError::Closed)
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        // A message taken is already in the channel.
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        // Dropping our sender ends the peer's source once it has read what we sent.
        self.0.close();
        Poll::Ready(Ok(()))
    }
}

impl MessageSource for MemorySource {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, TransportError>> {
        self.0.poll_recv(cx).map(Ok)
    }
}
