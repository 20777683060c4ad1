//! Cancel safety of the async API: each public future or stream dropped at one of its await
//! points (`Box::pin`, `futures::poll!` once or a few times, drop), then what it leaves is
//! observed. `docs/RELIABILITY.md` ("Cancel safety of the async API") has the table of what
//! was checked; the calls, cap-returning calls, bootstraps, serves and client streams given
//! up on are tested beside their own concerns (`cancel.rs`, `caps.rs`, `bootstrap.rs`,
//! `streams.rs`).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::wire::{CallId, Frame, ResultFrame};
use bunite_rpc::{CapDef, CapId, Code, Connection, ConnectionSet, MethodDef, Value};
use common::*;
use futures::StreamExt;

/// The next frame, which must be a call: its id and method.
async fn next_call(raw: &mut RawPeer) -> (CallId, String) {
    match raw.recv().await {
        Frame::Call(c) => (c.id, c.method.to_string()),
        other => panic!("expected a call, got {other:?}"),
    }
}

/// `bootstrap_all` given up on after one of its bootstraps was answered and while the
/// other still waits: the cap that came is released (nobody will adopt it) and the other
/// bootstrap is cancelled. Nothing is left pending.
#[test]
fn a_bootstrap_all_given_up_part_way_releases_what_came_and_cancels_the_rest() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;
        let defs = [
            CapDef::builder("test.a").build(),
            CapDef::builder("test.b").build(),
        ];
        let mut booting = Box::pin(conn.bootstrap_all(&defs));
        assert!(futures::poll!(booting.as_mut()).is_pending());
        let (a, _) = next_call(&mut raw).await;
        let (b, _) = next_call(&mut raw).await;
        // The counts are published after the frames go out: on two workers they may still
        // say one pending call here, which the wait below would take for `a`'s answer.
        eventually(|| conn.stats().pending_calls == 2).await;
        raw.send(Frame::Result(ResultFrame {
            id: a,
            outcome: Ok(Value::CapRef(CapId(5))),
        }))
        .await;
        eventually(|| conn.stats().pending_calls == 1).await;
        drop(booting);
        let (mut cancelled, mut dropped) = (Vec::new(), Vec::new());
        while cancelled.is_empty() || dropped.is_empty() {
            match raw.recv_within(Duration::from_secs(5)).await {
                Ok(Some(Frame::Cancel(c))) => cancelled.push(c.id),
                Ok(Some(Frame::Drop(d))) => {
                    dropped.extend(d.caps.iter().map(|e| (e.id.0, e.delta)));
                }
                other => panic!("expected a cancel and a drop, got {other:?}"),
            }
        }
        assert_eq!((cancelled, dropped), (vec![b], vec![(5, 1)]));
        // The cancelled bootstrap is kept until its answer comes, whose cap is released.
        raw.send(Frame::Result(ResultFrame {
            id: b,
            outcome: Ok(Value::CapRef(CapId(6))),
        }))
        .await;
        match raw.recv_within(Duration::from_secs(5)).await {
            Ok(Some(Frame::Drop(d))) => assert_eq!((d.caps[0].id, d.caps[0].delta), (CapId(6), 1)),
            other => panic!("expected the late cap's drop, got {other:?}"),
        }
        eventually(|| conn.stats().pending_calls == 0).await;
        assert!(raw.recv_within(Duration::from_millis(50)).await.is_err());
    });
}

fn closable_def() -> Arc<CapDef> {
    CapDef::builder("test.closable")
        .method(MethodDef::call("close"))
        .disposal("close")
        .build()
}

/// Bootstraps `test.closable` from `raw` as cap 7.
async fn closable(conn: &Connection, raw: &mut RawPeer) -> bunite_rpc::Client {
    let booting = tokio::spawn({
        let conn = conn.clone();
        async move { conn.bootstrap(&closable_def()).await }
    });
    let (id, _) = next_call(raw).await;
    raw.send(Frame::Result(ResultFrame {
        id,
        outcome: Ok(Value::CapRef(CapId(7))),
    }))
    .await;
    booting.await.unwrap().unwrap()
}

