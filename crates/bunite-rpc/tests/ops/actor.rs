//! An actor of a case: a task that draws operations from its generator and checks each
//! outcome.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bunite_rpc::{CallOptions, Client, Code, Error, Event, LocalError, SubscriptionId, Value};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{
    args, flip_def, flip_impl, gate_def, svc_def, Case, Counted, Held, Kind, PolicyKind, Rng, Side,
    BURST, GATE, ITEM_VALUE, OP_BOUND, SECRET,
};

pub(super) struct Actor {
    pub(super) id: usize,
    pub(super) rng: Rng,
    /// The side this actor calls from (and serves `ops.flip` on).
    pub(super) side: Side,
    /// The other side (whose `ops.flip` it bootstraps).
    pub(super) peer: Side,
    /// What side `b`'s listener can pay for one answer to `a` at most, if it has a send
    /// budget (`Pair::send_limit`).
    pub(super) send_limit: Option<usize>,
    pub(super) case: Arc<Case>,
    /// Kills the link between the two sides.
    pub(super) cut: CancellationToken,
    pub(super) held: Vec<Held>,
    pub(super) subscriptions: Vec<SubscriptionId>,
    /// Operations that found nothing to run on.
    pub(super) skipped: u64,
    /// The operation running (what a small limit may give it depends on it: `small.rs`).
    pub(super) op: Op,
}

/// The operations an actor draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
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
    BootstrapDenied,
    Big,
    BootstrapTyped,
    TypedInc,
    TypedPart,
    PartValue,
    TypedSlow,
    TypedStream,
    BootstrapGate,
    BootstrapBurst,
    BootstrapAborted,
}

const OPS: [Op; 34] = [
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
    Op::BootstrapDenied,
    Op::Big,
    Op::BootstrapTyped,
    Op::TypedInc,
    Op::TypedPart,
    Op::PartValue,
    Op::TypedSlow,
    Op::TypedStream,
];

/// The operations drawn too under an asynchronous policy (after [`OPS`], so that the
/// synchronous cases draw what they always did).
const POLICY_OPS: [Op; 3] = [Op::BootstrapGate, Op::BootstrapBurst, Op::BootstrapAborted];

/// More than a result frame takes around its value (`op`, `id`, `ok`, the keys).
const FRAME_OVERHEAD: usize = 64;

/// The names a burst of bootstraps draws from.
const NAMES: [&str; 5] = ["ops.svc", GATE, "ops.flip", SECRET, "ops.Typed"];

