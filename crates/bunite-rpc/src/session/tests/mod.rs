//! Deterministic tests of the session: two state machines pumped against each other, no
//! runtime, no clock (time is a value the test moves), handlers completed by hand.

mod calls;
mod caps;
mod drain;
mod hostile;
mod long;
mod streams;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bunite_wire::{CallId, CapId, Decoder, Frame, Hello, Record, Value};

use super::{
    CallRequest, Config, Dispatch, Expect, Invocation, Outcome, Output, RunId, Session, Types,
};
use crate::attestation::Attestation;
use crate::error::{Disconnect, Error};
use crate::events::Event;
use crate::limits::Limits;
use crate::schema::{CapDef, IfExists, MethodDef, Returns};
use bunite_wire::Payload;

/// The session's opaque types, as plain tags the test can compare.
pub(super) struct T;

impl Types for T {
    type Imp = Imp;
    type Reply = u64;
    type Sink = u64;
    type Deferred = u64;
}

/// An implementation: a name, and whether it has handlers.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Imp(pub &'static str, pub bool);

impl Dispatch for Imp {
    fn has_handler(&self, _: &str) -> bool {
        self.1
    }
}

pub(super) fn imp(name: &'static str) -> Imp {
    Imp(name, true)
}

/// One peer and everything its session yielded.
pub(super) struct Peer {
    pub s: Session<T>,
    /// Decodes what the other peer sent us, in step with our session's own decoder.
    dec: Decoder,
    pub now: Instant,
    next_tag: u64,
    pub replies: HashMap<u64, Result<Payload, Error>>,
    pub invocations: Vec<Invocation<Imp>>,
    pub items: Vec<(u64, Payload)>,
    pub ends: Vec<(u64, Option<Error>)>,
    pub signals: Vec<RunId>,
    pub aborts: Vec<RunId>,
    pub credits: Vec<RunId>,
    pub policies: Vec<(CallId, String)>,
    pub disposals: Vec<(Imp, String, CapId)>,
    pub deferred: Vec<u64>,
    /// What the session reported, once [`Session::set_observed`] asked it to.
    pub events: Vec<Event>,
    pub closed: Option<Disconnect>,
}

pub(super) fn limits() -> Limits {
    Limits {
        hello_timeout: None,
        ..Limits::default()
    }
}

pub(super) fn peer_with(limits: Limits, has_policy: bool) -> Peer {
    let now = Instant::now();
    let max_bytes = limits.max_bytes.min(1 << 20) as u64;
    let cfg = Config {
        limits,
        attestation: Attestation::default(),
        has_policy,
        hello: Hello {
            v: 1,
            mode: "native".into(),
            features: vec![],
            max_bytes,
            origin: "test".into(),
        },
    };
    Peer {
        s: Session::new(cfg, now),
        dec: Decoder::new(Default::default()),
        now,
        next_tag: 1,
        replies: HashMap::new(),
        invocations: Vec::new(),
        items: Vec::new(),
        ends: Vec::new(),
        signals: Vec::new(),
        aborts: Vec::new(),
        credits: Vec::new(),
        policies: Vec::new(),
        disposals: Vec::new(),
        deferred: Vec::new(),
        events: Vec::new(),
        closed: None,
    }
}

pub(super) fn peer() -> Peer {
    peer_with(limits(), false)
}

impl Peer {
    pub fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    /// Collects the session's outputs, then checks its invariants.
    pub fn collect(&mut self) {
        self.take_outputs();
        while self.s.poll_drained() {
            self.take_outputs();
        }
        self.s.check_invariants();
    }

    fn take_outputs(&mut self) {
        while let Some(out) = self.s.poll_output() {
            match out {
                Output::Hello(_) => {}
                Output::Event(e) => self.events.push(e),
                Output::Reply { to, outcome, .. } => {
                    assert!(self.replies.insert(to, outcome).is_none(), "two replies");
                }
                Output::StreamItem { to, item } => self.items.push((to, item)),
                Output::StreamEnd { to, error } => self.ends.push((to, error)),
                Output::Invoke(inv) => self.invocations.push(inv),
                Output::Signal(r) => self.signals.push(r),
                Output::Abort(r) => self.aborts.push(r),
                Output::Credit(r) => self.credits.push(r),
                Output::Policy { call_id, name } => self.policies.push((call_id, name)),
                Output::Dispose {
                    imp,
                    method,
                    cap_id,
                } => self.disposals.push((imp, method, cap_id)),
                Output::Run(tag) => self.deferred.push(tag),
                Output::Closed(how) => self.closed = Some(how),
            }
        }
    }

    /// Starts a call; returns its reply tag.
    pub fn call(&mut self, id: u64, cap: CapId, method: &str, args: Value) -> u64 {
        let tag = self.tag();
        let req = request(cap, method, args, Expect::Value);
        self.s
            .start_call(&mut with_id(CallId(id), req), tag, self.now);
        self.collect();
        tag
    }

