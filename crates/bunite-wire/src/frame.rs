//! Typed frames (PROTOCOL §4): conversion to and from [`Value`] records, with validation.
//!
//! Encoding writes the keys in the reference's order; decoding accepts any key order and
//! ignores unknown keys. Every failure is a [`FrameError`], never a panic.
//!
//! Frames are generic over their payload `P` (a call's `args`, a result's `value`, a stream
//! `next`'s `value`): outbound frames carry [`Value`]s (the default, `Frame` alone), inbound
//! ones [`Payload`]s that are validated but not yet materialized
//! ([`crate::Decoder::decode_frame_lazy`]).

use crate::codec::DecodeError;
use crate::ids::{CallId, CapId};
use crate::payload::Payload;
use crate::text::Text;
use crate::value::{Record, Value};

/// The protocol version carried in `hello.v`.
pub const PROTOCOL_VERSION: u32 = 1;

/// One protocol frame, its payload a `P` ([`Value`] unless said otherwise).
#[derive(Debug, Clone, PartialEq)]
pub enum Frame<P = Value> {
    /// `hello`: sent by each peer at once on creation.
    Hello(Hello),
    /// `goaway`: the sender is shutting down.
    Goaway(Goaway),
    /// `call`: a unary call, a bootstrap, or a stream open.
    Call(Call<P>),
    /// `result`: the outcome of a call.
    Result(ResultFrame<P>),
    /// `cancel`: the client gives up on a call or stream.
    Cancel(Cancel),
    /// `stream`: next / credit / end / error.
    Stream(StreamFrame<P>),
    /// `drop`: release references.
    Drop(DropFrame),
    /// `cap_revoked`: the server revoked these caps.
    CapRevoked(CapRevoked),
}

/// `hello {op, v, mode, features, maxBytes, origin}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    /// Protocol version; must be 1.
    pub v: u32,
    /// `"native"` or `"web"`.
    pub mode: String,
    /// Feature strings.
    pub features: Vec<String>,
    /// The largest message the sender accepts.
    pub max_bytes: u64,
    /// The sender's own claim of its origin (never used for security, PROTOCOL §6).
    pub origin: String,
}

/// `goaway {op, reason?, error?}`: keys present only when `Some`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Goaway {
    /// Why the sender is going away.
    pub reason: Option<String>,
    /// The Status that caused it.
    pub error: Option<WireStatus>,
}

/// `call {op, id, target:{kind:"cap", id}, method, args, meta}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call<P = Value> {
    /// The call id.
    pub id: CallId,
    /// The target cap (`target.id`; `target.kind` is always `"cap"`).
    pub target: CapId,
    /// The method name: a `&'static str` without allocating (`"increment".into()`), and
    /// decoded without allocating when it is at most [`Text::INLINE`] bytes.
    pub method: Text,
    /// The single params value, or undefined.
    pub args: P,
    /// `meta`, or `None` for undefined (the key is always present).
    pub meta: Option<CallMeta>,
}

/// `CallMeta {parentCallId?, deadlineMs?, context?}`: keys present only when `Some`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CallMeta {
    /// The calling call's id, for calls made from inside a handler.
    pub parent_call_id: Option<CallId>,
    /// A relative deadline in milliseconds (absent or ≤ 0 means none).
    pub deadline_ms: Option<f64>,
    /// A string → string map (a record on the wire).
    pub context: Option<Vec<(String, String)>>,
}

/// `result {op, id, ok, value}` or `result {op, id, ok, error}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultFrame<P = Value> {
    /// The call id this answers.
    pub id: CallId,
    /// `Ok(value)` for `ok:true` (undefined for void), `Err(status)` for `ok:false`.
    pub outcome: Result<P, WireStatus>,
}

/// `cancel {op, id, reason}` (the reason key is always present, undefined when `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Cancel {
    /// The call or stream to cancel.
    pub id: CallId,
    /// Why.
    pub reason: Option<String>,
}

/// `stream {op, id, ev, …}`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamFrame<P = Value> {
    /// The stream's call id.
    pub id: CallId,
    /// The event.
    pub event: StreamEvent<P>,
}

/// The `ev` of a stream frame with its payload.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent<P = Value> {
    /// `ev:"next", value`.
    Next(P),
    /// `ev:"credit", credit:{messages}`. `None` when `messages` is missing or not a
    /// non-negative integer (ignored by the receiver, PROTOCOL §13.2).
    Credit(Option<u64>),
    /// `ev:"end"`.
    End,
    /// `ev:"error", error`.
    Error(WireStatus),
}

/// `drop {op, caps:[{id, delta}]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DropFrame {
    /// The released references.
    pub caps: Vec<DropEntry>,
}

/// One `{id, delta}` entry of a drop frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropEntry {
    /// The cap.
    pub id: CapId,
    /// How many references are released (entries with a delta ≤ 0 are ignored by
    /// receivers; decoding clamps them to 0).
    pub delta: u32,
}

/// `cap_revoked {op, capIds}`.
#[derive(Debug, Clone, PartialEq)]
pub struct CapRevoked {
    /// The revoked cap ids.
    pub cap_ids: Vec<CapId>,
}

