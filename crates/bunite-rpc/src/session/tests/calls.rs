//! Calls both ways: results, bootstraps waiting for hello, deadlines, cancels.

use std::time::Duration;

use bunite_wire::{CallId, CapId, Frame, Value};

use super::*;
use crate::error::LocalError;
use crate::status::Code;

#[test]
fn bootstrap_call_and_drop_free_the_entry() {
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, 1, "t.parent");
    assert_eq!(id, CapId(2));
    let tag = client.call(2, id, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    assert_eq!((inv.call_id, inv.method_name()), (CallId(2), "get"));
    finish(&mut server, &inv, Value::from(5i64));
    pump(&mut server, &mut client);
    assert_eq!(client.reply(tag), Some(Ok(Value::Int(5))));
    client.s.release(id);
    let frames = pump(&mut client, &mut server);
    assert!(matches!(&frames[..], [Frame::Drop(d)] if d.caps.len() == 1));
    assert_eq!(server.s.stats().live_caps, 2);
    assert_eq!(client.s.stats().pending_calls, 0);
    assert_eq!(client.s.outbound_in_flight(), 0);
}

#[test]
fn a_bootstrap_waits_for_the_peers_hello() {
    let (mut server, mut client) = (peer(), peer());
    server
        .s
        .serve(vec![(parent(), imp("parent"))], IfExists::Throw)
        .unwrap();
    // The client has not seen the server's hello: the bootstrap is parked, nothing sent.
    let now = client.now;
    client.s.bootstrap(CallId(1), "t.parent", None, 7, now);
    client.collect();
    assert_eq!(client.s.outbound_in_flight(), 1);
    let frames = pump(&mut client, &mut server);
    assert!(matches!(&frames[..], [Frame::Hello(_)]), "{frames:?}");
    pump(&mut server, &mut client); // the server's hello releases it
    pump(&mut client, &mut server);
    pump(&mut server, &mut client);
    assert_eq!(client.reply(7), Some(Ok(Value::CapRef(CapId(2)))));
}

/// A bootstrap its caller gave up on while it waited for the peer's hello (a timeout, a
/// dropped future) is let go at once: it fails `cancelled`, no longer counts in flight, and
/// is never sent once the hello comes. It stayed parked until then, and was sent then, so a
/// caller retrying against a slow peer queued one bootstrap per try.
#[test]
fn a_bootstrap_given_up_before_the_hello_is_never_sent() {
    let (mut server, mut client) = (peer(), peer());
    server
        .s
        .serve(vec![(parent(), imp("parent"))], IfExists::Throw)
        .unwrap();
    let now = client.now;
    client.s.bootstrap(CallId(1), "t.parent", None, 7, now);
    client.s.bootstrap(CallId(2), "t.parent", None, 8, now);
    client.collect();
    assert_eq!(client.s.outbound_in_flight(), 2, "both parked");
    client.s.cancel_call(CallId(1));
    client.collect();
    let e = client
        .replies
        .remove(&7)
        .expect("failed at once")
        .unwrap_err();
    assert_eq!(e.code(), Code::Cancelled);
    assert_eq!(client.s.outbound_in_flight(), 1);
    client.s.check_invariants();
    pump(&mut client, &mut server); // the client's hello
    let frames = pump(&mut server, &mut client); // the server's hello
    assert!(matches!(&frames[..], [Frame::Hello(_)]), "{frames:?}");
    let frames = pump(&mut client, &mut server);
    let calls: Vec<CallId> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Call(c) => Some(c.id),
            _ => None,
        })
        .collect();
    assert_eq!(calls, vec![CallId(2)], "only the bootstrap still wanted");
    pump(&mut server, &mut client);
    assert_eq!(client.reply(8), Some(Ok(Value::CapRef(CapId(2)))));
    assert_eq!(
        server.s.stats().live_caps,
        3,
        "ids 0 and 1, and one instance, not two"
    );
    client.s.check_invariants();
}

