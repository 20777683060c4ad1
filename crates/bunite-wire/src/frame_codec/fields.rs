//! A frame's fields as read, before the frame rules judge them (`validate.rs`).
//!
//! Both ways of decoding a frame fill these: from a [`crate::Value`] record
//! ([`crate::Frame::from_value`], `decode.rs`) and straight from the bytes
//! ([`crate::Decoder::decode_frame_lazy`], `lazy.rs`). One set of rules then turns them into
//! a [`crate::Frame`], so the two can never disagree. Every key has one meaning whatever the
//! op, so a field can be read before the op is known (keys may come in any order).

use std::borrow::Cow;

use crate::frame::{DropEntry, FrameError};
use crate::ids::CapId;
use crate::value::Value;

/// A field read as a scalar: containers and other values are only `Other`.
#[derive(Debug, Clone)]
pub(crate) enum Scalar<'a> {
    Undefined,
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(Cow<'a, str>),
    Other,
}

impl Scalar<'_> {
    /// The value as an exact integer, as [`Value::as_integer`].
    pub(crate) fn as_integer(&self) -> Option<i128> {
        match *self {
            Scalar::Int(i) => Value::Int(i).as_integer(),
            Scalar::UInt(u) => Value::UInt(u).as_integer(),
            Scalar::Float(f) => Value::Float(f).as_integer(),
            _ => None,
        }
    }
}

impl From<Value> for Scalar<'static> {
    fn from(v: Value) -> Self {
        match v {
            Value::Undefined => Scalar::Undefined,
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(b),
            Value::Int(n) => Scalar::Int(n),
            Value::UInt(n) => Scalar::UInt(n),
            Value::Float(f) => Scalar::Float(f),
            Value::Str(s) => Scalar::Str(Cow::Owned(s)),
            _ => Scalar::Other,
        }
    }
}

/// A field that should be a record: what was read from it, or what it was instead.
#[derive(Debug)]
pub(crate) enum Nested<'a, T> {
    Record(T),
    Scalar(Scalar<'a>),
}

/// A field that should be an array: its items already judged (the first bad item's error),
/// or what it was instead.
#[derive(Debug)]
pub(crate) enum Listed<'a, T> {
    Items(Result<Vec<T>, FrameError>),
    Scalar(Scalar<'a>),
}

/// `call.target`.
#[derive(Debug, Default)]
pub(crate) struct Target<'a> {
    pub(crate) kind: Option<Scalar<'a>>,
    pub(crate) id: Option<Scalar<'a>>,
}

/// `call.meta`.
#[derive(Debug, Default)]
pub(crate) struct Meta<'a> {
    pub(crate) parent_call_id: Option<Scalar<'a>>,
    pub(crate) deadline_ms: Option<Scalar<'a>>,
    /// The context's entries, or what it was instead.
    pub(crate) context: Option<Nested<'a, Vec<(String, Scalar<'a>)>>>,
}

/// A Status (`error`).
#[derive(Debug, Default)]
pub(crate) struct Status<'a> {
    pub(crate) code: Option<Scalar<'a>>,
    pub(crate) message: Option<Scalar<'a>>,
    pub(crate) details: Option<Value>,
    pub(crate) retry: Option<Value>,
}

/// Every key any frame knows, each read at its first occurrence. Payloads are `P`.
#[derive(Debug)]
pub(crate) struct Fields<'a, P> {
    pub(crate) op: Option<Scalar<'a>>,
    pub(crate) id: Option<Scalar<'a>>,
    pub(crate) v: Option<Scalar<'a>>,
    pub(crate) mode: Option<Scalar<'a>>,
    pub(crate) origin: Option<Scalar<'a>>,
    pub(crate) max_bytes: Option<Scalar<'a>>,
    pub(crate) reason: Option<Scalar<'a>>,
    pub(crate) method: Option<Scalar<'a>>,
    pub(crate) ev: Option<Scalar<'a>>,
    pub(crate) ok: Option<Scalar<'a>>,
    pub(crate) features: Option<Listed<'a, String>>,
    pub(crate) target: Option<Nested<'a, Target<'a>>>,
    pub(crate) meta: Option<Nested<'a, Meta<'a>>>,
    pub(crate) args: Option<P>,
    pub(crate) value: Option<P>,
    pub(crate) error: Option<Nested<'a, Status<'a>>>,
    pub(crate) caps: Option<Listed<'a, DropEntry>>,
    pub(crate) cap_ids: Option<Listed<'a, CapId>>,
    /// `credit.messages` when `credit` is a record.
    pub(crate) credit: Option<Nested<'a, Option<Scalar<'a>>>>,
}

impl<P> Default for Fields<'_, P> {
    fn default() -> Self {
        Fields {
            op: None,
            id: None,
            v: None,
            mode: None,
            origin: None,
            max_bytes: None,
            reason: None,
            method: None,
            ev: None,
            ok: None,
            features: None,
            target: None,
            meta: None,
            args: None,
            value: None,
            error: None,
            caps: None,
            cap_ids: None,
            credit: None,
        }
    }
}

