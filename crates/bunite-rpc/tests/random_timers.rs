//! Seeded random operations on a paused clock: the connection's long timers (the hello and
//! bootstrap timeouts, a drain's grace, the write-stall limit, call deadlines of
//! milliseconds to minutes and the client's deadline + 500 ms, the pending table's shed),
//! which the real-time cases of `random_ops.rs` never reach, crossed in no real time
//! (`docs/RELIABILITY.md`, "Seeded random operations on a paused clock").
//!
//! Each case is one seed, on [`run_paused`] (one thread, the clock jumping to the next timer
//! whenever every task waits): two peers, `a` and `b`, over the in-memory transport or the
//! byte stream over an in-process duplex, each end wrapped in a [`Knob`] that can hold what
//! it receives until an instant (a peer whose hello comes late) or stop taking what it is
//! given to send (a peer that stopped reading). Both serve `t.svc`: `sleep {ms}` answers
//! `"slept"` after `ms` or `"cancelled"` when signalled (at the deadline: it is not
//! idempotent), `idem {ms}` the same but idempotent (the server ignores its deadline), and
//! the stream `nums {n, every}`, a value every `every` ms. The case draws the limits
//! (`hello_timeout`, `bootstrap_timeout`, `write_stall_timeout`), bootstraps from both
//! sides against the held hello, then one task runs operations: calls with deadlines of
//! 1 ms to minutes on handlers of 0 ms to days, cancelled, dropped or released part way;
//! streams read with pauses; bursts; waits; `tokio::time::advance` steps (which make every
//! timer that they jump over late by up to the step); and, in some cases, one ending: a
//! close or a drain (with a grace) of either side, or a stall of either side's sending.
//!
//! What must hold: every call ends with an outcome one of its events explains (its
//! handler's answer, the server's signal at the deadline, the client's own timer at
//! deadline + 500 ms, its cancellation, or `unavailable` once the ending began), never
//! before that event's time and never after it by more than the `advance` steps made
//! meanwhile (and a few milliseconds of timer rounding), nor after any event sure to end
//! it; a drain closes its side no later than its grace, and a call still running then
//! fails at the grace, not before; a stalled side closes at the write-stall limit; the
//! bootstraps end at the held hello, the hello timeout or the bootstrap timeout, whichever
//! comes first; streams deliver `0..k` in order, and end whole unless the ending cut them;
//! and the harness's checks after each case (both ends clean and idle, no task left).
//!
//! `BUNITE_OPS_SEEDS=N` runs seeds `0..N` (or `A..B`), `BUNITE_OPS_SEED=S` seed S alone.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bunite_rpc::client::CallOptions;
use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::{
    ByteBudget, MessageSink, MessageSource, Transport, TransportError, TransportInfo,
};
use bunite_rpc::{
    CapDef, Client, Code, Connection, Error, Limits, LocalError, MethodDef, Record, Value,
};
use bytes::Bytes;
use common::seeded::{each_seed, Rng};
use common::*;
use futures::StreamExt;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// Seeds of a plain run.
const SEEDS: u64 = 1500;

/// What tokio's timer wheel may add to each timer (it rounds up to the millisecond), over
/// the few timers an outcome goes through.
const EPS: Duration = Duration::from_millis(4);

/// How long a case may take on the paused clock: far beyond its longest timer (a few
/// minutes), far below [`FOREVER`].
const CASE_BOUND: Duration = Duration::from_secs(24 * 3600);

/// The client's wait past a call's deadline (PROTOCOL §11).
const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// A handler that never answers by itself (a call to it has a deadline, a cancellation or
/// is dropped).
const FOREVER: u64 = 10 * 24 * 3600 * 1000;

#[test]
fn random_operations_on_a_paused_clock() {
    // On the paused clock: a case that hangs fails at the bound instead of forever.
    let n = each_seed("random_timers", SEEDS, CASE_BOUND, run_paused, case);
    let tally = TALLY.lock().unwrap();
    eprintln!("random_timers: {n} cases: {tally:?}");
}

/// What the cases drove, for the run's line.
#[derive(Debug, Default)]
struct Tally {
    failed_starts: u64,
    closes: u64,
    drains: u64,
    stalls: u64,
    byte_streams: u64,
    steps: u64,
    streams: u64,
    calls: [u64; 5],
}

