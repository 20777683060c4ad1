//! One peer of the harness: its session, what the harness expects of it, the local
//! operations (as the runtime would make them) and the checks on what it yields.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bunite_wire::{CallId, CapId, Hello, Text, Value};

use super::hostile::{status, value};
use super::{Defs, Imp, Input, Report, F, METHODS, NAMES};
use crate::attestation::Attestation;
use crate::error::Disconnect;
use crate::limits::Limits;
use crate::schema::{CapDef, IfExists};
use crate::session::{
    CallRequest, Config as SessionConfig, Expect, Outcome, Output, Parent, RunId,
};
use crate::session::{Session, TransportEnd};

/// The settings of both peers, read from the first two bytes: small limits, so that an
/// input of a few hundred bytes reaches them.
pub(crate) struct Config {
    limits: Limits,
    policy: [bool; 2],
    runtime: [bool; 2],
}

impl Config {
    pub fn read(input: &mut Input<'_>) -> Config {
        let (a, b) = (input.b(), input.b());
        let limits = Limits {
            max_in_flight: [1, 2, 4, 1024][usize::from(a & 3)],
            max_caps: [3, 4, 8, 1024][usize::from((a >> 2) & 3)],
            hello_timeout: (a & 0x40 != 0).then_some(Duration::from_millis(50)),
            max_bytes: if a & 0x80 != 0 {
                400
            } else {
                Limits::default().max_bytes
            },
            max_pending_policy_checks: [1, 1024][usize::from(b & 1)],
            max_revoked_ids: [0, 2, 4096][usize::from((b >> 1) & 3) % 3],
            ..Limits::default()
        };
        Config {
            limits,
            policy: [a & 0x10 != 0, a & 0x20 != 0],
            runtime: [b & 0x10 != 0, b & 0x20 != 0],
        }
    }
}

/// A typed handler's result, and typed call args.
#[derive(serde::Serialize)]
struct TypedReply {
    text: String,
    n: u64,
}

/// A run the harness started and has not yet seen end.
struct Run {
    call_id: CallId,
    stream: bool,
}

pub(crate) struct Side {
    pub name: &'static str,
    pub s: Session<F>,
    pub now: Instant,
    max_bytes: usize,
    has_policy: bool,
    next_id: u64,
    /// Reply tags not yet answered, and whether their reply carries caps.
    awaiting: HashMap<u64, bool>,
    /// Our calls and bootstraps, by id, with their reply tags.
    pub pending: Vec<(CallId, u64)>,
    /// Client streams still open: id, sink, values received and not yet returned as credit.
    pub streams: Vec<(CallId, u64, u32)>,
    open_sinks: HashSet<u64>,
    /// CapRefs we hold (one entry per reference).
    pub held: Vec<CapId>,
    /// Live runs, in order (ordered so that the same input always picks the same run).
    runs: BTreeMap<RunId, Run>,
    ended_runs: HashSet<RunId>,
    pub policies: Vec<CallId>,
    deferred: HashSet<u64>,
    pub closed: Option<Disconnect>,
    /// Received something a conforming peer would not send: a protocol error is allowed.
    pub tainted: bool,
    /// The session was asked to drain: it closes once nothing is in progress.
    draining: bool,
    /// Messages received from the peer; the first is its hello, whose `maxBytes` bounds
    /// what we encode from then on.
    received: usize,
    /// Messages queued before the peer's hello arrived: encoded for the default `maxBytes`.
    before_hello: usize,
    /// Decodes what this side receives, in step with its session, to name a frame in a
    /// failure message.
    pub mirror: bunite_wire::Decoder,
    observed: bool,
    /// The most the session may hold once an answer is queued, as a runtime's send
    /// budget would pay (`usize::MAX`: no budget); cycled by `toggle_observed`.
    pay_limit: usize,
    toggles: usize,
}

