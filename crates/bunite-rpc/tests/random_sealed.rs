//! Seeded random man-in-the-middle on the sealed pipe (PROTOCOL §2, §11;
//! `transport::sealed`'s docs; `docs/RELIABILITY.md`, "The sealed pipe against a man in the
//! middle").
//!
//! Each case is one seed: two `Connection`s, A and B, over the sealed pipe with one key (over
//! the in-memory transport in one test, over loopback TCP byte streams in the other), with a
//! relay in the middle that holds the inner transports' other ends and passes the sealed
//! messages whole. The relay has the key, so it opens every genuine message and decodes it
//! with a decoder of its own per direction (it sees which call each message carries, and the
//! goaway each side sends), and at random messages it does one or more of: flip a bit
//! anywhere, truncate, append junk, duplicate at once or later (within the replay window, at
//! its very edge, or beyond it), reflect a message back to its sender, inject a message
//! recorded between two other connections with the same key, swap two messages, drop one.
//! Both peers serve the same cap and call each other meanwhile: unary echoes, streams with
//! credit (some of 1,100 values, to push a duplicate out of the window), caps returned,
//! called and released, and a call each that waits until the connection ends (its error
//! names why this side closed).
//!
//! What must hold (the pipe's docs): the relay runs a model of the receiving pipe's rules
//! (its form: version, length, authentication; then our own salt, the window of the last
//! `REPLAY_WINDOW` IVs, the next counter under the last salt; a refusal is final) over what
//! it delivers, and its hand-made expectation for a tampered message, a duplicate within the
//! window and a reflection must agree with it. A message the model refuses (tampered,
//! truncated, padded, duplicated within the window or at its very edge, reflected, or any
//! message after one of ours dropped, swapped or replayed from beyond the window) closes
//! the connection that receives it, with a goaway `invalid_argument` whose message is the
//! pipe's (`OpenError`'s text), and the same text as the receiver's own disconnect cause;
//! no call carried by it or by anything after it in that direction runs (the handlers log
//! the tags they ran); the peer then closes on the goaway. Every handler runs at most once;
//! every answer a call got is the right one; a call fails only once its connection has
//! closed; with no fault delivered every call is answered and both connections are clean.
//! Nothing panics and nothing hangs (every wait is bounded); after each case both
//! connections are closed and idle, the relay has ended, and the harness finds no task left.
//!
//! What the docs do not promise, and the test only counts (the run's summary line): a
//! message recorded on another connection with the same key opens, and what the codec then
//! makes of it (refused, ignored, an answer taken for one of ours) is not defined; a message
//! that follows it is not checked against the counter. A message dropped (or held for a
//! swap) with nothing after it in its direction is not noticed by anyone: its call waits
//! out the operation's bound.
//!
//! `BUNITE_OPS_SEEDS=N` runs seeds `0..N` (or `A..B`) instead of [`CI_SEEDS`];
//! `BUNITE_OPS_SEED=S` runs seed S alone (a failing case prints its seed);
//! `BUNITE_MITM_TRACE=1` prints each case's draw and what the relay delivered other than
//! the messages as sent.
#![cfg(all(feature = "sealed", feature = "byte-stream"))]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::memory;
use bunite_rpc::transport::sealed::{self, Key, OpenError, Sealed, REPLAY_WINDOW};
use bunite_rpc::transport::{
    MaxBytes, MessageSink, MessageSinkExt, MessageSource, MessageSourceExt, Transport,
};
use bunite_rpc::wire::{DecodeLimits, Decoder, Frame};
use bunite_rpc::{
    CallContext, CapDef, CapDefRef, Client, Code, Connection, Disconnect, Error, MethodDef, Record,
    Returns, Value,
};
use bytes::Bytes;
use common::seeded::{each_seed, Rng};
use common::*;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

/// Seeds of a plain run, per test.
const CI_SEEDS: u64 = 24;

/// How long a whole case may take.
const CASE_BOUND: Duration = Duration::from_secs(120);
/// How long one operation may wait for its answer: past it, a call that was not cut off by
/// a close is lost (allowed only after a fault the docs promise nothing for).
const OP_BOUND: Duration = Duration::from_secs(3);
/// How long anything that must happen may take.
const LIVENESS: Duration = Duration::from_secs(30);

/// Tags: A's calls, B's, the foreign pair's; the waiting call of each side; a child's call.
const A_TAGS: i64 = 1_000_000;
const B_TAGS: i64 = 2_000_000;
const FOREIGN_TAGS: i64 = 3_000_000;
const SENTINEL: i64 = 900_000;
const CHILD: i64 = 500_000;

/// Values of a stream long enough to push a message out of the replay window.
const BULK: i64 = 1_100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memory,
    Tcp,
}

#[test]
fn a_random_man_in_the_middle_on_sealed_memory() {
    run_seeds(Kind::Memory, "a_random_man_in_the_middle_on_sealed_memory");
}

#[test]
fn a_random_man_in_the_middle_on_sealed_tcp() {
    run_seeds(Kind::Tcp, "a_random_man_in_the_middle_on_sealed_tcp");
}

/// What the cases of a run reached, summed (the summary line and the reach checks).
#[derive(Debug, Default)]
struct Reach {
    /// Faults the pipe must refuse, delivered.
    refused: AtomicUsize,
    /// Connections closed by the pipe's refusal (the goaway seen with its text).
    closed_by_pipe: AtomicUsize,
    /// Replays within the window (at its edge included) delivered.
    replays: AtomicUsize,
    /// Reflections delivered.
    reflections: AtomicUsize,
    /// Messages refused out of sequence (one of ours dropped, swapped or replayed from
    /// beyond the window before it).
    out_of_sequence: AtomicUsize,
    /// Cases with no fault delivered (every call answered, both clean).
    clean_cases: AtomicUsize,
    /// Cases with a fault delivered that the pipe does not refuse (yet): a foreign message,
    /// a message dropped or held for a swap.
    unpromised: AtomicUsize,
    /// Of those, cases where a connection closed on a protocol error all the same.
    unpromised_closed: AtomicUsize,
    /// Foreign calls run.
    foreign_ran: AtomicUsize,
    /// Operations answered wrongly (a foreign answer taken for ours).
    wrong: AtomicUsize,
    /// Operations that got no answer within [`OP_BOUND`] on an open connection.
    lost: AtomicUsize,
}

