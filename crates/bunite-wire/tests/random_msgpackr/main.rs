//! A seeded random differential of our codec against msgpackr, the codec of the 0.10
//! TypeScript peer, configured as the connection configures it (PROTOCOL §3;
//! `js/src/codec.ts`).
//!
//! Each seed is one connection: random values and whole frames (`gen`), each encoded by one
//! stateful [`Encoder`] as a connection sends them, go to node (`js/test/msgpackr_echo.ts`),
//! where one stateful msgpackr decoder decodes them and one stateful msgpackr encoder
//! encodes what it decoded again. For every message:
//!
//! 1. msgpackr decodes our bytes to the value we sent: its canonical text of what it
//!    decoded equals `model::view` of ours.
//! 2. Our stateful decoder decodes msgpackr's bytes to that value as msgpackr holds it
//!    (`model::normalize`); a frame decodes, on a second decoder fed the same messages, to
//!    the frame we sent.
//! 3. The bytes match: a second stateful `Encoder`, fed the values as msgpackr holds them,
//!    writes msgpackr's bytes exactly, record definitions and references included.
//!
//! Where the value we send is not one JavaScript can hold, (3) compares our encoding of the
//! value msgpackr holds, not of ours: PROTOCOL §3.1 has us send every `Float` as float64
//! (`Float(3.0)` is `cb 40 08 …`, msgpackr's `3` is `03`), and JavaScript has one number type;
//! `model` says what else differs and why.
//!
//! It needs node 20+ and the web client built (`npm ci && npm run build` in `js/`, as CI
//! does before the tests). Without them it prints a note saying what it skipped and how to
//! run it, and passes, so that README's `cargo test` works with Rust alone; with
//! `BUNITE_REQUIRE_JS=1` (CI sets it) it fails instead. A `js/dist` older than the script
//! or `codec.ts` fails either way. `BUNITE_OPS_SEED=n` runs seed `n` alone,
//! `BUNITE_OPS_SEEDS=n` seeds `0..n`.

mod frames;
mod gen;
mod model;
mod node;

use bunite_wire::{DecodeLimits, Decoder, Encoder, Frame, Record, Value};

/// Seeds CI runs: each is one connection of 10 to 50 messages, 100 to 200 or 500 to 700.
const CI_SEEDS: u64 = 40;

/// The seeds of a run: `BUNITE_OPS_SEED` alone, `0..BUNITE_OPS_SEEDS`, or else `0..CI_SEEDS`.
fn seeds() -> Vec<u64> {
    match (
        std::env::var("BUNITE_OPS_SEED"),
        std::env::var("BUNITE_OPS_SEEDS"),
    ) {
        (Ok(seed), _) => vec![seed.parse().expect("BUNITE_OPS_SEED: a number")],
        (_, Ok(n)) => (0..n.parse().expect("BUNITE_OPS_SEEDS: a number")).collect(),
        _ => (0..CI_SEEDS).collect(),
    }
}

/// Names the seed of a case that fails (while it lives), for `BUNITE_OPS_SEED`.
struct SeedReport(u64);

impl Drop for SeedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "random_msgpackr: seed {} failed; replay it with BUNITE_OPS_SEED={}",
                self.0, self.0
            );
        }
    }
}

/// Our side of one connection, both directions.
struct Ours {
    /// Encodes what we send, as a connection does.
    encoder: Encoder,
    /// Encodes the values as msgpackr holds them, for the byte comparison; made to forget
    /// its shapes when msgpackr does (`model::Transitions`).
    normal: Encoder,
    /// When msgpackr forgets its shapes.
    transitions: model::Transitions,
    /// How often it did.
    forgot: usize,
    /// Decodes msgpackr's bytes as values.
    values: Decoder,
    /// Decodes msgpackr's bytes as frames where we sent a frame.
    frames: Decoder,
    /// In a connection of frames only, decodes msgpackr's bytes as a connection receives
    /// them ([`Decoder::decode_frame_lazy`]).
    lazy: Option<Decoder>,
}

#[test]
fn our_codec_and_msgpackr_agree_on_random_values_and_frames() {
    let Some(mut peer) = node::Peer::start() else {
        return;
    };
    let (mut messages, mut forgot) = (0, 0);
    let seeds = seeds();
    for &seed in &seeds {
        let _report = SeedReport(seed);
        let (n, f) = connection(seed, &mut peer);
        messages += n;
        forgot += f;
    }
    eprintln!(
        "random_msgpackr: {} seeds, {messages} messages, msgpackr forgot its shapes {forgot} times",
        seeds.len()
    );
}

