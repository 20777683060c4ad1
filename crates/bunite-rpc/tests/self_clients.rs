//! Implementations that hold a client of the very connection they are served on (issue 9,
//! item 4). When the runtime drops one (a serve refused or skipped, the exports of a call
//! already cancelled, a replace or an unserve), dropping that client releases it through a
//! command to the connection, never a wait: nothing deadlocks, the client's reference
//! reaches the peer, and the connection keeps working.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::{
    CallContext, CallOptions, CancellationToken, CapDef, CapDefRef, CapImpl, Client, Code,
    Connection, ExportedCap, IfExists, LocalError, MethodDef, Record, Returns, Value,
};
use common::*;

/// Counts the drops of what it is part of.
struct Dropped(Arc<AtomicUsize>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The cap the client peer serves, which the server bootstraps to get a client of its own
/// connection.
fn peer_def() -> Arc<CapDef> {
    CapDef::builder("test.peer")
        .method(MethodDef::call("get"))
        .build()
}

/// An implementation of `def` (its method `get`) that owns `held`, the only clone of a
/// client, and counts its own drop.
fn holding(held: Client, dropped: &Arc<AtomicUsize>) -> Arc<dyn CapImpl> {
    let held = Arc::new((held, Dropped(dropped.clone())));
    DynCap::new()
        .call("get", move |_, _| {
            let _held = held.clone();
            async { Ok(Value::from("held")) }
        })
        .build()
}

/// Two peers: the server serves `test.counter`; the client serves `test.peer`.
async fn setup() -> (Connection, Connection) {
    let (server, client) = pair();
    serve_counter(&server).await;
    client
        .serve(peer_def(), counter_impl())
        .await
        .unwrap()
        .detach();
    (server, client)
}

/// The server still answers, from its original `test.counter`.
async fn still_works(client: &Connection, expected_count: i64) {
    let counter = client.bootstrap(&counter_def()).await.unwrap();
    let r: Record = counter.call("increment", &()).await.unwrap();
    assert_eq!(r.get("count"), Some(&Value::Int(expected_count)));
}

#[test]
fn serving_over_a_taken_name_drops_the_refused_implementation_and_its_client() {
    run(async {
        let (server, client) = setup().await;
        let dropped = Arc::new(AtomicUsize::new(0));
        // Throw: refused, and the implementation (with the server's client of the peer's
        // cap) is dropped.
        let own = server.bootstrap(&peer_def()).await.unwrap();
        let refused = holding(own, &dropped);
        let e = server
            .serve_with(counter_def(), refused, IfExists::Throw)
            .await
            .unwrap_err();
        assert_status(
            &e,
            Code::AlreadyExists,
            "cap \"test.counter\" already served",
            Some("name_collision"),
        );
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        // Its client was released: the peer's instance is freed.
        assert_clean(&[&client]).await;
        still_works(&client, 1).await;

        // Skip: nothing served, the implementation dropped the same way.
        let own = server.bootstrap(&peer_def()).await.unwrap();
        let skipped = server
            .serve_with(counter_def(), holding(own, &dropped), IfExists::Skip)
            .await
            .unwrap();
        assert!(skipped.names().is_empty());
        assert_eq!(dropped.load(Ordering::SeqCst), 2);
        assert_clean(&[&client]).await;
        still_works(&client, 2).await;
    });
}

#[test]
fn the_exports_of_a_call_already_cancelled_are_dropped_with_their_clients() {
    run(async {
        let (server, client) = setup().await;
        let dropped = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicBool::new(false));
        // `make` gets a client of its own connection, waits for its cancellation (it keeps
        // running), then returns a cap holding that client: the call is gone by then.
        let maker = CapDef::builder("test.maker")
            .method(
                MethodDef::call("make")
                    .keep_running_on_cancel()
                    .returns(Returns::Cap(CapDefRef::Lazy(peer_def))),
            )
            .build();
        let (d, s) = (dropped.clone(), started.clone());
        let imp = DynCap::new()
            .call("make", move |_, ctx: CallContext| {
                let (dropped, started) = (d.clone(), s.clone());
                async move {
                    let own = ctx.connection().bootstrap(&peer_def()).await?;
                    started.store(true, Ordering::SeqCst);
                    ctx.cancelled().await;
                    Ok(ExportedCap::new(peer_def(), holding(own, &dropped)))
                }
            })
            .build();
        server.serve(maker.clone(), imp).await.unwrap().detach();
        let m = client.bootstrap(&maker).await.unwrap();
        let token = CancellationToken::new();
        let opts = CallOptions {
            cancel: Some(token.clone()),
            ..CallOptions::default()
        };
        let call =
            tokio::spawn(async move { m.call_cap_with("make", Value::Undefined, opts).await });
        eventually(|| started.load(Ordering::SeqCst)).await;
        token.cancel();
        let e = call.await.unwrap().unwrap_err();
        assert_local(
            &e,
            LocalError::Cancelled,
            Code::Cancelled,
            "client_cancel",
            None,
        );
        // The handler's late result is dropped, its export never allocated, and the client
        // it held released.
        eventually(|| dropped.load(Ordering::SeqCst) == 1).await;
        assert_clean(&[&server, &client]).await;
        still_works(&client, 1).await;
    });
}

#[test]
fn replacing_and_unserving_drop_the_implementations_and_their_clients() {
    run(async {
        let (server, client) = setup().await;
        let dropped = Arc::new(AtomicUsize::new(0));
        let own = server.bootstrap(&peer_def()).await.unwrap();
        let held = CapDef::builder("test.held")
            .method(MethodDef::call("get"))
            .build();
        server
            .serve(held.clone(), holding(own, &dropped))
            .await
            .unwrap()
            .detach();
        let c = client.bootstrap(&held).await.unwrap();
        assert_eq!(c.call::<_, String>("get", &()).await.unwrap(), "held");
        // Replace: the live instance switches, the old implementation is dropped.
        let own = server.bootstrap(&peer_def()).await.unwrap();
        server
            .replace(held.clone(), holding(own, &dropped))
            .await
            .unwrap();
        assert_eq!(c.call::<_, String>("get", &()).await.unwrap(), "held");
        eventually(|| dropped.load(Ordering::SeqCst) == 1).await;
        // Unserve: the instance is revoked, the implementation dropped.
        server.unserve("test.held").await;
        eventually(|| dropped.load(Ordering::SeqCst) == 2).await;
        drop(c);
        assert_clean(&[&server, &client]).await;
        still_works(&client, 1).await;
    });
}
