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

/// The keys frames know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
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
}

impl Key {
    pub(crate) fn of(key: &str) -> Option<Key> {
        Some(match key {
            "op" => Key::Op,
            "id" => Key::Id,
            "v" => Key::V,
            "mode" => Key::Mode,
            "origin" => Key::Origin,
            "maxBytes" => Key::MaxBytes,
            "reason" => Key::Reason,
            "method" => Key::Method,
            "ev" => Key::Ev,
            "ok" => Key::Ok,
            "features" => Key::Features,
            "target" => Key::Target,
            "meta" => Key::Meta,
            "args" => Key::Args,
            "value" => Key::Value,
            "error" => Key::Error,
            "caps" => Key::Caps,
            "capIds" => Key::CapIds,
            "credit" => Key::Credit,
            _ => return None,
        })
    }

    /// Whether frames with `op` read this key (a string op that names no frame reads none).
    pub(crate) fn read_by(self, op: &str) -> bool {
        use Key::*;
        match op {
            "hello" => matches!(self, V | Mode | Features | MaxBytes | Origin),
            "goaway" => matches!(self, Reason | Error),
            "call" => matches!(self, Id | Target | Method | Args | Meta),
            "result" => matches!(self, Id | Ok | Value | Error),
            "cancel" => matches!(self, Id | Reason),
            "stream" => matches!(self, Id | Ev | Value | Credit | Error),
            "drop" => matches!(self, Caps),
            "cap_revoked" => matches!(self, CapIds),
            _ => false,
        }
    }
}

/// Sets `slot` unless a first occurrence already did.
pub(crate) fn first<T>(slot: &mut Option<T>, value: T) {
    if slot.is_none() {
        *slot = Some(value);
    }
}
