//! The interop caps of `../shared/spec/INTEROP.md`, declared with the typed API
//! (`#[bunite_rpc::cap]`): the wire names, kinds, idempotency and cap returns of the table,
//! with serde types for its params and results.
//!
//! The interop server implements these traits. The interop client deliberately uses the
//! dynamic API instead, so the two sides exercise both APIs against each other. The unit test at the end checks every definition against the table.
//!
//! The crate derives serde through `bunite_rpc::serde`, hence `#[serde(crate = …)]`. Every
//! type also derives `ts_rs::TS`, so `bunite-rpc typegen` writes the caps as TypeScript
//! (`js/src/interop.gen.ts`); optional fields carry `#[ts(optional)]` because they are left out
//! (not `null`) on the wire.

use std::time::Duration;

use bunite_rpc::serde::{Deserialize, Serialize};
use bunite_rpc::typed::{Emitter, Stream};
use bunite_rpc::wire::serde_bytes::ByteBuf;
use bunite_rpc::{cap, CallContext, Exported, Status, Value};
use ts_rs::TS;

/// `{count}`: `get`, `increment` and every `watch` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Count {
    /// The counter.
    pub count: i64,
}

/// `increment {delta?}`; the call may also carry no args (`None`): the default delta is 1.
#[derive(Debug, Clone, Default, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Delta {
    /// How much to add (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub delta: Option<i64>,
}

impl Delta {
    /// The delta to apply.
    pub fn get(&self) -> i64 {
        self.delta.unwrap_or(1)
    }
}

/// `fail {code, message?, reason?}`.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct FailParams {
    /// A status code string (`not_found`, …).
    pub code: String,
    /// The message (default `requested failure`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub message: Option<String>,
    /// `details.reason`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub reason: Option<String>,
}

/// `slow {ms, ignoreAbort?}`.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct SlowParams {
    /// How long to wait, in milliseconds.
    pub ms: u64,
    /// Keep waiting after a cancel or the deadline.
    #[serde(rename = "ignoreAbort", skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub ignore_abort: Option<bool>,
}

impl SlowParams {
    /// The wait.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.ms)
    }
}

/// `makeChild {name}`.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Named {
    /// The child's name.
    pub name: String,
}

/// `children {names}` and `childMap {names}`.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Names {
    /// One child per name, in order.
    pub names: Vec<String>,
}

/// `ticks {n}` and `bytes {n}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct N {
    /// How many.
    pub n: u64,
}

/// A `ticks` value `{i}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Tick {
    /// 0 … n-1.
    pub i: u64,
}

/// `watch {everyMs?}`; the call may also carry no args (`None`): every 5 ms.
#[derive(Debug, Clone, Default, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct WatchParams {
    /// The period in milliseconds (default 5).
    #[serde(rename = "everyMs", skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    pub every_ms: Option<u64>,
}

impl WatchParams {
    /// The period.
    pub fn every(&self) -> Duration {
        Duration::from_millis(self.every_ms.unwrap_or(5))
    }
}

/// `ping {x}` of `interop.child`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct X {
    /// The number to add one to.
    pub x: i64,
}

/// The binary of `bytes`: a `Uint8Array` in TypeScript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, TS)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Binary(#[ts(type = "Uint8Array")] pub ByteBuf);

/// `interop.counter`: per connection, a count from 0, children, streams and errors.
#[cap(name = "interop.counter")]
pub trait InteropCounter {
    /// `get` → `{count}`.
    #[cap(idempotent)]
    async fn get(&self) -> Result<Count, Status>;

    /// `increment {delta?}` (or no args: 1) → `{count}` after adding.
    async fn increment(&self, delta: Option<Delta>) -> Result<Count, Status>;

    /// `echo` any value → the same value.
    async fn echo(&self, value: Value) -> Result<Value, Status>;

    /// `fail {code, message?, reason?}` → fails with that status.
    async fn fail(&self, how: FailParams) -> Result<(), Status>;

    /// `boom` → fails as an unexpected handler error: `internal` `boom`.
    async fn boom(&self) -> Result<(), Status>;

