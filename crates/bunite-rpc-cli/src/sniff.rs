//! Telling a stream method from a unary one without a schema: `call` sends an ordinary
//! `call` frame either way (PROTOCOL §10), and a stream method answers it with `stream`
//! frames, which the library fails as a bad answer (`call method returned stream frame`;
//! `call … ticks` once waited forever) without saying what to do instead. [`Sniff`] wraps the transport and decodes each inbound message a second time
//! with its own decoder (the codec is stateful, so it sees every message, in order); the
//! first `stream` frame that answers one of our calls is reported through [`Sniffed`].
//!
//! The CLI never opens a stream in `call` and serves nothing, so any `next`, `end` or
//! `error` stream frame it receives answers a unary call of ours.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bunite_rpc::transport::{MessageSource, Transport, TransportError, TransportInfo};
use bunite_rpc::wire::{self, Decoder, Frame, StreamEvent};
use bytes::Bytes;
use tokio::sync::Notify;

/// What the sniffer saw: the call id of the first stream frame answering a call of ours.
#[derive(Debug, Clone, Default)]
pub struct Sniffed(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    stream_answer: Mutex<Option<u64>>,
    notify: Notify,
}

impl Sniffed {
    /// Waits until a stream frame answers one of our calls; its call id.
    pub async fn stream_answer(&self) -> u64 {
        loop {
            let notified = self.0.notify.notified();
            if let Some(id) = *self
                .0
                .stream_answer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
            {
                return id;
            }
            notified.await;
        }
    }

    fn saw_stream(&self, id: u64) {
        let mut seen = self
            .0
            .stream_answer
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if seen.is_none() {
            *seen = Some(id);
            self.0.notify.notify_waiters();
        }
    }
}

/// A transport whose inbound frames are also decoded here.
pub struct Sniff<T> {
    inner: T,
    sniffed: Sniffed,
}

impl<T> Sniff<T> {
    pub fn new(inner: T, sniffed: &Sniffed) -> Self {
        Sniff {
            inner,
            sniffed: sniffed.clone(),
        }
    }
}

impl<T: Transport> Transport for Sniff<T> {
    type Sink = T::Sink;
    type Source = SniffSource<T::Source>;

    fn split(self) -> (T::Sink, SniffSource<T::Source>) {
        let (sink, source) = self.inner.split();
        let source = SniffSource {
            inner: source,
            decoder: Some(Decoder::new(wire::DecodeLimits::default())),
            sniffed: self.sniffed,
        };
        (sink, source)
    }

    fn info(&self) -> TransportInfo {
        self.inner.info()
    }
}

/// The receiving half of [`Sniff`].
pub struct SniffSource<S> {
    inner: S,
    /// `None` once a message failed to decode (the connection reports that itself).
    decoder: Option<Decoder>,
    sniffed: Sniffed,
}

impl<S: MessageSource> MessageSource for SniffSource<S> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, TransportError>> {
        let polled = self.inner.poll_recv(cx);
        if let (Poll::Ready(Ok(Some(msg))), Some(decoder)) = (&polled, &mut self.decoder) {
            match decoder.decode_frame(msg) {
                Ok(Frame::Stream(f)) if !matches!(f.event, StreamEvent::Credit(_)) => {
                    self.sniffed.saw_stream(f.id.0)
                }
                Ok(_) => {}
                Err(_) => self.decoder = None,
            }
        }
        polled
    }
}