impl Side {
    pub fn new(name: &'static str, cfg: &Config, i: usize, defs: &Defs, now: Instant) -> Side {
        let has_policy = cfg.policy.get(i).copied().unwrap_or(false);
        let hello = Hello {
            v: 1,
            mode: "native".into(),
            features: vec!["fuzz".into()],
            max_bytes: cfg.limits.max_bytes as u64,
            origin: name.into(),
        };
        let session_cfg = SessionConfig {
            limits: cfg.limits.clone(),
            attestation: Attestation::default(),
            has_policy,
            hello,
        };
        let mut s = Session::new(session_cfg, now);
        if cfg.runtime.get(i).copied().unwrap_or(false) {
            s.set_runtime(Arc::clone(&defs.runtime), Imp { handlers: true });
        }
        let mut served = vec![(Arc::clone(&defs.parent), Imp { handlers: true })];
        if i == 0 {
            served.push((Arc::clone(&defs.v1), Imp { handlers: true }));
        }
        if let Err(e) = s.serve(served, IfExists::Throw) {
            panic!("{name}: serving the initial caps: {e}");
        }
        Side {
            name,
            s,
            now,
            max_bytes: cfg.limits.max_bytes,
            has_policy,
            next_id: 0,
            awaiting: HashMap::new(),
            pending: Vec::new(),
            streams: Vec::new(),
            open_sinks: HashSet::new(),
            held: Vec::new(),
            runs: BTreeMap::new(),
            ended_runs: HashSet::new(),
            policies: Vec::new(),
            deferred: HashSet::new(),
            closed: None,
            tainted: false,
            draining: false,
            received: 0,
            before_hello: 0,
            mirror: bunite_wire::Decoder::new(bunite_wire::DecodeLimits::default()),
            observed: false,
            pay_limit: usize::MAX,
            toggles: 0,
        }
    }

    /// Live call ids of the peer's calls and streams we serve.
    pub fn inbound_ids(&self) -> Vec<CallId> {
        self.runs.values().map(|r| r.call_id).collect()
    }

    /// Server streams we run, by call id.
    pub fn server_stream_ids(&self) -> Vec<CallId> {
        (self.runs.values().filter(|r| r.stream))
            .map(|r| r.call_id)
            .collect()
    }

    /// Takes every output, checking each against what the harness expects, then the
    /// session's own invariants.
    pub fn collect(&mut self, report: &mut Report) {
        loop {
            while let Some(out) = self.s.poll_output() {
                self.output(out, report);
            }
            // As the driver does: a drain that is done closes, and its outputs follow.
            if !self.s.poll_drained() {
                break;
            }
        }
        // As the driver does after each pass: what a burst left gets its release timer.
        if self.s.release_unarmed() {
            let now = self.now;
            self.s.arm_release(now);
        }
        self.s.check_invariants();
        let live: Vec<RunId> = self.runs.keys().copied().collect();
        let session_runs: Vec<RunId> = self.s.inbound.run_ids().into_iter().collect();
        assert_eq!(live, session_runs, "{}: runs out of step", self.name);
        if self.closed.is_some() {
            assert!(
                self.awaiting.is_empty(),
                "{}: calls unanswered at close",
                self.name
            );
            assert!(
                self.open_sinks.is_empty(),
                "{}: streams open at close",
                self.name
            );
        }
    }