/// `Client::dispose` given up on. Before its first poll: the client it owns is dropped,
/// which releases the reference; the disposal method is not called. After its first poll
/// (documented): the disposal call and the release have gone out, and the drop cancels the
/// disposal call, as dropping any call does; the reference is released either way, once.
#[test]
fn a_dispose_given_up_on_still_releases_its_reference() {
    run(async {
        let (conn, mut raw) = RawPeer::connect(Connection::builder()).await;

        let node = closable(&conn, &mut raw).await;
        drop(node.dispose());
        match raw.recv_within(Duration::from_secs(5)).await {
            Ok(Some(Frame::Drop(d))) => assert_eq!(d.caps[0].id, CapId(7)),
            other => panic!("expected the drop alone, got {other:?}"),
        }

        let node = closable(&conn, &mut raw).await;
        let mut disposing = Box::pin(node.dispose());
        assert!(futures::poll!(disposing.as_mut()).is_pending());
        drop(disposing);
        let (close, method) = next_call(&mut raw).await;
        assert_eq!(method, "close");
        match raw.recv_within(Duration::from_secs(5)).await {
            Ok(Some(Frame::Drop(d))) => assert_eq!((d.caps[0].id, d.caps[0].delta), (CapId(7), 1)),
            other => panic!("expected the drop, got {other:?}"),
        }
        match raw.recv_within(Duration::from_secs(5)).await {
            Ok(Some(Frame::Cancel(c))) => assert_eq!(c.id, close),
            other => panic!("expected the close's cancel, got {other:?}"),
        }
        eventually(|| conn.stats().pending_calls == 0).await;
        assert!(raw.recv_within(Duration::from_millis(50)).await.is_err());
    });
}

/// `Connection::replace`, `Connection::unserve` and `ServeHandle::unserve` given up on
/// after their first poll (the command queued) still apply (documented): the command is
/// the action, and the future only waits to hear it was done.
#[test]
fn a_replace_or_unserve_given_up_after_it_was_queued_still_applies() {
    run(async {
        let (server, client) = pair();
        let handle = server.serve(counter_def(), counter_impl()).await.unwrap();
        let replaced = DynCap::new()
            .call("get", |_, _| async { Ok(Value::from("replaced")) })
            .build();
        let mut replacing = Box::pin(server.replace(counter_def(), replaced));
        // Queued at the first poll; on two workers the driver may answer it at once.
        let _ = futures::poll!(replacing.as_mut());
        drop(replacing);
        let counter = client.bootstrap(&counter_def()).await.unwrap();
        let got = counter.call_value("get", Value::Undefined).await.unwrap();
        assert_eq!(got, Value::from("replaced"));
        drop(counter);

        let mut unserving = Box::pin(server.unserve("test.counter"));
        // Queued at the first poll; on two workers the driver may answer it at once.
        let _ = futures::poll!(unserving.as_mut());
        drop(unserving);
        let e = client.bootstrap(&counter_def()).await.unwrap_err();
        assert_eq!((e.code(), e.is_remote()), (Code::NotFound, true));
        handle.detach();

        let handle = server.serve(counter_def(), counter_impl()).await.unwrap();
        let mut unserving = Box::pin(handle.unserve());
        // Queued at the first poll; on two workers the driver may answer it at once.
        let _ = futures::poll!(unserving.as_mut());
        drop(unserving);
        let e = client.bootstrap(&counter_def()).await.unwrap_err();
        assert_eq!((e.code(), e.is_remote()), (Code::NotFound, true));
    });
}

/// An emitter's `send` given up on after its first poll (documented): the value was
/// handed to the stream at that poll, and goes out; the drop does not take it back, so a
/// producer that retries it sends it twice.
#[test]
fn an_emitter_send_given_up_after_its_first_poll_still_sends_its_value() {
    run(async {
        let mut stream = bunite_rpc::emitter::emitter_stream(|mut out| async move {
            let mut first = Box::pin(out.send(Value::from(1)));
            assert!(
                futures::poll!(first.as_mut()).is_pending(),
                "nobody took it yet"
            );
            drop(first);
            out.send(Value::from(2)).await
        });
        let mut got = Vec::new();
        while let Some(v) = stream.next().await {
            got.push(v.unwrap());
        }
        assert_eq!(got, vec![Value::from(1), Value::from(2)]);
    });
}

