//! Seeded random operations on live connections: the layer above the session (the driver,
//! the handles and their `Drop`s, handler tasks) on a multi-thread runtime of two workers,
//! over the in-memory transport and over loopback TCP (`docs/RELIABILITY.md`, "Seeded
//! random operations on live connections").
//!
//! Each case is one seed. Two peers each serve `ops.svc` to the other (unary calls, a slow
//! and a waiting handler, a sub-cap with a disposal method, a stream, a call back over the
//! same connection) and serve, unserve and replace `ops.flip` while the other calls it.
//! Several actors (spawned tasks) per side draw operations from their own generator
//! (splitmix64, seeded from the case's seed): bootstraps, calls, sub-caps, clones, drops,
//! releases, disposals, deadlines, call futures (bootstraps and cap-returning calls too)
//! dropped after a few polls or aborted on another task, cancellations, bursts, streams
//! read partly or to the end, observers that call back into their connection, and in some
//! cases a close or a drain of either side, or a cut of the link, while work is in flight.
//!
//! What must hold: every operation ends within [`OP_BOUND`] and the case within
//! [`CASE_BOUND`]; no actor panics; every outcome fits its operation (a successful call
//! returns what the handler returns, a call on a released reference fails
//! `LocalError::Released`, errors other than the operation's own appear only once a side is
//! closing and are then `unavailable`); no handler of `ops.flip` starts once its instance
//! was unserved or replaced, no call on a reference succeeds after one failed `revoked`;
//! disposals are called once each; a limited case ends with every in-flight slot free;
//! after the case the harness (`common::run_on_two_workers`) checks both connections clean,
//! closes them, checks them idle (tables, pending calls, streams, unsent bytes, tasks) and
//! that no driver panicked and no task is left; and no observer outlives the runtime.
//!
//! `BUNITE_OPS_SEEDS=N` runs seeds `0..N` instead of [`CI_SEEDS`]; `BUNITE_OPS_SEED=S` runs
//! seed S alone (a failing case prints its seed).

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::pin::Pin;
use std::task::{Context, Poll};

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::{
    memory, MessageSink, MessageSource, Transport, TransportError, TransportInfo,
};
use bunite_rpc::{
    CallOptions, CapDef, CapDefRef, Client, Code, Connection, Error, Event, Limits, LocalError,
    MethodDef, Record, Returns, Status, SubscriptionId, Value,
};
use bytes::Bytes;
use futures::{Future, StreamExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use common::*;

/// Seeds of a plain test run (about 35 ms each in debug on two cores: 7 s in all).
const CI_SEEDS: u64 = 200;

/// How long one operation may take (the slowest, a deadline on a slow handler, takes about
/// half a second).
const OP_BOUND: Duration = Duration::from_secs(5);

/// How long one case may take, closing included.
const CASE_BOUND: Duration = Duration::from_secs(20);

/// The most calls one actor starts at once.
const BURST: usize = 4;

/// The value of `ops.item`'s `get`.
const ITEM_VALUE: i128 = 7;

#[test]
fn random_operations_on_live_connections() {
    let seeds: Vec<u64> = match (
        std::env::var("BUNITE_OPS_SEED"),
        std::env::var("BUNITE_OPS_SEEDS"),
    ) {
        (Ok(seed), _) => vec![seed.parse().expect("BUNITE_OPS_SEED: a number")],
        (_, Ok(n)) => (0..n.parse().expect("BUNITE_OPS_SEEDS: a number")).collect(),
        _ => (0..CI_SEEDS).collect(),
    };
    for seed in seeds {
        let _report = SeedReport(seed);
        let observers = Arc::new(AtomicI64::new(0));
        let live = observers.clone();
        run_on_two_workers(async move {
            if tokio::time::timeout(CASE_BOUND, case(seed, live))
                .await
                .is_err()
            {
                panic!("seed {seed}: the case did not end within {CASE_BOUND:?}");
            }
        });
        // The runtime is gone: an observer still alive is kept by a cycle through its
        // connection (the observers of a closed connection are dropped once its last task
        // ends).
        assert_eq!(
            observers.load(Ordering::SeqCst),
            0,
            "seed {seed}: observers outlived their connections"
        );
    }
}

/// Names the seed of a case that fails, for `BUNITE_OPS_SEED`.
struct SeedReport(u64);

impl Drop for SeedReport {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "random_ops: seed {} failed; replay it with BUNITE_OPS_SEED={}",
                self.0, self.0
            );
        }
    }
}

/// splitmix64: small, and the same sequence on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn svc_def() -> Arc<CapDef> {
    CapDef::builder("ops.svc")
        .method(MethodDef::call("inc"))
        .method(MethodDef::call("slow"))
        .method(MethodDef::call("wait"))
        .method(MethodDef::call("sub").returns(Returns::Cap(CapDefRef::Lazy(item_def))))
        .method(MethodDef::call("back"))
        .method(MethodDef::stream("nums").initial_credit(4))
        .build()
}

fn item_def() -> Arc<CapDef> {
    CapDef::builder("ops.item")
        .method(MethodDef::call("get"))
        .method(MethodDef::call("close"))
        .disposal("close")
        .build()
}