/// One connection's messages; returns how many, and how often msgpackr forgot its shapes.
fn connection(seed: u64, peer: &mut node::Peer) -> (usize, usize) {
    peer.new_connection();
    let mut gen = gen::Gen::new(seed);
    let mut ours = Ours {
        encoder: Encoder::new(),
        normal: Encoder::new(),
        transitions: model::Transitions::default(),
        forgot: 0,
        values: Decoder::new(DecodeLimits::default()),
        frames: Decoder::new(DecodeLimits::default()),
        lazy: None,
    };
    let n = gen.messages();
    let frames_only = gen.rng.chance(25);
    if frames_only {
        ours.lazy = Some(Decoder::new(DecodeLimits::default()));
    }
    for i in 0..n {
        if frames_only || gen.rng.chance(25) {
            let frame = gen.frame();
            let mut bytes = Vec::new();
            ours.encoder.encode_frame(&frame, &mut bytes);
            message(&mut ours, peer, i, &frame.to_value(), &bytes, Some(&frame));
        } else {
            let value = gen.message();
            let bytes = ours.encoder.encode_to_vec(&value);
            message(&mut ours, peer, i, &value, &bytes, None);
        }
    }
    (n, ours.forgot)
}

/// One message of `sent`, whose encoding was `bytes` (and which is `frame`, if a frame).
fn message(
    ours: &mut Ours,
    peer: &mut node::Peer,
    i: usize,
    sent: &Value,
    bytes: &[u8],
    frame: Option<&Frame>,
) {
    let context = || {
        format!(
            "message {i}: {}\n  our bytes: {}",
            clip(&format!("{sent:?}")),
            clip(&hex::encode(bytes))
        )
    };
    let (text, theirs) = peer.echo(bytes);

    // (1) msgpackr decodes our bytes to what we sent.
    let expected = model::view(sent);
    assert!(
        text == expected,
        "msgpackr decoded our bytes to another value ({}):\n  msgpackr: {}\n  expected: {}",
        context(),
        clip_from(&text, &expected),
        clip_from(&expected, &text),
    );

    // (3) msgpackr's bytes are ours for the value it holds, in the same encoder state.
    let normal = model::normalize(sent);
    let mine = ours.normal.encode_to_vec(&normal);
    assert!(
        mine == theirs,
        "msgpackr encoded {} otherwise ({}):\n  msgpackr: {}\n  ours:     {}",
        clip(&format!("{normal:?}")),
        context(),
        clip_from(&hex::encode(&theirs), &hex::encode(&mine)),
        clip_from(&hex::encode(&mine), &hex::encode(&theirs)),
    );
    if ours.transitions.packed(&normal) {
        forget(&mut ours.normal);
        ours.forgot += 1;
    }

    // (2) our decoder reads msgpackr's bytes as msgpackr's value.
    let back = ours
        .values
        .decode(&theirs)
        .unwrap_or_else(|e| panic!("our decoder refused msgpackr's bytes: {e} ({})", context()));
    assert!(
        model::same(&back, &normal),
        "our decoder read msgpackr's bytes as another value ({}):\n  read:     {}\n  expected: {}",
        context(),
        clip(&format!("{back:?}")),
        clip(&format!("{normal:?}")),
    );
    match frame {
        Some(frame) => {
            let back = ours.frames.decode_frame(&theirs).unwrap_or_else(|e| {
                panic!("our decoder refused msgpackr's frame: {e} ({})", context())
            });
            same_frame(&back, frame, &context);
            if let Some(lazy) = &mut ours.lazy {
                let back = lazy
                    .decode_frame_lazy(&bytes::Bytes::from(theirs.clone()))
                    .and_then(|f| Ok(f.try_map_payload(|p| p.into_value())?))
                    .unwrap_or_else(|e| {
                        panic!(
                            "decode_frame_lazy refused msgpackr's frame: {e} ({})",
                            context()
                        )
                    });
                same_frame(&back, frame, &context);
            }
        }
        None => {
            ours.frames.decode(&theirs).expect("decoded once above");
        }
    }
}

fn same_frame(back: &Frame, sent: &Frame, context: &dyn Fn() -> String) {
    let (got, want) = (format!("{back:?}"), format!("{sent:?}"));
    assert!(
        back == sent,
        "our decoder read msgpackr's frame as another ({}):\n  read: {}\n  sent: {}",
        context(),
        clip_from(&got, &want),
        clip_from(&want, &got),
    );
}

/// Makes `encoder` forget every shape it remembers but keep its next id, as msgpackr does
/// when it drops its trie: a fresh encoder that has defined as many shapes of keys no
/// value has (a NUL in each) as it takes to reach that id.
fn forget(encoder: &mut Encoder) {
    let probe = Value::Record(Record::new().with("\0probe", Value::Null));
    let bytes = encoder.encode_to_vec(&probe);
    assert_eq!(bytes[..2], [0xd4, 0x72], "a new shape is defined");
    let mut fresh = Encoder::new();
    for i in 0x40..bytes[2] {
        let filler = Record::new().with(format!("\0filler {i}"), Value::Null);
        fresh.encode_to_vec(&Value::Record(filler));
    }
    *encoder = fresh;
}

/// At most 600 characters of `s`.
fn clip(s: &str) -> String {
    match s.char_indices().nth(600) {
        Some((at, _)) => format!("{}… ({} bytes)", &s[..at], s.len()),
        None => s.to_owned(),
    }
}

/// `a` from a little before where it first differs from `b`.
fn clip_from(a: &str, b: &str) -> String {
    let at = a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    let mut start = at.saturating_sub(60);
    while !a.is_char_boundary(start) {
        start -= 1;
    }
    format!("(from byte {start}) {}", clip(&a[start..]))
}