    fn output(&mut self, out: Output<F>, report: &mut Report) {
        let name = self.name;
        super::trace!("   {name} <- {}", describe(&out));
        match out {
            Output::Hello(_) | Output::Event(_) | Output::Dispose { .. } => {}
            Output::Reply { to, outcome, caps } => {
                let expected = self.awaiting.remove(&to);
                assert_eq!(
                    expected,
                    Some(caps),
                    "{name}: reply {to} not awaited (or twice)"
                );
                report.replies += 1;
                if let Err(e) = &outcome {
                    report.refused += usize::from(e.message().contains("send budget"));
                }
                if let Ok(payload) = outcome {
                    let v = payload.to_value();
                    assert!(v.is_ok(), "{name}: a reply does not materialize: {v:?}");
                    if caps {
                        self.held.extend(payload.cap_refs());
                    }
                }
            }
            Output::StreamItem { to, item } => {
                assert!(
                    self.open_sinks.contains(&to),
                    "{name}: item for stream {to}"
                );
                assert!(
                    item.to_value().is_ok(),
                    "{name}: an item does not materialize"
                );
                if let Some(s) = self.streams.iter_mut().find(|s| s.1 == to) {
                    s.2 += 1;
                }
                report.items += 1;
            }
            Output::StreamEnd { to, error } => {
                if let Some(e) = error {
                    report.refused += usize::from(e.message().contains("send budget"));
                }
                assert!(
                    self.open_sinks.remove(&to),
                    "{name}: end of stream {to} twice"
                );
                self.streams.retain(|s| s.1 != to);
            }
            Output::Invoke(inv) => {
                let fresh =
                    !self.runs.contains_key(&inv.run) && !self.ended_runs.contains(&inv.run);
                assert!(fresh, "{name}: run {:?} invoked twice", inv.run);
                assert!(
                    inv.args.to_value().is_ok(),
                    "{name}: args do not materialize"
                );
                let run = Run {
                    call_id: inv.call_id,
                    stream: inv.stream,
                };
                self.runs.insert(inv.run, run);
                report.invocations += 1;
            }
            Output::Signal(run) => {
                assert!(
                    self.runs.contains_key(&run),
                    "{name}: signal to ended {run:?}"
                );
            }
            Output::Abort(run) => {
                assert!(
                    self.runs.remove(&run).is_some(),
                    "{name}: abort of ended {run:?}"
                );
                self.ended_runs.insert(run);
            }
            Output::Credit(run) => {
                let stream = self.runs.get(&run).map(|r| r.stream);
                assert_eq!(stream, Some(true), "{name}: credit for {run:?}");
            }
            Output::Policy { call_id, .. } => {
                assert!(self.has_policy, "{name}: a policy check without a policy");
                self.policies.push(call_id);
            }
            Output::Run(tag) => {
                assert!(
                    self.deferred.remove(&tag),
                    "{name}: after_reply {tag} ran twice"
                );
            }
            Output::Closed(how) => {
                assert!(self.closed.is_none(), "{name}: closed twice");
                if let Disconnect::ProtocolError { message } = &how {
                    let allowed = self.tainted || message.starts_with("no hello within");
                    assert!(
                        allowed,
                        "{name}: protocol error on conforming input: {message}"
                    );
                }
                self.closed = Some(how);
            }
        }
    }

    fn call_id(&mut self) -> CallId {
        self.next_id += 1;
        CallId(self.next_id)
    }

    /// A target: the reserved ids, ids nobody gave us, or a cap we hold.
    fn target(&self, input: &mut Input<'_>) -> CapId {
        let i = input.pick(self.held.len() + 4);
        match i {
            0 => CapId::BOOTSTRAP,
            1 => CapId::RUNTIME,
            2 => CapId(2 + u32::from(input.b() % 8)),
            3 => CapId(u32::MAX),
            _ => self.held.get(i - 4).copied().unwrap_or(CapId(2)),
        }
    }

    fn request(
        &mut self,
        input: &mut Input<'_>,
        id: CallId,
        method: &'static str,
    ) -> CallRequest<bunite_wire::Outgoing> {
        let cap_id = self.target(input);
        let flags = input.b();
        // A live run's call, or a stale pair (a handler that outlived its call).
        let parent = (flags & 1 != 0).then(|| match self.pick_run(input, None) {
            Some((run, call)) if flags & 16 == 0 => Parent { call, run },
            _ => {
                let ids = self.inbound_ids();
                let call = ids.get(input.pick(ids.len())).copied();
                let run = RunId(u64::from(input.b()));
                Parent {
                    call: call.unwrap_or(CallId(1)),
                    run,
                }
            }
        });
        let deadline = match (flags >> 1) & 3 {
            0 => None,
            1 => Some(Duration::ZERO),
            2 => Some(Duration::from_millis(10)),
            _ => Some(Duration::from_secs(1)),
        };
        let context = if flags & 8 != 0 {
            vec![("k".to_owned(), "v".to_owned())]
        } else {
            Vec::new()
        };
        let expect = match method {
            "make" | "many" | "named" | "bootstrap" => Expect::Caps,
            _ => Expect::Value,
        };
        CallRequest {
            id,
            cap_id,
            method: Text::from_static(method),
            args: value(input, 0, true).into(),
            parent,
            deadline,
            context,
            expect,
        }
    }

