//! Cancellation and deadlines (PROTOCOL §11, §13), with paused time.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::wire::{Call, CallId, CallMeta, Cancel, Frame, ResultFrame};
use bunite_rpc::{
    CallContext, CallOptions, CapDef, Code, Connection, LocalError, MethodDef, Value,
};
use common::*;
use futures::StreamExt;
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
            let runtime = ctx.connection().runtime();
            Ok(runtime.call_value("appName", Value::Undefined).await?)
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

#[test]
fn a_cancel_signals_the_handler_replies_cancelled_and_suppresses_the_result() {
    run_paused(async {
        let signalled = Arc::new(AtomicUsize::new(0));
        let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
        let (def, imp) = slow_cap(signalled.clone());
        server.serve(def, imp).await.unwrap().detach();
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
        assert_eq!(server.current_stats().await.active_calls, 0);
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
    });
}

#[test]
fn dropping_a_pending_call_sends_cancel() {
    run_paused(async {
        let signalled = Arc::new(AtomicUsize::new(0));
        let (server, client) = pair();
        let (def, imp) = slow_cap(signalled.clone());
        server.serve(def.clone(), imp).await.unwrap().detach();
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
    });
}

#[test]
fn cancelling_a_parent_cancels_its_children_on_the_same_connection() {
    run_paused(async {
        let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
        let (def, imp) = slow_cap(Arc::default());
        server.serve(def, imp).await.unwrap().detach();
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
        cancel_call_5_and_see_child_cancelled(&mut raw, child.id).await;
        assert_eq!(server.current_stats().await.pending_calls, 0);
    });
}

#[test]
fn cancelling_a_parent_cancels_its_children_on_another_connection() {
    run_paused(async {
        let signalled = Arc::new(AtomicUsize::new(0));
        // backend <-> middle, middle <-> front.
        let (backend, middle_up) = pair();
        let (middle, front) = pair();
        let (slow_def, slow_imp) = slow_cap(signalled.clone());
        backend
            .serve(slow_def.clone(), slow_imp)
            .await
            .unwrap()
            .detach();
        let upstream = middle_up.bootstrap(&slow_def).await.unwrap();
        let proxy_def = CapDef::builder("test.proxy")
            .method(MethodDef::call("go"))
            .build();
        let proxy = DynCap::new()
            .call("go", move |_, _| {
                let upstream = upstream.clone();
                async move { Ok(upstream.call_value("slow", Value::Undefined).await?) }
            })
            .build();
        let served = middle.serve(proxy_def.clone(), proxy).await.unwrap();
        let p = front.bootstrap(&proxy_def).await.unwrap();
        let r = tokio::time::timeout(
            Duration::from_millis(100),
            p.call_value("go", Value::Undefined),
        )
        .await;
        assert!(r.is_err());
        eventually(|| backend.stats().active_calls == 0 && middle.stats().active_calls == 0).await;
        assert_eq!(middle_up.current_stats().await.pending_calls, 0);
        // Unserving the proxy drops the upstream client it holds: every table ends clean.
        served.unserve().await;
    });
}