impl Actor {
    /// Runs `ops` operations; closes, drains or cuts a side after `closes` of them.
    pub(super) async fn run(mut self, ops: usize, closes: Option<usize>) {
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
                _ if self.case.policy == PolicyKind::Async => {
                    let i = self.rng.below((OPS.len() + POLICY_OPS.len()) as u64) as usize;
                    OPS.iter().chain(&POLICY_OPS).copied().nth(i).unwrap()
                }
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
                let (side, peer) = (&self.side.conn, &self.peer.conn);
                panic!(
                    "{what}: did not end within {OP_BOUND:?}; this side (closed: {}) {:?}, the \
                     other (closed: {}) {:?}",
                    side.is_closed(),
                    side.stats(),
                    peer.is_closed(),
                    peer.stats()
                );
            }
        }
        let ran = ops as u64 - self.skipped;
        self.case.ran.fetch_add(ran, Ordering::Relaxed);
        for id in self.subscriptions.drain(..) {
            self.side.conn.unsubscribe(id);
        }
        // Whatever is still held is dropped here, on this actor's worker.
    }

    pub(super) fn closing(&self) -> bool {
        self.case.closing.load(Ordering::SeqCst)
    }

    /// `result` must be `Ok`, or, once a side is closing, fail `unavailable`.
    #[track_caller]
    pub(super) fn ok_or_closing<T: std::fmt::Debug>(
        &self,
        what: &str,
        result: Result<T, Error>,
    ) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                assert!(
                    (self.closing() && e.code() == Code::Unavailable) || self.call_limit(&e),
                    "{what}: unexpected {e:?}"
                );
                None
            }
        }
    }

    /// `result` must fail with `code` (or, once a side is closing, `unavailable`).
    #[track_caller]
    pub(super) fn fails_with<T: std::fmt::Debug>(
        &self,
        what: &str,
        result: Result<T, Error>,
        code: Code,
    ) {
        match result {
            Ok(v) => panic!("{what}: expected {code:?}, got {v:?}"),
            Err(e) => assert!(
                e.code() == code
                    || (self.closing() && e.code() == Code::Unavailable)
                    || self.bootstrap_limit("ops.nope", &e),
                "{what}: expected {code:?}, got {e:?}"
            ),
        }
    }

    /// The outcome of a bootstrap of `name`, the client if it succeeded. Besides the
    /// outcomes of [`Self::refused`], `ops.secret` fails `failed_precondition` `policy
    /// denied` `unauthorized` and never succeeds, and `ops.flip` fails `not_found` while its
    /// side does not serve it (unserved before the bootstrap came, or while the policy
    /// checked it: the registry is checked again when the policy answers).
    #[track_caller]
    pub(super) fn bootstrapped(
        &self,
        what: &str,
        name: &str,
        result: Result<Client, Error>,
    ) -> Option<Client> {
        match result {
            Ok(c) if name != SECRET => return Some(c),
            Err(e) if name == SECRET && denied(&e) => {}
            Err(e) if name == "ops.flip" && e.code() == Code::NotFound => {}
            Err(e) if self.refused(name, &e) => {}
            other => panic!("{what}: a bootstrap of {name} gave {other:?}"),
        }
        None
    }

    /// Whether `e` is a failure any bootstrap of `name` may have: `unavailable` once a side
    /// is closing; under small limits, what they give it (`small.rs`); under a low
    /// `max_pending_policy_checks`, `resource_exhausted` `pending
    /// bootstrap limit N` `max_concurrent_calls`; and for `ops.gate` under an asynchronous
    /// policy, its denial (`failed_precondition` `policy denied` `unauthorized`) or its
    /// failure or panic (`internal` `policy threw`).
    pub(super) fn refused(&self, name: &str, e: &Error) -> bool {
        let limit = self.case.pending_limit.is_some_and(|max| {
            e.code() == Code::ResourceExhausted
                && e.reason() == Some("max_concurrent_calls")
                && e.message() == format!("pending bootstrap limit {max}")
        });
        let gate = name == GATE
            && self.case.policy == PolicyKind::Async
            && (denied(e) || (e.code() == Code::Internal && e.message() == "policy threw"));
        let small = self.bootstrap_limit(name, e);
        limit || small || gate || (self.closing() && e.code() == Code::Unavailable)
    }

    /// A held client of the kind `pick` selects, by index.
    pub(super) fn pick(&mut self, pick: impl Fn(&Held) -> bool) -> Option<usize> {
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
    /// item or a part (the kinds with a disposal method) is owed if it was not released
    /// before.
    fn disposing(&self, held: &Held) {
        if !held.released.swap(true, Ordering::SeqCst) && held.kind.disposes() {
            self.case.disposals_owed.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub(super) fn svc(&mut self) -> Option<Held> {
        let i = self.pick(|h| h.kind == Kind::Svc)?;
        Some(self.held[i].clone())
    }

    /// The outcome of a call on `held`: `Ok` (checked by `check`), `LocalError::Released`
    /// if its reference was released, `unavailable` once a side is closing, or under small
    /// limits what a limit reached gives the operation (`small.rs`).
    #[track_caller]
    pub(super) fn answer<T: std::fmt::Debug>(
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
            Err(e) if self.call_limit(&e) => {}
            other => panic!(
                "{what}: unexpected {other:?} (released: {})",
                held.released()
            ),
        }
    }

    async fn op(&mut self, op: Op, what: &str) {
        self.op = op;
        match op {
            Op::Bootstrap => {
                let r = self.side.conn.bootstrap(&svc_def()).await;
                if let Some(c) = self.bootstrapped(what, "ops.svc", r) {
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
                // `back`'s own bootstrap may be refused; the handler answers its error.
                if let Err(e) = &r {
                    if !h.released() && self.refused("ops.svc", e) {
                        return;
                    }
                }
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
                if let Some(c) = self.bootstrapped(what, "ops.flip", r) {
                    self.held.push(Held::new(Kind::Flip, c));
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
                            self.bootstrapped(what, "ops.svc", r);
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
                let method = match h.kind {
                    Kind::Item => "get",
                    Kind::Typed => "ping",
                    Kind::Part => "value",
                    Kind::Svc | Kind::Flip => "inc",
                };
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
            Op::BootstrapDenied => {
                // Served, but refused by the policy (`Policy`: "`Ok(false)` fails the
                // bootstrap `failed_precondition` `policy denied` `{reason:"unauthorized"}`").
                let r = self.side.conn.bootstrap_name(SECRET, None).await;
                self.bootstrapped(what, SECRET, r);
            }
            Op::BootstrapGate | Op::BootstrapBurst | Op::BootstrapAborted => {
                self.policy_op(op, what).await
            }
            Op::Big => self.big(what).await,
            Op::BootstrapTyped
            | Op::TypedInc
            | Op::TypedPart
            | Op::PartValue
            | Op::TypedSlow
            | Op::TypedStream => self.typed(op, what).await,
            Op::Unsubscribe => {
                if !self.subscriptions.is_empty() {
                    let i = self.rng.below(self.subscriptions.len() as u64) as usize;
                    let id = self.subscriptions.swap_remove(i);
                    self.side.conn.unsubscribe(id);
                }
            }
        }
    }

    /// The operations drawn only under an asynchronous policy: bootstraps of `ops.gate`,
    /// whose check may allow, deny, fail or panic; bursts of bootstraps of any name, some
    /// given up (their futures dropped, most while the policy checks them), which reach a
    /// low `max_pending_policy_checks`; and a bootstrap on a task of its own aborted after a
    /// few pauses, on either worker.
    async fn policy_op(&mut self, op: Op, what: &str) {
        match op {
            Op::BootstrapGate => {
                let r = self.side.conn.bootstrap(&gate_def()).await;
                if let Some(c) = self.bootstrapped(what, GATE, r) {
                    let r = c.call_value("get", Value::Undefined).await;
                    if let Some(v) = self.ok_or_closing(what, r) {
                        assert_eq!(v.as_integer(), Some(ITEM_VALUE), "{what}");
                    }
                }
            }
            Op::BootstrapBurst => {
                let n = 1 + self.rng.below(6) as usize;
                let names: Vec<&str> = (0..n)
                    .map(|_| NAMES[self.rng.below(NAMES.len() as u64) as usize])
                    .collect();
                let give_up = self
                    .rng
                    .chance(40)
                    .then(|| Duration::from_micros(self.rng.below(4000)));
                let conn = self.side.conn.clone();
                let boots = names.iter().map(|name| conn.bootstrap_name(name, None));
                let all = futures::future::join_all(boots);
                let results = match give_up {
                    Some(after) => match tokio::time::timeout(after, all).await {
                        Ok(results) => results,
                        Err(_) => return,
                    },
                    None => all.await,
                };
                for (name, r) in names.into_iter().zip(results) {
                    self.bootstrapped(what, name, r);
                }
            }
            _ => {
                let name = NAMES[self.rng.below(NAMES.len() as u64) as usize];
                let pauses = self.rng.below(4);
                let conn = self.side.conn.clone();
                let task = tokio::spawn(async move { conn.bootstrap_name(name, None).await });
                for _ in 0..pauses {
                    self.pause().await;
                }
                task.abort();
                match task.await {
                    Err(e) => assert!(e.is_cancelled(), "{what}: {e}"),
                    Ok(r) => {
                        self.bootstrapped(what, name, r);
                    }
                }
            }
        }
    }

    /// Calls `big {n}`: an answer of about `n` bytes. From side `a` of a case through a
    /// listener with a send budget, the answer is `b`'s to pay for: one longer than the
    /// budget, the free allowance and the overdraft can ever pay for is refused
    /// `resource_exhausted` `max_frame_bytes` (`transport::budget`, "What waits to be
    /// sent"), a shorter one may be refused the same way when others wait with it, and
    /// otherwise arrives whole. Without a budget it always arrives.
    async fn big(&mut self, what: &str) {
        let Some(h) = self.svc() else { return };
        let n = [100, 10_000, 40_000, 100_000, 300_000][self.rng.below(5) as usize];
        let limit = self.send_limit.filter(|_| self.side.name == "a");
        let r = h.client.call_value("big", super::args("n", n as u64)).await;
        if let Some(max) = self.limits().map(|(mine, _)| mine.max_bytes) {
            return self.big_under(what, &h, n, max, r);
        }
        match (r, limit) {
            (Err(e), Some(limit))
                if e.code() == Code::ResourceExhausted && e.reason() == Some("max_frame_bytes") =>
            {
                // Refused: documented for any answer the budget cannot pay for at the
                // moment (shorter ones only while others wait with it), so any size here.
                let _ = (e, limit);
            }
            (r, limit) => self.answer(what, &h, r, |v| {
                if let Some(limit) = limit {
                    assert!(n <= limit, "{what}: {n} bytes, beyond {limit}, arrived");
                }
                assert_eq!(v.as_str().map(str::len), Some(n), "{what}");
            }),
        }
    }

    /// The outcome of `big {n}` under small limits, where this side's `max_bytes` is `max`:
    /// an answer whose frame is over it is replaced by `resource_exhausted`
    /// `max_frame_bytes` (PROTOCOL §13.6), one well within it (by [`FRAME_OVERHEAD`]) arrives
    /// whole; either between the two.
    fn big_under(&self, what: &str, h: &Held, n: usize, max: usize, r: Result<Value, Error>) {
        match r {
            Err(e) if super::small::frame_too_large(&e) => {
                assert!(
                    n + FRAME_OVERHEAD > max,
                    "{what}: {n} bytes within our maxBytes {max} refused: {e:?}"
                );
                self.case.reached.frame();
            }
            r => self.answer(what, h, r, |v| {
                assert!(
                    n <= max,
                    "{what}: {n} bytes, beyond our maxBytes {max}, arrived"
                );
                assert_eq!(v.as_str().map(str::len), Some(n), "{what}");
            }),
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
        // Another actor's change of this side's `ops.flip` is bounded too: one that waits
        // for the lock beyond it names the change that holds it up, not this one.
        let lock = self.side.flip.clone().lock_owned();
        let Ok(mut flip) = tokio::time::timeout(OP_BOUND - Duration::from_secs(1), lock).await
        else {
            panic!("{what}: waited for another change of ops.flip");
        };
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
        // What follows is bootstraps and an `inc`.
        self.op = Op::Inc;
        self.case.closing.store(true, Ordering::SeqCst);
        let side = if self.rng.chance(50) {
            self.side.clone()
        } else {
            self.peer.clone()
        };
        // Under an asynchronous policy, bootstraps from both sides are sent just before
        // and checked by the policy while the side closes or the link is cut.
        let boots = (self.case.policy == PolicyKind::Async).then(|| {
            let n = 1 + self.rng.below(4) as usize;
            let boots: Vec<_> = (0..n)
                .map(|i| {
                    let name = NAMES[self.rng.below(NAMES.len() as u64) as usize];
                    let conn = [&self.side, &self.peer][i % 2].conn.clone();
                    (name, async move { conn.bootstrap_name(name, None).await })
                })
                .collect();
            let names: Vec<&str> = boots.iter().map(|(name, _)| *name).collect();
            let all = futures::future::join_all(boots.into_iter().map(|(_, b)| b));
            (names, tokio::spawn(all))
        });
        if boots.is_some() {
            self.pause().await;
        }
        match self.rng.below(3) {
            0 => side.conn.close(),
            1 => side.conn.drain(Duration::from_millis(self.rng.below(200))),
            _ => self.cut.cancel(),
        }
        if let Some((names, task)) = boots {
            let results = task.await.expect("the bootstrapping task");
            for (name, r) in names.into_iter().zip(results) {
                self.bootstrapped(what, name, r);
            }
        }
        if side.name == self.side.name && side.conn.is_closed() {
            // Not an operation of its own: finding nothing to call is no skipped one (an
            // actor that skipped all its operations would count more skips than operations).
            let skipped = self.skipped;
            let svc = self.svc();
            self.skipped = skipped;
            if let Some(h) = svc {
                let r = h.client.call_value("inc", Value::Undefined).await;
                self.answer(what, &h, r, |v| {
                    panic!("{what}: a call after close gave {v:?}")
                });
            }
        }
    }
}

/// A bootstrap the policy denied: `failed_precondition` `policy denied` `unauthorized`.
fn denied(e: &Error) -> bool {
    e.code() == Code::FailedPrecondition
        && e.reason() == Some("unauthorized")
        && e.message() == "policy denied"
}
