//! The `session_ops` fuzz harness (`fuzz/fuzz_targets/session_ops.rs`; its corpus is replayed
//! on stable by `tests/session_fuzz_corpus.rs`). Hidden, behind `test-util`, reached through
//! [`crate::fuzzing`].
//!
//! Two sessions, A and B, each serving caps, are driven by an input read as a sequence of
//! operations (quinn-proto's way of fuzzing a state machine): local calls, stream opens,
//! bootstraps, cancels, releases, credit, serve/unserve/replace, handler and stream-source
//! completions (values, caps, errors), policy answers, `after_reply` work, time passing,
//! closes and drains, transport ends, partial deliveries of what each has queued, and hostile input:
//! frames a conforming peer would never send (reused ids, results for calls never made,
//! credit floods, drops of ids never given, a second hello, …), mangled frames and raw bytes,
//! delivered through the sender's own encoder so the codec state stays in step.
//!
//! After every step both sessions' [`check_invariants`](super::Session::check_invariants)
//! run, and the harness checks what it can see from outside (`side`): every call and
//! bootstrap is answered exactly once, every client stream ends exactly once and gets no
//! item after its end, every run is completed or aborted exactly once and never signalled
//! after, every payload materializes, a session that received nothing hostile never closes
//! with a protocol error and is never sent a message above its `maxBytes`, and closing
//! leaves nothing. At the end of an input without hostile steps, both peers finish their
//! work, release what they hold and exchange what is queued: then both tables must be
//! empty (`drain`).

mod hostile;
mod side;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Dispatch, Types};
use crate::schema::{CapDef, MethodDef, Returns};
use side::Side;

/// What one input did, so the corpus replay can check that it reaches every part.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Operations run.
    pub steps: usize,
    /// Replies delivered to local callers (successes and failures).
    pub replies: usize,
    /// Handlers and stream sources started.
    pub invocations: usize,
    /// Client stream items delivered.
    pub items: usize,
    /// Hostile messages delivered.
    pub hostile: usize,
    /// Sessions that shut down.
    pub closed: usize,
    /// Inputs that ended with both peers open, drained to empty tables.
    pub drained: usize,
    /// Answers refused for lack of room in the send budget (replies and stream ends).
    pub refused: usize,
    /// Inputs that ended with a session asked to drain (the session's `drain`): once both
    /// peers wound down, it had closed, and so had its peer.
    pub drain_closes: usize,
}

/// The session's opaque types as plain tags.
pub(crate) struct F;

impl Types for F {
    type Imp = Imp;
    type Reply = u64;
    type Sink = u64;
    type Deferred = u64;
}

/// An implementation: whether it has handlers (a declared method without one is `not_found`).
#[derive(Clone, Debug)]
pub(crate) struct Imp {
    handlers: bool,
}

impl Dispatch for Imp {
    fn has_handler(&self, method: &str) -> bool {
        self.handlers && method != "nohandler"
    }
}

/// The cap definitions both peers serve and export.
pub(crate) struct Defs {
    parent: Arc<CapDef>,
    child: Arc<CapDef>,
    v1: Arc<CapDef>,
    v2: Arc<CapDef>,
    other: Arc<CapDef>,
    reserved: Arc<CapDef>,
    runtime: Arc<CapDef>,
}

impl Defs {
    fn new() -> Defs {
        let child = CapDef::builder("f.child")
            .method(MethodDef::call("ping"))
            .method(MethodDef::call("close"))
            .disposal("close")
            .build();
        let parent = CapDef::builder("f.parent")
            .method(MethodDef::call("get"))
            .method(MethodDef::call("slow").keep_running_on_cancel())
            .method(MethodDef::call("idem").idempotent())
            .method(MethodDef::call("own").own_task())
            .method(MethodDef::call("nohandler"))
            .method(MethodDef::call("make").returns(Returns::Cap(Arc::clone(&child).into())))
            .method(MethodDef::call("many").returns(Returns::CapArray(Arc::clone(&child).into())))
            .method(MethodDef::call("named").returns(Returns::CapRecord(Arc::clone(&child).into())))
            .method(MethodDef::stream("ticks").initial_credit(8))
            .method(MethodDef::stream("flood").initial_credit(1024))
            .build();
        let versioned = |v: &str| {
            CapDef::builder("f.v")
                .version(v)
                .method(MethodDef::call("v"))
                .build()
        };
        Defs {
            parent,
            child,
            v1: versioned("1"),
            v2: versioned("2"),
            other: CapDef::builder("f.other")
                .method(MethodDef::call("get"))
                .build(),
            reserved: CapDef::builder("bunite.x").build(),
            runtime: CapDef::builder("bunite.Runtime")
                .method(MethodDef::call("appName"))
                .build(),
        }
    }
}

/// Method names calls pick from: declared ones of each kind, and some nobody declares.
const METHODS: [&str; 16] = [
    "get",
    "slow",
    "idem",
    "own",
    "make",
    "many",
    "named",
    "ticks",
    "flood",
    "ping",
    "close",
    "v",
    "nohandler",
    "missing",
    "bootstrap",
    "appName",
];

/// Names bootstraps and unserves pick from.
const NAMES: [&str; 5] = ["f.parent", "f.v", "f.other", "f.child", "nope"];

