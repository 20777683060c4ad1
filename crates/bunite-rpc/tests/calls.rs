//! Unary calls (PROTOCOL §9): every status row with code, message and reason, handler error
//! mapping, concurrency, limits on both sides, local errors after close.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::events::Event;
use bunite_rpc::wire::{CallId, Frame, ResultFrame};
use bunite_rpc::{
    CallOptions, CapDef, Code, Connection, Limits, LocalError, MethodDef, Record, Retry, Status,
    Value,
};
use common::*;

#[test]
fn an_unknown_target_id_is_not_found() {
    run(async {
        let (_server, mut raw) = RawPeer::connect(Connection::builder()).await;
        let e = err_of(raw.call(1, 99, "get", Value::Undefined).await);
        assert_wire(&e, "not_found", "cap-id 99 not found", None);
    });
}

#[test]
fn id_zero_with_another_method_and_id_one_without_runtime_have_no_impl() {
    run(async {
        let (_server, mut raw) = RawPeer::connect(Connection::builder()).await;
        let e = err_of(raw.call(1, 0, "get", Value::Undefined).await);
        assert_wire(&e, "not_found", "cap has no impl", None);
        let e = err_of(raw.call(2, 1, "appName", Value::Undefined).await);
        assert_wire(&e, "not_found", "cap has no impl", None);
    });
}

#[test]
fn the_runtime_client_reaches_id_one_without_bootstrap() {
    run(async {
        let (_server, client) = pair();
        let e = client
            .runtime()
            .call_value("appName", Value::Undefined)
            .await
            .unwrap_err();
        assert_remote(&e, Code::NotFound, "cap has no impl", None);

        let runtime = CapDef::builder("bunite.Runtime")
            .method(MethodDef::call("appName"))
            .build();
        let imp = DynCap::new()
            .call("appName", |_, _| async { Ok(Value::from("demo")) })
            .build();
        let (_server, client) = pair_with(
            Connection::builder().runtime(runtime, imp),
            Connection::builder(),
        );
        let name: String = client.runtime().call("appName", &()).await.unwrap();
        assert_eq!(name, "demo");
    });
}

#[test]
fn a_method_outside_the_definition_and_one_without_handler_are_not_found() {
    run(async {
        let (_server, _client, c) = counter_pair().await;
        let e = c.call_value("nope", Value::Undefined).await.unwrap_err();
        assert_remote(
            &e,
            Code::NotFound,
            "method \"nope\" on cap \"test.counter\"",
            None,
        );
        let e = c
            .call_value("undeclared", Value::Undefined)
            .await
            .unwrap_err();
        assert_remote(
            &e,
            Code::NotFound,
            "method \"undeclared\" has no handler",
            None,
        );
    });
}

#[test]
fn the_server_in_flight_limit_refuses_extra_calls() {
    run(async {
        let limits = Limits {
            max_in_flight: 2,
            ..Limits::default()
        };
        let (server, mut raw) = RawPeer::connect(Connection::builder().limits(limits)).await;
        serve_counter(&server).await;
        let cap = raw.bootstrap(1, "test.counter").await;
        for id in [2, 3] {
            raw.send(call_frame(id, cap.0, "wait")).await;
        }
        let e = err_of(raw.call(4, cap.0, "get", Value::Undefined).await);
        assert_wire(
            &e,
            "resource_exhausted",
            "in-flight calls limit 2",
            Some("max_concurrent_calls"),
        );
        // Bootstraps do not count against the limit.
        assert_eq!(raw.bootstrap(5, "test.counter").await, cap);
    });
}

fn call_frame(id: u64, target: u32, method: &str) -> Frame {
    Frame::Call(bunite_rpc::wire::Call {
        id: CallId(id),
        target: bunite_rpc::CapId(target),
        method: bunite_rpc::wire::Text::copy_from(method),
        args: Value::Undefined,
        meta: None,
    })
}

