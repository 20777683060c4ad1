//! Seeded random observer events (PROTOCOL §15; `docs/RELIABILITY.md`, "Seeded random
//! observer events"): subscribers added and removed at random points while a peer drives
//! calls, streams and bootstraps of every outcome, and a model of what each subscriber
//! must, may and must not see.
//!
//! Each case is one seed, on [`run`] (one thread, or two workers with
//! `BUNITE_TEST_RUNTIME=multi`; over the transport `BUNITE_TEST_TRANSPORT` names): a
//! connection serving `t.ev` (version "1"), `t.denied` and `t.broken`, sometimes with a
//! small in-flight limit and an async policy (denying `t.denied`, failing for
//! `t.broken`, at once or after a few milliseconds). Its peer is a raw peer (frames by
//! hand: call ids, targets, bootstrap args, credit and cancels of its choosing) or a real
//! client `Connection`. The case runs steps: subscribe (one to three at once, some of them
//! calling back into the connection: its stats, a subscribe and unsubscribe of their
//! own, and for some a close at their n-th event), unsubscribe, a batch of operations
//! (calls completed at once, later, failing, honouring a deadline, cancelled by the peer;
//! streams of 0-20 values with credit, failing part way, cancelled by the peer; calls
//! refused for an unknown cap or method, a method without a handler, the in-flight
//! limit; bootstraps ok, denied, not found, of the wrong version, malformed, failing in the
//! policy), with subscribers changing while the batch is in flight, calls held open, and
//! in some cases an ending: the connection closed or drained, or the peer leaving.
//!
//! What must hold, for each subscriber (`ts`: after its `subscribe` returned; `tu`: before
//! its `unsubscribe` was called): an outcome of an operation sent after `ts` whose answer
//! the peer had before `tu` (the connection reports an outcome before it sends the
//! answer), or whose handler had started and the connection then closed before `tu`, is
//! seen exactly once with its fields: call id, cap-id, cap name, method, result (the code
//! of the peer's answer), a duration exactly when it ran and was not ended by the close;
//! a stream's `start` (count 0) and one end (`end` with every value, `error` with the
//! values before the failure, `cancel` with at least the values read, as the peer or the
//! close ended it); a bootstrap's name, version, result and a cap-id only on ok (the one
//! the peer got). Outcomes racing a subscribe or unsubscribe may be seen or not, at most
//! once and with the right fields. An operation sent after `unsubscribe` returned is
//! never seen, and on one thread nothing at all reaches a subscriber after its
//! `unsubscribe` returned; nothing is seen twice, nothing that matches no operation, and
//! nothing once `closed` returned. The harness's checks end each case (clean, idle, no
//! task left).
//!
//! `BUNITE_OPS_SEEDS=N` runs seeds `0..N` (or `A..B`), `BUNITE_OPS_SEED=S` seed S alone.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bunite_rpc::client::CallOptions;
use bunite_rpc::dynamic::DynCap;
use bunite_rpc::events::{BootstrapResult, Event, StreamPhase};
use bunite_rpc::wire::{
    Call, CallId, CallMeta, Cancel, CapId, DropEntry, DropFrame, Frame, StreamEvent, StreamFrame,
    Text,
};
use bunite_rpc::{
    CapDef, Client, Code, Connection, Error, Limits, MethodDef, Policy, Record, Status, Value,
};
use common::seeded::{each_seed, Rng};
use common::*;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// Seeds of a plain run (a few seconds in all).
const SEEDS: u64 = 40;

/// How long a case may take: far beyond its longest wait (a drain's grace of 30 ms,
/// handlers of a few milliseconds).
const CASE_BOUND: Duration = Duration::from_secs(60);

/// How long the peer waits for a frame before the case fails as hung.
const HANG: Duration = Duration::from_secs(20);

/// The served cap's name and version.
const EV: &str = "t.ev";

/// The stream's initial credit (the minimum, PROTOCOL §13.1): longer streams need credit.
const CREDIT: u64 = 8;

#[test]
fn random_observer_events() {
    let n = each_seed("random_events", SEEDS, CASE_BOUND, run, case);
    let tally = TALLY.lock().unwrap();
    eprintln!("random_events: {n} cases: {tally:?}");
}

/// What the cases drove, for the run's line.
#[derive(Debug, Default)]
struct Tally {
    raw: u64,
    client: u64,
    ops: u64,
    events: u64,
    must: u64,
    subscribers: u64,
    /// Closed, drained, the peer left, closed early (by a subscriber or the peer), none.
    endings: [u64; 5],
}

static TALLY: Mutex<Tally> = Mutex::new(Tally {
    raw: 0,
    client: 0,
    ops: 0,
    events: 0,
    must: 0,
    subscribers: 0,
    endings: [0; 5],
});

// ---------------------------------------------------------------------------------------
// The served caps

fn ev_def() -> Arc<CapDef> {
    CapDef::builder(EV)
        .version("1")
        .method(MethodDef::call("now"))
        .method(MethodDef::call("later"))
        .method(MethodDef::call("fail"))
        .method(MethodDef::call("wait"))
        .method(MethodDef::call("undeclared"))
        .method(MethodDef::stream("nums").initial_credit(CREDIT as u32))
        .build()
}

/// The call ids whose handler started.
type Started = Arc<Mutex<HashSet<u64>>>;

fn int(args: &Value, key: &str) -> u64 {
    args.as_record()
        .and_then(|r| r.get(key))
        .and_then(Value::as_integer)
        .unwrap_or(0) as u64
}

/// The codes `fail` answers with: none a refusal could give (`not_found`,
/// `resource_exhausted`, `unavailable`), so that an answer tells which it was.
const FAIL_CODES: [Code; 4] = [
    Code::Internal,
    Code::InvalidArgument,
    Code::FailedPrecondition,
    Code::AlreadyExists,
];

