//! What a misbehaving peer can and cannot do to a session.

use bunite_wire::{Call, CallId, Cancel, CapId, Encoder, Frame, Value};
use bytes::Bytes;

use super::*;
use crate::error::LocalError;
use crate::status::Code;

/// A peer that writes frames by hand, after the session's hello and its own.
struct Raw {
    enc: Encoder,
}

impl Raw {
    fn connect(p: &mut Peer) -> Raw {
        while p.s.poll_transmit().is_some() {}
        let mut raw = Raw {
            enc: Encoder::new(),
        };
        let hello = Frame::Hello(bunite_wire::Hello {
            v: 1,
            mode: "native".into(),
            features: vec![],
            max_bytes: 1 << 20,
            origin: "raw".into(),
        });
        raw.send(p, &hello);
        raw
    }

    fn bytes(&mut self, f: &Frame) -> Bytes {
        Bytes::from(self.enc.encode_to_vec(&f.to_value()))
    }

    fn send(&mut self, p: &mut Peer, f: &Frame) {
        let b = self.bytes(f);
        let now = p.now;
        p.s.handle_message(&b, now);
        p.collect();
    }

    fn call(&mut self, p: &mut Peer, id: u64, target: CapId, method: &str) {
        let f = Frame::Call(Call {
            id: CallId(id),
            target,
            method: bunite_wire::Text::copy_from(method),
            args: Value::Undefined,
            meta: None,
        });
        self.send(p, &f);
    }
}

fn goaway_of(p: &mut Peer) -> bunite_wire::Goaway {
    let mut dec = bunite_wire::Decoder::new(Default::default());
    let mut goaway = None;
    while let Some(b) = p.s.poll_transmit() {
        // Our decoder missed the session's earlier frames, so only look for the goaway by op.
        if let Ok(Frame::Goaway(g)) = dec.decode_frame(&b) {
            goaway = Some(g);
        }
    }
    goaway.expect("a goaway")
}

fn served(limits: Limits) -> (Peer, Raw) {
    let mut p = peer_with(limits, false);
    p.s.serve(vec![(parent(), imp("parent"))], IfExists::Throw)
        .unwrap();
    let mut raw = Raw::connect(&mut p);
    let boot = Frame::Call(Call {
        id: CallId(1),
        target: CapId::BOOTSTRAP,
        method: "bootstrap".into(),
        args: rec("name", "t.parent"),
        meta: None,
    });
    raw.send(&mut p, &boot);
    (p, raw)
}

#[test]
fn a_reused_live_call_id_is_a_protocol_error_and_never_a_second_entry() {
    let mut limits = limits();
    limits.max_in_flight = 4;
    let mut p = peer_with(limits, false);
    p.s.serve(vec![(parent(), imp("parent"))], IfExists::Throw)
        .unwrap();
    let mut raw = Raw::connect(&mut p);
    let boot = Frame::Call(Call {
        id: CallId(1),
        target: CapId::BOOTSTRAP,
        method: "bootstrap".into(),
        args: rec("name", "t.parent"),
        meta: None,
    });
    raw.send(&mut p, &boot);
    raw.call(&mut p, 7, CapId(2), "get");
    assert_eq!(p.invocations.len(), 1);
    raw.call(&mut p, 7, CapId(2), "get");
    assert_eq!(p.invocations.len(), 1, "no second handler under id 7");
    assert!(matches!(p.closed, Some(Disconnect::ProtocolError { .. })));
    assert_eq!(
        p.aborts.len(),
        1,
        "the first handler is stopped at shutdown"
    );
    let g = goaway_of(&mut p);
    assert_eq!(g.reason.as_deref(), Some("invalid_argument"));
    assert_eq!(
        g.error.and_then(|e| e.message).as_deref(),
        Some("call id 7 is still in use")
    );
    assert_eq!(p.s.stats().active_calls, 0);
}

#[test]
fn a_finished_call_id_may_come_again() {
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, 1, "t.parent");
    for round in 0..2 {
        let tag = client.tag();
        let now = client.now;
        // The same id twice in a row, each after the first finished (a sloppy but harmless
        // peer): only a *live* id is refused.
        client.s.start_call(
            &mut with_id(
                CallId(5),
                request(id, "get", Value::Undefined, Expect::Value),
            ),
            tag,
            now,
        );
        client.collect();
        pump(&mut client, &mut server);
        let inv = server.invoked();
        finish(&mut server, &inv, Value::from(round));
        pump(&mut server, &mut client);
        assert_eq!(client.reply(tag), Some(Ok(Value::Int(round))));
    }
    assert!(server.closed.is_none());
}

