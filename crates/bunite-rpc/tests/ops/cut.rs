//! [`Cuttable`]: a transport whose link the case can kill.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bunite_rpc::transport::{
    ByteBudget, MaxBytes, MessageSink, MessageSource, Transport, TransportError, TransportInfo,
};
use bytes::Bytes;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A transport whose link dies when its token fires: both ends' sources and sinks fail
/// `ConnectionReset` from then on, as when a network drops (the transports are dropped by
/// their drivers as they end).
pub struct Cuttable<T>(pub T, pub CancellationToken);

pub struct CutSink<S> {
    inner: S,
    cut: CancellationToken,
}

pub struct CutSource<S> {
    inner: S,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

fn reset() -> TransportError {
    std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()
}

impl<T: Transport> Transport for Cuttable<T> {
    type Sink = CutSink<T::Sink>;
    type Source = CutSource<T::Source>;

    fn split(self) -> (Self::Sink, Self::Source) {
        let (sink, source) = self.0.split();
        let cut = Box::pin(self.1.clone().cancelled_owned());
        let sink = CutSink {
            inner: sink,
            cut: self.1,
        };
        (sink, CutSource { inner: source, cut })
    }

    fn info(&self) -> TransportInfo {
        self.0.info()
    }
}

/// So that the sealed pipe, which sets the frame limit of what it wraps, can wrap it.
impl<T: MaxBytes> MaxBytes for Cuttable<T> {
    fn max_bytes(&self) -> usize {
        self.0.max_bytes()
    }

    fn set_max_bytes(&mut self, max_bytes: usize) {
        self.0.set_max_bytes(max_bytes)
    }
}

impl<S: MessageSource> MessageSource for CutSource<S> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, TransportError>> {
        if self.cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(reset()));
        }
        self.inner.poll_recv(cx)
    }

    fn pause(&mut self) {
        self.inner.pause();
    }

    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.poll_linger(cx)
    }
}

impl<S: MessageSink> MessageSink for CutSink<S> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        if self.cut.is_cancelled() {
            return Poll::Ready(Err(reset()));
        }
        self.inner.poll_ready(cx)
    }

    fn start_send(&mut self, msg: Bytes) -> Result<(), TransportError> {
        if self.cut.is_cancelled() {
            return Err(reset());
        }
        self.inner.start_send(msg)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        if self.cut.is_cancelled() {
            return Poll::Ready(Err(reset()));
        }
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
