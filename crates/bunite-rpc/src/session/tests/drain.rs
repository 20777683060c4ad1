//! Draining: calls the peer starts are refused, what is in progress finishes, then close.

use std::time::Duration;

use bunite_wire::{CallId, Frame, StreamEvent, Value};

use super::*;
use crate::status::{reason, Code};

/// The status a draining peer refuses a new call with.
fn assert_refused(r: Option<Result<Value, Error>>) {
    let e = r.expect("answered").expect_err("refused");
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(e.status().reason(), Some(reason::PEER_CLOSING));
    assert_eq!(e.message(), "draining: no new calls");
}

#[test]
fn a_draining_server_refuses_new_calls_lets_the_running_ones_finish_then_closes() {
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let first = client.call(2, cap, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let running = server.invoked();
    server.s.set_observed(true);
    let now = server.now;
    server.s.drain(Duration::from_secs(10), now);
    server.collect();
    assert!(server.closed.is_none(), "a call still runs");

    // A new call and a new bootstrap are refused and never run.
    let late = client.call(3, cap, "get", Value::Undefined);
    let tag = client.tag();
    let now = client.now;
    client.s.bootstrap(CallId(4), "t.parent", None, tag, now);
    client.collect();
    pump(&mut client, &mut server);
    assert!(server.invocations.is_empty(), "nothing new runs");
    pump(&mut server, &mut client);
    assert_refused(client.reply(late));
    assert_refused(client.reply(tag));
    assert!(server.closed.is_none());
    // Each refusal is reported as a call that ended `unavailable`.
    let refused: Vec<_> = server
        .events
        .drain(..)
        .map(|e| match e {
            Event::Call(c) => (c.call_id, c.cap_name, c.method, c.result),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        refused,
        [
            (
                CallId(3),
                Some("t.parent".to_owned()),
                "get".to_owned(),
                Err(Code::Unavailable)
            ),
            (
                CallId(4),
                None,
                "bootstrap".to_owned(),
                Err(Code::Unavailable)
            ),
        ]
    );

    // The running call finishes: its result goes out, then the goaway.
    finish(&mut server, &running, Value::from(7i64));
    assert_eq!(server.closed, Some(Disconnect::LocalClose));
    let frames = pump(&mut server, &mut client);
    assert!(
        matches!(&frames[..], [Frame::Result(r), Frame::Goaway(g)]
            if r.id == CallId(2) && g.reason.as_deref() == Some(reason::PEER_CLOSING)),
        "{frames:?}"
    );
    assert_eq!(client.reply(first), Some(Ok(Value::Int(7))));
    assert!(server.aborts.is_empty(), "nothing was cut short");
    // (`collect` checked that the closed session holds nothing.)
    let stats = server.s.stats();
    assert_eq!((stats.active_calls, stats.pending_calls), (0, 0));
}

#[test]
fn a_drain_waits_for_a_server_stream_to_end() {
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let tag = client.stream(2, cap, "ticks");
    pump(&mut client, &mut server);
    let stream = server.invoked();
    let now = server.now;
    server.s.drain(Duration::from_secs(10), now);
    server.collect();
    assert_eq!(
        server
            .s
            .stream_item(stream.call_id, stream.run, Value::from(1i64)),
        Some(7)
    );
    server.collect();
    assert!(server.closed.is_none(), "the stream still runs");
    server.s.stream_done(stream.call_id, stream.run, Ok(()));
    server.collect();
    assert_eq!(server.closed, Some(Disconnect::LocalClose));
    let frames = pump(&mut server, &mut client);
    let events: Vec<_> = frames
        .iter()
        .map(|f| match f {
            Frame::Stream(s) => Some(s.event.clone()),
            _ => None,
        })
        .collect();
    assert!(
        matches!(
            &events[..],
            [Some(StreamEvent::Next(_)), Some(StreamEvent::End), None]
        ),
        "{frames:?}"
    );
    assert!(matches!(frames.last(), Some(Frame::Goaway(_))));
    assert_eq!(client.items.len(), 1);
    assert!(matches!(&client.ends[..], [(t, None)] if *t == tag));
}

#[test]
fn a_drain_waits_for_our_own_calls_and_serves_the_peers_callbacks_for_them() {
    // a calls b; a drains; b's handler calls a back on behalf of a's call (served), and an
    // unrelated call of b's is refused.
    let (mut b, mut a, on_b, on_a) = both_ways();
    let outer = a.call(2, on_b, "get", Value::Undefined);
    pump(&mut a, &mut b);
    let handler = b.invoked();
    let now = a.now;
    a.s.drain(Duration::from_secs(10), now);
    a.collect();
    assert!(a.closed.is_none(), "our call waits for its result");

    let mut req = request(on_a, "get", Value::Undefined, Expect::Value);
    req.parent = Some(parent_of(&handler));
    let now = b.now;
    b.s.start_call(&mut with_id(CallId(2), req), 200, now);
    let unrelated = b.call(3, on_a, "get", Value::Undefined);
    pump(&mut b, &mut a);
    let callback = a.invoked();
    assert_eq!(callback.call_id, CallId(2));
    assert!(a.invocations.is_empty(), "only the callback runs");
    finish(&mut a, &callback, Value::from(1i64));
    assert!(a.closed.is_none());
    pump(&mut a, &mut b);
    assert_eq!(b.reply(200), Some(Ok(Value::Int(1))));
    assert_refused(b.reply(unrelated));

    finish(&mut b, &handler, Value::from(2i64));
    pump(&mut b, &mut a);
    assert_eq!(a.reply(outer), Some(Ok(Value::Int(2))));
    assert_eq!(a.closed, Some(Disconnect::LocalClose));
    pump(&mut a, &mut b);
    assert!(matches!(b.closed, Some(Disconnect::Goaway { .. })));
}

#[test]
fn a_drain_closes_when_its_grace_runs_out_and_cancels_what_still_runs() {
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let pending = client.call(2, cap, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let running = server.invoked();
    let now = server.now;
    server.s.drain(Duration::from_secs(2), now);
    server.collect();
    // Draining again never extends the grace.
    let later = now + Duration::from_secs(1);
    server.s.drain(Duration::from_secs(60), later);
    server.collect();
    server.advance(Duration::from_millis(1999));
    assert!(server.closed.is_none());
    server.advance(Duration::from_millis(1));
    assert_eq!(server.closed, Some(Disconnect::LocalClose));
    assert_eq!(server.aborts, vec![running.run]);
    pump(&mut server, &mut client);
    let e = client.reply(pending).unwrap().unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert!(matches!(client.closed, Some(Disconnect::Goaway { .. })));
}

#[test]
fn a_drain_with_nothing_in_progress_closes_at_once_and_one_of_duration_max_never_fires() {
    let (mut server, mut client) = connected();
    bootstrap(&mut server, &mut client, 1, "t.parent");
    let now = server.now;
    server.s.drain(Duration::MAX, now);
    server.collect();
    assert_eq!(server.closed, Some(Disconnect::LocalClose));

    // One that waits forever: no timer, no panic; a shorter drain still shortens it.
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    client.call(2, cap, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let now = server.now;
    server.s.drain(Duration::MAX, now);
    server.collect();
    assert_eq!(server.s.poll_timeout(), None);
    server.s.drain(Duration::from_secs(1), now);
    server.collect();
    assert_eq!(server.s.poll_timeout(), Some(now + Duration::from_secs(1)));
    server.advance(Duration::from_secs(1));
    assert_eq!(server.closed, Some(Disconnect::LocalClose));
}
