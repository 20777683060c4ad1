//! The operations, the checks and the case of the seeded random operations on live
//! connections: the layer above the session (the driver, the handles and their `Drop`s,
//! handler tasks) on a multi-thread runtime of two workers (`docs/RELIABILITY.md`, "Seeded
//! random operations on live connections"). `random_ops.rs` runs the cases over the
//! in-memory transport and loopback TCP; `random_ops_wire.rs` over WebSocket, the sealed
//! pipe and through bounded listeners with a send budget. A test file gives [`run_seeds`]
//! the way it connects a case's two peers ([`Connect`]); everything else is here.
//!
//! Each case is one seed. Two peers each serve `ops.svc` to the other (unary calls, a slow
//! and a waiting handler, a sub-cap with a disposal method, a stream, a call back over the
//! same connection, an answer of a chosen size), the typed `ops.Typed` (`#[cap]`: a call, a
//! sub-cap `ops.Part` with a disposal method, a stream, a slow call; `typed.rs`) and
//! `ops.secret`, which their policy refuses to bootstrap, and serve, unserve and replace
//! `ops.flip` while the other calls it. Several actors (spawned tasks) per side draw
//! operations from their own generator (splitmix64, seeded from the case's seed):
//! bootstraps (a refused one too), calls, sub-caps, clones, drops, releases, disposals,
//! deadlines, call futures (bootstraps and cap-returning calls too) dropped after a few
//! polls or aborted on another task, cancellations, bursts, streams read partly or to the
//! end, typed calls, sub-caps and streams, answers larger than a listener's send budget can
//! pay for, observers that call back into their connection, and in some cases a close or a
//! drain of either side, or a cut of the link, while work is in flight.
//!
//! What must hold: every operation ends within [`OP_BOUND`] and the case within
//! [`CASE_BOUND`]; no actor panics; every outcome fits its operation (a successful call
//! returns what the handler returns, a call on a released reference fails
//! `LocalError::Released`, a bootstrap the policy refuses fails `failed_precondition`
//! `policy denied` `unauthorized`, an answer the send budget cannot pay for
//! `resource_exhausted` `max_frame_bytes`, errors other than the operation's own appear
//! only once a side is closing and are then `unavailable`); no handler of `ops.flip` starts
//! once its instance was unserved or replaced, no call on a reference succeeds after one
//! failed `revoked`; disposals are called once each; a limited case ends with every
//! in-flight slot free; a bounded listener accepts no second connection while the case's
//! lives, and does once it is gone; after the case the harness
//! (`common::run_on_two_workers`) checks both connections clean, closes them, checks them
//! idle (tables, pending calls, streams, unsent bytes, tasks) and that no driver panicked
//! and no task is left; and no observer outlives the runtime.
//!
//! Under an asynchronous policy ([`PolicyKind::Async`], `random_ops.rs` only) every
//! bootstrap waits in the peer's table of policy checks (0-3 ms, or is answered on the
//! driver's first poll), both peers serve `ops.gate`, which the policy allows, denies, fails
//! or panics on by a draw, half the cases allow one to three pending checks, and actors also
//! bootstrap `ops.gate`, send bursts of bootstraps of any name (some given up while the policy
//! checks them), abort bootstraps on tasks of their own, and send bootstraps from both sides
//! just before a close, drain or cut. What must hold besides: a bootstrap of `ops.gate` succeeds
//! or fails `failed_precondition` `policy denied` `unauthorized` or `internal` `policy
//! threw`; any bootstrap may fail `resource_exhausted` `pending bootstrap limit N` only under
//! a low limit; and after a case without a close, the limit's worth of bootstraps at once, each
//! held in the policy, all go through from both sides (no check left in a table).
//!
//! Under small limits ([`run_seeds_under_small_limits`], `random_limits.rs` only) each side
//! draws its own small `Limits` (`small.rs`), on the runtime `BUNITE_TEST_RUNTIME` names.
//! What must hold besides: a limit reached gives an operation exactly the outcome its docs
//! give (`small.rs` lists them; a call fails the outcome's code, reason and message, naming
//! the limit of the side that refused it) and nothing else; no cap table and no count of
//! calls or streams either way is seen over its side's limit while the actors run; the
//! end-of-case calls at once use the smaller of the two in-flight limits; and a disposal
//! may go without its call (refused by an in-flight limit, an error `Client::dispose`
//! ignores), but never with two.
//!
//! `BUNITE_OPS_SEEDS=N` runs seeds `0..N` (or `A..B`) instead of a test's own count;
//! `BUNITE_OPS_SEED=S` runs seed S alone (a failing case prints its seed).
// Each test file uses the parts its transports need.
#![allow(dead_code)]

