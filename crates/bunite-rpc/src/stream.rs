//! Client streams: what opening a stream method returns.
//!
//! A [`ClientStream`] is a `futures::Stream` of values. It returns credit to the server per 8
//! consumed values, and also whenever the consumer waits on an empty buffer with consumed
//! but unreturned values, so no server budget can deadlock it (PROTOCOL §13.1). Dropping it
//! before the end sends `cancel {reason:"client_cancel"}`.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bunite_wire::{CallId, Value};
use futures::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::connection::Shared;
use crate::session::streams::CREDIT_BATCH;
use crate::status::Status;

/// The values of one stream call, as they arrive.
pub struct ClientStream {
    shared: Arc<Shared>,
    id: Option<CallId>,
    rx: mpsc::Receiver<Result<Value, Status>>,
    unreturned: u32,
    done: bool,
}

impl std::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientStream")
            .field("id", &self.id)
            .field("done", &self.done)
            .finish()
    }
}

impl ClientStream {
    pub(crate) fn new(
        shared: Arc<Shared>,
        id: Option<CallId>,
        rx: mpsc::Receiver<Result<Value, Status>>,
    ) -> Self {
        ClientStream {
            shared,
            id,
            rx,
            unreturned: 0,
            done: false,
        }
    }

    /// The stream's call id (absent when it failed before being sent).
    pub fn call_id(&self) -> Option<CallId> {
        self.id
    }

    /// Cancels the stream: sends `cancel {reason:"client_cancel"}`; the stream then ends.
    pub fn cancel(&mut self) {
        self.finish();
    }

    /// Decodes each value into `T` (a value that does not decode ends the stream with
    /// `invalid_argument`).
    pub fn typed<T: DeserializeOwned>(self) -> TypedStream<T> {
        TypedStream {
            inner: self,
            _t: PhantomData,
        }
    }

    fn return_credit(&mut self) {
        if let (Some(id), n) = (self.id, self.unreturned) {
            if n > 0 {
                self.unreturned = 0;
                self.shared.with(|s| s.return_credit(id, n));
            }
        }
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.rx.close();
            if let Some(id) = self.id {
                self.shared.with(|s| s.cancel_client_stream(id));
            }
        }
    }
}

impl Stream for ClientStream {
    type Item = Result<Value, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(v))) => {
                self.unreturned += 1;
                if self.unreturned >= CREDIT_BATCH {
                    self.return_credit();
                }
                Poll::Ready(Some(Ok(v)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                // Waiting on an empty buffer: give back what we consumed (PROTOCOL §13.1).
                self.return_credit();
                Poll::Pending
            }
        }
    }
}

impl Drop for ClientStream {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A [`ClientStream`] whose values decode into `T`.
pub struct TypedStream<T> {
    inner: ClientStream,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TypedStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl<T> TypedStream<T> {
    /// Cancels the stream.
    pub fn cancel(&mut self) {
        self.inner.cancel();
    }
}

impl<T: DeserializeOwned> Stream for TypedStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(v))) => match bunite_wire::from_value(v) {
                Ok(t) => Poll::Ready(Some(Ok(t))),
                Err(e) => {
                    self.inner.finish();
                    Poll::Ready(Some(Err(Status::invalid_argument(format!(
                        "stream value: {e}"
                    )))))
                }
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
