//! Codec throughput: encoding and decoding a typical call frame and a large result, with
//! one long-lived encoder/decoder pair (record shapes cached, as on a connection).
//!
//! Run with: `cargo bench -p bunite-wire --bench codec`
//!
//! `BENCH_ONLY=<substring>` runs only the matching operations (`BENCH_ONLY==<name>`: only the
//! one named exactly) and `BENCH_ITERS=<n>` runs each `n` times instead of its default: that
//! is how `docs/BENCHMARKS.md` counts instructions per operation under
//! `valgrind --tool=callgrind` (two runs of different `n`, the difference divided by the
//! difference in `n`).

use std::hint::black_box;
use std::time::Instant;

use bunite_wire::{
    to_value, Call, CallId, CallMeta, Cancel, CapId, Decoder, DropEntry, DropFrame, Encoder, Frame,
    Outgoing, Payload, Record, ResultFrame, StreamEvent, StreamFrame, Value,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A call's params, as a typed handler declares them.
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // Read only by `black_box`.
struct Params {
    delta: i64,
    note: String,
}

/// One row of the large result, as a typed client (or a typed handler) declares it.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// A call made from inside a handler, with a deadline: every `meta` key but `context`.
fn call_with_meta(i: i64) -> Frame {
    let Frame::Call(mut c) = call_frame(i) else {
        unreachable!("call_frame makes a call");
    };
    c.meta = Some(CallMeta {
        parent_call_id: Some(CallId(7)),
        deadline_ms: Some(5000.0),
        context: None,
    });
    Frame::Call(c)
}

/// A named way to make the `i`th frame of a kind.
type MakeFrame = (&'static str, fn(i64) -> Frame);

/// The small frames of a round trip and of a stream, each with its payload if it has one.
fn small_frames() -> Vec<MakeFrame> {
    vec![
        ("result", |i| {
            Frame::Result(ResultFrame {
                id: CallId(i as u64),
                outcome: Ok(Value::Int(i)),
            })
        }),
        ("stream next", |i| {
            Frame::Stream(StreamFrame {
                id: CallId(3),
                event: StreamEvent::Next(Value::Int(i)),
            })
        }),
        ("stream credit", |_| {
            Frame::Stream(StreamFrame {
                id: CallId(3),
                event: StreamEvent::Credit(Some(8)),
            })
        }),
        ("stream end", |i| {
            Frame::Stream(StreamFrame {
                id: CallId(i as u64),
                event: StreamEvent::End,
            })
        }),
        ("cancel", |i| {
            Frame::Cancel(Cancel {
                id: CallId(i as u64),
                reason: Some("client_cancel".into()),
            })
        }),
        ("drop", |i| {
            Frame::Drop(DropFrame {
                caps: vec![DropEntry {
                    id: CapId(i as u32 % 100 + 2),
                    delta: 1,
                }],
            })
        }),
    ]
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
        let skip = match self.only.as_deref() {
            None => false,
            Some(only) => match only.strip_prefix('=') {
                Some(exact) => name != exact,
                None => !name.contains(only),
            },
        };
        if skip {
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
    // The frames are built outside the measured loop: only the encoding is counted.
    let frames: Vec<Frame> = (0..1000).map(call_frame).collect();
    bench.run("encode call frame", 1_000_000, |i| {
        out.clear();
        enc.encode_frame(&frames[(i % 1000) as usize], &mut out);
        black_box(&out);
    });
    let frames: Vec<Frame> = (0..1000).map(call_with_meta).collect();
    bench.run("encode call frame with meta", 1_000_000, |i| {
        out.clear();
        enc.encode_frame(&frames[(i % 1000) as usize], &mut out);
        black_box(&out);
    });
    for (name, make) in small_frames() {
        let frames: Vec<Frame> = (0..1000).map(make).collect();
        bench.run(&format!("encode {name} frame"), 1_000_000, |i| {
            out.clear();
            enc.encode_frame(&frames[(i % 1000) as usize], &mut out);
            black_box(&out);
        });
    }

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
    let mut dec = Decoder::new(Default::default());
    let received: Vec<Payload> = calls
        .iter()
        .map(|c| args(dec.decode_frame_lazy(c).expect("decode")))
        .collect();
    bench.run("deserialize params", 1_000_000, |i| {
        let p = &received[(i % 1000) as usize];
        black_box(p.deserialize::<Params>().expect("params"));
    });
    let mut enc = Encoder::new();
    let with_meta: Vec<Bytes> = (0..1000)
        .map(|i| Bytes::from(enc.encode_to_vec(&call_with_meta(i).to_value())))
        .collect();
    let mut dec = Decoder::new(Default::default());
    bench.run("decode call frame with meta lazily", 1_000_000, |i| {
        black_box(
            dec.decode_frame_lazy(&with_meta[(i % 1000) as usize])
                .expect("decode"),
        );
    });
    for (name, make) in small_frames() {
        let mut enc = Encoder::new();
        let msgs: Vec<Bytes> = (0..1000)
            .map(|i| Bytes::from(enc.encode_to_vec(&make(i).to_value())))
            .collect();
        let mut dec = Decoder::new(Default::default());
        bench.run(&format!("decode {name} frame lazily"), 1_000_000, |i| {
            black_box(
                dec.decode_frame_lazy(&msgs[(i % 1000) as usize])
                    .expect("decode"),
            );
        });
    }

    let big = big_result();
    let mut enc = Encoder::new();
    let bytes = Bytes::from(enc.encode_to_vec(&big.to_value()));
    let n = bytes.len();
    println!("(the 1000-row result is {n} bytes)");
    bench.run("encode 1000-row result", 2_000, |_| {
        out.clear();
        enc.encode_frame(&big, &mut out);
        black_box(&out);
    });
    // The same rows as a typed handler returns them: built in each iteration (what the
    // handler does either way), then through a `Value` as before, or straight in.
    let typed_rows = || -> Vec<Row> {
        (0..1000i64)
            .map(|i| Row {
                id: i,
                name: format!("row {i}"),
                score: i as f64 * 0.5,
            })
            .collect()
    };
    let result = |value| {
        Frame::Result(ResultFrame {
            id: CallId(1),
            outcome: Ok(value),
        })
    };
    bench.run("encode 1000 typed rows through a Value", 2_000, |_| {
        out.clear();
        let value = to_value(&typed_rows()).expect("rows");
        enc.encode_frame(&result(value), &mut out);
        black_box(&out);
    });
    let result = |value| {
        Frame::Result(ResultFrame {
            id: CallId(1),
            outcome: Ok(value),
        })
    };
    bench.run(
        "encode 1000 typed rows straight in (Outgoing)",
        2_000,
        |_| {
            out.clear();
            let value = Outgoing::typed(typed_rows());
            enc.encode_outgoing_frame_bounded(&result(value), usize::MAX, &mut out)
                .expect("fits");
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
