//! `Blob`: read from a received payload, a long one is a slice of the message (no copy), a
//! short one a copy; either way it reads exactly what `ByteBuf` reads, through every route.

use bunite_wire::serde_bytes::ByteBuf;
use bunite_wire::{
    from_value, to_value, Blob, CallId, DecodeLimits, Decoder, Encoder, Frame, Payload, Record,
    ResultFrame, TypedArray, TypedArrayKind, Value,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// `v` as a received `result` frame: the message and its payload.
fn received(v: Value) -> (Bytes, Payload) {
    let frame = Frame::Result(ResultFrame {
        id: CallId(1),
        outcome: Ok(v),
    });
    let mut bytes = Vec::new();
    Encoder::new().encode_frame(&frame, &mut bytes);
    let msg = Bytes::from(bytes);
    match Decoder::new(DecodeLimits::default()).decode_frame_lazy(&msg) {
        Ok(Frame::Result(ResultFrame {
            outcome: Ok(payload),
            ..
        })) => (msg, payload),
        other => panic!("not a result: {other:?}"),
    }
}

/// Whether `blob`'s bytes lie inside `msg`'s.
fn inside(blob: &Blob, msg: &Bytes) -> bool {
    let (start, end) = (msg.as_ptr() as usize, msg.as_ptr() as usize + msg.len());
    let at = blob.as_ptr() as usize;
    !blob.is_empty() && at >= start && at + blob.len() <= end
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn a_long_blob_is_a_slice_of_the_message() {
    let data = pattern(Blob::SHARE_MIN + 3);
    let (msg, payload) = received(Value::Bin(data.clone()));
    let blob: Blob = payload.deserialize().unwrap();
    assert_eq!(&blob[..], &data[..]);
    assert!(inside(&blob, &msg), "a long blob was copied");
    // It outlives the message and the payload: it holds its share of the buffer.
    drop((msg, payload));
    assert_eq!(&blob[..], &data[..]);
}

#[test]
fn a_short_blob_is_a_copy() {
    let data = pattern(Blob::SHARE_MIN - 1);
    let (msg, payload) = received(Value::Bin(data.clone()));
    let blob: Blob = payload.deserialize().unwrap();
    assert_eq!(&blob[..], &data[..]);
    assert!(
        !inside(&blob, &msg),
        "a short blob shares the message's buffer"
    );
}

#[test]
fn a_blob_that_is_a_small_part_of_its_message_is_a_copy() {
    // A kept blob must not hold a message many times its size: beside 60 KB of other
    // data a 20 KB blob is copied; beside 10 KB it is shared.
    for (other, shared) in [(60_000, false), (10_000, true)] {
        let data = pattern(20_000);
        let value = Value::Array(vec![
            Value::Bin(data.clone()),
            Value::Str("x".repeat(other)),
        ]);
        let (msg, payload) = received(value);
        let (blob, _): (Blob, String) = payload.deserialize().unwrap();
        assert_eq!(&blob[..], &data[..]);
        assert_eq!(inside(&blob, &msg), shared, "beside {other} bytes");
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Upload {
    name: String,
    data: Blob,
    thumbs: Vec<Blob>,
}

#[test]
fn blobs_inside_a_type_and_uint8_arrays_are_slices_too() {
    let big = pattern(40_000);
    let typed = pattern(Blob::SHARE_MIN);
    let value = to_value(&Upload {
        name: "a.png".into(),
        data: Blob::copy_from_slice(&big),
        thumbs: vec![Blob::from(vec![1, 2, 3])],
    })
    .unwrap();
    let (msg, payload) = received(value);
    let up: Upload = payload.deserialize().unwrap();
    assert_eq!(up.name, "a.png");
    assert_eq!(&up.data[..], &big[..]);
    assert!(inside(&up.data, &msg));
    assert_eq!(&up.thumbs[0][..], &[1, 2, 3]);
    assert!(!inside(&up.thumbs[0], &msg));

    // A JavaScript `Uint8Array` can arrive as a typed array (ext) rather than `bin`.
    let (msg, payload) = received(Value::TypedArray(TypedArray {
        kind: TypedArrayKind::Uint8,
        bytes: typed.clone(),
    }));
    let blob: Blob = payload.deserialize().unwrap();
    assert_eq!(&blob[..], &typed[..]);
    assert!(inside(&blob, &msg));
}

/// What `Blob` and `ByteBuf` make of one payload, by the lazy and the eager route.
fn both(v: Value) -> [Result<Vec<u8>, String>; 4] {
    let (_msg, payload) = received(v);
    let eager = payload.to_value().unwrap();
    [
        payload
            .deserialize::<Blob>()
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string()),
        payload
            .deserialize::<ByteBuf>()
            .map(ByteBuf::into_vec)
            .map_err(|e| e.to_string()),
        from_value::<Blob>(eager.clone())
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string()),
        from_value::<ByteBuf>(eager)
            .map(ByteBuf::into_vec)
            .map_err(|e| e.to_string()),
    ]
}

#[test]
fn a_blob_reads_what_a_byte_buf_reads() {
    let cases = [
        Value::Bin(Vec::new()),
        Value::Bin(pattern(1)),
        Value::Bin(pattern(Blob::SHARE_MIN - 1)),
        Value::Bin(pattern(Blob::SHARE_MIN)),
        Value::Bin(pattern(70_000)),
        Value::Array(vec![Value::Int(1), Value::Int(255)]),
        // Strings read as their UTF-8 bytes (`ByteBuf`'s leniency), even this one: the
        // private word our deserializer uses to hand a slice over means nothing from a peer.
        Value::Str("$bunite::private::StashedBytes".into()),
        Value::TypedArray(TypedArray {
            kind: TypedArrayKind::Int16,
            bytes: pattern(Blob::SHARE_MIN + 2),
        }),
    ];
    for case in cases {
        let [blob, buf, blob_eager, buf_eager] = both(case.clone());
        assert!(blob.is_ok(), "{case:?}: {blob:?}");
        assert_eq!(blob, buf, "{case:?}");
        assert_eq!(blob, blob_eager, "{case:?}");
        assert_eq!(buf, buf_eager, "{case:?}");
    }
    for wrong in [
        Value::Int(3),
        Value::Record(Record(vec![("a".into(), Value::Int(1))])),
        Value::Array(vec![Value::Int(256)]),
    ] {
        let [blob, buf, blob_eager, buf_eager] = both(wrong.clone());
        assert!(blob.is_err(), "{wrong:?} read as a blob: {blob:?}");
        assert!(
            buf.is_err() && blob_eager.is_err() && buf_eager.is_err(),
            "{wrong:?}"
        );
    }
}

#[test]
fn a_blob_goes_out_as_bin_and_through_other_formats() {
    let blob = Blob::from(pattern(20));
    assert_eq!(to_value(&blob).unwrap(), Value::Bin(pattern(20)));
    let json = serde_json::to_string(&blob).unwrap();
    assert_eq!(serde_json::from_str::<Blob>(&json).unwrap(), blob);
    // From a local payload (a value never encoded) it reads the same.
    let local = Payload::from_value(Value::Bin(pattern(Blob::SHARE_MIN)));
    assert_eq!(
        local.deserialize::<Blob>().unwrap(),
        Blob::from(pattern(Blob::SHARE_MIN))
    );
    assert_eq!(blob.detached(), blob);
}

/// `v` as the value of a received `result` frame beside an unknown field of `junk` bytes.
fn received_beside(v: Value, junk: usize) -> (Bytes, Payload) {
    let frame = Value::Record(
        Record::new()
            .with("op", "result")
            .with("id", 1u32)
            .with("ok", true)
            .with("value", v)
            .with("junk", Value::Bin(vec![0; junk])),
    );
    let msg = Bytes::from(Encoder::new().encode_to_vec(&frame));
    match Decoder::new(DecodeLimits::default()).decode_frame_lazy(&msg) {
        Ok(Frame::Result(ResultFrame {
            outcome: Ok(payload),
            ..
        })) => (msg, payload),
        _ => panic!("not a result"),
    }
}

/// `Payload::unpin`: a payload to keep for long lets go of its message when it is short
/// (inline up to 23 bytes, else in the arena) or a small part of it, and reads the same
/// after; a long one that is most of its message keeps it, and is charged for all of it.
#[test]
fn an_unpinned_payload_lets_go_of_its_message_unless_it_is_most_of_it() {
    let mut arena = bytes::BytesMut::new();
    let cases = [
        (Value::from(7u32), 0, true),
        (Value::from("twenty-two bytes long!"), 0, true),
        (Value::Bin(pattern(200)), 0, true),
        (Value::Bin(pattern(20_000)), 64 * 1024, true),
        (Value::Bin(pattern(20_000)), 0, false),
    ];
    for (i, (value, junk, lets_go)) in cases.into_iter().enumerate() {
        let (msg, mut payload) = received_beside(value.clone(), junk);
        payload.unpin(&mut arena);
        assert_eq!(msg.is_unique(), lets_go, "case {i}");
        assert!(
            payload.to_value().unwrap() == value,
            "case {i} reads the same"
        );
        let charged = payload.kept_beyond(None).0;
        let expected = if lets_go {
            payload.wire_len()
        } else {
            msg.len()
        };
        assert_eq!(charged, expected, "case {i}");
    }
    // A blob read from a payload in the arena is a copy of the right bytes.
    let (_, mut small) = received_beside(Value::Bin(pattern(100)), 0);
    small.unpin(&mut arena);
    let again: Blob = small.deserialize().unwrap();
    assert_eq!(&again[..], &pattern(100)[..]);
}
