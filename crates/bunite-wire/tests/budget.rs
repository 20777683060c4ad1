//! The decode budget holds while decoding (PROTOCOL §13.11, `bunite_wire::limits`): a counting
//! global allocator measures the peak of what decoding a hostile message allocates, and it
//! never passes the message's budget.
//!
//! The allocator counts every thread, so the tests take turns (`SERIAL`).

use bunite_wire::{
    DecodeError, DecodeLimits, Decoder, Frame, FrameDecodeError, FrameError, Payload,
};
use bytes::Bytes;
use peak_alloc::PeakAlloc;

/// Counts live bytes and their peak (a reallocation counts both blocks: the worst case).
#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Runs `f` and returns its result and the most it had allocated at once beyond what was
/// live when it started.
/// Held by each test: one measures at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    let out = f();
    (out, ALLOC.peak_usage().saturating_sub(base))
}

const MIB: usize = 1 << 20;

/// A `call` frame `{op, id, target, method, args}` whose args are `args` (raw msgpack).
fn call_with_args(args: &[u8]) -> Vec<u8> {
    let mut m = hex("d4724095 a26f70 a26964 a6746172676574 a66d6574686f64 a461726773");
    m.extend(hex(
        "a463616c6c 01 d4724192a46b696e64a26964 a3636170 02 a16d",
    ));
    m.extend_from_slice(args);
    m
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    hex::decode(s).expect("hex")
}

/// An array header for `n` items.
fn array_of(n: usize) -> Vec<u8> {
    let mut h = vec![0xdd];
    h.extend_from_slice(&u32::try_from(n).expect("n fits u32").to_be_bytes());
    h
}

/// A frame of about `size` bytes whose args are an array of `nil`s.
fn nils(size: usize) -> Vec<u8> {
    let n = size - call_with_args(&array_of(0)).len();
    let mut args = array_of(n);
    args.resize(args.len() + n, 0xc0);
    call_with_args(&args)
}

/// A frame of about `size` bytes whose args are an array of 15-key records of small ints:
/// one definition, then one-byte references (16 bytes a record).
fn records(size: usize) -> Vec<u8> {
    let keys: Vec<u8> = (b'a'..=b'o').flat_map(|k| [0xa1, k]).collect();
    let n = (size - call_with_args(&array_of(0)).len() - keys.len() - 3) / 16;
    let mut args = array_of(n);
    args.extend([0xd4, 0x72, 0x42, 0x9f]);
    args.extend(keys);
    args.extend([1u8; 15]);
    for _ in 1..n {
        args.push(0x42);
        args.extend([1u8; 15]);
    }
    call_with_args(&args)
}

fn args_of(frame: Frame<Payload>) -> Payload {
    match frame {
        Frame::Call(c) => c.args,
        other => panic!("not a call: {other:?}"),
    }
}

fn over_budget<T: std::fmt::Debug>(r: Result<T, FrameDecodeError>) {
    assert!(
        matches!(r, Err(FrameDecodeError::Decode(DecodeError::OverBudget))),
        "{r:?}"
    );
}

#[test]
fn decoding_never_allocates_past_the_budget() {
    let _turn = serial();
    let limits = DecodeLimits::default();
    assert_eq!(limits.decode_budget(64 * MIB), 196 * MIB);

    // 64 MiB of nils (4.1 GiB as `Value`s): refused while checking, with almost nothing
    // allocated; the eager route refuses it as early.
    let msg = Bytes::from(nils(64 * MIB));
    let budget = limits.decode_budget(msg.len());
    let (r, peak) = peak_of(|| Decoder::new(limits.clone()).decode_frame_lazy(&msg));
    over_budget(r);
    assert!(peak < MIB, "nils: {peak} bytes at the peak");
    let (r, peak) = peak_of(|| Decoder::new(limits.clone()).decode(&msg));
    assert_eq!(r, Err(DecodeError::OverBudget));
    assert!(peak < MIB, "nils, eagerly: {peak} bytes at the peak");

    // 64 MiB of small 15-key records (over 12 GiB as `Value`s before keys were shared).
    let msg = Bytes::from(records(64 * MIB));
    let (r, peak) = peak_of(|| Decoder::new(limits.clone()).decode_frame_lazy(&msg));
    over_budget(r);
    assert!(peak < MIB, "records: {peak} bytes at the peak");
    let (r, peak) = peak_of(|| Decoder::new(limits.clone()).decode(&msg));
    assert_eq!(r, Err(DecodeError::OverBudget));
    assert!(peak <= budget, "records, eagerly: {peak} bytes at the peak");

    // What the check admits materializes within the budget: 64 KiB of records (3.5 MiB as
    // values), and 62.5 MiB of long strings.
    let mut strings = array_of(1000);
    for _ in 0..1000 {
        strings.extend([0xdb, 0, 1, 0, 0]);
        strings.resize(strings.len() + 65536, b'x');
    }
    for msg in [records(64 * 1024), call_with_args(&strings)] {
        let msg = Bytes::from(msg);
        let budget = limits.decode_budget(msg.len());
        let (value, peak) = peak_of(|| {
            let frame = Decoder::new(limits.clone()).decode_frame_lazy(&msg);
            args_of(frame.expect("admitted")).to_value()
        });
        assert!(value.is_ok());
        drop(value);
        assert!(peak <= budget, "{peak} bytes at the peak, budget {budget}");
        let (value, peak) = peak_of(|| Decoder::new(limits.clone()).decode(&msg));
        assert!(value.is_ok());
        drop(value);
        assert!(
            peak <= budget,
            "eagerly: {peak} bytes at the peak, budget {budget}"
        );
    }
}