#[test]
fn the_client_in_flight_limit_fails_locally_and_sends_nothing() {
    run(async {
        let (server, client, c) = counter_pair_limited(2).await;
        let (c1, c2) = (c.clone(), c.clone());
        let w1 = tokio::spawn(async move { c1.call_value("wait", Value::Undefined).await });
        let w2 = tokio::spawn(async move { c2.call_value("wait", Value::Undefined).await });
        eventually(|| client.stats().pending_calls == 2).await;
        let e = c.call_value("get", Value::Undefined).await.unwrap_err();
        assert_local(
            &e,
            LocalError::InFlightLimit,
            Code::ResourceExhausted,
            "in-flight calls limit 2",
            Some("max_concurrent_calls"),
        );
        // Nothing was sent: the server sees the two waits (over a socket, on a multi-thread
        // runtime, they may still be on their way when the client counts them pending).
        eventually(|| server.stats().active_calls == 2).await;
        assert_eq!(server.current_stats().await.active_calls, 2);
        w1.abort();
        w2.abort();
    });
}

/// A call whose reply its caller has no longer counts against the in-flight limit: with a
/// limit of one, each call of a sequential caller on another worker than the driver's gets
/// through (the caller gives its slot back as it takes the reply; the driver used to give
/// it back at the end of its pass, after the caller could have started the next call).
#[test]
fn a_replied_call_no_longer_counts_against_the_in_flight_limit() {
    run_on_two_workers(async {
        let (_server, client, c) = counter_pair_limited(1).await;
        // On its own task, so the caller and the driver are apart.
        let calls = tokio::spawn(async move {
            for i in 0..3_000 {
                if let Err(e) = c.call_value("get", Value::Undefined).await {
                    panic!("call {i} failed: {e}");
                }
            }
        });
        calls.await.unwrap();
        assert_eq!(client.current_stats().await.pending_calls, 0);
    });
}

/// A call its caller stopped waiting for no longer counts against the in-flight limit
/// either: with a limit of one, a call that timed out on the caller's side is followed at
/// once by another, which gets through (the first's `cancel` is still on its way). (A call
/// whose answer would bring caps counts until that answer comes, so that its caps can be
/// released: `an_abandoned_cap_call_counts_until_its_answer_comes`.)
#[test]
fn an_abandoned_call_no_longer_counts_against_the_in_flight_limit() {
    run(async {
        let (server, client, c) = counter_pair_limited(1).await;
        for _ in 0..3 {
            let wait = c.call_value("wait", Value::Undefined);
            let timed_out = tokio::time::timeout(Duration::from_millis(20), wait).await;
            assert!(timed_out.is_err(), "wait answered: {timed_out:?}");
            let got = c.call_value("get", Value::Undefined).await;
            assert!(got.is_ok(), "{got:?}");
        }
        eventually(|| server.stats().active_calls == 0).await;
        assert_eq!(client.current_stats().await.pending_calls, 0);
    });
}

