//! What the connection's driver writes together: the answers to a burst of calls start
//! going out before the whole burst is read, and the rest still go out in few writes.

mod common;

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bunite_rpc::transport::{MessageSink, Transport, TransportError};
use bunite_rpc::wire::{Call, CallId, CapId, Frame};
use bunite_rpc::{Connection, Record, Value};
use bytes::Bytes;
use common::*;

/// A transport whose sink records how many messages each flush wrote out.
struct Counting<T> {
    inner: T,
    flushes: Arc<Mutex<Vec<usize>>>,
}

struct CountingSink<S> {
    inner: S,
    taken: usize,
    flushes: Arc<Mutex<Vec<usize>>>,
}

impl<T: Transport> Transport for Counting<T> {
    type Sink = CountingSink<T::Sink>;
    type Source = T::Source;

    fn split(self) -> (Self::Sink, Self::Source) {
        let (sink, source) = self.inner.split();
        let sink = CountingSink {
            inner: sink,
            taken: 0,
            flushes: self.flushes,
        };
        (sink, source)
    }
}

impl<S: MessageSink> MessageSink for CountingSink<S> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.inner.poll_ready(cx)
    }

    fn start_send(&mut self, msg: Bytes) -> Result<(), TransportError> {
        self.taken += 1;
        self.inner.start_send(msg)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let poll = self.inner.poll_flush(cx);
        if poll.is_ready() && self.taken > 0 {
            self.flushes
                .lock()
                .unwrap()
                .push(std::mem::take(&mut self.taken));
        }
        poll
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.inner.poll_close(cx)
    }
}

#[test]
fn a_burst_of_calls_gets_its_first_answers_written_while_the_rest_is_read() {
    run_on_one_thread(async {
        let flushes = Arc::new(Mutex::new(Vec::new()));
        let (server, mut raw) = RawPeer::connect_through(Connection::builder(), |inner| Counting {
            inner,
            flushes: Arc::clone(&flushes),
        })
        .await;

        // 64 calls, all queued before the server's driver runs again (one thread; sending on
        // the in-memory pair does not yield).
        const BURST: u64 = 64;
        flushes.lock().unwrap().clear();
        for id in 1..=BURST {
            raw.send(Frame::Call(Call {
                id: CallId(id),
                target: CapId(0),
                method: "bootstrap".into(),
                args: Value::Record(Record::new().with("name", "no.such.cap")),
                meta: None,
            }))
            .await;
        }
        for id in 1..=BURST {
            match raw.recv().await {
                Frame::Result(r) => {
                    assert_eq!(r.id, CallId(id));
                    assert_eq!(r.outcome.unwrap_err().code, "not_found");
                }
                other => panic!("expected a result, got {other:?}"),
            }
        }

        let flushes = flushes.lock().unwrap().clone();
        assert_eq!(flushes.iter().sum::<usize>(), BURST as usize, "{flushes:?}");
        // The first answers go out once a sixteenth-or-so of the burst is read, so a peer on
        // another core works on them while we read the rest (not after all 64)...
        assert!(flushes[0] <= 16, "first write carried {flushes:?}");
        // ... and the rest are not written one by one.
        assert!(flushes.len() <= 4, "{flushes:?}");
        // The raw peer took no reference: the connection is clean.
        assert_clean(&[&server]).await;
    });
}
