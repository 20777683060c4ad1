//! Sub-caps through the typed API: caps returning caps (of their own kind too), arrays and
//! records of caps, disposal and release, and disposal at shutdown. The caps are in
//! `typed_fixtures`.

mod common;
mod typed_fixtures;

use std::sync::atomic::Ordering;

use bunite_rpc::{Code, LocalError};
use common::{assert_clean, assert_local, assert_remote, eventually, run};
use typed_fixtures::*;

#[test]
fn sub_caps_and_sub_caps_of_sub_caps() {
    run(async {
        let (server, client, state, counter) = setup().await;
        let a = counter.make_child(named("a")).await.unwrap();
        let b = a.sub(named("b")).await.unwrap();
        let c = b.sub(named("c")).await.unwrap();
        assert_eq!(c.name().await.unwrap(), "c");
        assert_eq!(b.ping(41).await.unwrap(), 42);
        assert_eq!(server.current_stats().await.live_caps, 6);
        assert_eq!(state.live.load(Ordering::SeqCst), 3);
        assert_eq!(c.client().def().unwrap().name(), "test.Child");
        drop((a, b, c, counter));
        assert_clean(&[&server, &client]).await;
        eventually(|| state.live.load(Ordering::SeqCst) == 0).await;
        // Dropping never runs the disposal method; shutdown or dispose does.
        assert_eq!(state.closed.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn arrays_and_records_of_caps() {
    run(async {
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
    });
}

/// A record of caps whose handler repeats a key (here from the caller's own names) would be
/// a record no peer can read: our decoder refuses a record with two equal keys (a protocol
/// error that ends the connection), and a JS peer keeps the last. Ours kept the last too,
/// and the first cap stayed exported with no one to release it. The call fails instead (a
/// bad cap return, PROTOCOL §13.4), nothing is exported, and the connection carries on.
#[test]
fn a_record_of_caps_with_a_repeated_key_fails_the_call_only() {
    run(async {
        let (server, client, state, counter) = setup().await;
        let before = server.current_stats().await.live_caps;
        let e = counter
            .child_pairs(names(&["a", "b", "a"]))
            .await
            .unwrap_err();
        assert_remote(
            &e,
            Code::FailedPrecondition,
            "the record of caps has the key \"a\" twice",
            Some("unregistered_cap_return"),
        );
        assert_eq!(server.current_stats().await.live_caps, before);
        assert_eq!(state.live.load(Ordering::SeqCst), 0);
        // The connection carries on.
        let pairs = counter.child_pairs(names(&["a", "b"])).await.unwrap();
        assert_eq!(pairs[1].1.name().await.unwrap(), "b");
        drop((pairs, counter));
        assert_clean(&[&server, &client]).await;
        eventually(|| state.live.load(Ordering::SeqCst) == 0).await;
    });
}

#[test]
fn dispose_calls_the_disposal_method_exactly_once() {
    run(async {
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
        assert_local(
            &e,
            LocalError::Released,
            Code::FailedPrecondition,
            "cap released",
            None,
        );
        drop((twin, counter));
        assert_clean(&[&server, &client]).await;
        assert_eq!(state.closed.load(Ordering::SeqCst), 2);
        eventually(|| state.live.load(Ordering::SeqCst) == 0).await;
    });
}

#[test]
fn shutdown_disposes_live_children() {
    run(async {
        let (server, client, state, counter) = setup().await;
        let kids = counter.children(names(&["a", "b"])).await.unwrap();
        server.close();
        eventually(|| state.closed.load(Ordering::SeqCst) == 2).await;
        client.closed().await;
        let e = kids[0].ping(1).await.unwrap_err();
        assert_local(
            &e,
            LocalError::Closed,
            Code::Unavailable,
            "connection closed",
            None,
        );
        drop((kids, counter));
        eventually(|| state.live.load(Ordering::SeqCst) == 0).await;
        assert_eq!(server.current_stats().await.live_caps, 2);
        assert_eq!(client.current_stats().await.pending_calls, 0);
    });
}