/// A peer's call may arrive before its hello (PROTOCOL §6); a bootstrap its handler makes
/// back waits for the hello, parked. The peer cancelling the call cancels that bootstrap
/// too (§11): it fails `cancelled` at once, and is never sent, even once the hello comes;
/// a parked bootstrap of another handler stays.
#[test]
fn cancelling_a_call_fails_the_bootstraps_its_handler_parked() {
    let (mut b, mut a) = (peer(), peer());
    b.s.serve(vec![(parent(), imp("parent"))], IfExists::Throw)
        .unwrap();
    let hello = a.s.poll_transmit().expect("a's hello");
    pump(&mut b, &mut a);
    let on_b = bootstrap(&mut b, &mut a, 1, "t.parent");
    a.call(2, on_b, "get", Value::Undefined);
    a.call(3, on_b, "get", Value::Undefined);
    pump(&mut a, &mut b);
    let (mut first, mut second) = (b.invoked(), b.invoked());
    if first.call_id != CallId(2) {
        std::mem::swap(&mut first, &mut second);
    }
    assert_eq!((first.call_id, second.call_id), (CallId(2), CallId(3)));
    for (inv, id, tag) in [(&first, 1, 11), (&second, 2, 12)] {
        let now = b.now;
        b.s.bootstrap_within(Some(parent_of(inv)), CallId(id), "t.parent", None, tag, now);
    }
    b.collect();
    assert_eq!(b.s.outbound_in_flight(), 2, "both parked");
    a.s.cancel_call(CallId(2));
    pump(&mut a, &mut b);
    let e = b.replies.remove(&11).expect("failed at once").unwrap_err();
    assert_eq!(e.code(), Code::Cancelled);
    assert_eq!(e.message(), "client_cancel");
    assert!(matches!(
        e,
        Error::Local {
            kind: LocalError::Cancelled,
            ..
        }
    ));
    assert!(
        !b.replies.contains_key(&12),
        "the other handler's bootstrap waits on"
    );
    assert_eq!(b.s.outbound_in_flight(), 1);
    // a's hello arrives: only the other bootstrap is sent.
    let now = b.now;
    b.s.handle_message(&hello, now);
    b.collect();
    let frames = pump(&mut b, &mut a);
    let calls: Vec<CallId> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Call(c) => Some(c.id),
            _ => None,
        })
        .collect();
    assert_eq!(calls, vec![CallId(2)]);
    b.s.check_invariants();
}

#[test]
fn a_goaway_fails_a_parked_bootstrap_with_its_error() {
    let (mut server, mut client) = (peer(), peer());
    let now = client.now;
    client.s.bootstrap(CallId(1), "t.parent", None, 7, now);
    client.collect();
    server.s.close();
    // The server's hello and goaway arrive together; the hello sends the bootstrap, the
    // goaway then fails it as a pending call.
    pump(&mut server, &mut client);
    let e = client.replies.remove(&7).unwrap().unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(e.reason(), Some("goaway"));
    assert!(matches!(e.disconnect(), Some(Disconnect::Goaway { .. })));
}

#[test]
fn a_deadline_fails_the_call_at_deadline_plus_grace_and_cancels_it() {
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, 1, "t.parent");
    let mut req = request(id, "get", Value::Undefined, Expect::Value);
    req.deadline = Some(Duration::from_millis(100));
    let now = client.now;
    client.s.start_call(&mut with_id(CallId(2), req), 9, now);
    client.collect();
    let frames = pump(&mut client, &mut server);
    match &frames[..] {
        [Frame::Call(c)] => assert_eq!(c.meta.as_ref().unwrap().deadline_ms, Some(100.0)),
        other => panic!("{other:?}"),
    }
    client.advance(Duration::from_millis(599));
    assert!(client.replies.is_empty(), "not before deadline + 500 ms");
    client.advance(Duration::from_millis(1));
    let e = client.replies.remove(&9).unwrap().unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert_eq!(e.local_kind(), Some(LocalError::DeadlineExceeded));
    let frames = pump(&mut client, &mut server);
    assert!(
        matches!(&frames[..], [Frame::Cancel(c)] if c.reason.as_deref() == Some("deadline_exceeded"))
    );
    assert_eq!(client.s.stats().pending_calls, 0);
}