/// A call whose answer would bring caps stays in the session after its caller stops
/// waiting, until the answer comes and its caps are released, and counts against the
/// in-flight limit until then (so a peer that never answers cannot make those entries
/// grow). One thread, so the answer cannot come before the next call is tried.
#[test]
fn an_abandoned_cap_call_counts_until_its_answer_comes() {
    run_on_one_thread(async {
        let (server, client, c) = counter_pair_limited(1).await;
        let caps_before = server.current_stats().await.live_caps;
        // Abandoned right after it was queued.
        let def = counter_def();
        let mut boot = Box::pin(client.bootstrap(&def));
        assert!(futures::poll!(boot.as_mut()).is_pending());
        drop(boot);
        let e = c.call_value("get", Value::Undefined).await.unwrap_err();
        assert_local(
            &e,
            LocalError::InFlightLimit,
            Code::ResourceExhausted,
            "in-flight calls limit 1",
            Some("max_concurrent_calls"),
        );
        // Once the answer has come (and the cap it brought is released), calls go through.
        let mut tries = 0;
        while c.call_value("get", Value::Undefined).await.is_err() {
            tries += 1;
            assert!(
                tries < 400,
                "the abandoned bootstrap never let go of its slot"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eventually(|| server.stats().live_caps == caps_before).await;
        assert_eq!(client.current_stats().await.pending_calls, 0);
    });
}

/// A caller that sees its call fail because the connection shut down finds the connection
/// closed: `is_closed()` is true by the time any outcome of the shutdown is handed over,
/// also to a caller on another worker than the driver's (and new calls fail locally).
#[test]
fn a_call_failed_by_the_shutdown_finds_the_connection_closed() {
    run_on_two_workers(async {
        for round in 0..200 {
            let (server, client) = pair();
            serve_counter(&server).await;
            let c = client.bootstrap(&counter_def()).await.unwrap();
            let conn = client.clone();
            let waiting = tokio::spawn(async move {
                let e = c.call_value("wait", Value::Undefined).await.unwrap_err();
                let closed = conn.is_closed();
                let next = c.call_value("get", Value::Undefined).await.unwrap_err();
                (e, closed, next)
            });
            eventually(|| server.stats().active_calls == 1).await;
            if round % 2 == 0 {
                server.close();
            } else {
                client.close();
            }
            let (e, closed, next) = waiting.await.unwrap();
            assert_eq!(e.code(), Code::Unavailable, "{e:?}");
            assert!(closed, "round {round}: failed with {e:?}, yet not closed");
            assert_eq!(next.local_kind(), Some(LocalError::Closed), "{next:?}");
        }
    });
}

#[test]
fn handler_statuses_keep_code_message_details_and_retry() {
    run(async {
        let (server, client) = pair();
        let def = CapDef::builder("test.err")
            .method(MethodDef::call("fail"))
            .method(MethodDef::call("plain"))
            .build();
        let imp = DynCap::new()
            .call("fail", |_, _| async {
                Err::<Value, _>(
                    Status::failed_precondition("nope", "unauthorized")
                        .with_retry(Retry::AfterCooldown { min_ms: 100 }),
                )
            })
            .call("plain", |_, _| async {
                let e = std::io::Error::other("disk on fire");
                Err::<Value, _>(Status::internal(e.to_string()))
            })
            .build();
        server.serve(def.clone(), imp).await.unwrap().detach();
        let c = client.bootstrap(&def).await.unwrap();
        let e = c.call_value("fail", Value::Undefined).await.unwrap_err();
        assert_remote(&e, Code::FailedPrecondition, "nope", Some("unauthorized"));
        assert_eq!(e.status().retry, Some(Retry::AfterCooldown { min_ms: 100 }));
        let e = c.call_value("plain", Value::Undefined).await.unwrap_err();
        assert_remote(&e, Code::Internal, "disk on fire", None);
    });
}

#[test]
fn a_thrown_status_goes_out_in_the_four_key_shape() {
    run(async {
        let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
        serve_counter(&server).await;
        let cap = raw.bootstrap(1, "test.counter").await;
        let args = Record::new()
            .with("code", "failed_precondition")
            .with("message", "nope")
            .with("reason", "unauthorized");
        let e = err_of(raw.call(2, cap.0, "fail", Value::Record(args)).await);
        assert!(e.full, "toStatus() shape: code, message, details, retry");
        assert_wire(&e, "failed_precondition", "nope", Some("unauthorized"));
        let e = err_of(raw.call(3, cap.0, "boom", Value::Undefined).await);
        assert!(!e.full, "a plain error is {{code, message}}");
        assert_wire(&e, "internal", "boom", None);
    });
}

#[test]
fn a_panicking_handler_fails_internal_and_the_connection_lives_on() {
    run(async {
        let (server, client) = pair();
        let def = CapDef::builder("test.panic")
            .method(MethodDef::call("go"))
            .method(MethodDef::call("ok"))
            .build();
        let imp = DynCap::new()
            .call("go", |_, _| async {
                if true {
                    panic!("handler bug");
                }
                Ok(Value::Undefined)
            })
            .call("ok", |_, _| async { Ok(Value::from(1i64)) })
            .build();
        server.serve(def.clone(), imp).await.unwrap().detach();
        let c = client.bootstrap(&def).await.unwrap();
        let e = c.call_value("go", Value::Undefined).await.unwrap_err();
        assert_remote(&e, Code::Internal, "handler panicked", None);
        assert_eq!(
            c.call_value("ok", Value::Undefined).await.unwrap(),
            Value::Int(1)
        );
    });
}

#[test]
fn args_that_do_not_decode_are_invalid_argument() {
    run(async {
        let (_server, _client, c) = counter_pair().await;
        let e = c
            .call_value("typed", Value::from("not a record"))
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.is_remote()), (Code::InvalidArgument, true));
        c.call_value("typed", Value::Record(Record::new().with("n", 3)))
            .await
            .unwrap();
    });
}

