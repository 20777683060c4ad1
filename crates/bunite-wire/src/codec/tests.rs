//! Unit tests of the codec: encoding rules the vectors do not reach, bounded encoding, and
//! hostile input.

use super::*;
use crate::ids::CapId;
use crate::value::{Record, Timestamp, TypedArray, TypedArrayKind};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn enc(v: &Value) -> String {
    hex(&Encoder::new().encode_to_vec(v))
}

fn dec(s: &str) -> Result<Value, DecodeError> {
    Decoder::new(DecodeLimits::default()).decode(&unhex(s))
}

fn rec(fields: &[(&str, Value)]) -> Value {
    Value::Record(Record(
        fields
            .iter()
            .map(|(k, v)| (crate::Text::copy_from(k), v.clone()))
            .collect(),
    ))
}

#[test]
fn integers_follow_the_reference_rules() {
    assert_eq!(enc(&Value::Int(63)), "3f");
    assert_eq!(enc(&Value::Int(64)), "cc40");
    assert_eq!(enc(&Value::Int(-33)), "d0df");
    assert_eq!(enc(&Value::Int(1 << 53)), "cb4340000000000000");
    assert_eq!(enc(&Value::Int(-(1 << 53))), "cbc340000000000000");
    assert_eq!(enc(&Value::Int((1 << 53) + 1)), "d30020000000000001");
    assert_eq!(enc(&Value::Int(i64::MIN)), "d38000000000000000");
    assert_eq!(enc(&Value::UInt(u64::MAX)), "cfffffffffffffffff");
    // A UInt that fits i64 is encoded as the Int it should have been.
    assert_eq!(enc(&Value::UInt(5)), "05");
    assert_eq!(enc(&Value::Float(1.0)), "cb3ff0000000000000");
}

#[test]
fn integers_decode_from_every_form() {
    assert_eq!(dec("05"), Ok(Value::Int(5)));
    assert_eq!(dec("cf0000000000000005"), Ok(Value::Int(5)));
    assert_eq!(dec("cfffffffffffffffff"), Ok(Value::UInt(u64::MAX)));
    assert_eq!(dec("d3ffffffffffffffff"), Ok(Value::Int(-1)));
    assert_eq!(dec("d1fffe"), Ok(Value::Int(-2)));
    assert_eq!(dec("ca3fc00000"), Ok(Value::Float(1.5)));
}

#[test]
fn typed_arrays_always_use_sized_ext_headers_like_msgpackr() {
    let typed = |kind, n| {
        Value::TypedArray(TypedArray {
            kind,
            bytes: vec![7; n],
        })
    };
    // Data length 4 (1 + 3) would fit fixext 4; msgpackr writes c7 anyway.
    assert_eq!(enc(&typed(TypedArrayKind::Uint8, 3)), "c7047401070707");
    assert_eq!(enc(&typed(TypedArrayKind::Uint8, 0)), "c7017401");
    assert!(enc(&typed(TypedArrayKind::Uint8, 255)).starts_with("c801007401"));
    assert!(enc(&typed(TypedArrayKind::Float64, 65536)).starts_with("c900010001"));
}

