//! The emitter style of stream handler: an async function that pushes values into an
//! [`ValueEmitter`] instead of returning a `Stream`. (The typed API's
//! [`typed::Emitter`](crate::typed::Emitter) wraps it.)
//!
//! `send` completes only when the runtime takes the value, and the runtime takes values only
//! while the client has granted credit, so a producer can never run ahead of the credit
//! window. When the client cancels, the producer future is dropped (its
//! [`CallContext`](crate::CallContext) is signalled too).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bunite_wire::{Outgoing, Value};
use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use serde::Serialize;

use crate::handler::{BoxFuture, OutgoingStream, ValueStream};
use crate::status::{Code, Status};

/// Where an emitter-style stream handler sends its values.
#[derive(Debug)]
pub struct ValueEmitter {
    tx: mpsc::Sender<Outgoing>,
}

impl ValueEmitter {
    /// Sends one value; waits until the stream takes it. Fails `cancelled` once the stream
    /// is gone.
    pub async fn send(&mut self, value: Value) -> Result<(), Status> {
        self.send_outgoing(Outgoing::value(value)).await
    }

    /// Serializes and sends one value.
    pub async fn emit<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Status> {
        let value = bunite_wire::to_value(value).map_err(|e| Status::internal(e.to_string()))?;
        self.send(value).await
    }

    /// Sends one value to be serialized straight into its frame ([`Outgoing`]); waits
    /// until the stream takes it.
    ///
    /// Not cancel-safe for a retry: the value is handed to the stream at the first poll
    /// that finds the previous one taken, and the rest of the wait is for the stream to
    /// take it. Dropped after that, the value still goes out, so sending it again (after a
    /// `timeout`, or in a `select!` loop) sends it twice. The same holds for
    /// [`send`](Self::send), [`emit`](Self::emit) and
    /// [`typed::Emitter::send`](crate::typed::Emitter::send).
    pub async fn send_outgoing(&mut self, value: Outgoing) -> Result<(), Status> {
        self.tx
            .send(value)
            .await
            .map_err(|_| Status::new(Code::Cancelled, "stream cancelled"))
    }
}

/// Turns a producer into a stream: values it emits, then its error if it fails.
pub fn emitter_stream<F, Fut>(produce: F) -> ValueStream
where
    F: FnOnce(ValueEmitter) -> Fut,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    crate::handler::values_of(outgoing_stream(produce))
}

/// [`emitter_stream`] whose values stay [`Outgoing`]: typed ones are serialized when their
/// frames are written.
pub fn outgoing_stream<F, Fut>(produce: F) -> OutgoingStream
where
    F: FnOnce(ValueEmitter) -> Fut,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(0);
    Box::pin(EmitterStream {
        producer: Some(Box::pin(produce(ValueEmitter { tx }))),
        rx,
        error: None,
    })
}

struct EmitterStream {
    producer: Option<BoxFuture<Result<(), Status>>>,
    rx: mpsc::Receiver<Outgoing>,
    error: Option<Status>,
}

impl Stream for EmitterStream {
    type Item = Result<Outgoing, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(p) = self.producer.as_mut() {
            if let Poll::Ready(r) = p.as_mut().poll(cx) {
                // Completing drops the producer's Emitter, so `rx` ends after the values
                // already sent: those go out before the error.
                self.producer = None;
                self.error = r.err();
            }
        }
        match self.rx.poll_next_unpin(cx) {
            Poll::Ready(Some(v)) => Poll::Ready(Some(Ok(v))),
            Poll::Ready(None) => Poll::Ready(self.error.take().map(Err)),
            Poll::Pending => Poll::Pending,
        }
    }
}