static TALLY: Mutex<Tally> = Mutex::new(Tally {
    failed_starts: 0,
    closes: 0,
    drains: 0,
    stalls: 0,
    byte_streams: 0,
    steps: 0,
    streams: 0,
    calls: [0; 5],
});

/// The generator's draws of times, for this test alone.
trait Times {
    /// Milliseconds from 1 to `max`, spread over the orders of magnitude (as many of a few
    /// milliseconds as of minutes).
    fn ms(&mut self, max: u64) -> u64;

    fn millis(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.ms(max))
    }
}

impl Times for Rng {
    fn ms(&mut self, max: u64) -> u64 {
        let digits = self.below(u64::from(max.ilog10()) + 1) as u32;
        let top = 10u64.pow(digits + 1).min(max);
        1 + self.below(top)
    }
}

// ---------------------------------------------------------------------------------------
// The transport's knobs.

/// What the case can do to one end's transport.
#[derive(Default)]
struct Knobs {
    /// What this end receives is held until then (the peer's hello among it).
    hold_until: Mutex<Option<Instant>>,
    /// This end's sink takes nothing more, as when the peer stops reading and the buffers
    /// between are full.
    stalled: AtomicBool,
}

/// A transport with [`Knobs`].
struct Knob<T>(T, Arc<Knobs>);

struct KnobSink<S> {
    inner: S,
    knobs: Arc<Knobs>,
}

struct KnobSource<S> {
    inner: S,
    knobs: Arc<Knobs>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<T: Transport> Transport for Knob<T> {
    type Sink = KnobSink<T::Sink>;
    type Source = KnobSource<T::Source>;

    fn split(self) -> (Self::Sink, Self::Source) {
        let (sink, source) = self.0.split();
        let sink = KnobSink {
            inner: sink,
            knobs: self.1.clone(),
        };
        let source = KnobSource {
            inner: source,
            knobs: self.1,
            sleep: None,
        };
        (sink, source)
    }

    fn info(&self) -> TransportInfo {
        self.0.info()
    }
}

impl<S: MessageSource> MessageSource for KnobSource<S> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, TransportError>> {
        let hold = *self.knobs.hold_until.lock().unwrap();
        if let Some(until) = hold {
            if Instant::now() < until {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            *self.knobs.hold_until.lock().unwrap() = None;
            self.sleep = None;
        }
        self.inner.poll_recv(cx)
    }

    fn pause(&mut self) {
        self.inner.pause();
    }

    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.poll_linger(cx)
    }
}

impl<S: MessageSink> MessageSink for KnobSink<S> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        if self.knobs.stalled.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        self.inner.poll_ready(cx)
    }

    fn start_send(&mut self, msg: Bytes) -> Result<(), TransportError> {
        self.inner.start_send(msg)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        if self.knobs.stalled.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        self.inner.poll_flush(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        if self.knobs.stalled.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        self.inner.poll_close(cx)
    }

    fn written(&self) -> u64 {
        self.inner.written()
    }

    fn queued(&self) -> usize {
        self.inner.queued()
    }

    fn send_budget(&self) -> Option<ByteBudget> {
        self.inner.send_budget()
    }
}

// ---------------------------------------------------------------------------------------
// The cap both peers serve.

fn svc_def() -> Arc<CapDef> {
    CapDef::builder("t.svc")
        .method(MethodDef::call("sleep"))
        .method(MethodDef::call("idem").idempotent())
        .method(MethodDef::stream("nums").initial_credit(3))
        .build()
}

fn int_arg(args: &Value, key: &str) -> u64 {
    args.as_record()
        .and_then(|r| r.get(key))
        .and_then(Value::as_integer)
        .unwrap_or(0) as u64
}

/// `sleep` and `idem`: `"slept"` after `ms`, or `"cancelled"` once signalled.
async fn sleeper(args: Value, ctx: bunite_rpc::CallContext) -> SvcResult {
    let ms = int_arg(&args, "ms");
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(Value::from("slept")),
        _ = ctx.cancelled() => Ok(Value::from("cancelled")),
    }
}

type SvcResult = Result<Value, bunite_rpc::Status>;

