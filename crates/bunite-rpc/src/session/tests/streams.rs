//! Streams with credit, both sides.

use bunite_wire::{CallId, CapId, Frame, StreamEvent, StreamFrame, Value};
use bytes::Bytes;

use super::*;
use crate::error::LocalError;
use crate::session::streams::VALUE_KEPT;
use crate::status::Code;

/// Opens `ticks` from `client` on `server`; returns the server's invocation.
fn open(server: &mut Peer, client: &mut Peer, cap: CapId, id: u64, sink: u64) -> Invocation<Imp> {
    client.s.start_stream(
        &mut with_id(
            CallId(id),
            request(cap, "ticks", Value::Undefined, Expect::Value),
        ),
        sink,
    );
    client.collect();
    pump(client, server);
    server.invoked()
}

#[test]
fn a_server_stream_sends_only_within_its_window_and_credit_reopens_it() {
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let inv = open(&mut server, &mut client, cap, 2, 50);
    assert!(inv.stream);
    let (id, run) = (inv.call_id, inv.run);
    assert_eq!(
        server.s.stream_window(id, run),
        Some(8),
        "the method's initial credit"
    );
    for i in 0..8u32 {
        assert_eq!(
            server.s.stream_item(id, run, Value::from(i)),
            Some(u64::from(7 - i)),
            "the credit left"
        );
    }
    assert_eq!(server.s.stream_window(id, run), Some(0));
    pump(&mut server, &mut client);
    assert_eq!(client.items.len(), 8);
    assert!(client.items.iter().all(|(sink, _)| *sink == 50));
    client.s.return_credit(id, 8);
    pump(&mut client, &mut server);
    assert_eq!(server.credits, vec![run], "credit wakes the source");
    assert_eq!(server.s.stream_window(id, run), Some(8));
    server.s.stream_done(id, run, Ok(()));
    server.collect();
    pump(&mut server, &mut client);
    assert_eq!(client.ends.len(), 1);
    assert!(client.ends[0].1.is_none(), "a clean end");
    assert_eq!(client.s.stats().client_streams, 0);
    assert_eq!(server.s.stats().server_streams, 0);
}

#[test]
fn credit_of_zero_or_missing_is_ignored_and_the_window_is_capped() {
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let inv = open(&mut server, &mut client, cap, 2, 50);
    for credit in [None, Some(0), Some(1 << 40)] {
        let frame = Frame::Stream(StreamFrame {
            id: inv.call_id,
            event: StreamEvent::Credit(credit),
        });
        client.s.send(&frame);
        pump(&mut client, &mut server);
    }
    assert_eq!(server.s.stream_window(inv.call_id, inv.run), Some(1024));
}

#[test]
fn a_cancel_stops_the_source_and_sends_end() {
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let inv = open(&mut server, &mut client, cap, 2, 50);
    client.s.cancel_client_stream(inv.call_id);
    let frames = pump(&mut client, &mut server);
    assert!(
        matches!(&frames[..], [Frame::Cancel(c)] if c.reason.as_deref() == Some("client_cancel"))
    );
    assert_eq!(server.aborts, vec![inv.run]);
    let frames = pump(&mut server, &mut client);
    assert!(matches!(
        &frames[..],
        [Frame::Stream(StreamFrame {
            event: StreamEvent::End,
            ..
        })]
    ));
    assert_eq!(
        server.s.stream_item(inv.call_id, inv.run, Value::Null),
        None,
        "gone"
    );
}