    /// Opens stream `method` on `cap` (no args); returns its sink's tag.
    pub fn stream(&mut self, id: u64, cap: CapId, method: &str) -> u64 {
        let tag = self.tag();
        let req = request(cap, method, Value::Undefined, Expect::Value);
        self.s.start_stream(&mut with_id(CallId(id), req), tag);
        self.collect();
        tag
    }

    pub fn reply(&mut self, tag: u64) -> Option<Result<Value, Error>> {
        let r = self.replies.remove(&tag)?;
        Some(r.map(|p| p.into_value().expect("decodes")))
    }

    /// The last invocation (a handler the runtime would start).
    pub fn invoked(&mut self) -> Invocation<Imp> {
        self.invocations.pop().expect("an invocation")
    }

    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        self.s.handle_timeout(now);
        self.collect();
    }
}

/// A call or stream open of `cap`'s `method`; its id is given by [`with_id`].
pub(super) fn request(
    cap: CapId,
    method: &str,
    args: Value,
    expect: Expect,
) -> CallRequest<bunite_wire::Outgoing> {
    CallRequest {
        id: CallId(0),
        cap_id: cap,
        method: bunite_wire::Text::copy_from(method),
        args: args.into(),
        parent: None,
        deadline: None,
        context: Vec::new(),
        expect,
    }
}

/// `req` with the call id `id`.
pub(super) fn with_id(
    id: CallId,
    mut req: CallRequest<bunite_wire::Outgoing>,
) -> CallRequest<bunite_wire::Outgoing> {
    req.id = id;
    req
}

/// Moves every queued message from `from` to `to`; returns the frames moved.
pub(super) fn pump(from: &mut Peer, to: &mut Peer) -> Vec<Frame> {
    let mut frames = Vec::new();
    while let Some(bytes) = from.s.poll_transmit() {
        frames.push(to.dec.decode_frame(&bytes).expect("valid frame"));
        let now = to.now;
        to.s.handle_message(&bytes, now);
    }
    to.collect();
    frames
}

pub(super) fn child() -> Arc<CapDef> {
    CapDef::builder("t.child")
        .method(MethodDef::call("ping"))
        .disposal("close")
        .build()
}

pub(super) fn parent() -> Arc<CapDef> {
    CapDef::builder("t.parent")
        .method(MethodDef::call("get"))
        .method(MethodDef::call("slow").keep_running_on_cancel())
        .method(MethodDef::call("idem").idempotent())
        .method(MethodDef::call("make").returns(Returns::Cap(child().into())))
        .method(MethodDef::stream("ticks").initial_credit(8))
        .build()
}

/// Two peers after exchanging hellos; the first serves `t.parent`.
pub(super) fn connected() -> (Peer, Peer) {
    connected_with(limits())
}

pub(super) fn connected_with(server_limits: Limits) -> (Peer, Peer) {
    let (mut a, mut b) = (peer_with(server_limits, false), peer());
    pump(&mut a, &mut b);
    pump(&mut b, &mut a);
    a.s.serve(vec![(parent(), imp("parent"))], IfExists::Throw)
        .unwrap();
    (a, b)
}

pub(super) fn bootstrap(server: &mut Peer, client: &mut Peer, id: u64, name: &str) -> CapId {
    let tag = client.tag();
    let now = client.now;
    client.s.bootstrap(CallId(id), name, None, tag, now);
    client.collect();
    pump(client, server);
    pump(server, client);
    match client.reply(tag) {
        Some(Ok(Value::CapRef(id))) => id,
        other => panic!("bootstrap: {other:?}"),
    }
}

/// Two peers that each serve `t.parent` and have bootstrapped the other's: `(b, a, on_b,
/// on_a)`, `on_b` being a's client of b's cap and `on_a` b's of a's (for a handler of b's
/// that calls a back).
pub(super) fn both_ways() -> (Peer, Peer, CapId, CapId) {
    let (mut b, mut a) = connected();
    a.s.serve(vec![(parent(), imp("a"))], IfExists::Throw)
        .unwrap();
    let on_b = bootstrap(&mut b, &mut a, 1, "t.parent");
    let on_a = bootstrap(&mut a, &mut b, 1, "t.parent");
    (b, a, on_b, on_a)
}

/// The parent of calls made inside the handler of `inv` (`meta.parentCallId`).
pub(super) fn parent_of(inv: &Invocation<Imp>) -> super::Parent {
    super::Parent {
        call: inv.call_id,
        run: inv.run,
    }
}

/// Completes the handler of `inv` with a value.
pub(super) fn finish(p: &mut Peer, inv: &Invocation<Imp>, v: Value) {
    let now = p.now;
    p.s.handler_done(inv.run, inv.call_id, Ok(Outcome::Value(v.into())), now);
    p.collect();
}

pub(super) fn rec(k: &'static str, v: impl Into<Value>) -> Value {
    Value::Record(Record::new().with(k, v))
}
