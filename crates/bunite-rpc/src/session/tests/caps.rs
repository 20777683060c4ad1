//! Caps across the wire: exports, releases, revocation, shutdown.

use bunite_wire::{CallId, CapId, Frame, ResultFrame, StreamEvent, Value};

use super::*;
use crate::error::LocalError;
use crate::status::Code;

#[test]
fn releases_made_together_share_one_drop_frame() {
    let (mut server, mut client) = connected();
    let a = bootstrap(&mut server, &mut client, 1, "t.parent");
    let b = bootstrap(&mut server, &mut client, 2, "t.parent");
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
    let id = bootstrap(&mut server, &mut client, 1, "t.parent");
    let tag = client.tag();
    let now = client.now;
    client.s.start_call(
        &mut with_id(
            CallId(2),
            request(id, "make", Value::Undefined, Expect::Caps),
        ),
        tag,
        now,
    );
    pump(&mut client, &mut server);
    let inv = server.invoked();
    let now = server.now;
    server.s.handler_done(
        inv.run,
        inv.call_id,
        Ok(Outcome::Cap(child(), imp("child"))),
        now,
    );
    server.collect();
    pump(&mut server, &mut client);
    assert_eq!(client.reply(tag), Some(Ok(Value::CapRef(CapId(3)))));

    client.call(3, id, "make", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    client.s.cancel_call(CallId(3));
    pump(&mut client, &mut server);
    assert_eq!(server.aborts, vec![inv.run], "the handler is dropped");
    let before = server.s.stats().live_caps;
    server.s.handler_done(
        inv.run,
        inv.call_id,
        Ok(Outcome::Cap(child(), imp("late"))),
        now,
    );
    server.collect();
    assert_eq!(
        server.s.stats().live_caps,
        before,
        "suppressed result allocates nothing"
    );
}

#[test]
fn a_wrong_cap_return_is_unregistered_cap_return() {
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, 1, "t.parent");
    let tag = client.call(2, id, "make", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    finish(&mut server, &inv, Value::Null);
    pump(&mut server, &mut client);
    let e = client.reply(tag).unwrap().unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(e.reason(), Some("unregistered_cap_return"));
    assert!(e.is_remote());
}

#[test]
fn unserve_revokes_pending_and_later_calls() {
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, 1, "t.parent");
    let pending = client.call(2, id, "get", Value::Undefined);
    pump(&mut client, &mut server);
    server.s.unserve(&["t.parent".to_owned()]);
    server.collect();
    let frames = pump(&mut server, &mut client);
    assert!(matches!(&frames[..], [Frame::CapRevoked(r)] if r.cap_ids == vec![id]));
    let e = client.reply(pending).unwrap().unwrap_err();
    assert_eq!(
        (e.code(), e.reason()),
        (Code::FailedPrecondition, Some("revoked"))
    );
    let later = client.call(3, id, "get", Value::Undefined);
    let e = client.reply(later).unwrap().unwrap_err();
    assert_eq!(e.local_kind(), Some(LocalError::Revoked));
    assert_eq!(e.message(), "cap revoked");
    assert!(
        client.s.poll_transmit().is_none(),
        "nothing sent for a revoked cap"
    );
}

/// The peer's client ends its streams on a revoked cap without a cancel (PROTOCOL §12), so
/// the server stops them itself: the source is aborted and its in-flight slot freed, where
/// it waited for credit until the connection closed. Its `end` goes out after the
/// `cap_revoked`, which the client, its stream already failed `revoked`, ignores.
#[test]
fn unserve_stops_the_server_streams_on_the_revoked_cap() {
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let tag = client.stream(2, cap, "ticks");
    pump(&mut client, &mut server);
    let stream = server.invoked();
    assert_eq!(server.s.stats().server_streams, 1);
    server.s.unserve(&["t.parent".to_owned()]);
    server.collect();
    assert_eq!(server.aborts, [stream.run], "the source is stopped");
    let stats = server.s.stats();
    assert_eq!((stats.server_streams, stats.active_calls), (0, 0));
    assert_eq!(
        server.s.stream_window(stream.call_id, stream.run),
        None,
        "the stream is gone"
    );
    let frames = pump(&mut server, &mut client);
    assert!(
        matches!(&frames[..], [Frame::CapRevoked(r), Frame::Stream(s)]
            if r.cap_ids == vec![cap] && s.event == StreamEvent::End),
        "{frames:?}"
    );
    let ends: Vec<_> = client.ends.drain(..).collect();
    assert!(
        matches!(&ends[..], [(t, Some(e))] if *t == tag && e.reason() == Some("revoked")),
        "{ends:?}"
    );
    assert_eq!(client.s.stats().client_streams, 0);
}