#[test]
fn a_server_that_ignores_credit_fails_the_client_stream() {
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let inv = open(&mut server, &mut client, cap, 2, 50);
    // The server pushes past any window a client could have granted.
    for i in 0..1100 {
        server.s.send(&Frame::Stream(StreamFrame {
            id: inv.call_id,
            event: StreamEvent::Next(Value::from(i)),
        }));
    }
    let frames = pump(&mut server, &mut client);
    assert_eq!(frames.len(), 1100);
    assert_eq!(
        client.items.len(),
        1024,
        "the buffer holds at most the largest window"
    );
    let (sink, error) = client.ends.pop().unwrap();
    assert_eq!(sink, 50);
    let e = error.unwrap();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(e.reason(), Some("stream_credit_window"));
    assert_eq!(
        e.local_kind(),
        Some(crate::error::LocalError::StreamOverflow)
    );
    let frames = pump(&mut client, &mut server);
    assert!(
        matches!(&frames[..], [Frame::Cancel(c)] if c.reason.as_deref() == Some("stream_credit_window"))
    );
}

#[test]
fn a_result_frame_for_a_stream_fails_it() {
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let inv = open(&mut server, &mut client, cap, 2, 50);
    server.s.send(&Frame::Result(bunite_wire::ResultFrame {
        id: inv.call_id,
        outcome: Ok(Value::Null),
    }));
    pump(&mut server, &mut client);
    let e = client.ends.pop().unwrap().1.unwrap();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "stream method returned result frame");
}

/// Found by the `session_ops` fuzz target (`fuzz/corpus/session_ops/finding-call-on-a-
/// stream-method`): a unary call to a stream method (the dynamic API can make one) was
/// answered with stream frames the client ignored, so the call never completed and the
/// server's stream waited for credit forever, holding an in-flight slot. Now the first
/// stream frame fails the call (the mirror of a result for a stream, PROTOCOL §10) and,
/// while the stream is still open, cancels it.
#[test]
fn stream_frames_for_a_unary_call_fail_it_and_cancel_the_stream() {
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let tag = client.call(2, cap, "ticks", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    assert!(inv.stream, "the server runs it as the stream it is");
    assert!(server
        .s
        .stream_item(inv.call_id, inv.run, Value::from(1))
        .is_some());
    pump(&mut server, &mut client);
    let e = client
        .reply(tag)
        .expect("the call is answered")
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "call method returned stream frame");
    assert_eq!(e.local_kind(), Some(LocalError::WrongKind));
    assert_eq!(client.s.stats().pending_calls, 0);
    let frames = pump(&mut client, &mut server);
    assert!(
        matches!(&frames[..], [Frame::Cancel(c)] if c.reason.as_deref() == Some("client_cancel")),
        "{frames:?}"
    );
    assert_eq!(server.aborts, vec![inv.run], "the server's stream stops");
    assert_eq!(server.s.stats().server_streams, 0);

    // A stream that ends before sending anything: the call fails, nothing more is sent.
    let tag = client.call(3, cap, "ticks", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    server.s.stream_done(inv.call_id, inv.run, Ok(()));
    pump(&mut server, &mut client);
    let e = client.reply(tag).expect("answered").unwrap_err();
    assert_eq!(e.message(), "call method returned stream frame");
    assert!(pump(&mut client, &mut server).is_empty());

    // A stream that fails: the call fails with the stream's error.
    let tag = client.call(4, cap, "ticks", Value::Undefined);
    pump(&mut client, &mut server);
    let inv = server.invoked();
    let status = crate::status::Status::new(Code::Unavailable, "source gone");
    server.s.stream_done(inv.call_id, inv.run, Err(status));
    pump(&mut server, &mut client);
    let e = client.reply(tag).expect("answered").unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Unavailable, "source gone"));
    assert_eq!(
        e.local_kind(),
        Some(LocalError::WrongKind),
        "the stream's own status, and the kind that says it was a stream"
    );
    assert!(pump(&mut client, &mut server).is_empty());
    assert_eq!(client.s.stats().pending_calls, 0);
    assert_eq!(server.s.stats().server_streams, 0);
}