#[test]
fn typed_decoding_charges_what_it_builds() {
    let _turn = serial();
    // 100k nils cost 3.2 MB as values: admitted. As `Option<[u64; 8]>`s they would take
    // 7.2 MB, over the 4.3 MB budget: a clear error, not an allocation.
    let msg = Bytes::from(nils(100_000));
    let args = args_of(
        Decoder::new(DecodeLimits::default())
            .decode_frame_lazy(&msg)
            .unwrap(),
    );
    let err = args.deserialize::<Vec<Option<[u64; 8]>>>().unwrap_err();
    assert!(err.message().contains("budget"), "{err}");
    let n = 100_000 - call_with_args(&array_of(0)).len();
    assert_eq!(args.deserialize::<Vec<()>>().map(|v| v.len()), Ok(n));
}

fn hello(features: &[&str], origin: &str) -> Result<Frame<Payload>, FrameDecodeError> {
    Decoder::new(DecodeLimits::default()).decode_frame_lazy(&hello_msg(features, origin))
}

/// A `hello` `{op, v, features, origin}` with these features and origin.
fn hello_msg(features: &[&str], origin: &str) -> Bytes {
    let text = |s: &str| {
        let mut out = vec![0xdb];
        out.extend(u32::try_from(s.len()).unwrap().to_be_bytes());
        out.extend(s.as_bytes());
        out
    };
    let mut m = vec![0xd4, 0x72, 0x40, 0x94];
    for key in ["op", "v", "features", "origin"] {
        m.extend(text(key));
    }
    m.extend(text("hello"));
    m.push(0x01);
    m.extend(array_of(features.len()));
    for f in features {
        m.extend(text(f));
    }
    m.extend(text(origin));
    Bytes::from(m)
}