#[test]
fn other_values_encode_and_decode() {
    let cases = [
        (Value::Bin(vec![1; 300]), "c5012c01"),
        (Value::Str("x".repeat(70000)), "db0001117078"),
        (Value::Map(vec![(Value::Int(1), Value::Null)]), "8101c0"),
        (
            Value::Timestamp(Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            "d6ff00000001",
        ),
        (
            Value::Timestamp(Timestamp {
                seconds: 1,
                nanos: 5_000_000,
            }),
            "d7ff01312d0000000001",
        ),
        (
            Value::Timestamp(Timestamp {
                seconds: -1,
                nanos: 0,
            }),
            "c70cff00000000ffffffffffffffff",
        ),
        (Value::CapRef(CapId(1)), "d45001"),
    ];
    for (v, prefix) in cases {
        let bytes = Encoder::new().encode_to_vec(&v);
        assert!(hex(&bytes).starts_with(prefix), "{v:?}: {}", hex(&bytes));
        assert_eq!(Decoder::new(DecodeLimits::default()).decode(&bytes), Ok(v));
    }
}

#[test]
fn msgpack_maps_stay_maps_even_with_string_keys() {
    let v = dec("81a161 01").unwrap();
    assert_eq!(v, Value::Map(vec![(Value::from("a"), Value::Int(1))]));
}

#[test]
fn set_error_and_regexp_decode_to_generic_values() {
    assert_eq!(
        dec("d4730092 0102"),
        Ok(Value::Array(vec![Value::Int(1), Value::Int(2)]))
    );
    let error = dec("d4650093 a154 a16d d40000").unwrap();
    assert_eq!(error, rec(&[("name", "T".into()), ("message", "m".into())]));
    let error = dec("d4650093 a154 a16d a163").unwrap();
    assert_eq!(error.as_record().unwrap().get("cause"), Some(&"c".into()));
    assert_eq!(
        dec("d4780092 a178 a167"),
        Ok(rec(&[("source", "x".into()), ("flags", "g".into())]))
    );
    assert_eq!(dec("d4730001"), Err(DecodeError::InvalidExtension(0x73)));
    assert_eq!(
        dec("d4780091a178"),
        Err(DecodeError::InvalidExtension(0x78))
    );
}

#[test]
fn record_definitions_may_use_any_slot_and_be_redefined_mid_value() {
    // Slot 0x7f, then slot 0x40 defined, referenced, and redefined inside its own values.
    let v = dec("93 d4727f91a17801 7f02 d4724091a161 d4724091a16203").unwrap();
    let Value::Array(items) = v else { panic!() };
    assert_eq!(items[0], rec(&[("x", Value::Int(1))]));
    assert_eq!(items[1], rec(&[("x", Value::Int(2))]));
    assert_eq!(items[2], rec(&[("a", rec(&[("b", Value::Int(3))]))]));
}

#[test]
fn bounded_encoding_fits_exactly_or_fails_cleanly() {
    let v = rec(&[("a", Value::Int(1))]);
    let len = Encoder::new().encode_to_vec(&v).len();
    let mut out = vec![0xee];
    assert!(Encoder::new().encode_bounded(&v, len, &mut out).is_ok());
    let mut out = vec![0xee];
    let err = Encoder::new()
        .encode_bounded(&v, len - 1, &mut out)
        .unwrap_err();
    assert_eq!(out, vec![0xee]);
    assert_eq!(err.max, len - 1);
    assert!(err.size > err.max);
    // A huge payload is refused before it is copied, and its size is still reported.
    let big = Value::Array(vec![Value::Null, Value::Str("x".repeat(1 << 20))]);
    let err = Encoder::new()
        .encode_bounded(&big, 100, &mut out)
        .unwrap_err();
    assert!(err.size > 1 << 20, "{err:?}");
    assert_eq!(out, vec![0xee]);
}

/// Runs `history`, then a failing bounded encode of `failing`, then `after`: the output of
/// `after` must equal that of an encoder that only ran `history`.
fn assert_rollback(history: &[Value], failing: &Value, after: &[Value]) {
    let mut tried = Encoder::new();
    let mut clean = Encoder::new();
    for v in history {
        tried.encode_to_vec(v);
        clean.encode_to_vec(v);
    }
    let mut out = vec![1, 2, 3];
    assert!(tried.encode_bounded(failing, 40, &mut out).is_err());
    assert_eq!(out, vec![1, 2, 3]);
    for v in after {
        assert_eq!(hex(&tried.encode_to_vec(v)), hex(&clean.encode_to_vec(v)));
    }
}

#[test]
fn a_failed_bounded_encode_leaves_no_shape_behind() {
    let big = Value::Str("x".repeat(100));
    let small = Value::from("x");
    let failing = rec(&[("payload", big)]);
    let after = rec(&[("payload", small)]);
    assert_rollback(&[], &failing, std::slice::from_ref(&after));
    // And the retry is written as a definition, exactly as by a fresh encoder.
    let mut e = Encoder::new();
    assert!(e.encode_bounded(&failing, 40, &mut Vec::new()).is_err());
    assert_eq!(hex(&e.encode_to_vec(&after)), enc(&after));
    assert!(enc(&after).starts_with("d47240"));
}

#[test]
fn rollback_undoes_wrap_around_and_evictions() {
    let shape = |i: usize| rec(&[(&format!("k{i}"), Value::Null)]);
    let history: Vec<Value> = (0..30).map(shape).collect();
    // Four new shapes (wrapping past 0x5f and evicting k0 and k1) before running out of room.
    let failing = Value::Array(vec![
        shape(100),
        shape(101),
        shape(102),
        shape(103),
        Value::Str("x".repeat(100)),
    ]);
    let after: Vec<Value> = [0, 1, 2, 29, 100].into_iter().map(shape).collect();
    assert_rollback(&history, &failing, &after);
}

#[test]
fn frames_encode_the_same_directly_and_through_values() {
    let frame = crate::frame_codec::frame_from_value(rec(&[
        ("op", "stream".into()),
        ("id", Value::Int(9)),
        ("ev", "credit".into()),
        ("credit", rec(&[])),
    ]))
    .unwrap();
    let mut direct = Vec::new();
    Encoder::new().encode_frame(&frame, &mut direct);
    assert_eq!(direct, Encoder::new().encode_to_vec(&frame.to_value()));
    let mut d = Decoder::new(DecodeLimits::default());
    assert_eq!(d.decode_frame(&direct), Ok(frame));
    assert_eq!(
        d.decode_frame(&unhex("c0")),
        Err(FrameDecodeError::Frame(FrameError::NotRecord))
    );
    assert_eq!(
        d.decode_frame(&unhex("c1")),
        Err(FrameDecodeError::Decode(DecodeError::ReservedByte(0xc1)))
    );
}

#[test]
fn hostile_input_is_an_error_never_a_panic() {
    use DecodeError::*;
    let cases: &[(&str, DecodeError)] = &[
        ("", UnexpectedEof),
        ("c0c0", TrailingBytes),
        ("c1", ReservedByte(0xc1)),
        // Huge length headers with nothing behind them: no allocation, just EOF.
        ("dcffff", UnexpectedEof),
        ("ddffffffff", UnexpectedEof),
        ("dfffffffff", UnexpectedEof),
        ("dbffffffff", UnexpectedEof),
        ("c6ffffffff", UnexpectedEof),
        ("c9ffffffff74", UnexpectedEof),
        ("40", UnknownRecordSlot(0x40)),
        ("d472", UnexpectedEof),
        ("d47240", UnexpectedEof),
        ("d4724091a161", UnexpectedEof),
        ("a2fffe", InvalidUtf8),
        ("d4724091a2fffe01", InvalidUtf8),
        ("c7057401", UnexpectedEof),
        ("d4", UnexpectedEof),
        ("d41100", InvalidExtension(0x11)),
        ("d5724000", InvalidExtension(0x72)),
        ("c701720a", InvalidExtension(0x72)),
        ("d4724001", BadRecordKeys),
        ("d472409101", BadRecordKeys),
        ("d4724092a161a1610102", BadRecordKeys),
        ("c702740300", BadTypedArray),
        ("d5747700", BadTypedArray),
        ("c70074", BadTypedArray),
        ("d45080", BadCapRef),
        ("d5500101", BadCapRef),
        ("c70550ffffffff1f", BadCapRef),
        ("c70650ffffffff8f01", BadCapRef),
        // Nanos of a second or more, in the 8- and 12-byte forms (`cursor::timestamp`).
        ("d7ffffffffff00000000", BadTimestamp),
        ("d7ffee6b280000000000", BadTimestamp),
        ("c70cff3b9aca00ffffffffffffffff", BadTimestamp),
        ("c70cffffffffff0000000000000000", BadTimestamp),
    ];
    for (input, expected) in cases {
        assert_eq!(dec(input), Err(*expected), "input {input:?}");
    }
}

#[test]
fn msgpackrs_invalid_date_decodes_as_the_invalid_timestamp() {
    // `pack.js` writes an invalid Date as `d4 ff ff`; `unpack.js` reads an ext -1 of any
    // length but 4, 8 and 12 as an invalid Date: fixext 1, 2, 16, ext 8/16/32 of 0, 3, 13...
    let invalid = Ok(Value::Timestamp(Timestamp::INVALID));
    for input in [
        "d4ffff",
        "d4ff00",
        "d5ff0000",
        "d8ff00000000000000000000000000000000",
        "c700ff",
        "c703ff010203",
        "c70dff00000000000000000000000000",
        "c80000ff",
        "c90000000bff0102030405060708090a0b",
    ] {
        assert_eq!(dec(input), invalid, "input {input}");
    }
    // In a record, an array and a map key: the decoder goes on after it.
    let v = rec(&[
        ("a", Value::Timestamp(Timestamp::INVALID)),
        ("b", Value::Int(1)),
    ]);
    assert_eq!(dec("d4724092a161a162d4ffff01"), Ok(v));
    assert_eq!(
        dec("92d4ffffc0"),
        Ok(Value::Array(vec![
            Value::Timestamp(Timestamp::INVALID),
            Value::Null
        ]))
    );
    // The three valid forms still read as times.
    assert_eq!(
        dec("d6ff00000001"),
        Ok(Value::Timestamp(Timestamp {
            seconds: 1,
            nanos: 0
        }))
    );
}

#[test]
fn invalid_timestamps_encode_as_msgpackrs_invalid_date() {
    assert!(!Timestamp::INVALID.is_valid());
    let edge = Timestamp {
        seconds: 1,
        nanos: 999_999_999,
    };
    assert!(edge.is_valid());
    assert_eq!(enc(&Value::Timestamp(edge)), "d7ffee6b27fc00000001");
    // Every timestamp whose nanos are a second or more: before, the first of these went
    // out in the 96-bit form, which our own decoder refused.
    for t in [
        Timestamp::INVALID,
        Timestamp {
            seconds: 1,
            nanos: 1_000_000_000,
        },
        Timestamp {
            seconds: -5,
            nanos: 3_000_000_000,
        },
        Timestamp {
            seconds: 0,
            nanos: u32::MAX,
        },
    ] {
        assert!(!t.is_valid(), "{t:?}");
        let bytes = Encoder::new().encode_to_vec(&Value::Timestamp(t));
        assert_eq!(hex(&bytes), "d4ffff", "{t:?}");
        assert_eq!(
            Decoder::new(DecodeLimits::default()).decode(&bytes),
            Ok(Value::Timestamp(Timestamp::INVALID)),
            "{t:?}"
        );
    }
    // Round trip inside a record, as a call's arguments hold one.
    let v = rec(&[("when", Value::Timestamp(Timestamp::INVALID))]);
    let bytes = Encoder::new().encode_to_vec(&v);
    assert_eq!(hex(&bytes), "d4724091a47768656ed4ffff");
    assert_eq!(Decoder::new(DecodeLimits::default()).decode(&bytes), Ok(v));
}

#[test]
fn a_zero_continuation_capref_is_accepted() {
    // Non-minimal but well-formed: 0x80 0x00 is 0.
    assert_eq!(dec("d5508000"), Ok(Value::CapRef(CapId(0))));
}

#[test]
fn nesting_is_bounded_by_the_depth_limit() {
    let limits = DecodeLimits {
        max_depth: 10,
        ..DecodeLimits::default()
    };
    let nested = |n: usize, leaf: &str| format!("{}{leaf}", "91".repeat(n));
    let mut d = Decoder::new(limits.clone());
    assert!(d.decode(&unhex(&nested(10, "c0"))).is_ok());
    assert_eq!(
        d.decode(&unhex(&nested(11, "c0"))),
        Err(DecodeError::DepthExceeded)
    );
    // Records, maps and Set payloads count too.
    assert_eq!(
        d.decode(&unhex(&nested(10, "d4724091a16101"))),
        Err(DecodeError::DepthExceeded)
    );
    assert_eq!(
        d.decode(&unhex(&nested(10, "8101c0"))),
        Err(DecodeError::DepthExceeded)
    );
    assert_eq!(
        d.decode(&unhex(&nested(9, "d473009101"))),
        Err(DecodeError::DepthExceeded)
    );
    // Records at the full default depth, each a new definition, decode on a test
    // thread's stack.
    let records = format!(
        "{}c0",
        "d4724091a161".repeat(DecodeLimits::DEFAULT_MAX_DEPTH)
    );
    assert!(Decoder::new(DecodeLimits::default())
        .decode(&unhex(&records))
        .is_ok());
    // The default limit stops a deep hostile message long before the stack would.
    let deep = unhex(&nested(100_000, "c0"));
    assert_eq!(
        Decoder::new(DecodeLimits::default()).decode(&deep),
        Err(DecodeError::DepthExceeded)
    );
}

#[test]
fn oversized_input_is_refused_before_decoding() {
    let limits = DecodeLimits {
        max_bytes: 2,
        ..DecodeLimits::default()
    };
    assert_eq!(
        Decoder::new(limits).decode(&unhex("a26161")),
        Err(DecodeError::TooLarge)
    );
}

#[test]
fn record_keys_are_shared_so_they_cannot_amplify_a_message() {
    // One 60 kB key, then ten thousand two-byte references to it: 600 MB of keys if each
    // record copied its key, one shared key now.
    let key = "k".repeat(60_000);
    let mut bytes = unhex("dd00002711 d4724091 daea60");
    bytes.extend_from_slice(key.as_bytes());
    bytes.push(0xc0);
    for _ in 1..10_001 {
        bytes.extend_from_slice(&[0x40, 0xc0]);
    }
    let Ok(Value::Array(records)) = Decoder::new(DecodeLimits::default()).decode(&bytes) else {
        panic!("ten thousand references to one key decode");
    };
    let keys: Vec<&crate::Text> = records
        .iter()
        .filter_map(|r| r.as_record()?.0.first().map(|(k, _)| k))
        .collect();
    assert_eq!(keys.len(), 10_001);
    assert!(keys.iter().all(|k| k.same_allocation(keys[0])));
}