fn svc_impl() -> Arc<dyn bunite_rpc::CapImpl> {
    DynCap::new()
        .call("sleep", sleeper)
        .call("idem", sleeper)
        .stream("nums", |args: Value, _| {
            let n = int_arg(&args, "n");
            let every = Duration::from_millis(int_arg(&args, "every"));
            let values = futures::stream::unfold(0u64, move |i| async move {
                if i == n {
                    return None;
                }
                tokio::time::sleep(every).await;
                Some((Ok(Value::from(i as i64)), i + 1))
            });
            Ok(values.boxed())
        })
        .build()
}

// ---------------------------------------------------------------------------------------
// What a case records.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

impl Side {
    fn of(i: usize) -> Side {
        if i == 0 {
            Side::A
        } else {
            Side::B
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The one way a case may end before its operations do.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// `side` closed at `at`.
    Close { side: Side, at: Instant },
    /// `side` drained at `at` with `grace`.
    Drain {
        side: Side,
        at: Instant,
        grace: Duration,
    },
    /// `side`'s sink stopped taking anything at `at`; its write-stall limit is `after`.
    Stall {
        side: Side,
        at: Instant,
        after: Duration,
        /// How long the side's closed transport lingers before its peer sees the end.
        linger: Duration,
    },
}

impl Ending {
    fn side(&self) -> Side {
        match *self {
            Ending::Close { side, .. }
            | Ending::Drain { side, .. }
            | Ending::Stall { side, .. } => side,
        }
    }

    fn at(&self) -> Instant {
        match *self {
            Ending::Close { at, .. } | Ending::Drain { at, .. } | Ending::Stall { at, .. } => at,
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The handler's `"slept"`.
    Slept,
    /// The handler's `"cancelled"`: the server signalled it at the deadline.
    Signalled,
    /// `LocalError::DeadlineExceeded`: the client's timer at deadline + 500 ms.
    Deadline,
    /// `LocalError::Cancelled`.
    Cancelled,
    /// `unavailable`, however it came: the ending.
    Unavailable,
}

fn kind_of(r: &Result<Value, Error>) -> Result<Kind, String> {
    match r {
        Ok(Value::Str(s)) if s.as_str() == "slept" => Ok(Kind::Slept),
        Ok(Value::Str(s)) if s.as_str() == "cancelled" => Ok(Kind::Signalled),
        Err(e) if e.local_kind() == Some(LocalError::DeadlineExceeded) => Ok(Kind::Deadline),
        Err(e) if e.local_kind() == Some(LocalError::Cancelled) => Ok(Kind::Cancelled),
        Err(e) if e.code() == Code::Unavailable => Ok(Kind::Unavailable),
        other => Err(format!("{other:?}")),
    }
}

/// One call, as made and as it ended.
#[derive(Debug, Clone)]
struct CallRecord {
    /// Which side called.
    from: Side,
    /// Sent at.
    start: Instant,
    /// The handler's sleep.
    ms: u64,
    deadline: Option<Duration>,
    idempotent: bool,
    /// When its cancellation fired, if it did before the outcome.
    cancelled_at: Option<Instant>,
    end: Instant,
    outcome: Result<Kind, String>,
}

/// One stream, as opened and as it ended.
#[derive(Debug, Clone)]
struct StreamRecord {
    start: Instant,
    n: u64,
    every: u64,
    /// The values read, in order.
    values: Vec<i64>,
    /// How it ended: `None` if the consumer let it go part way.
    end: Option<(Instant, Result<(), String>)>,
}

#[derive(Default)]
struct Log {
    calls: Vec<CallRecord>,
    streams: Vec<StreamRecord>,
    /// The `advance` steps: from, to.
    steps: Vec<(Instant, Instant)>,
}

type Shared = Arc<Mutex<Log>>;

/// How late the `advance` steps made between `from` and `to` can have made a timer: their
/// total length.
fn late(steps: &[(Instant, Instant)], from: Instant, to: Instant) -> Duration {
    steps
        .iter()
        .filter(|(a, b)| *b > from && *a < to)
        .map(|(a, b)| *b - *a)
        .sum::<Duration>()
        + EPS
}

// ---------------------------------------------------------------------------------------
// The case.

struct Peer {
    conn: Connection,
    /// How long its transport lingers once closed (a byte stream's source).
    linger: Duration,
    knobs: Arc<Knobs>,
    closed_at: Arc<Mutex<Option<Instant>>>,
}

fn connect(limits: &Limits, transport: impl Transport, knobs: &Arc<Knobs>) -> Peer {
    let builder = Connection::builder()
        .limits(limits.clone())
        .serve(svc_def(), svc_impl());
    let conn = tracked_with(builder, Knob(transport, knobs.clone()));
    let closed_at = Arc::new(Mutex::new(None));
    let slot = closed_at.clone();
    conn.on_close(move || {
        slot.lock().unwrap().get_or_insert(Instant::now());
    });
    Peer {
        conn,
        linger: Duration::ZERO,
        knobs: knobs.clone(),
        closed_at,
    }
}

/// A limit of `max` ms or less, or none.
fn limit(rng: &mut Rng, max: u64) -> Option<Duration> {
    (!rng.chance(15)).then(|| rng.millis(max))
}

async fn case(seed: u64) {
    let mut rng = Rng(seed);
    let limits = Limits {
        hello_timeout: limit(&mut rng, 90_000),
        bootstrap_timeout: limit(&mut rng, 90_000),
        write_stall_timeout: Some(rng.millis(90_000)),
        ..Limits::default()
    };
    let knobs = [Arc::new(Knobs::default()), Arc::new(Knobs::default())];
    let start = Instant::now();
    // a's hello from b is held: most cases not at all.
    let hold = rng.chance(25).then(|| rng.millis(120_000));
    if let Some(hold) = hold {
        *knobs[0].hold_until.lock().unwrap() = Some(start + hold);
    }
    let peers = if rng.chance(25) {
        TALLY.lock().unwrap().byte_streams += 1;
        byte_stream_pair(&limits, &knobs)
    } else {
        let (ta, tb) = bunite_rpc::transport::memory::pair();
        [
            connect(&limits, ta, &knobs[0]),
            connect(&limits, tb, &knobs[1]),
        ]
    };
    let log: Shared = Arc::default();

    // The bootstraps, from both sides, against the held hello.
    let boot = |i: usize| {
        let conn = peers[i].conn.clone();
        tokio::spawn(async move {
            let r = conn.bootstrap(&svc_def()).await;
            (r, Instant::now())
        })
    };
    let (ba, bb) = (boot(0), boot(1));
    let (ra, rb) = (ba.await.unwrap(), bb.await.unwrap());
    let clients = check_bootstraps(&limits, start, hold, ra, rb);
    let Some(clients) = clients else {
        TALLY.lock().unwrap().failed_starts += 1;
        return finish_failed_start(&peers).await;
    };

    // The operations.
    let ops = 5 + rng.below(30);
    let ending_after = rng.chance(55).then(|| rng.below(ops));
    let mut ending = None;
    let mut tasks = Vec::new();
    for op in 0..ops {
        if ending_after == Some(op) {
            ending = Some(end(&mut rng, &peers, &limits, &clients, &log, &mut tasks));
        }
        let from = Side::of(rng.below(2) as usize);
        let client = clients[from.index()].clone();
        match rng.below(100) {
            0..40 => tasks.push(call(&mut rng, from, client, &log)),
            40..50 => tasks.push(stream(&mut rng, client, &log)),
            50..56 => {
                for _ in 0..rng.below(60) {
                    let rec = CallPlan::quick(from);
                    tasks.push(spawn_call(rec, client.clone(), &log));
                }
            }
            56..64 => tasks.push(release(&mut rng, from, &peers[from.index()].conn, &log)),
            64..82 => {
                let max = if rng.chance(80) { 200 } else { 60_000 };
                let step = rng.millis(max);
                let from = Instant::now();
                tokio::time::advance(step).await;
                log.lock().unwrap().steps.push((from, Instant::now()));
            }
            _ => tokio::time::sleep(rng.millis(30_000)).await,
        }
    }
    for task in tasks {
        task.await.expect("an operation panicked");
    }
    drop(clients);
    if let Some(e) = ending {
        // Closed, or closing: a drain by its grace, a stall by its limit.
        peers[e.side().index()].conn.closed().await;
    }
    let closed = [peers[0].closed_at(), peers[1].closed_at()];
    let log = std::mem::take(&mut *log.lock().unwrap());
    check(&log, ending, closed);
    // A case that did not end drains one side: with nothing in flight, it closes at once.
    if ending.is_none() && rng.chance(30) {
        let grace = rng.millis(60_000);
        let at = Instant::now();
        peers[0].conn.drain(grace);
        peers[1].conn.closed().await;
        let took = Instant::now() - at;
        assert!(
            took <= late(&log.steps, at, Instant::now()),
            "an idle drain took {took:?} of its grace {grace:?}"
        );
    }
}

impl Peer {
    fn closed_at(&self) -> Option<Instant> {
        *self.closed_at.lock().unwrap()
    }
}

#[cfg(feature = "byte-stream")]
fn byte_stream_pair(limits: &Limits, knobs: &[Arc<Knobs>; 2]) -> [Peer; 2] {
    use bunite_rpc::transport::byte_stream::ByteStream;
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    [
        connect(limits, ByteStream::new(ar, aw), &knobs[0]),
        connect(limits, ByteStream::new(br, bw), &knobs[1]),
    ]
    .map(|p| Peer {
        linger: bunite_rpc::transport::LINGER,
        ..p
    })
}

#[cfg(not(feature = "byte-stream"))]
fn byte_stream_pair(limits: &Limits, knobs: &[Arc<Knobs>; 2]) -> [Peer; 2] {
    let (ta, tb) = bunite_rpc::transport::memory::pair();
    [
        connect(limits, ta, &knobs[0]),
        connect(limits, tb, &knobs[1]),
    ]
}

/// a waits for b's hello until `hold`; each side's bootstrap then ends at the first of: the
/// hello let through (answered at once), a's hello timeout (a sends goaway, b closes too),
/// its own bootstrap timeout. Returns the two clients if both went through.
fn check_bootstraps(
    limits: &Limits,
    start: Instant,
    hold: Option<Duration>,
    ra: (Result<Client, Error>, Instant),
    rb: (Result<Client, Error>, Instant),
) -> Option<[Client; 2]> {
    let far = Duration::from_secs(1 << 30);
    let hold = hold.unwrap_or_default();
    let hello = limits.hello_timeout.unwrap_or(far);
    let boot = limits.bootstrap_timeout.unwrap_or(far);
    let first = hold.min(hello).min(boot);
    for (name, (r, at)) in [("a", &ra), ("b", &rb)] {
        let took = *at - start;
        let what = match r {
            Ok(_) => hold,
            Err(e) if e.local_kind() == Some(LocalError::DeadlineExceeded) => boot,
            Err(e) if e.code() == Code::Unavailable => hello,
            Err(e) => panic!("bootstrap of {name} failed {e:?}"),
        };
        assert!(
            took >= what && took <= what + EPS && what <= first + EPS,
            "bootstrap of {name} ended {r:?} after {took:?}: hold {hold:?}, hello timeout \
             {hello:?}, bootstrap timeout {boot:?}"
        );
    }
    match (ra.0, rb.0) {
        (Ok(a), Ok(b)) => Some([a, b]),
        _ => None,
    }
}

/// A case whose bootstraps failed: each side closed (a hello timeout) or closes now.
async fn finish_failed_start(peers: &[Peer; 2]) {
    for p in peers {
        p.conn.close();
    }
}

/// What a call does: the handler's sleep, its deadline, whether it is cancelled or dropped
/// after a while.
struct CallPlan {
    from: Side,
    ms: u64,
    deadline: Option<Duration>,
    idempotent: bool,
    cancel_after: Option<Duration>,
    drop_after: Option<Duration>,
}

impl CallPlan {
    fn quick(from: Side) -> Self {
        CallPlan {
            from,
            ms: 0,
            deadline: None,
            idempotent: false,
            cancel_after: None,
            drop_after: None,
        }
    }

    fn draw(rng: &mut Rng, from: Side) -> Self {
        let ms = if rng.chance(20) {
            FOREVER
        } else {
            rng.ms(300_000)
        };
        let mut plan = CallPlan {
            from,
            ms,
            deadline: rng.chance(60).then(|| rng.millis(300_000)),
            idempotent: rng.chance(40),
            cancel_after: rng.chance(20).then(|| rng.millis(100_000)),
            drop_after: rng.chance(10).then(|| rng.millis(100_000)),
        };
        if ms == FOREVER && plan.deadline.is_none() && plan.cancel_after.is_none() {
            plan.drop_after = Some(plan.drop_after.unwrap_or(rng.millis(100_000)));
        }
        plan
    }
}

fn call(rng: &mut Rng, from: Side, client: Client, log: &Shared) -> tokio::task::JoinHandle<()> {
    spawn_call(CallPlan::draw(rng, from), client, log)
}

fn spawn_call(plan: CallPlan, client: Client, log: &Shared) -> tokio::task::JoinHandle<()> {
    let log = log.clone();
    tokio::spawn(async move {
        let token = CancellationToken::new();
        let opts = CallOptions {
            deadline: plan.deadline,
            cancel: Some(token.clone()),
            ..CallOptions::default()
        };
        let method = if plan.idempotent { "idem" } else { "sleep" };
        let args = Value::Record(Record::new().with("ms", plan.ms as i64));
        let start = Instant::now();
        let call = client.call_with(method, args, opts);
        tokio::pin!(call);
        let far = Duration::from_secs(1 << 30);
        let cancel_at = start + plan.cancel_after.unwrap_or(far);
        let drop_at = start + plan.drop_after.unwrap_or(far);
        let mut cancelled_at = None;
        let r = loop {
            tokio::select! {
                r = &mut call => break Some(r),
                _ = tokio::time::sleep_until(cancel_at), if cancelled_at.is_none() => {
                    cancelled_at = Some(Instant::now());
                    token.cancel();
                }
                _ = tokio::time::sleep_until(drop_at) => break None,
            }
        };
        let Some(r) = r else { return };
        let record = CallRecord {
            from: plan.from,
            start,
            ms: plan.ms,
            deadline: plan.deadline,
            idempotent: plan.idempotent,
            cancelled_at,
            end: Instant::now(),
            outcome: kind_of(&r),
        };
        log.lock().unwrap().calls.push(record);
    })
}

fn stream(rng: &mut Rng, client: Client, log: &Shared) -> tokio::task::JoinHandle<()> {
    let n = rng.below(10);
    let every = rng.ms(20_000) * u64::from(rng.chance(80));
    let pause = rng.ms(40_000) * u64::from(rng.chance(60));
    let read = if rng.chance(25) { rng.below(n + 1) } else { n };
    let log = log.clone();
    tokio::spawn(async move {
        let args = Value::Record(
            Record::new()
                .with("n", n as i64)
                .with("every", every as i64),
        );
        let start = Instant::now();
        let mut s = client.stream("nums", args);
        let mut values = Vec::new();
        let mut end = None;
        // All of it (to its end) unless the consumer lets it go after `read` values.
        while read == n || (values.len() as u64) < read {
            match s.next().await {
                Some(Ok(v)) => values.push(v.as_integer().unwrap_or(-1) as i64),
                Some(Err(e)) => {
                    end = Some(match e.code() {
                        Code::Unavailable => Ok(()),
                        _ => Err(format!("{e:?}")),
                    });
                    break;
                }
                None => {
                    end = Some(Ok(()));
                    break;
                }
            }
            if pause > 0 {
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }
        // `Ok(())` for the end marks a whole stream by its values; an error kept as such.
        let end = end.map(|e| (Instant::now(), e));
        log.lock().unwrap().streams.push(StreamRecord {
            start,
            n,
            every,
            values,
            end,
        });
    })
}

/// A fresh reference, a call on it, the reference released while the call runs: the call
/// ends as any call does; one made after fails `Released` at once.
fn release(
    rng: &mut Rng,
    from: Side,
    conn: &Connection,
    log: &Shared,
) -> tokio::task::JoinHandle<()> {
    let plan = CallPlan::draw(rng, from);
    let after = rng.millis(100_000);
    let conn = conn.clone();
    let log = log.clone();
    tokio::spawn(async move {
        let Ok(client) = conn.bootstrap(&svc_def()).await else {
            return; // the ending, or a stalled side's bootstrap timeout
        };
        let task = spawn_call(plan, client.clone(), &log);
        tokio::time::sleep(after).await;
        let other = client.clone();
        client.release();
        let e = other
            .call_value("sleep", Value::Undefined)
            .await
            .unwrap_err();
        assert_eq!(e.local_kind(), Some(LocalError::Released), "{e:?}");
        task.await.unwrap();
    })
}

/// The case's ending, now.
fn end(
    rng: &mut Rng,
    peers: &[Peer; 2],
    limits: &Limits,
    clients: &[Client; 2],
    log: &Shared,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Ending {
    let side = Side::of(rng.below(2) as usize);
    let peer = &peers[side.index()];
    let at = Instant::now();
    match rng.below(3) {
        0 => {
            peer.conn.close();
            Ending::Close { side, at }
        }
        1 => {
            let grace = rng.millis(120_000);
            peer.conn.drain(grace);
            Ending::Drain { side, at, grace }
        }
        _ => {
            peer.knobs.stalled.store(true, Ordering::SeqCst);
            // Something to send, so that the stall is seen from now.
            tasks.push(spawn_call(
                CallPlan::quick(side),
                clients[side.index()].clone(),
                log,
            ));
            let after = limits.write_stall_timeout.unwrap();
            Ending::Stall {
                side,
                at,
                after,
                linger: peer.linger,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The checks.

/// An event that can end a call: when, what it ends it with, and whether it surely ends it
/// by then (else it only may).
#[derive(Debug)]
struct Cand {
    at: Instant,
    kind: Kind,
    sure: bool,
    /// How long after `at` it may come besides the steps' lateness.
    window: Duration,
}

fn cand(at: Instant, kind: Kind, sure: bool) -> Cand {
    Cand {
        at,
        kind,
        sure,
        window: Duration::ZERO,
    }
}

fn check(log: &Log, ending: Option<Ending>, closed: [Option<Instant>; 2]) {
    let steps = &log.steps;
    // When the ending's side closed.
    if let Some(e) = ending {
        let (side, at) = match e {
            Ending::Close { side, at } | Ending::Drain { side, at, .. } => (side, at),
            Ending::Stall { side, at, .. } => (side, at),
        };
        let closed_at = closed[side.index()];
        let closed_at = closed_at.unwrap_or_else(|| panic!("{e:?}: the side did not close"));
        let (earliest, latest) = match e {
            Ending::Close { at, .. } => (at, at),
            Ending::Drain { at, grace, .. } => (at, at + grace),
            Ending::Stall { at, after, .. } => (at + after, at + after),
        };
        assert!(
            closed_at >= earliest && closed_at <= latest + late(steps, at, closed_at),
            "{e:?}: the side closed {:?} after the ending began",
            closed_at - at
        );
    }
    let mut tally = TALLY.lock().unwrap();
    match ending {
        Some(Ending::Close { .. }) => tally.closes += 1,
        Some(Ending::Drain { .. }) => tally.drains += 1,
        Some(Ending::Stall { .. }) => tally.stalls += 1,
        None => {}
    }
    tally.steps += steps.len() as u64;
    tally.streams += log.streams.len() as u64;
    for c in &log.calls {
        if let Ok(k) = c.outcome {
            tally.calls[k as usize] += 1;
        }
    }
    drop(tally);
    for c in &log.calls {
        check_call(c, ending, closed, steps);
    }
    for s in &log.streams {
        check_stream(s, ending);
    }
}

fn check_call(
    c: &CallRecord,
    ending: Option<Ending>,
    closed: [Option<Instant>; 2],
    steps: &[(Instant, Instant)],
) {
    let fail = |why: &str| -> ! {
        panic!("{why}: {c:?}, ending {ending:?}, closed {closed:?}, steps {steps:?}");
    };
    let kind = match &c.outcome {
        Ok(k) => *k,
        Err(e) => fail(&format!("unexpected outcome {e}")),
    };
    let s = c.start;
    let mut cands = Vec::new();
    // The call's own events. The answers are sure unless the ending may stop them.
    let answer = |at: Instant, kind: Kind, cands: &mut Vec<Cand>| {
        let sure = answered(c, at, ending, closed, steps);
        if let Some(sure) = sure {
            cands.push(cand(at, kind, sure));
        }
    };
    if c.ms != FOREVER {
        answer(s + Duration::from_millis(c.ms), Kind::Slept, &mut cands);
    }
    if let Some(d) = c.deadline {
        if !c.idempotent {
            answer(s + d, Kind::Signalled, &mut cands);
        }
        cands.push(cand(s + d + DEADLINE_GRACE, Kind::Deadline, true));
    }
    if let Some(at) = c.cancelled_at {
        cands.push(cand(at, Kind::Cancelled, true));
    }
    // The ending's.
    if let Some(e) = ending {
        let t = e.at();
        match e {
            Ending::Close { .. } => cands.push(cand(t.max(s), Kind::Unavailable, true)),
            Ending::Drain { side, grace, .. } => {
                let closed_at = closed[side.index()].unwrap_or(t + grace);
                if s < closed_at {
                    // In flight as it closes: ends at the grace, not before.
                    cands.push(cand(t + grace, Kind::Unavailable, true));
                } else {
                    // Made after it closed (or in the same instant: either order).
                    cands.push(cand(s, Kind::Unavailable, s > closed_at));
                }
                // A call to the draining side made after the drain began is refused (one
                // made as it began may be).
                if side != c.from {
                    let sure = s >= t + late(steps, t, s.max(t));
                    cands.push(cand(s.max(t), Kind::Unavailable, sure));
                }
            }
            Ending::Stall {
                side,
                after,
                linger,
                ..
            } => {
                let mut x = cand((t + after).max(s), Kind::Unavailable, true);
                if side != c.from {
                    // The peer sees the end once the stalled side's transport is closed: a
                    // byte stream's source lingers first, reading what the peer still sends.
                    x.window = linger;
                }
                cands.push(x);
            }
        }
    }
    // The ending's own time may be late by the steps since it began.
    let since = ending.map_or(s, |e| e.at().min(s));
    let lateness = |at: Instant| late(steps, at.min(since), c.end);
    let explained = cands
        .iter()
        .any(|x| x.kind == kind && x.at <= c.end && c.end <= x.at + x.window + lateness(x.at));
    if !explained {
        fail(&format!(
            "{kind:?} after {:?} is explained by no event: {cands:?}",
            c.end - s
        ));
    }
    if let Some(x) = cands
        .iter()
        .find(|x| x.sure && c.end > x.at + x.window + lateness(x.at))
    {
        fail(&format!("{kind:?} after {:?}, later than {x:?}", c.end - s));
    }
}

/// Whether an answer the handler gives at `at` reaches the caller (`Some(true)`), may
/// (`Some(false)`), or cannot (`None`), given the ending.
fn answered(
    c: &CallRecord,
    at: Instant,
    ending: Option<Ending>,
    closed: [Option<Instant>; 2],
    steps: &[(Instant, Instant)],
) -> Option<bool> {
    let Some(e) = ending else {
        return Some(true);
    };
    let t = e.at();
    let s = c.start;
    // Whether `x` is before the ending, after it, or too close to tell (the ending and the
    // call's messages may be taken in either order within the steps made between).
    let before = |x: Instant| -> Option<bool> {
        // An answer comes late by the steps since the call began (each stage on the way
        // may have been jumped over).
        let slack = late(steps, x.min(t).min(s), x.max(t));
        if x + slack < t {
            Some(true)
        } else if x > t + slack {
            Some(false)
        } else {
            None
        }
    };
    match e {
        Ending::Close { .. } => match (before(s), before(at)) {
            (Some(true), Some(true)) => Some(true),
            (Some(false), _) | (_, Some(false)) => None,
            _ => Some(false),
        },
        Ending::Drain { side, grace, .. } => {
            let closed_at = closed[side.index()].unwrap_or(t + grace);
            // The draining side closes as the last call ends: at its answer, not before.
            let by_close = at <= closed_at;
            match before(s) {
                Some(true) if by_close => Some(true),
                // A call to the draining side after it began is refused; one from it goes
                // through while it is open.
                Some(false) if side == c.from && s <= closed_at && by_close => Some(s < closed_at),
                Some(false) => None,
                _ => Some(false),
            }
        }
        Ending::Stall { side, after, .. } => {
            let closes = t + after;
            // The stalled side's messages from `t` on never leave: the call if it is the
            // caller, the answer if it is the callee.
            let leaves = if side == c.from { s } else { at };
            match before(leaves) {
                Some(true) if at <= closes => Some(true),
                Some(false) => None,
                _ => Some(false),
            }
        }
    }
}

fn check_stream(s: &StreamRecord, ending: Option<Ending>) {
    let expected: Vec<i64> = (0..s.values.len() as i64).collect();
    assert_eq!(s.values, expected, "stream values out of order: {s:?}");
    let Some((end, outcome)) = &s.end else { return };
    if let Err(e) = outcome {
        panic!("stream ended {e}: {s:?}");
    }
    if s.values.len() as u64 == s.n {
        let whole = s.start + Duration::from_millis(s.n * s.every);
        assert!(
            *end >= whole,
            "stream ended whole before its values could come: {s:?}"
        );
    } else {
        // Cut short: only by the ending, and not before it.
        let e = ending.unwrap_or_else(|| panic!("stream cut without an ending: {s:?}"));
        assert!(*end >= e.at(), "stream cut before the ending {e:?}: {s:?}");
    }
}
