//! Typed stream methods (`#[cap(stream)]`): returned streams and the emitter style, credit,
//! cancellation by drop, errors after values, params and options. Real time (so `.ci/run`
//! also runs them over TCP) but for the one that waits on a timer; every test ends
//! leak-free on both peers.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::typed::{Emitter, Stream};
use bunite_rpc::{cap, CallContext, Code, Connection, MethodKind, Status, Value};
use common::{assert_clean, eventually, pair, run, run_paused};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Tick {
    i: u64,
}

#[derive(Serialize, Deserialize)]
struct N {
    n: u64,
}

#[cap(name = "test.Ticks")]
trait Ticks {
    /// `{i}` for i in 0..n, then the end.
    #[cap(stream, initial_credit = 8)]
    fn ticks(&self, n: N) -> impl Stream<Item = Result<Tick, Status>>;

    /// 0, 1, 2, … until cancelled; a named stream type.
    #[cap(stream)]
    fn forever(&self) -> BoxStream<'static, Result<u64, Status>>;

    /// 0, 1, 2, then an error.
    #[cap(stream)]
    fn failing(&self) -> impl Stream<Item = Result<u64, Status>> + Send + 'static;

    /// The count every `every_ms`, emitter style, until cancelled.
    #[cap(stream)]
    async fn watch(&self, every_ms: u64, out: Emitter<u64>) -> Result<(), Status>;

    /// Emits 0, 1, 2, then fails.
    #[cap(stream, name = "emitThenFail")]
    async fn emit_then_fail(&self, out: Emitter<u64>) -> Result<(), Status>;

    /// The call's context value `k`, and whether it has a deadline.
    #[cap(stream)]
    fn meta(&self, ctx: CallContext) -> impl Stream<Item = Result<(Option<String>, bool), Status>>;
}

#[derive(Default)]
struct State {
    produced: AtomicU64,
    watches_ended: AtomicU64,
}

struct TicksImpl(Arc<State>);

/// Counts emitter futures the runtime dropped.
struct Ended(Arc<State>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.watches_ended.fetch_add(1, Ordering::SeqCst);
    }
}

impl Ticks for TicksImpl {
    fn ticks(&self, n: N) -> impl Stream<Item = Result<Tick, Status>> + Send + 'static {
        futures::stream::iter((0..n.n).map(|i| Ok(Tick { i })))
    }

    fn forever(&self) -> BoxStream<'static, Result<u64, Status>> {
        let state = self.0.clone();
        futures::stream::iter(0..)
            .map(move |i| {
                state.produced.fetch_add(1, Ordering::SeqCst);
                Ok(i)
            })
            .boxed()
    }

    fn failing(&self) -> impl Stream<Item = Result<u64, Status>> + Send + 'static {
        futures::stream::iter(0..4).map(|i| match i {
            3 => Err(Status::internal("late boom")),
            i => Ok(i),
        })
    }

    async fn watch(&self, every_ms: u64, mut out: Emitter<u64>) -> Result<(), Status> {
        let _ended = Ended(self.0.clone());
        for i in 0.. {
            out.send(i).await?;
            tokio::time::sleep(Duration::from_millis(every_ms)).await;
        }
        Ok(())
    }

    async fn emit_then_fail(&self, mut out: Emitter<u64>) -> Result<(), Status> {
        for i in 0..3 {
            out.send(i).await?;
        }
        Err(Status::new(Code::FailedPrecondition, "emitter done"))
    }

    fn meta(
        &self,
        ctx: CallContext,
    ) -> impl Stream<Item = Result<(Option<String>, bool), Status>> + Send + 'static {
        let item = (
            ctx.context_value("k").map(str::to_owned),
            ctx.deadline().is_some(),
        );
        futures::stream::once(async move { Ok(item) })
    }
}

async fn setup() -> (Connection, Connection, Arc<State>, TicksClient) {
    let state = Arc::new(State::default());
    let (server, client) = pair();
    TicksCap::serve(&server, TicksImpl(state.clone()))
        .await
        .unwrap()
        .detach();
    let ticks = TicksCap::bootstrap(&client).await.unwrap();
    (server, client, state, ticks)
}

#[test]
fn the_definition_has_stream_kinds_and_credit() {
    let def = TicksCap::definition();
    assert!(def.methods().iter().all(|m| m.kind() == MethodKind::Stream));
    assert_eq!(def.method("ticks").unwrap().stream_initial_credit(), 8);
    assert_eq!(def.method("forever").unwrap().stream_initial_credit(), 32);
    assert!(def.method("emitThenFail").is_some());
}

#[test]
fn a_stream_arrives_complete_and_in_order_beyond_its_initial_credit() {
    run(async {
        let (server, client, _, ticks) = setup().await;
        let got: Vec<Tick> = ticks
            .ticks(N { n: 100 })
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(got, (0..100).map(|i| Tick { i }).collect::<Vec<_>>());
        drop(ticks);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn dropping_a_stream_cancels_its_source() {
    run_paused(async {
        let (server, client, state, ticks) = setup().await;
        let mut s = ticks.forever();
        for want in 0..5 {
            assert_eq!(s.next().await.unwrap().unwrap(), want);
        }
        drop(s);
        eventually(|| server.stats().server_streams == 0 && client.stats().client_streams == 0)
            .await;
        let produced = state.produced.load(Ordering::SeqCst);
        // Never more than the credit window ahead of what the client took.
        assert!(produced <= 5 + 32, "{produced}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(state.produced.load(Ordering::SeqCst), produced);
        // Emitter style: the producer future is dropped.
        let mut w = ticks.watch(10);
        for want in 0..3 {
            assert_eq!(w.next().await.unwrap().unwrap(), want);
        }
        w.cancel();
        assert!(w.next().await.is_none());
        eventually(|| state.watches_ended.load(Ordering::SeqCst) == 1).await;
        drop((w, ticks));
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn a_source_failure_arrives_after_the_values() {
    run(async {
        let (server, client, _, ticks) = setup().await;
        for s in [ticks.failing(), ticks.emit_then_fail()] {
            let items: Vec<_> = s.collect().await;
            assert_eq!(items.len(), 4);
            let values: Vec<u64> = items[..3].iter().map(|r| *r.as_ref().unwrap()).collect();
            assert_eq!(values, [0, 1, 2]);
            let e = items[3].as_ref().unwrap_err();
            assert!(matches!(
                e.code(),
                Code::Internal | Code::FailedPrecondition
            ));
            assert!(e.is_remote(), "{e:?}");
        }
        drop(ticks);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn params_that_do_not_decode_end_the_stream_with_invalid_argument() {
    run(async {
        let (server, client, _, ticks) = setup().await;
        let items: Vec<_> = ticks
            .client()
            .stream("ticks", Value::from("not a record"))
            .collect()
            .await;
        assert_eq!(items.len(), 1);
        let e = items[0].as_ref().unwrap_err();
        assert_eq!((e.code(), e.is_remote()), (Code::InvalidArgument, true));
        drop(ticks);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn per_call_options_reach_the_stream_handler() {
    run(async {
        let (server, client, _, ticks) = setup().await;
        let plain: Vec<_> = ticks.meta().collect().await;
        assert_eq!(plain[0].as_ref().unwrap(), &(None, false));
        let tagged = ticks
            .with_context("k", "v")
            .with_deadline(Duration::from_secs(10));
        let got: Vec<_> = tagged.meta().collect().await;
        assert_eq!(got[0].as_ref().unwrap(), &(Some("v".to_owned()), true));
        drop((ticks, tagged));
        assert_clean(&[&server, &client]).await;
    });
}