    pub fn call(&mut self, input: &mut Input<'_>, tag: u64, now: Instant) {
        let method = METHODS[input.pick(METHODS.len())];
        let id = self.call_id();
        let mut req = self.request(input, id, method);
        // Without reading more input (so that the corpus keeps its meaning): every eighth
        // call is large, its message sent from the session's spare buffers, and every
        // eighth but four has typed args, serialized straight into its frame.
        match id.0 % 8 {
            0 => req.args = Value::Bin(vec![0x5a; 20 * 1024]).into(),
            4 => {
                req.args = bunite_wire::Outgoing::typed(TypedReply {
                    text: "a".repeat(usize::try_from(id.0 % 300).unwrap_or(0)),
                    n: id.0,
                })
            }
            _ => {}
        }
        self.awaiting.insert(tag, req.expect == Expect::Caps);
        self.pending.push((id, tag));
        self.s.start_call(&mut req, tag, now);
    }

    pub fn open_stream(&mut self, input: &mut Input<'_>, sink: u64) {
        let method = ["ticks", "flood", "get", "missing"][input.pick(4)];
        let id = self.call_id();
        let mut req = self.request(input, id, method);
        self.open_sinks.insert(sink);
        self.streams.push((id, sink, 0));
        self.s.start_stream(&mut req, sink);
    }

    pub fn bootstrap(&mut self, input: &mut Input<'_>, tag: u64, now: Instant) {
        let name = NAMES[input.pick(NAMES.len())];
        let version = [None, Some("1"), Some("2")][input.pick(3)];
        let id = self.call_id();
        self.awaiting.insert(tag, true);
        self.pending.push((id, tag));
        self.s.bootstrap(id, name, version, tag, now);
    }

    /// The caller gives up: its reply is dropped unsent if it was still awaited.
    pub fn cancel(&mut self, input: &mut Input<'_>) {
        let Some(&(id, tag)) = self.pending.get(input.pick(self.pending.len())) else {
            return;
        };
        let taken = self.closed.is_none() && self.s.outbound.awaits_reply(id);
        self.s.cancel_call(id);
        assert!(
            !self.s.outbound.awaits_reply(id),
            "{}: {id} still awaited",
            self.name
        );
        if taken {
            self.awaiting.remove(&tag);
        }
    }

    pub fn release(&mut self, input: &mut Input<'_>) {
        if self.held.is_empty() {
            return;
        }
        let id = self.held.swap_remove(input.pick(self.held.len()));
        self.s.release(id);
    }

    /// Returns credit for values received (never more, as the runtime's consumer).
    pub fn return_credit(&mut self, input: &mut Input<'_>) {
        let i = input.pick(self.streams.len());
        let want = 1 + u32::from(input.b() % 16);
        let Some(s) = self.streams.get_mut(i) else {
            return;
        };
        let n = want.min(s.2);
        s.2 -= n;
        let id = s.0;
        self.s.return_credit(id, n);
    }

    /// The consumer drops a stream: no end is delivered to it any more.
    pub fn cancel_stream(&mut self, input: &mut Input<'_>) {
        if self.streams.is_empty() {
            return;
        }
        let (id, sink, _) = self.streams.remove(input.pick(self.streams.len()));
        self.open_sinks.remove(&sink);
        self.s.cancel_client_stream(id);
    }

    pub fn serve(&mut self, input: &mut Input<'_>, defs: &Defs) {
        let imp = Imp {
            handlers: input.b() & 1 == 0,
        };
        let one = |d: &Arc<CapDef>| vec![(Arc::clone(d), imp.clone())];
        let caps = match input.pick(7) {
            0 => one(&defs.parent),
            1 => one(&defs.child),
            2 => one(&defs.v1),
            3 => one(&defs.v2),
            4 => one(&defs.other),
            5 => one(&defs.reserved),
            _ => [&defs.v1, &defs.other]
                .into_iter()
                .map(|d| (Arc::clone(d), imp.clone()))
                .collect(),
        };
        let if_exists = [IfExists::Throw, IfExists::Skip, IfExists::Replace][input.pick(3)];
        let _ = self.s.serve(caps, if_exists);
    }

    pub fn unserve(&mut self, input: &mut Input<'_>) {
        let name = NAMES[input.pick(NAMES.len())];
        self.s.unserve(&[name.to_owned()]);
    }