fn ev_impl(started: &Started) -> Arc<dyn bunite_rpc::CapImpl> {
    let (s1, s2, s3, s4, s5) = (
        started.clone(),
        started.clone(),
        started.clone(),
        started.clone(),
        started.clone(),
    );
    DynCap::new()
        .call("now", move |_, ctx: bunite_rpc::CallContext| {
            s1.lock().unwrap().insert(ctx.call_id().0);
            async { Ok(Value::from("now")) }
        })
        .call("later", move |args: Value, ctx: bunite_rpc::CallContext| {
            s2.lock().unwrap().insert(ctx.call_id().0);
            let ms = int(&args, "ms");
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(Value::from("later"))
            }
        })
        .call("fail", move |args: Value, ctx: bunite_rpc::CallContext| {
            s3.lock().unwrap().insert(ctx.call_id().0);
            let ms = int(&args, "ms");
            let code = FAIL_CODES[int(&args, "code") as usize % FAIL_CODES.len()];
            async move {
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Err::<Value, _>(Status::new(code, "asked to fail"))
            }
        })
        .call("wait", move |_, ctx: bunite_rpc::CallContext| {
            s4.lock().unwrap().insert(ctx.call_id().0);
            async move {
                ctx.cancelled().await;
                Err::<Value, _>(Status::new(Code::DeadlineExceeded, "gave up"))
            }
        })
        .stream("nums", move |args: Value, ctx: bunite_rpc::CallContext| {
            s5.lock().unwrap().insert(ctx.call_id().0);
            let n = int(&args, "n");
            let fail_at = args
                .as_record()
                .and_then(|r| r.get("fail"))
                .and_then(Value::as_integer)
                .map(|f| f as u64);
            let ms = int(&args, "ms");
            let items = (0..n).map(move |i| match fail_at {
                Some(f) if i == f => Err(Status::internal("late failure")),
                _ => Ok(Value::from(i as i64)),
            });
            let items = futures::stream::iter(items);
            let items = match fail_at {
                Some(f) => items.take(f as usize + 1).boxed(),
                None => items.boxed(),
            };
            Ok(items
                .then(move |v| async move {
                    if ms > 0 {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    v
                })
                .boxed())
        })
        .build()
}

// ---------------------------------------------------------------------------------------
// The model

/// A logical clock: every point the model compares (a subscribe returned, an operation
/// sent, an answer read, an event delivered) takes the next tick.
#[derive(Clone, Default)]
struct Clock(Arc<AtomicU64>);

