//! Codec throughput: encoding and decoding a typical call frame and a large result, with
//! one long-lived encoder/decoder pair (record shapes cached, as on a connection).
//!
//! Run with: `cargo bench -p bunite-wire --bench codec`

use std::hint::black_box;
use std::time::Instant;

use bunite_wire::{Call, CallId, CapId, Decoder, Encoder, Frame, Record, ResultFrame, Value};

fn call_frame(i: i64) -> Frame {
    Frame::Call(Call {
        id: CallId(i as u64),
        target: CapId(2),
        method: "increment".into(),
        args: Value::Record(Record::new().with("delta", i).with("note", "hello")),
        meta: None,
    })
}

fn big_result() -> Frame {
    let rows = (0..1000i64)
        .map(|i| {
            Value::Record(
                Record::new()
                    .with("id", i)
                    .with("name", format!("row {i}"))
                    .with("score", i as f64 * 0.5),
            )
        })
        .collect();
    Frame::Result(ResultFrame {
        id: CallId(1),
        outcome: Ok(Value::Array(rows)),
    })
}

fn bench(name: &str, iters: u64, mut f: impl FnMut(u64)) {
    let start = Instant::now();
    for i in 0..iters {
        f(i);
    }
    let per = start.elapsed() / iters as u32;
    println!("| {name} | {:.0} /s | {per:?} |", 1.0 / per.as_secs_f64());
}

fn main() {
    println!("| operation | rate | per op |");
    println!("| --- | --- | --- |");
    let mut enc = Encoder::new();
    let mut out = Vec::with_capacity(256);
    bench("encode call frame", 1_000_000, |i| {
        out.clear();
        enc.encode_frame(&call_frame(i as i64), &mut out);
        black_box(&out);
    });
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(Default::default());
    let frames: Vec<Vec<u8>> = (0..1000)
        .map(|i| enc.encode_to_vec(&call_frame(i).to_value()))
        .collect();
    bench("decode call frame", 1_000_000, |i| {
        black_box(
            dec.decode_frame(&frames[(i % 1000) as usize])
                .expect("decode"),
        );
    });
    let big = big_result();
    let mut enc = Encoder::new();
    let bytes = enc.encode_to_vec(&big.to_value());
    bench("encode 1000-row result", 2_000, |_| {
        out.clear();
        enc.encode_frame(&big, &mut out);
        black_box(&out);
    });
    let mut dec = Decoder::new(Default::default());
    dec.decode_frame(&bytes).expect("decode");
    bench(
        &format!("decode 1000-row result ({} bytes)", bytes.len()),
        2_000,
        |_| {
            black_box(dec.decode_frame(&bytes).expect("decode"));
        },
    );
}
