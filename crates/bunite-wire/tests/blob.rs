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
