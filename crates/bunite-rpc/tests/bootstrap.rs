//! Registry and bootstrap (PROTOCOL §8): every status row with code, message and reason.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bunite_rpc::events::{BootstrapResult, Event};
use bunite_rpc::{
    Attestation, CapDef, Code, Connection, IfExists, Limits, MethodDef, Policy, Record, TrustLevel,
    Value,
};
use common::*;

fn versioned(version: &str) -> Arc<CapDef> {
    CapDef::builder("test.counter")
        .version(version)
        .method(MethodDef::call("get"))
        .build()
}

#[test]
fn bootstrap_returns_a_working_client_and_the_tables_end_clean() {
    run(async {
        let (server, client, counter) = counter_pair().await;
        let v: Record = counter
            .call("increment", &Record::new().with("delta", 5))
            .await
            .unwrap();
        assert_eq!(v.get("count"), Some(&Value::Int(5)));
        assert_eq!(server.current_stats().await.live_caps, 3);
        drop(counter);
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn bootstrap_without_a_string_name_is_invalid_argument() {
    run(async {
        let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
        serve_counter(&server).await;
        for args in [
            Value::Undefined,
            Value::Record(Record::new().with("name", 7)),
            Value::from("x"),
        ] {
            let e = err_of(raw.call(1, 0, "bootstrap", args).await);
            assert_wire(
                &e,
                "invalid_argument",
                "bootstrap requires {name: string}",
                None,
            );
        }
    });
}

#[test]
fn bootstrap_of_an_unserved_name_is_not_found() {
    run(async {
        let (_server, client) = pair();
        let e = client
            .bootstrap_name("test.missing", None)
            .await
            .unwrap_err();
        assert_remote(&e, Code::NotFound, "cap \"test.missing\" not served", None);
    });
}

#[test]
fn versions_must_match_when_both_sides_have_one() {
    run(async {
        let (server, client) = pair();
        server
            .serve(versioned("2"), counter_impl())
            .await
            .unwrap()
            .detach();
        let e = client.bootstrap(&versioned("1")).await.unwrap_err();
        assert_remote(
            &e,
            Code::FailedPrecondition,
            "version mismatch (server \"2\", client \"1\")",
            Some("version_mismatch"),
        );
        // Same version, and no version on the client, both work.
        client.bootstrap(&versioned("2")).await.unwrap();
        client.bootstrap_name("test.counter", None).await.unwrap();
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn the_policy_sees_the_attestation_and_can_deny_or_fail() {
    run(async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let policy = Policy::from_async(move |name: String, att: Attestation| {
            seen2.lock().unwrap().push((name.clone(), att.level));
            async move {
                match name.as_str() {
                    "test.counter" => Ok(true),
                    "test.denied" => Ok(false),
                    _ => Err("policy backend down".to_owned()),
                }
            }
        });
        let server_b = Connection::builder()
            .policy(policy)
            .attestation(Attestation::app_internal("app://main"));
        let (server, client) = pair_with(server_b, Connection::builder());
        for name in ["test.counter", "test.denied", "test.broken"] {
            let def = CapDef::builder(name).method(MethodDef::call("get")).build();
            server.serve(def, counter_impl()).await.unwrap().detach();
        }
        client.bootstrap_name("test.counter", None).await.unwrap();
        let e = client
            .bootstrap_name("test.denied", None)
            .await
            .unwrap_err();
        assert_remote(
            &e,
            Code::FailedPrecondition,
            "policy denied",
            Some("unauthorized"),
        );
        let e = client
            .bootstrap_name("test.broken", None)
            .await
            .unwrap_err();
        assert_remote(&e, Code::Internal, "policy threw", None);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        assert!(seen
            .iter()
            .all(|(_, level)| *level == TrustLevel::AppInternal));
        assert_clean(&[&server, &client]).await;
    });
}

#[test]
fn the_default_attestation_is_untrusted() {
    run(async {
        let level = Arc::new(Mutex::new(None));
        let l2 = level.clone();
        let policy = Policy::new(move |_, att| {
            *l2.lock().unwrap() = Some(att.clone());
            true
        });
        let (server, client) =
            pair_with(Connection::builder().policy(policy), Connection::builder());
        serve_counter(&server).await;
        client.bootstrap(&counter_def()).await.unwrap();
        assert_eq!(level.lock().unwrap().clone(), Some(Attestation::default()));
        assert_eq!(Attestation::default().level, TrustLevel::Untrusted);
        assert_eq!(Attestation::default().partition, "default");
    });
}

#[test]
fn bootstrapping_twice_shares_one_id_with_refcount_two() {
    run(async {
        let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
        serve_counter(&server).await;
        let a = raw.bootstrap(1, "test.counter").await;
        let b = raw.bootstrap(2, "test.counter").await;
        assert_eq!(a, b);
        use bunite_rpc::wire::{DropEntry, DropFrame, Frame};
        raw.send(Frame::Drop(DropFrame {
            caps: vec![DropEntry { id: a, delta: 1 }],
        }))
        .await;
        // Still alive after one drop.
        let r = raw.call(3, a.0, "get", Value::Undefined).await;
        assert!(r.outcome.is_ok());
        raw.send(Frame::Drop(DropFrame {
            caps: vec![DropEntry { id: a, delta: 1 }],
        }))
        .await;
        let e = err_of(raw.call(4, a.0, "get", Value::Undefined).await);
        assert_wire(&e, "not_found", &format!("cap-id {a} not found"), None);
        // The freed instance is forgotten: the next bootstrap allocates a new id.
        let c = raw.bootstrap(5, "test.counter").await;
        assert!(c.0 > a.0);
    });
}

#[test]
fn bootstrap_fails_when_the_cap_table_is_full() {
    run(async {
        let limits = Limits {
            max_caps: 3,
            ..Limits::default()
        };
        let (server, client) =
            pair_with(Connection::builder().limits(limits), Connection::builder());
        let other = CapDef::builder("test.other")
            .method(MethodDef::call("get"))
            .build();
        serve_counter(&server).await;
        server
            .serve(other.clone(), counter_impl())
            .await
            .unwrap()
            .detach();
        let _first = client.bootstrap(&counter_def()).await.unwrap();
        let e = client.bootstrap(&other).await.unwrap_err();
        assert_remote(
            &e,
            Code::ResourceExhausted,
            "cap-table limit 3",
            Some("max_caps_per_connection"),
        );
    });
}

#[test]
fn serve_refuses_collisions_and_the_reserved_prefix() {
    run(async {
        let (server, _client) = pair();
        let _h = server.serve(counter_def(), counter_impl()).await.unwrap();
        let e = server
            .serve(counter_def(), counter_impl())
            .await
            .unwrap_err();
        assert_status(
            &e,
            Code::AlreadyExists,
            "cap \"test.counter\" already served",
            Some("name_collision"),
        );
        let reserved = CapDef::builder("bunite.Window").build();
        let e = server.serve(reserved, counter_impl()).await.unwrap_err();
        assert_status(
            &e,
            Code::AlreadyExists,
            "cap name \"bunite.Window\" uses reserved prefix \"bunite.\"",
            Some("reserved_namespace"),
        );
        let skipped = server
            .serve_with(counter_def(), counter_impl(), IfExists::Skip)
            .await
            .unwrap();
        assert!(skipped.names().is_empty());
    });
}

#[test]
fn serve_all_is_atomic() {
    run(async {
        let (server, client) = pair();
        let a = CapDef::builder("test.a")
            .method(MethodDef::call("get"))
            .build();
        let _h = server.serve(counter_def(), counter_impl()).await.unwrap();
        let e = server
            .serve_all(
                vec![(a.clone(), counter_impl()), (counter_def(), counter_impl())],
                IfExists::Throw,
            )
            .await
            .unwrap_err();
        assert_eq!(e.reason(), Some("name_collision"));
        // Nothing was registered: test.a is not served.
        let e = client.bootstrap(&a).await.unwrap_err();
        assert_eq!((e.code(), e.is_remote()), (Code::NotFound, true));
        let bad_version = CapDef::builder("test.counter").version("9").build();
        let e = server
            .serve_all(
                vec![(a.clone(), counter_impl()), (bad_version, counter_impl())],
                IfExists::Replace,
            )
            .await
            .unwrap_err();
        assert_status(
            &e,
            Code::FailedPrecondition,
            "version mismatch on replace for \"test.counter\" (current \"undefined\", new \"9\")",
            Some("version_mismatch"),
        );
        let e = client.bootstrap(&a).await.unwrap_err();
        assert_eq!((e.code(), e.is_remote()), (Code::NotFound, true));
    });
}

#[test]
fn a_serve_handle_unserves_on_drop() {
    run(async {
        let (server, client) = pair();
        let handle = server.serve(counter_def(), counter_impl()).await.unwrap();
        assert_eq!(handle.names(), ["test.counter".to_owned()]);
        drop(handle);
        let e = client.bootstrap(&counter_def()).await.unwrap_err();
        assert_eq!((e.code(), e.is_remote()), (Code::NotFound, true));
        server.unserve("never.served").await;
    });
}

/// A `serve` its caller stopped waiting for (a dropped future, a timeout around it) once
/// the connection had taken it serves nothing: its caller never got the handle that would
/// unserve it, so the name stayed served for the connection's life, and a second `serve`
/// of it failed `already_exists`.
#[test]
fn a_serve_given_up_on_serves_nothing() {
    run(async {
        let (server, client) = pair();
        for _ in 0..3 {
            let mut serving = Box::pin(server.serve(counter_def(), counter_impl()));
            // The command is queued at the first poll; the answer comes from the driver (at
            // once, on two workers, now and then: its handle, dropped with it, unserves too).
            let _ = futures::poll!(serving.as_mut());
            drop(serving);
        }
        let e = client.bootstrap(&counter_def()).await.unwrap_err();
        assert_eq!((e.code(), e.is_remote()), (Code::NotFound, true));
        let handle = server.serve(counter_def(), counter_impl()).await;
        assert!(handle.is_ok(), "the name is free: {handle:?}");
        drop(handle);
    });
}

#[test]
fn replace_needs_a_served_name_and_the_same_version() {
    run(async {
        let (server, client) = pair();
        let e = server
            .replace(counter_def(), counter_impl())
            .await
            .unwrap_err();
        assert_status(&e, Code::NotFound, "cap \"test.counter\" not served", None);
        server
            .serve(versioned("1"), counter_impl())
            .await
            .unwrap()
            .detach();
        let e = server
            .replace(versioned("2"), counter_impl())
            .await
            .unwrap_err();
        assert_status(
            &e,
            Code::FailedPrecondition,
            "version mismatch (current \"1\", new \"2\")",
            Some("version_mismatch"),
        );
        let c = client.bootstrap(&versioned("1")).await.unwrap();
        let before: Record = c.call("get", &()).await.unwrap();
        assert_eq!(before.get("count"), Some(&Value::Int(0)));
        let answers_seven = bunite_rpc::dynamic::DynCap::new()
            .call("get", |_, _| async { Ok(Value::from(7i64)) })
            .build();
        server.replace(versioned("1"), answers_seven).await.unwrap();
        // The live instance switched, no revocation.
        let after: i64 = c.call("get", &()).await.unwrap();
        assert_eq!(after, 7);
    });
}

#[test]
fn bootstrap_events_report_each_outcome() {
    run(async {
        let results = Arc::new(Mutex::new(Vec::new()));
        let r2 = results.clone();
        let (server, client) = pair_with(
            Connection::builder().policy(Policy::new(|name, _| name != "test.denied")),
            Connection::builder(),
        );
        server.subscribe(move |e| {
            if let Event::Bootstrap(b) = e {
                r2.lock()
                    .unwrap()
                    .push((b.name.clone(), b.result, b.cap_id.is_some()));
            }
        });
        let denied = CapDef::builder("test.denied").build();
        serve_counter(&server).await;
        server
            .serve(denied.clone(), counter_impl())
            .await
            .unwrap()
            .detach();
        client.bootstrap(&counter_def()).await.unwrap();
        client.bootstrap(&denied).await.unwrap_err();
        client.bootstrap_name("nope", None).await.unwrap_err();
        let got = results.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                ("test.counter".to_owned(), BootstrapResult::Ok, true),
                ("test.denied".to_owned(), BootstrapResult::Denied, false),
                ("nope".to_owned(), BootstrapResult::NotFound, false),
            ]
        );
    });
}

#[test]
fn bootstrap_all_releases_the_successes_when_one_fails() {
    run(async {
        let (server, client) = pair();
        serve_counter(&server).await;
        let missing = CapDef::builder("test.missing").build();
        let e = client
            .bootstrap_all(&[counter_def(), missing])
            .await
            .unwrap_err();
        assert_remote(&e, Code::NotFound, "cap \"test.missing\" not served", None);
        assert_clean(&[&server, &client]).await;
        let all = client.bootstrap_all(&[counter_def()]).await.unwrap();
        assert_eq!(all.len(), 1);
    });
}

#[test]
fn two_connections_serve_and_bootstrap_each_other_at_once() {
    run(async {
        let (a, b) = pair();
        let calls = Arc::new(AtomicUsize::new(0));
        serve_counter(&a).await;
        let other = CapDef::builder("test.other")
            .method(MethodDef::call("get"))
            .build();
        let c2 = calls.clone();
        let imp = bunite_rpc::dynamic::DynCap::new()
            .call("get", move |_, _| {
                c2.fetch_add(1, Ordering::SeqCst);
                async { Ok(Value::from("from b")) }
            })
            .build();
        b.serve(other.clone(), imp).await.unwrap().detach();
        let counter = counter_def();
        let (from_a, from_b) = tokio::join!(b.bootstrap(&counter), a.bootstrap(&other));
        let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
        let (x, y) = tokio::join!(
            from_a.call::<_, Record>("increment", &()),
            from_b.call::<_, String>("get", &())
        );
        assert_eq!(x.unwrap().get("count"), Some(&Value::Int(1)));
        assert_eq!(y.unwrap(), "from b");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        drop((from_a, from_b));
        assert_clean(&[&a, &b]).await;
    });
}

#[test]
fn caps_served_by_the_builder_answer_a_bootstrap_already_waiting() {
    run(async {
        use bunite_rpc::transport::memory;
        use bunite_rpc::wire::{Call, CallId, CapId, Decoder, Encoder, Frame, Hello};
        let (a, mut b) = memory::pair();
        // The peer's hello and bootstrap are queued before the connection even exists.
        let mut enc = Encoder::new();
        let hello = Hello {
            v: 1,
            mode: "native".into(),
            features: vec![],
            max_bytes: 1 << 20,
            origin: String::new(),
        };
        let boot = Call {
            id: CallId(1),
            target: CapId(0),
            method: "bootstrap".into(),
            args: Value::Record(Record::new().with("name", "test.counter")),
            meta: None,
        };
        for f in [Frame::Hello(hello), Frame::Call(boot)] {
            b.send_raw(enc.encode_to_vec(&f.to_value()).into())
                .await
                .unwrap();
        }
        let conn = Connection::builder()
            .serve(counter_def(), counter_impl())
            .connect(a);
        track(&conn);
        let mut dec = Decoder::new(Default::default());
        assert!(matches!(
            dec.decode_frame(&b.recv_raw().await.unwrap()).unwrap(),
            Frame::Hello(_)
        ));
        match dec.decode_frame(&b.recv_raw().await.unwrap()).unwrap() {
            Frame::Result(r) => assert_eq!(r.outcome, Ok(Value::CapRef(CapId(2)))),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn try_connect_refuses_builder_caps_that_cannot_be_served() {
    run(async {
        let (a, _b) = bunite_rpc::transport::memory::pair();
        let reserved = CapDef::builder("bunite.Nope").build();
        let e = Connection::builder()
            .serve(reserved, counter_impl())
            .try_connect(a)
            .unwrap_err();
        assert_eq!(e.reason(), Some("reserved_namespace"));
    });
}

/// PROTOCOL §15: `revoke` events for replace (the instance's id, or none) and unserve, and
/// `error` events for a failing policy and a failing disposal method.
#[test]
fn revoke_and_error_events_report_replace_unserve_the_policy_and_disposal() {
    use bunite_rpc::events::RevokeReason;
    run(async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let policy = Policy::from_async(|name: String, _| async move {
            match name.as_str() {
                "test.broken" => Err("policy backend down".to_owned()),
                _ => Ok(true),
            }
        });
        let (server, client) =
            pair_with(Connection::builder().policy(policy), Connection::builder());
        server.subscribe(move |e| {
            let got = match e {
                Event::Revoke(r) => format!("revoke {:?} {:?}", r.reason, r.cap_ids),
                Event::Error(e) => format!("error {}", e.phase),
                _ => return,
            };
            seen2.lock().unwrap().push(got);
        });
        server
            .serve(versioned("1"), counter_impl())
            .await
            .unwrap()
            .detach();
        server
            .replace(versioned("1"), counter_impl())
            .await
            .unwrap();
        let c = client.bootstrap(&versioned("1")).await.unwrap();
        let id = c.id();
        server
            .replace(versioned("1"), counter_impl())
            .await
            .unwrap();
        let disposable = CapDef::builder("test.disposable")
            .method(MethodDef::call("close"))
            .disposal("close")
            .build();
        let failing_close = bunite_rpc::dynamic::DynCap::new()
            .call("close", |_, _| async {
                Err::<Value, _>(bunite_rpc::Status::internal("close failed"))
            })
            .build();
        server
            .serve(disposable.clone(), failing_close)
            .await
            .unwrap()
            .detach();
        let d = client.bootstrap(&disposable).await.unwrap();
        let d_id = d.id();
        server.unserve("test.disposable").await;
        let broken = CapDef::builder("test.broken").build();
        server.serve(broken, counter_impl()).await.unwrap().detach();
        client
            .bootstrap_name("test.broken", None)
            .await
            .unwrap_err();
        let want = vec![
            format!("revoke {:?} []", RevokeReason::Replace),
            format!("revoke {:?} [{id:?}]", RevokeReason::Replace),
            "error dispose".to_owned(),
            "error policy".to_owned(),
            format!("revoke {:?} [{d_id:?}]", RevokeReason::Unserve),
        ];
        eventually(|| seen.lock().unwrap().len() >= want.len()).await;
        let mut got = seen.lock().unwrap().clone();
        // Unserving runs the disposal beside the connection: its error and the revoke
        // event come in either order.
        got[2..].sort();
        assert_eq!(got, want);
        drop((c, d));
        assert_clean(&[&server, &client]).await;
    });
}