fn flip_def() -> Arc<CapDef> {
    CapDef::builder("ops.flip")
        .method(MethodDef::call("gen"))
        .build()
}

fn int_arg(args: &Value, key: &str) -> i128 {
    args.as_record()
        .and_then(|r| r.get(key))
        .and_then(Value::as_integer)
        .unwrap_or(0)
}

fn args(key: &'static str, n: u64) -> Value {
    Value::Record(Record::new().with(key, n as i64))
}

/// `ops.svc`: `inc` counts, `slow {ms}` answers after `ms` or at its cancellation, `wait`
/// waits for its cancellation, `sub` exports an `ops.item`, `back` calls the caller's own
/// `ops.svc` back over the same connection, `nums {n}` streams `0..n`.
fn svc_impl(disposals: Arc<AtomicU64>) -> Arc<dyn bunite_rpc::CapImpl> {
    let count = Arc::new(AtomicU64::new(0));
    DynCap::new()
        .call("inc", move |_, _| {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok(Value::from(n as i64)) }
        })
        .call(
            "slow",
            |args: Value, ctx: bunite_rpc::CallContext| async move {
                let ms = int_arg(&args, "ms") as u64;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => Ok(Value::from("slept")),
                    _ = ctx.cancelled() => Ok(Value::from("cancelled")),
                }
            },
        )
        .call("wait", |_, ctx: bunite_rpc::CallContext| async move {
            ctx.cancelled().await;
            Ok(Value::from("cancelled"))
        })
        .call("sub", move |_, ctx: bunite_rpc::CallContext| {
            let disposals = disposals.clone();
            let imp = DynCap::new()
                .call("get", |_, _| async { Ok(Value::from(ITEM_VALUE as i64)) })
                .call("close", move |_, _| {
                    disposals.fetch_add(1, Ordering::SeqCst);
                    async { Ok(Value::Undefined) }
                })
                .build();
            let cap = ctx.export(item_def(), imp);
            async move { Ok(cap) }
        })
        .call("back", |_, ctx: bunite_rpc::CallContext| async move {
            let peer = ctx.connection().bootstrap(&svc_def()).await?;
            let n = peer.call_value("inc", Value::Undefined).await?;
            Ok::<_, Status>(n)
        })
        .stream("nums", |args: Value, _| {
            let n = int_arg(&args, "n") as i64;
            Ok(futures::stream::iter((0..n).map(|i| Ok(Value::from(i)))).boxed())
        })
        .build()
}

/// One side's `ops.flip`: its serve state, changed under the lock by one operation at a time,
/// so what each change must answer is known.
#[derive(Default)]
struct Flip {
    /// The `retired` flag of the implementation now served, if any.
    current: Option<Arc<AtomicBool>>,
    /// Generations handed out.
    generation: i64,
}

/// An `ops.flip` implementation of generation `generation`: `gen` answers it, and records a
/// violation if it starts after its implementation was retired (unserved or replaced).
fn flip_impl(
    generation: i64,
    retired: Arc<AtomicBool>,
    violations: Violations,
) -> Arc<dyn bunite_rpc::CapImpl> {
    DynCap::new()
        .call("gen", move |args: Value, _| {
            // Checked as the handler starts: the driver starts it as it dispatches the call,
            // and a retirement took effect in the same driver before it was marked here.
            if retired.load(Ordering::SeqCst) {
                violations.lock().unwrap().push(format!(
                    "ops.flip generation {generation} ran after it was retired"
                ));
            }
            // Some calls stay in flight a while, across an unserve or a replace.
            let ms = int_arg(&args, "ms") as u64;
            async move {
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Ok(Value::from(generation))
            }
        })
        .build()
}

type Violations = Arc<Mutex<Vec<String>>>;

/// What the actors of a case share.
struct Case {
    seed: u64,
    /// Set before either side is closed or drained: from then on, `unavailable` is an
    /// acceptable outcome of any operation.
    closing: AtomicBool,
    violations: Violations,
    /// Operations run, skipped ones (nothing to run them on) not counted.
    ran: AtomicU64,
    /// Items disposed of by the actors: each owes one call of `close` (PROTOCOL §7, §13.8).
    disposals_owed: AtomicU64,
    /// Observers alive (each holds a [`Counted`]).
    observers: Arc<AtomicI64>,
}

/// Counts itself in a counter while it lives.
struct Counted(Arc<AtomicI64>);