/// What a record key means to the frame reader: a key of a frame, a key of one of the
/// records nested in frames (`target`, `meta`, a status, `credit`, a drop entry), or
/// nothing. Worked out once per record definition ([`crate::records::SlotKeys`]) and once
/// per key of a `Value` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Name {
    Other,
    Op,
    Id,
    V,
    Mode,
    Origin,
    MaxBytes,
    Reason,
    Method,
    Ev,
    Ok,
    Features,
    Target,
    Meta,
    Args,
    Value,
    Error,
    Caps,
    CapIds,
    Credit,
    Kind,
    Code,
    Message,
    Details,
    Retry,
    Messages,
    ParentCallId,
    DeadlineMs,
    Context,
    Delta,
}

impl Name {
    /// Every name, at its own index.
    const ALL: [Name; 30] = {
        use Name::*;
        [
            Other,
            Op,
            Id,
            V,
            Mode,
            Origin,
            MaxBytes,
            Reason,
            Method,
            Ev,
            Ok,
            Features,
            Target,
            Meta,
            Args,
            Value,
            Error,
            Caps,
            CapIds,
            Credit,
            Kind,
            Code,
            Message,
            Details,
            Retry,
            Messages,
            ParentCallId,
            DeadlineMs,
            Context,
            Delta,
        ]
    };

    pub(crate) fn of(key: &str) -> Name {
        use Name::*;
        match key {
            "op" => Op,
            "id" => Id,
            "v" => V,
            "mode" => Mode,
            "origin" => Origin,
            "maxBytes" => MaxBytes,
            "reason" => Reason,
            "method" => Method,
            "ev" => Ev,
            "ok" => Ok,
            "features" => Features,
            "target" => Target,
            "meta" => Meta,
            "args" => Args,
            "value" => Value,
            "error" => Error,
            "caps" => Caps,
            "capIds" => CapIds,
            "credit" => Credit,
            "kind" => Kind,
            "code" => Code,
            "message" => Message,
            "details" => Details,
            "retry" => Retry,
            "messages" => Messages,
            "parentCallId" => ParentCallId,
            "deadlineMs" => DeadlineMs,
            "context" => Context,
            "delta" => Delta,
            _ => Other,
        }
    }

    /// The name stored as `i` (`Other` for anything else).
    pub(crate) fn from_index(i: u8) -> Name {
        Name::ALL
            .get(usize::from(i))
            .copied()
            .unwrap_or(Name::Other)
    }

    /// Whether a frame with this op reads the key (`None`: a string op that names no frame,
    /// which reads none).
    pub(crate) fn read_by(self, op: Option<Op>) -> bool {
        use Name as N;
        match op {
            Some(Op::Hello) => {
                matches!(self, N::V | N::Mode | N::Features | N::MaxBytes | N::Origin)
            }
            Some(Op::Goaway) => matches!(self, N::Reason | N::Error),
            Some(Op::Call) => matches!(self, N::Id | N::Target | N::Method | N::Args | N::Meta),
            Some(Op::Result) => matches!(self, N::Id | N::Ok | N::Value | N::Error),
            Some(Op::Cancel) => matches!(self, N::Id | N::Reason),
            Some(Op::Stream) => matches!(self, N::Id | N::Ev | N::Value | N::Credit | N::Error),
            Some(Op::Drop) => matches!(self, N::Caps),
            Some(Op::CapRevoked) => matches!(self, N::CapIds),
            None => false,
        }
    }
}

/// The frame kinds, by their `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Hello,
    Goaway,
    Call,
    Result,
    Cancel,
    Stream,
    Drop,
    CapRevoked,
}

impl Op {
    /// Every op's string, in the order of [`Op::ALL`].
    pub(crate) const NAMES: [&'static str; 8] = [
        "hello",
        "goaway",
        "call",
        "result",
        "cancel",
        "stream",
        "drop",
        "cap_revoked",
    ];
    const ALL: [Op; 8] = [
        Op::Hello,
        Op::Goaway,
        Op::Call,
        Op::Result,
        Op::Cancel,
        Op::Stream,
        Op::Drop,
        Op::CapRevoked,
    ];

    /// The op named `op`, if any.
    pub(crate) fn of(op: &str) -> Option<Op> {
        Op::at(Op::NAMES.iter().position(|name| *name == op)?)
    }

    /// The op of [`Op::NAMES`]`[i]`.
    pub(crate) fn at(i: usize) -> Option<Op> {
        Op::ALL.get(i).copied()
    }
}

/// Sets `slot` unless a first occurrence already did.
pub(crate) fn first<T>(slot: &mut Option<T>, value: T) {
    if slot.is_none() {
        *slot = Some(value);
    }
}