mod actor;
mod cut;
mod small;
pub mod typed;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::{
    CapDef, CapDefRef, Client, Connection, ConnectionBuilder, Limits, MethodDef, Policy, Record,
    Returns, Status, Value,
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

pub use crate::common::seeded::Rng;
use crate::common::seeded::{seeds, SeedReport};
use crate::common::*;
use actor::Actor;
pub use cut::Cuttable;

/// How long one operation may take (the slowest, a deadline on a slow handler, takes about
/// half a second).
pub const OP_BOUND: Duration = Duration::from_secs(5);

/// How long one case may take, closing included.
pub const CASE_BOUND: Duration = Duration::from_secs(20);

/// The most calls one actor starts at once.
const BURST: usize = 4;

/// The value of `ops.item`'s `get` (and of `ops.Part`'s `value`).
const ITEM_VALUE: i128 = 7;

/// The two peers of a case, both tracked, and the listener the second (`b`) was accepted
/// by, if any.
pub struct Pair {
    pub a: Connection,
    pub b: Connection,
    /// The transport's name, for the case's line.
    pub label: &'static str,
    /// `b`'s listener pays what waits to be sent to `a` from a send budget: what it can
    /// pay at most for one answer (the budget, the free allowance and the overdraft).
    pub send_limit: Option<usize>,
    /// `b`'s listener, whose `max_connections` is one, and a second client of it.
    pub listener: Option<Box<dyn Listener>>,
}

/// A listener that takes one connection at a time, and a second client started with the
/// case.
pub trait Listener: Send {
    /// Whether the second client was accepted (it must not be while the case's
    /// connection lives).
    fn accepted_another(&self) -> bool;