impl Counted {
    fn new(count: &Arc<AtomicI64>) -> Counted {
        count.fetch_add(1, Ordering::SeqCst);
        Counted(count.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One side of the case, as its actors see it.
#[derive(Clone)]
struct Side {
    name: &'static str,
    conn: Connection,
    flip: Arc<tokio::sync::Mutex<Flip>>,
}

/// A client an actor holds: what it is a client of, and whether its reference (shared by
/// its clones) was released or disposed, after which every clone fails
/// `LocalError::Released`.
#[derive(Clone)]
struct Held {
    kind: Kind,
    client: Client,
    released: Arc<AtomicBool>,
    /// For `ops.flip`: the reference was seen revoked (no call on it may succeed after),
    /// and the latest generation it answered (a replace only ever moves it forward).
    revoked: Arc<AtomicBool>,
    generation: Arc<AtomicI64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Svc,
    Item,
    Flip,
}

impl Held {
    fn new(kind: Kind, client: Client) -> Held {
        Held {
            kind,
            client,
            released: Arc::default(),
            revoked: Arc::default(),
            generation: Arc::default(),
        }
    }

    fn released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }
}

/// The transport of a case.
#[derive(Debug, Clone, Copy)]
enum Link {
    Memory,
    Tcp,
}

/// Two connected peers over `kind`, both tracked, whose link dies (both ends fail
/// `ConnectionReset`) when `cut` fires. With `max_in_flight`, both allow that many calls in
/// flight each way.
fn connected(
    kind: Link,
    cut: &CancellationToken,
    max_in_flight: Option<usize>,
) -> (Connection, Connection) {
    fn over<T: Transport>(
        (ta, tb): (T, T),
        cut: &CancellationToken,
        limits: Limits,
    ) -> (Connection, Connection) {
        let builder = || Connection::builder().limits(limits.clone());
        let a = tracked_with(builder(), Cuttable(ta, cut.clone()));
        let b = tracked_with(builder(), Cuttable(tb, cut.clone()));
        (a, b)
    }
    let mut limits = Limits::default();
    if let Some(max) = max_in_flight {
        limits.max_in_flight = max;
    }
    match kind {
        Link::Memory => over(memory::pair(), cut, limits),
        Link::Tcp => over(tcp_pair(), cut, limits),
    }
}

async fn case(seed: u64, observers: Arc<AtomicI64>) {
    let mut rng = Rng(seed);
    let kind = if rng.chance(50) {
        Link::Memory
    } else {
        Link::Tcp
    };
    let actors = 2 + rng.below(3) as usize;
    // Each actor has at most `BURST` calls of its own in flight at a time, and starts
    // through the peer at most one more (`back`): a limit of `BURST + 1` calls per actor is
    // never reached by the calls actors wait for (a call dropped or cancelled gives its slot
    // back as it goes).
    let limited = rng.chance(30).then_some((BURST + 1) * actors);
    let cut = CancellationToken::new();
    let (a, b) = connected(kind, &cut, limited);
    let disposals = Arc::new(AtomicU64::new(0));
    for conn in [&a, &b] {
        conn.serve(svc_def(), svc_impl(disposals.clone()))
            .await
            .unwrap()
            .detach();
    }
    let shared = Arc::new(Case {
        seed,
        closing: AtomicBool::new(false),
        violations: Violations::default(),
        ran: AtomicU64::new(0),
        disposals_owed: AtomicU64::new(0),
        observers,
    });
    let sides = [
        Side {
            name: "a",
            conn: a.clone(),
            flip: Default::default(),
        },
        Side {
            name: "b",
            conn: b.clone(),
            flip: Default::default(),
        },
    ];
    // Which actor, if any, closes, drains or cuts a side, and after how many operations.
    let closer = rng.chance(40).then(|| {
        (
            rng.below(actors as u64 * 2) as usize,
            rng.below(40) as usize,
        )
    });
    let mut tasks = Vec::new();
    for i in 0..actors * 2 {
        let side = sides[i % 2].clone();
        let peer = sides[1 - i % 2].clone();
        let actor = Actor {
            id: i,
            rng: Rng(rng.next()),
            side,
            peer,
            case: shared.clone(),
            cut: cut.clone(),
            held: Vec::new(),
            subscriptions: Vec::new(),
            skipped: 0,
        };
        let ops = 10 + actor_ops(seed, i);
        let closes = closer
            .filter(|&(who, _)| who == i)
            .map(|(_, at)| at.min(ops));
        tasks.push(tokio::spawn(actor.run(ops, closes)));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        if let Err(e) = task.await {
            panic!("seed {seed} ({kind:?}): actor {i} failed: {e}");
        }
    }
    eprintln!(
        "seed {seed} ({kind:?}{}): {} actors ran {} operations{}",
        if limited.is_some() { ", limited" } else { "" },
        actors * 2,
        shared.ran.load(Ordering::Relaxed),
        if closer.is_some() {
            ", one side closed"
        } else {
            ""
        }
    );
    let violations = shared.violations.lock().unwrap().clone();
    // Without a close, every disposal went through, once each (a close runs the disposals
    // of the live items too, §11).
    if !shared.closing.load(Ordering::SeqCst) {
        assert_eq!(
            disposals.load(Ordering::SeqCst),
            shared.disposals_owed.load(Ordering::SeqCst),
            "seed {seed} ({kind:?}): disposal calls"
        );
    }
    assert!(
        violations.is_empty(),
        "seed {seed} ({kind:?}): {violations:?}"
    );
    // Every slot of the in-flight limit is free again: once nothing runs, `max_in_flight`
    // calls at once from each side all go through (a slot a dropped or abandoned call kept
    // would refuse the last of them).
    if let (Some(max), false) = (limited, shared.closing.load(Ordering::SeqCst)) {
        assert_clean(&[&a, &b]).await;
        for (name, conn) in [("a", &a), ("b", &b)] {
            let svc = conn.bootstrap(&svc_def()).await.unwrap();
            let calls = (0..max).map(|_| svc.call_value("inc", Value::Undefined));
            for r in futures::future::join_all(calls).await {
                assert!(
                    r.is_ok(),
                    "seed {seed} ({kind:?}): {max} calls from {name} at the end: {r:?}"
                );
            }
        }
    }
    // Both sides close here; the harness then checks them clean, closed and idle.
    if shared.closing.load(Ordering::SeqCst) {
        for conn in [&a, &b] {
            conn.close();
        }
    }
}

/// How many operations (beyond ten) actor `i` of case `seed` runs.
fn actor_ops(seed: u64, i: usize) -> usize {
    Rng(seed ^ (i as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1)).below(30) as usize
}

struct Actor {
    id: usize,
    rng: Rng,
    /// The side this actor calls from (and serves `ops.flip` on).
    side: Side,
    /// The other side (whose `ops.flip` it bootstraps).
    peer: Side,
    case: Arc<Case>,
    /// Kills the link between the two sides.
    cut: CancellationToken,
    held: Vec<Held>,
    subscriptions: Vec<SubscriptionId>,
    /// Operations that found nothing to run on.
    skipped: u64,
}

/// The operations an actor draws from.
#[derive(Debug, Clone, Copy)]
enum Op {
    Bootstrap,
    BootstrapUnknown,
    Inc,
    Sub,
    ItemGet,
    Clone,
    Drop,
    Dispose,
    DisposeTwice,
    DropCapCall,
    Burst,
    RaceRelease,
    AbortSpawned,
    CallAfterRelease,
    Deadline,
    DropAfterPolls,
    Cancel,
    Stream,
    BootstrapFlip,
    CallFlip,
    ServeFlip,
    UnserveFlip,
    ReplaceFlip,
    Subscribe,
    Unsubscribe,
    Back,
}

const OPS: [Op; 26] = [
    Op::Bootstrap,
    Op::BootstrapUnknown,
    Op::Inc,
    Op::Sub,
    Op::ItemGet,
    Op::Clone,
    Op::Drop,
    Op::Dispose,
    Op::DisposeTwice,
    Op::DropCapCall,
    Op::Burst,
    Op::RaceRelease,
    Op::AbortSpawned,
    Op::CallAfterRelease,
    Op::Deadline,
    Op::DropAfterPolls,
    Op::Cancel,
    Op::Stream,
    Op::BootstrapFlip,
    Op::CallFlip,
    Op::ServeFlip,
    Op::UnserveFlip,
    Op::ReplaceFlip,
    Op::Subscribe,
    Op::Unsubscribe,
    Op::Back,
];

impl Actor {
    /// Runs `ops` operations; closes, drains or cuts a side after `closes` of them.
    async fn run(mut self, ops: usize, closes: Option<usize>) {
        for n in 0..=ops {
            if closes == Some(n) {
                let what = format!("seed {} actor {} close", self.case.seed, self.id);
                if tokio::time::timeout(OP_BOUND, self.close(&what))
                    .await
                    .is_err()
                {
                    panic!("{what}: did not end within {OP_BOUND:?}");
                }
            }
            if n == ops {
                break;
            }
            // Most cases start by bootstrapping, so that most operations have a target.
            let op = match n {
                0 if self.rng.chance(90) => Op::Bootstrap,
                _ => OPS[self.rng.below(OPS.len() as u64) as usize],
            };
            let what = format!(
                "seed {} actor {} ({}) op {n} {op:?}",
                self.case.seed, self.id, self.side.name
            );
            if tokio::time::timeout(OP_BOUND, self.op(op, &what))
                .await
                .is_err()
            {
                panic!("{what}: did not end within {OP_BOUND:?}");
            }
        }
        let ran = ops as u64 - self.skipped;
        self.case.ran.fetch_add(ran, Ordering::Relaxed);
        for id in self.subscriptions.drain(..) {
            self.side.conn.unsubscribe(id);
        }
        // Whatever is still held is dropped here, on this actor's worker.
    }

    fn closing(&self) -> bool {
        self.case.closing.load(Ordering::SeqCst)
    }

    /// `result` must be `Ok`, or, once a side is closing, fail `unavailable`.
    #[track_caller]
    fn ok_or_closing<T: std::fmt::Debug>(&self, what: &str, result: Result<T, Error>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                assert!(
                    self.closing() && e.code() == Code::Unavailable,
                    "{what}: unexpected {e:?}"
                );
                None
            }
        }
    }