/// A Status as it travels (PROTOCOL §12): `{code, message?, details?, retry?}`.
///
/// The reference emits two shapes and we reproduce both byte for byte:
/// - compact (`full == false`): `{code, message}` plus `details` when present. This is what
///   the peer itself generates (`sendError`, goaway, cancel replies, plain handler errors).
/// - full (`full == true`): all four keys, `undefined` where absent. This is `toStatus()` of
///   a Status error thrown by a handler.
///
/// Encoding: keys in the order `code, message, details, retry`; `message` is always present
/// (`undefined` when `None`); when `full` or `retry.is_some()` all four keys are present;
/// otherwise `details` only when `Some`. Decoding sets `full` when the `retry` key is present.
#[derive(Debug, Clone, PartialEq)]
pub struct WireStatus {
    /// The code string (validated to be a string; not checked against the known codes here).
    pub code: String,
    /// The message.
    pub message: Option<String>,
    /// `details` (usually `{reason}`), `None` when absent or undefined.
    pub details: Option<Value>,
    /// `retry`, `None` when absent or undefined.
    pub retry: Option<Value>,
    /// Emit the four-key shape.
    pub full: bool,
}

/// Why a decoded value is not a valid frame. Any of these is a protocol error (PROTOCOL §11).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is not a record.
    #[error("frame is not an object")]
    NotRecord,
    /// `op` is missing or not a string.
    #[error("frame has no string op")]
    MissingOp,
    /// `op` names no known frame.
    #[error("unknown opcode")]
    UnknownOp(String),
    /// A required key is missing or has the wrong type.
    #[error("invalid {op} frame: {field}")]
    Invalid {
        /// The frame's op.
        op: &'static str,
        /// The offending key (dotted path).
        field: &'static str,
    },
    /// `hello.v` is not the protocol version.
    #[error("unsupported protocol version {0}")]
    Version(String),
}

impl Frame {
    /// The frame as a record value, keys in the reference's order.
    pub fn to_value(&self) -> Value {
        crate::frame_codec::frame_to_value(self)
    }

    /// Validates a decoded value as a frame, with the rules of
    /// [`crate::Decoder::decode_frame_lazy`] (but no [`crate::DecodeLimits`]: the value is
    /// already in memory).
    pub fn from_value(value: Value) -> Result<Frame, FrameError> {
        crate::frame_codec::frame_from_value(value)
    }
}

impl Frame<Payload> {
    /// The frame with its payload materialized as a [`Value`] (for tests and tools; the
    /// runtime deserializes payloads straight into their types).
    pub fn into_values(self) -> Result<Frame, DecodeError> {
        self.try_map_payload(Payload::into_value)
    }
}

impl<P> Frame<P> {
    /// The same frame with its payload (if it has one) converted by `f`.
    pub fn try_map_payload<Q, E>(self, f: impl FnOnce(P) -> Result<Q, E>) -> Result<Frame<Q>, E> {
        Ok(match self {
            Frame::Hello(h) => Frame::Hello(h),
            Frame::Goaway(g) => Frame::Goaway(g),
            Frame::Call(c) => Frame::Call(Call {
                id: c.id,
                target: c.target,
                method: c.method,
                args: f(c.args)?,
                meta: c.meta,
            }),
            Frame::Result(r) => Frame::Result(ResultFrame {
                id: r.id,
                outcome: match r.outcome {
                    Ok(p) => Ok(f(p)?),
                    Err(s) => Err(s),
                },
            }),
            Frame::Cancel(c) => Frame::Cancel(c),
            Frame::Stream(s) => Frame::Stream(StreamFrame {
                id: s.id,
                event: match s.event {
                    StreamEvent::Next(p) => StreamEvent::Next(f(p)?),
                    StreamEvent::Credit(n) => StreamEvent::Credit(n),
                    StreamEvent::End => StreamEvent::End,
                    StreamEvent::Error(e) => StreamEvent::Error(e),
                },
            }),
            Frame::Drop(d) => Frame::Drop(d),
            Frame::CapRevoked(c) => Frame::CapRevoked(c),
        })
    }

    /// The op string.
    pub fn op(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Goaway(_) => "goaway",
            Frame::Call(_) => "call",
            Frame::Result(_) => "result",
            Frame::Cancel(_) => "cancel",
            Frame::Stream(_) => "stream",
            Frame::Drop(_) => "drop",
            Frame::CapRevoked(_) => "cap_revoked",
        }
    }
}

impl WireStatus {
    /// A compact status `{code, message}`.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        WireStatus {
            code: code.into(),
            message: Some(message.into()),
            details: None,
            retry: None,
            full: false,
        }
    }

    /// `details.reason`, when details is a record with a string `reason`.
    pub fn reason(&self) -> Option<&str> {
        match &self.details {
            Some(Value::Record(r)) => r.get("reason").and_then(Value::as_str),
            _ => None,
        }
    }

    /// Adds `details = {reason}`.
    pub fn with_reason(mut self, reason: &str) -> Self {
        self.details = Some(Value::Record(Record::new().with("reason", reason)));
        self
    }
}