    /// Run once both peers are closed and their transports gone: the second client is
    /// accepted.
    fn after(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Connects the two peers of a case: with the connection builder `builder` makes (limits
/// and policy), each transport wrapped in [`Cuttable`] on `cut` where the wrapper can
/// apply. Draws what it needs (which transport) from the generator.
pub type Connect = fn(
    &mut Rng,
    CancellationToken,
    Arc<dyn Fn() -> ConnectionBuilder + Send + Sync>,
) -> Pin<Box<dyn Future<Output = Pair> + Send>>;

/// A [`Connect`] over loopback TCP or in memory, drawn per case (`random_ops.rs`,
/// `random_limits.rs`; the draw comes first, as before the other transports were added).
pub fn memory_or_tcp(
    rng: &mut Rng,
    cut: CancellationToken,
    builder: Arc<dyn Fn() -> ConnectionBuilder + Send + Sync>,
) -> Pin<Box<dyn Future<Output = Pair> + Send>> {
    let tcp = !rng.chance(50);
    Box::pin(async move {
        if tcp {
            pair_over(tcp_pair(), &cut, &*builder, "tcp")
        } else {
            pair_over(
                bunite_rpc::transport::memory::pair(),
                &cut,
                &*builder,
                "memory",
            )
        }
    })
}

/// Two peers over the two ends `ta` and `tb`, each wrapped in [`Cuttable`] on `cut` and
/// tracked, without a listener.
pub fn pair_over<T: bunite_rpc::transport::Transport>(
    (ta, tb): (T, T),
    cut: &CancellationToken,
    builder: &(dyn Fn() -> ConnectionBuilder + Send + Sync),
    label: &'static str,
) -> Pair {
    let ends = (Cuttable(ta, cut.clone()), Cuttable(tb, cut.clone()));
    pair_of(ends, builder, label)
}

/// Two peers over the two ends `ta` and `tb` as they are (wrapped by the caller where the
/// link is cut), tracked, without a listener.
pub fn pair_of<T: bunite_rpc::transport::Transport>(
    (ta, tb): (T, T),
    builder: &(dyn Fn() -> ConnectionBuilder + Send + Sync),
    label: &'static str,
) -> Pair {
    Pair {
        a: tracked_with(builder(), ta),
        b: tracked_with(builder(), tb),
        label,
        send_limit: None,
        listener: None,
    }
}

/// The policy both peers of a case check bootstraps with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// `Policy::new`: refuses `ops.secret` at once.
    Sync,
    /// `Policy::from_async` ([`async_policy`]): each check waits 0-3 ms (or answers at
    /// once), refuses `ops.secret`, allows, denies, fails or panics for `ops.gate` by a draw,
    /// and allows the rest; half the cases have a `max_pending_policy_checks` of 1 to 3.
    Async,
}

/// Runs the seeds of a test: `BUNITE_OPS_SEED`, `BUNITE_OPS_SEEDS` (`N` or `A..B`), or
/// `0..ci_seeds`.
pub fn run_seeds(ci_seeds: u64, connect: Connect) {
    run_seeds_with(ci_seeds, connect, PolicyKind::Sync);
}

/// [`run_seeds`] with the policy `policy`.
pub fn run_seeds_with(ci_seeds: u64, connect: Connect, policy: PolicyKind) {
    run_cases("random_ops", ci_seeds, connect, policy, false);
}

/// [`run_seeds`] with each side's limits drawn small (`small.rs`), on the runtime
/// `BUNITE_TEST_RUNTIME` names (`common::run`: one thread unless it says `multi`).
pub fn run_seeds_under_small_limits(ci_seeds: u64, connect: Connect) {
    run_cases("random_limits", ci_seeds, connect, PolicyKind::Sync, true);
}

fn run_cases(test: &'static str, ci_seeds: u64, connect: Connect, policy: PolicyKind, small: bool) {
    if policy == PolicyKind::Async {
        quiet_policy_panics();
    }
    for seed in seeds(ci_seeds) {
        let _report = SeedReport { test, seed };
        let observers = Arc::new(AtomicI64::new(0));
        let live = observers.clone();
        let body = async move {
            if tokio::time::timeout(CASE_BOUND, case(seed, live, connect, policy, small))
                .await
                .is_err()
            {
                panic!("seed {seed}: the case did not end within {CASE_BOUND:?}");
            }
        };
        // Under small limits, on the runtime `BUNITE_TEST_RUNTIME` names; else two workers.
        if small {
            run(body);
        } else {
            run_on_two_workers(body);
        }
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

/// Leaves out of the output the panics [`async_policy`] makes on purpose (a few hundred
/// a run, each with its backtrace); every other panic is reported as before.
fn quiet_policy_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.payload().downcast_ref::<&str>().copied();
            if !message.is_some_and(|m| m.starts_with(POLICY_PANIC)) {
                report(info);
            }
        }));
    });
}

/// How the panics [`async_policy`] makes on purpose begin.
const POLICY_PANIC: &str = "ops.gate's policy panicked";

fn svc_def() -> Arc<CapDef> {
    CapDef::builder("ops.svc")
        .method(MethodDef::call("inc"))
        .method(MethodDef::call("slow"))
        .method(MethodDef::call("wait"))
        .method(MethodDef::call("sub").returns(Returns::Cap(CapDefRef::Lazy(item_def))))
        .method(MethodDef::call("back"))
        .method(MethodDef::stream("nums").initial_credit(4))
        .method(MethodDef::call("big"))
        .build()
}

/// The name the policy refuses.
const SECRET: &str = "ops.secret";

fn secret_def() -> Arc<CapDef> {
    CapDef::builder(SECRET)
        .method(MethodDef::call("get"))
        .build()
}

/// The name whose bootstraps an asynchronous policy allows, denies, fails or panics on by a
/// draw (its `get` answers [`ITEM_VALUE`]).
const GATE: &str = "ops.gate";

fn gate_def() -> Arc<CapDef> {
    CapDef::builder(GATE).method(MethodDef::call("get")).build()
}