#[test]
fn a_non_idempotent_handler_is_signalled_at_its_deadline_an_idempotent_one_never() {
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, 1, "t.parent");
    for (call, method) in [(2, "get"), (3, "idem")] {
        let mut req = request(id, method, Value::Undefined, Expect::Value);
        req.deadline = Some(Duration::from_millis(50));
        let now = client.now;
        client
            .s
            .start_call(&mut with_id(CallId(call), req), call, now);
    }
    pump(&mut client, &mut server);
    let idem = server.invoked();
    let get = server.invoked();
    assert_eq!(get.deadline, Some(Duration::from_millis(50)));
    server.advance(Duration::from_millis(49));
    assert!(server.signals.is_empty());
    server.advance(Duration::from_millis(1));
    assert_eq!(server.signals, vec![get.run], "only the non-idempotent one");
    finish(&mut server, &get, Value::Null);
    finish(&mut server, &idem, Value::Null);
}

#[test]
fn a_duration_max_deadline_saturates_instead_of_panicking() {
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, 1, "t.parent");
    let mut req = request(id, "get", Value::Undefined, Expect::Value);
    req.deadline = Some(Duration::MAX);
    let now = client.now;
    client.s.start_call(&mut with_id(CallId(2), req), 9, now);
    client.collect();
    assert_eq!(
        client.s.poll_timeout(),
        None,
        "a deadline beyond time never fires"
    );
    pump(&mut client, &mut server);
    let inv = server.invoked();
    assert!(inv.deadline.is_some());
    finish(&mut server, &inv, Value::Null);
    pump(&mut server, &mut client);
    assert_eq!(client.reply(9), Some(Ok(Value::Null)));
}

#[test]
fn cancelling_a_call_cancels_the_calls_its_handler_made() {
    // a calls b; b's handler calls a back with parentCallId; a cancels its call.
    let (mut b, mut a, on_b, on_a) = both_ways();
    a.call(2, on_b, "get", Value::Undefined);
    pump(&mut a, &mut b);
    let outer = b.invoked();
    let mut children = Vec::new();
    for id in [2, 3] {
        let mut req = request(on_a, "get", Value::Undefined, Expect::Value);
        req.parent = Some(parent_of(&outer));
        let now = b.now;
        b.s.start_call(&mut with_id(CallId(id), req), 100 + id, now);
        children.push(100 + id);
    }
    // An unrelated call of b's is not cancelled.
    let other = b.call(4, on_a, "get", Value::Undefined);
    pump(&mut b, &mut a);
    a.s.cancel_call(CallId(2));
    pump(&mut a, &mut b);
    assert_eq!(b.aborts, vec![outer.run]);
    for tag in children {
        let e = b.replies.remove(&tag).unwrap().unwrap_err();
        assert_eq!(e.code(), Code::Cancelled);
        assert_eq!(e.message(), "client_cancel");
    }
    assert!(!b.replies.contains_key(&other));
    let frames = pump(&mut b, &mut a);
    let cancels: Vec<CallId> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Cancel(c) => Some(c.id),
            _ => None,
        })
        .collect();
    assert_eq!(cancels, vec![CallId(2), CallId(3)]);
    assert_eq!(b.s.stats().pending_calls, 1);
}

