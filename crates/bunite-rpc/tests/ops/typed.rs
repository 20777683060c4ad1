//! The typed side of the cases: `ops.Typed` and its sub-cap `ops.Part`, declared with
//! `#[cap]` and served by both peers, and the operations actors run on them through their
//! typed clients, with the same outcome checks as on the dynamic `ops.svc`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::typed::{Cap, Stream};
use bunite_rpc::{cap, CallContext, Code, Connection, Exported, Status};
use futures::StreamExt;

use super::actor::{Actor, Op};
use super::{Held, Kind, ITEM_VALUE};

/// A typed cap with a call, a sub-cap, a slow call and a stream.
#[cap(name = "ops.Typed")]
pub trait OpsTyped {
    /// 1 (a method without parameters, called dynamically too).
    async fn ping(&self) -> Result<i64, Status>;

    /// `x + 1`.
    async fn inc(&self, x: i64) -> Result<i64, Status>;

    /// A new `ops.Part`.
    async fn part(&self) -> Result<Exported<OpsPartCap>, Status>;

    /// Answers "slept" after `ms`, or "cancelled" once signalled (cancel or deadline).
    async fn slow(&self, ms: u64, ctx: CallContext) -> Result<String, Status>;

    /// `0..n`, then the end.
    #[cap(stream, initial_credit = 8)]
    fn count(&self, n: u64) -> impl Stream<Item = Result<u64, Status>>;
}

/// The sub-cap: a value and a disposal method that counts its calls.
#[cap(name = "ops.Part")]
pub trait OpsPart {
    /// `ITEM_VALUE`.
    async fn value(&self) -> Result<i64, Status>;

    /// The disposal method.
    #[cap(dispose)]
    async fn close(&self) -> Result<(), Status>;
}

struct TypedImpl(Arc<AtomicU64>);

impl OpsTyped for TypedImpl {
    async fn ping(&self) -> Result<i64, Status> {
        Ok(1)
    }

    async fn inc(&self, x: i64) -> Result<i64, Status> {
        Ok(x + 1)
    }

    async fn part(&self) -> Result<Exported<OpsPartCap>, Status> {
        Ok(OpsPartCap::export(PartImpl(self.0.clone())))
    }

    async fn slow(&self, ms: u64, ctx: CallContext) -> Result<String, Status> {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok("slept".into()),
            _ = ctx.cancelled() => Ok("cancelled".into()),
        }
    }

    fn count(&self, n: u64) -> impl Stream<Item = Result<u64, Status>> + Send + 'static {
        futures::stream::iter((0..n).map(Ok))
    }
}

struct PartImpl(Arc<AtomicU64>);

impl OpsPart for PartImpl {
    async fn value(&self) -> Result<i64, Status> {
        Ok(ITEM_VALUE as i64)
    }

    async fn close(&self) -> Result<(), Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Serves `ops.Typed` on `conn`; its parts' disposals count in `disposals`.
pub(super) async fn serve(conn: &Connection, disposals: Arc<AtomicU64>) {
    OpsTypedCap::serve(conn, TypedImpl(disposals))
        .await
        .unwrap()
        .detach();
}

impl Actor {
    /// The typed operations.
    pub(super) async fn typed(&mut self, op: Op, what: &str) {
        match op {
            Op::BootstrapTyped => {
                let r = OpsTypedCap::bootstrap(&self.side.conn).await;
                let r = r.map(|c| c.into_client());
                if let Some(c) = self.bootstrapped(what, "ops.Typed", r) {
                    self.held.push(Held::new(Kind::Typed, c));
                }
            }
            Op::TypedInc => {
                let Some(h) = self.held_of(Kind::Typed) else {
                    return;
                };
                let x = self.rng.below(1000) as i64;
                let r = OpsTypedCap::client(h.client.clone()).inc(x).await;
                self.answer(what, &h, r, |v| assert_eq!(v, x + 1, "{what}"));
            }
            Op::TypedPart => {
                let Some(h) = self.held_of(Kind::Typed) else {
                    return;
                };
                let r = OpsTypedCap::client(h.client.clone()).part().await;
                let mut part = None;
                self.answer(what, &h, r, |c| part = Some(c));
                if let Some(c) = part {
                    self.held.push(Held::new(Kind::Part, c.into_client()));
                }
            }
            Op::PartValue => {
                let Some(h) = self.held_of(Kind::Part) else {
                    return;
                };
                let r = OpsPartCap::client(h.client.clone()).value().await;
                self.answer(what, &h, r, |v| {
                    assert_eq!(i128::from(v), ITEM_VALUE, "{what}")
                });
            }
            Op::TypedSlow => {
                // A deadline on a typed call: a short one on a long wait ends by the
                // deadline (the client's timer, or the handler's answer to the server's
                // signal), a long one on a short wait answers.
                let Some(h) = self.held_of(Kind::Typed) else {
                    return;
                };
                let short = self.rng.chance(50);
                let (deadline, ms) = if short {
                    (Duration::from_millis(5 + self.rng.below(30)), 60_000)
                } else {
                    (super::OP_BOUND, self.rng.below(5))
                };
                let client = OpsTypedCap::client(h.client.clone()).with_deadline(deadline);
                let r = client.slow(ms).await;
                match r {
                    Err(e) if short && e.code() == Code::DeadlineExceeded => {}
                    r => self.answer(what, &h, r, |v| {
                        let want = if short { "cancelled" } else { "slept" };
                        assert_eq!(v, want, "{what}");
                    }),
                }
            }
            Op::TypedStream => {
                let Some(h) = self.held_of(Kind::Typed) else {
                    return;
                };
                let n = self.rng.below(12);
                let to_end = self.rng.chance(50);
                let k = if to_end { n } else { self.rng.below(n + 1) };
                let mut stream = OpsTypedCap::client(h.client.clone()).count(n);
                for i in 0..k {
                    match stream.next().await {
                        Some(Ok(v)) if !h.released() => assert_eq!(v, i, "{what}"),
                        Some(r @ Err(_)) => return self.answer(what, &h, r, |_: u64| {}),
                        other => panic!("{what}: value {i} of {n}: {other:?}"),
                    }
                }
                if to_end {
                    match stream.next().await {
                        None if !h.released() => {}
                        Some(r @ Err(_)) => self.answer(what, &h, r, |_: u64| {}),
                        other => panic!("{what}: after {n} values: {other:?}"),
                    }
                }
            }
            _ => unreachable!("{what}: not a typed operation"),
        }
    }

    fn held_of(&mut self, kind: Kind) -> Option<Held> {
        let i = self.pick(|h| h.kind == kind)?;
        Some(self.held[i].clone())
    }
}