#[test]
fn the_client_deadline_fires_at_deadline_plus_grace_and_sends_cancel() {
    run_paused(async {
        let signalled = Arc::new(AtomicUsize::new(0));
        let (server, client) = pair();
        let (def, imp) = slow_cap(signalled.clone());
        server.serve(def.clone(), imp).await.unwrap().detach();
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
        assert_local(
            &e,
            LocalError::DeadlineExceeded,
            Code::DeadlineExceeded,
            "deadline exceeded",
            None,
        );
        // The server was signalled at the deadline, then got the cancel.
        eventually(|| server.stats().active_calls == 0).await;
        assert_eq!(signalled.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn the_server_signals_non_idempotent_handlers_at_the_deadline_only() {
    run_paused(async {
        let signalled = Arc::new(AtomicUsize::new(0));
        let (server, client) = pair();
        let (def, imp) = slow_cap(signalled.clone());
        server.serve(def.clone(), imp).await.unwrap().detach();
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
        assert_local(
            &e,
            LocalError::DeadlineExceeded,
            Code::DeadlineExceeded,
            "deadline exceeded",
            None,
        );
        assert_eq!(start.elapsed(), Duration::from_millis(600));
        // The idempotent handler was not signalled at 100 ms; the client's cancel at 600 ms
        // dropped it. Only the first call saw the signal.
        assert_eq!(signalled.load(Ordering::SeqCst), 1);
        drop(c);
        assert_clean(&[&server, &client]).await;
    });
}

/// A cancel's reason is the peer's text, sent back in the cancelled result and in the cancel
/// of every child call: the server sends at most 1 KiB of it (cut at a character boundary,
/// marked `…`), however long it came. Before, one `cancel` with a 64 MiB reason made the
/// server encode the reason once for the reply and twice per child, outside any send budget.
#[test]
fn a_long_cancel_reason_is_sent_back_cut() {
    run_paused(async {
        let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
        let (def, imp) = slow_cap(Arc::default());
        server.serve(def, imp).await.unwrap().detach();
        let cap = raw.bootstrap(1, "test.slow").await;
        raw.send(call(5, cap.0, "relay", None)).await;
        let child = match raw.recv().await {
            Frame::Call(c) => c,
            other => panic!("{other:?}"),
        };
        let long = format!("x{}", "é".repeat(200_000)); // 400 KB; the cut must find a boundary
        raw.send(Frame::Cancel(Cancel {
            id: CallId(5),
            reason: Some(long.clone()),
        }))
        .await;
        let cut = |text: &str| {
            assert!(text.len() <= 1024 + '…'.len_utf8(), "{} bytes", text.len());
            assert!(text.ends_with('…') && long.starts_with(text.trim_end_matches('…')));
        };
        for _ in 0..2 {
            match raw.recv().await {
                Frame::Result(r) if r.id == CallId(5) => {
                    let e = r.outcome.expect_err("cancelled");
                    assert_eq!(e.code, "cancelled");
                    cut(e.message.as_deref().unwrap_or_default());
                }
                Frame::Cancel(c) if c.id == child.id => {
                    cut(c.reason.as_deref().unwrap_or_default())
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(server.current_stats().await.pending_calls, 0);
    });
}

#[test]
fn a_cancellation_token_fails_the_call_cancelled_at_once_and_cancels_the_server() {
    run_paused(async {
        let signalled = Arc::new(AtomicUsize::new(0));
        let (server, client) = pair();
        let (def, imp) = slow_cap(signalled.clone());
        server.serve(def.clone(), imp).await.unwrap().detach();
        let c = client.bootstrap(&def).await.unwrap();
        let token = bunite_rpc::CancellationToken::new();
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
        assert_local(
            &e,
            LocalError::Cancelled,
            Code::Cancelled,
            "client_cancel",
            None,
        );
        canceller.await.unwrap();
        eventually(|| server.stats().active_calls == 0).await;
        drop(c);
        assert_clean(&[&server, &client]).await;
    });
}

/// Counts the handler futures the runtime dropped.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn cancelling_a_parent_cascades_to_its_child_calls_end_to_end() {
    run_paused(async {
        let (server, client) = pair();
        // The client serves `test.hang`: a handler that waits until it is dropped.
        let hang_def = CapDef::builder("test.hang")
            .method(MethodDef::call("hang"))
            .build();
        let dropped = Arc::new(AtomicUsize::new(0));
        let d = dropped.clone();
        let hang = DynCap::new()
            .call("hang", move |_, _| {
                let guard = DropCount(d.clone());
                async move {
                    let _guard = guard;
                    std::future::pending::<()>().await;
                    Ok(Value::Undefined)
                }
            })
            .build();
        client.serve(hang_def.clone(), hang).await.unwrap().detach();
        // The server's `relay` calls `hang` back on its caller (a child call: parentCallId is
        // the relay's id) and reports how that call ended. It keeps running when cancelled,
        // so it sees its child fail.
        let relay_def = CapDef::builder("test.relay")
            .method(MethodDef::call("relay").keep_running_on_cancel())
            .build();
        let (tx, mut child_outcome) = tokio::sync::mpsc::unbounded_channel();
        let relay = DynCap::new()
            .call("relay", move |_, ctx: CallContext| {
                let (tx, hang_def) = (tx.clone(), hang_def.clone());
                async move {
                    let hang = ctx.connection().bootstrap(&hang_def).await?;
                    let _ = tx.send(hang.call_value("hang", Value::Undefined).await);
                    Ok(Value::Undefined)
                }
            })
            .build();
        server
            .serve(relay_def.clone(), relay)
            .await
            .unwrap()
            .detach();
        let relay = client.bootstrap(&relay_def).await.unwrap();
        let token = bunite_rpc::CancellationToken::new();
        let opts = CallOptions {
            cancel: Some(token.clone()),
            ..CallOptions::default()
        };
        let parent =
            tokio::spawn(async move { relay.call_with("relay", Value::Undefined, opts).await });
        eventually(|| client.stats().active_calls == 1).await;
        token.cancel();
        let e = parent.await.unwrap().unwrap_err();
        assert_local(
            &e,
            LocalError::Cancelled,
            Code::Cancelled,
            "client_cancel",
            None,
        );
        // The server failed the child locally with the parent's reason, and cancelled it on
        // the client, which dropped its handler.
        let child = tokio::time::timeout(Duration::from_secs(10), child_outcome.recv());
        let e = child
            .await
            .expect("the child call was never cancelled")
            .unwrap()
            .unwrap_err();
        assert_local(
            &e,
            LocalError::Cancelled,
            Code::Cancelled,
            "client_cancel",
            None,
        );
        eventually(|| client.stats().active_calls == 0).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
        eventually(|| server.stats().pending_calls == 0 && server.stats().active_calls == 0).await;
    });
}

#[test]
fn a_deadline_of_duration_max_never_fires_and_never_panics() {
    run_paused(async {
        let (server, client) = pair();
        let (def, imp) = slow_cap(Arc::default());
        server.serve(def.clone(), imp).await.unwrap().detach();
        let c = client.bootstrap(&def).await.unwrap();
        let far = || CallOptions::deadline(Duration::MAX);
        // Non-idempotent (the server would signal it at its deadline) and idempotent: both
        // run their 5 s to the end.
        for method in ["slow", "slowIdem"] {
            let v = c.call_with(method, Value::Undefined, far()).await.unwrap();
            assert_eq!(v, Value::from("done"), "{method}");
        }
        // A call made inside the handler inherits the deadline: it reaches our runtime (none
        // installed) and comes back as the peer's answer.
        let e = c
            .call_with("relay", Value::Undefined, far())
            .await
            .unwrap_err();
        assert_remote(&e, Code::NotFound, "cap has no impl", None);
        // And a stream opened with it.
        let ticks = CapDef::builder("test.ticks")
            .method(MethodDef::stream("ticks"))
            .build();
        let imp = DynCap::new()
            .stream("ticks", |_, _| {
                let items = (0..3i64).map(|i| Ok(Value::from(i)));
                Ok(Box::pin(futures::stream::iter(items)))
            })
            .build();
        server.serve(ticks.clone(), imp).await.unwrap().detach();
        let t = client.bootstrap(&ticks).await.unwrap();
        let items: Vec<Value> = t
            .stream_with("ticks", Value::Undefined, far())
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(items, [0i64, 1, 2].map(Value::from));
    });
}

/// A call's cancellation signal is made new for the next call once its handler has let go of
/// it; a handler that keeps its context keeps its own signal, which no later call's cancel
/// reaches.
#[test]
fn a_context_kept_after_its_call_is_not_cancelled_with_a_later_call() {
    run(async {
        let (server, client) = pair_with(Connection::builder(), Connection::builder());
        let def = CapDef::builder("test.kept")
            .method(MethodDef::call("plain"))
            .method(MethodDef::call("keep"))
            .method(MethodDef::call("wait"))
            .build();
        type Slot = Arc<std::sync::Mutex<Option<CallContext>>>;
        let (kept, waiting_ctx): (Slot, Slot) = (Arc::default(), Arc::default());
        let (keeper, waiter) = (Arc::clone(&kept), Arc::clone(&waiting_ctx));
        let imp = DynCap::new()
            .call("plain", |_, _| async { Ok(Value::from(1)) })
            .call("keep", move |_, ctx: CallContext| {
                *keeper.lock().unwrap() = Some(ctx);
                async { Ok(Value::from(2)) }
            })
            .call("wait", move |_, ctx: CallContext| {
                *waiter.lock().unwrap() = Some(ctx.clone());
                async move {
                    ctx.cancelled().await;
                    Ok(Value::Undefined)
                }
            })
            .build();
        server.serve(def.clone(), imp).await.unwrap().detach();
        let c = client.bootstrap(&def).await.unwrap();
        // Each completes at once: the first's signal is reused for the second, which keeps
        // it (and its context) after answering.
        let plain = c.call_value("plain", Value::Undefined).await.unwrap();
        assert_eq!(plain, Value::from(1));
        let keep = c.call_value("keep", Value::Undefined).await.unwrap();
        assert_eq!(keep, Value::from(2));
        // A call that waits, cancelled by dropping it: the server signals its handler.
        let waiting = c.call_value("wait", Value::Undefined);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), waiting)
                .await
                .is_err(),
            "the wait answers only when cancelled"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        let waited = loop {
            let signalled = waiting_ctx
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(CallContext::is_cancelled);
            if signalled || Instant::now() > deadline {
                break waiting_ctx.lock().unwrap().take().expect("the wait ran");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(
            waited.is_cancelled(),
            "the cancelled call's handler was signalled"
        );
        let ctx = kept.lock().unwrap().take().expect("kept");
        assert!(
            !ctx.is_cancelled(),
            "a later call's cancel reached a kept context"
        );
        drop((ctx, waited, c));
        assert_clean(&[&server, &client]).await;
    });
}

/// PROTOCOL §8, §11: a bootstrap is a call (on cap-id 0), so one made from inside a handler
/// carries `parentCallId`, and a cancel of the handler's call cancels it with the same
/// reason.
#[test]
fn a_bootstrap_made_inside_a_handler_carries_its_parent_and_is_cancelled_with_it() {
    run_paused(async {
        let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
        let def = CapDef::builder("test.asker")
            .method(MethodDef::call("ask"))
            .build();
        let imp = DynCap::new()
            .call("ask", |_, ctx: CallContext| async move {
                let peer = ctx.connection().bootstrap_name("test.peer", None).await?;
                drop(peer);
                Ok(Value::Null)
            })
            .build();
        server.serve(def, imp).await.unwrap().detach();
        let cap = raw.bootstrap(1, "test.asker").await;
        raw.send(call(5, cap.0, "ask", None)).await;
        let boot = match raw.recv().await {
            Frame::Call(c) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (boot.target, boot.method.as_ref()),
            (bunite_rpc::CapId(0), "bootstrap")
        );
        let parent = boot.meta.as_ref().and_then(|m| m.parent_call_id);
        assert_eq!(parent, Some(CallId(5)), "{:?}", boot.meta);
        cancel_call_5_and_see_child_cancelled(&mut raw, boot.id).await;
        // Its answer still comes (a bootstrap's caps are released when it does).
        raw.send(Frame::Result(ResultFrame {
            id: boot.id,
            outcome: Err(bunite_rpc::wire::WireStatus::new("not_found", "gone")),
        }))
        .await;
        eventually(|| server.stats().pending_calls == 0).await;
    });
}

/// Sends the raw peer's cancel of its call 5, whose handler made the call `child`, with the
/// reason "because", and checks the two frames that follow, in either order: call 5's
/// failed result, and the cancel of `child` with the same reason (PROTOCOL §11).
async fn cancel_call_5_and_see_child_cancelled(raw: &mut RawPeer, child: CallId) {
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
            Frame::Cancel(c) if c.id == child => {
                saw_child_cancel = c.reason.as_deref() == Some("because")
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(saw_result && saw_child_cancel);
}
