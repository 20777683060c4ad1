//! Codec throughput: encoding and decoding a typical call frame and a large result, with
//! one long-lived encoder/decoder pair (record shapes cached, as on a connection).
//!
//! Run with: `cargo bench -p bunite-wire --bench codec`
//!
//! `BENCH_ONLY=<substring>` runs only the matching operations and `BENCH_ITERS=<n>` runs
//! each `n` times instead of its default: that is how `docs/BENCHMARKS.md` counts
//! instructions per operation under `valgrind --tool=callgrind` (two runs of different `n`,
//! the difference divided by the difference in `n`).

use std::hint::black_box;
use std::time::Instant;

use bunite_wire::{
    Call, CallId, CapId, Decoder, Encoder, Frame, Payload, Record, ResultFrame, Value,
};
use bytes::Bytes;
use serde::Deserialize;

/// A call's params, as a typed handler declares them.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // Read only by `black_box`.
struct Params {
    delta: i64,
    note: String,
}

/// One row of the large result, as a typed client declares it.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // Read only by `black_box`.
struct Row {
    id: i64,
    name: String,
    score: f64,
}

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

fn args(frame: Frame<Payload>) -> Payload {
    match frame {
        Frame::Call(c) => c.args,
        _ => Payload::undefined(),
    }
}

fn value(frame: Frame<Payload>) -> Payload {
    match frame {
        Frame::Result(ResultFrame { outcome: Ok(p), .. }) => p,
        _ => Payload::undefined(),
    }
}

struct Bench {
    only: Option<String>,
    iters: Option<u64>,
}

impl Bench {
    fn run(&self, name: &str, default_iters: u64, mut f: impl FnMut(u64)) {
        if self
            .only
            .as_deref()
            .is_some_and(|only| !name.contains(only))
        {
            return;
        }
        let iters = self.iters.unwrap_or(default_iters).max(1);
        let start = Instant::now();
        for i in 0..iters {
            f(i);
        }
        let per = start.elapsed() / iters as u32;
        println!("| {name} | {:.0} /s | {per:?} |", 1.0 / per.as_secs_f64());
    }
}

fn main() {
    let bench = Bench {
        only: std::env::var("BENCH_ONLY").ok(),
        iters: std::env::var("BENCH_ITERS")
            .ok()
            .and_then(|n| n.parse().ok()),
    };
    println!("| operation | rate | per op |");
    println!("| --- | --- | --- |");

    let mut enc = Encoder::new();
    let mut out = Vec::with_capacity(256);
    bench.run("encode call frame", 1_000_000, |i| {
        out.clear();
        enc.encode_frame(&call_frame(i as i64), &mut out);
        black_box(&out);
    });

    let mut enc = Encoder::new();
    let calls: Vec<Bytes> = (0..1000)
        .map(|i| Bytes::from(enc.encode_to_vec(&call_frame(i).to_value())))
        .collect();
    let call = |i: u64| &calls[(i % 1000) as usize];
    let mut dec = Decoder::new(Default::default());
    bench.run("decode call frame (eager, Frame<Value>)", 1_000_000, |i| {
        black_box(dec.decode_frame(call(i)).expect("decode"));
    });
    let mut dec = Decoder::new(Default::default());
    bench.run("decode call frame lazily", 1_000_000, |i| {
        black_box(dec.decode_frame_lazy(call(i)).expect("decode"));
    });
    let mut dec = Decoder::new(Default::default());
    bench.run(
        "decode call frame lazily + deserialize params",
        1_000_000,
        |i| {
            let p = args(dec.decode_frame_lazy(call(i)).expect("decode"));
            black_box(p.deserialize::<Params>().expect("params"));
        },
    );

    let big = big_result();
    let mut enc = Encoder::new();
    let bytes = Bytes::from(enc.encode_to_vec(&big.to_value()));
    let n = bytes.len();
    bench.run(
        &format!("encode 1000-row result ({n} bytes)"),
        2_000,
        |_| {
            out.clear();
            enc.encode_frame(&big, &mut out);
            black_box(&out);
        },
    );
    let mut dec = Decoder::new(Default::default());
    dec.decode_frame(&bytes).expect("decode");
    bench.run(
        "decode 1000-row result (eager, Frame<Value>)",
        2_000,
        |_| {
            black_box(dec.decode_frame(&bytes).expect("decode"));
        },
    );
    bench.run("decode 1000-row result lazily", 20_000, |_| {
        black_box(dec.decode_frame_lazy(&bytes).expect("decode"));
    });
    bench.run("decode 1000-row result lazily + to_value", 2_000, |_| {
        let p = value(dec.decode_frame_lazy(&bytes).expect("decode"));
        black_box(p.to_value().expect("value"));
    });
    bench.run(
        "decode 1000-row result lazily + deserialize Vec<Row>",
        2_000,
        |_| {
            let p = value(dec.decode_frame_lazy(&bytes).expect("decode"));
            black_box(p.deserialize::<Vec<Row>>().expect("rows"));
        },
    );
}