    pub fn replace(&mut self, input: &mut Input<'_>, defs: &Defs) {
        let defs = [&defs.v1, &defs.v2, &defs.parent, &defs.other, &defs.child];
        let def = Arc::clone(defs[input.pick(defs.len())]);
        let imp = Imp {
            handlers: input.b() & 1 == 0,
        };
        let _ = self.s.replace(def, imp);
    }

    fn pick_run(&self, input: &mut Input<'_>, stream: Option<bool>) -> Option<(RunId, CallId)> {
        let runs: Vec<(RunId, CallId)> = (self.runs.iter())
            .filter(|(_, r)| stream.is_none_or(|s| r.stream == s))
            .map(|(id, r)| (*id, r.call_id))
            .collect();
        runs.get(input.pick(runs.len())).copied()
    }

    /// A handler or stream source ends: a value, caps (right or wrong for the method), or
    /// an error whose message may be long.
    pub fn finish_run(&mut self, input: &mut Input<'_>, defs: &Defs, now: Instant) {
        let Some((run, call_id)) = self.pick_run(input, None) else {
            return;
        };
        let stream = self.runs.get(&run).is_some_and(|r| r.stream);
        self.runs.remove(&run);
        self.ended_runs.insert(run);
        if stream {
            let result = if input.b() & 1 == 0 {
                Ok(())
            } else {
                Err(status(input))
            };
            return self.s.stream_done(call_id, run, result);
        }
        let child = |i: usize| {
            (
                Arc::clone(&defs.child),
                Imp {
                    handlers: i % 2 == 0,
                },
            )
        };
        let n = input.pick(4);
        let outcome = match input.pick(7) {
            0 => Ok(Outcome::Value(value(input, 0, false).into())),
            1 => Ok(Outcome::Cap(
                Arc::clone(&defs.child),
                Imp { handlers: true },
            )),
            2 => Ok(Outcome::CapArray((0..n).map(child).collect())),
            3 => Ok(Outcome::CapRecord(
                (0..n)
                    .map(|i| {
                        let (d, imp) = child(i);
                        (format!("k{i}"), d, imp)
                    })
                    .collect(),
            )),
            4 => Ok(Outcome::Cap(
                Arc::clone(&defs.parent),
                Imp { handlers: true },
            )),
            5 => Err(status(input)),
            // Typed: a struct serialized straight into the result frame (learned, then
            // direct; up to ~1 KiB, so small `maxBytes` make it fall back and fail).
            _ => Ok(Outcome::Value(bunite_wire::Outgoing::typed(TypedReply {
                text: "x".repeat(usize::from(input.b()) * 4),
                n: u64::from(input.b()),
            }))),
        };
        let limit = self.give_send_room();
        self.s
            .handler_done_paying(run, call_id, outcome, now, &mut |n| n <= limit);
    }

    /// Gives the session the room a send budget of [`pay_limit`](Self::pay_limit) would;
    /// the limit.
    fn give_send_room(&mut self) -> usize {
        let limit = self.pay_limit;
        if limit != usize::MAX {
            let room = limit.saturating_sub(self.s.transmit_bytes());
            // The room is a snapshot, at times larger than what will be paid.
            self.s.set_send_room(room + room / 2 * (self.toggles % 2));
        }
        limit
    }

    /// A stream source produces values, within its window (as the driver polls it).
    pub fn stream_items(&mut self, input: &mut Input<'_>) {
        let Some((run, id)) = self.pick_run(input, Some(true)) else {
            return;
        };
        let window = self.s.stream_window(id, run);
        let Some(window) = window else {
            panic!("{}: live stream run {run:?} has no window", self.name);
        };
        let n = u64::from(input.b() % 40).min(window);
        let limit = self.give_send_room();
        for _ in 0..n {
            if self
                .s
                .stream_item_paying(id, run, value(input, 0, false), &mut |n| n <= limit)
                .is_none()
            {
                break;
            }
        }
    }

    pub fn policy_done(&mut self, input: &mut Input<'_>) {
        if self.policies.is_empty() {
            return;
        }
        let id = self.policies.remove(input.pick(self.policies.len()));
        let allowed = [Ok(true), Ok(false), Err("policy failed".to_owned())];
        let allowed = allowed[input.pick(3)].clone();
        self.s.policy_done(id, allowed);
    }