impl Clock {
    fn tick(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

#[derive(Clone, Debug)]
enum What {
    /// A call of `method` on `target`; `cap_name` is the name the event must carry;
    /// `refused`: refused before running whatever happens (unknown cap or method, no
    /// handler).
    Call {
        target: u32,
        method: String,
        cap_name: Option<&'static str>,
        refused: bool,
    },
    /// `nums {n, fail}` on `target`.
    Stream {
        target: u32,
        n: u64,
        fail_at: Option<u64>,
    },
    /// A bootstrap of `name` (as the event shows it) and `version`, expected to end so.
    Boot {
        name: String,
        version: Option<String>,
        expect: BootstrapResult,
    },
}

#[derive(Clone, Debug, PartialEq)]
enum Answer {
    /// A result with a value (a bootstrap's cap-id).
    Value(Option<CapId>),
    /// A result error.
    Error { code: Code, reason: Option<String> },
    /// A stream's `end`.
    End,
    /// A stream's `error`.
    StreamError(Code),
}

#[derive(Debug)]
struct Op {
    id: u64,
    what: What,
    /// Before it was sent.
    start: u64,
    /// The peer's answer, and when it had it.
    answer: Option<(u64, Answer)>,
    /// A stream: when the peer had its first frame (its `start` was reported before).
    first_frame: Option<u64>,
    received: u64,
    /// The peer cancelled it (a stream).
    cancelled: bool,
    /// An answer the server sent after this one's outcome (the client failed it locally,
    /// by its cancel, so its own answer tells nothing): when the peer had it.
    later: Option<u64>,
}

impl Op {
    fn new(id: u64, what: What, start: u64) -> Op {
        Op {
            id,
            what,
            start,
            answer: None,
            first_frame: None,
            received: 0,
            cancelled: false,
            later: None,
        }
    }

    fn answered(&mut self, clock: &Clock, answer: Answer) {
        if self.answer.is_none() {
            self.answer = Some((clock.tick(), answer));
        }
    }
}

/// One subscriber and what it saw (each event with its tick).
struct Sub {
    id: bunite_rpc::SubscriptionId,
    log: Arc<Mutex<Vec<(u64, Event)>>>,
    /// After `subscribe` returned.
    ts: u64,
    /// Before `unsubscribe` was called, and after it returned.
    tu: Option<(u64, u64)>,
}

/// A case's shared state.
struct Case {
    clock: Clock,
    conn: Connection,
    ops: Vec<Op>,
    subs: Vec<Sub>,
    started: Started,
    /// Set once `closed` returned: no event may come after.
    done: Arc<AtomicBool>,
    /// Events that came after `done`.
    late: Arc<Mutex<Vec<Event>>>,
    /// When `closed` returned, if the connection ended within the case.
    closed_at: Option<u64>,
    policy: bool,
    /// The cap-ids the peer got for each name.
    caps: HashMap<String, HashSet<CapId>>,
}

impl Case {
    fn subscribe(&mut self, rng: &mut Rng) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (l, clock, done, late) = (
            log.clone(),
            self.clock.clone(),
            self.done.clone(),
            self.late.clone(),
        );
        let record = move |e: &Event| {
            if done.load(Ordering::SeqCst) {
                late.lock().unwrap().push(e.clone());
            }
            l.lock().unwrap().push((clock.tick(), e.clone()));
        };
        let id = if rng.chance(30) {
            // One that calls back into its connection, and perhaps closes it.
            let conn = self.conn.clone();
            let close_at = rng.chance(25).then(|| 1 + rng.below(12));
            let seen = AtomicU64::new(0);
            self.conn.subscribe(move |e| {
                record(e);
                let _ = conn.stats();
                let inner = conn.subscribe(|_| {});
                conn.unsubscribe(inner);
                let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                if close_at == Some(n) {
                    conn.close();
                }
            })
        } else {
            self.conn.subscribe(record)
        };
        let ts = self.clock.tick();
        self.subs.push(Sub {
            id,
            log,
            ts,
            tu: None,
        });
    }

    fn unsubscribe(&mut self, rng: &mut Rng) {
        let live: Vec<usize> = (0..self.subs.len())
            .filter(|&i| self.subs[i].tu.is_none())
            .collect();
        if live.is_empty() {
            return;
        }
        let i = live[rng.below(live.len() as u64) as usize];
        let before = self.clock.tick();
        self.conn.unsubscribe(self.subs[i].id);
        let after = self.clock.tick();
        self.subs[i].tu = Some((before, after));
    }

    /// Subscribes or unsubscribes (or both) a few times.
    fn churn(&mut self, rng: &mut Rng) {
        for _ in 0..1 + rng.below(3) {
            if rng.chance(55) {
                self.subscribe(rng);
            } else {
                self.unsubscribe(rng);
            }
        }
    }

    fn op(&mut self, id: u64, what: What) -> usize {
        let start = self.clock.tick();
        self.ops.push(Op::new(id, what, start));
        self.ops.len() - 1
    }

    fn by_id(&mut self, id: u64) -> Option<&mut Op> {
        self.ops.iter_mut().rev().find(|o| o.id == id)
    }

    /// What a bootstrap of `name` must end with.
    fn boot_expect(&self, name: &str, version: Option<&str>) -> BootstrapResult {
        match (name, version) {
            (EV, Some(v)) if v != "1" => BootstrapResult::VersionMismatch,
            (EV, _) => BootstrapResult::Ok,
            ("t.denied", _) if self.policy => BootstrapResult::Denied,
            ("t.broken", _) if self.policy => BootstrapResult::Internal,
            ("t.denied" | "t.broken", _) => BootstrapResult::Ok,
            _ => BootstrapResult::NotFound,
        }
    }
}

/// Whether an answer is a refusal before running: the in-flight limit or a drain.
fn refusal(answer: &Answer) -> bool {
    match answer {
        Answer::Error { code, reason } => {
            matches!(
                (code, reason.as_deref()),
                (Code::ResourceExhausted, Some("max_concurrent_calls"))
                    | (Code::Unavailable, Some("peer_closing"))
            )
        }
        _ => false,
    }
}

fn drained(answer: &Answer) -> bool {
    matches!(answer, Answer::Error { code: Code::Unavailable, reason } if reason.as_deref() == Some("peer_closing"))
}

/// A bootstrap event's name, version and result.
type BootKey = (String, Option<String>, String);

/// Checks every subscriber's log against the model; how many outcomes were certain.
fn check(case: &Case, one_thread: bool) -> u64 {
    let late = case.late.lock().unwrap();
    assert!(late.is_empty(), "events after closed returned: {late:?}");
    let started = case.started.lock().unwrap().clone();
    let mut must_total = 0;
    for (si, sub) in case.subs.iter().enumerate() {
        let log = sub.log.lock().unwrap().clone();
        let ctx = |what: &str| format!("subscriber #{si} (ts {}, tu {:?}): {what}", sub.ts, sub.tu);
        // What it saw of call `id`, for a message.
        let of = |id: u64| -> Vec<&(u64, Event)> {
            (log.iter())
                .filter(|(_, e)| match e {
                    Event::Call(c) => c.call_id.0 == id,
                    Event::Stream(s) => s.call_id.0 == id,
                    _ => false,
                })
                .collect()
        };
        if one_thread {
            if let Some((_, after)) = sub.tu {
                let past: Vec<_> = log.iter().filter(|(t, _)| *t > after).collect();
                assert!(
                    past.is_empty(),
                    "{}",
                    ctx(&format!("after unsubscribe: {past:?}"))
                );
            }
        }
        let until = sub.tu.map_or(u64::MAX, |(before, _)| before);
        let gone = sub.tu.map(|(_, after)| after);
        // An outcome is certain for this subscriber when its operation was sent after
        // `ts` and the evidence of the outcome came before `tu`.
        let must = |op: &Op, evidence: Option<u64>| {
            op.start > sub.ts && evidence.is_some_and(|e| e < until)
        };
        let never = |op: &Op| gone.is_some_and(|g| op.start > g);
        // 1 if the outcome of `op` is certain by `evidence`, having checked it was `seen`
        // (`what` names the part of it, for the message).
        let certain = |op: &Op, evidence: Option<u64>, seen: bool, what: &str| -> u64 {
            if !must(op, evidence) {
                return 0;
            }
            assert!(
                seen,
                "{}",
                ctx(&format!("missed {what}{op:?}; saw {:?}", of(op.id)))
            );
            1
        };
        // The evidence that the connection ended an operation that ran and got no answer.
        let closed = |op: &Op| {
            (op.answer.is_none() && started.contains(&op.id))
                .then_some(case.closed_at)
                .flatten()
        };
        let mut calls: HashMap<u64, usize> = HashMap::new();
        let mut starts: HashMap<u64, usize> = HashMap::new();
        let mut ends: HashMap<u64, (usize, StreamPhase)> = HashMap::new();
        let mut boots: HashMap<BootKey, u64> = HashMap::new();
        let mut errors = 0;
        for (at, (_, event)) in log.iter().enumerate() {
            match event {
                Event::Call(c) => {
                    let op = case.ops.iter().rev().find(|o| o.id == c.call_id.0);
                    let op = op.unwrap_or_else(|| panic!("{}", ctx(&format!("no op: {c:?}"))));
                    assert!(!never(op), "{}", ctx(&format!("after unsubscribe: {c:?}")));
                    assert!(
                        calls.insert(c.call_id.0, at).is_none(),
                        "{}",
                        ctx(&format!("twice: {c:?}"))
                    );
                    let (target, method, cap_name, refused) = match &op.what {
                        What::Call {
                            target,
                            method,
                            cap_name,
                            refused,
                        } => (*target, method.as_str(), *cap_name, *refused),
                        What::Stream { target, .. } => (*target, "nums", Some(EV), false),
                        What::Boot { .. } => (0, "bootstrap", None, true),
                    };
                    let fields = (c.cap_id.0, c.cap_name.as_deref(), c.method.as_str());
                    assert_eq!(
                        fields,
                        (target, cap_name, method),
                        "{}",
                        ctx(&format!("{c:?} for {op:?}"))
                    );
                    match &op.answer {
                        Some((_, answer)) => {
                            let expected = match answer {
                                Answer::Value(_) => Ok(()),
                                Answer::Error { code, .. } => Err(*code),
                                other => panic!(
                                    "{}",
                                    ctx(&format!("{c:?} for a stream that ran: {other:?}"))
                                ),
                            };
                            assert_eq!(c.result, expected, "{}", ctx(&format!("{c:?} for {op:?}")));
                            let ran = !refused && !refusal(answer);
                            assert_eq!(
                                c.duration.is_some(),
                                ran,
                                "{}",
                                ctx(&format!("duration of {c:?} for {op:?}"))
                            );
                            if matches!(op.what, What::Boot { .. } | What::Stream { .. }) {
                                assert!(refusal(answer), "{}", ctx(&format!("{c:?} for {op:?}")));
                            }
                        }
                        // No answer the peer read (it left, the connection closed, or the
                        // client failed the call locally on its cancel): without a
                        // duration, it was refused (the in-flight limit, a drain) or the
                        // close ended it.
                        None => {
                            let codes =
                                [Code::Cancelled, Code::ResourceExhausted, Code::Unavailable];
                            if c.duration.is_none() && !refused {
                                assert!(
                                    codes.iter().any(|&code| c.result == Err(code)),
                                    "{}",
                                    ctx(&format!("{c:?} for {op:?}"))
                                );
                            }
                        }
                    }
                }
                Event::Stream(s) => {
                    let op = case.ops.iter().rev().find(|o| o.id == s.call_id.0);
                    let op = op.unwrap_or_else(|| panic!("{}", ctx(&format!("no op: {s:?}"))));
                    assert!(!never(op), "{}", ctx(&format!("after unsubscribe: {s:?}")));
                    let What::Stream { target, n, fail_at } = op.what else {
                        panic!("{}", ctx(&format!("{s:?} for {op:?}")));
                    };
                    let fields = (s.cap_id.0, s.cap_name.as_deref(), s.method.as_str());
                    assert_eq!(
                        fields,
                        (target, Some(EV), "nums"),
                        "{}",
                        ctx(&format!("{s:?}"))
                    );
                    if s.phase == StreamPhase::Start {
                        assert_eq!(s.count, 0, "{}", ctx(&format!("{s:?}")));
                        assert!(
                            starts.insert(s.call_id.0, at).is_none(),
                            "{}",
                            ctx(&format!("twice: {s:?}"))
                        );
                        continue;
                    }
                    assert!(
                        ends.insert(s.call_id.0, (at, s.phase)).is_none(),
                        "{}",
                        ctx(&format!("two ends: {s:?}"))
                    );
                    if let Some(&first) = starts.get(&s.call_id.0) {
                        assert!(first < at, "{}", ctx(&format!("end before start: {s:?}")));
                    }
                    let sent_all = fail_at.map_or(n, |f| f.min(n));
                    let ok = match (s.phase, &op.answer) {
                        (StreamPhase::End, Some((_, Answer::End)) | None) => {
                            s.count == n && fail_at.is_none_or(|f| f >= n)
                        }
                        (StreamPhase::Error, Some((_, Answer::StreamError(_))) | None) => {
                            fail_at.is_some_and(|f| f < n) && s.count == sent_all
                        }
                        (StreamPhase::Cancel, Some((_, Answer::End))) => {
                            op.cancelled && s.count >= op.received && s.count <= sent_all
                        }
                        (StreamPhase::Cancel, None) => {
                            s.count >= op.received && s.count <= sent_all
                        }
                        _ => false,
                    };
                    assert!(ok, "{}", ctx(&format!("{s:?} for {op:?}")));
                }
                Event::Bootstrap(b) => {
                    assert_eq!(
                        b.cap_id.is_some(),
                        b.result == BootstrapResult::Ok,
                        "{}",
                        ctx(&format!("{b:?}"))
                    );
                    if let Some(id) = b.cap_id {
                        let got = case.caps.get(&b.name);
                        assert!(
                            got.is_some_and(|ids| ids.contains(&id)) || case.closed_at.is_some(),
                            "{}",
                            ctx(&format!("{b:?}: the peer got {got:?}"))
                        );
                    }
                    *boots
                        .entry((b.name.clone(), b.version.clone(), format!("{:?}", b.result)))
                        .or_default() += 1;
                }
                Event::Error(e) => {
                    assert_eq!(e.phase, "policy", "{}", ctx(&format!("{e:?}")));
                    errors += 1;
                }
                other => panic!("{}", ctx(&format!("unexpected {other:?}"))),
            }
        }
        // What must have been seen, and the bootstraps' counts.
        let mut boot_bounds: HashMap<BootKey, (u64, u64)> = HashMap::new();
        let mut broken = 0;
        for op in &case.ops {
            let evidence = op
                .answer
                .as_ref()
                .map(|(t, _)| *t)
                .or(op.later)
                .or(closed(op));
            match &op.what {
                What::Boot {
                    name,
                    version,
                    expect,
                } => {
                    if op.answer.as_ref().is_some_and(|(_, a)| drained(a)) {
                        must_total += certain(op, evidence, calls.contains_key(&op.id), "");
                        continue;
                    }
                    if never(op) {
                        continue;
                    }
                    if *expect == BootstrapResult::Internal {
                        broken += 1;
                    }
                    let key = (name.clone(), version.clone(), format!("{expect:?}"));
                    let bounds = boot_bounds.entry(key).or_default();
                    bounds.1 += 1;
                    if op.answer.is_some() && must(op, evidence) {
                        bounds.0 += 1;
                        must_total += 1;
                    }
                }
                What::Call { .. } => {
                    must_total += certain(op, evidence, calls.contains_key(&op.id), "");
                }
                What::Stream { .. } => {
                    // A `result` error: refused before it ran (a `call` event, no stream).
                    let refused = op
                        .answer
                        .as_ref()
                        .is_some_and(|(_, a)| matches!(a, Answer::Error { .. }));
                    let both = calls.contains_key(&op.id)
                        && (starts.contains_key(&op.id) || ends.contains_key(&op.id));
                    assert!(
                        !both,
                        "{}",
                        ctx(&format!("refused and run: {:?}", of(op.id)))
                    );
                    // Without an answer (a client's stream it let go of), it may have been
                    // refused: the `call` event stands for its end.
                    let unanswered_refusal = op.answer.is_none() && calls.contains_key(&op.id);
                    if refused || unanswered_refusal {
                        must_total += certain(op, evidence, calls.contains_key(&op.id), "");
                        continue;
                    }
                    let began = op.first_frame.or(closed(op));
                    must_total += certain(op, began, starts.contains_key(&op.id), "the start of ");
                    must_total += certain(op, evidence, ends.contains_key(&op.id), "the end of ");
                }
            }
        }
        for (key, n) in &boots {
            let (min, max) = boot_bounds.get(key).copied().unwrap_or_default();
            assert!(
                (min..=max).contains(n),
                "{}",
                ctx(&format!(
                    "{n} bootstrap events {key:?}, expected {min}..={max}"
                ))
            );
        }
        for (key, (min, _)) in &boot_bounds {
            assert!(
                *min == 0 || boots.contains_key(key),
                "{}",
                ctx(&format!("missed {min} bootstraps {key:?}"))
            );
        }
        assert!(
            errors <= broken,
            "{}",
            ctx(&format!("{errors} policy errors for {broken}"))
        );
    }
    must_total
}

// ---------------------------------------------------------------------------------------
// One case

#[derive(Clone, Copy, Debug)]
enum Ending {
    Close,
    Drain(u64),
    PeerLeaves,
}

fn builder(rng: &mut Rng, policy: bool) -> bunite_rpc::ConnectionBuilder {
    let mut b = Connection::builder();
    if rng.chance(40) {
        b = b.limits(Limits {
            max_in_flight: 2 + rng.below(4) as usize,
            ..Limits::default()
        });
    }
    if policy {
        let slow = rng.chance(50);
        b = b.policy(Policy::from_async(move |name: String, _| async move {
            if slow {
                tokio::time::sleep(Duration::from_millis(1 + name.len() as u64 % 4)).await;
            }
            match name.as_str() {
                "t.denied" => Ok(false),
                "t.broken" => Err("policy backend down".to_owned()),
                _ => Ok(true),
            }
        }));
    }
    b
}

async fn serve(conn: &Connection, started: &Started) {
    conn.serve(ev_def(), ev_impl(started))
        .await
        .unwrap()
        .detach();
    for name in ["t.denied", "t.broken"] {
        let def = CapDef::builder(name).method(MethodDef::call("now")).build();
        conn.serve(def, ev_impl(started)).await.unwrap().detach();
    }
}

async fn case(seed: u64) {
    let mut rng = Rng(seed);
    let policy = rng.chance(50);
    let raw = rng.chance(55);
    let started = Started::default();
    let b = builder(&mut rng, policy);
    if raw {
        let (conn, peer) = RawPeer::connect(b).await;
        let case = new_case(conn, policy, started);
        raw_case(case, peer, rng).await;
        TALLY.lock().unwrap().raw += 1;
    } else {
        let (conn, client) = pair_with(b, Connection::builder());
        let case = new_case(conn, policy, started);
        client_case(case, client, rng).await;
        TALLY.lock().unwrap().client += 1;
    }
}

fn new_case(conn: Connection, policy: bool, started: Started) -> Case {
    Case {
        clock: Clock::default(),
        conn,
        ops: Vec::new(),
        subs: Vec::new(),
        started,
        done: Arc::new(AtomicBool::new(false)),
        late: Arc::new(Mutex::new(Vec::new())),
        closed_at: None,
        policy,
        caps: HashMap::new(),
    }
}

/// The ending drawn for a case, if any.
fn draw_ending(rng: &mut Rng) -> Option<Ending> {
    match rng.below(10) {
        0..=1 => Some(Ending::Close),
        2..=3 => Some(Ending::Drain(rng.below(30))),
        4..=5 => Some(Ending::PeerLeaves),
        _ => None,
    }
}

/// After the case (its connection closing): waits for the close, marks it done, checks and
/// tallies.
async fn finish(mut case: Case, ending: Option<Ending>, closed_early: bool) {
    {
        case.conn.closed().await;
        case.closed_at = Some(case.clock.tick());
        case.done.store(true, Ordering::SeqCst);
        // Time for a late event to show.
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_clean(&[&case.conn]).await;
    }
    let one_thread = std::env::var("BUNITE_TEST_RUNTIME").as_deref() != Ok("multi");
    let must = check(&case, one_thread);
    let mut tally = TALLY.lock().unwrap();
    tally.ops += case.ops.len() as u64;
    tally.must += must;
    tally.subscribers += case.subs.len() as u64;
    tally.events += (case.subs.iter())
        .map(|s| s.log.lock().unwrap().len() as u64)
        .sum::<u64>();
    let i = match ending {
        Some(Ending::Close) => 0,
        Some(Ending::Drain(_)) => 1,
        Some(Ending::PeerLeaves) => 2,
        None if closed_early => 3,
        None => 4,
    };
    tally.endings[i] += 1;
}

// ---------------------------------------------------------------------------------------
// A raw peer

struct Raw {
    peer: RawPeer,
    next_id: u64,
    /// The peer's references, to give back at the end.
    held: HashMap<CapId, u32>,
    ev: Option<CapId>,
    /// Calls held open (`wait` with neither cancel nor deadline).
    holding: Vec<u64>,
    /// Streams the peer cancels after this many values.
    cancel_after: HashMap<u64, u64>,
    /// The transport closed.
    gone: bool,
}

async fn raw_case(mut case: Case, peer: RawPeer, mut rng: Rng) {
    serve(&case.conn, &case.started).await;
    let mut raw = Raw {
        peer,
        next_id: 1,
        held: HashMap::new(),
        ev: None,
        holding: Vec::new(),
        cancel_after: HashMap::new(),
        gone: false,
    };
    if rng.chance(50) {
        case.churn(&mut rng);
    }
    // The cap the calls go to.
    raw_send_boot(&mut case, &mut raw, Value::from(EV), Some("1")).await;
    raw_collect(&mut case, &mut raw, false).await;
    let ending = draw_ending(&mut rng);
    let steps = 2 + rng.below(10);
    for _ in 0..steps {
        if raw.gone || case.conn.is_closed() {
            break;
        }
        match rng.below(100) {
            0..=19 => case.churn(&mut rng),
            20..=84 => raw_batch(&mut case, &mut raw, &mut rng).await,
            _ => raw_release_holders(&mut case, &mut raw).await,
        }
    }
    let closed_early = raw.gone || case.conn.is_closed();
    match ending {
        _ if closed_early => raw_collect(&mut case, &mut raw, true).await,
        Some(Ending::Close) => {
            case.conn.close();
            raw_collect(&mut case, &mut raw, true).await;
        }
        Some(Ending::Drain(grace)) => {
            case.conn.drain(Duration::from_millis(grace));
            if rng.chance(60) {
                raw_batch(&mut case, &mut raw, &mut rng).await;
            }
            raw_collect(&mut case, &mut raw, true).await;
        }
        Some(Ending::PeerLeaves) => drop(raw.peer),
        None => {
            raw_release_holders(&mut case, &mut raw).await;
            let caps = raw.held.iter().map(|(&id, &n)| DropEntry { id, delta: n });
            let caps: Vec<_> = caps.collect();
            if !raw.gone && !caps.is_empty() {
                raw.peer.try_send(Frame::Drop(DropFrame { caps })).await;
            }
            if !raw.gone && !case.conn.is_closed() {
                assert_clean(&[&case.conn]).await;
            }
            case.conn.close();
            raw_collect(&mut case, &mut raw, true).await;
        }
    }
    finish(case, ending.filter(|_| !closed_early), closed_early).await;
}

fn new_id(raw: &mut Raw) -> u64 {
    let id = raw.next_id;
    raw.next_id += 1;
    id
}

/// Sends a frame, unless the connection no longer reads.
async fn raw_send(raw: &mut Raw, frame: Frame) {
    if !raw.gone && !raw.peer.try_send(frame).await {
        raw.gone = true;
    }
}

async fn raw_send_boot(case: &mut Case, raw: &mut Raw, name: Value, version: Option<&str>) {
    let id = new_id(raw);
    let shown = match &name {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        _ => unreachable!(),
    };
    let expect = match name {
        Value::Str(_) => case.boot_expect(&shown, version),
        _ => BootstrapResult::InvalidArgument,
    };
    let mut args = Record::new().with("name", name);
    if let Some(v) = version {
        args.insert("version", v);
    }
    let what = What::Boot {
        name: shown,
        version: version.map(str::to_owned),
        expect,
    };
    case.op(id, what);
    let frame = call_frame(CapId::BOOTSTRAP, id, "bootstrap", Value::Record(args));
    raw_send(raw, frame).await;
}

/// One batch: a few operations sent together (subscribers changing among them, some
/// cancelled), then read until every one of them not held open is answered.
async fn raw_batch(case: &mut Case, raw: &mut Raw, rng: &mut Rng) {
    let Some(ev) = raw.ev else {
        return;
    };
    for _ in 0..1 + rng.below(5) {
        if rng.chance(10) {
            case.churn(rng);
        }
        let id = new_id(raw);
        let call = |target: u32, method: &str, cap_name, refused| What::Call {
            target,
            method: method.to_owned(),
            cap_name,
            refused,
        };
        let mut meta = None;
        let mut cancel = false;
        let (what, args) = match rng.below(100) {
            0..=14 => (call(ev.0, "now", Some(EV), false), Value::Undefined),
            15..=24 => {
                let ms = rng.below(6);
                let args = Value::Record(Record::new().with("ms", ms as i64));
                (call(ev.0, "later", Some(EV), false), args)
            }
            25..=34 => {
                let ms = rng.below(3) * rng.below(4);
                let code = rng.below(4) as i64;
                let args = Value::Record(Record::new().with("ms", ms as i64).with("code", code));
                (call(ev.0, "fail", Some(EV), false), args)
            }
            35..=44 => {
                // Cancelled by the peer, or given a deadline, or held open.
                match rng.below(3) {
                    0 => cancel = true,
                    1 => {
                        meta = Some(CallMeta {
                            deadline_ms: Some(1.0 + rng.below(15) as f64),
                            ..CallMeta::default()
                        })
                    }
                    _ => raw.holding.push(id),
                }
                (call(ev.0, "wait", Some(EV), false), Value::Undefined)
            }
            45..=64 => {
                let n = rng.below(21);
                let fail_at = rng.chance(25).then(|| rng.below(n + 2));
                let ms = if rng.chance(30) { 1 } else { 0 };
                let mut args = Record::new().with("n", n as i64).with("ms", ms);
                if let Some(f) = fail_at {
                    args.insert("fail", f as i64);
                }
                if rng.chance(30) {
                    raw.cancel_after.insert(id, rng.below(n + 1));
                }
                let what = What::Stream {
                    target: ev.0,
                    n,
                    fail_at,
                };
                (what, Value::Record(args))
            }
            65..=69 => (call(ev.0, "undeclared", Some(EV), true), Value::Undefined),
            70..=74 => (call(ev.0, "nope", Some(EV), true), Value::Undefined),
            75..=79 => {
                let target = [0, 1, 999][rng.below(3) as usize];
                (call(target, "get", None, true), Value::Undefined)
            }
            _ => {
                raw.next_id -= 1;
                let (name, version) = match rng.below(7) {
                    0 => (Value::from(EV), None),
                    1 => (Value::from(EV), Some("2")),
                    2 => (Value::from("nope"), None),
                    3 => (Value::from("t.denied"), None),
                    4 => (Value::from("t.broken"), None),
                    5 => (Value::from(5i64), None),
                    _ => (Value::from(EV), Some("1")),
                };
                raw_send_boot(case, raw, name, version).await;
                continue;
            }
        };
        let target = match &what {
            What::Call { target, .. } | What::Stream { target, .. } => CapId(*target),
            What::Boot { .. } => unreachable!(),
        };
        let method = match &what {
            What::Call { method, .. } => method.clone(),
            _ => "nums".to_owned(),
        };
        case.op(id, what);
        let frame = Frame::Call(Call {
            id: CallId(id),
            target,
            method: Text::copy_from(&method),
            args,
            meta,
        });
        raw_send(raw, frame).await;
        if cancel {
            if rng.chance(50) {
                tokio::time::sleep(Duration::from_millis(rng.below(3))).await;
            }
            let reason = Some("enough".into());
            raw_send(
                raw,
                Frame::Cancel(Cancel {
                    id: CallId(id),
                    reason,
                }),
            )
            .await;
        }
        if rng.chance(10) {
            case.churn(rng);
        }
    }
    raw_collect(case, raw, false).await;
}

/// Cancels the calls held open and reads their answers.
async fn raw_release_holders(case: &mut Case, raw: &mut Raw) {
    for id in std::mem::take(&mut raw.holding) {
        let reason = Some("released".into());
        raw_send(
            raw,
            Frame::Cancel(Cancel {
                id: CallId(id),
                reason,
            }),
        )
        .await;
    }
    raw_collect(case, raw, false).await;
}

/// Reads frames until every operation not held open is answered, or (`to_end`) until the
/// connection closes its transport.
async fn raw_collect(case: &mut Case, raw: &mut Raw, to_end: bool) {
    loop {
        let waiting = (case.ops.iter()).any(|o| o.answer.is_none() && !raw.holding.contains(&o.id));
        if raw.gone || (!to_end && !waiting) {
            return;
        }
        let frame = match raw.peer.recv_within(HANG).await {
            Err(_) => panic!(
                "the peer waited {HANG:?} for a frame: {:?}",
                case.conn.stats()
            ),
            Ok(None) => {
                raw.gone = true;
                return;
            }
            Ok(Some(frame)) => frame,
        };
        raw_frame(case, raw, frame).await;
    }
}

async fn raw_frame(case: &mut Case, raw: &mut Raw, frame: Frame) {
    let clock = case.clock.clone();
    match frame {
        Frame::Result(r) => {
            let Some(op) = case.by_id(r.id.0) else {
                panic!("a result for no call: {r:?}");
            };
            let answer = match r.outcome {
                Ok(Value::CapRef(id)) => Answer::Value(Some(id)),
                Ok(_) => Answer::Value(None),
                Err(e) => Answer::Error {
                    code: Code::parse(&e.code).unwrap_or(Code::Internal),
                    reason: e.reason().map(str::to_owned),
                },
            };
            op.answered(&clock, answer.clone());
            if let What::Boot { name, expect, .. } = &op.what {
                let (name, expect) = (name.clone(), *expect);
                match answer {
                    Answer::Value(Some(id)) => {
                        assert_eq!(expect, BootstrapResult::Ok, "bootstrap of {name}: {id:?}");
                        *raw.held.entry(id).or_default() += 1;
                        case.caps.entry(name.clone()).or_default().insert(id);
                        if name == EV && raw.ev.is_none() {
                            raw.ev = Some(id);
                        }
                    }
                    other => assert!(
                        expect != BootstrapResult::Ok || drained(&other),
                        "bootstrap of {name}: {other:?}"
                    ),
                }
            }
        }
        Frame::Stream(StreamFrame { id, event }) => {
            let cancel_after = raw.cancel_after.get(&id.0).copied();
            let Some(op) = case.by_id(id.0) else {
                panic!("a stream frame for no call: {id:?}");
            };
            if op.first_frame.is_none() {
                op.first_frame = Some(clock.tick());
            }
            match event {
                StreamEvent::Next(_) => {
                    op.received += 1;
                    let received = op.received;
                    let ended = op.answer.is_some() || op.cancelled;
                    if cancel_after.is_some_and(|k| received >= k) && !ended {
                        op.cancelled = true;
                        let reason = Some("client_cancel".into());
                        raw_send(raw, Frame::Cancel(Cancel { id, reason })).await;
                    } else if received % CREDIT == 0 && !ended {
                        let event = StreamEvent::Credit(Some(CREDIT));
                        raw_send(raw, Frame::Stream(StreamFrame { id, event })).await;
                    }
                }
                StreamEvent::End => op.answered(&clock, Answer::End),
                StreamEvent::Error(e) => {
                    let code = Code::parse(&e.code).unwrap_or(Code::Internal);
                    op.answered(&clock, Answer::StreamError(code));
                }
                StreamEvent::Credit(_) => panic!("credit from the server"),
            }
        }
        Frame::Hello(_) | Frame::Goaway(_) | Frame::Drop(_) | Frame::CapRevoked(_) => {}
        other => panic!("unexpected {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// A client connection

/// What a client's operation ended with: an answer of the server's, or a local failure
/// (its own cancel, the connection closing), which tells nothing of the server's outcome.
enum Got {
    Answer(Answer, Option<Client>),
    Local,
}

/// How a client's operation ended: its index, its outcome, when the client had it, and
/// for a stream when its first item came and how many values.
struct Ended {
    at: usize,
    got: Got,
    tick: u64,
    first: Option<u64>,
    received: u64,
}

type Task = tokio::task::JoinHandle<Ended>;

struct Peer {
    client: Connection,
    next_id: u64,
    ev: Option<Client>,
    /// References to give back at the end.
    held: Vec<Client>,
    tasks: Vec<Task>,
    /// The calls held open, and the tokens that cancel them.
    holding: Vec<(CancellationToken, usize, Task)>,
    /// Operations failed locally, whose outcome the next answer of the server proves.
    unproven: Vec<usize>,
}

fn remote(e: &Error) -> Got {
    if e.is_remote() {
        Got::Answer(
            Answer::Error {
                code: e.code(),
                reason: e.reason().map(str::to_owned),
            },
            None,
        )
    } else {
        Got::Local
    }
}

async fn client_case(mut case: Case, client: Connection, mut rng: Rng) {
    serve(&case.conn, &case.started).await;
    let mut peer = Peer {
        client,
        next_id: 1,
        ev: None,
        held: Vec::new(),
        tasks: Vec::new(),
        holding: Vec::new(),
        unproven: Vec::new(),
    };
    if rng.chance(50) {
        case.churn(&mut rng);
    }
    client_boot(&mut case, &mut peer, EV, Some("1")).await;
    client_join(&mut case, &mut peer).await;
    let ending = draw_ending(&mut rng);
    let steps = 2 + rng.below(10);
    for _ in 0..steps {
        if case.conn.is_closed() || peer.client.is_closed() {
            break;
        }
        match rng.below(100) {
            0..=19 => case.churn(&mut rng),
            20..=84 => client_batch(&mut case, &mut peer, &mut rng).await,
            _ => client_release_holders(&mut case, &mut peer).await,
        }
    }
    let closed_early = case.conn.is_closed() || peer.client.is_closed();
    match ending {
        _ if closed_early => {}
        Some(Ending::Close) => case.conn.close(),
        Some(Ending::Drain(grace)) => {
            case.conn.drain(Duration::from_millis(grace));
            if rng.chance(60) {
                client_batch(&mut case, &mut peer, &mut rng).await;
            }
        }
        Some(Ending::PeerLeaves) => peer.client.close(),
        None => {
            client_release_holders(&mut case, &mut peer).await;
            peer.ev = None;
            peer.held.clear();
            if !case.conn.is_closed() {
                assert_clean(&[&case.conn, &peer.client]).await;
            }
            case.conn.close();
        }
    }
    // The calls held open end as the connection closes.
    for (_, _, task) in std::mem::take(&mut peer.holding) {
        peer.tasks.push(task);
    }
    client_join(&mut case, &mut peer).await;
    peer.client.closed().await;
    drop(peer);
    finish(case, ending.filter(|_| !closed_early), closed_early).await;
}

/// Starts `fut` (its first poll takes its call id: a `Connection`'s ids go from 1 upward in
/// the order its calls are made) and runs the rest on a task of its own.
fn start<F>(at: usize, clock: &Clock, fut: F) -> Task
where
    F: std::future::Future<Output = Got> + Send + 'static,
{
    let mut fut = Box::pin(fut);
    let polled = futures::FutureExt::now_or_never(fut.as_mut());
    let clock = clock.clone();
    tokio::spawn(async move {
        let got = match polled {
            Some(got) => got,
            None => fut.await,
        };
        let tick = clock.tick();
        Ended {
            at,
            got,
            tick,
            first: None,
            received: 0,
        }
    })
}

fn next_id(peer: &mut Peer) -> u64 {
    let id = peer.next_id;
    peer.next_id += 1;
    id
}

async fn client_boot(
    case: &mut Case,
    peer: &mut Peer,
    name: &'static str,
    version: Option<&'static str>,
) {
    if peer.client.is_closed() {
        return;
    }
    let expect = case.boot_expect(name, version);
    let what = What::Boot {
        name: name.to_owned(),
        version: version.map(str::to_owned),
        expect,
    };
    let at = case.op(next_id(peer), what);
    let client = peer.client.clone();
    let fut = async move {
        match client.bootstrap_name(name, version).await {
            Ok(c) => Got::Answer(Answer::Value(Some(c.id())), Some(c)),
            Err(e) => remote(&e),
        }
    };
    let task = start(at, &case.clock, fut);
    peer.tasks.push(task);
}

async fn client_batch(case: &mut Case, peer: &mut Peer, rng: &mut Rng) {
    let Some(ev) = peer.ev.clone() else {
        return;
    };
    for _ in 0..1 + rng.below(5) {
        if rng.chance(10) {
            case.churn(rng);
        }
        if peer.client.is_closed() {
            break;
        }
        let choice = rng.below(100);
        if choice >= 80 {
            let (name, version) = match rng.below(6) {
                0 => (EV, None),
                1 => (EV, Some("2")),
                2 => ("nope", None),
                3 => ("t.denied", None),
                4 => ("t.broken", None),
                _ => (EV, Some("1")),
            };
            client_boot(case, peer, name, version).await;
            continue;
        }
        if (45..65).contains(&choice) {
            client_stream(case, peer, rng, &ev);
            continue;
        }
        let call = |target: u32, method: &str, cap_name, refused| What::Call {
            target,
            method: method.to_owned(),
            cap_name,
            refused,
        };
        let mut opts = CallOptions::default();
        let mut hold = None;
        let mut target = ev.clone();
        let (what, args) = match choice {
            0..=14 => (call(ev.id().0, "now", Some(EV), false), Value::Undefined),
            15..=24 => {
                let args = Value::Record(Record::new().with("ms", rng.below(6) as i64));
                (call(ev.id().0, "later", Some(EV), false), args)
            }
            25..=34 => {
                let ms = (rng.below(3) * rng.below(4)) as i64;
                let code = rng.below(4) as i64;
                let args = Value::Record(Record::new().with("ms", ms).with("code", code));
                (call(ev.id().0, "fail", Some(EV), false), args)
            }
            35..=44 => {
                match rng.below(3) {
                    0 => {
                        let token = CancellationToken::new();
                        opts.cancel = Some(token.clone());
                        let wait = Duration::from_millis(rng.below(3));
                        tokio::spawn(async move {
                            tokio::time::sleep(wait).await;
                            token.cancel();
                        });
                    }
                    1 => opts.deadline = Some(Duration::from_millis(1 + rng.below(15))),
                    _ => {
                        let token = CancellationToken::new();
                        opts.cancel = Some(token.clone());
                        hold = Some(token);
                    }
                }
                (call(ev.id().0, "wait", Some(EV), false), Value::Undefined)
            }
            65..=69 => (
                call(ev.id().0, "undeclared", Some(EV), true),
                Value::Undefined,
            ),
            70..=74 => (call(ev.id().0, "nope", Some(EV), true), Value::Undefined),
            _ => {
                let id = [1, 999][rng.below(2) as usize];
                target = peer.client.client_for(CapId(id));
                (call(id, "get", None, true), Value::Undefined)
            }
        };
        let method = match &what {
            What::Call { method, .. } => method.clone(),
            _ => unreachable!(),
        };
        // A call the client cancels fails locally: what the server made of it is proven
        // later (a call held open, once released).
        let cancelled = opts.cancel.is_some() && hold.is_none();
        let at = case.op(next_id(peer), what);
        if cancelled {
            peer.unproven.push(at);
        }
        let fut = async move {
            match target.call_with(&method, args, opts).await {
                Ok(_) => Got::Answer(Answer::Value(None), None),
                Err(e) => remote(&e),
            }
        };
        let task = start(at, &case.clock, fut);
        match hold {
            Some(token) => peer.holding.push((token, at, task)),
            None => peer.tasks.push(task),
        }
        if rng.chance(10) {
            case.churn(rng);
        }
    }
    client_join(case, peer).await;
}

fn client_stream(case: &mut Case, peer: &mut Peer, rng: &mut Rng, ev: &Client) {
    let n = rng.below(21);
    let fail_at = rng.chance(25).then(|| rng.below(n + 2));
    let ms = if rng.chance(30) { 1 } else { 0 };
    let mut args = Record::new().with("n", n as i64).with("ms", ms);
    if let Some(f) = fail_at {
        args.insert("fail", f as i64);
    }
    let cancel_after = rng.chance(30).then(|| rng.below(n + 1));
    let what = What::Stream {
        target: ev.id().0,
        n,
        fail_at,
    };
    let start_tick = case.clock.tick();
    let mut stream = ev.stream("nums", Value::Record(args));
    let Some(id) = stream.call_id() else {
        return;
    };
    assert_eq!(id.0, next_id(peer), "the client's call ids");
    case.ops.push(Op::new(id.0, what, start_tick));
    let at = case.ops.len() - 1;
    if cancel_after.is_some() {
        peer.unproven.push(at);
    }
    let clock = case.clock.clone();
    peer.tasks.push(tokio::spawn(async move {
        let mut received = 0;
        let mut first = None;
        let got = loop {
            if cancel_after.is_some_and(|k| received >= k) {
                drop(stream);
                break Got::Local;
            }
            let item = stream.next().await;
            let tick = clock.tick();
            match item {
                Some(Ok(_)) => received += 1,
                None => break Got::Answer(Answer::End, None),
                Some(Err(e)) if !e.is_remote() => break Got::Local,
                Some(Err(e)) if FAIL_CODES.contains(&e.code()) => {
                    first.get_or_insert(tick);
                    break Got::Answer(Answer::StreamError(e.code()), None);
                }
                // Refused before it ran: a `result` frame, no stream.
                Some(Err(e)) => break remote(&e),
            }
            first.get_or_insert(tick);
        };
        let first = match got {
            Got::Answer(Answer::End, _) => first.or(Some(clock.tick())),
            _ => first,
        };
        Ended {
            at,
            got,
            tick: clock.tick(),
            first,
            received,
        }
    }));
}

/// Waits for every operation's task (the calls held open aside), then proves the outcomes
/// the client failed locally by one more call: the server reads in order, so once it has
/// answered that call it has reported what the cancels sent before it ended.
async fn client_join(case: &mut Case, peer: &mut Peer) {
    for task in std::mem::take(&mut peer.tasks) {
        let ended = task.await.expect("an operation's task");
        record(case, peer, ended);
    }
    let Some(ev) = peer.ev.clone() else {
        return;
    };
    if peer.unproven.is_empty() || peer.client.is_closed() {
        return;
    }
    let what = What::Call {
        target: ev.id().0,
        method: "now".to_owned(),
        cap_name: Some(EV),
        refused: false,
    };
    let at = case.op(next_id(peer), what);
    let got = match ev.call_value("now", Value::Undefined).await {
        Ok(_) => Got::Answer(Answer::Value(None), None),
        Err(e) => remote(&e),
    };
    let tick = case.clock.tick();
    let proven = matches!(got, Got::Answer(..));
    record(
        case,
        peer,
        Ended {
            at,
            got,
            tick,
            first: None,
            received: 0,
        },
    );
    if proven {
        for i in std::mem::take(&mut peer.unproven) {
            case.ops[i].later.get_or_insert(tick);
        }
    }
}

fn record(case: &mut Case, peer: &mut Peer, ended: Ended) {
    let op = &mut case.ops[ended.at];
    op.first_frame = ended.first;
    op.received = ended.received;
    if let Got::Answer(answer, client) = ended.got {
        if let (What::Boot { name, expect, .. }, Answer::Value(Some(id))) = (&op.what, &answer) {
            assert_eq!(*expect, BootstrapResult::Ok, "bootstrap of {name}: {id:?}");
            case.caps.entry(name.clone()).or_default().insert(*id);
            if let Some(c) = client {
                if name == EV && peer.ev.is_none() {
                    peer.ev = Some(c.clone());
                }
                peer.held.push(c);
            }
        }
        op.answer = Some((ended.tick, answer));
    }
}

async fn client_release_holders(case: &mut Case, peer: &mut Peer) {
    for (token, at, task) in std::mem::take(&mut peer.holding) {
        token.cancel();
        peer.unproven.push(at);
        peer.tasks.push(task);
    }
    client_join(case, peer).await;
}
