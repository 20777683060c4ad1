//! Typed frames (PROTOCOL §4): conversion to and from [`Value`] records, with validation.
//!
//! Encoding writes the keys in the reference's order; decoding accepts any key order and
//! ignores unknown keys. Every failure is a [`FrameError`], never a panic.

use crate::ids::{CallId, CapId};
use crate::value::{Record, Value};

/// The protocol version carried in `hello.v`.
pub const PROTOCOL_VERSION: u32 = 1;

/// One protocol frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `hello`: sent by each peer at once on creation.
    Hello(Hello),
    /// `goaway`: the sender is shutting down.
    Goaway(Goaway),
    /// `call`: a unary call, a bootstrap, or a stream open.
    Call(Call),
    /// `result`: the outcome of a call.
    Result(ResultFrame),
    /// `cancel`: the client gives up on a call or stream.
    Cancel(Cancel),
    /// `stream`: next / credit / end / error.
    Stream(StreamFrame),
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
pub struct Call {
    /// The call id.
    pub id: CallId,
    /// The target cap (`target.id`; `target.kind` is always `"cap"`).
    pub target: CapId,
    /// The method name.
    pub method: String,
    /// The single params value, or `Undefined`.
    pub args: Value,
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
pub struct ResultFrame {
    /// The call id this answers.
    pub id: CallId,
    /// `Ok(value)` for `ok:true` (`Undefined` for void), `Err(status)` for `ok:false`.
    pub outcome: Result<Value, WireStatus>,
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
pub struct StreamFrame {
    /// The stream's call id.
    pub id: CallId,
    /// The event.
    pub event: StreamEvent,
}

/// The `ev` of a stream frame with its payload.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `ev:"next", value`.
    Next(Value),
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

    /// Validates a decoded value as a frame.
    pub fn from_value(value: Value) -> Result<Frame, FrameError> {
        crate::frame_codec::frame_from_value(value)
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
