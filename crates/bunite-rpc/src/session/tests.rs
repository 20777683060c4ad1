//! Deterministic tests of the session: two state machines pumped against each other, no
//! runtime, no clock, handlers completed by hand.

use std::sync::Arc;

use bunite_wire::{CallId, CapId, Decoder, Frame, Hello, Value};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use super::outbound::CallRequest;
use super::registry::IfExists;
use super::{Action, Config, PeerState, Session};
use crate::handler::tests::NoopCap;
use crate::handler::{ExportedCap, Returned};
use crate::limits::Limits;
use crate::policy::Attestation;
use crate::schema::{CapDef, MethodDef, Returns};
use crate::status::{Code, Status};

struct Peer {
    s: Session,
    dec: Decoder,
    actions: Vec<Action>,
}

fn peer() -> Peer {
    let cfg = Arc::new(Config {
        limits: Limits::default(),
        attestation: Attestation::default(),
        policy: None,
        peer_id: "peer".into(),
        hello: Hello {
            v: 1,
            mode: "native".into(),
            features: vec![],
            max_bytes: 1 << 20,
            origin: "test".into(),
        },
        backlog: Arc::default(),
    });
    let (tx, _rx) = watch::channel(PeerState::Waiting);
    Peer {
        s: Session::new(cfg, tx),
        dec: Decoder::new(Default::default()),
        actions: Vec::new(),
    }
}

/// Moves every queued frame from `from` to `to`; returns the frames moved.
fn pump(from: &mut Peer, to: &mut Peer) -> Vec<Frame> {
    let (batch, _) = from.s.take_outbox();
    let mut frames = Vec::new();
    for bytes in batch {
        let frame = to.dec.decode_frame(&bytes).expect("valid frame");
        frames.push(frame.clone());
        to.s.on_frame(frame, Instant::now());
    }
    let fx = to.s.take_effects();
    to.actions.extend(fx.actions);
    frames
}

fn child() -> Arc<CapDef> {
    CapDef::builder("t.child")
        .method(MethodDef::call("ping"))
        .disposal("close")
        .build()
}

fn parent() -> Arc<CapDef> {
    CapDef::builder("t.parent")
        .method(MethodDef::call("get"))
        .method(MethodDef::call("make").returns(Returns::Cap(child().into())))
        .build()
}

fn call(c: &mut Peer, cap: CapId, method: &str) -> oneshot::Receiver<Result<Value, Status>> {
    let (tx, rx) = oneshot::channel();
    let req = CallRequest {
        cap_id: cap,
        method: method.into(),
        args: Value::Undefined,
        meta: None,
        returns_caps: cap == CapId::BOOTSTRAP,
    };
    c.s.start_call(req, tx).expect("call starts");
    rx
}

fn bootstrap(server: &mut Peer, client: &mut Peer, name: &str) -> CapId {
    let (tx, mut rx) = oneshot::channel();
    let args = Value::Record(bunite_wire::Record::new().with("name", name));
    let req = CallRequest {
        cap_id: CapId::BOOTSTRAP,
        method: "bootstrap".into(),
        args,
        meta: None,
        returns_caps: true,
    };
    client.s.start_call(req, tx).unwrap();
    pump(client, server);
    pump(server, client);
    match rx.try_recv() {
        Ok(Ok(Value::CapRef(id))) => id,
        other => panic!("bootstrap: {other:?}"),
    }
}

fn connected() -> (Peer, Peer) {
    let (mut a, mut b) = (peer(), peer());
    pump(&mut a, &mut b);
    pump(&mut b, &mut a);
    a.s.serve(vec![(parent(), NoopCap::arc())], IfExists::Throw)
        .unwrap();
    (a, b)
}

fn last_invocation(p: &mut Peer) -> CallId {
    match p.actions.pop() {
        Some(Action::Invoke(inv)) => inv.call_id,
        _ => panic!("expected an invocation"),
    }
}

#[test]
fn bootstrap_call_and_drop_free_the_entry() {
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, "t.parent");
    assert_eq!(id, CapId(2));
    let mut rx = call(&mut client, id, "get");
    pump(&mut client, &mut server);
    let call_id = last_invocation(&mut server);
    server.s.finish_call(
        call_id,
        Ok(Returned::Value(Value::from(5i64))),
        Instant::now(),
    );
    pump(&mut server, &mut client);
    assert_eq!(rx.try_recv().unwrap(), Ok(Value::Int(5)));
    client.s.release(id);
    let frames = pump(&mut client, &mut server);
    assert!(matches!(&frames[..], [Frame::Drop(d)] if d.caps.len() == 1));
    assert_eq!(server.s.stats().live_caps, 2);
    assert_eq!(client.s.stats().pending_calls, 0);
}

#[test]
fn releases_made_together_share_one_drop_frame() {
    let (mut server, mut client) = connected();
    let a = bootstrap(&mut server, &mut client, "t.parent");
    let b = bootstrap(&mut server, &mut client, "t.parent");
    assert_eq!(a, b);
    client.s.release(a);
    client.s.release(b);
    let frames = pump(&mut client, &mut server);
    match &frames[..] {
        [Frame::Drop(d)] => assert_eq!((d.caps.len(), d.caps[0].delta), (1, 2)),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.s.stats().live_caps, 2);
}