#[test]
fn credit_returned_together_goes_out_as_one_frame() {
    let (mut server, mut client) = connected();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let inv = open(&mut server, &mut client, cap, 2, 50);
    for i in 0..8 {
        server.s.stream_item(inv.call_id, inv.run, Value::from(i));
    }
    pump(&mut server, &mut client);
    client.s.return_credit(inv.call_id, 3);
    client.s.return_credit(inv.call_id, 5);
    let frames = pump(&mut client, &mut server);
    match &frames[..] {
        [Frame::Stream(StreamFrame {
            event: StreamEvent::Credit(Some(8)),
            ..
        })] => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(server.s.stream_window(inv.call_id, inv.run), Some(8));
    // A stream cancelled with credit still due sends the cancel, not the credit.
    client.s.return_credit(inv.call_id, 1);
    client.s.cancel_client_stream(inv.call_id);
    let frames = pump(&mut client, &mut server);
    assert!(matches!(&frames[..], [Frame::Cancel(_)]), "{frames:?}");
}

/// A stream opened by a client whose unread values may keep at most `max` bytes
/// (`Limits::max_buffered_stream_bytes`); the server's invocation of it.
fn stream_buffering(max: usize) -> (Peer, Peer, Invocation<Imp>) {
    let client_limits = Limits {
        max_buffered_stream_bytes: max,
        ..limits()
    };
    let (mut server, mut client) = (peer_with(limits(), false), peer_with(client_limits, false));
    pump(&mut server, &mut client);
    pump(&mut client, &mut server);
    server
        .s
        .serve(vec![(parent(), imp("parent"))], IfExists::Throw)
        .unwrap();
    let cap = bootstrap(&mut server, &mut client, 1, "t.parent");
    let inv = open(&mut server, &mut client, cap, 2, 50);
    (server, client, inv)
}

/// The values a consumer has not read yet are bounded in bytes, across the connection's
/// streams (`Limits::max_buffered_stream_bytes`), not only in number: each keeps its
/// message alive. Credit given back frees what its values held.
#[test]
fn values_not_yet_read_are_bounded_in_bytes() {
    let (mut server, mut client, inv) = stream_buffering(3_500);
    let value = || Value::from("v".repeat(1_000)); // about 1,010 bytes a frame
    for _ in 0..3 {
        server.s.stream_item(inv.call_id, inv.run, value());
    }
    pump(&mut server, &mut client);
    assert_eq!(client.items.len(), 3);
    // Three read: their bytes are free again, and three more fit.
    client.s.return_credit(inv.call_id, 3);
    for _ in 0..3 {
        server.s.stream_item(inv.call_id, inv.run, value());
    }
    pump(&mut server, &mut client);
    assert_eq!(client.items.len(), 6);
    assert!(client.ends.is_empty());
    client.s.check_invariants();
    // A fourth unread one would pass the bound: the stream fails and is cancelled.
    server.s.stream_item(inv.call_id, inv.run, value());
    pump(&mut server, &mut client);
    assert_eq!(client.items.len(), 6);
    let (sink, error) = client.ends.pop().expect("the stream ended");
    assert_eq!(sink, 50);
    let e = error.expect("with an error");
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(e.local_kind(), Some(LocalError::StreamOverflow));
    assert!(
        e.status().message.contains("(max_buffered_stream_bytes)"),
        "{}",
        e.status().message
    );
    client.s.check_invariants();
    let frames = pump(&mut client, &mut server);
    assert!(
        matches!(&frames[..], [Frame::Cancel(c)] if c.reason.as_deref() == Some("client_cancel")),
        "{frames:?}"
    );
}

/// A buffered value also keeps the record table it is read with, and with it definitions
/// the decoder has since replaced: a server that defines a new wide record for every value
/// is charged for each definition (once, with the first value whose table holds it), not
/// only for the values' bytes.
#[test]
fn values_not_yet_read_are_charged_for_the_definitions_they_keep() {
    let (mut server, mut client, inv) = stream_buffering(120_000);
    // 300 keys of 30 bytes: about 9.6 KB on the wire, about 30 KB in a record table.
    let wide = |n: usize| -> Value {
        (0..300)
            .map(|k| (format!("{n:03}{k:0>27}"), Value::Null))
            .collect::<bunite_wire::Record>()
            .into()
    };
    let mut sent = 0;
    while client.ends.is_empty() && sent < 12 {
        server.s.stream_item(inv.call_id, inv.run, wide(sent));
        pump(&mut server, &mut client);
        client.s.check_invariants();
        sent += 1;
    }
    // Counted by their bytes alone, twelve (115 KB) would fit in 120 KB.
    let (_, error) = client.ends.pop().expect("the stream failed");
    assert_eq!(
        error.and_then(|e| e.local_kind()),
        Some(LocalError::StreamOverflow)
    );
    assert!(
        (3..=5).contains(&client.items.len()),
        "{} values buffered",
        client.items.len()
    );
}

/// A value waiting to be read keeps its own bytes, not its message: a short one, or one
/// that is a small part of its message (beside fields the decoder skips), is copied out;
/// a long one that is most of its message keeps the message and is charged for all of it.
#[test]
fn a_value_waiting_to_be_read_keeps_its_own_bytes_not_its_message() {
    let (mut server, mut client, a) = stream_buffering(64 * 1024 * 1024);
    let mut next = |value: Value, junk: usize| {
        let frame = Value::Record(
            bunite_wire::Record::new()
                .with("op", "stream")
                .with("id", a.call_id.0 as u32)
                .with("ev", "next")
                .with("value", value)
                .with("junk", Value::Bin(vec![0; junk])),
        );
        let message = Bytes::from(server.s.encoder.encode_to_vec(&frame));
        let before = client.s.outbound.buffered;
        let now = client.now;
        client.s.handle_message(&message, now);
        client.collect();
        let charged = client.s.outbound.buffered - before;
        (message.is_unique(), charged, message.len())
    };
    let long = || Value::Bin(vec![7; 40 * 1024]);

    // One byte beside 2 MB, 100 bytes beside 2 MB, 40 KiB beside 100 KiB: copied out,
    // charged their own bytes.
    // (Each is charged `VALUE_KEPT` besides: its place in the consumer's queue.)
    for (value, junk, len) in [
        (Value::from(1u32), 2_000_000, 1),
        (Value::Bin(vec![1; 100]), 2_000_000, 102),
        (long(), 100 * 1024, 40 * 1024 + 3),
    ] {
        let (unique, charged, _) = next(value, junk);
        assert!(unique, "the message is let go");
        assert_eq!(charged, len + VALUE_KEPT);
    }
    // 40 KiB that is most of its message: shared, charged the whole message.
    let (unique, charged, message) = next(long(), 100);
    assert!(!unique, "a long value shares its message");
    assert_eq!(charged, message + VALUE_KEPT);

    assert_eq!(client.items.len(), 4);
    let first: u32 = client.items[0].1.deserialize().unwrap();
    let long_one: bunite_wire::Blob = client.items[3].1.deserialize().unwrap();
    assert_eq!((first, long_one.len()), (1, 40 * 1024));
    assert!(long_one.iter().all(|b| *b == 7));
}

/// Values of a few bytes are charged what each keeps beside its bytes (`VALUE_KEPT`): a
/// server that ignores credit and sends one-byte values fills the bound after
/// `max / (1 + VALUE_KEPT)` of them, not `max` (counted by their bytes alone, 10,000
/// bytes of bound let 1,024 such values wait, about 100 KB).
#[test]
fn values_of_a_few_bytes_are_charged_what_each_keeps() {
    let (_server, mut client, a) = stream_buffering(10_000);
    let mut enc = bunite_wire::Encoder::new();
    let mut sent = 0;
    while client.ends.is_empty() && sent < 1_000 {
        let frame = Value::Record(
            bunite_wire::Record::new()
                .with("op", "stream")
                .with("id", a.call_id.0 as u32)
                .with("ev", "next")
                .with("value", 1u32),
        );
        let message = Bytes::from(enc.encode_to_vec(&frame));
        let now = client.now;
        client.s.handle_message(&message, now);
        client.collect();
        sent += 1;
    }
    assert_eq!(client.items.len(), 10_000 / (1 + VALUE_KEPT));
    let (_, error) = client.ends.pop().expect("the stream failed");
    let e = error.expect("with an error");
    assert_eq!(e.local_kind(), Some(LocalError::StreamOverflow));
    assert!(e.status().message.contains("(max_buffered_stream_bytes)"));
    client.s.check_invariants();
}

/// The values of a stream that ended and the peer's error that ended it stay counted
/// until its consumer reads them or lets the stream go: a server that ends each stream
/// once it has filled the bound cannot make the client hold a bound per stream.
#[test]
fn an_ended_streams_unread_values_and_error_stay_counted_until_read() {
    let (mut server, mut client, a) = stream_buffering(3_500);
    let value = || Value::from("v".repeat(1_000)); // about 1,010 bytes a frame
    for _ in 0..3 {
        server.s.stream_item(a.call_id, a.run, value());
    }
    server.s.stream_done(a.call_id, a.run, Ok(()));
    server.collect();
    pump(&mut server, &mut client);
    assert!(matches!(&client.ends[..], [(50, None)]), "a ended cleanly");
    let after_a = client.s.outbound.buffered;
    assert!(
        after_a > 3_000,
        "its three unread values still count: {after_a}"
    );

    // Another stream: its first value passes the bound with a's, and it fails.
    let b = open(&mut server, &mut client, CapId(2), 3, 51);
    server.s.stream_item(b.call_id, b.run, value());
    pump(&mut server, &mut client);
    let (sink, e) = client.ends.pop().expect("b ended");
    assert_eq!(sink, 51);
    assert_eq!(e.unwrap().local_kind(), Some(LocalError::StreamOverflow));
    client.s.cancel_client_stream(b.call_id);
    assert_eq!(
        client.s.outbound.buffered, after_a,
        "b's consumer let it go"
    );

    // a's consumer reads two values (credit), then its end: nothing is counted any more.
    client.s.return_credit(a.call_id, 2);
    client.s.check_invariants();
    assert!(client.s.outbound.buffered < after_a / 2);
    client.s.cancel_client_stream(a.call_id);
    assert_eq!(client.s.outbound.buffered, 0);
    assert!(client.s.outbound.ended.is_empty());
    let frames = pump(&mut client, &mut server);
    assert!(
        !frames
            .iter()
            .any(|f| matches!(f, Frame::Cancel(c) if c.id == a.call_id)),
        "letting an ended stream go sends nothing: {frames:?}"
    );

    // A peer's error that ends a stream counts at its message's length until its end is
    // read; one that does not fit within the bound is kept clipped, as a goaway's is.
    for (n, (len, whole)) in [(2_000, true), (200_000, false)].into_iter().enumerate() {
        let c = open(&mut server, &mut client, CapId(2), 4 + n as u64, 52);
        let error = crate::status::Status::internal("x".repeat(len)).with_reason("why");
        server.s.stream_done(c.call_id, c.run, Err(error));
        server.collect();
        pump(&mut server, &mut client);
        let (_, e) = client.ends.pop().expect("c ended");
        let status = e.unwrap().status().clone();
        assert_eq!(status.reason(), Some("why"));
        match whole {
            true => {
                assert_eq!(status.message.len(), len, "the error is whole");
                assert!(client.s.outbound.buffered > len);
            }
            false => {
                assert!(status.message.len() < 1_100, "clipped");
                assert_eq!(client.s.outbound.buffered, 0);
            }
        }
        client.s.check_invariants();
        client.s.cancel_client_stream(c.call_id);
        assert_eq!(client.s.outbound.buffered, 0);
    }
}
