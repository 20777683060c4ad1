//! A long connection: a peer that does the same thing over and over leaves every table,
//! queue and timer set of both sessions as it found them.

use std::time::Duration;

use bunite_wire::{CallId, CapId, Frame, StreamEvent, StreamFrame, Value};

use super::*;

/// How many times each cycle runs.
const CYCLES: u64 = 2_000;

type Footprint = Vec<(&'static str, usize, usize)>;

/// What differs between two footprints: tables that hold more entries, or more room than
/// the room always kept ([`KEPT_ROOM`](crate::hashing::KEPT_ROOM)) and than before.
fn grown(before: &Footprint, after: &Footprint) -> Vec<String> {
    let kept = crate::hashing::KEPT_ROOM;
    before
        .iter()
        .zip(after)
        .filter(|((_, len0, room0), (_, len1, room1))| {
            len1 > len0 || (*room1 > kept && room1 > room0)
        })
        .map(|((name, len0, room0), (_, len1, room1))| {
            format!("{name}: {len0} entries in room for {room0} -> {len1} in {room1}")
        })
        .collect()
}

/// Forgets what the peer's outputs were (the test's own lists, not the session's).
fn forget(p: &mut Peer) {
    p.replies.clear();
    p.invocations.clear();
    p.items.clear();
    p.ends.clear();
    p.signals.clear();
    p.aborts.clear();
    p.credits.clear();
    p.policies.clear();
    p.disposals.clear();
    p.deferred.clear();
}

/// Runs `cycle` [`CYCLES`] times after once to warm up, and checks that neither session
/// grew in between.
fn assert_no_growth(
    (mut server, mut client): (Peer, Peer),
    mut cycle: impl FnMut(&mut Peer, &mut Peer, u64),
) {
    cycle(&mut server, &mut client, 0);
    forget(&mut server);
    forget(&mut client);
    let before = (server.s.footprint(), client.s.footprint());
    for i in 1..=CYCLES {
        cycle(&mut server, &mut client, i);
        forget(&mut server);
        forget(&mut client);
    }
    let after = (server.s.footprint(), client.s.footprint());
    let mut what = grown(&before.0, &after.0);
    what.extend(
        grown(&before.1, &after.1)
            .into_iter()
            .map(|w| format!("client {w}")),
    );
    assert!(what.is_empty(), "grew over {CYCLES} cycles: {what:#?}");
    assert!(server.closed.is_none() && client.closed.is_none());
}

#[test]
fn bootstrap_and_release_over_and_over_leaves_nothing() {
    assert_no_growth(connected(), |server, client, i| {
        let cap = bootstrap(server, client, 1 + 2 * i, "t.parent");
        client.s.release(cap);
        pump(client, server);
    });
}

#[test]
fn calls_whose_deadlines_pass_leave_nothing() {
    assert_no_growth(connected(), |server, client, i| {
        let cap = bootstrap(server, client, 1 + 3 * i, "t.parent");
        let mut req = request(cap, "get", Value::Undefined, Expect::Value);
        req.deadline = Some(Duration::from_millis(10));
        let now = client.now;
        client
            .s
            .start_call(&mut with_id(CallId(2 + 3 * i), req), 9, now);
        client.collect();
        pump(client, server);
        let inv = server.invoked();
        server.advance(Duration::from_millis(10));
        client.advance(Duration::from_millis(510));
        assert!(client.replies.contains_key(&9));
        pump(client, server);
        finish(server, &inv, Value::Null);
        pump(server, client);
        client.s.release(cap);
        pump(client, server);
    });
}

#[test]
fn streams_opened_and_cancelled_or_ended_leave_nothing() {
    assert_no_growth(connected(), |server, client, i| {
        let cap = bootstrap(server, client, 1 + 4 * i, "t.parent");
        for (k, cancel) in [(2, true), (3, false)] {
            let id = CallId(k + 4 * i);
            client.s.start_stream(
                &mut with_id(id, request(cap, "ticks", Value::Undefined, Expect::Value)),
                50,
            );
            client.collect();
            pump(client, server);
            let inv = server.invoked();
            for n in 0..8 {
                server.s.stream_item(id, inv.run, Value::from(n as i64));
            }
            pump(server, client);
            client.s.return_credit(id, 8);
            if cancel {
                client.s.cancel_client_stream(id);
                pump(client, server);
            } else {
                pump(client, server);
                server.s.stream_done(id, inv.run, Ok(()));
                server.collect();
                pump(server, client);
                client.s.cancel_client_stream(id);
            }
            // Credit for a stream that just finished.
            let credit = Frame::Stream(StreamFrame {
                id,
                event: StreamEvent::Credit(Some(8)),
            });
            client.s.send(&credit);
            pump(client, server);
        }
        client.s.release(cap);
        pump(client, server);
    });
}

#[test]
fn cancels_after_results_and_children_of_cancelled_calls_leave_nothing() {
    let (mut b, mut a) = connected();
    a.s.serve(vec![(parent(), imp("a"))], IfExists::Throw)
        .unwrap();
    let on_a = bootstrap(&mut a, &mut b, 1, "t.parent");
    assert_no_growth((b, a), |b, a, i| {
        let on_b = bootstrap(b, a, 1 + 3 * i, "t.parent");
        // A call answered, then cancelled.
        let tag = a.call(2 + 3 * i, on_b, "get", Value::Undefined);
        pump(a, b);
        let inv = b.invoked();
        finish(b, &inv, Value::Null);
        pump(b, a);
        assert!(a.replies.contains_key(&tag));
        let cancel = Frame::Cancel(bunite_wire::Cancel {
            id: CallId(2 + 3 * i),
            reason: None,
        });
        a.s.send(&cancel);
        pump(a, b);
        // A call whose handler calls back, then cancelled.
        a.call(3 + 3 * i, on_b, "get", Value::Undefined);
        pump(a, b);
        let outer = b.invoked();
        let mut req = request(on_a, "get", Value::Undefined, Expect::Value);
        req.parent = Some(parent_of(&outer));
        let now = b.now;
        b.s.start_call(&mut with_id(CallId(2 + i), req), 100, now);
        b.collect();
        pump(b, a);
        let back = a.invoked();
        a.s.cancel_call(CallId(3 + 3 * i));
        pump(a, b);
        pump(b, a);
        finish(a, &back, Value::Null);
        pump(a, b);
        a.s.release(on_b);
        pump(a, b);
    });
}

#[test]
fn revoking_and_serving_again_leaves_nothing() {
    assert_no_growth(connected(), |server, client, i| {
        let cap = bootstrap(server, client, 1 + 2 * i, "t.parent");
        let tag = client.call(2 + 2 * i, cap, "get", Value::Undefined);
        pump(client, server);
        server.s.unserve(&["t.parent".to_owned()]);
        server.collect();
        pump(server, client);
        assert!(client.replies.contains_key(&tag));
        let inv = server.invoked();
        finish(server, &inv, Value::Null);
        pump(server, client);
        client.s.release(cap);
        pump(client, server);
        server
            .s
            .serve(vec![(parent(), imp("parent"))], IfExists::Throw)
            .unwrap();
    });
}

#[test]
fn bootstraps_cancelled_while_the_policy_runs_leave_nothing() {
    let (mut server, mut client) = (peer_with(limits(), true), peer());
    pump(&mut server, &mut client);
    pump(&mut client, &mut server);
    server
        .s
        .serve(vec![(parent(), imp("parent"))], IfExists::Throw)
        .unwrap();
    assert_no_growth((server, client), |server, client, i| {
        let id = CallId(1 + i);
        let now = client.now;
        client.s.bootstrap(id, "t.parent", None, 7, now);
        client.collect();
        pump(client, server);
        client.s.cancel_call(id);
        pump(client, server);
        let (call, _) = server.policies.pop().expect("a policy check");
        server.s.policy_done(call, Ok(true));
        server.collect();
        pump(server, client);
        pump(client, server);
    });
}

#[test]
fn cap_ids_a_peer_never_had_released_again_and_again_change_nothing() {
    assert_no_growth(connected(), |server, client, i| {
        let cap = bootstrap(server, client, 1 + i, "t.parent");
        let d = Frame::Drop(bunite_wire::DropFrame {
            caps: (0..64)
                .map(|k| bunite_wire::DropEntry {
                    id: CapId(1_000 + k),
                    delta: u32::MAX,
                })
                .collect(),
        });
        client.s.send(&d);
        pump(client, server);
        client.s.release(cap);
        pump(client, server);
    });
}

/// One input that answers many calls at once (here a `cap_revoked` failing 300 calls in
/// flight on the cap; a cancel cascading to a handler's calls is another) queues an output
/// each: once they are taken, the queue gives back the room they took, as the transmit
/// queue does. An output of the runtime is 184 bytes: 1,024 of them kept 188 KB for the
/// connection's life.
#[test]
fn the_outputs_of_a_burst_do_not_keep_their_room() {
    const BURST: u64 = 300;
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    for i in 0..BURST {
        let tag = client.tag();
        let now = client.now;
        let req = request(cap, "get", Value::Undefined, Expect::Value);
        client
            .s
            .start_call(&mut with_id(CallId(2 + i), req), tag, now);
    }
    client.collect();
    pump(&mut client, &mut server);
    server.s.unserve(&["t.parent".to_owned()]);
    server.collect();
    pump(&mut server, &mut client);
    assert_eq!(
        client.replies.len() as u64,
        BURST,
        "every call failed at once"
    );
    let room = client.s.outputs.capacity();
    assert!(
        room <= crate::hashing::KEPT_ROOM,
        "room for {room} outputs kept once they were taken"
    );
}

/// A server that once fills a client stream's window leaves what the session counts for
/// it (one entry a value not yet returned as credit) with room for 1,024 entries; once
/// the consumer has returned the credit, the room goes, though the stream stays open.
#[test]
fn a_client_stream_read_empty_gives_back_the_room_a_burst_took() {
    const BURST: u64 = 1_000;
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let id = CallId(2);
    client.s.start_stream(
        &mut with_id(id, request(cap, "ticks", Value::Undefined, Expect::Value)),
        50,
    );
    client.collect();
    pump(&mut client, &mut server);
    let inv = server.invoked();
    // Past its window: the session sends what the runtime asks (the runtime keeps to the
    // window), and the client holds up to its buffer.
    for n in 0..BURST {
        server.s.stream_item(id, inv.run, Value::from(n as i64));
    }
    pump(&mut server, &mut client);
    assert_eq!(client.items.len() as u64, BURST);
    let sizes = |c: &Peer| c.s.outbound.streams.get(&id).map(|s| s.sizes.capacity());
    assert!(sizes(&client) >= Some(BURST as usize));
    client.s.return_credit(id, BURST as u32);
    client.collect();
    let room = sizes(&client).expect("still open");
    assert!(
        room <= crate::hashing::KEPT_ROOM,
        "room for {room} values kept"
    );
}

/// Ids are never reused on a connection (PROTOCOL §7), so each bootstrap after a release
/// takes a new one: a peer that bootstraps and releases in a loop uses up the 2^32 cap
/// ids of its connection after about 4.3 billion cycles. Then its bootstraps and cap
/// returns fail `resource_exhausted`; nothing wraps or panics, and the caps it holds still
/// answer.
#[test]
fn a_connection_whose_cap_ids_are_used_up_answers_resource_exhausted() {
    let (mut server, mut client) = connected();
    server.s.table.skip_to(u64::from(u32::MAX));
    let last = bootstrap(&mut server, &mut client, 1, "t.parent");
    assert_eq!(last, CapId(u32::MAX), "the last id");
    let make = client.tag();
    let now = client.now;
    let req = request(last, "make", Value::Undefined, Expect::Caps);
    client.s.start_call(&mut with_id(CallId(2), req), make, now);
    client.collect();
    pump(&mut client, &mut server);
    let inv = server.invoked();
    let now = server.now;
    let child = Ok(Outcome::Cap(super::child(), imp("child")));
    server.s.handler_done(inv.run, inv.call_id, child, now);
    server.collect();
    let get = client.call(3, last, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    finish(&mut server, &inv, Value::from(5i64));
    pump(&mut server, &mut client);
    let e = client.reply(make).expect("answered").unwrap_err();
    assert_eq!(
        (e.code(), e.message(), e.reason()),
        (
            crate::status::Code::ResourceExhausted,
            "cap ids exhausted",
            Some("max_caps_per_connection")
        )
    );
    assert_eq!(client.reply(get), Some(Ok(Value::Int(5))));
    client.s.release(last);
    pump(&mut client, &mut server);
    let tag = client.tag();
    let now = client.now;
    client.s.bootstrap(CallId(4), "t.parent", None, tag, now);
    client.collect();
    pump(&mut client, &mut server);
    pump(&mut server, &mut client);
    let e = client.reply(tag).expect("answered").unwrap_err();
    assert_eq!(e.message(), "cap ids exhausted");
    assert_eq!(server.s.stats().live_caps, 2);
    assert!(server.closed.is_none() && client.closed.is_none());
}