/// Counts its drops: a handler's or a stream source's future dropped.
struct OnDrop(Arc<AtomicUsize>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A handler the runtime drops because its peer cancelled the call lets go of what it
/// held: the call it was waiting on is cancelled on the connection it went to (its
/// handler there dropped), the stream it opened is cancelled (its source dropped), and
/// the cap it was about to return is never exported. Every table on both ends is empty
/// afterwards (checked by the run).
#[test]
fn a_handler_dropped_by_its_peers_cancel_lets_go_of_its_calls_streams_and_caps() {
    run(async {
        let (server, client) = pair();
        let back_def = CapDef::builder("test.back")
            .method(MethodDef::call("slow"))
            .method(MethodDef::stream("ticks"))
            .build();
        let slow_dropped = Arc::new(AtomicUsize::new(0));
        let ticks_dropped = Arc::new(AtomicUsize::new(0));
        let back = DynCap::new()
            .call("slow", {
                let dropped = slow_dropped.clone();
                move |_, _| {
                    let guard = OnDrop(dropped.clone());
                    async move {
                        let _guard = guard;
                        std::future::pending::<()>().await;
                        Ok(Value::Undefined)
                    }
                }
            })
            .stream_emitter("ticks", {
                let dropped = ticks_dropped.clone();
                move |_, _, mut out| {
                    let guard = OnDrop(dropped.clone());
                    async move {
                        let _guard = guard;
                        for n in 0.. {
                            out.send(Value::from(n)).await?;
                        }
                        Ok(())
                    }
                }
            })
            .build();
        client.serve(back_def.clone(), back).await.unwrap().detach();

        let relay_def = CapDef::builder("test.relay")
            .method(MethodDef::call("relay"))
            .build();
        let started = Arc::new(tokio::sync::Notify::new());
        let relay = DynCap::new()
            .call("relay", {
                let (back_def, started) = (back_def.clone(), started.clone());
                move |_, ctx: bunite_rpc::CallContext| {
                    let (back_def, started) = (back_def.clone(), started.clone());
                    async move {
                        let back = ctx.connection().bootstrap(&back_def).await?;
                        let returned = ctx.export(counter_def(), counter_impl());
                        let mut ticks = back.stream("ticks", Value::Undefined);
                        ticks.next().await;
                        let mut slow = Box::pin(back.call_value("slow", Value::Undefined));
                        assert!(futures::poll!(slow.as_mut()).is_pending());
                        started.notify_one();
                        slow.await?;
                        Ok(returned)
                    }
                }
            })
            .build();
        server
            .serve(relay_def.clone(), relay)
            .await
            .unwrap()
            .detach();

        let relay = client.bootstrap(&relay_def).await.unwrap();
        let mut relaying = Box::pin(relay.call_cap("relay", Value::Undefined));
        tokio::select! {
            _ = relaying.as_mut() => panic!("the relay answered"),
            () = started.notified() => {}
        }
        drop(relaying);
        eventually(|| slow_dropped.load(Ordering::SeqCst) == 1).await;
        eventually(|| ticks_dropped.load(Ordering::SeqCst) == 1).await;
        drop(relay);
        assert_clean(&[&server, &client]).await;
    });
}

/// `ConnectionSet::serve_with_shutdown` given up on once the stop began (documented): the
/// connections drain on; each closes by its own timer when the grace runs out, so nothing
/// stays open for lack of the future that began the stop.
#[test]
fn a_shutdown_given_up_after_the_stop_began_still_closes_at_the_grace() {
    run_paused(async {
        let (server, client) = pair();
        let set = ConnectionSet::new();
        set.insert(&server);
        serve_counter(&server).await;
        let counter = client.bootstrap(&counter_def()).await.unwrap();
        let mut waiting = Box::pin(counter.call_value("wait", Value::Undefined));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        eventually(|| server.stats().active_calls == 1).await;

        let grace = Duration::from_secs(10);
        let began = tokio::time::Instant::now();
        let mut stopping =
            Box::pin(set.serve_with_shutdown(std::future::pending::<()>(), async {}, grace));
        assert!(futures::poll!(stopping.as_mut()).is_pending());
        drop(stopping);
        server.closed().await;
        assert!(began.elapsed() >= grace, "closed at the grace, not before");
        assert!(set.is_empty());
        let e = waiting.await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        client.closed().await;
        drop(counter);
    });
}

/// A TCP listener's `accept` given up on while it holds a connection slot (the slot is
/// taken before the socket is accepted) gives the slot back: with room for one
/// connection, accepts given up on again and again never keep the next from accepting.
#[cfg(feature = "byte-stream")]
#[test]
fn an_accept_given_up_on_gives_its_connection_slot_back() {
    use bunite_rpc::transport::byte_stream::{self, TcpMessageListener};
    use bunite_rpc::transport::ListenerConfig;
    run(async {
        let config = ListenerConfig::default().max_connections(1);
        let listener = TcpMessageListener::bind("127.0.0.1:0", config)
            .await
            .unwrap();
        for _ in 0..3 {
            let mut accepting = Box::pin(listener.accept());
            assert!(futures::poll!(accepting.as_mut()).is_pending());
            drop(accepting);
        }
        let addr = listener.local_addr().unwrap();
        let (accepted, connected) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(5), listener.accept()),
            byte_stream::tcp_connect(addr),
        );
        let (theirs, _) = accepted.expect("a slot was free").unwrap();
        let (ours, theirs) = (tracked(connected.unwrap()), tracked(theirs));
        drop((ours, theirs));
    });
}