#[test]
fn shutdown_fails_pending_calls_aborts_handlers_and_disposes_live_caps() {
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, 1, "t.parent");
    let tag = client.tag();
    let now = client.now;
    client.s.start_call(
        &mut with_id(
            CallId(2),
            request(id, "make", Value::Undefined, Expect::Caps),
        ),
        tag,
        now,
    );
    pump(&mut client, &mut server);
    let inv = server.invoked();
    server.s.handler_done(
        inv.run,
        inv.call_id,
        Ok(Outcome::Cap(child(), imp("child"))),
        now,
    );
    server.collect();
    pump(&mut server, &mut client);
    assert!(client.reply(tag).unwrap().is_ok());
    let running = client.call(3, id, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    let waiting = client.call(4, id, "get", Value::Undefined);
    client.s.close();
    client.collect();
    let e = client.reply(waiting).unwrap().unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(e.disconnect(), Some(&Disconnect::LocalClose));
    assert!(client.reply(running).unwrap().is_err());
    // The call queued before the close still goes out, then the goaway.
    pump(&mut client, &mut server);
    assert!(matches!(server.closed, Some(Disconnect::Goaway { .. })));
    let last = server.invoked();
    assert_eq!(
        server.aborts,
        vec![inv.run, last.run],
        "every running handler"
    );
    let names: Vec<_> = server
        .disposals
        .iter()
        .map(|(i, m, _)| (i.0, m.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![("child", "close")],
        "the child declares a disposal method, the parent not"
    );
    assert_eq!(server.s.stats().live_caps, 2);
}

#[test]
fn revoked_ids_are_bounded() {
    let mut set = crate::session::RevokedSet::new(3);
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
    let parent_id = bootstrap(&mut server, &mut client, 1, "t.parent");
    let now = client.now;
    client.s.start_call(
        &mut with_id(
            CallId(2),
            request(parent_id, "make", Value::Undefined, Expect::Caps),
        ),
        5,
        now,
    );
    client.s.cancel_call(CallId(2));
    while client.s.poll_transmit().is_some() {}
    // A hostile (or merely late) answer: 100k CapRefs, one of them repeated.
    let n = 100_000u32;
    let mut refs: Vec<Value> = (0..n).map(|i| Value::CapRef(CapId(10 + i))).collect();
    refs.push(Value::CapRef(CapId(10)));
    let result = ResultFrame {
        id: CallId(2),
        outcome: Ok(Value::Array(refs)),
    };
    // Sent through the server's own encoder, whose record ids the client's decoder knows.
    server.s.send(&Frame::Result(result));
    let bytes = server.s.poll_transmit().expect("the result");
    client.s.handle_message(&bytes, now);
    client.collect();
    assert!(client.replies.is_empty(), "the caller had given up");
    let mut dec = bunite_wire::Decoder::new(Default::default());
    let mut released = std::collections::HashMap::new();
    while let Some(bytes) = client.s.poll_transmit() {
        match dec.decode_frame(&bytes).unwrap() {
            Frame::Drop(d) => {
                assert!(d.caps.len() <= 512, "drop frames are bounded");
                for e in d.caps {
                    *released.entry(e.id).or_insert(0u32) += e.delta;
                }
            }
            Frame::Hello(_) | Frame::Cancel(_) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(released.len(), n as usize);
    assert_eq!(released[&CapId(10)], 2);
    assert!(released.iter().all(|(id, d)| *d == 1 || *id == CapId(10)));
    assert_eq!(client.s.stats().pending_calls, 0);
}