#[test]
fn cancelled_handlers_that_keep_running_still_count_toward_the_in_flight_limit() {
    let mut limits = limits();
    limits.max_in_flight = 2;
    let (mut p, mut raw) = served(limits);
    for id in [3, 4] {
        raw.call(&mut p, id, CapId(2), "slow");
        raw.send(
            &mut p,
            &Frame::Cancel(Cancel {
                id: CallId(id),
                reason: Some("client_cancel".into()),
            }),
        );
    }
    assert_eq!(
        p.signals.len(),
        2,
        "keep-running handlers are signalled, not aborted"
    );
    assert!(p.aborts.is_empty());
    assert_eq!(p.s.stats().active_calls, 0);
    raw.call(&mut p, 5, CapId(2), "get");
    assert_eq!(
        p.invocations.len(),
        2,
        "the third call is refused: two still run"
    );
    // One of them ends: room again.
    let first = p.invocations.remove(0);
    finish(&mut p, &first, Value::Null);
    raw.call(&mut p, 6, CapId(2), "get");
    assert_eq!(p.invocations.len(), 2);
    assert!(p.closed.is_none());
}

#[test]
fn undecodable_bytes_and_unknown_ops_get_a_goaway() {
    for (bytes, message) in [
        (Bytes::from_static(&[0xc1]), "reserved byte 0xc1"),
        (
            Bytes::from_static(&[0x01, 0x02]),
            "trailing bytes after the value",
        ),
    ] {
        let mut p = peer();
        let _raw = Raw::connect(&mut p);
        let now = p.now;
        p.s.handle_message(&bytes, now);
        p.collect();
        let g = goaway_of(&mut p);
        assert_eq!(g.error.unwrap().message.as_deref(), Some(message));
        assert!(p.s.is_closed());
    }
    let mut p = peer();
    let mut raw = Raw::connect(&mut p);
    let unknown = Value::Record(bunite_wire::Record::new().with("op", "teleport"));
    let b = Bytes::from(raw.enc.encode_to_vec(&unknown));
    let now = p.now;
    p.s.handle_message(&b, now);
    p.collect();
    let g = goaway_of(&mut p);
    assert_eq!(g.error.unwrap().message.as_deref(), Some("unknown opcode"));
}

#[test]
fn an_oversize_message_gets_max_frame_bytes() {
    let mut limits = limits();
    limits.max_bytes = 64;
    let mut p = peer_with(limits, false);
    let mut raw = Raw::connect(&mut p);
    let big = Frame::Call(Call {
        id: CallId(1),
        target: CapId(2),
        method: "x".repeat(100).into(),
        args: Value::Undefined,
        meta: None,
    });
    let b = raw.bytes(&big);
    let now = p.now;
    p.s.handle_message(&b, now);
    p.collect();
    let e = goaway_of(&mut p).error.unwrap();
    assert_eq!(e.code, Code::ResourceExhausted.as_str());
    assert_eq!(e.reason(), Some("max_frame_bytes"));
}

#[test]
fn frames_after_shutdown_are_ignored() {
    let (mut p, mut raw) = served(limits());
    raw.call(&mut p, 8, CapId(2), "get");
    assert_eq!(p.invocations.len(), 1, "served before the shutdown");
    p.s.close();
    p.collect();
    raw.call(&mut p, 9, CapId(2), "get");
    assert_eq!(p.invocations.len(), 1, "ignored after it");
}

/// A goaway's reason and error are the peer's text, and every pending call gets its own
/// copy: the session keeps at most `PEER_TEXT` bytes of each (and of the details only a
/// short `reason`), so one long goaway is not multiplied by the calls it fails.
#[test]
fn a_long_goaway_is_clipped_before_the_pending_calls_get_it() {
    use crate::error::Disconnect;
    use crate::session::PEER_TEXT;
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, 1, "t.parent");
    let now = client.now;
    for n in 0..8u64 {
        let req = request(id, "get", Value::Undefined, Expect::Value);
        client
            .s
            .start_call(&mut with_id(CallId(10 + n), req), 100 + n, now);
    }
    client.collect();
    let long = "é".repeat(50_000); // two bytes a character: the cut must find a boundary
    let details = bunite_wire::Record::new()
        .with("reason", "max_frame_bytes")
        .with("padding", long.as_str());
    let goaway = Frame::Goaway(bunite_wire::Goaway {
        reason: Some(format!("x{long}")),
        error: Some(bunite_wire::WireStatus {
            code: "resource_exhausted".into(),
            message: Some(long.clone()),
            details: Some(Value::Record(details)),
            retry: None,
            full: false,
        }),
    });
    let bytes = Bytes::from(Encoder::new().encode_to_vec(&goaway.to_value()));
    client.s.handle_message(&bytes, now);
    client.collect();
    let clipped = PEER_TEXT + '…'.len_utf8();
    for n in 0..8u64 {
        let e = client
            .replies
            .remove(&(100 + n))
            .expect("failed")
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(
            e.status().message.starts_with("xé"),
            "{}",
            e.status().message
        );
        assert!(e.status().message.len() <= clipped);
        let Some(Disconnect::Goaway {
            reason: Some(reason),
            error: Some(error),
        }) = e.disconnect()
        else {
            panic!("{e:?}");
        };
        assert!(reason.len() <= clipped && reason.ends_with('…'));
        assert_eq!(error.code, Code::ResourceExhausted);
        assert!(error.message.len() <= clipped && error.message.ends_with('…'));
        assert_eq!(error.reason(), Some("max_frame_bytes"));
        let detail = bunite_wire::Record::new().with("reason", "max_frame_bytes");
        assert_eq!(
            error.details,
            Some(Value::Record(detail)),
            "only the reason"
        );
    }
}

