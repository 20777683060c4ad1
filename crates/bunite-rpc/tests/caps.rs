//! Caps across the wire (PROTOCOL §7, §9, §12, §13.4, §13.8): exports, sub-caps, arrays and
//! records of caps, disposal, drops, revocation, shutdown. Every test ends leak-free.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::wire::{CallId, DropFrame, Frame, ResultFrame};
use bunite_rpc::{
    CallContext, CapDef, CapDefRef, Code, Connection, LocalError, MethodDef, Record, Returns, Value,
};
use common::*;

#[derive(Default)]
struct Counters {
    live: AtomicUsize,
    closed: AtomicUsize,
}

fn node_def() -> Arc<CapDef> {
    CapDef::builder("test.node")
        .method(MethodDef::call("name").idempotent())
        .method(MethodDef::call("ping"))
        .method(MethodDef::call("sub").returns(Returns::Cap(CapDefRef::Lazy(node_def))))
        .method(MethodDef::call("close"))
        .disposal("close")
        .build()
}

fn tree_def() -> Arc<CapDef> {
    let node = || CapDefRef::Lazy(node_def);
    CapDef::builder("test.tree")
        .method(MethodDef::call("makeChild").returns(Returns::Cap(node())))
        .method(MethodDef::call("children").returns(Returns::CapArray(node())))
        .method(MethodDef::call("childMap").returns(Returns::CapRecord(node())))
        .method(MethodDef::call("wrongReturn").returns(Returns::Cap(node())))
        .method(MethodDef::call("wrongType").returns(Returns::Cap(node())))
        .method(MethodDef::call("slow"))
        .method(MethodDef::call("slowChild").returns(Returns::Cap(node())))
        .build()
}