/// What an asynchronous policy decides by: its own generator (checks run on either worker,
/// so the order of their draws is not the seed's alone), and the end of a case, from which
/// every check waits [`SETTLE`] and allows (`ops.secret` still refused).
pub(crate) struct PolicyState {
    rng: Mutex<Rng>,
    settle: AtomicBool,
}

/// How long every check of an asynchronous policy waits once the case settles: long enough
/// that the bootstraps sent at once at the end of a case all wait for it together.
const SETTLE: Duration = Duration::from_millis(20);

/// The asynchronous policy of [`PolicyKind::Async`]: a check waits 0-3 ms (not at all, so
/// answered on the driver's first poll, when 0), refuses `ops.secret`, and allows every
/// other name but `ops.gate`, which it allows (40 %), denies (25 %), fails with an error
/// (25 %) or panics on (10 %: half as it is asked, half while it waits). `Policy`: "`Ok(false)`
/// fails the bootstrap `failed_precondition` `policy denied` `{reason:"unauthorized"}`;
/// `Err(_)` fails it `internal` `policy threw`", and a panicking policy is a failing one.
fn async_policy(state: Arc<PolicyState>) -> Policy {
    Policy::from_async(move |name: String, _| {
        let settle = state.settle.load(Ordering::SeqCst);
        let (ms, verdict) = {
            let mut rng = state.rng.lock().unwrap();
            (rng.below(4), rng.below(100))
        };
        let gate = name == GATE && !settle;
        if gate && verdict >= 95 {
            std::panic::panic_any(POLICY_PANIC);
        }
        async move {
            if settle {
                tokio::time::sleep(SETTLE).await;
            } else if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            match verdict {
                _ if name == SECRET => Ok(false),
                _ if !gate => Ok(true),
                0..40 => Ok(true),
                40..65 => Ok(false),
                65..90 => Err("ops.gate's policy failed".to_owned()),
                _ => std::panic::panic_any(POLICY_PANIC),
            }
        }
    })
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
/// `ops.svc` back over the same connection, `nums {n}` streams `0..n`, `big {n}` answers
/// a string of `n` bytes.
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
        .call("big", |args: Value, _| {
            let n = int_arg(&args, "n") as usize;
            async move { Ok(Value::from("x".repeat(n))) }
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
    /// The peers' policy.
    policy: PolicyKind,
    /// Under an asynchronous policy, the peers' `max_pending_policy_checks` if it is low
    /// enough for the actors to reach: a bootstrap may then fail `resource_exhausted`
    /// `pending bootstrap limit N` `max_concurrent_calls`.
    pending_limit: Option<usize>,
    /// Under small limits, sides `a`'s and `b`'s (`small.rs`): a limit reached gives an
    /// operation the outcome `small.rs` says.
    limits: Option<[Limits; 2]>,
    /// Under small limits, how many outcomes each limit gave (`small::Reached`).
    reached: small::Reached,
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
    /// `ops.Typed` and its sub-cap `ops.Part`, called through their typed clients.
    Typed,
    Part,
}

impl Kind {
    /// Whether the cap has a disposal method (which a disposal then owes a call of).
    fn disposes(self) -> bool {
        matches!(self, Kind::Item | Kind::Part)
    }
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

async fn case(
    seed: u64,
    observers: Arc<AtomicI64>,
    connect: Connect,
    policy_kind: PolicyKind,
    small: bool,
) {
    let mut rng = Rng(seed);
    // What an asynchronous policy draws comes from a generator of its own, so that the
    // synchronous cases draw what they always did.
    let mut policy_rng = Rng(seed ^ 0x0a5f_c0de_9011_c1e5);
    let pending_limit = (policy_kind == PolicyKind::Async && policy_rng.chance(50))
        .then(|| 1 + policy_rng.below(3) as usize);
    let policy_state = Arc::new(PolicyState {
        rng: Mutex::new(Rng(policy_rng.next())),
        settle: AtomicBool::new(false),
    });
    let actors = 2 + rng.below(3) as usize;
    // Each actor has at most `BURST` calls of its own in flight at a time, and starts
    // through the peer at most one more (`back`): a limit of `BURST + 1` calls per actor is
    // never reached by the calls actors wait for (a call dropped or cancelled gives its slot
    // back as it goes). Not under an asynchronous policy: a bootstrap given up while the
    // policy checks it keeps its slot until its answer comes (`Limits::max_in_flight`, "a
    // call whose answer would bring caps counts until that answer comes"), up to the
    // policy's delay later, and an actor's bursts of bootstraps given up one after another
    // have no such bound (the draw is kept, so that the synchronous cases draw the same).
    let limited = rng
        .chance(30)
        .then_some((BURST + 1) * actors)
        .filter(|_| policy_kind == PolicyKind::Sync);
    let cut = CancellationToken::new();
    let mut limits = Limits::default();
    if let Some(max) = limited {
        limits.max_in_flight = max;
    }
    if let Some(max) = pending_limit {
        limits.max_pending_policy_checks = max;
    }
    // Every bootstrap of `ops.secret` is refused by the policy (it is served, so that the
    // refusal is the policy's, not a `not_found`).
    let policy = match policy_kind {
        PolicyKind::Sync => Policy::new(|name, _| name != SECRET),
        PolicyKind::Async => async_policy(policy_state.clone()),
    };
    // Under small limits each side draws its own, from a generator of their own (so that
    // the rest of the case draws what it would without them); `a` is built first.
    let small = small.then(|| {
        let mut rng = Rng(seed ^ 0x5a11_0000_11b1_7500);
        [small::draw(&mut rng), small::draw(&mut rng)]
    });
    if let Some([la, lb]) = &small {
        eprintln!("seed {seed}: limits {} / {}", brief(la), brief(lb));
    }
    let limited = match &small {
        Some(sides) => Some(small::calls_at_once(sides)),
        None => limited,
    };
    let side_limits = small
        .clone()
        .unwrap_or_else(|| [limits.clone(), limits.clone()]);
    let built = std::sync::atomic::AtomicUsize::new(0);
    let builder = Arc::new(move || {
        let side = built.fetch_add(1, Ordering::SeqCst) % 2;
        Connection::builder()
            .limits(side_limits[side].clone())
            .policy(policy.clone())
    });
    let mut pair = connect(&mut rng, cut.clone(), builder).await;
    let kind = pair.label;
    let (a, b) = (pair.a.clone(), pair.b.clone());
    let disposals = Arc::new(AtomicU64::new(0));
    for conn in [&a, &b] {
        conn.serve(svc_def(), svc_impl(disposals.clone()))
            .await
            .unwrap()
            .detach();
        conn.serve(secret_def(), DynCap::new().build())
            .await
            .unwrap()
            .detach();
        if policy_kind == PolicyKind::Async {
            let gate = DynCap::new()
                .call("get", |_, _| async { Ok(Value::from(ITEM_VALUE as i64)) })
                .build();
            conn.serve(gate_def(), gate).await.unwrap().detach();
        }
        typed::serve(conn, disposals.clone()).await;
    }
    let shared = Arc::new(Case {
        seed,
        closing: AtomicBool::new(false),
        violations: Violations::default(),
        ran: AtomicU64::new(0),
        disposals_owed: AtomicU64::new(0),
        observers,
        policy: policy_kind,
        pending_limit,
        limits: small.clone(),
        reached: Default::default(),
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
            send_limit: pair.send_limit,
            case: shared.clone(),
            cut: cut.clone(),
            held: Vec::new(),
            subscriptions: Vec::new(),
            skipped: 0,
            op: actor::Op::Bootstrap,
        };
        let ops = 10 + actor_ops(seed, i);
        let closes = closer
            .filter(|&(who, _)| who == i)
            .map(|(_, at)| at.min(ops));
        tasks.push(tokio::spawn(actor.run(ops, closes)));
    }
    // Under small limits, both sides' counts are watched while the actors run.
    let stop_watch = CancellationToken::new();
    let watch = small.clone().map(|[la, lb]| {
        let sides = [(a.clone(), la), (b.clone(), lb)];
        let (stop, violations) = (stop_watch.clone(), shared.violations.clone());
        tokio::spawn(small::watch(seed, sides, stop, violations))
    });
    for (i, task) in tasks.into_iter().enumerate() {
        if let Err(e) = task.await {
            panic!("seed {seed} ({kind}): actor {i} failed: {e}");
        }
    }
    stop_watch.cancel();
    if let Some(watch) = watch {
        watch.await.expect("the watch of the counts");
    }
    eprintln!(
        "seed {seed} ({kind}{}{}): {} actors ran {} operations{}",
        match &small {
            Some(_) => format!(", small limits, reached {}", shared.reached),
            None if limited.is_some() => ", limited".into(),
            None => String::new(),
        },
        match pending_limit {
            Some(max) => format!(", {max} pending policy checks"),
            None => String::new(),
        },
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
    // A close runs the disposals of the live items too (§11), so it is not checked then.
    // Under small limits the disposal method's call may be refused by either side's
    // in-flight limit, an error `Client::dispose` ignores (and so cannot show): then no
    // more calls than disposals, never two for one.
    let (made, owed) = (
        disposals.load(Ordering::SeqCst),
        shared.disposals_owed.load(Ordering::SeqCst),
    );
    if !shared.closing.load(Ordering::SeqCst) {
        if small.is_some() {
            assert!(
                made <= owed,
                "seed {seed} ({kind}): {made} disposal calls, {owed} owed"
            );
        } else {
            assert_eq!(made, owed, "seed {seed} ({kind}): disposal calls");
        }
    }
    assert!(
        violations.is_empty(),
        "seed {seed} ({kind}): {violations:?}"
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
                    "seed {seed} ({kind}): {max} calls from {name} at the end: {r:?}"
                );
            }
        }
    }
    // No policy check is left in either side's table: once nothing runs,
    // `max_pending_policy_checks` bootstraps at once, each waiting `SETTLE` in the policy,
    // all go through (an entry a cancelled, unserved or cut check left behind would refuse
    // the last of them).
    if let (Some(max), false) = (pending_limit, shared.closing.load(Ordering::SeqCst)) {
        assert_clean(&[&a, &b]).await;
        policy_state.settle.store(true, Ordering::SeqCst);
        for (name, conn) in [("a", &a), ("b", &b)] {
            let svc = svc_def();
            let boots = (0..max).map(|_| conn.bootstrap(&svc));
            for r in futures::future::join_all(boots).await {
                assert!(
                    r.is_ok(),
                    "seed {seed} ({kind}): {max} bootstraps from {name} at the end: {r:?}"
                );
            }
        }
    }
    // Through a listener that takes one connection at a time, a second client was not
    // accepted while the case's connection lived (unless a side closed or the link was cut
    // during the case: then it may have been let go already).
    if let (Some(l), false) = (&pair.listener, shared.closing.load(Ordering::SeqCst)) {
        assert!(
            !l.accepted_another(),
            "seed {seed} ({kind}): the listener accepted a second connection"
        );
    }
    // Both sides close here; the harness then checks them clean, closed and idle. A case
    // through a listener closes them in any case, to see the listener's slot come back.
    if shared.closing.load(Ordering::SeqCst) || pair.listener.is_some() {
        for conn in [&a, &b] {
            conn.close();
        }
    }
    if let Some(l) = pair.listener.take() {
        for conn in [&a, &b] {
            if tokio::time::timeout(OP_BOUND, conn.closed()).await.is_err() {
                panic!("seed {seed} ({kind}): a closed peer did not finish");
            }
        }
        l.after().await;
    }
}

/// The small limits of a side, for the case's line.
fn brief(l: &Limits) -> String {
    format!(
        "caps {} in-flight {} revoked {} unsent {} buffered {} bytes {} depth {} records {} \
         budget {}+{}x",
        l.max_caps,
        l.max_in_flight,
        l.max_revoked_ids,
        l.max_unsent_bytes,
        l.max_buffered_stream_bytes,
        l.max_bytes,
        l.max_depth,
        l.max_record_table_bytes,
        l.decode_budget_base,
        l.decode_budget_factor
    )
}

/// How many operations (beyond ten) actor `i` of case `seed` runs.
fn actor_ops(seed: u64, i: usize) -> usize {
    Rng(seed ^ (i as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1)).below(30) as usize
}