    pub fn after_reply(&mut self, input: &mut Input<'_>, tag: u64) {
        let (run, id) = match self.pick_run(input, Some(false)) {
            Some(run) => run,
            None => (RunId(u64::from(input.b())), CallId(u64::from(input.b()))),
        };
        self.deferred.insert(tag);
        self.s.after_reply(id, run, tag);
    }

    pub fn advance(&mut self, now: Instant, report: &mut Report) {
        self.now = now;
        self.s.handle_timeout(now);
        self.collect(report);
        if let Some(at) = self.s.poll_timeout() {
            assert!(
                at > now,
                "{}: a due timer outlived handle_timeout",
                self.name
            );
        }
    }

    /// Closes at once, or drains (closing once idle, or at a grace of up to 2.55 s, or
    /// never on its own).
    pub fn close(&mut self, input: &mut Input<'_>, now: Instant) {
        match input.pick(3) {
            0 => self.s.close(),
            1 => {
                let grace = Duration::from_millis(u64::from(input.b()) * 10);
                self.s.drain(grace, now);
                self.draining = true;
            }
            _ => {
                self.s.drain(Duration::MAX, now);
                self.draining = true;
            }
        }
    }

    /// The transport ends; a refused or broken message makes the close a protocol error.
    pub fn transport_end(&mut self, input: &mut Input<'_>) {
        let how = match input.pick(7) {
            0 => TransportEnd::Eof,
            1 => TransportEnd::Failed {
                kind: std::io::ErrorKind::ConnectionReset,
                message: "reset".into(),
            },
            2 => TransportEnd::TooLarge("fuzz: too large".into()),
            3 => TransportEnd::TooSlow("fuzz: too slow".into()),
            4 => TransportEnd::WriteStalled(std::time::Duration::from_secs(30)),
            5 => TransportEnd::SlowReader {
                taken: 1024,
                after: std::time::Duration::from_secs(31),
            },
            _ => TransportEnd::Protocol("fuzz: broken framing".into()),
        };
        if matches!(
            how,
            TransportEnd::TooLarge(_) | TransportEnd::Protocol(_) | TransportEnd::TooSlow(_)
        ) {
            self.tainted = true;
        }
        self.s.transport_ended(how);
    }

    /// Events on or off, and the next of the send budgets this side pays from (none, and
    /// three that refuse long answers, or all).
    pub fn toggle_observed(&mut self) {
        self.observed = !self.observed;
        self.s.set_observed(self.observed);
        self.toggles += 1;
        self.pay_limit = [usize::MAX, 4096, 600, 0][self.toggles % 4];
    }

    /// Ends everything this side runs and holds, as a runtime whose handlers all return and
    /// whose clients are all dropped.
    fn wind_down(&mut self, report: &mut Report) {
        let runs: Vec<(RunId, Run)> = std::mem::take(&mut self.runs).into_iter().collect();
        for (run, r) in runs {
            self.ended_runs.insert(run);
            if r.stream {
                self.s.stream_done(r.call_id, run, Ok(()));
            } else {
                self.s.handler_done(
                    run,
                    r.call_id,
                    Ok(Outcome::Value(Value::Null.into())),
                    self.now,
                );
            }
        }
        for id in std::mem::take(&mut self.policies) {
            self.s.policy_done(id, Ok(true));
        }
        for id in std::mem::take(&mut self.held) {
            self.s.release(id);
        }
        for (id, sink, _) in std::mem::take(&mut self.streams) {
            self.open_sinks.remove(&sink);
            self.s.cancel_client_stream(id);
        }
        self.collect(report);
    }

    fn quiet(&self) -> bool {
        self.runs.is_empty()
            && self.policies.is_empty()
            && self.held.is_empty()
            && self.streams.is_empty()
            && self.s.transmit_bytes() == 0
    }
}