fn run_seeds(kind: Kind, test: &'static str) {
    let reach = Arc::new(Reach::default());
    let seeds = each_seed(test, CI_SEEDS, CASE_BOUND, run, |seed| {
        let reach = Arc::clone(&reach);
        async move { case(kind, seed, &reach).await }
    });
    eprintln!("{test}: {seeds} seeds, {reach:?}");
    let n = |a: &AtomicUsize| a.load(Ordering::Relaxed);
    if seeds >= CI_SEEDS as usize {
        assert!(n(&reach.closed_by_pipe) > 0, "{reach:?}");
        assert!(n(&reach.replays) > 0, "{reach:?}");
        assert!(n(&reach.reflections) > 0, "{reach:?}");
        assert!(n(&reach.out_of_sequence) > 0, "{reach:?}");
        assert!(n(&reach.clean_cases) > 0, "{reach:?}");
        assert!(n(&reach.unpromised) > 0, "{reach:?}");
    }
}

// ---- The cap both sides serve ----

/// Tags each side's handlers ran, with how many times.
type RanLog = Arc<Mutex<HashMap<i64, u32>>>;

fn mitm_def() -> Arc<CapDef> {
    CapDef::builder("test.mitm")
        .method(MethodDef::call("echo"))
        .method(MethodDef::call("wait"))
        .method(MethodDef::stream("ticks").initial_credit(8))
        .method(MethodDef::call("child").returns(Returns::Cap(CapDefRef::Lazy(node_def))))
        .build()
}

fn node_def() -> Arc<CapDef> {
    CapDef::builder("test.mitm.node")
        .method(MethodDef::call("tag"))
        .build()
}

fn tag_of(args: &Value) -> i64 {
    args.as_record()
        .and_then(|r| r.get("tag"))
        .and_then(Value::as_integer)
        .unwrap_or(-1) as i64
}

fn ran(log: &RanLog, tag: i64) {
    *log.lock().unwrap().entry(tag).or_default() += 1;
}

fn mitm_impl(log: RanLog) -> Arc<dyn bunite_rpc::CapImpl> {
    let (l1, l2, l3, l4) = (log.clone(), log.clone(), log.clone(), log);
    DynCap::new()
        .call("echo", move |args: Value, _| {
            ran(&l1, tag_of(&args));
            async move { Ok(args) }
        })
        .call("wait", move |args: Value, ctx: CallContext| {
            ran(&l2, tag_of(&args));
            async move {
                ctx.cancelled().await;
                Ok(Value::Undefined)
            }
        })
        .stream("ticks", move |args: Value, _| {
            ran(&l3, tag_of(&args));
            let n = args
                .as_record()
                .and_then(|r| r.get("n"))
                .and_then(Value::as_integer)
                .unwrap_or(0) as i64;
            Ok(futures::stream::iter((0..n).map(|i| Ok(Value::from(i)))).boxed())
        })
        .call("child", move |args: Value, _| {
            let tag = tag_of(&args);
            ran(&l4, tag);
            let log = l4.clone();
            let imp = DynCap::new()
                .call("tag", move |args: Value, _| {
                    ran(&log, tag_of(&args));
                    async move { Ok(Value::from(tag)) }
                })
                .build();
            async move { Ok(bunite_rpc::ExportedCap::new(node_def(), imp)) }
        })
        .build()
}

fn tagged(tag: i64) -> Value {
    Value::Record(Record::new().with("tag", tag))
}

fn tagged_with(tag: i64, key: &'static str, v: impl Into<Value>) -> Value {
    Value::Record(Record::new().with("tag", tag).with(key, v.into()))
}

// ---- What a case draws ----

#[derive(Debug, Clone, Copy)]
enum Op {
    /// `echo {tag, pad}`: its arguments back.
    Echo { tag: i64, pad: usize },
    /// `ticks {tag, n}`: 0..n, consumed `pace` ms apart (0: at once).
    Ticks { tag: i64, n: i64, pace: u64 },
    /// `child {tag}`, then the child's `tag {tag + CHILD}`, then the child released.
    Child { tag: i64 },
}

#[derive(Debug, Clone)]
struct Plan {
    /// (pause before, awaited before the next, what).
    ops: Vec<(u64, bool, Op)>,
}

/// A direction of the relay: towards B (A's messages) or towards A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dir {
    ToB,
    ToA,
}

