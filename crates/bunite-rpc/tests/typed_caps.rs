//! The typed API (`#[cap]`) end to end over the in-memory transport: unary calls with and
//! without params and context, idempotency and deadlines, errors, sub-caps (of sub-caps),
//! arrays and records of caps, disposal, per-call options, schemas. Streams are in
//! `typed_streams.rs`. Every test ends leak-free on both peers.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::typed::Cap;
use bunite_rpc::{
    cap, CallContext, CallOptions, Code, Connection, Exported, IfExists, MethodKind, Record,
    Returns, Status, Value,
};
use common::{assert_clean, eventually, pair};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Count {
    count: i64,
}

#[derive(Serialize, Deserialize)]
struct Delta {
    delta: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct Named {
    name: String,
}

#[derive(Serialize, Deserialize)]
struct Names {
    names: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Fail {
    code: String,
    message: Option<String>,
    reason: Option<String>,
}

/// A handler error of the user's own, turned into a `Status` on the way out.
struct Teapot;

impl From<Teapot> for Status {
    fn from(_: Teapot) -> Status {
        Status::new(Code::FailedPrecondition, "short and stout").with_reason("teapot")
    }
}

/// A counter that also makes children.
#[cap(name = "test.Counter", version = "1")]
trait Counter {
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
trait Child {
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
trait Echo {
    async fn echo(&self, s: String) -> Result<String, Status>;
}

#[derive(Default)]
struct State {
    count: AtomicI64,
    closed: AtomicUsize,
    live: AtomicUsize,
}

struct CounterImpl(Arc<State>);

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
struct ChildImpl {
    name: String,
    state: Arc<State>,
}

impl ChildImpl {
    fn new(name: String, state: Arc<State>) -> Self {
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

struct EchoImpl;

impl Echo for EchoImpl {
    async fn echo(&self, s: String) -> Result<String, Status> {
        Ok(s)
    }
}

async fn setup() -> (Connection, Connection, Arc<State>, CounterClient) {
    let state = Arc::new(State::default());
    let (server, client) = pair();
    CounterCap::serve(&server, CounterImpl(state.clone()))
        .unwrap()
        .detach();
    let counter = CounterCap::bootstrap(&client).await.unwrap();
    (server, client, state, counter)
}

fn named(name: &str) -> Named {
    Named { name: name.into() }
}

fn names(list: &[&str]) -> Names {
    Names {
        names: list.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn the_definition_lists_kinds_idempotency_returns_and_disposal() {
    let def = CounterCap::definition();
    assert_eq!((def.name(), def.version()), ("test.Counter", Some("1")));
    let wire: Vec<_> = def.methods().iter().map(|m| m.name()).collect();
    assert_eq!(
        wire,
        [
            "get",
            "increment",
            "double",
            "echo",
            "fail",
            "teapot",
            "context",
            "slow",
            "slowIdem",
            "makeChild",
            "children",
            "childMap",
            "childPairs"
        ]
    );
    let m = |n: &str| def.method(n).unwrap().clone();
    assert!(m("get").is_idempotent() && m("slowIdem").is_idempotent());
    assert!(!m("increment").is_idempotent() && m("slow").drops_on_cancel());
    assert!(!m("slowIdem").drops_on_cancel());
    assert!(def.methods().iter().all(|m| m.kind() == MethodKind::Call));
    assert!(matches!(m("makeChild").return_shape(), Returns::Cap(_)));
    assert!(matches!(m("children").return_shape(), Returns::CapArray(_)));
    assert!(matches!(
        m("childMap").return_shape(),
        Returns::CapRecord(_)
    ));
    assert!(matches!(
        m("childPairs").return_shape(),
        Returns::CapRecord(_)
    ));
    assert!(matches!(m("echo").return_shape(), Returns::Value));
    let child = m("makeChild").return_shape().cap().unwrap();
    assert_eq!(child.name(), "test.Child");
    assert_eq!(child.disposal(), Some("close"));
    // A cap returning itself: the definition refers to itself, lazily.
    let sub = child.method("sub").unwrap().return_shape().cap().unwrap();
    assert!(Arc::ptr_eq(&sub, &ChildCap::definition()));
    assert!(Arc::ptr_eq(&CounterCap::definition(), &def));
    assert_eq!(<EchoCap as Cap>::definition().version(), None);
}

#[tokio::test]
async fn unary_calls_with_and_without_params_and_context() {
    let (server, client, _, counter) = setup().await;
    assert_eq!(counter.get().await.unwrap(), Count { count: 0 });
    assert_eq!(
        counter.increment(Delta { delta: Some(5) }).await.unwrap(),
        Count { count: 5 }
    );
    assert_eq!(
        counter
            .increment(Delta { delta: None })
            .await
            .unwrap()
            .count,
        6
    );
    assert_eq!(counter.double().await.unwrap(), 12);
    let rich = Value::Record(
        Record::new()
            .with("a", 64)
            .with("b", Value::Bin(vec![1, 2]))
            .with("u", Value::Undefined),
    );
    assert_eq!(counter.echo(rich.clone()).await.unwrap(), rich);
    assert_eq!(counter.context().await.unwrap(), None);
    let tagged = counter.with_context("k", "v1").with_context("k", "v2");
    assert_eq!(tagged.context().await.unwrap().as_deref(), Some("v2"));
    // `with_options` replaces the options; the original client is untouched.
    let opts = CallOptions {
        context: vec![("k".into(), "o".into())],
        ..CallOptions::default()
    };
    assert_eq!(
        counter
            .with_options(opts)
            .context()
            .await
            .unwrap()
            .as_deref(),
        Some("o")
    );
    assert_eq!(counter.context().await.unwrap(), None);
    // A call without params sends undefined args; the dynamic client sees the same cap.
    let raw = counter.client().call_value("get", Value::Undefined).await;
    assert_eq!(
        raw.unwrap(),
        Value::Record(Record::new().with("count", 6i64))
    );
    drop((counter, tagged));
    assert_clean(&[&server, &client]).await;
}

#[tokio::test]
async fn errors_keep_code_message_and_reason() {
    let (server, client, _, counter) = setup().await;
    let e = counter
        .fail(Fail {
            code: "not_found".into(),
            message: Some("nope".into()),
            reason: Some("why".into()),
        })
        .await
        .unwrap_err();
    common::assert_status(&e, Code::NotFound, "nope", Some("why"));
    let e = counter.teapot().await.unwrap_err();
    common::assert_status(
        &e,
        Code::FailedPrecondition,
        "short and stout",
        Some("teapot"),
    );
    // Params that do not decode: invalid_argument, and the connection carries on.
    let e = counter
        .client()
        .call_value("increment", Value::from("not a record"))
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert!(e.message.starts_with("params: "), "{e}");
    // A result that does not decode into the declared type fails on the client.
    let e = counter
        .client()
        .call::<_, Count>("echo", &"text")
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(counter.get().await.unwrap().count, 0);
    drop(counter);
    assert_clean(&[&server, &client]).await;
}

#[tokio::test(start_paused = true)]
async fn deadlines_through_per_call_options() {
    let (server, client, _, counter) = setup().await;
    let quick = counter.with_deadline(Duration::from_millis(100));
    // Non-idempotent: the server signals the handler at the deadline.
    let started = tokio::time::Instant::now();
    assert_eq!(quick.slow(5_000).await.unwrap(), "aborted");
    assert!(started.elapsed() < Duration::from_millis(200));
    // Idempotent: the server ignores it; the client gives up at deadline + 500 ms.
    let started = tokio::time::Instant::now();
    let e = quick.slow_idempotent(5_000).await.unwrap_err();
    assert_eq!(e.code, Code::DeadlineExceeded);
    assert!(started.elapsed() >= Duration::from_millis(600));
    // Without options, no deadline.
    assert_eq!(counter.slow(1_000).await.unwrap(), "done");
    drop((counter, quick));
    // The idempotent handler keeps running after the client's cancel, to its end (5 s of
    // paused time), before the tables clear.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_clean(&[&server, &client]).await;
}

#[tokio::test]
async fn sub_caps_and_sub_caps_of_sub_caps() {
    let (server, client, state, counter) = setup().await;
    let a = counter.make_child(named("a")).await.unwrap();
    let b = a.sub(named("b")).await.unwrap();
    let c = b.sub(named("c")).await.unwrap();
    assert_eq!(c.name().await.unwrap(), "c");
    assert_eq!(b.ping(41).await.unwrap(), 42);
    assert_eq!(server.stats().live_caps, 6);
    assert_eq!(state.live.load(Ordering::SeqCst), 3);
    assert_eq!(c.client().def().unwrap().name(), "test.Child");
    drop((a, b, c, counter));
    assert_clean(&[&server, &client]).await;
    eventually(|| state.live.load(Ordering::SeqCst) == 0).await;
    // Dropping never runs the disposal method; shutdown or dispose does.
    assert_eq!(state.closed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn arrays_and_records_of_caps() {
    let (server, client, state, counter) = setup().await;
    let kids = counter.children(names(&["x", "y", "z"])).await.unwrap();
    let mut got = Vec::new();
    for k in &kids {
        got.push(k.name().await.unwrap());
    }
    assert_eq!(got, ["x", "y", "z"]);
    let map = counter.child_map(names(&["q", "p"])).await.unwrap();
    assert_eq!(map.keys().collect::<Vec<_>>(), ["p", "q"]);
    assert_eq!(map["q"].ping(1).await.unwrap(), 2);
    let pairs = counter.child_pairs(names(&["q", "p"])).await.unwrap();
    assert_eq!(pairs[0].0, "q");
    assert_eq!(pairs[1].1.name().await.unwrap(), "p");
    assert_eq!(state.live.load(Ordering::SeqCst), 7);
    drop((kids, map, pairs, counter));
    assert_clean(&[&server, &client]).await;
    eventually(|| state.live.load(Ordering::SeqCst) == 0).await;
}

#[tokio::test]
async fn dispose_calls_the_disposal_method_exactly_once() {
    let (server, client, state, counter) = setup().await;
    let a = counter.make_child(named("a")).await.unwrap();
    let twin = a.clone();
    a.dispose().await;
    twin.dispose().await;
    assert_eq!(state.closed.load(Ordering::SeqCst), 1);
    eventually(|| server.stats().live_caps == 3).await;
    // The same through a typed client wrapped around a dynamic one.
    let b = counter.make_child(named("b")).await.unwrap().into_client();
    let b = ChildClient::from_client(b.with_def(bunite_rpc::CapDef::builder("x").build()));
    b.dispose().await;
    assert_eq!(state.closed.load(Ordering::SeqCst), 2);
    // Released: no disposal, calls fail locally.
    let c = counter.make_child(named("c")).await.unwrap();
    let twin = c.clone();
    c.release();
    let e = twin.ping(1).await.unwrap_err();
    assert_eq!(e.code, Code::FailedPrecondition);
    drop((twin, counter));
    assert_clean(&[&server, &client]).await;
    assert_eq!(state.closed.load(Ordering::SeqCst), 2);
    eventually(|| state.live.load(Ordering::SeqCst) == 0).await;
}

#[tokio::test]
async fn shutdown_disposes_live_children() {
    let (server, client, state, counter) = setup().await;
    let kids = counter.children(names(&["a", "b"])).await.unwrap();
    server.close();
    eventually(|| state.closed.load(Ordering::SeqCst) == 2).await;
    client.closed().await;
    let e = kids[0].ping(1).await.unwrap_err();
    assert_eq!(e.code, Code::Unavailable);
    drop((kids, counter));
    eventually(|| state.live.load(Ordering::SeqCst) == 0).await;
    assert_eq!(server.stats().live_caps, 2);
    assert_eq!(client.stats().pending_calls, 0);
}

#[tokio::test]
async fn schemas_serve_all_and_bootstrap_all() {
    let state = Arc::new(State::default());
    let (server, client) = pair();
    let handle = server
        .serve_schema::<(CounterCap, EchoCap)>(
            (CounterImpl(state.clone()), EchoImpl),
            IfExists::Throw,
        )
        .unwrap();
    assert_eq!(handle.names(), ["test.Counter", "test.Echo"]);
    let (counter, echo) = client
        .bootstrap_schema::<(CounterCap, EchoCap)>()
        .await
        .unwrap();
    assert_eq!(
        counter
            .increment(Delta { delta: None })
            .await
            .unwrap()
            .count,
        1
    );
    assert_eq!(echo.echo("hi".into()).await.unwrap(), "hi");
    // Atomic: a schema with one name taken registers nothing.
    let e = server
        .serve_schema::<(ChildCap, EchoCap)>(
            (ChildImpl::new("x".into(), state.clone()), EchoImpl),
            IfExists::Throw,
        )
        .unwrap_err();
    assert_eq!(e.code, Code::AlreadyExists);
    let e = client.bootstrap_cap::<ChildCap>().await.unwrap_err();
    assert_eq!(e.code, Code::NotFound);
    // All or nothing: one missing cap fails the whole bootstrap and releases the others.
    let e = client
        .bootstrap_schema::<(EchoCap, ChildCap)>()
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::NotFound);
    drop((counter, echo));
    assert_clean(&[&server, &client]).await;
    // Dropping the handle unserves both.
    drop(handle);
    let e = client.bootstrap_cap::<EchoCap>().await.unwrap_err();
    assert_eq!(e.code, Code::NotFound);
    assert_clean(&[&server, &client]).await;
}

#[tokio::test]
async fn the_connection_methods_serve_replace_and_unserve_typed_caps() {
    let state = Arc::new(State::default());
    let (server, client) = pair();
    server
        .serve_cap::<CounterCap>(CounterImpl(state.clone()))
        .unwrap()
        .detach();
    let e = CounterCap::serve(&server, CounterImpl(state.clone())).unwrap_err();
    assert_eq!(e.code, Code::AlreadyExists);
    CounterCap::serve_with(&server, CounterImpl(state.clone()), IfExists::Skip)
        .unwrap()
        .detach();
    let counter = client.bootstrap_cap::<CounterCap>().await.unwrap();
    assert_eq!(
        counter
            .increment(Delta { delta: Some(2) })
            .await
            .unwrap()
            .count,
        2
    );
    // Replace switches the live instance to a fresh state.
    server
        .replace_cap::<CounterCap>(CounterImpl(Arc::default()))
        .unwrap();
    assert_eq!(counter.get().await.unwrap().count, 0);
    server.unserve_cap::<CounterCap>();
    let e = counter.get().await.unwrap_err();
    assert_eq!(e.reason(), Some("revoked"));
    drop(counter);
    assert_clean(&[&server, &client]).await;
}

/// Two peers over a real TCP socket (the length-prefixed byte stream).
#[cfg(feature = "byte-stream")]
async fn tcp_pair() -> (Connection, Connection) {
    use bunite_rpc::transport::byte_stream::{self, ByteStream};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
    let client = Connection::new(byte_stream::tcp_connect(addr).await.unwrap());
    let socket = accept.await.unwrap();
    (Connection::new(ByteStream::tcp(socket)), client)
}

#[cfg(feature = "byte-stream")]
#[tokio::test]
async fn the_typed_api_over_tcp() {
    let state = Arc::new(State::default());
    let (server, client) = tcp_pair().await;
    server
        .serve_schema::<(CounterCap, EchoCap)>(
            (CounterImpl(state.clone()), EchoImpl),
            IfExists::Throw,
        )
        .unwrap()
        .detach();
    let (counter, echo) = client
        .bootstrap_schema::<(CounterCap, EchoCap)>()
        .await
        .unwrap();
    assert_eq!(echo.echo("over tcp".into()).await.unwrap(), "over tcp");
    assert_eq!(
        counter
            .increment(Delta { delta: Some(3) })
            .await
            .unwrap()
            .count,
        3
    );
    let a = counter.make_child(named("a")).await.unwrap();
    let kids = a.sub(named("b")).await.unwrap();
    assert_eq!(kids.ping(1).await.unwrap(), 2);
    let map = counter.child_map(names(&["x", "y"])).await.unwrap();
    assert_eq!(map["y"].name().await.unwrap(), "y");
    a.dispose().await;
    assert_eq!(state.closed.load(Ordering::SeqCst), 1);
    drop((kids, map, counter, echo));
    assert_clean(&[&server, &client]).await;
    eventually(|| state.live.load(Ordering::SeqCst) == 0).await;
}

#[tokio::test]
async fn the_typed_and_dynamic_apis_mix() {
    use bunite_rpc::dynamic::DynCap;
    use bunite_rpc::{CapDef, CapDefRef, MethodDef};
    let state = Arc::new(State::default());
    let (server, client) = pair();
    // A dynamic cap whose handler returns a typed export.
    let def = CapDef::builder("test.dyn")
        .method(
            MethodDef::call("child")
                .returns(Returns::Cap(CapDefRef::Lazy(<ChildCap as Cap>::definition))),
        )
        .build();
    let st = state.clone();
    let imp = DynCap::new()
        .call("child", move |_, _| {
            let st = st.clone();
            async move { Ok(ChildCap::export(ChildImpl::new("d".into(), st))) }
        })
        .build();
    server.serve(def.clone(), imp).unwrap().detach();
    let dynamic = client.bootstrap(&def).await.unwrap();
    let child = dynamic.call_cap("child", Value::Undefined).await.unwrap();
    let child = ChildClient::from_client(child);
    assert_eq!(child.name().await.unwrap(), "d");
    // A typed implementation served through the dynamic API.
    server
        .serve(EchoCap::definition(), EchoCap::server(EchoImpl))
        .unwrap()
        .detach();
    let echo: String = client
        .bootstrap(&EchoCap::definition())
        .await
        .unwrap()
        .call("echo", "dyn")
        .await
        .unwrap();
    assert_eq!(echo, "dyn");
    drop((child, dynamic));
    assert_clean(&[&server, &client]).await;
    eventually(|| state.live.load(Ordering::SeqCst) == 0).await;
}