#[test]
fn concurrent_calls_run_concurrently_and_replies_may_overtake() {
    run(async {
        let (_server, _client, c) = counter_pair().await;
        // A waiting call does not block a later one.
        let waiting = {
            let c = c.clone();
            tokio::spawn(async move { c.call_value("wait", Value::Undefined).await })
        };
        let futs = (0..200).map(|_| c.call::<_, Record>("increment", &()));
        let results = futures::future::join_all(futs).await;
        assert!(results.iter().all(Result::is_ok));
        let n: Record = c.call("get", &()).await.unwrap();
        assert_eq!(n.get("count"), Some(&Value::Int(200)));
        assert!(!waiting.is_finished());
        waiting.abort();
    });
}

#[test]
fn calls_after_close_fail_locally_with_unavailable() {
    run(async {
        let (_server, client, c) = counter_pair().await;
        client.close();
        let e = c.call_value("get", Value::Undefined).await.unwrap_err();
        assert_local(
            &e,
            LocalError::Closed,
            Code::Unavailable,
            "connection closed",
            None,
        );
        let e = client.bootstrap(&counter_def()).await.unwrap_err();
        assert_local(
            &e,
            LocalError::Closed,
            Code::Unavailable,
            "connection closed",
            None,
        );
    });
}

#[test]
fn a_result_for_an_unknown_id_is_ignored() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        serve_counter(&conn).await;
        raw.send(Frame::Result(ResultFrame {
            id: CallId(4242),
            outcome: Ok(Value::Null),
        }))
        .await;
        let cap = raw.bootstrap(1, "test.counter").await;
        assert!(raw
            .call(2, cap.0, "get", Value::Undefined)
            .await
            .outcome
            .is_ok());
        assert!(!conn.is_closed());
    });
}

#[test]
fn call_events_report_results_and_a_panicking_subscriber_is_harmless() {
    run(async {
        let (server, client) = pair();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        server.subscribe(|_| panic!("subscriber bug"));
        let sub = server.subscribe(move |e| {
            if let Event::Call(c) = e {
                s2.lock()
                    .unwrap()
                    .push((c.method.clone(), c.result, c.cap_name.clone()));
            }
        });
        serve_counter(&server).await;
        let c = client.bootstrap(&counter_def()).await.unwrap();
        c.call_value("get", Value::Undefined).await.unwrap();
        c.call_value("boom", Value::Undefined).await.unwrap_err();
        c.call_value("nope", Value::Undefined).await.unwrap_err();
        server.unsubscribe(sub);
        c.call_value("get", Value::Undefined).await.unwrap();
        let got = seen.lock().unwrap().clone();
        let name = Some("test.counter".to_owned());
        assert_eq!(
            got,
            vec![
                ("get".to_owned(), Ok(()), name.clone()),
                ("boom".to_owned(), Err(Code::Internal), name.clone()),
                ("nope".to_owned(), Err(Code::NotFound), name),
            ]
        );
    });
}

/// A handler that completes at once (polled inline by the connection's task) reports the
/// time it ran: its start and end were both the time of the driver's pass, so every such
/// call reported a duration of 0.
#[test]
fn a_call_event_times_a_handler_that_completes_at_once() {
    run(async {
        let (server, client) = pair();
        let def = CapDef::builder("test.busy")
            .method(MethodDef::call("spin"))
            .build();
        let imp = DynCap::new()
            .call("spin", |_, _| {
                // Busy on the connection's task, then ready at the first poll.
                std::thread::sleep(Duration::from_millis(20));
                async { Ok(Value::Null) }
            })
            .build();
        server.serve(def.clone(), imp).await.unwrap().detach();
        let durations = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sub = server.subscribe({
            let durations = durations.clone();
            move |e| {
                if let Event::Call(c) = e {
                    durations.lock().unwrap().push(c.duration);
                }
            }
        });
        let busy = client.bootstrap(&def).await.unwrap();
        busy.call_value("spin", Value::Undefined).await.unwrap();
        server.unsubscribe(sub);
        let durations = durations.lock().unwrap().clone();
        assert_eq!(durations.len(), 1, "{durations:?}");
        let took = durations[0].expect("a call that ran has a duration");
        assert!(took >= Duration::from_millis(20), "{took:?}");
    });
}