/// Time steps, in milliseconds: around the deadline grace (500 ms) and the hello timeout.
const ADVANCE_MS: [u64; 10] = [0, 1, 10, 100, 499, 500, 501, 1_000, 10_000, 60_000];

/// The operations' names, for traces.
const OPS: [&str; 22] = [
    "pump",
    "call",
    "stream",
    "bootstrap",
    "cancel",
    "release",
    "credit",
    "cancel_stream",
    "serve",
    "unserve",
    "replace",
    "finish",
    "items",
    "policy",
    "after_reply",
    "advance",
    "close",
    "transport_end",
    "hostile",
    "garbage",
    "observe",
    "pump_all",
];

/// Most operations per input, so one input cannot run for long.
const MAX_STEPS: usize = 2_000;

thread_local! {
    static TRACE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Prints what the harness does, when tracing (`session_ops_traced`).
macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::session::fuzz::tracing() {
            eprintln!($($arg)*);
        }
    };
}
pub(crate) use trace;

pub(crate) fn tracing() -> bool {
    TRACE.with(|t| t.get())
}

/// [`session_ops`], printing every operation and output to stderr (to read a finding).
pub fn session_ops_traced(data: &[u8]) -> Report {
    TRACE.with(|t| t.set(true));
    let report = std::panic::catch_unwind(|| session_ops(data));
    TRACE.with(|t| t.set(false));
    report.unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Runs one fuzz input. Panics when a session breaks a rule.
pub fn session_ops(data: &[u8]) -> Report {
    let mut input = Input(data);
    let defs = Defs::new();
    let start = Instant::now();
    let config = side::Config::read(&mut input);
    let mut sides = [
        Side::new("A", &config, 0, &defs, start),
        Side::new("B", &config, 1, &defs, start),
    ];
    let mut report = Report::default();
    let mut tags = 0u64;
    let mut now = start;
    while let Some(op) = input.byte() {
        report.steps += 1;
        if report.steps > MAX_STEPS {
            break;
        }
        let (x, y) = split(&mut sides, usize::from(op & 1));
        step(
            op >> 1,
            x,
            y,
            &mut input,
            &defs,
            &mut tags,
            &mut now,
            &mut report,
        );
        for s in sides.iter_mut() {
            s.collect(&mut report);
        }
    }
    side::drain(&mut sides, &defs, &mut report);
    report.closed = sides.iter().filter(|s| s.closed.is_some()).count();
    report
}

/// The acting side and the other one.
fn split(sides: &mut [Side; 2], x: usize) -> (&mut Side, &mut Side) {
    let [a, b] = sides;
    if x == 0 {
        (a, b)
    } else {
        (b, a)
    }
}

/// One operation: `kind` picks it, `x` acts, `y` is its peer.
#[allow(clippy::too_many_arguments)]
fn step(
    kind: u8,
    x: &mut Side,
    y: &mut Side,
    input: &mut Input<'_>,
    defs: &Defs,
    tags: &mut u64,
    now: &mut Instant,
    report: &mut Report,
) {
    let mut tag = || {
        *tags += 1;
        *tags
    };
    trace!("-- {} op {}", x.name, OPS[usize::from(kind % 22)]);
    match kind % 22 {
        0 => {
            let n = usize::from(input.byte().unwrap_or(0));
            side::pump(x, y, if n == 0 { usize::MAX } else { n }, report);
        }
        1 => x.call(input, tag(), *now),
        2 => x.open_stream(input, tag()),
        3 => x.bootstrap(input, tag(), *now),
        4 => x.cancel(input),
        5 => x.release(input),
        6 => x.return_credit(input),
        7 => x.cancel_stream(input),
        8 => x.serve(input, defs),
        9 => x.unserve(input),
        10 => x.replace(input, defs),
        11 => x.finish_run(input, defs, *now),
        12 => x.stream_items(input),
        13 => x.policy_done(input),
        14 => x.after_reply(input, tag()),
        15 => {
            let ms = ADVANCE_MS[usize::from(input.byte().unwrap_or(0)) % ADVANCE_MS.len()];
            *now += Duration::from_millis(ms);
            for s in [x, y] {
                s.advance(*now, report);
            }
        }
        16 => x.close(input, *now),
        17 => x.transport_end(input),
        18 => hostile::frame(x, y, input, report),
        19 => hostile::bytes(x, y, input, report),
        20 => x.toggle_observed(),
        _ => {
            // Both ways until nothing is queued (each answer may queue another).
            for _ in 0..16 {
                side::pump(x, y, usize::MAX, report);
                side::pump(y, x, usize::MAX, report);
                if x.s.transmit_bytes() == 0 && y.s.transmit_bytes() == 0 {
                    break;
                }
            }
        }
    }
}

/// The fuzz input, consumed from the front; past its end every read is zero.
pub(crate) struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// A byte, zero past the end.
    pub fn b(&mut self) -> u8 {
        self.byte().unwrap_or(0)
    }

    /// One of `n` choices (`n > 0`).
    pub fn pick(&mut self, n: usize) -> usize {
        usize::from(self.b()) % n.max(1)
    }

    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    pub fn u64(&mut self) -> u64 {
        let mut out = [0u8; 8];
        let head = self.take(8);
        if let Some(dst) = out.get_mut(..head.len()) {
            dst.copy_from_slice(head);
        }
        u64::from_le_bytes(out)
    }
}

#[cfg(test)]
mod seeds;