    /// `slow {ms, ignoreAbort?}` → `"done"` after `ms`, or `"aborted"` at once when
    /// cancelled or past its deadline (unless `ignoreAbort`). Not idempotent, so the server
    /// signals it at the deadline.
    async fn slow(&self, p: SlowParams, ctx: CallContext) -> Result<String, Status>;

    /// `makeChild {name}` → a new `interop.child`.
    async fn make_child(&self, p: Named) -> Result<Exported<InteropChildCap>, Status>;

    /// `children {names}` → one new child per name, in order.
    async fn children(&self, p: Names) -> Result<Vec<Exported<InteropChildCap>>, Status>;

    /// `childMap {names}` → `{name: child}`, in the order of `names`.
    async fn child_map(&self, p: Names)
        -> Result<Vec<(String, Exported<InteropChildCap>)>, Status>;

    /// `closedCount` → how many `interop.child.close` calls ran on this connection.
    #[cap(idempotent)]
    async fn closed_count(&self) -> Result<u64, Status>;

    /// `liveChildren` → how many child caps are still in this connection's cap table.
    #[cap(idempotent)]
    async fn live_children(&self) -> Result<u64, Status>;

    /// `cancelledWatches` → how many `watch` streams ended by cancellation.
    #[cap(idempotent)]
    async fn cancelled_watches(&self) -> Result<u64, Status>;

    /// `ticks {n}` → `{i}` for i = 0 … n-1, then the end.
    #[cap(stream)]
    fn ticks(&self, p: N) -> impl Stream<Item = Result<Tick, Status>> + Send + 'static;

    /// `watch {everyMs?}` → `{count}` now and every `everyMs` until cancelled. A cancel drops
    /// the producer (and signals `ctx`).
    #[cap(stream)]
    async fn watch(
        &self,
        p: Option<WatchParams>,
        ctx: CallContext,
        out: Emitter<Count>,
    ) -> Result<(), Status>;

    /// `bytes {n}` → binary of n bytes, byte k = k mod 256.
    async fn bytes(&self, p: N) -> Result<Binary, Status>;

    /// `askPeer` → bootstraps `interop.peer` from the calling peer (through
    /// `ctx.connection()`), calls its `ping` and returns the answer.
    async fn ask_peer(&self, ctx: CallContext) -> Result<String, Status>;
}

/// `interop.child`: made by `makeChild` / `children` / `childMap`; `close` is its disposal
/// method.
#[cap(name = "interop.child")]
pub trait InteropChild {
    /// `name` → its name.
    #[cap(idempotent)]
    async fn name(&self) -> Result<String, Status>;

    /// `ping {x}` → x + 1.
    async fn ping(&self, p: X) -> Result<i64, Status>;

    /// `close` → undefined; counts toward `closedCount`. The disposal method.
    #[cap(dispose)]
    async fn close(&self) -> Result<(), Status>;
}

/// `interop.versioned`, version "2".
#[cap(name = "interop.versioned", version = "2")]
pub trait InteropVersioned {
    /// `v` → `"2"`.
    async fn v(&self) -> Result<String, Status>;
}

/// `interop.ephemeral`: unserves itself on request.
#[cap(name = "interop.ephemeral")]
pub trait InteropEphemeral {
    /// `ping` → `"pong"`.
    async fn ping(&self) -> Result<String, Status>;

    /// `unserveMe` → replies, then the server unserves `interop.ephemeral` on this
    /// connection (sending `cap_revoked`).
    async fn unserve_me(&self, ctx: CallContext) -> Result<(), Status>;
}

/// `interop.secret`: the interop server's policy denies it on every connection.
#[cap(name = "interop.secret")]
pub trait InteropSecret {
    /// `ping` → `"secret"`.
    async fn ping(&self) -> Result<String, Status>;
}

/// `interop.peer`: served by the interop client, for `askPeer`.
#[cap(name = "interop.peer")]
pub trait InteropPeer {
    /// `ping` → `"pong from client"`.
    async fn ping(&self) -> Result<String, Status>;
}