    /// `result` must fail with `code` (or, once a side is closing, `unavailable`).
    #[track_caller]
    fn fails_with<T: std::fmt::Debug>(&self, what: &str, result: Result<T, Error>, code: Code) {
        match result {
            Ok(v) => panic!("{what}: expected {code:?}, got {v:?}"),
            Err(e) => assert!(
                e.code() == code || (self.closing() && e.code() == Code::Unavailable),
                "{what}: expected {code:?}, got {e:?}"
            ),
        }
    }

    /// A held client of the kind `pick` selects, by index.
    fn pick(&mut self, pick: impl Fn(&Held) -> bool) -> Option<usize> {
        let found: Vec<usize> = (0..self.held.len())
            .filter(|&i| pick(&self.held[i]))
            .collect();
        if found.is_empty() {
            self.skipped += 1;
            return None;
        }
        Some(found[self.rng.below(found.len() as u64) as usize])
    }

    /// A yield to the runtime, or a sleep of up to two milliseconds (about a round trip):
    /// what a call future is dropped after.
    async fn pause(&mut self) {
        if self.rng.chance(50) {
            tokio::task::yield_now().await;
        } else {
            tokio::time::sleep(Duration::from_micros(self.rng.below(2000))).await;
        }
    }

    /// Marks `held`'s reference released as it is disposed, counting the disposal call an
    /// item (the one kind with a disposal method) is owed if it was not released before.
    fn disposing(&self, held: &Held) {
        if !held.released.swap(true, Ordering::SeqCst) && held.kind == Kind::Item {
            self.case.disposals_owed.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn svc(&mut self) -> Option<Held> {
        let i = self.pick(|h| h.kind == Kind::Svc)?;
        Some(self.held[i].clone())
    }

    /// The outcome of a call on `held`: `Ok` (checked by `check`), `LocalError::Released`
    /// if its reference was released, or `unavailable` once a side is closing.
    #[track_caller]
    fn answer<T: std::fmt::Debug>(
        &self,
        what: &str,
        held: &Held,
        result: Result<T, Error>,
        check: impl FnOnce(T),
    ) {
        match result {
            Ok(v) if !held.released() => check(v),
            Err(e) if held.released() && e.local_kind() == Some(LocalError::Released) => {}
            Err(e) if self.closing() && e.code() == Code::Unavailable => {}
            other => panic!(
                "{what}: unexpected {other:?} (released: {})",
                held.released()
            ),
        }
    }

    async fn op(&mut self, op: Op, what: &str) {
        match op {
            Op::Bootstrap => {
                let r = self.side.conn.bootstrap(&svc_def()).await;
                if let Some(c) = self.ok_or_closing(what, r) {
                    self.held.push(Held::new(Kind::Svc, c));
                }
            }
            Op::BootstrapUnknown => {
                let r = self.side.conn.bootstrap_name("ops.nope", None).await;
                self.fails_with(what, r, Code::NotFound);
            }
            Op::Inc => {
                let Some(h) = self.svc() else { return };
                let r = h.client.call_value("inc", Value::Undefined).await;
                self.answer(what, &h, r, |v| {
                    assert!(v.as_integer().is_some_and(|n| n > 0), "{what}: {v:?}");
                });
            }
            Op::Back => {
                let Some(h) = self.svc() else { return };
                let r = h.client.call_value("back", Value::Undefined).await;
                self.answer(what, &h, r, |v| {
                    assert!(v.as_integer().is_some_and(|n| n > 0), "{what}: {v:?}");
                });
            }
            Op::Sub => {
                let Some(h) = self.svc() else { return };
                let r = h.client.call_cap("sub", Value::Undefined).await;
                let mut item = None;
                self.answer(what, &h, r, |c| item = Some(c));
                if let Some(c) = item {
                    self.held.push(Held::new(Kind::Item, c));
                }
            }
            Op::ItemGet => {
                let Some(i) = self.pick(|h| h.kind == Kind::Item) else {
                    return;
                };
                let h = self.held[i].clone();
                let r = h.client.call_value("get", Value::Undefined).await;
                self.answer(what, &h, r, |v| {
                    assert_eq!(v.as_integer(), Some(ITEM_VALUE), "{what}");
                });
            }
            Op::Clone => {
                if let Some(i) = self.pick(|_| true) {
                    let h = self.held[i].clone();
                    self.held.push(h);
                }
            }
            Op::Drop => {
                if let Some(i) = self.pick(|_| true) {
                    self.held.swap_remove(i);
                }
            }
            Op::Dispose => {
                if let Some(i) = self.pick(|_| true) {
                    let h = self.held.swap_remove(i);
                    self.disposing(&h);
                    h.client.dispose().await;
                }
            }
            Op::DisposeTwice => {
                // Two clones of one reference disposed at once: one disposal call.
                if let Some(i) = self.pick(|_| true) {
                    let h = self.held.swap_remove(i);
                    self.disposing(&h);
                    let other = h.client.clone();
                    tokio::join!(h.client.dispose(), other.dispose());
                }
            }
            Op::AbortSpawned => {
                // A call or a stream in a task of its own, aborted after a few yields: it is
                // dropped wherever that task is, on either worker.
                let Some(h) = self.svc() else { return };
                let stream = self.rng.chance(50);
                let ms = self.rng.below(20);
                let yields = self.rng.below(4);
                let client = h.client.clone();
                let task = tokio::spawn(async move {
                    if stream {
                        let mut s = client.stream("nums", args("n", ms));
                        let mut values = Vec::new();
                        while let Some(v) = s.next().await {
                            values.push(v);
                        }
                        Err(values)
                    } else {
                        Ok(client.call_value("slow", args("ms", ms)).await)
                    }
                });
                for _ in 0..yields {
                    self.pause().await;
                }
                task.abort();
                match task.await {
                    Err(e) => assert!(e.is_cancelled(), "{what}: {e}"),
                    Ok(Ok(r)) => self.answer(what, &h, r, |v| {
                        assert_eq!(v, Value::from("slept"), "{what}");
                    }),
                    Ok(Err(values)) => {
                        for (i, v) in values.into_iter().enumerate() {
                            match v {
                                Ok(v) if !h.released() => {
                                    assert_eq!(v.as_integer(), Some(i as i128), "{what}")
                                }
                                r => self.answer(what, &h, r, |v| panic!("{what}: {v:?}")),
                            }
                        }
                    }
                }
            }
            Op::CallAfterRelease => {
                let Some(i) = self.pick(|_| true) else { return };
                let h = self.held.swap_remove(i);
                h.released.store(true, Ordering::SeqCst);
                let other = h.clone();
                h.client.release();
                let r = other.client.call_value("get", Value::Undefined).await;
                self.answer(what, &other, r, |v| panic!("{what}: released, but {v:?}"));
            }
            Op::Deadline => {
                let Some(h) = self.svc() else { return };
                let c = &h.client;
                let deadline = Duration::from_millis(5 + self.rng.below(50));
                if self.rng.chance(50) {
                    // Far beyond the deadline: only the deadline can end it, by the
                    // client's timer (deadline + grace) or by the server's signal to the
                    // handler at the deadline, which `slow` answers "cancelled" (PROTOCOL
                    // §11: the handler's answer is sent).
                    let r = c
                        .call_with("slow", args("ms", 60_000), CallOptions::deadline(deadline))
                        .await;
                    match r {
                        Err(e) if e.code() == Code::DeadlineExceeded => {}
                        r => self.answer(what, &h, r, |v| {
                            assert_eq!(v, Value::from("cancelled"), "{what}");
                        }),
                    }
                } else {
                    // Well within a long deadline.
                    let r = c
                        .call_with("slow", args("ms", 0), CallOptions::deadline(OP_BOUND))
                        .await;
                    self.answer(what, &h, r, |v| {
                        assert_eq!(v, Value::from("slept"), "{what}");
                    });
                }
            }
            Op::DropAfterPolls => {
                let Some(h) = self.svc() else { return };
                let polls = self.rng.below(5);
                let ms = self.rng.below(20);
                let mut call = std::pin::pin!(h.client.call_value("slow", args("ms", ms)));
                for _ in 0..polls {
                    if let std::task::Poll::Ready(r) = futures::poll!(call.as_mut()) {
                        self.answer(what, &h, r, |v| {
                            assert_eq!(v, Value::from("slept"), "{what}");
                        });
                        return;
                    }
                    self.pause().await;
                }
                // Dropped unanswered: a cancel goes to the peer.
            }
            Op::Cancel => {
                let Some(h) = self.svc() else { return };
                let token = CancellationToken::new();
                let after = self.rng.below(10);
                let opts = CallOptions {
                    cancel: Some(token.clone()),
                    ..CallOptions::default()
                };
                let call = h.client.call_with("wait", Value::Undefined, opts);
                let fire = async {
                    if after > 0 {
                        tokio::time::sleep(Duration::from_millis(after - 1)).await;
                    }
                    token.cancel();
                };
                let (r, ()) = tokio::join!(call, fire);
                match r {
                    Err(e) if e.local_kind() == Some(LocalError::Cancelled) => {}
                    r => self.answer(what, &h, r, |v| {
                        panic!("{what}: a cancelled wait gave {v:?}");
                    }),
                }
            }
            Op::Stream => self.stream(what).await,
            Op::BootstrapFlip => {
                let r = self.side.conn.bootstrap(&flip_def()).await;
                match r {
                    Ok(c) => self.held.push(Held::new(Kind::Flip, c)),
                    // Not served by the peer at the moment.
                    Err(e) if e.code() == Code::NotFound => {}
                    Err(e) => assert!(
                        self.closing() && e.code() == Code::Unavailable,
                        "{what}: {e:?}"
                    ),
                }
            }
            Op::CallFlip => {
                let Some(i) = self.pick(|h| h.kind == Kind::Flip) else {
                    return;
                };
                let h = self.held[i].clone();
                let ms = self.rng.below(3) * self.rng.below(10);
                let before = h.generation.load(Ordering::SeqCst);
                let r = h.client.call_value("gen", args("ms", ms)).await;
                match r {
                    // Revoked by an unserve (`failed_precondition` once the client knows,
                    // `not_found` from the peer before it does).
                    Err(e)
                        if !h.released()
                            && (e.code() == Code::FailedPrecondition
                                || e.code() == Code::NotFound) =>
                    {
                        if e.reason() == Some("revoked") {
                            h.revoked.store(true, Ordering::SeqCst);
                        }
                    }
                    r => self.answer(what, &h, r, |v| {
                        let generation = v.as_integer().expect("a generation") as i64;
                        assert!(
                            !h.revoked.load(Ordering::SeqCst),
                            "{what}: generation {generation} answered after a revocation"
                        );
                        // Calls of one actor on one reference follow each other: each
                        // starts after the one before answered.
                        assert!(
                            generation >= before,
                            "{what}: generation {generation} after {before}"
                        );
                        h.generation.fetch_max(generation, Ordering::SeqCst);
                    }),
                }
            }
            Op::ServeFlip | Op::UnserveFlip | Op::ReplaceFlip => self.flip(op, what).await,
            Op::Subscribe => {
                let counted = Counted::new(&self.case.observers);
                let id = if self.rng.chance(50) {
                    self.side.conn.subscribe(move |e: &Event| {
                        // Formats the event as a logging observer would.
                        let _ = (format!("{e:?}"), &counted);
                    })
                } else {
                    // Holds its connection and calls back into it from its events: reads
                    // its counts, and subscribes and unsubscribes another observer.
                    let conn = self.side.conn.clone();
                    let count = self.case.observers.clone();
                    self.side.conn.subscribe(move |_: &Event| {
                        let _ = (conn.stats(), &counted);
                        let inner = Counted::new(&count);
                        let id = conn.subscribe(move |_: &Event| {
                            let _ = &inner;
                        });
                        conn.unsubscribe(id);
                    })
                };
                self.subscriptions.push(id);
            }
            Op::DropCapCall => {
                // A bootstrap or a sub-cap call dropped after a few polls: its answer brings
                // a cap, which must be released whenever the answer comes.
                let Some(h) = self.svc() else { return };
                let polls = self.rng.below(6);
                let conn = self.side.conn.clone();
                let svc = svc_def();
                let boot = self.rng.chance(50);
                let mut call: Pin<Box<dyn Future<Output = Result<Client, Error>> + Send>> = if boot
                {
                    Box::pin(conn.bootstrap(&svc))
                } else {
                    Box::pin(h.client.call_cap("sub", Value::Undefined))
                };
                for _ in 0..polls {
                    if let Poll::Ready(r) = futures::poll!(call.as_mut()) {
                        if boot {
                            self.ok_or_closing(what, r);
                        } else {
                            self.answer(what, &h, r, drop);
                        }
                        return;
                    }
                    self.pause().await;
                }
            }
            Op::Burst => {
                // Several calls at once from one actor, some dropped unanswered.
                let Some(h) = self.svc() else { return };
                let n = 1 + self.rng.below(BURST as u64) as usize;
                let give_up = self.rng.chance(30);
                let calls = (0..n).map(|i| {
                    let c = h.client.clone();
                    async move {
                        if i % 2 == 0 {
                            c.call_value("inc", Value::Undefined).await
                        } else {
                            c.call_cap("sub", Value::Undefined).await.map(|item| {
                                drop(item);
                                Value::from(1)
                            })
                        }
                    }
                });
                let all = futures::future::join_all(calls);
                let results = if give_up {
                    match tokio::time::timeout(Duration::from_millis(1), all).await {
                        Ok(results) => results,
                        Err(_) => return,
                    }
                } else {
                    all.await
                };
                for r in results {
                    self.answer(what, &h, r, |v| {
                        assert!(v.as_integer().is_some_and(|n| n > 0), "{what}: {v:?}");
                    });
                }
            }
            Op::RaceRelease => {
                // One clone released while another calls, on another task: the call either
                // went out first or fails `Released`.
                let Some(i) = self.pick(|_| true) else { return };
                let h = self.held.swap_remove(i);
                let other = h.clone();
                let method = if h.kind == Kind::Item { "get" } else { "inc" };
                let task = tokio::spawn(async move {
                    let r = other.client.call_value(method, Value::Undefined).await;
                    (other, r)
                });
                self.pause().await;
                let was_released = h.released.swap(true, Ordering::SeqCst);
                h.client.release();
                let (other, r) = task.await.expect("the calling task");
                match r {
                    Ok(v) if !was_released && h.kind != Kind::Flip => {
                        assert!(v.as_integer().is_some_and(|n| n > 0), "{what}: {v:?}")
                    }
                    Ok(v) if !was_released => assert!(v.as_integer().is_some(), "{what}: {v:?}"),
                    Err(e)
                        if h.kind == Kind::Flip
                            && (e.code() == Code::FailedPrecondition
                                || e.code() == Code::NotFound) => {}
                    r => self.answer(what, &other, r, |v| panic!("{what}: {v:?}")),
                }
            }
            Op::Unsubscribe => {
                if !self.subscriptions.is_empty() {
                    let i = self.rng.below(self.subscriptions.len() as u64) as usize;
                    let id = self.subscriptions.swap_remove(i);
                    self.side.conn.unsubscribe(id);
                }
            }
        }
    }

    /// Opens `nums {n}`, reads `k` values (each its index), and then drops the stream, or
    /// reads on to its end (exactly `n` values).
    async fn stream(&mut self, what: &str) {
        let Some(h) = self.svc() else { return };
        let n = self.rng.below(12);
        let to_end = self.rng.chance(50);
        let k = if to_end { n } else { self.rng.below(n + 1) };
        let mut stream = h.client.stream("nums", args("n", n));
        for i in 0..k {
            match stream.next().await {
                Some(Ok(v)) if !h.released() => {
                    assert_eq!(v.as_integer(), Some(i128::from(i)), "{what}")
                }
                Some(r @ Err(_)) => return self.answer(what, &h, r, |_: Value| {}),
                other => panic!("{what}: value {i} of {n}: {other:?}"),
            }
        }
        if to_end {
            match stream.next().await {
                None if !h.released() => {}
                Some(r @ Err(_)) => self.answer(what, &h, r, |_: Value| {}),
                other => panic!("{what}: after {n} values: {other:?}"),
            }
        }
    }

    /// Serves, unserves or replaces `ops.flip` on this actor's side, one change at a time,
    /// each with the answer the known state calls for.
    async fn flip(&mut self, op: Op, what: &str) {
        let mut flip = self.side.flip.clone().lock_owned().await;
        let retired = Arc::new(AtomicBool::new(false));
        flip.generation += 1;
        let imp = flip_impl(
            flip.generation,
            retired.clone(),
            self.case.violations.clone(),
        );
        let conn = &self.side.conn;
        match op {
            Op::ServeFlip => {
                let r = conn.serve(flip_def(), imp).await;
                match (r, flip.current.is_some()) {
                    (Ok(handle), false) => {
                        handle.detach();
                        flip.current = Some(retired);
                    }
                    (Err(s), true) if s.code == Code::AlreadyExists => {}
                    (Err(s), _) if self.closing() && s.code == Code::Unavailable => {}
                    (r, served) => panic!("{what}: serve (served: {served}) gave {r:?}"),
                }
            }
            Op::UnserveFlip => {
                conn.unserve("ops.flip").await;
                if let Some(old) = flip.current.take() {
                    old.store(true, Ordering::SeqCst);
                }
            }
            _ => {
                let r = conn.replace(flip_def(), imp).await;
                match (r, flip.current.is_some()) {
                    (Ok(()), true) => {
                        if let Some(old) = flip.current.replace(retired) {
                            old.store(true, Ordering::SeqCst);
                        }
                    }
                    (Err(s), false) if s.code == Code::NotFound => {}
                    (Err(s), _) if self.closing() && s.code == Code::Unavailable => {}
                    (r, served) => panic!("{what}: replace (served: {served}) gave {r:?}"),
                }
            }
        }
    }

    /// Closes or drains this side or the other, or cuts the link, while the other actors
    /// still work; then a call from a closed side fails `unavailable`.
    async fn close(&mut self, what: &str) {
        self.case.closing.store(true, Ordering::SeqCst);
        let side = if self.rng.chance(50) {
            self.side.clone()
        } else {
            self.peer.clone()
        };
        match self.rng.below(3) {
            0 => side.conn.close(),
            1 => side.conn.drain(Duration::from_millis(self.rng.below(200))),
            _ => self.cut.cancel(),
        }
        if side.name == self.side.name && side.conn.is_closed() {
            if let Some(h) = self.svc() {
                let r = h.client.call_value("inc", Value::Undefined).await;
                self.answer(what, &h, r, |v| {
                    panic!("{what}: a call after close gave {v:?}")
                });
            }
        }
    }
}

/// The generator is the same everywhere (replayed seeds replay the same operations).
#[test]
fn the_generator_is_splitmix64() {
    let mut rng = Rng(1234567);
    assert_eq!(rng.next(), 6457827717110365317);
    assert_eq!(rng.next(), 3203168211198807973);
}

/// A transport whose link dies when its token fires: both ends' sources and sinks fail
/// `ConnectionReset` from then on, as when a network drops (the transports are dropped by
/// their drivers as they end).
struct Cuttable<T>(T, CancellationToken);

struct CutSink<S> {
    inner: S,
    cut: CancellationToken,
}

struct CutSource<S> {
    inner: S,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

fn reset() -> TransportError {
    std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()
}

impl<T: Transport> Transport for Cuttable<T> {
    type Sink = CutSink<T::Sink>;
    type Source = CutSource<T::Source>;

    fn split(self) -> (Self::Sink, Self::Source) {
        let (sink, source) = self.0.split();
        let cut = Box::pin(self.1.clone().cancelled_owned());
        let sink = CutSink {
            inner: sink,
            cut: self.1,
        };
        (sink, CutSource { inner: source, cut })
    }

    fn info(&self) -> TransportInfo {
        self.0.info()
    }
}

impl<S: MessageSource> MessageSource for CutSource<S> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, TransportError>> {
        if self.cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(reset()));
        }
        self.inner.poll_recv(cx)
    }
}

impl<S: MessageSink> MessageSink for CutSink<S> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        if self.cut.is_cancelled() {
            return Poll::Ready(Err(reset()));
        }
        self.inner.poll_ready(cx)
    }

    fn start_send(&mut self, msg: Bytes) -> Result<(), TransportError> {
        if self.cut.is_cancelled() {
            return Err(reset());
        }
        self.inner.start_send(msg)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        if self.cut.is_cancelled() {
            return Poll::Ready(Err(reset()));
        }
        self.inner.poll_flush(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        self.inner.poll_close(cx)
    }

    fn written(&self) -> u64 {
        self.inner.written()
    }

    fn queued(&self) -> usize {
        self.inner.queued()
    }
}