impl Dir {
    fn back(self) -> Dir {
        match self {
            Dir::ToB => Dir::ToA,
            Dir::ToA => Dir::ToB,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Flip bit `bit` of byte `byte % len`.
    Flip { byte: u64, bit: u8 },
    /// Keep the first `keep % len` bytes.
    Truncate { keep: u64 },
    /// Append `n` random bytes.
    Junk { n: usize },
    /// Deliver it twice in a row.
    DupNow,
    /// Deliver it again after `after` more messages in its direction.
    DupLater { after: usize },
    /// Send a copy back to its sender, and forward it or not.
    Reflect { forward: bool },
    /// Deliver a message recorded between two other connections with the same key first.
    Foreign { which: u64 },
    /// Deliver it after the next one.
    Swap,
    /// Never deliver it.
    Drop,
}

#[derive(Debug)]
struct Setup {
    a: Plan,
    b: Plan,
    /// (direction, index of the message in it, what).
    faults: Vec<(Dir, usize, Fault)>,
    foreign: bool,
}

fn draw(rng: &mut Rng) -> Setup {
    let plan = |rng: &mut Rng, base: i64, bulk: bool| {
        let n = 2 + rng.below(8);
        let mut ops = Vec::new();
        for i in 0..n as i64 {
            let tag = base + i * 2;
            let op = match rng.below(6) {
                0..=2 => Op::Echo {
                    tag,
                    pad: [0, 10, 300, 5_000][rng.below(4) as usize],
                },
                3 | 4 => Op::Ticks {
                    tag,
                    n: rng.below(40) as i64,
                    pace: [0, 0, 1, 3][rng.below(4) as usize],
                },
                _ => Op::Child { tag },
            };
            ops.push((rng.below(4), rng.chance(50), op));
        }
        if bulk {
            ops.push((
                0,
                true,
                Op::Ticks {
                    tag: base + 999,
                    n: BULK,
                    pace: 0,
                },
            ));
        }
        Plan { ops }
    };
    let window = rng.chance(20);
    let a = plan(rng, A_TAGS, window);
    let b = plan(rng, B_TAGS, false);
    let foreign = rng.chance(30);
    let mut faults = Vec::new();
    if window {
        // A duplicate of an early message towards A after B's answers to A's long stream:
        // at the window's edge (still refused) or beyond it (nothing promised).
        let after = match rng.below(3) {
            0 => REPLAY_WINDOW - 1,
            1 => REPLAY_WINDOW,
            _ => REPLAY_WINDOW + 20,
        };
        faults.push((
            Dir::ToA,
            1 + rng.below(6) as usize,
            Fault::DupLater { after },
        ));
    } else if !rng.chance(10) {
        for _ in 0..1 + rng.below(3) {
            let dir = if rng.chance(50) { Dir::ToA } else { Dir::ToB };
            let at = match rng.below(4) {
                0 => rng.below(4),
                _ => rng.below(40),
            } as usize;
            let fault = match rng.below(if foreign { 11 } else { 10 }) {
                0 => Fault::Flip {
                    byte: rng.next(),
                    bit: rng.below(8) as u8,
                },
                1 => Fault::Flip {
                    byte: rng.below(13),
                    bit: rng.below(8) as u8,
                },
                2 => Fault::Truncate { keep: rng.next() },
                3 => Fault::Junk {
                    n: 1 + rng.below(64) as usize,
                },
                4 => Fault::DupNow,
                5 => Fault::DupLater {
                    after: 1 + rng.below(30) as usize,
                },
                6 => Fault::Reflect {
                    forward: rng.chance(50),
                },
                7 => Fault::Swap,
                8 => Fault::Drop,
                _ => Fault::Foreign { which: rng.next() },
            };
            faults.push((dir, at, fault));
        }
    }
    Setup {
        a,
        b,
        faults,
        foreign,
    }
}

// ---- The relay ----

/// What the relay delivered to one side, in order.
#[derive(Debug, Clone)]
enum Delivery {
    /// A genuine message, as sent: its index in its direction.
    Original(usize),
    /// A message the pipe must refuse, with the refusal's text; the original's index if it
    /// carries one of this direction's messages.
    Refused { reason: String, of: Option<usize> },
    /// A message the docs promise nothing for (what it was), its original's index if any.
    Unpromised {
        what: &'static str,
        of: Option<usize>,
    },
}

/// What the relay saw of one direction.
#[derive(Debug, Default)]
struct Seen {
    /// Per genuine message: the tags of the calls it carries.
    tags: Vec<Vec<i64>>,
    /// The goaway its sender sent, if any: (reason, error code, error message).
    goaway: Option<(Option<String>, Option<String>, Option<String>)>,
    /// Delivered towards this direction's receiver.
    delivered: Vec<Delivery>,
}

/// An [`Delivery::Unpromised`] that sent nothing: a message dropped, one held for a swap.
const DROPPED: &str = "drop";
const HELD: &str = "held for a swap";
/// A message recorded between two other connections with the same key.
const FOREIGN: &str = "foreign";

/// Messages to deliver, each with what it is.
type Deliveries = Vec<(Bytes, Delivery)>;

type Sink = Box<dyn MessageSink>;
type Source = Box<dyn MessageSource>;

/// The relay's ends of one link: what a connection sends arrives at `source`; what is sent
/// into `sink` arrives at the connection.
struct End {
    sink: Sink,
    source: Source,
}

/// A sealed connection over one end of a fresh pair of `kind`, and the relay's end.
fn link(kind: Kind, key: &Key) -> (Connection, End) {
    fn over<T: Transport + MaxBytes>((a, b): (T, T), key: &Key) -> (Connection, End) {
        let conn = tracked(Sealed::new(a, key.clone()));
        let (sink, source) = b.split();
        let end = End {
            sink: Box::new(sink),
            source: Box::new(source),
        };
        (conn, end)
    }
    match kind {
        Kind::Memory => over(memory::pair(), key),
        Kind::Tcp => over(tcp_pair(), key),
    }
}

/// The text the pipe refuses `msg` with, if it does regardless of what came before (its form
/// alone: version, length, authentication).
fn form_refusal(key: &Key, msg: &[u8]) -> Option<String> {
    sealed::open(key, msg).err().map(|e| e.to_string())
}

struct Relay {
    key: Key,
    rng: Rng,
    faults: Vec<(Dir, usize, Fault)>,
    foreign: Vec<Bytes>,
    seen: HashMap<Dir, Seen>,
    decoders: HashMap<Dir, Decoder>,
    /// Copies waiting for their turn: (direction, deliver after this original index, msg,
    /// its original, whether still inside the window).
    later: Vec<(Dir, usize, Bytes, usize, bool)>,
    /// A message held back for a swap: (direction, msg, index).
    swapped: Option<(Dir, Bytes, usize)>,
    gate: Arc<Mutex<Gate>>,
    /// Per direction: the salt its sender's IVs carry, and the model of its receiver's pipe.
    salts: HashMap<Dir, [u8; 8]>,
    models: HashMap<Dir, Model>,
}

/// The receiving pipe's documented rules (`transport::sealed`): its form (version, length,
/// authentication), then our own salt (a reflection), the window of the last
/// [`REPLAY_WINDOW`] IVs (a replay), the next counter under the last salt (a gap or a step
/// back); a refusal is final.
#[derive(Debug, Default)]
struct Model {
    window: std::collections::VecDeque<u64>,
    last: Option<([u8; 8], u32)>,
    failed: bool,
}

impl Model {
    /// Whether the pipe opens `msg` (`own`: the receiver's own salt), or why not.
    fn admit(&mut self, key: &Key, msg: &[u8], own: Option<[u8; 8]>) -> Result<(), String> {
        sealed::open(key, msg).map_err(|e| e.to_string())?;
        let salt: [u8; 8] = msg[1..9].try_into().unwrap();
        let low = u64::from_be_bytes(msg[5..13].try_into().unwrap());
        let counter = u32::from_be_bytes(msg[9..13].try_into().unwrap());
        if own == Some(salt) {
            return Err(OpenError::Reflected.to_string());
        }
        if self.window.contains(&low) {
            return Err(OpenError::Replay.to_string());
        }
        if let Some((s, c)) = self.last {
            if s == salt && counter != c.wrapping_add(1) {
                return Err(OpenError::OutOfSequence {
                    after: c,
                    got: counter,
                }
                .to_string());
            }
        }
        self.window.push_back(low);
        if self.window.len() > REPLAY_WINDOW {
            self.window.pop_front();
        }
        self.last = Some((salt, counter));
        Ok(())
    }
}

/// Shared by the relay and the case: the faults delivered so far (any kind), and of them the
/// ones the pipe must refuse; once `closing` (the case closes both sides), no more faults.
#[derive(Debug, Default)]
struct Gate {
    closing: bool,
    faults: usize,
    refusals: usize,
}

impl Relay {
    /// Reads and records genuine message `i` of `dir`.
    fn record(&mut self, dir: Dir, msg: &[u8]) {
        let plain = sealed::open(&self.key, msg).expect("a genuine message opens");
        self.salts
            .entry(dir)
            .or_insert_with(|| msg[1..9].try_into().unwrap());
        let frame = self
            .decoders
            .get_mut(&dir)
            .unwrap()
            .decode_frame(&plain)
            .expect("a genuine message decodes");
        let seen = self.seen.entry(dir).or_default();
        let mut tags = Vec::new();
        match frame {
            Frame::Call(call) => tags.push(tag_of(&call.args)),
            Frame::Goaway(g) if seen.goaway.is_none() => {
                seen.goaway = Some((
                    g.reason.clone(),
                    g.error.as_ref().map(|e| e.code.clone()),
                    g.error.as_ref().and_then(|e| e.message.clone()),
                ));
            }
            _ => {}
        }
        seen.tags.push(tags);
    }

    /// What to deliver for genuine message `i` of `dir`: (towards `dir`, towards its sender).
    fn act(&mut self, dir: Dir, i: usize, msg: Bytes) -> (Deliveries, Deliveries) {
        let mut out = Vec::new();
        let mut back = Vec::new();
        if let Some((d, held, j)) = self.swapped.take() {
            if d == dir {
                out.push((
                    msg.clone(),
                    Delivery::Unpromised {
                        what: "swap",
                        of: Some(i),
                    },
                ));
                out.push((
                    held,
                    Delivery::Unpromised {
                        what: "swap",
                        of: Some(j),
                    },
                ));
                self.due(dir, i, &mut out);
                return (out, back);
            }
            self.swapped = Some((d, held, j));
        }
        let fault = self
            .faults
            .iter()
            .position(|&(d, at, _)| d == dir && at == i)
            .map(|p| self.faults.remove(p).2);
        let original = (msg.clone(), Delivery::Original(i));
        match fault {
            None => out.push(original),
            Some(Fault::Flip { byte, bit }) => {
                let mut m = msg.to_vec();
                let at = (byte % m.len() as u64) as usize;
                m[at] ^= 1 << bit;
                out.push(self.refused(m, Some(i)));
            }
            Some(Fault::Truncate { keep }) => {
                let m = msg[..(keep % msg.len() as u64) as usize].to_vec();
                out.push(self.refused(m, Some(i)));
            }
            Some(Fault::Junk { n }) => {
                let mut m = msg.to_vec();
                m.extend((0..n).map(|_| self.rng.next() as u8));
                out.push(self.refused(m, Some(i)));
            }
            Some(Fault::DupNow) => {
                out.push(original);
                out.push((
                    msg,
                    Delivery::Refused {
                        reason: OpenError::Replay.to_string(),
                        of: Some(i),
                    },
                ));
            }
            Some(Fault::DupLater { after }) => {
                out.push(original);
                self.later
                    .push((dir, i + after, msg, i, after < REPLAY_WINDOW));
            }
            Some(Fault::Reflect { forward }) => {
                match forward {
                    true => out.push(original),
                    // Taken away from its receiver: a drop as well.
                    false => out.push((
                        Bytes::new(),
                        Delivery::Unpromised {
                            what: DROPPED,
                            of: Some(i),
                        },
                    )),
                }
                back.push((
                    msg,
                    Delivery::Refused {
                        reason: OpenError::Reflected.to_string(),
                        of: None,
                    },
                ));
            }
            Some(Fault::Foreign { which }) => {
                if !self.foreign.is_empty() {
                    let f = self.foreign[(which % self.foreign.len() as u64) as usize].clone();
                    out.push((
                        f,
                        Delivery::Unpromised {
                            what: FOREIGN,
                            of: None,
                        },
                    ));
                }
                out.push(original);
            }
            Some(Fault::Swap) => {
                self.swapped = Some((dir, msg, i));
                out.push((
                    Bytes::new(),
                    Delivery::Unpromised {
                        what: HELD,
                        of: None,
                    },
                ));
            }
            Some(Fault::Drop) => {
                // Recorded as delivered nothing: the message is gone.
                out.push((
                    Bytes::new(),
                    Delivery::Unpromised {
                        what: DROPPED,
                        of: Some(i),
                    },
                ));
            }
        }
        self.due(dir, i, &mut out);
        (out, back)
    }

    /// `delivery` of `m` towards `target` as its receiver's pipe takes it: refused by the
    /// model, or as labelled (a label that expects a refusal must agree with the model's).
    fn classify(&mut self, target: Dir, m: &[u8], delivery: Delivery) -> Delivery {
        if matches!(
            delivery,
            Delivery::Unpromised {
                what: DROPPED | HELD,
                ..
            }
        ) {
            return delivery;
        }
        let own = self.salts.get(&target.back()).copied();
        let model = self.models.entry(target).or_default();
        if model.failed {
            return delivery;
        }
        let verdict = model.admit(&self.key, m, own);
        model.failed = verdict.is_err();
        match (verdict, delivery) {
            (Ok(()), Delivery::Refused { reason, .. }) => {
                panic!("the model opens a message expected refused ({reason})")
            }
            (Ok(()), delivery) => delivery,
            (Err(model), Delivery::Refused { reason, of }) => {
                assert_eq!(model, reason, "the model and the label disagree");
                Delivery::Refused { reason, of }
            }
            (Err(reason), Delivery::Original(i)) => Delivery::Refused {
                reason,
                of: Some(i),
            },
            (Err(reason), Delivery::Unpromised { of, .. }) => Delivery::Refused { reason, of },
        }
    }

    fn refused(&self, m: Vec<u8>, of: Option<usize>) -> (Bytes, Delivery) {
        let reason = form_refusal(&self.key, &m).expect("a tampered message fails to open");
        (m.into(), Delivery::Refused { reason, of })
    }

    /// Copies due after original `i` of `dir`.
    fn due(&mut self, dir: Dir, i: usize, out: &mut Vec<(Bytes, Delivery)>) {
        let mut k = 0;
        while k < self.later.len() {
            let (d, after, _, _, _) = self.later[k];
            if d == dir && after <= i {
                let (_, _, msg, of, inside) = self.later.remove(k);
                let delivery = match inside {
                    true => Delivery::Refused {
                        reason: OpenError::Replay.to_string(),
                        of: Some(of),
                    },
                    false => Delivery::Unpromised {
                        what: "replay beyond the window",
                        of: Some(of),
                    },
                };
                out.push((msg, delivery));
            } else {
                k += 1;
            }
        }
    }
}

/// Runs the relay until both sides have ended; returns what it saw.
async fn relay(mut r: Relay, a: End, b: End) -> HashMap<Dir, Seen> {
    let (mut to_a, mut from_a) = (Some(a.sink), Some(a.source));
    let (mut to_b, mut from_b) = (Some(b.sink), Some(b.source));
    let mut index: HashMap<Dir, usize> = HashMap::new();
    while from_a.is_some() || from_b.is_some() {
        let (dir, got) = tokio::select! {
            got = async { from_a.as_mut().unwrap().recv().await }, if from_a.is_some() => (Dir::ToB, got),
            got = async { from_b.as_mut().unwrap().recv().await }, if from_b.is_some() => (Dir::ToA, got),
        };
        let msg = match got {
            Ok(Some(msg)) => msg,
            _ => {
                // That side ended: end the other's inbound.
                let (source, sink) = match dir {
                    Dir::ToB => (&mut from_a, &mut to_b),
                    Dir::ToA => (&mut from_b, &mut to_a),
                };
                *source = None;
                if let Some(mut s) = sink.take() {
                    let _ = timeout(LIVENESS, s.close()).await;
                }
                continue;
            }
        };
        r.record(dir, &msg);
        let i = {
            let n = index.entry(dir).or_default();
            *n += 1;
            *n - 1
        };
        let (out, back) = {
            let gate = Arc::clone(&r.gate);
            let mut g = gate.lock().unwrap();
            if g.closing {
                (vec![(msg, Delivery::Original(i))], Vec::new())
            } else {
                let (out, back) = r.act(dir, i, msg);
                let mut classify = |target: Dir, list: Vec<(Bytes, Delivery)>| {
                    list.into_iter()
                        .map(|(m, x)| {
                            let x = r.classify(target, &m, x);
                            (m, x)
                        })
                        .collect::<Vec<_>>()
                };
                let (out, back) = (classify(dir, out), classify(dir.back(), back));
                for (_, x) in out.iter().chain(&back) {
                    g.faults += usize::from(!matches!(x, Delivery::Original(_)));
                    g.refusals += usize::from(matches!(x, Delivery::Refused { .. }));
                }
                (out, back)
            }
        };
        for (target, list) in [(dir, out), (dir.back(), back)] {
            let sink = match target {
                Dir::ToB => &mut to_b,
                Dir::ToA => &mut to_a,
            };
            for (m, delivery) in list {
                let dropped = matches!(
                    delivery,
                    Delivery::Unpromised {
                        what: DROPPED | HELD,
                        ..
                    }
                );
                r.seen.entry(target).or_default().delivered.push(delivery);
                if dropped {
                    continue;
                }
                if let Some(s) = sink.as_mut() {
                    // A receiver that has closed takes nothing more; keep reading its peer.
                    if !matches!(timeout(LIVENESS, s.send(m)).await, Ok(Ok(()))) {
                        *sink = None;
                    }
                }
            }
        }
    }
    r.seen
}

// ---- The foreign pair ----

/// Two more connections with the same key exchange calls through a recording relay: every
/// sealed message either sent, for injection.
async fn foreign_messages(kind: Kind, key: &Key) -> Vec<Bytes> {
    let (c, c_end) = link(kind, key);
    let (d, d_end) = link(kind, key);
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let pass = |mut source: Source, mut sink: Sink, rec: Arc<Mutex<Vec<Bytes>>>| {
        tokio::spawn(async move {
            while let Ok(Some(msg)) = source.recv().await {
                rec.lock().unwrap().push(msg.clone());
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
            let _ = timeout(LIVENESS, sink.close()).await;
        })
    };
    let t1 = pass(c_end.source, d_end.sink, recorded.clone());
    let t2 = pass(d_end.source, c_end.sink, recorded.clone());
    c.serve(mitm_def(), mitm_impl(RanLog::default()))
        .await
        .unwrap()
        .detach();
    let cap = timeout(LIVENESS, d.bootstrap(&mitm_def()))
        .await
        .unwrap()
        .unwrap();
    for i in 0..4 {
        let args = tagged(FOREIGN_TAGS + i);
        let echoed = timeout(LIVENESS, cap.call_value("echo", args.clone()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, args);
    }
    let child = timeout(LIVENESS, cap.call_cap("child", tagged(FOREIGN_TAGS + 10)))
        .await
        .unwrap()
        .unwrap();
    let _ = timeout(LIVENESS, child.call_value("tag", tagged(FOREIGN_TAGS + 11)))
        .await
        .unwrap()
        .unwrap();
    drop((child, cap));
    assert_clean(&[&c, &d]).await;
    c.close();
    timeout(LIVENESS, async {
        c.closed().await;
        d.closed().await;
        t1.await.unwrap();
        t2.await.unwrap();
    })
    .await
    .expect("the foreign pair ends");
    let out = recorded.lock().unwrap().clone();
    out
}

// ---- A case ----

/// How one operation ended.
#[derive(Debug)]
enum Outcome {
    Answered,
    Failed(Error),
    /// A wrong answer (what it was).
    Wrong(String),
    /// No answer within [`OP_BOUND`].
    Lost,
}

/// Runs `op` on `cap`, checking every answer it gets.
async fn run_op(cap: &Client, op: Op) -> Outcome {
    let work = async {
        match op {
            Op::Echo { tag, pad } => {
                let args = tagged_with(tag, "pad", "p".repeat(pad));
                let got = cap.call_value("echo", args.clone()).await?;
                if got != args {
                    return Ok(Some(format!("echo {tag}: {got:?}")));
                }
            }
            Op::Ticks { tag, n, pace } => {
                let mut stream = cap.stream("ticks", tagged_with(tag, "n", n));
                let mut next = 0;
                while let Some(item) = stream.next().await {
                    let v = item?;
                    if v != Value::from(next) {
                        return Ok(Some(format!("ticks {tag}: value {next} is {v:?}")));
                    }
                    next += 1;
                    if pace > 0 {
                        sleep(Duration::from_millis(pace)).await;
                    }
                }
                if next != n {
                    return Ok(Some(format!("ticks {tag}: ended after {next} of {n}")));
                }
            }
            Op::Child { tag } => {
                let child = cap.call_cap("child", tagged(tag)).await?;
                let got = child.call_value("tag", tagged(tag + CHILD)).await?;
                drop(child);
                if got != Value::from(tag) {
                    return Ok(Some(format!("child {tag}: {got:?}")));
                }
            }
        }
        Ok::<_, Error>(None)
    };
    match timeout(OP_BOUND, work).await {
        Ok(Ok(None)) => Outcome::Answered,
        Ok(Ok(Some(wrong))) => Outcome::Wrong(wrong),
        Ok(Err(e)) => Outcome::Failed(e),
        Err(_) => Outcome::Lost,
    }
}

/// One side's calls: bootstrap, the waiting call, then the plan. Returns the outcomes and
/// the waiting call (its error, once its connection ends, names why).
async fn side(
    conn: Connection,
    plan: Plan,
    sentinel: i64,
) -> (Vec<(Op, Outcome)>, Option<JoinHandle<Option<Error>>>) {
    let cap = match timeout(OP_BOUND, conn.bootstrap(&mitm_def())).await {
        Ok(Ok(cap)) => cap,
        // Cut off, or its answer lost: nothing of the plan runs.
        _ => return (Vec::new(), None),
    };
    let waiting = {
        let cap = cap.clone();
        tokio::spawn(async move { cap.call_value("wait", tagged(sentinel)).await.err() })
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut running = Vec::new();
    for (pause, awaited, op) in plan.ops {
        sleep(Duration::from_millis(pause)).await;
        if awaited {
            let outcome = run_op(&cap, op).await;
            let _ = tx.send((op, outcome));
        } else {
            let (cap, tx) = (cap.clone(), tx.clone());
            running.push(tokio::spawn(async move {
                let outcome = run_op(&cap, op).await;
                let _ = tx.send((op, outcome));
            }));
        }
    }
    for t in running {
        t.await.unwrap();
    }
    drop(tx);
    let mut outcomes = Vec::new();
    while let Some(o) = rx.recv().await {
        outcomes.push(o);
    }
    (outcomes, Some(waiting))
}

/// Waits (bounded) until `conns` are clean, their waiting calls gone; true if they are, or
/// if a fault was delivered meanwhile (a close then cleans them).
async fn clean_unless_faulted(conns: [&Connection; 2], faults: &impl Fn() -> usize) -> bool {
    for _ in 0..400 {
        if faults() > 0 {
            return true;
        }
        let mut clean = true;
        for c in conns {
            let s = c.current_stats().await;
            clean &= s.live_caps == 2
                && s.pending_calls == 0
                && s.active_calls == 0
                && s.server_streams == 0
                && s.client_streams == 0
                && s.unsent_bytes == 0;
        }
        if clean {
            return true;
        }
        sleep(Duration::from_millis(5)).await;
    }
    faults() > 0
}

async fn case(kind: Kind, seed: u64, reach: &Reach) {
    let mut rng = Rng(seed ^ 0x005e_a1ed);
    let setup = draw(&mut rng);
    let trace = std::env::var_os("BUNITE_MITM_TRACE").is_some();
    if trace {
        eprintln!("seed {seed}: {setup:?}");
    }
    let mut key = [0u8; 32];
    for b in key.iter_mut() {
        *b = rng.next() as u8;
    }
    let key = Key::new(key);
    let foreign = match setup.foreign {
        true => foreign_messages(kind, &key).await,
        false => Vec::new(),
    };

    let (a, a_end) = link(kind, &key);
    let (b, b_end) = link(kind, &key);
    let (a_log, b_log) = (RanLog::default(), RanLog::default());
    let gate = Arc::new(Mutex::new(Gate::default()));
    let relay_task = tokio::spawn(relay(
        Relay {
            key: key.clone(),
            rng: Rng(seed.wrapping_mul(31)),
            faults: setup.faults.clone(),
            foreign,
            seen: HashMap::new(),
            decoders: [Dir::ToA, Dir::ToB]
                .into_iter()
                .map(|d| (d, Decoder::new(DecodeLimits::default())))
                .collect(),
            later: Vec::new(),
            swapped: None,
            gate: Arc::clone(&gate),
            salts: HashMap::new(),
            models: HashMap::new(),
        },
        a_end,
        b_end,
    ));
    // Served before either side sends a call (a serve is a command, queued before the
    // bootstraps below).
    // (A refused hello may close a side first: its serve then fails `connection closed`.)
    for (conn, log) in [(&a, &a_log), (&b, &b_log)] {
        match conn.serve(mitm_def(), mitm_impl(log.clone())).await {
            Ok(handle) => handle.detach(),
            Err(e) => assert!(conn.is_closed(), "seed {seed}: serve failed: {e:?}"),
        }
    }

    // Each side's calls, every operation bounded.
    let a_side = tokio::spawn(side(a.clone(), setup.a.clone(), A_TAGS + SENTINEL));
    let b_side = tokio::spawn(side(b.clone(), setup.b.clone(), B_TAGS + SENTINEL));
    let ((a_ops, a_waiting), (b_ops, b_waiting)) = timeout(LIVENESS, async {
        (a_side.await.unwrap(), b_side.await.unwrap())
    })
    .await
    .expect("the plans end (every operation is bounded)");
    // Deliveries in flight arrive.
    sleep(Duration::from_millis(50)).await;
    let faults = || gate.lock().unwrap().faults;
    if faults() == 0 {
        // No fault: the waiting calls cancelled, both connections are clean (unless a fault
        // meets the cancels).
        for w in [&a_waiting, &b_waiting].into_iter().flatten() {
            w.abort();
        }
        assert!(
            clean_unless_faulted([&a, &b], &faults).await,
            "seed {seed}: not clean with no fault: {:?} {:?}",
            a.current_stats().await,
            b.current_stats().await
        );
    }
    // No fault from here on; a message the pipe had to refuse closes its receiver, and the
    // peer on its goaway, without the case's help.
    let refusals = {
        let mut g = gate.lock().unwrap();
        g.closing = true;
        g.refusals
    };
    if refusals > 0 {
        timeout(LIVENESS, async {
            a.closed().await;
            b.closed().await;
        })
        .await
        .expect("a refused message closes both connections");
    }
    a.close();
    b.close();
    let waited = |w: Option<JoinHandle<Option<Error>>>| async move {
        match w {
            Some(w) => timeout(LIVENESS, w)
                .await
                .expect("the waiting call ends with its connection")
                .ok()
                .flatten(),
            None => None,
        }
    };
    let (a_waited, b_waited) = (waited(a_waiting).await, waited(b_waiting).await);
    timeout(LIVENESS, async {
        a.closed().await;
        b.closed().await;
    })
    .await
    .expect("both connections close");
    let seen = timeout(LIVENESS, relay_task)
        .await
        .expect("the relay ends with both sides")
        .unwrap();
    for c in [&a, &b] {
        assert!(
            c.stats().is_idle(),
            "not idle after its close: {:?}",
            c.stats()
        );
    }
    if trace {
        for (d, s) in &seen {
            eprintln!(
                "seed {seed}: {d:?}: {} messages, goaway {:?}",
                s.tags.len(),
                s.goaway
            );
            for x in s
                .delivered
                .iter()
                .filter(|x| !matches!(x, Delivery::Original(_)))
            {
                eprintln!("  {x:?}");
            }
        }
        eprintln!(
            "A ran {:?}\nA: {a_ops:?} {a_waited:?}",
            a_log.lock().unwrap()
        );
        eprintln!(
            "B ran {:?}\nB: {b_ops:?} {b_waited:?}",
            b_log.lock().unwrap()
        );
    }

    check(
        seed,
        reach,
        &seen,
        [
            (Dir::ToA, &a_log, &a_ops[..], &a_waited),
            (Dir::ToB, &b_log, &b_ops[..], &b_waited),
        ],
    );
}

/// One side, for [`check`].
type Side<'a> = (Dir, &'a RanLog, &'a [(Op, Outcome)], &'a Option<Error>);

/// The rules, once the case has ended. For each side: `dir` is the direction towards it,
/// `log` what its handlers ran, `ops` how its own calls ended, `waited` how its waiting call
/// ended.
fn check(seed: u64, reach: &Reach, seen: &HashMap<Dir, Seen>, sides: [Side<'_>; 2]) {
    let empty = Seen::default();
    let seen_of = |d: Dir| seen.get(&d).unwrap_or(&empty);
    let any_fault = |d: Dir| {
        seen_of(d)
            .delivered
            .iter()
            .any(|x| !matches!(x, Delivery::Original(_)))
    };
    let faulted = any_fault(Dir::ToA) || any_fault(Dir::ToB);
    let unpromised_any = [Dir::ToA, Dir::ToB].iter().any(|&d| {
        seen_of(d)
            .delivered
            .iter()
            .any(|x| matches!(x, Delivery::Unpromised { .. }))
    });
    // A foreign message opens, and what its frame does is not defined.
    let foreign_any = [Dir::ToA, Dir::ToB].iter().any(|&d| {
        seen_of(d)
            .delivered
            .iter()
            .any(|x| matches!(x, Delivery::Unpromised { what: FOREIGN, .. }))
    });
    let mut closed_on_protocol = false;
    for (dir, log, ops, waited) in sides {
        let here = seen_of(dir);
        // Its goaway travels the other way.
        let goaway = &seen_of(dir.back()).goaway;
        let first_refused = here
            .delivered
            .iter()
            .position(|x| matches!(x, Delivery::Refused { .. }));
        let unpromised_before = here.delivered[..first_refused.unwrap_or(here.delivered.len())]
            .iter()
            .any(|x| matches!(x, Delivery::Unpromised { .. }));
        let protocol_goaway = goaway
            .as_ref()
            .is_some_and(|g| g.0.as_deref() == Some("invalid_argument"));
        closed_on_protocol |= protocol_goaway;
        if let Some(at) = first_refused {
            let Delivery::Refused { reason, .. } = &here.delivered[at] else {
                unreachable!()
            };
            reach.refused.fetch_add(1, Ordering::Relaxed);
            if reason == &OpenError::Replay.to_string() {
                reach.replays.fetch_add(1, Ordering::Relaxed);
            }
            if reason == &OpenError::Reflected.to_string() {
                reach.reflections.fetch_add(1, Ordering::Relaxed);
            }
            if reason.starts_with("sealed message out of sequence") {
                reach.out_of_sequence.fetch_add(1, Ordering::Relaxed);
            }
            let peer_faulted = any_fault(dir.back());
            if protocol_goaway && !unpromised_before {
                // Closed on the first message it had to refuse, and said why.
                let g = goaway.as_ref().unwrap();
                if g.2.as_deref() == Some(reason.as_str()) {
                    reach.closed_by_pipe.fetch_add(1, Ordering::Relaxed);
                } else {
                    // Only another fault it met first may have closed it sooner: none.
                    panic!("seed {seed}: towards {dir:?}: goaway {g:?}, expected {reason:?}");
                }
                assert_eq!(
                    g.1.as_deref(),
                    Some("invalid_argument"),
                    "seed {seed}: {g:?}"
                );
                // Its waiting call names the same cause (unless it was made after the
                // close, and failed locally).
                if let Some(e) = waited.as_ref().filter(|e| e.disconnect().is_some()) {
                    assert_eq!(
                        e.disconnect(),
                        Some(&Disconnect::ProtocolError {
                            message: reason.clone()
                        }),
                        "seed {seed}: towards {dir:?}: {e:?}"
                    );
                }
            } else if !peer_faulted && !unpromised_before {
                panic!(
                    "seed {seed}: towards {dir:?}: a refused message ({reason}) delivered, \
                     the peer untouched, and no goaway invalid_argument: {goaway:?}"
                );
            }
            // Nothing it carried, nor anything after it, ran.
            let before: HashSet<i64> = here.delivered[..at]
                .iter()
                .filter_map(|x| match x {
                    Delivery::Original(i) => Some(*i),
                    _ => None,
                })
                .flat_map(|i| here.tags[i].iter().copied())
                .collect();
            let ran = log.lock().unwrap();
            for x in &here.delivered[at..] {
                let of = match x {
                    Delivery::Original(i) => Some(*i),
                    Delivery::Refused { of, .. } | Delivery::Unpromised { of, .. } => *of,
                };
                let Some(i) = of else { continue };
                for tag in &here.tags[i] {
                    let count = ran.get(tag).copied().unwrap_or(0);
                    let allowed = u32::from(before.contains(tag));
                    assert!(
                        count <= allowed,
                        "seed {seed}: towards {dir:?}: call {tag}, carried at or after the \
                         refused message, ran {count} times"
                    );
                }
            }
        }
        // Every handler ran at most once (a foreign call is not ours).
        for (&tag, &count) in log.lock().unwrap().iter() {
            if tag >= FOREIGN_TAGS {
                reach
                    .foreign_ran
                    .fetch_add(count as usize, Ordering::Relaxed);
                continue;
            }
            assert!(
                count <= 1,
                "seed {seed}: towards {dir:?}: call {tag} ran {count} times"
            );
        }
        // Every call answered was answered right (run_op checks the values); a call fails
        // only with its connection's end, and is lost only after a fault the docs leave open.
        for (op, outcome) in ops.iter() {
            match outcome {
                Outcome::Answered => {}
                Outcome::Failed(e) => {
                    assert!(faulted, "seed {seed}: {op:?} failed with no fault: {e:?}");
                    assert!(
                        unpromised_any || e.disconnect().is_some() || e.code() == Code::Unavailable,
                        "seed {seed}: {op:?} failed otherwise than by the close: {e:?}"
                    );
                }
                Outcome::Wrong(what) => {
                    assert!(
                        foreign_any,
                        "seed {seed}: a wrong answer, and no foreign message: {what}"
                    );
                    reach.wrong.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Lost => {
                    assert!(
                        unpromised_any,
                        "seed {seed}: {op:?} got no answer, and no fault left it open"
                    );
                    reach.lost.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if !faulted {
            assert!(
                goaway
                    .as_ref()
                    .is_none_or(|g| g.0.as_deref() == Some("peer_closing")),
                "seed {seed}: no fault, goaway {goaway:?}"
            );
        }
    }
    if !faulted {
        reach.clean_cases.fetch_add(1, Ordering::Relaxed);
    }
    if unpromised_any {
        reach.unpromised.fetch_add(1, Ordering::Relaxed);
        if closed_on_protocol {
            reach.unpromised_closed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