#[cfg(test)]
mod tests {
    use bunite_rpc::{MethodKind, Returns};

    use super::*;

    /// (wire name, kind, idempotent, returns) for each method of the INTEROP.md table.
    #[test]
    fn the_definitions_match_the_interop_table() {
        use MethodKind::{Call, Stream};
        const V: &str = "value";
        let counter = [
            ("get", Call, true, V),
            ("increment", Call, false, V),
            ("echo", Call, false, V),
            ("fail", Call, false, V),
            ("boom", Call, false, V),
            ("slow", Call, false, V),
            ("makeChild", Call, false, "cap"),
            ("children", Call, false, "array"),
            ("childMap", Call, false, "record"),
            ("closedCount", Call, true, V),
            ("liveChildren", Call, true, V),
            ("cancelledWatches", Call, true, V),
            ("ticks", Stream, false, V),
            ("watch", Stream, false, V),
            ("bytes", Call, false, V),
            ("askPeer", Call, false, V),
        ];
        let def = InteropCounterCap::definition();
        assert_eq!((def.name(), def.version()), ("interop.counter", None));
        assert_eq!(def.methods().len(), counter.len());
        for ((name, kind, idempotent, returns), m) in counter.iter().zip(def.methods()) {
            assert_eq!(m.name(), *name);
            assert_eq!(m.kind(), *kind, "{name}");
            assert_eq!(m.is_idempotent(), *idempotent, "{name}");
            let shape = match m.return_shape() {
                Returns::Value => V,
                Returns::Cap(_) => "cap",
                Returns::CapArray(_) => "array",
                Returns::CapRecord(_) => "record",
            };
            assert_eq!(shape, *returns, "{name}");
            if let Some(cap) = m.return_shape().cap() {
                assert_eq!(cap.name(), "interop.child", "{name}");
            }
            if *kind == Stream {
                assert_eq!(m.stream_initial_credit(), 32, "{name}");
            }
        }
        assert_eq!(def.disposal(), None);

        let child = InteropChildCap::definition();
        let names: Vec<_> = child.methods().iter().map(|m| m.name()).collect();
        assert_eq!(names, ["name", "ping", "close"]);
        assert!(child.method("name").unwrap().is_idempotent());
        assert!(!child.method("ping").unwrap().is_idempotent());
        assert_eq!(child.disposal(), Some("close"));

        let versioned = InteropVersionedCap::definition();
        assert_eq!(versioned.version(), Some("2"));
        assert!(versioned.method("v").is_some());
        let ephemeral = InteropEphemeralCap::definition();
        let names: Vec<_> = ephemeral.methods().iter().map(|m| m.name()).collect();
        assert_eq!(names, ["ping", "unserveMe"]);
        for (def, name) in [
            (InteropSecretCap::definition(), "interop.secret"),
            (InteropPeerCap::definition(), "interop.peer"),
        ] {
            assert_eq!(def.name(), name);
            assert_eq!(def.methods().len(), 1);
            assert_eq!(def.methods()[0].name(), "ping");
        }
    }

    #[test]
    fn params_and_results_have_the_table_shapes() {
        use bunite_rpc::{to_value, Record};
        let slow = SlowParams {
            ms: 5,
            ignore_abort: Some(true),
        };
        assert_eq!(
            to_value(&slow).unwrap(),
            Value::Record(Record::new().with("ms", 5).with("ignoreAbort", true))
        );
        let watch: Option<WatchParams> = bunite_rpc::from_value(Value::Undefined).unwrap();
        assert_eq!(watch.unwrap_or_default().every(), Duration::from_millis(5));
        let delta: Option<Delta> =
            bunite_rpc::from_value(Value::Record(Record::new().with("delta", 5))).unwrap();
        assert_eq!(delta.unwrap_or_default().get(), 5);
        assert_eq!(Delta::default().get(), 1);
        let bytes = to_value(&ByteBuf::from(vec![0u8, 1])).unwrap();
        assert_eq!(bytes, Value::Bin(vec![0, 1]));
    }
}