#[test]
fn a_hello_is_bounded() {
    let _turn = serial();
    let invalid = |field| {
        Err(FrameDecodeError::Frame(FrameError::Invalid {
            op: "hello",
            field,
        }))
    };
    let many: Vec<String> = (0..65).map(|i| format!("f{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert!(matches!(hello(&many[..64], "o"), Ok(Frame::Hello(h)) if h.features.len() == 64));
    assert_eq!(hello(&many, "o").map(|_| ()), invalid("features"));
    let long = "x".repeat(4096);
    assert!(matches!(hello(&[&long], &long), Ok(Frame::Hello(_))));
    assert_eq!(
        hello(&[&"x".repeat(4097)], "o").map(|_| ()),
        invalid("features")
    );
    assert_eq!(
        hello(&["f"], &"o".repeat(4097)).map(|_| ()),
        invalid("origin")
    );
    // A large hello of one-character features is refused before anything is kept.
    let msg = hello_msg(&vec!["a"; 1_000_000], "o");
    let (r, peak) = peak_of(|| Decoder::new(DecodeLimits::default()).decode_frame_lazy(&msg));
    assert!(r.is_err());
    assert!(peak < 1024, "{peak} bytes at the peak");
}

/// A `call` whose args are one record defined in `slot` with `keys` distinct keys of `len`
/// bytes each (`str8`), every value `nil`.
fn wide_record(slot: u8, keys: usize, len: usize) -> Vec<u8> {
    let mut args = vec![0xd4, 0x72, slot];
    args.extend(array_of(keys));
    for k in 0..keys {
        args.extend([0xd9, u8::try_from(len).expect("str8")]);
        args.extend(format!("{slot:02x}{k:0>width$}", width = len - 2).bytes());
    }
    args.resize(args.len() + keys, 0xc0);
    call_with_args(&args)
}

/// Record definitions stay in their slots across messages (PROTOCOL §3.3), so what they
/// keep is bounded apart from each message's budget: before, 62 messages of 51.6 MB, each
/// within its budget, made one decoder keep 111.8 MB apiece (6.9 GB).
#[test]
fn the_record_table_keeps_at_most_its_limit_across_messages() {
    let _turn = serial();
    let limits = DecodeLimits::default();
    let max = limits.max_record_table_bytes;
    assert_eq!(max, MIB);
    let mut dec = Decoder::new(limits.clone());
    let base = ALLOC.current_usage();

    // 1,000 keys of 100 bytes: about 260 KB kept each (the keys, their offsets and texts,
    // and a shared copy of each long key), well within one message's budget.
    let mut accepted = 0;
    let refused = loop {
        let slot = 0x42 + accepted;
        let msg = Bytes::from(wide_record(slot, 1_000, 100));
        match dec.decode_frame_lazy(&msg) {
            Ok(frame) => drop(frame),
            Err(e) => break e,
        }
        accepted += 1;
        let kept = ALLOC.current_usage().saturating_sub(base);
        assert!(
            kept <= max,
            "{kept} bytes kept after {accepted} definitions"
        );
        assert!(accepted < 10, "ten wide definitions accepted");
    };
    // Each keeps at least its 100,000 bytes of keys, so at most ten fit in 1 MiB; a table
    // allowed to grow would have taken all ten of the loop.
    assert!((2..=10).contains(&accepted), "{accepted} accepted");
    match refused {
        FrameDecodeError::Decode(DecodeError::RecordTableFull { needed, max: m }) => {
            assert_eq!(m, max);
            assert!(needed > max, "{needed}");
        }
        other => panic!("expected RecordTableFull, got {other:?}"),
    }
    assert!(
        refused.to_string().contains("max_record_table_bytes"),
        "{refused}"
    );

    // Redefining a slot gives back what its old shape kept: the same wide shape sent again
    // and again into one slot never fills the table.
    let mut dec = Decoder::new(limits.clone());
    for _ in 0..20 {
        let msg = Bytes::from(wide_record(0x42, 1_000, 100));
        dec.decode_frame_lazy(&msg)
            .expect("one wide slot, redefined");
    }

    // The eager route holds the same bound.
    let mut dec = Decoder::new(limits);
    let mut eager = Vec::new();
    for slot in 0x42..0x50 {
        eager.push(dec.decode(&wide_record(slot, 1_000, 100)).map(drop));
    }
    assert_eq!(eager.iter().filter(|r| r.is_ok()).count(), 3, "{eager:?}");
    assert!(matches!(eager[3], Err(DecodeError::RecordTableFull { .. })));
}

/// The encoder remembers the shapes it defines (PROTOCOL §3.3), but not one whose keys take
/// more than 64 KiB (a record used as a dictionary): a connection that sends such records,
/// say a handler echoing what a peer sent, keeps no copies of their keys.
#[test]
fn the_encoder_keeps_no_copy_of_a_dictionary_sized_shape() {
    let _turn = serial();
    let mut enc = bunite_wire::Encoder::new();
    let wide = |n: usize| -> bunite_wire::Value {
        (0..1_000)
            .map(|k| (format!("{n:02}{k:0>98}"), bunite_wire::Value::Null))
            .collect::<bunite_wire::Record>()
            .into()
    };
    // Warm up: the encoder's own tables for small shapes.
    drop(enc.encode_to_vec(&wide(99)));
    let base = ALLOC.current_usage();
    for n in 0..32 {
        let value = wide(n);
        let bytes = enc.encode_to_vec(&value);
        assert_eq!(bytes[..3], [0xd4, 0x72, 0x40 + ((n as u8 + 1) % 32)]);
        drop((value, bytes));
    }
    // Each of those shapes is 100,000 bytes of keys: kept, the 32 would take 3.2 MB.
    let kept = ALLOC.current_usage().saturating_sub(base);
    assert!(kept < 64 * 1024, "{kept} bytes kept by the encoder");
}

/// A serde error quotes the peer's text (serde's "invalid type: string \"…\"", a field or
/// variant name it does not know), escaped: a control character takes five bytes as `\u{1}`.
/// Such a message goes back to the peer as the call's `invalid_argument`, so it must not
/// cost more than the string it came in: the message keeps at most 1 KiB of it, and
/// reading the string as a number or a record never allocates past the message's budget.
#[test]
fn a_serde_error_quoting_the_peers_text_is_cut() {
    let _turn = serial();
    let limits = DecodeLimits::default();
    let len = 16 * MIB;
    let mut args = vec![0xdb];
    args.extend_from_slice(&u32::try_from(len).expect("fits").to_be_bytes());
    args.resize(args.len() + len, 0x01);
    let msg = Bytes::from(call_with_args(&args));
    let budget = limits.decode_budget(msg.len());
    let args = args_of(
        Decoder::new(limits)
            .decode_frame_lazy(&msg)
            .expect("admitted"),
    );

    let (err, peak) = peak_of(|| args.deserialize::<u64>().unwrap_err());
    assert!(err.message().len() <= 1100, "{} bytes", err.message().len());
    assert!(
        err.message().starts_with("invalid type: string \"\\u{1}"),
        "{}",
        &err.message()[..40]
    );
    assert!(err.message().ends_with('…'), "{}", err.message());
    assert!(
        peak <= budget,
        "as u64: {peak} bytes at the peak, budget {budget}"
    );

    let (err, peak) = peak_of(|| args.deserialize::<bunite_wire::Record>().unwrap_err());
    assert!(err.message().len() <= 1100, "{} bytes", err.message().len());
    assert!(
        peak <= budget,
        "as a record: {peak} bytes at the peak, budget {budget}"
    );

    // Short texts are quoted whole, as before.
    let short = Bytes::from(call_with_args(&hex("a3616263")));
    let args = args_of(
        Decoder::new(DecodeLimits::default())
            .decode_frame_lazy(&short)
            .unwrap(),
    );
    assert_eq!(
        args.deserialize::<u64>().unwrap_err().message(),
        "invalid type: string \"abc\", expected u64"
    );
}
