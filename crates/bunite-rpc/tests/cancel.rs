//! Cancellation and deadlines (PROTOCOL §11, §13), with paused time.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::wire::{Call, CallId, CallMeta, Cancel, Frame, ResultFrame};
use bunite_rpc::{CallContext, CallOptions, CapDef, Code, Connection, MethodDef, Value};
use common::*;
use tokio::time::Instant;

/// `slow {ignoreAbort?}`: waits 5 s; if signalled first (cancel or deadline) and not told to
/// ignore it, answers "aborted". `slowIdem` is the same but idempotent. `relay` calls
/// `appName` on the calling peer's runtime and returns what it answered.
fn slow_cap(signalled: Arc<AtomicUsize>) -> (Arc<CapDef>, Arc<dyn bunite_rpc::CapImpl>) {
    let def = CapDef::builder("test.slow")
        .method(MethodDef::call("slow"))
        .method(MethodDef::call("slowIdem").idempotent())
        .method(MethodDef::call("relay"))
        .build();
    let slow = move |args: Value, ctx: CallContext| {
        let signalled = signalled.clone();
        async move {
            let ignore =
                args.as_record().and_then(|r| r.get("ignoreAbort")) == Some(&Value::Bool(true));
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => Ok(Value::from("done")),
                _ = ctx.cancelled() => {
                    signalled.fetch_add(1, Ordering::SeqCst);
                    if ignore {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        Ok(Value::from("done"))
                    } else {
                        Ok(Value::from("aborted"))
                    }
                }
            }
        }
    };
    let imp = DynCap::new()
        .call("slow", slow.clone())
        .call("slowIdem", slow)
        .call("relay", |_, ctx: CallContext| async move {
            ctx.connection()
                .runtime()
                .call_value("appName", Value::Undefined)
                .await
        })
        .build();
    (def, imp)
}

fn call(id: u64, target: u32, method: &str, meta: Option<CallMeta>) -> Frame {
    Frame::Call(Call {
        id: CallId(id),
        target: bunite_rpc::CapId(target),
        method: bunite_rpc::wire::Text::copy_from(method),
        args: Value::Undefined,
        meta,
    })
}

#[tokio::test(start_paused = true)]
async fn a_cancel_signals_the_handler_replies_cancelled_and_suppresses_the_result() {
    let signalled = Arc::new(AtomicUsize::new(0));
    let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
    let (def, imp) = slow_cap(signalled.clone());
    server.serve(def, imp).unwrap().detach();
    let cap = raw.bootstrap(1, "test.slow").await;
    raw.send(call(2, cap.0, "slow", None)).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    raw.send(Frame::Cancel(Cancel {
        id: CallId(2),
        reason: Some("because".into()),
    }))
    .await;
    let r = raw.recv().await;
    match r {
        Frame::Result(ResultFrame {
            id,
            outcome: Err(e),
        }) => {
            assert_eq!(id, CallId(2));
            assert_wire(&e, "cancelled", "because", None);
        }
        other => panic!("{other:?}"),
    }
    // Nothing else arrives: the handler's later result is suppressed.
    assert!(tokio::time::timeout(Duration::from_secs(10), raw.recv())
        .await
        .is_err());
    assert_eq!(server.stats().active_calls, 0);
    // Cancels for unknown ids are ignored.
    raw.send(Frame::Cancel(Cancel {
        id: CallId(99),
        reason: None,
    }))
    .await;
    assert!(raw
        .call(3, cap.0, "slowIdem", Value::Undefined)
        .await
        .outcome
        .is_ok());
}