/// Counts live node implementations: the count falls when the runtime drops one.
struct Live(Arc<Counters>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

fn node(name: String, c: Arc<Counters>) -> bunite_rpc::ExportedCap {
    c.live.fetch_add(1, Ordering::SeqCst);
    let live = Arc::new(Live(c.clone()));
    let n = name.clone();
    let imp = DynCap::new()
        .call("name", move |_, _| {
            let (n, _live) = (n.clone(), live.clone());
            async move { Ok(Value::from(n)) }
        })
        .call("ping", |args: Value, _| async move {
            let x = args
                .as_record()
                .and_then(|r| r.get("x"))
                .and_then(Value::as_integer)
                .unwrap_or(0);
            Ok(Value::from(x as i64 + 1))
        })
        .call("sub", {
            let c = c.clone();
            move |args: Value, _| {
                let c = c.clone();
                async move { Ok(node(name_arg(&args), c)) }
            }
        })
        .call("close", move |_, _| {
            c.closed.fetch_add(1, Ordering::SeqCst);
            async { Ok(Value::Undefined) }
        })
        .build();
    bunite_rpc::ExportedCap::new(node_def(), imp)
}

fn name_arg(args: &Value) -> String {
    args.as_record()
        .and_then(|r| r.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn names_arg(args: &Value) -> Vec<String> {
    match args.as_record().and_then(|r| r.get("names")) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn tree_impl(c: Arc<Counters>) -> Arc<dyn bunite_rpc::CapImpl> {
    let (c1, c2, c3, c4) = (c.clone(), c.clone(), c.clone(), c);
    DynCap::new()
        .call("makeChild", move |args: Value, _| {
            let c = c1.clone();
            async move { Ok(node(name_arg(&args), c)) }
        })
        .call("children", move |args: Value, _| {
            let c = c2.clone();
            async move {
                Ok(names_arg(&args)
                    .into_iter()
                    .map(|n| node(n, c.clone()))
                    .collect::<Vec<_>>())
            }
        })
        .call("childMap", move |args: Value, _: CallContext| {
            let c = c3.clone();
            async move {
                let caps = names_arg(&args)
                    .into_iter()
                    .map(|n| (n.clone(), node(n, c.clone())))
                    .collect();
                Ok(bunite_rpc::Returned::CapRecord(caps))
            }
        })
        .call("wrongReturn", |_, _| async { Ok(Value::from("not a cap")) })
        .call("wrongType", |_, _| async {
            let other = CapDef::builder("test.other").build();
            Ok(bunite_rpc::ExportedCap::new(other, DynCap::new().build()))
        })
        .call("slow", |_, _| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(Value::Undefined)
        })
        .call("slowChild", move |_, _| {
            let c = c4.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok(node("late".into(), c))
            }
        })
        .build()
}

fn names(list: &[&str]) -> Value {
    let items = list.iter().map(|n| Value::from(*n)).collect();
    Value::Record(Record::new().with("names", Value::Array(items)))
}

fn named(n: &str) -> Value {
    Value::Record(Record::new().with("name", n))
}

async fn setup() -> (Connection, Connection, Arc<Counters>, bunite_rpc::Client) {
    let counters = Arc::new(Counters::default());
    let (server, client) = pair();
    server
        .serve(tree_def(), tree_impl(counters.clone()))
        .await
        .unwrap()
        .detach();
    let tree = client.bootstrap(&tree_def()).await.unwrap();
    (server, client, counters, tree)
}

#[test]
fn sub_caps_of_sub_caps_work_and_their_implementations_are_dropped_when_freed() {
    run(async {
        let (server, client, counters, tree) = setup().await;
        let a = tree.call_cap("makeChild", named("a")).await.unwrap();
        let b = a.call_cap("sub", named("b")).await.unwrap();
        let c = b.call_cap("sub", named("c")).await.unwrap();
        assert_eq!(c.call::<_, String>("name", &()).await.unwrap(), "c");
        assert_eq!(
            b.call::<_, i64>("ping", &Record::new().with("x", 41))
                .await
                .unwrap(),
            42
        );
        assert_eq!(
            c.def().map(|d| d.name().to_owned()),
            Some("test.node".to_owned())
        );
        assert_eq!(server.current_stats().await.live_caps, 6);
        assert_eq!(counters.live.load(Ordering::SeqCst), 3);
        drop((a, b, c, tree));
        assert_clean(&[&server, &client]).await;
        eventually(|| counters.live.load(Ordering::SeqCst) == 0).await;
    });
}

#[test]
fn arrays_and_records_of_caps_give_working_clients() {
    run(async {
        let (server, client, _c, tree) = setup().await;
        let kids = tree
            .call_caps("children", names(&["x", "y", "z"]))
            .await
            .unwrap();
        let got: Vec<String> =
            futures::future::join_all(kids.iter().map(|k| k.call::<_, String>("name", &())))
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
        assert_eq!(got, ["x", "y", "z"]);
        let map = tree
            .call_cap_record("childMap", names(&["p", "q"]))
            .await
            .unwrap();
        assert_eq!(
            map.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["p", "q"]
        );
        assert_eq!(map[1].1.call::<_, String>("name", &()).await.unwrap(), "q");
        drop((kids, map, tree));
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn dispose_calls_the_disposal_method_exactly_once_then_drops() {
    run(async {
        let (server, client, counters, tree) = setup().await;
        let a = tree.call_cap("makeChild", named("a")).await.unwrap();
        let id = a.id();
        let twin = a.clone();
        a.dispose().await;
        twin.dispose().await;
        assert_eq!(counters.closed.load(Ordering::SeqCst), 1);
        eventually(|| server.stats().live_caps == 3).await;
        drop(tree);
        assert_clean(&[&server, &client]).await;
        // The freed id answers not_found from then on.
        let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
        server
            .serve(tree_def(), tree_impl(counters.clone()))
            .await
            .unwrap()
            .detach();
        let tree = raw.bootstrap(1, "test.tree").await;
        let child = match raw.call(2, tree.0, "makeChild", named("k")).await.outcome {
            Ok(Value::CapRef(id)) => id,
            other => panic!("{other:?}"),
        };
        raw.send(Frame::Drop(DropFrame {
            caps: vec![bunite_rpc::wire::DropEntry {
                id: child,
                delta: 1,
            }],
        }))
        .await;
        let e = err_of(raw.call(3, child.0, "name", Value::Undefined).await);
        assert_wire(&e, "not_found", &format!("cap-id {child} not found"), None);
        let _ = id;
    });
}

#[test]
fn drops_for_reserved_and_unknown_ids_are_ignored() {
    run(async {
        let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
        server
            .serve(tree_def(), tree_impl(Arc::default()))
            .await
            .unwrap()
            .detach();
        let tree = raw.bootstrap(1, "test.tree").await;
        let entries = [0, 1, 777].map(|id| bunite_rpc::wire::DropEntry {
            id: bunite_rpc::CapId(id),
            delta: 5,
        });
        raw.send(Frame::Drop(DropFrame {
            caps: entries.to_vec(),
        }))
        .await;
        assert!(raw
            .call(2, tree.0, "makeChild", named("a"))
            .await
            .outcome
            .is_ok());
        // Asked of the driver: the snapshot of `stats()` is published after the pass that
        // sent the result, which the raw peer may read first on another thread.
        assert_eq!(server.current_stats().await.live_caps, 4);
    });
}

#[test]
fn a_wrong_cap_return_fails_with_unregistered_cap_return() {
    run(async {
        let (server, client, _c, tree) = setup().await;
        for method in ["wrongReturn", "wrongType"] {
            let e = tree.call_cap(method, Value::Undefined).await.unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition, "{method}");
            assert!(e.is_remote(), "{method}: {e:?}");
            assert_eq!(e.reason(), Some("unregistered_cap_return"));
        }
        drop(tree);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn a_client_that_gets_no_capref_where_a_cap_is_declared_fails_invalid_argument() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        let c2 = conn.clone();
        let boot = tokio::spawn(async move { c2.bootstrap(&tree_def()).await });
        let call = next_call(&mut raw).await;
        raw.send(Frame::Result(ResultFrame {
            id: call.id,
            outcome: Ok(Value::CapRef(bunite_rpc::CapId(2))),
        }))
        .await;
        let tree = boot.await.unwrap().unwrap();
        // One cap: a string instead.
        let t = tree.clone();
        let pending = tokio::spawn(async move { t.call_cap("makeChild", Value::Undefined).await });
        let call = next_call(&mut raw).await;
        raw.send(Frame::Result(ResultFrame {
            id: call.id,
            outcome: Ok(Value::from("nope")),
        }))
        .await;
        let e = pending.await.unwrap().unwrap_err();
        assert_local(
            &e,
            LocalError::BadAnswer,
            Code::InvalidArgument,
            "expected CapRef",
            None,
        );
        // An array with one CapRef and one string: fails, and the CapRef it did carry is released.
        let t = tree.clone();
        let pending = tokio::spawn(async move { t.call_caps("children", Value::Undefined).await });
        let call = next_call(&mut raw).await;
        let bad = Value::Array(vec![Value::CapRef(bunite_rpc::CapId(9)), Value::from("x")]);
        raw.send(Frame::Result(ResultFrame {
            id: call.id,
            outcome: Ok(bad),
        }))
        .await;
        let e = pending.await.unwrap().unwrap_err();
        assert_local(
            &e,
            LocalError::BadAnswer,
            Code::InvalidArgument,
            "expected CapRef in array",
            None,
        );
        match raw.recv().await {
            Frame::Drop(d) => assert_eq!(
                d.caps,
                vec![bunite_rpc::wire::DropEntry {
                    id: bunite_rpc::CapId(9),
                    delta: 1
                }]
            ),
            other => panic!("{other:?}"),
        }
    });
}

async fn next_call(raw: &mut RawPeer) -> bunite_rpc::wire::Call {
    loop {
        if let Frame::Call(c) = raw.recv().await {
            return c;
        }
    }
}

// Paused time: the revoked call's handler runs to its end (as in the reference, revocation
// does not cancel handlers), so the tables are clean once its 500 ms pass.
#[test]
fn unserve_revokes_a_pending_call_later_calls_and_new_bootstraps() {
    run_paused(async {
        let (server, client, _c, tree) = setup().await;
        let t = tree.clone();
        let pending = tokio::spawn(async move { t.call_value("slow", Value::Undefined).await });
        eventually(|| server.stats().active_calls == 1).await;
        server.unserve("test.tree").await;
        let e = pending.await.unwrap().unwrap_err();
        // Pending when the revocation arrived: the peer revoked it.
        assert_remote(&e, Code::FailedPrecondition, "cap revoked", Some("revoked"));
        let e = tree.call_value("slow", Value::Undefined).await.unwrap_err();
        // Made after: refused here, nothing sent.
        assert_local(
            &e,
            LocalError::Revoked,
            Code::FailedPrecondition,
            "cap revoked",
            Some("revoked"),
        );
        let e = tree.stream("anything", Value::Undefined);
        let first = futures::StreamExt::collect::<Vec<_>>(e).await;
        assert_eq!(first.len(), 1);
        let e = first[0].as_ref().unwrap_err();
        assert_local(
            e,
            LocalError::Revoked,
            Code::FailedPrecondition,
            "cap revoked",
            Some("revoked"),
        );
        let e = client.bootstrap(&tree_def()).await.unwrap_err();
        assert_eq!((e.code(), e.is_remote()), (Code::NotFound, true));
        drop(tree);
        assert_clean(&[&server, &client]).await;
    });
}

/// Found by the session fuzzer: a cap-returning call whose cap is unserved while it runs.
/// The client fails the call on `cap_revoked` and ignores its result, so the cap the handler
/// then exports could never be released: it is freed once the result is sent.
#[test]
fn a_cap_exported_by_a_call_on_a_revoked_cap_is_freed() {
    run_paused(async {
        let (server, client, counters, tree) = setup().await;
        let t = tree.clone();
        let pending = tokio::spawn(async move { t.call_cap("slowChild", Value::Undefined).await });
        eventually(|| server.stats().active_calls == 1).await;
        server.unserve("test.tree").await;
        let e = pending.await.unwrap().unwrap_err();
        assert_remote(&e, Code::FailedPrecondition, "cap revoked", Some("revoked"));
        // The handler runs on to its end and exports a child nobody will ever hold.
        eventually(|| server.stats().active_calls == 0).await;
        eventually(|| counters.live.load(Ordering::SeqCst) == 0).await;
        drop(tree);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn shutdown_runs_the_disposal_methods_of_live_caps() {
    run(async {
        let (server, client, counters, tree) = setup().await;
        let kids = tree
            .call_caps("children", names(&["a", "b", "c"]))
            .await
            .unwrap();
        server.close();
        eventually(|| counters.closed.load(Ordering::SeqCst) == 3).await;
        eventually(|| counters.live.load(Ordering::SeqCst) == 0).await;
        assert_eq!(server.current_stats().await.live_caps, 2);
        client.closed().await;
        drop((kids, tree));
        assert_eq!(client.stats().pending_calls, 0);
    });
}

#[test]
fn nothing_is_dropped_for_the_runtime_or_after_close() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        drop(conn.runtime());
        // A call proves ordering: had a drop been sent, it would arrive first.
        let c2 = conn.clone();
        tokio::spawn(async move { c2.bootstrap_name("x", None).await });
        assert!(matches!(raw.recv().await, Frame::Call(c) if c.id == CallId(1)));
    });
}

/// An implementation whose `Drop` calls back into the connection.
struct Reentrant(Connection, Arc<AtomicUsize>);

impl Drop for Reentrant {
    fn drop(&mut self) {
        let _ = self.0.stats();
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn an_implementation_whose_drop_calls_the_connection_is_dropped_without_deadlock() {
    run(async {
        let (server, client) = pair();
        let dropped = Arc::new(AtomicUsize::new(0));
        let make = || {
            let guard = Arc::new(Reentrant(server.clone(), dropped.clone()));
            DynCap::new()
                .call("get", move |_, _| {
                    let _g = guard.clone();
                    async { Ok(Value::Undefined) }
                })
                .build()
        };
        let def = CapDef::builder("test.re")
            .method(MethodDef::call("get"))
            .build();
        server.serve(def.clone(), make()).await.unwrap().detach();
        let c = client.bootstrap(&def).await.unwrap();
        // replace drops the old registration and the old instance implementation.
        server.replace(def.clone(), make()).await.unwrap();
        // unserve drops the rest.
        server.unserve("test.re").await;
        let done = tokio::time::timeout(Duration::from_secs(5), async {
            eventually(|| dropped.load(Ordering::SeqCst) == 2).await;
        })
        .await;
        assert!(
            done.is_ok(),
            "an implementation's Drop deadlocked or never ran"
        );
        drop(c);
        assert_clean(&[&server, &client]).await;
    });
}

/// The caller of a bootstrap or a cap-returning call stops waiting just as the answer
/// arrives: the answer is already in the caller's reply channel, but nobody will adopt its
/// cap. The reference is released (a `drop` frame), not kept for the connection's life
/// (PROTOCOL §7).
#[test]
fn a_cap_answer_whose_caller_stopped_waiting_as_it_arrived_is_released() {
    /// Answers the next call `raw` receives with a CapRef to `cap`, once `conn` counts it
    /// (its counts are published after its frames go out: a count of none pending, read
    /// before, would be taken for the answer's).
    async fn answer_with_cap(conn: &Connection, raw: &mut RawPeer, cap: u32) {
        let Frame::Call(call) = raw.recv().await else {
            panic!("expected a call")
        };
        eventually(|| conn.stats().pending_calls == 1).await;
        raw.send(Frame::Result(ResultFrame {
            id: call.id,
            outcome: Ok(Value::CapRef(bunite_rpc::CapId(cap))),
        }))
        .await;
    }
    /// The next drop frame `raw` receives (skipping the cancel of the abandoned call).
    async fn dropped(raw: &mut RawPeer) -> Vec<(u32, u32)> {
        loop {
            match raw.recv_within(Duration::from_secs(5)).await {
                Ok(Some(Frame::Drop(d))) => {
                    break d.caps.iter().map(|e| (e.id.0, e.delta)).collect();
                }
                Ok(Some(Frame::Cancel(_))) => continue,
                other => panic!("expected a drop frame, got {other:?}"),
            }
        }
    }

    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;

        // A bootstrap, polled once (so it is sent) and then left unpolled while the
        // connection takes its answer and hands it to the caller's channel.
        let mut booting = Box::pin(conn.bootstrap_name("test.parent", None));
        assert!(futures::poll!(booting.as_mut()).is_pending());
        answer_with_cap(&conn, &mut raw, 5).await;
        eventually(|| conn.stats().pending_calls == 0).await;
        drop(booting);
        assert_eq!(dropped(&mut raw).await, vec![(5, 1)]);

        // A cap-returning call on a cap bootstrapped in full, the same way.
        let booting = tokio::spawn({
            let conn = conn.clone();
            async move { conn.bootstrap_name("test.parent", None).await }
        });
        answer_with_cap(&conn, &mut raw, 5).await;
        let parent = booting.await.unwrap().unwrap();
        let mut making = Box::pin(parent.call_cap("make", Value::Undefined));
        assert!(futures::poll!(making.as_mut()).is_pending());
        answer_with_cap(&conn, &mut raw, 6).await;
        eventually(|| conn.stats().pending_calls == 0).await;
        drop(making);
        assert_eq!(dropped(&mut raw).await, vec![(6, 1)]);

        // And the parent's own reference, when its client goes.
        drop(parent);
        assert_eq!(dropped(&mut raw).await, vec![(5, 1)]);
    });
}

/// PROTOCOL §7: disposing a client calls the disposal method, then sends the drop. As in
/// 0.10.0 (`session.jsonl`: `call close`, then `drop` before the close's result), the drop
/// follows the call at once: a server slow to answer the disposal method, or one that never
/// does, still gets the release.
#[test]
fn dispose_sends_the_drop_right_after_the_disposal_call_without_waiting_for_its_answer() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        let client = tokio::spawn({
            let conn = conn.clone();
            async move { conn.bootstrap(&node_def()).await }
        });
        let boot = match raw.recv().await {
            Frame::Call(c) => c.id,
            other => panic!("{other:?}"),
        };
        raw.send(Frame::Result(ResultFrame {
            id: boot,
            outcome: Ok(Value::CapRef(bunite_rpc::CapId(7))),
        }))
        .await;
        let node = client.await.unwrap().unwrap();
        let disposed = tokio::spawn(node.dispose());
        let close = match raw.recv().await {
            Frame::Call(c) => {
                assert_eq!(
                    (c.target, c.method.as_ref()),
                    (bunite_rpc::CapId(7), "close")
                );
                c.id
            }
            other => panic!("{other:?}"),
        };
        // The close is not answered yet: the drop comes anyway.
        match raw.recv_within(Duration::from_secs(5)).await {
            Ok(Some(Frame::Drop(d))) => {
                assert_eq!(d.caps.len(), 1);
                assert_eq!((d.caps[0].id, d.caps[0].delta), (bunite_rpc::CapId(7), 1));
            }
            other => panic!("expected the drop before the close's answer, got {other:?}"),
        }
        raw.send(Frame::Result(ResultFrame {
            id: close,
            outcome: Ok(Value::Undefined),
        }))
        .await;
        disposed.await.unwrap();
        assert!(
            raw.recv_within(Duration::from_millis(100)).await.is_err(),
            "nothing more"
        );
        conn.close();
        conn.closed().await;
    });
}

/// Cap-returning calls dropped at every point of their life, by callers on two worker
/// threads at once: before their first poll (nothing sent), while waiting (the answer then
/// finds nobody: the connection releases its cap), and after the answer arrived but before
/// it was taken (the caller's end releases it). The reply slots are used again by the next
/// calls of each thread meanwhile. Every cap the server exported is released and its
/// implementation dropped, and the calls that finished got working clients.
#[test]
fn cap_answers_abandoned_at_every_point_on_two_threads_are_all_released() {
    run_on_two_workers(async {
        let (_server, _client, counters, tree) = setup().await;
        let tree = Arc::new(tree);
        let tasks: Vec<_> = (0..4u64)
            .map(|t| {
                let tree = Arc::clone(&tree);
                tokio::spawn(async move {
                    let mut finished = 0;
                    for i in 0..300u64 {
                        let mut making = Box::pin(tree.call_cap("makeChild", named("n")));
                        // Every sixth awaited to its end; the others polled 0 to 4 times,
                        // with yields between, and dropped if not done by then.
                        let polls = (i * 7 + t) % 6;
                        let child = if polls == 5 {
                            Some(making.await)
                        } else {
                            let mut done = None;
                            for _ in 0..polls {
                                if let std::task::Poll::Ready(child) =
                                    futures::poll!(making.as_mut())
                                {
                                    done = Some(child);
                                    break;
                                }
                                tokio::task::yield_now().await;
                            }
                            done
                        };
                        if let Some(child) = child {
                            let child = child.unwrap();
                            assert_eq!(child.call::<_, String>("name", &()).await.unwrap(), "n");
                            finished += 1;
                        }
                    }
                    finished
                })
            })
            .collect();
        let mut finished = 0;
        for task in tasks {
            finished += task.await.unwrap();
        }
        assert!(finished >= 200, "{finished} calls finished");
        eventually(|| counters.live.load(Ordering::SeqCst) == 0).await;
    });
}

/// A call racing a release of its reference on another thread either goes out before the
/// release (and is answered) or fails `Released` here; it never reaches a cap the peer
/// has already let go of. The call checked the reference, then queued its command, and a
/// release between the two was queued first: the peer answered `not_found` (found by
/// `tests/random_ops.rs`, seed 14,136, once in about 14,000 seeds). A race of a few
/// instructions, so the test runs it over and over for about two seconds, a fresh
/// reference each time, released by a thread of its own as the call starts.
#[test]
fn a_call_racing_a_release_is_answered_or_fails_released_never_not_found() {
    run_on_two_workers(async {
        let (server, client) = pair();
        serve_counter(&server).await;
        let start = std::time::Instant::now();
        let (mut answered, mut released) = (0u32, 0u32);
        while start.elapsed() < Duration::from_secs(2) {
            let counter = client.bootstrap(&counter_def()).await.unwrap();
            let other = counter.clone();
            let go = Arc::new(std::sync::Barrier::new(2));
            let go2 = Arc::clone(&go);
            // The release sweeps across the call's start, a few nanoseconds later each time.
            let delay = (answered + released) % 2000;
            let releaser = std::thread::spawn(move || {
                go2.wait();
                for i in 0..delay {
                    std::hint::black_box(i);
                }
                other.release();
            });
            go.wait();
            let outcome = counter.call_value("get", Value::Undefined).await;
            releaser.join().unwrap();
            match outcome {
                Ok(_) => answered += 1,
                Err(e) if e.local_kind() == Some(LocalError::Released) => released += 1,
                Err(e) => panic!("after {answered} answered and {released} released: {e:?}"),
            }
        }
        eprintln!("{answered} answered, {released} released");
        assert!(answered + released > 0);
    });
}