#[test]
fn context_metadata_reaches_the_handler() {
    run(async {
        let (server, client) = pair();
        let def = CapDef::builder("test.ctx")
            .method(MethodDef::call("who"))
            .build();
        let imp = DynCap::new()
            .call("who", |_, ctx: bunite_rpc::CallContext| {
                let v = ctx.context_value("user").unwrap_or("").to_owned();
                async move { Ok(Value::from(v)) }
            })
            .build();
        server.serve(def.clone(), imp).await.unwrap().detach();
        let c = client.bootstrap(&def).await.unwrap();
        let opts = CallOptions {
            context: vec![("user".into(), "ada".into())],
            ..CallOptions::default()
        };
        assert_eq!(
            c.call_with("who", Value::Undefined, opts).await.unwrap(),
            Value::from("ada")
        );
    });
}

#[test]
fn after_reply_work_follows_the_result_and_never_runs_for_a_cancelled_call() {
    run(async {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let ran = Arc::new(AtomicUsize::new(0));
        let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
        let def = CapDef::builder("test.after")
            .method(MethodDef::call("done"))
            .method(MethodDef::call("hang"))
            .build();
        let (r1, r2) = (ran.clone(), ran.clone());
        let served = Arc::new(std::sync::Mutex::new(None));
        let slot = served.clone();
        let imp = DynCap::new()
            .call("done", move |_, ctx: bunite_rpc::CallContext| {
                let (served, ran) = (slot.clone(), r1.clone());
                ctx.after_reply(move || {
                    ran.fetch_add(1, Ordering::SeqCst);
                    // Dropping the serve handle unserves without waiting, as after_reply
                    // work (on the connection's task) must.
                    drop(served.lock().unwrap().take());
                });
                async { Ok(Value::from("bye")) }
            })
            .call("hang", move |_, ctx: bunite_rpc::CallContext| {
                let ran = r2.clone();
                ctx.after_reply(move || {
                    ran.fetch_add(100, Ordering::SeqCst);
                });
                async {
                    std::future::pending::<()>().await;
                    Ok(Value::Undefined)
                }
            })
            .build();
        let handle = server.serve(def, imp).await.unwrap();
        *served.lock().unwrap() = Some(handle);
        let cap = raw.bootstrap(1, "test.after").await;
        // A cancelled call's after_reply work is dropped, never run.
        raw.send(call_frame(2, cap.0, "hang")).await;
        eventually(|| server.stats().active_calls == 1).await;
        raw.send(Frame::Cancel(bunite_rpc::wire::Cancel {
            id: CallId(2),
            reason: None,
        }))
        .await;
        assert!(matches!(raw.recv().await, Frame::Result(r) if r.id == CallId(2)));
        // The result comes first, then what the handler did after replying.
        raw.send(call_frame(3, cap.0, "done")).await;
        match raw.recv().await {
            Frame::Result(r) => assert_eq!((r.id, r.outcome), (CallId(3), Ok(Value::from("bye")))),
            other => panic!("expected the result first, got {other:?}"),
        }
        assert!(matches!(raw.recv().await, Frame::CapRevoked(r) if r.cap_ids == vec![cap]));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    });
}

/// A call's future is lazy, like an `async fn`'s: made and dropped without a poll, it sends
/// nothing (no `call`, no `cancel`) and holds no in-flight slot.
#[test]
fn a_call_future_dropped_before_its_first_poll_sends_nothing() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        let runtime = conn.runtime();
        drop(runtime.call_value("appName", Value::from("never polled")));
        drop(runtime.call_with(
            "appName",
            Value::from("never polled"),
            CallOptions::default(),
        ));
        assert_eq!(conn.current_stats().await.pending_calls, 0);

        let answer = async {
            let call = match raw.recv().await {
                Frame::Call(c) => c,
                other => panic!("expected the polled call, got {other:?}"),
            };
            assert_eq!(call.args, Value::from("polled"), "the first frame sent");
            raw.send(Frame::Result(ResultFrame {
                id: call.id,
                outcome: Ok(Value::from("app")),
            }))
            .await;
        };
        let (value, ()) =
            tokio::join!(runtime.call_value("appName", Value::from("polled")), answer);
        assert_eq!(value.unwrap(), Value::from("app"));
        let after = raw.recv_within(std::time::Duration::from_millis(50)).await;
        assert!(after.is_err(), "nothing else was sent: {after:?}");
        assert_eq!(conn.current_stats().await.pending_calls, 0);
    });
}