#[tokio::test(start_paused = true)]
async fn dropping_a_pending_call_sends_cancel() {
    let signalled = Arc::new(AtomicUsize::new(0));
    let (server, client) = pair();
    let (def, imp) = slow_cap(signalled.clone());
    server.serve(def.clone(), imp).unwrap().detach();
    let c = client.bootstrap(&def).await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_millis(50),
        c.call_value("slow", Value::Undefined),
    )
    .await;
    assert!(r.is_err(), "timed out locally");
    eventually(|| server.stats().active_calls == 0).await;
    // The handler's future was dropped on cancel, so it never saw the signal resolve.
    assert_eq!(signalled.load(Ordering::SeqCst), 0);
    drop(c);
    assert_clean(&[&server, &client]).await;
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_parent_cancels_its_children_on_the_same_connection() {
    let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
    let (def, imp) = slow_cap(Arc::default());
    server.serve(def, imp).unwrap().detach();
    let cap = raw.bootstrap(1, "test.slow").await;
    raw.send(call(
        5,
        cap.0,
        "relay",
        Some(CallMeta {
            deadline_ms: Some(3000.0),
            ..Default::default()
        }),
    ))
    .await;
    // The child call reaches the raw peer's runtime with parentCallId and the inherited deadline.
    let child = match raw.recv().await {
        Frame::Call(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(child.target, bunite_rpc::CapId(1));
    let meta = child.meta.clone().unwrap();
    assert_eq!(meta.parent_call_id, Some(CallId(5)));
    let inherited = meta.deadline_ms.unwrap();
    assert!(inherited > 0.0 && inherited <= 3000.0, "{inherited}");
    raw.send(Frame::Cancel(Cancel {
        id: CallId(5),
        reason: Some("because".into()),
    }))
    .await;
    let mut saw_result = false;
    let mut saw_child_cancel = false;
    for _ in 0..2 {
        match raw.recv().await {
            Frame::Result(r) if r.id == CallId(5) => saw_result = r.outcome.is_err(),
            Frame::Cancel(c) if c.id == child.id => {
                saw_child_cancel = c.reason.as_deref() == Some("because")
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(saw_result && saw_child_cancel);
    assert_eq!(server.stats().pending_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_parent_cancels_its_children_on_another_connection() {
    let signalled = Arc::new(AtomicUsize::new(0));
    // backend <-> middle, middle <-> front.
    let (backend, middle_up) = pair();
    let (middle, front) = pair();
    let (slow_def, slow_imp) = slow_cap(signalled.clone());
    backend.serve(slow_def.clone(), slow_imp).unwrap().detach();
    let upstream = middle_up.bootstrap(&slow_def).await.unwrap();
    let proxy_def = CapDef::builder("test.proxy")
        .method(MethodDef::call("go"))
        .build();
    let proxy = DynCap::new()
        .call("go", move |_, _| {
            let upstream = upstream.clone();
            async move { upstream.call_value("slow", Value::Undefined).await }
        })
        .build();
    middle.serve(proxy_def.clone(), proxy).unwrap().detach();
    let p = front.bootstrap(&proxy_def).await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_millis(100),
        p.call_value("go", Value::Undefined),
    )
    .await;
    assert!(r.is_err());
    eventually(|| backend.stats().active_calls == 0 && middle.stats().active_calls == 0).await;
    assert_eq!(middle_up.stats().pending_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn the_client_deadline_fires_at_deadline_plus_grace_and_sends_cancel() {
    let signalled = Arc::new(AtomicUsize::new(0));
    let (server, client) = pair();
    let (def, imp) = slow_cap(signalled.clone());
    server.serve(def.clone(), imp).unwrap().detach();
    let c = client.bootstrap(&def).await.unwrap();
    let args = bunite_rpc::Record::new().with("ignoreAbort", true);
    let start = Instant::now();
    let e = c
        .call_with(
            "slow",
            Value::Record(args),
            CallOptions::deadline(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(600));
    assert_eq!(e.code, Code::DeadlineExceeded);
    // The server was signalled at the deadline, then got the cancel.
    eventually(|| server.stats().active_calls == 0).await;
    assert_eq!(signalled.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_server_signals_non_idempotent_handlers_at_the_deadline_only() {
    let signalled = Arc::new(AtomicUsize::new(0));
    let (server, client) = pair();
    let (def, imp) = slow_cap(signalled.clone());
    server.serve(def.clone(), imp).unwrap().detach();
    let c = client.bootstrap(&def).await.unwrap();
    let start = Instant::now();
    let v = c
        .call_with(
            "slow",
            Value::Undefined,
            CallOptions::deadline(Duration::from_millis(100)),
        )
        .await
        .unwrap();
    assert_eq!(v, Value::from("aborted"));
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let start = Instant::now();
    let e = c
        .call_with(
            "slowIdem",
            Value::Undefined,
            CallOptions::deadline(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::DeadlineExceeded);
    assert_eq!(start.elapsed(), Duration::from_millis(600));
    // The idempotent handler was not signalled at 100 ms; the client's cancel at 600 ms
    // dropped it. Only the first call saw the signal.
    assert_eq!(signalled.load(Ordering::SeqCst), 1);
    drop(c);
    assert_clean(&[&server, &client]).await;
}

#[tokio::test(start_paused = true)]
async fn a_cancellation_token_fails_the_call_cancelled_at_once_and_cancels_the_server() {
    let signalled = Arc::new(AtomicUsize::new(0));
    let (server, client) = pair();
    let (def, imp) = slow_cap(signalled.clone());
    server.serve(def.clone(), imp).unwrap().detach();
    let c = client.bootstrap(&def).await.unwrap();
    let token = tokio_util::sync::CancellationToken::new();
    let opts = CallOptions {
        cancel: Some(token.clone()),
        ..CallOptions::default()
    };
    let start = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        token.cancel();
    });
    let e = c
        .call_with("slow", Value::Undefined, opts)
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_status(&e, Code::Cancelled, "client_cancel", None);
    canceller.await.unwrap();
    eventually(|| server.stats().active_calls == 0).await;
    drop(c);
    assert_clean(&[&server, &client]).await;
}