/// A goaway of ordinary length is kept as it came.
#[test]
fn a_short_goaway_is_kept_whole() {
    use crate::error::Disconnect;
    let (mut server, mut client) = connected();
    let id = bootstrap(&mut server, &mut client, 1, "t.parent");
    let now = client.now;
    let req = request(id, "get", Value::Undefined, Expect::Value);
    client.s.start_call(&mut with_id(CallId(10), req), 100, now);
    client.collect();
    let goaway = Frame::Goaway(bunite_wire::Goaway {
        reason: Some("host_shutdown".into()),
        error: Some(
            bunite_wire::WireStatus::new("unavailable", "host shutting down")
                .with_reason("plugin_unloading"),
        ),
    });
    let bytes = Bytes::from(Encoder::new().encode_to_vec(&goaway.to_value()));
    client.s.handle_message(&bytes, now);
    client.collect();
    let e = client.replies.remove(&100).expect("failed").unwrap_err();
    assert_eq!(e.status().message, "host_shutdown");
    let Some(Disconnect::Goaway {
        error: Some(error), ..
    }) = e.disconnect()
    else {
        panic!("{e:?}");
    };
    assert_eq!(error.message, "host shutting down");
    assert_eq!(error.reason(), Some("plugin_unloading"));
}

#[test]
fn a_cap_revoked_fails_the_calls_and_streams_on_the_caps_it_names_and_nothing_else() {
    let mut client = peer();
    let mut raw = Raw::connect(&mut client);
    let on_five = client.call(2, CapId(5), "get", Value::Undefined);
    let on_six = client.call(3, CapId(6), "get", Value::Undefined);
    let again_five = client.call(4, CapId(5), "get", Value::Undefined);
    client.s.start_stream(
        &mut with_id(
            CallId(5),
            request(CapId(5), "ticks", Value::Undefined, Expect::Value),
        ),
        50,
    );
    client.collect();
    let revoke = |ids: Vec<u32>| {
        Frame::CapRevoked(bunite_wire::CapRevoked {
            cap_ids: ids.into_iter().map(CapId).collect(),
        })
    };

    // Caps nobody calls: nothing fails, however many frames name them.
    for n in 0..1_000 {
        raw.send(&mut client, &revoke(vec![100 + n, 7, 8]));
    }
    raw.send(&mut client, &revoke(vec![]));
    assert_eq!(client.s.stats().pending_calls, 3);
    assert_eq!(client.s.stats().client_streams, 1);
    assert!(client.replies.is_empty() && client.ends.is_empty());
    // Calls made after the first revocation are counted too.
    let late_five = client.call(6, CapId(5), "get", Value::Undefined);
    let on_seven = client.call(7, CapId(7), "get", Value::Undefined);
    let e = client.reply(on_seven).expect("failed").unwrap_err();
    assert_eq!(e.local_kind(), Some(LocalError::Revoked), "7 was revoked");

    raw.send(&mut client, &revoke(vec![9, 5]));
    for tag in [on_five, again_five, late_five] {
        let e = client.reply(tag).expect("failed").unwrap_err();
        assert_eq!(e.reason(), Some("revoked"));
    }
    assert!(matches!(&client.ends[..], [(50, Some(e))] if e.reason() == Some("revoked")));
    assert_eq!(client.reply(on_six), None, "a call on another cap goes on");
    assert_eq!(client.s.stats().pending_calls, 1);
    assert_eq!(client.s.stats().client_streams, 0);

    raw.send(&mut client, &revoke(vec![6]));
    let e = client.reply(on_six).expect("failed").unwrap_err();
    assert_eq!(e.reason(), Some("revoked"));
    assert_eq!(client.s.stats().pending_calls, 0);
}

