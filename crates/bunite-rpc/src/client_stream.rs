//! Client streams: what opening a stream method returns.
//!
//! A [`ClientStream`] is a `futures::Stream` of values. It returns credit to the server per 8
//! consumed values, and also whenever the consumer waits on an empty buffer with consumed
//! but unreturned values, so no server budget can deadlock it (PROTOCOL §13.1). Dropping it
//! before the end sends `cancel {reason:"client_cancel"}`.
//!
//! The connection's driver pushes values into a `StreamQueue` shared with the consumer;
//! the session bounds how many it may hold (the credit window), so the queue is bounded
//! whatever the server does.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll, Waker};

use bunite_wire::{CallId, Value};
use futures::Stream;
use serde::de::DeserializeOwned;

use crate::connection::{Command, Shared};
use crate::error::Error;
use crate::session::CREDIT_BATCH;
use bunite_wire::Payload;

/// Values of one client stream, between the driver and the consumer.
#[derive(Debug, Default)]
pub(crate) struct StreamQueue {
    state: Mutex<QueueState>,
    /// Whether the stream still holds its in-flight reservation (PROTOCOL §9): given back
    /// once, by the driver as it hands over the end or by the consumer as it stops, whichever
    /// comes first (the swap decides, without a lock).
    reserved: AtomicBool,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Payload>,
    /// Set once the stream ended: `Some(None)` cleanly, `Some(Some(e))` with an error.
    end: Option<Option<Error>>,
    waker: Option<Waker>,
}

impl StreamQueue {
    /// The queue of a stream that holds a reservation (`reserved`), or of one that failed
    /// before it took one.
    pub fn new(reserved: bool) -> Arc<Self> {
        Arc::new(StreamQueue {
            state: Mutex::default(),
            reserved: AtomicBool::new(reserved),
        })
    }

    /// True once, for whoever gives the stream's reservation back.
    pub fn take_reservation(&self) -> bool {
        self.reserved.swap(false, Ordering::AcqRel)
    }

    /// One value (the driver).
    pub fn push(&self, item: Payload) {
        self.update(|s| s.items.push_back(item));
    }

    /// The end (the driver).
    pub fn end(&self, error: Option<Error>) {
        self.update(|s| {
            if s.end.is_none() {
                s.end = Some(error);
            }
        });
    }

    fn update(&self, f: impl FnOnce(&mut QueueState)) {
        let waker = {
            let mut s = self.lock();
            f(&mut s);
            s.waker.take()
        };
        // Woken outside the lock.
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The queue's state. Each change to it is one step that a panic cannot leave half
    /// done (what can panic under the lock is the consumer's waker, foreign code, as it is
    /// cloned or replaced), so a poisoned lock still holds a consistent state: it is used
    /// as it is, and no value is dropped, nor an error taken for a clean end, because of it.
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the consumer finds.
enum Next {
    Item(Payload),
    End(Option<Error>),
    Empty,
}

impl StreamQueue {
    fn poll_take(&self, cx: &mut Context<'_>) -> Next {
        let mut s = self.lock();
        if let Some(item) = s.items.pop_front() {
            return Next::Item(item);
        }
        if let Some(end) = s.end.take() {
            return Next::End(end);
        }
        // Read empty: the room a burst took (up to the window, 1,024 values) goes.
        if s.items.capacity() > crate::hashing::KEPT_ROOM {
            s.items = VecDeque::new();
        }
        s.waker = Some(cx.waker().clone());
        Next::Empty
    }
}

/// The values of one stream call, as they arrive.
pub struct ClientStream {
    shared: Arc<Shared>,
    id: Option<CallId>,
    queue: Arc<StreamQueue>,
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
    pub(crate) fn new(shared: Arc<Shared>, id: Option<CallId>, queue: Arc<StreamQueue>) -> Self {
        ClientStream {
            shared,
            id,
            queue,
            unreturned: 0,
            done: false,
        }
    }

    /// A stream that fails at once with `error`; nothing was sent.
    pub(crate) fn failed(shared: Arc<Shared>, error: Error) -> Self {
        let queue = StreamQueue::new(false);
        queue.end(Some(error));
        ClientStream::new(shared, None, queue)
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
                self.shared.send(Command::Credit(id, n));
            }
        }
    }