#[test]
fn a_cap_return_allocates_at_send_time_and_a_cancelled_one_never_does() {
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, "t.parent");
    let mut rx = call(&mut client, id, "make");
    pump(&mut client, &mut server);
    let call_id = last_invocation(&mut server);
    let export = ExportedCap::new(child(), NoopCap::arc());
    server
        .s
        .finish_call(call_id, Ok(Returned::Cap(export)), Instant::now());
    pump(&mut server, &mut client);
    assert_eq!(rx.try_recv().unwrap(), Ok(Value::CapRef(CapId(3))));

    let _rx2 = call(&mut client, id, "make");
    pump(&mut client, &mut server);
    let call_id = last_invocation(&mut server);
    client
        .s
        .cancel_call(CallId(call_id.0), "client_cancel", None);
    pump(&mut client, &mut server);
    let before = server.s.stats().live_caps;
    let export = ExportedCap::new(child(), NoopCap::arc());
    server
        .s
        .finish_call(call_id, Ok(Returned::Cap(export)), Instant::now());
    assert_eq!(
        server.s.stats().live_caps,
        before,
        "suppressed result allocates nothing"
    );
}

#[test]
fn a_wrong_cap_return_is_unregistered_cap_return() {
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, "t.parent");
    let mut rx = call(&mut client, id, "make");
    pump(&mut client, &mut server);
    let call_id = last_invocation(&mut server);
    server
        .s
        .finish_call(call_id, Ok(Returned::Value(Value::Null)), Instant::now());
    pump(&mut server, &mut client);
    let e = rx.try_recv().unwrap().unwrap_err();
    assert_eq!(e.code, Code::FailedPrecondition);
    assert_eq!(e.reason(), Some("unregistered_cap_return"));
}

#[test]
fn unserve_revokes_pending_and_later_calls() {
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, "t.parent");
    let mut pending = call(&mut client, id, "get");
    pump(&mut client, &mut server);
    server.s.unserve(&["t.parent".to_owned()]);
    let frames = pump(&mut server, &mut client);
    assert!(matches!(&frames[..], [Frame::CapRevoked(r)] if r.cap_ids == vec![id]));
    let e = pending.try_recv().unwrap().unwrap_err();
    assert_eq!(
        (e.code, e.reason()),
        (Code::FailedPrecondition, Some("revoked"))
    );
    let (tx, _rx) = oneshot::channel();
    let req = CallRequest {
        cap_id: id,
        method: "get".into(),
        args: Value::Undefined,
        meta: None,
        returns_caps: false,
    };
    let e = client.s.start_call(req, tx).unwrap_err();
    assert_eq!(e.message, "cap revoked");
    assert!(
        client.s.take_outbox().0.is_empty(),
        "nothing sent for a revoked cap"
    );
}

#[test]
fn shutdown_fails_pending_calls_and_disposes_live_caps() {
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, "t.parent");
    let mut rx = call(&mut client, id, "make");
    pump(&mut client, &mut server);
    let call_id = last_invocation(&mut server);
    server.s.finish_call(
        call_id,
        Ok(Returned::Cap(ExportedCap::new(child(), NoopCap::arc()))),
        Instant::now(),
    );
    pump(&mut server, &mut client);
    assert!(rx.try_recv().unwrap().is_ok());
    let mut waiting = call(&mut client, id, "get");
    client.s.close("peer_closing");
    let e = waiting.try_recv().unwrap().unwrap_err();
    assert_eq!(e.code, Code::Unavailable);
    pump(&mut client, &mut server);
    let disposals = server
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Dispose { method, .. } if method == "close"))
        .count();
    assert_eq!(
        disposals, 1,
        "the child declares a disposal method, the parent does not"
    );
    assert_eq!(server.s.stats().live_caps, 2);
}

#[test]
fn revoked_ids_are_bounded() {
    let mut set = super::RevokedSet::new(3);
    for i in 0..10 {
        set.insert(CapId(i));
    }
    assert!(!set.contains(CapId(6)));
    assert!(set.contains(CapId(7)) && set.contains(CapId(9)));
    assert_eq!(set.order.len(), 3);
}

#[test]
fn an_abandoned_result_full_of_caprefs_is_released_in_bounded_frames() {
    let (mut server, mut client) = connected();
    let parent_id = bootstrap(&mut server, &mut client, "t.parent");
    let (tx, _rx) = oneshot::channel();
    let req = CallRequest {
        cap_id: parent_id,
        method: "make".into(),
        args: Value::Undefined,
        meta: None,
        returns_caps: true,
    };
    let id = client.s.start_call(req, tx).unwrap();
    client.s.cancel_call(id, "client_cancel", None);
    let _ = client.s.take_outbox();
    // A hostile (or merely late) answer: 100k CapRefs, one of them repeated.
    let n = 100_000u32;
    let mut refs: Vec<Value> = (0..n).map(|i| Value::CapRef(CapId(10 + i))).collect();
    refs.push(Value::CapRef(CapId(10)));
    let result = bunite_wire::ResultFrame {
        id,
        outcome: Ok(Value::Array(refs)),
    };
    client.s.on_frame(Frame::Result(result), Instant::now());
    let (batch, _) = client.s.take_outbox();
    let mut dec = Decoder::new(Default::default());
    let mut released = std::collections::HashMap::new();
    for bytes in &batch {
        match dec.decode_frame(bytes).unwrap() {
            Frame::Drop(d) => {
                assert!(d.caps.len() <= 512, "drop frames are bounded");
                for e in d.caps {
                    *released.entry(e.id).or_insert(0u32) += e.delta;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(released.len(), n as usize);
    assert_eq!(released[&CapId(10)], 2);
    assert!(released.iter().all(|(id, d)| *d == 1 || *id == CapId(10)));
    assert_eq!(client.s.stats().pending_calls, 0);
}
