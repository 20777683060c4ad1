//! The typed API (`#[cap]`) end to end over the in-memory transport: the generated
//! definition, unary calls with and without params and context, idempotency and deadlines,
//! errors, per-call options, schemas, the connection's typed methods, and mixing with the
//! dynamic API (plus the same over a real TCP socket). Sub-caps are in `typed_subcaps.rs`,
//! streams in `typed_streams.rs`; the caps in `typed_fixtures`.

mod common;
mod typed_fixtures;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::typed::Cap;
use bunite_rpc::{CallOptions, Code, IfExists, LocalError, MethodKind, Record, Returns, Value};
use common::{assert_clean, assert_local, assert_remote, eventually, pair, run, run_paused};
use typed_fixtures::*;

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

#[test]
fn unary_calls_with_and_without_params_and_context() {
    run(async {
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
    });
}

#[test]
fn errors_keep_code_message_and_reason() {
    run(async {
        let (server, client, _, counter) = setup().await;
        let e = counter
            .fail(Fail {
                code: "not_found".into(),
                message: Some("nope".into()),
                reason: Some("why".into()),
            })
            .await
            .unwrap_err();
        assert_remote(&e, Code::NotFound, "nope", Some("why"));
        let e = counter.teapot().await.unwrap_err();
        assert_remote(
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
        assert_eq!((e.code(), e.is_remote()), (Code::InvalidArgument, true));
        assert!(e.message().starts_with("params: "), "{e}");
        // A result that does not decode into the declared type fails on the client.
        let e = counter
            .client()
            .call::<_, Count>("echo", &"text")
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(
            e.local_kind(),
            Some(LocalError::BadAnswer),
            "decoded here: {e:?}"
        );
        assert_eq!(counter.get().await.unwrap().count, 0);
        drop(counter);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn deadlines_through_per_call_options() {
    run_paused(async {
        let (server, client, _, counter) = setup().await;
        let quick = counter.with_deadline(Duration::from_millis(100));
        // Non-idempotent: the server signals the handler at the deadline.
        let started = tokio::time::Instant::now();
        assert_eq!(quick.slow(5_000).await.unwrap(), "aborted");
        assert!(started.elapsed() < Duration::from_millis(200));
        // Idempotent: the server ignores it; the client gives up at deadline + 500 ms.
        let started = tokio::time::Instant::now();
        let e = quick.slow_idempotent(5_000).await.unwrap_err();
        assert_local(
            &e,
            LocalError::DeadlineExceeded,
            Code::DeadlineExceeded,
            "deadline exceeded",
            None,
        );
        assert!(started.elapsed() >= Duration::from_millis(600));
        // Without options, no deadline.
        assert_eq!(counter.slow(1_000).await.unwrap(), "done");
        drop((counter, quick));
        // The idempotent handler keeps running after the client's cancel, to its end (5 s of
        // paused time), before the tables clear.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn schemas_serve_all_and_bootstrap_all() {
    run(async {
        let state = Arc::new(State::default());
        let (server, client) = pair();
        let handle = server
            .serve_schema::<(CounterCap, EchoCap)>(
                (CounterImpl(state.clone()), EchoImpl),
                IfExists::Throw,
            )
            .await
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
            .await
            .unwrap_err();
        assert_eq!(e.code, Code::AlreadyExists);
        let e = client.bootstrap_cap::<ChildCap>().await.unwrap_err();
        assert_eq!((e.code(), e.is_remote()), (Code::NotFound, true));
        // All or nothing: one missing cap fails the whole bootstrap and releases the others.
        let e = client
            .bootstrap_schema::<(EchoCap, ChildCap)>()
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.is_remote()), (Code::NotFound, true));
        drop((counter, echo));
        assert_clean(&[&server, &client]).await;
        // Dropping the handle unserves both.
        drop(handle);
        let e = client.bootstrap_cap::<EchoCap>().await.unwrap_err();
        assert_eq!((e.code(), e.is_remote()), (Code::NotFound, true));
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn the_connection_methods_serve_replace_and_unserve_typed_caps() {
    run(async {
        let state = Arc::new(State::default());
        let (server, client) = pair();
        server
            .serve_cap::<CounterCap>(CounterImpl(state.clone()))
            .await
            .unwrap()
            .detach();
        let e = CounterCap::serve(&server, CounterImpl(state.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.code, Code::AlreadyExists);
        CounterCap::serve_with(&server, CounterImpl(state.clone()), IfExists::Skip)
            .await
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
            .await
            .unwrap();
        assert_eq!(counter.get().await.unwrap().count, 0);
        server.unserve_cap::<CounterCap>().await;
        // The revocation may reach the client before this call goes out (refused here) or
        // while it is pending (failed by the peer's revocation): either way `cap revoked`.
        let e = counter.get().await.unwrap_err();
        assert_eq!(
            (e.code(), e.message(), e.reason()),
            (Code::FailedPrecondition, "cap revoked", Some("revoked"))
        );
        assert!(
            e.is_remote() || e.local_kind() == Some(LocalError::Revoked),
            "{e:?}"
        );
        // By now the client knows: later calls are refused here, nothing sent.
        let e = counter.get().await.unwrap_err();
        assert_local(
            &e,
            LocalError::Revoked,
            Code::FailedPrecondition,
            "cap revoked",
            Some("revoked"),
        );
        drop(counter);
        assert_clean(&[&server, &client]).await;
    });
}

/// Two peers over a real TCP socket (the length-prefixed byte stream).
#[cfg(feature = "byte-stream")]
async fn tcp_pair() -> (bunite_rpc::Connection, bunite_rpc::Connection) {
    use bunite_rpc::transport::byte_stream::{self, ByteStream};
    use bunite_rpc::Connection;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
    let client = Connection::new(byte_stream::tcp_connect(addr).await.unwrap());
    let socket = accept.await.unwrap();
    let server = Connection::new(ByteStream::tcp(socket));
    common::track(&server);
    common::track(&client);
    (server, client)
}

#[cfg(feature = "byte-stream")]
#[test]
fn the_typed_api_over_tcp() {
    run(async {
        let state = Arc::new(State::default());
        let (server, client) = tcp_pair().await;
        server
            .serve_schema::<(CounterCap, EchoCap)>(
                (CounterImpl(state.clone()), EchoImpl),
                IfExists::Throw,
            )
            .await
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
    });
}

#[test]
fn the_typed_and_dynamic_apis_mix() {
    run(async {
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
        server.serve(def.clone(), imp).await.unwrap().detach();
        let dynamic = client.bootstrap(&def).await.unwrap();
        let child = dynamic.call_cap("child", Value::Undefined).await.unwrap();
        let child = ChildClient::from_client(child);
        assert_eq!(child.name().await.unwrap(), "d");
        // A typed implementation served through the dynamic API.
        server
            .serve(EchoCap::definition(), EchoCap::server(EchoImpl))
            .await
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
    });
}
