//! The typed caps the `typed_*` tests share: a counter (calls, errors, deadlines, sub-caps,
//! arrays and records of caps), its children (with a disposal method), an echo, and the
//! state their implementations report to.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::{cap, CallContext, Code, Connection, Exported, Status, Value};
use serde::{Deserialize, Serialize};

use crate::common::pair;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Count {
    pub count: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Delta {
    pub delta: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Named {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Names {
    pub names: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Fail {
    pub code: String,
    pub message: Option<String>,
    pub reason: Option<String>,
}

/// A handler error of the user's own, turned into a `Status` on the way out.
#[derive(Debug)]
pub struct Teapot;

impl From<Teapot> for Status {
    fn from(_: Teapot) -> Status {
        Status::new(Code::FailedPrecondition, "short and stout").with_reason("teapot")
    }
}

/// A counter that also makes children.
#[cap(name = "test.Counter", version = "1")]
pub trait Counter {
    /// The current count.
    #[cap(idempotent)]
    async fn get(&self) -> Result<Count, Status>;

    /// Adds `delta` (default 1).
    async fn increment(&self, by: Delta) -> Result<Count, Status>;

    /// Twice the count: a default method, written once in the trait.
    async fn double(&self) -> Result<i64, Status> {
        Ok(self.get().await?.count * 2)
    }

    /// Any value back.
    async fn echo(&self, value: Value) -> Result<Value, Status>;

    /// Fails as asked.
    async fn fail(&self, how: Fail) -> Result<(), Status>;

    /// Fails with the user's own error type.
    async fn teapot(&self) -> Result<(), Teapot>;

    /// The `k` value of the call's context map.
    async fn context(&self, ctx: CallContext) -> Result<Option<String>, Status>;

    /// Waits `ms`, or answers "aborted" once signalled (cancel or deadline).
    async fn slow(&self, ms: u64, ctx: CallContext) -> Result<String, Status>;

    /// Like `slow`, but idempotent: the server ignores its deadline; and a cancel does not
    /// stop it.
    #[cap(idempotent, keep_running_on_cancel, name = "slowIdem")]
    async fn slow_idempotent(&self, ms: u64, ctx: CallContext) -> Result<String, Status>;

    /// One child.
    async fn make_child(&self, n: Named) -> Result<Exported<ChildCap>, Status>;

    /// One child per name, in order.
    async fn children(&self, n: Names) -> Result<Vec<Exported<ChildCap>>, Status>;

    /// A record of children, sorted by name.
    async fn child_map(&self, n: Names) -> Result<BTreeMap<String, Exported<ChildCap>>, Status>;

    /// A record of children, in the server's order.
    async fn child_pairs(&self, n: Names) -> Result<Vec<(String, Exported<ChildCap>)>, Status>;
}

/// A child, which can make children of its own.
#[cap(name = "test.Child")]
pub trait Child {
    #[cap(idempotent)]
    async fn name(&self) -> Result<String, Status>;

    async fn ping(&self, x: i64) -> Result<i64, Status>;

    /// A sub-child: a cap returning its own kind.
    async fn sub(&self, n: Named) -> Result<Exported<ChildCap>, Status>;

    /// The disposal method.
    #[cap(dispose)]
    async fn close(&self) -> Result<(), Status>;
}

#[cap(name = "test.Echo")]
pub trait Echo {
    async fn echo(&self, s: String) -> Result<String, Status>;
}

#[derive(Debug, Default)]
pub struct State {
    pub count: AtomicI64,
    pub closed: AtomicUsize,
    pub live: AtomicUsize,
}

#[derive(Debug)]
pub struct CounterImpl(pub Arc<State>);

impl CounterImpl {
    fn child(&self, name: String) -> Exported<ChildCap> {
        ChildCap::export(ChildImpl::new(name, self.0.clone()))
    }
}

impl Counter for CounterImpl {
    async fn get(&self) -> Result<Count, Status> {
        Ok(Count {
            count: self.0.count.load(Ordering::SeqCst),
        })
    }

    async fn increment(&self, by: Delta) -> Result<Count, Status> {
        let d = by.delta.unwrap_or(1);
        Ok(Count {
            count: self.0.count.fetch_add(d, Ordering::SeqCst) + d,
        })
    }

    async fn echo(&self, value: Value) -> Result<Value, Status> {
        Ok(value)
    }

    async fn fail(&self, how: Fail) -> Result<(), Status> {
        let code = Code::parse(&how.code).unwrap_or(Code::Internal);
        let message = how.message.as_deref().unwrap_or("requested failure");
        let mut status = Status::new(code, message);
        if let Some(r) = &how.reason {
            status = status.with_reason(r);
        }
        Err(status)
    }

    async fn teapot(&self) -> Result<(), Teapot> {
        Err(Teapot)
    }

    async fn context(&self, ctx: CallContext) -> Result<Option<String>, Status> {
        Ok(ctx.context_value("k").map(str::to_owned))
    }

    async fn slow(&self, ms: u64, ctx: CallContext) -> Result<String, Status> {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok("done".into()),
            _ = ctx.cancelled() => Ok("aborted".into()),
        }
    }

    async fn slow_idempotent(&self, ms: u64, ctx: CallContext) -> Result<String, Status> {
        self.slow(ms, ctx).await
    }

    async fn make_child(&self, n: Named) -> Result<Exported<ChildCap>, Status> {
        Ok(self.child(n.name))
    }

    async fn children(&self, n: Names) -> Result<Vec<Exported<ChildCap>>, Status> {
        Ok(n.names.into_iter().map(|n| self.child(n)).collect())
    }

    async fn child_map(&self, n: Names) -> Result<BTreeMap<String, Exported<ChildCap>>, Status> {
        Ok(n.names
            .into_iter()
            .map(|n| (n.clone(), self.child(n)))
            .collect())
    }

    async fn child_pairs(&self, n: Names) -> Result<Vec<(String, Exported<ChildCap>)>, Status> {
        Ok(n.names
            .into_iter()
            .map(|n| (n.clone(), self.child(n)))
            .collect())
    }
}

/// A child implementation; `live` counts the ones the runtime still holds.
#[derive(Debug)]
pub struct ChildImpl {
    pub name: String,
    pub state: Arc<State>,
}

impl ChildImpl {
    pub fn new(name: String, state: Arc<State>) -> Self {
        state.live.fetch_add(1, Ordering::SeqCst);
        ChildImpl { name, state }
    }
}

impl Drop for ChildImpl {
    fn drop(&mut self) {
        self.state.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Child for ChildImpl {
    async fn name(&self) -> Result<String, Status> {
        Ok(self.name.clone())
    }

    async fn ping(&self, x: i64) -> Result<i64, Status> {
        Ok(x + 1)
    }

    async fn sub(&self, n: Named) -> Result<Exported<ChildCap>, Status> {
        Ok(ChildCap::export(ChildImpl::new(n.name, self.state.clone())))
    }

    async fn close(&self) -> Result<(), Status> {
        self.state.closed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Debug)]
pub struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, s: String) -> Result<String, Status> {
        Ok(s)
    }
}

pub async fn setup() -> (Connection, Connection, Arc<State>, CounterClient) {
    let state = Arc::new(State::default());
    let (server, client) = pair();
    CounterCap::serve(&server, CounterImpl(state.clone()))
        .await
        .unwrap()
        .detach();
    let counter = CounterCap::bootstrap(&client).await.unwrap();
    (server, client, state, counter)
}

pub fn named(name: &str) -> Named {
    Named { name: name.into() }
}

pub fn names(list: &[&str]) -> Names {
    Names {
        names: list.iter().map(|s| s.to_string()).collect(),
    }
}
