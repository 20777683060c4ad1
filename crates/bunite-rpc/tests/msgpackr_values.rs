//! Values as msgpackr, the 0.10 TypeScript peer's codec, writes them reach a handler and
//! come back without closing the connection: its invalid Date (`new Date(undefined)`),
//! `d4 ff ff`, which both our decoders once refused as a malformed timestamp, a protocol
//! error that closed the connection (PROTOCOL §11).

mod common;

use bunite_rpc::wire::{CallId, Frame, ResultFrame, Timestamp};
use bunite_rpc::{Connection, Record, Value};
use common::*;

/// A msgpack fixstr.
fn str(s: &str) -> Vec<u8> {
    let mut out = vec![0xa0 | u8::try_from(s.len()).unwrap()];
    out.extend_from_slice(s.as_bytes());
    out
}

/// A record definition in `slot` with `keys` (slots 0x7d..0x7f: the raw peer's own encoder
/// uses the ring 0x40..0x5f, so its shapes stay as the connection holds them).
fn definition(slot: u8, keys: &[&str]) -> Vec<u8> {
    let mut out = vec![0xd4, 0x72, slot, 0x90 | u8::try_from(keys.len()).unwrap()];
    keys.iter().for_each(|k| out.extend(str(k)));
    out
}

/// `{op: "call", id, target: {kind: "cap", id: cap}, method: "echo", args: {when, n: 3},
/// meta: undefined}` byte by byte, `when` being msgpackr's `d4 ff ff`.
fn call_with_invalid_date(id: u8, cap: u8) -> Vec<u8> {
    let mut b = definition(0x7f, &["op", "id", "target", "method", "args", "meta"]);
    b.extend(str("call"));
    b.push(id);
    b.extend(definition(0x7e, &["kind", "id"]));
    b.extend(str("cap"));
    b.push(cap);
    b.extend(str("echo"));
    b.extend(definition(0x7d, &["when", "n"]));
    b.extend([0xd4, 0xff, 0xff, 0x03]);
    b.extend([0xd4, 0x00, 0x00]);
    b
}

#[test]
fn a_call_whose_args_hold_msgpackrs_invalid_date_is_answered_and_the_connection_lives_on() {
    run(async {
        let (server, mut raw) = RawPeer::connect(Connection::builder()).await;
        serve_counter(&server).await;
        let cap = raw.bootstrap(1, "test.counter").await;
        let cap = u8::try_from(cap.0).expect("a small cap id, a fixint");
        assert!(cap < 0x40);
        raw.send_bytes(call_with_invalid_date(2, cap)).await;
        let echoed = Value::Record(
            Record::new()
                .with("when", Value::Timestamp(Timestamp::INVALID))
                .with("n", 3),
        );
        match raw.recv().await {
            Frame::Result(ResultFrame { id, outcome }) => {
                assert_eq!(id, CallId(2));
                assert_eq!(outcome, Ok(echoed), "the handler saw the invalid Date");
            }
            other => panic!("expected the echo's result, got {other:?}"),
        }
        // The connection is open and in step: another call on the same cap.
        let r = raw.call(3, u32::from(cap), "get", Value::Undefined).await;
        assert!(r.outcome.is_ok(), "{r:?}");
        assert!(!server.is_closed());
    });
}

#[test]
fn an_invalid_timestamp_goes_both_ways_between_two_connections() {
    run(async {
        let (server, client, c) = counter_pair().await;
        let args = Value::Record(
            Record::new()
                .with("when", Value::Timestamp(Timestamp::INVALID))
                .with("n", 3),
        );
        let back = c.call_value("echo", args.clone()).await.unwrap();
        assert_eq!(back, args);
        // Any timestamp whose nanos are out of range goes out as the invalid Date.
        let odd = Value::Timestamp(Timestamp {
            seconds: 7,
            nanos: 2_000_000_000,
        });
        let back = c.call_value("echo", odd).await.unwrap();
        assert_eq!(back, Value::Timestamp(Timestamp::INVALID));
        drop(c);
        assert_clean(&[&server, &client]).await;
    });
}