    /// The consumer stops before the end: the stream no longer counts against the
    /// in-flight limit, and the connection is told to cancel it.
    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            // The cancel is queued before the slot is given back, so a call that takes the
            // slot reaches the session after it (see `client::ReplyGuard::abandon`).
            if let Some(id) = self.id {
                self.shared.send(Command::CancelStream(id));
            }
            if self.queue.take_reservation() {
                self.shared.unreserve(1);
            }
        }
    }

    /// The next raw value.
    fn poll_payload(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Payload, Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.id.is_none() {
            // Failed before it was sent: its error is ready at once.
            ready!(crate::client::poll_local_failure(cx));
        }
        match self.queue.poll_take(cx) {
            Next::Item(item) => {
                self.unreturned += 1;
                if self.unreturned >= CREDIT_BATCH {
                    self.return_credit();
                }
                Poll::Ready(Some(Ok(item)))
            }
            Next::End(error) => {
                // The server ended the stream: nothing to cancel, but the session counts
                // the values of an ended stream, and its error, until they are read.
                self.done = true;
                if let Some(id) = self.id {
                    self.shared.send(Command::CancelStream(id));
                }
                Poll::Ready(error.map(Err))
            }
            Next::Empty => {
                // Waiting on an empty buffer: give back what we consumed (PROTOCOL §13.1).
                self.return_credit();
                Poll::Pending
            }
        }
    }
}

impl Stream for ClientStream {
    type Item = Result<Value, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_payload(cx).map(|item| {
            item.map(|r| {
                r.and_then(|p| {
                    p.into_value()
                        .map_err(|e| Error::bad_answer(format!("stream value: {e}")))
                })
            })
        })
    }
}

impl Drop for ClientStream {
    /// Cancels a stream still running: a command to the connection, never a wait.
    fn drop(&mut self) {
        self.finish();
    }
}

/// A [`ClientStream`] whose values decode into `T`, straight from what arrived.
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
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.poll_payload(cx) {
            Poll::Ready(Some(Ok(p))) => match p.deserialize() {
                Ok(t) => Poll::Ready(Some(Ok(t))),
                Err(e) => {
                    self.inner.finish();
                    Poll::Ready(Some(Err(Error::bad_answer(format!("stream value: {e}")))))
                }
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;

    /// A panic under the queue's lock (poisoning it) loses nothing: a value pushed after it
    /// still reaches the consumer, and the end that follows is the one pushed, not a clean
    /// end made up for the poison.
    #[test]
    fn a_poisoned_queue_still_delivers_its_values_and_its_end() {
        let queue = StreamQueue::new(true);
        let poisoner = std::panic::catch_unwind(|| {
            let _held = queue.state.lock();
            panic!("a panic under the queue's lock");
        });
        assert!(poisoner.is_err() && queue.state.is_poisoned());
        queue.push(Payload::from(Value::from(7u32)));
        queue.end(Some(Error::closed()));
        let mut cx = Context::from_waker(noop_waker_ref());
        match queue.poll_take(&mut cx) {
            Next::Item(p) => assert_eq!(p.into_value().ok(), Some(Value::from(7u32))),
            _ => panic!("the value pushed after the poison was lost"),
        }
        match queue.poll_take(&mut cx) {
            Next::End(Some(e)) => assert_eq!(e.code(), Error::closed().code()),
            Next::End(None) => panic!("a clean end instead of the error pushed"),
            _ => panic!("no end after the value"),
        }
    }

    /// A server that once fills a stream's window (1,024 values, however short) left its
    /// queue with room for 1,024 values of 88 bytes each for as long as the stream lived,
    /// hours for a subscription. Once the consumer has read them and waits, the room goes.
    #[test]
    fn a_queue_read_empty_gives_back_the_room_a_burst_took() {
        let queue = StreamQueue::new(true);
        for i in 0..1_024u32 {
            queue.push(Payload::from(Value::from(i)));
        }
        assert!(queue.lock().items.capacity() >= 1_024);
        let mut cx = Context::from_waker(noop_waker_ref());
        for i in 0..1_024u32 {
            match queue.poll_take(&mut cx) {
                Next::Item(p) => assert_eq!(p.into_value().ok(), Some(Value::from(i))),
                _ => panic!("value {i} lost"),
            }
        }
        assert!(matches!(queue.poll_take(&mut cx), Next::Empty));
        let room = queue.lock().items.capacity();
        assert!(
            room <= crate::hashing::KEPT_ROOM,
            "room for {room} values kept"
        );
        // It still works.
        queue.push(Payload::from(Value::from(7u32)));
        assert!(matches!(queue.poll_take(&mut cx), Next::Item(_)));
    }
}