/// Polls the future it wraps, counting the polls in `polls`.
struct CountPolls<'a, F> {
    inner: std::pin::Pin<Box<F>>,
    polls: &'a std::cell::Cell<usize>,
}

impl<F: std::future::Future> std::future::Future for CountPolls<'_, F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.polls.set(self.polls.get() + 1);
        self.inner.as_mut().poll(cx)
    }
}

/// A caller that awaits many calls at once (here 300 in a `FuturesUnordered`, as `join_all`
/// does for many) polls each call twice: once to send it, once for its answer. A call's
/// answer is outside tokio's cooperative budget (a call always waits once, so it cannot
/// starve the runtime); inside it, a caller that found more than 128 answers waiting ran
/// out of budget and polled every other call again for nothing (1.2 extra polls a call at
/// 256 in flight over TCP). About one thread's order of work, so on one.
#[test]
fn many_calls_awaited_together_are_polled_twice_each() {
    use futures::stream::{FuturesUnordered, StreamExt};
    const CALLS: usize = 300;
    run_on_one_thread(async {
        let (_server, client, c) = counter_pair().await;
        let polls = std::cell::Cell::new(0);
        let mut inflight: FuturesUnordered<_> = (0..CALLS)
            .map(|_| CountPolls {
                inner: Box::pin(c.call::<_, Record>("increment", &())),
                polls: &polls,
            })
            .collect();
        // One poll sends them all; then every answer arrives before the caller looks.
        assert!(futures::poll!(inflight.next()).is_pending());
        assert_eq!(polls.get(), CALLS);
        let all_answered = async {
            while client.current_stats().await.pending_calls > 0 {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), all_answered)
            .await
            .expect("every call answered");
        let mut answered = 0;
        while let Some(result) = inflight.next().await {
            result.unwrap();
            answered += 1;
        }
        assert_eq!(answered, CALLS);
        assert_eq!(polls.get(), 2 * CALLS, "polls of {CALLS} calls");
        let n: Record = c.call("get", &()).await.unwrap();
        assert_eq!(n.get("count"), Some(&Value::Int(CALLS as i64)));
    });
}

/// Retries `attempt`, which must fail, until a task spawned first has run; how many times.
async fn failures_before_another_task_runs<F: std::future::Future<Output = bool>>(
    mut attempt: impl FnMut() -> F,
) -> usize {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    tokio::spawn({
        let stop = Arc::clone(&stop);
        async move { stop.store(true, Ordering::Relaxed) }
    });
    let mut failures = 0;
    while !stop.load(Ordering::Relaxed) {
        assert!(attempt().await, "the attempt failed locally");
        failures += 1;
        assert!(failures < 10_000, "the loop never let the other task run");
    }
    failures
}

/// A call, a bootstrap or a stream that fails before it is sent (here on a closed
/// connection) is ready at once, and takes a unit of the task's cooperative budget like
/// any ready tokio resource: a loop that retries it still lets the other tasks of its
/// runtime run, here the one that ends the loop. Without it the loop never yielded and the
/// runtime's thread was stuck in it.
#[test]
fn a_loop_of_calls_failing_at_once_lets_other_tasks_run() {
    use futures::StreamExt;
    run_on_one_thread(async {
        let (_server, client, c) = counter_pair().await;
        client.close();
        // Once this one has failed, the connection is closed and calls fail before sending.
        assert!(c.call_value("get", Value::Undefined).await.is_err());
        let closed = |e: &bunite_rpc::Error| e.local_kind() == Some(LocalError::Closed);
        let calls = failures_before_another_task_runs(|| async {
            c.call_value("get", Value::Undefined)
                .await
                .is_err_and(|e| closed(&e))
        })
        .await;
        let bootstraps = failures_before_another_task_runs(|| async {
            client
                .bootstrap(&counter_def())
                .await
                .is_err_and(|e| closed(&e))
        })
        .await;
        let streams = failures_before_another_task_runs(|| async {
            let mut stream = c.stream("watch", Value::Undefined);
            matches!(stream.next().await, Some(Err(e)) if closed(&e))
        })
        .await;
        // The budget is 128 a poll of the task.
        for (what, n) in [
            ("calls", calls),
            ("bootstraps", bootstraps),
            ("streams", streams),
        ] {
            assert!(n <= 129, "{n} {what} failed before the other task ran");
        }
    });
}