#[test]
fn a_cap_revoked_naming_the_reserved_ids_revokes_nothing() {
    let mut client = peer();
    let mut raw = Raw::connect(&mut client);
    let revoke = Frame::CapRevoked(bunite_wire::CapRevoked {
        cap_ids: vec![CapId(0), CapId(1)],
    });
    raw.send(&mut client, &revoke);
    let now = client.now;
    client.s.bootstrap(CallId(2), "t.parent", None, 77, now);
    client.collect();
    assert!(
        client.reply(77).is_none(),
        "the bootstrap is not failed locally"
    );
    assert_eq!(client.s.stats().pending_calls, 1);
    assert!(client.s.poll_transmit().is_some(), "and it is sent");
}

/// PROTOCOL §12: what a revocation fails, pending or later, call or stream, is
/// `failed_precondition` `cap revoked` `{reason:"revoked"}`; later ones fail locally and
/// nothing is sent for them.
#[test]
fn a_revocation_fails_calls_and_streams_with_cap_revoked_and_later_ones_locally() {
    let mut client = peer();
    let mut raw = Raw::connect(&mut client);
    let pending = client.call(2, CapId(5), "get", Value::Undefined);
    let stream = client.stream(3, CapId(5), "ticks");
    while client.s.poll_transmit().is_some() {}
    let revoke = Frame::CapRevoked(bunite_wire::CapRevoked {
        cap_ids: vec![CapId(5)],
    });
    raw.send(&mut client, &revoke);
    let check = |e: &Error| {
        assert_eq!(
            (e.code(), e.message(), e.reason()),
            (Code::FailedPrecondition, "cap revoked", Some("revoked"))
        );
    };
    check(&client.reply(pending).expect("failed").unwrap_err());
    match client.ends.pop() {
        Some((sink, Some(e))) if sink == stream => check(&e),
        other => panic!("{other:?}"),
    }
    let later = client.call(4, CapId(5), "get", Value::Undefined);
    let e = client.reply(later).expect("failed at once").unwrap_err();
    check(&e);
    assert_eq!(e.local_kind(), Some(LocalError::Revoked));
    let later_stream = client.stream(5, CapId(5), "ticks");
    match client.ends.pop() {
        Some((sink, Some(e))) if sink == later_stream => {
            check(&e);
            assert_eq!(e.local_kind(), Some(LocalError::Revoked));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        client.s.poll_transmit().is_none(),
        "nothing sent for a revoked cap"
    );
    assert_eq!(client.s.stats().pending_calls, 0);
    assert_eq!(client.s.stats().client_streams, 0);
}

/// PROTOCOL §6: a second hello replaces the first, and its `maxBytes` bounds what we send
/// from then on (§13.6): a call above it fails locally, sending nothing.
#[test]
fn a_second_hello_replaces_the_first_and_its_max_bytes_bounds_our_calls() {
    let mut client = peer();
    let mut raw = Raw::connect(&mut client);
    let hello = |max_bytes| {
        Frame::Hello(bunite_wire::Hello {
            v: 1,
            mode: "web".into(),
            features: vec!["x".into()],
            max_bytes,
            origin: "again".into(),
        })
    };
    raw.send(&mut client, &hello(64));
    let long = Value::Str("a".repeat(100));
    let tag = client.call(2, CapId(5), "get", long.clone());
    let e = client.reply(tag).expect("failed at once").unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(e.reason(), Some("max_frame_bytes"));
    assert_eq!(e.local_kind(), Some(LocalError::TooLarge));
    assert!(client.s.poll_transmit().is_none(), "nothing sent");
    raw.send(&mut client, &hello(1 << 20));
    let tag = client.call(3, CapId(5), "get", long);
    assert!(client.reply(tag).is_none(), "sent and pending");
    assert!(client.s.poll_transmit().is_some());
    assert!(client.closed.is_none());
}

/// PROTOCOL §11: a cancel answers the call `cancelled` with the cancel's reason as the
/// message; a cancel without one (`reason` undefined) gets a status without a message, as
/// 0.10.0's `{code: "cancelled", message: frame.reason}`.
#[test]
fn a_cancel_without_a_reason_is_answered_cancelled_without_a_message() {
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    client.call(2, cap, "get", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    client.s.send(&Frame::Cancel(Cancel {
        id: CallId(2),
        reason: None,
    }));
    pump(&mut client, &mut server);
    assert_eq!(server.aborts, vec![inv.run]);
    let frames = pump(&mut server, &mut client);
    match &frames[..] {
        [Frame::Result(r)] => {
            assert_eq!(r.id, CallId(2));
            let e = r.outcome.as_ref().unwrap_err();
            assert_eq!((e.code.as_str(), e.message.as_deref()), ("cancelled", None));
            assert!(e.details.is_none() && e.retry.is_none());
        }
        other => panic!("{other:?}"),
    }
    // The handler's later result is suppressed.
    finish(&mut server, &inv, Value::Null);
    assert!(pump(&mut server, &mut client).is_empty());
}