/// An output, for traces.
fn describe(out: &Output<F>) -> String {
    match out {
        Output::Reply { to, outcome, .. } => {
            format!("reply {to}: {:?}", outcome.as_ref().map(|p| p.to_value()))
        }
        Output::Invoke(inv) => format!(
            "invoke {:?} call {} {}",
            inv.run,
            inv.call_id,
            inv.method_name()
        ),
        Output::StreamItem { to, .. } => format!("item for {to}"),
        Output::StreamEnd { to, error } => format!("end of {to}: {error:?}"),
        Output::Signal(r) => format!("signal {r:?}"),
        Output::Abort(r) => format!("abort {r:?}"),
        Output::Credit(r) => format!("credit {r:?}"),
        Output::Policy { call_id, name } => format!("policy {call_id} {name}"),
        Output::Run(t) => format!("run {t}"),
        Output::Closed(how) => format!("closed {how:?}"),
        Output::Hello(_) => "hello".into(),
        Output::Dispose { cap_id, .. } => format!("dispose {cap_id}"),
        Output::Event(e) => format!("event {e:?}"),
    }
}

/// Delivers up to `n` of `x`'s queued messages to `y`, in order.
pub(crate) fn pump(x: &mut Side, y: &mut Side, n: usize, report: &mut Report) {
    for _ in 0..n {
        let Some(msg) = x.s.poll_transmit() else {
            return;
        };
        let frame = y.mirror.decode_frame_lazy(&msg);
        super::trace!("   {} -> {}: {frame:?}", x.name, y.name);
        let unbounded = x.before_hello > 0;
        x.before_hello = x.before_hello.saturating_sub(1);
        if msg.len() > y.max_bytes {
            // Before our hello reached it, the peer assumes the default maxBytes.
            let knew = x.received > 0 && !unbounded && !x.tainted;
            let (len, max) = (msg.len(), y.max_bytes);
            let shown = format!("{frame:?}").chars().take(300).collect::<String>();
            assert!(
                !knew,
                "{} sent {len} bytes over maxBytes {max}: {shown}",
                x.name
            );
            y.tainted = true;
        }
        if y.received == 0 {
            y.before_hello = y.s.transmit.len();
        }
        y.received += 1;
        let now = y.now;
        y.s.handle_message(&msg, now);
        y.collect(report);
    }
}

/// At the end of an input whose peers are both open and were never sent anything hostile:
/// both finish every run, answer every policy check, release every cap and drop every
/// stream, and exchange messages until nothing moves. Then nothing may be left anywhere.
pub(crate) fn drain(sides: &mut [Side; 2], _defs: &Defs, report: &mut Report) {
    let clean = |s: &Side| s.closed.is_none() && !s.tainted;
    if !sides.iter().all(clean) {
        return;
    }
    let [a, b] = sides;
    for _ in 0..64 {
        a.wind_down(report);
        b.wind_down(report);
        pump(a, b, usize::MAX, report);
        pump(b, a, usize::MAX, report);
        if a.quiet() && b.quiet() {
            break;
        }
    }
    if a.tainted || b.tainted {
        return; // A message queued before the peer's hello was too large for it.
    }
    if a.draining || b.draining {
        // A session asked to drain closes once nothing is in progress, and its goaway
        // closes the other (`check_invariants` has checked that neither holds anything).
        for s in [a, b] {
            let name = s.name;
            assert!(s.closed.is_some(), "{name}: open after a drain wound down");
            assert!(s.awaiting.is_empty(), "{name}: calls never answered");
            assert!(s.open_sinks.is_empty(), "{name}: streams never ended");
        }
        report.drain_closes += 1;
        return;
    }
    for s in [a, b] {
        let name = s.name;
        assert!(
            s.closed.is_none(),
            "{name}: closed while winding down: {:?}",
            s.closed
        );
        let stats = s.s.stats();
        assert_eq!(stats.live_caps, 2, "{name}: caps left after draining");
        assert_eq!(stats.pending_calls, 0, "{name}: calls left after draining");
        assert_eq!(
            stats.active_calls + stats.server_streams,
            0,
            "{name}: runs left"
        );
        assert_eq!(stats.client_streams, 0, "{name}: client streams left");
        assert!(s.awaiting.is_empty(), "{name}: calls never answered");
        assert!(s.open_sinks.is_empty(), "{name}: streams never ended");
    }
    report.drained += 1;
}