/// A stream opened from inside a handler carries `meta.parentCallId` as a call does, so a
/// cancel of the handler's call cancels it with the same reason (PROTOCOL §11), and its
/// consumer sees it end `cancelled`.
#[test]
fn cancelling_a_call_cancels_the_streams_its_handler_opened() {
    let (mut b, mut a, on_b, on_a) = both_ways();
    a.call(2, on_b, "get", Value::Undefined);
    pump(&mut a, &mut b);
    let outer = b.invoked();
    let mut req = request(on_a, "ticks", Value::Undefined, Expect::Value);
    req.parent = Some(parent_of(&outer));
    b.s.start_stream(&mut with_id(CallId(2), req), 77);
    b.collect();
    let frames = pump(&mut b, &mut a);
    match &frames[..] {
        [Frame::Call(c)] => assert_eq!(c.meta.as_ref().unwrap().parent_call_id, Some(CallId(2))),
        other => panic!("{other:?}"),
    }
    let source = a.invoked();
    a.s.send(&Frame::Cancel(bunite_wire::Cancel {
        id: CallId(2),
        reason: Some("stop".into()),
    }));
    pump(&mut a, &mut b);
    assert_eq!(b.aborts, vec![outer.run]);
    let (sink, error) = b.ends.pop().expect("the child stream ends");
    assert_eq!(sink, 77);
    let e = error.expect("cancelled");
    assert_eq!((e.code(), e.message()), (Code::Cancelled, "stop"));
    assert_eq!(e.local_kind(), Some(LocalError::Cancelled));
    let frames = pump(&mut b, &mut a);
    let cancels: Vec<(CallId, Option<String>)> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Cancel(c) => Some((c.id, c.reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(cancels, vec![(CallId(2), Some("stop".to_owned()))]);
    assert_eq!(a.aborts, vec![source.run], "the stream's source stops");
    assert_eq!(b.s.stats().client_streams, 0);
    // Its consumer letting it go afterwards sends nothing more.
    b.s.cancel_client_stream(CallId(2));
    assert!(pump(&mut b, &mut a).is_empty());
}

#[test]
fn our_in_flight_limit_fails_calls_locally_and_sends_nothing() {
    let mut limits = limits();
    limits.max_in_flight = 2;
    let mut server = peer();
    server
        .s
        .serve(vec![(parent(), imp("parent"))], IfExists::Throw)
        .unwrap();
    let mut client = peer_with(limits, false);
    pump(&mut server, &mut client);
    pump(&mut client, &mut server);
    let id = bootstrap(&mut server, &mut client, 1, "t.parent");
    client.call(2, id, "get", Value::Undefined);
    client.call(3, id, "get", Value::Undefined);
    let tag = client.call(4, id, "get", Value::Undefined);
    let e = client.reply(tag).unwrap().unwrap_err();
    assert_eq!(e.local_kind(), Some(LocalError::InFlightLimit));
    assert_eq!(e.message(), "in-flight calls limit 2");
    let frames = pump(&mut client, &mut server);
    assert_eq!(frames.len(), 2, "the third call was never sent");
}

/// A hello timeout too long to represent is no timeout (it panicked as the session was
/// made).
#[test]
fn a_hello_timeout_of_duration_max_never_fires() {
    let mut limits = limits();
    limits.hello_timeout = Some(Duration::MAX);
    let mut p = peer_with(limits, false);
    p.advance(Duration::from_secs(365 * 86_400));
    assert!(p.closed.is_none());
}

#[test]
fn a_peer_that_sends_no_hello_is_dropped_after_the_timeout() {
    let mut limits = limits();
    limits.hello_timeout = Some(Duration::from_secs(30));
    let mut p = peer_with(limits, false);
    p.advance(Duration::from_secs(29));
    assert!(p.closed.is_none());
    p.advance(Duration::from_secs(1));
    assert!(matches!(p.closed, Some(Disconnect::ProtocolError { .. })));
    let mut other = peer();
    let frames = pump(&mut p, &mut other);
    match &frames[..] {
        [Frame::Hello(_), Frame::Goaway(g)] => {
            assert_eq!(g.reason.as_deref(), Some("deadline_exceeded"));
        }
        other => panic!("{other:?}"),
    }
}

/// Found by the `session_ops` fuzz target (`fuzz/corpus/session_ops/finding-long-error-over-
/// max-bytes`): a handler's error (or a stream source's) with a long message was sent
/// whatever the peer's `maxBytes`, so the peer refused the message and shut the connection
/// down with a protocol error. Now an error too large is replaced by `resource_exhausted
/// {reason:"max_frame_bytes"}`, as a result too large already was (PROTOCOL §13.6).
#[test]
fn an_error_too_large_for_the_peer_is_replaced_by_max_frame_bytes() {
    let mut small = limits();
    small.max_bytes = 400;
    let (mut server, mut client) = (peer(), peer_with(small, false));
    pump(&mut server, &mut client);
    pump(&mut client, &mut server);
    let parent = vec![(parent(), imp("parent"))];
    server.s.serve(parent, IfExists::Throw).unwrap();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let long = || crate::status::Status::new(Code::NotFound, "m".repeat(1024));

    let tag = client.call(2, cap, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    let now = server.now;
    server
        .s
        .handler_done(inv.run, inv.call_id, Err(long()), now);
    server.collect();
    pump(&mut server, &mut client);
    assert!(client.closed.is_none(), "{:?}", client.closed);
    let e = client.reply(tag).expect("answered").unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(e.reason(), Some("max_frame_bytes"));
    assert!(e.message().starts_with("error of "), "{}", e.message());

    // A stream source's error: the stream fails the same way.
    let req = request(cap, "ticks", Value::Undefined, Expect::Value);
    client.s.start_stream(&mut with_id(CallId(3), req), 9);
    client.collect();
    pump(&mut client, &mut server);
    let inv = server.invoked();
    server.s.stream_done(inv.call_id, inv.run, Err(long()));
    server.collect();
    pump(&mut server, &mut client);
    assert!(client.closed.is_none(), "{:?}", client.closed);
    let (sink, error) = client.ends.pop().expect("the stream ends");
    let error = error.expect("with an error");
    assert_eq!((sink, error.reason()), (9, Some("max_frame_bytes")));

    // An error that fits goes as it is.
    let tag = client.call(4, cap, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    let short = crate::status::Status::new(Code::NotFound, "m".repeat(100));
    server.s.handler_done(inv.run, inv.call_id, Err(short), now);
    server.collect();
    pump(&mut server, &mut client);
    let e = client.reply(tag).expect("answered").unwrap_err();
    assert_eq!((e.code(), e.message().len()), (Code::NotFound, 100));
    assert_eq!(
        server.s.stats().active_calls + server.s.stats().server_streams,
        0
    );
}

#[test]
fn a_large_message_s_allocation_is_reused_once_sent_and_let_go_after_a_while() {
    use crate::session::spares;
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, 1, "t.parent");
    let big = || Value::Bin(vec![1u8; 2 * spares::LARGE]);
    // The server's decoder has read every message the client sent so far.
    let send = |client: &mut Peer, server: &mut Peer, call: u64| {
        client.call(call, id, "get", big());
        let msg = client.s.poll_transmit().expect("the call");
        let frame = server.dec.decode_frame(&msg).expect("a valid frame");
        assert!(matches!(frame, Frame::Call(c) if c.id == CallId(call)));
        msg
    };
    let first = send(&mut client, &mut server, 2);
    assert!(first.len() > spares::LARGE);
    let at = first.as_ptr();
    // While the transport holds a message, the next one gets an allocation of its own.
    let second = send(&mut client, &mut server, 3);
    assert_ne!(second.as_ptr(), at);
    // Once it has let go of it, the next large message is encoded into its allocation.
    drop(first);
    let third = send(&mut client, &mut server, 4);
    assert_eq!(third.as_ptr(), at);

    // The runtime arms the release (encoding has no clock); when it fires, nothing is kept.
    assert!(client.s.release_unarmed());
    let now = client.now;
    client.s.arm_release(now);
    assert!(!client.s.release_unarmed());
    drop((second, third));
    client.advance(spares::RELEASE);
    assert!(client.s.spares.is_empty());
    assert!(client.s.scratch.capacity() < spares::LARGE);
    // A small message after that allocates nothing large again.
    client.call(5, id, "get", Value::Undefined);
    assert!(client.s.poll_transmit().unwrap().len() < 100);
    assert!(client.s.spares.is_empty() && !client.s.release_unarmed());
}

/// A listener's send budget bounds what answers may add to what waits to be sent: an
/// answer longer than the room the runtime gave is refused with `resource_exhausted
/// {reason:"max_frame_bytes"}` (its exports freed), every message queued takes its length
/// off the room, and stream values are held to it the same way. Without it, a connection
/// whose peer never read held one answer of up to the peer's `maxBytes` beyond the budget
/// (RELIABILITY finding 12).
#[test]
fn answers_beyond_the_send_room_are_refused_and_each_message_takes_its_length_off() {
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let bin = |n: usize| Value::Bin(vec![1; n]);

    // Room for one answer of 600 bytes, not two.
    server.s.set_send_room(1000);
    let first = client.call(2, cap, "get", Value::Undefined);
    let second = client.call(3, cap, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let (b, a) = (server.invoked(), server.invoked());
    finish(&mut server, &a, bin(600));
    finish(&mut server, &b, bin(600));
    pump(&mut server, &mut client);
    assert_eq!(client.reply(first).expect("answered").unwrap(), bin(600));
    let e = client.reply(second).expect("answered").unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(e.reason(), Some("max_frame_bytes"));
    assert!(e.message().contains("send budget"), "{}", e.message());

    // What is left fits a short answer; a stream value beyond it ends its stream.
    server.s.set_send_room(300);
    let short = client.call(4, cap, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    finish(&mut server, &inv, bin(100));
    let req = request(cap, "ticks", Value::Undefined, Expect::Value);
    client.s.start_stream(&mut with_id(CallId(5), req), 9);
    client.collect();
    pump(&mut client, &mut server);
    let inv = server.invoked();
    assert_eq!(server.s.stream_item(inv.call_id, inv.run, bin(500)), None);
    server.collect();
    pump(&mut server, &mut client);
    assert_eq!(client.reply(short).expect("answered").unwrap(), bin(100));
    let (sink, error) = client.ends.pop().expect("the stream ends");
    let error = error.expect("with an error");
    assert_eq!((sink, error.reason()), (9, Some("max_frame_bytes")));
    assert!(
        error.message().contains("send budget"),
        "{}",
        error.message()
    );

    // Unbounded again: the same answer goes.
    server.s.set_send_room(usize::MAX);
    let last = client.call(6, cap, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    finish(&mut server, &inv, bin(600));
    pump(&mut server, &mut client);
    assert_eq!(client.reply(last).expect("answered").unwrap(), bin(600));
    let stats = server.s.stats();
    assert_eq!(stats.active_calls + stats.server_streams, 0, "{stats:?}");
}

/// A message refused as too long (for the peer's `maxBytes` or the send room) was encoded
/// up to its bound into the scratch buffer first, and that buffer was kept, grown, for the
/// next message: up to the peer's `maxBytes` held for the connection's life, since no
/// spare was there to arm the release. Now it is let go at once.
#[test]
fn a_refused_answer_leaves_no_grown_scratch_buffer_behind() {
    use crate::session::spares;
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    // The client said maxBytes 1 MiB; the encoder finds out item by item (a long `Bin`
    // it would refuse from its header).
    let long = Value::Array(vec![Value::from(1_000_000i64); 400_000]);
    for room in [usize::MAX, 2 * spares::LARGE] {
        server.s.set_send_room(room);
        let tag = client.call(2, cap, "get", Value::Undefined);
        pump(&mut client, &mut server);
        let inv = server.invoked();
        finish(&mut server, &inv, long.clone());
        pump(&mut server, &mut client);
        let e = client.reply(tag).expect("answered").unwrap_err();
        assert_eq!(e.reason(), Some("max_frame_bytes"), "{e:?}");
        assert!(server.s.scratch.capacity() < spares::LARGE, "room {room}");
        assert!(server.s.spares.is_empty() && !server.s.release_unarmed());
    }
}

/// An answer is queued only once paid for (`handler_done_paying`, `stream_item_paying`):
/// the runtime is asked with what the session would then hold, and a refusal answers
/// `resource_exhausted` as a lack of room does. The encoder stays in step: a record
/// shape first seen in a refused answer is defined again in the next one.
#[test]
fn an_answer_is_queued_only_once_paid_for() {
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let answer = || rec("fresh", Value::Bin(vec![3; 1000]));
    let mut asked = Vec::new();

    let refused = client.call(2, cap, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    let now = server.now;
    let held = server.s.transmit_bytes();
    let mut pay = |n: usize| {
        asked.push(n);
        false
    };
    let result = Ok(Outcome::Value(answer().into()));
    server
        .s
        .handler_done_paying(inv.run, inv.call_id, result, now, &mut pay);
    server.collect();
    assert_eq!(asked.len(), 1);
    assert!(asked[0] > held + 1000, "{asked:?} {held}");
    let paid = client.call(3, cap, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    let result = Ok(Outcome::Value(answer().into()));
    server
        .s
        .handler_done_paying(inv.run, inv.call_id, result, now, &mut |_| true);
    server.collect();
    pump(&mut server, &mut client);
    let e = client.reply(refused).expect("answered").unwrap_err();
    assert_eq!(e.reason(), Some("max_frame_bytes"));
    assert!(e.message().contains("send budget"), "{}", e.message());
    assert_eq!(client.reply(paid).expect("answered").unwrap(), answer());

    // A stream value refused ends its stream the same way.
    let req = request(cap, "ticks", Value::Undefined, Expect::Value);
    client.s.start_stream(&mut with_id(CallId(4), req), 9);
    client.collect();
    pump(&mut client, &mut server);
    let inv = server.invoked();
    let left = server
        .s
        .stream_item_paying(inv.call_id, inv.run, answer(), &mut |_| false);
    assert_eq!(left, None);
    server.collect();
    pump(&mut server, &mut client);
    let (sink, error) = client.ends.pop().expect("the stream ends");
    let error = error.expect("with an error");
    assert_eq!((sink, error.reason()), (9, Some("max_frame_bytes")));
    let stats = server.s.stats();
    assert_eq!(stats.active_calls + stats.server_streams, 0, "{stats:?}");
}

/// After a burst, a quiet connection gives back what its tables grew to: 200 calls in
/// flight grew the client's pending calls, the server's active calls and runs, and both
/// transmit queues to hundreds of slots, kept for the connection's life (33 KB for the
/// client's pending calls alone after 256). Once the last call is answered, each holds no
/// more than [`KEPT_ROOM`](crate::hashing::KEPT_ROOM) slots again; the client's pending
/// calls a second later (`outbound::SHED_AFTER`: a client's calls come in waves, whose
/// table would otherwise shrink and grow back at each), by a timer, nothing else
/// happening meanwhile.
#[test]
fn a_quiet_connection_gives_back_the_room_a_burst_took() {
    use crate::hashing::KEPT_ROOM;
    const BURST: u64 = 200;
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let tags: Vec<u64> = (0..BURST)
        .map(|i| client.call(10 + i, cap, "get", Value::from(i as i64)))
        .collect();
    assert!(
        client.s.transmit.capacity() >= BURST as usize,
        "all queued at once"
    );
    pump(&mut client, &mut server);
    assert!(client.s.outbound.pending_room() >= BURST as usize);
    assert!(crate::hashing::room(&server.s.inbound.active) >= BURST as usize);
    // Answered one at a time: the server's results wait in its transmit queue until the
    // pump below, while its tables drain from their full size.
    let mut invocations = std::mem::take(&mut server.invocations);
    for inv in invocations.drain(..) {
        finish(&mut server, &inv, Value::from(1i64));
    }
    pump(&mut server, &mut client);
    for tag in tags {
        assert_eq!(
            client.reply(tag).expect("answered").unwrap(),
            Value::from(1i64)
        );
    }
    // The client's queue was drained with calls still in flight: kept, as a steady load
    // would need it; it goes with the next drain, now that nothing is in flight.
    assert!(client.s.poll_transmit().is_none());
    // The pending calls' shrink was put off; the runtime arms its timer, as the driver
    // does after each pass, and nothing changes until it fires.
    assert!(client.s.outbound.pending_room() >= BURST as usize);
    assert!(client.s.release_unarmed());
    let now = client.now;
    client.s.arm_release(now);
    assert!(!client.s.release_unarmed());
    client.s.check_invariants();
    client.advance(super::super::outbound::SHED_AFTER - Duration::from_millis(1));
    assert!(client.s.outbound.pending_room() >= BURST as usize);
    client.advance(Duration::from_millis(1));
    for (what, room) in [
        ("client pending calls", client.s.outbound.pending_room()),
        ("client transmit queue", client.s.transmit.capacity()),
        ("server transmit queue", server.s.transmit.capacity()),
        (
            "server active calls",
            crate::hashing::room(&server.s.inbound.active),
        ),
        ("server runs", server.s.inbound.runs_room()),
    ] {
        assert!(room <= KEPT_ROOM, "{what}: room for {room} entries kept");
    }
    client.s.check_invariants();
    server.s.check_invariants();
}

#[test]
fn the_child_index_gives_a_parents_children_in_call_order_after_removals() {
    let mut index = crate::session::ChildIndex::default();
    for child in 1..=6 {
        index.add(CallId(100), CallId(child));
    }
    index.add(CallId(200), CallId(7));
    index.remove(CallId(100), CallId(2));
    index.remove(CallId(100), CallId(5));
    index.remove(CallId(100), CallId(99));
    assert_eq!(index.len(), 5);
    let ids = |v: Vec<CallId>| v.into_iter().map(|c| c.0).collect::<Vec<_>>();
    assert_eq!(ids(index.take(CallId(100))), [1, 3, 4, 6]);
    assert_eq!(ids(index.take(CallId(100))), Vec::<u64>::new());
    index.remove(CallId(200), CallId(7));
    assert!(index.by_parent.is_empty(), "an emptied parent is let go");
}

/// A peer may use a call id again once its call is finished. What a handler asks for on
/// behalf of its call (work after the reply, calls that a cancel of it cascades to) stays
/// with its own run: it never reaches the call that took the id since.
#[test]
fn a_handler_that_outlives_its_call_does_not_reach_the_call_that_reuses_its_id() {
    use crate::session::Parent;
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    client.call(7, cap, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let first = server.invoked();
    let child_of = |server: &mut Peer, id: u64, parent: Parent| {
        let mut req = with_id(
            CallId(id),
            request(CapId(9), "x", Value::Undefined, Expect::Value),
        );
        req.parent = Some(parent);
        let now = server.now;
        server.s.start_call(&mut req, 1_000 + id, now);
        server.collect();
    };
    let old = Parent {
        call: CallId(7),
        run: first.run,
    };
    child_of(&mut server, 100, old);
    assert_eq!(server.s.outbound.children_len(), 1, "a child of call 7");
    finish(&mut server, &first, Value::Null);
    assert_eq!(server.s.outbound.children_len(), 0, "call 7 finished");
    pump(&mut server, &mut client);

    // The peer calls with id 7 again; the first handler is still at work.
    client.call(7, cap, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let second = server.invoked();
    assert_ne!(second.run, first.run);
    server.s.after_reply(CallId(7), first.run, 901);
    server.s.after_reply(CallId(7), second.run, 902);
    child_of(&mut server, 101, old);
    let new = Parent {
        call: CallId(7),
        run: second.run,
    };
    child_of(&mut server, 102, new);
    assert_eq!(
        server.s.outbound.children_len(),
        1,
        "only 102 is the new call's"
    );
    let frames = pump(&mut server, &mut client);
    let parent_of = |id: u64| {
        frames.iter().find_map(|f| match f {
            Frame::Call(c) if c.id == CallId(id) => {
                Some(c.meta.as_ref().and_then(|m| m.parent_call_id))
            }
            _ => None,
        })
    };
    assert_eq!(
        parent_of(101),
        Some(None),
        "no parentCallId for the old handler's call"
    );
    assert_eq!(parent_of(102), Some(Some(CallId(7))));
    // The client's answers to 100-102 (no such cap) are lost, so the three stay pending.
    while client.s.poll_transmit().is_some() {}

    // The new call 7 is cancelled: its own child is, the old handler's calls are not.
    client.s.cancel_call(CallId(7));
    pump(&mut client, &mut server);
    let frames = pump(&mut server, &mut client);
    let cancelled: Vec<u64> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Cancel(c) => Some(c.id.0),
            _ => None,
        })
        .collect();
    assert_eq!(cancelled, [102]);
    assert!(
        server.deferred.is_empty(),
        "neither after_reply ran: {:?}",
        server.deferred
    );

    // A third call 7 that replies runs none of the work registered before it.
    client.call(7, cap, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let third = server.invoked();
    server.s.after_reply(CallId(7), third.run, 903);
    finish(&mut server, &third, Value::Null);
    assert_eq!(server.deferred, [903]);
}
