//! The frame rules (PROTOCOL §4): [`Fields`] as read become a [`Frame`] or a [`FrameError`].
//! Keys may come in any order; unknown keys are ignored; numbers may be ints or integral
//! float64s (PROTOCOL §3.1).

use std::borrow::Cow;

use super::fields::{Fields, Listed, Meta, Nested, Scalar, Status};
use crate::frame::{
    Call, CallMeta, Cancel, CapRevoked, DropEntry, DropFrame, Frame, FrameError, Goaway, Hello,
    ResultFrame, StreamEvent, StreamFrame, WireStatus, PROTOCOL_VERSION,
};
use crate::ids::{CallId, CapId};
use crate::limits::DecodeLimits;
use crate::text::Text;

type Res<T> = Result<T, FrameError>;

/// What a `hello` may hold (PROTOCOL §6: it is kept for the connection's life).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HelloBounds {
    pub(crate) max_features: usize,
    pub(crate) max_text: usize,
}

impl HelloBounds {
    /// No bounds: a frame built locally.
    pub(crate) const NONE: HelloBounds = HelloBounds {
        max_features: usize::MAX,
        max_text: usize::MAX,
    };

    pub(crate) fn of(limits: &DecodeLimits) -> HelloBounds {
        HelloBounds {
            max_features: limits.max_hello_features,
            max_text: limits.max_hello_text,
        }
    }
}

/// The frame these fields make (taken out of `f`, which is large: it is never moved).
pub(crate) fn frame<P: Default>(f: &mut Fields<'_, P>, bounds: HelloBounds) -> Res<Frame<P>> {
    let op = match f.op.take() {
        Some(Scalar::Str(op)) => op,
        _ => return Err(FrameError::MissingOp),
    };
    match op.as_ref() {
        "hello" => hello(f, bounds).map(Frame::Hello),
        "goaway" => goaway(f).map(Frame::Goaway),
        "call" => call(f).map(Frame::Call),
        "result" => result(f).map(Frame::Result),
        "cancel" => cancel(f).map(Frame::Cancel),
        "stream" => stream(f).map(Frame::Stream),
        "drop" => list(f.caps.take(), "drop", "caps").map(|caps| Frame::Drop(DropFrame { caps })),
        "cap_revoked" => list(f.cap_ids.take(), "cap_revoked", "capIds")
            .map(|cap_ids| Frame::CapRevoked(CapRevoked { cap_ids })),
        _ => Err(FrameError::UnknownOp(op.into_owned())),
    }
}

fn invalid(op: &'static str, field: &'static str) -> FrameError {
    FrameError::Invalid { op, field }
}

/// A missing key and `undefined` both mean absent.
fn defined<T>(v: Option<Nested<'_, T>>) -> Option<Nested<'_, T>> {
    v.filter(|v| !matches!(v, Nested::Scalar(Scalar::Undefined)))
}

/// An integer in `0..bound`.
fn integer_below(v: Option<&Scalar<'_>>, bound: u64) -> Option<u64> {
    let n = v?.as_integer()?;
    u64::try_from(n).ok().filter(|&n| n < bound)
}

fn call_id(v: Option<&Scalar<'_>>, op: &'static str, field: &'static str) -> Res<CallId> {
    integer_below(v, 1 << 53)
        .map(CallId)
        .ok_or_else(|| invalid(op, field))
}

fn cap_id(v: Option<&Scalar<'_>>, op: &'static str, field: &'static str) -> Res<CapId> {
    integer_below(v, 1 << 32)
        .and_then(|n| u32::try_from(n).ok())
        .map(CapId)
        .ok_or_else(|| invalid(op, field))
}

fn string<'a>(v: Option<Scalar<'a>>, op: &'static str, field: &'static str) -> Res<Cow<'a, str>> {
    match v {
        Some(Scalar::Str(s)) => Ok(s),
        _ => Err(invalid(op, field)),
    }
}

/// A string, or absent when missing or undefined.
fn opt_string(v: Option<Scalar<'_>>, op: &'static str, field: &'static str) -> Res<Option<String>> {
    match v {
        None | Some(Scalar::Undefined) => Ok(None),
        Some(Scalar::Str(s)) => Ok(Some(s.into_owned())),
        Some(_) => Err(invalid(op, field)),
    }
}

/// A `hello` string within the bounds.
fn bounded(s: String, bounds: HelloBounds, field: &'static str) -> Res<String> {
    if s.len() > bounds.max_text {
        Err(invalid("hello", field))
    } else {
        Ok(s)
    }
}

/// One `hello.features` item.
pub(crate) fn feature(s: Scalar<'_>, bounds: HelloBounds) -> Res<String> {
    let s = string(Some(s), "hello", "features")?;
    bounded(s.into_owned(), bounds, "features")
}

/// One `drop.caps` item: a record's `id` and `delta`, or `None` when it is not a record.
pub(crate) fn drop_entry(
    entry: Option<(Option<&Scalar<'_>>, Option<&Scalar<'_>>)>,
) -> Res<DropEntry> {
    const OP: &str = "drop";
    let (id, delta_field) = entry.ok_or_else(|| invalid(OP, "caps"))?;
    let id = cap_id(id, OP, "caps.id")?;
    let delta = delta_field
        .and_then(delta)
        .ok_or_else(|| invalid(OP, "caps.delta"))?;
    Ok(DropEntry { id, delta })
}

/// One `cap_revoked.capIds` item.
pub(crate) fn revoked_id(v: &Scalar<'_>) -> Res<CapId> {
    cap_id(Some(v), "cap_revoked", "capIds")
}

/// A required array whose items were judged while reading.
fn list<T>(v: Option<Listed<'_, T>>, op: &'static str, field: &'static str) -> Res<Vec<T>> {
    match v {
        Some(Listed::Items(items)) => items,
        _ => Err(invalid(op, field)),
    }
}

fn hello<P>(f: &mut Fields<'_, P>, bounds: HelloBounds) -> Res<Hello> {
    const OP: &str = "hello";
    let v = f.v.take().unwrap_or(Scalar::Undefined);
    if v.as_integer() != Some(i128::from(PROTOCOL_VERSION)) {
        return Err(FrameError::Version(describe(&v)));
    }
    let mode = opt_string(f.mode.take(), OP, "mode")?.unwrap_or_else(|| "native".into());
    let mode = bounded(mode, bounds, "mode")?;
    let features = match f.features.take() {
        None | Some(Listed::Scalar(Scalar::Undefined)) => Vec::new(),
        Some(Listed::Items(items)) => items?,
        Some(Listed::Scalar(_)) => return Err(invalid(OP, "features")),
    };
    let max_bytes = match f.max_bytes.take() {
        None | Some(Scalar::Undefined) => DecodeLimits::DEFAULT_MAX_BYTES as u64,
        Some(v) => non_negative(&v).ok_or_else(|| invalid(OP, "maxBytes"))?,
    };
    let origin = opt_string(f.origin.take(), OP, "origin")?.unwrap_or_default();
    let origin = bounded(origin, bounds, "origin")?;
    Ok(Hello {
        v: PROTOCOL_VERSION,
        mode,
        features,
        max_bytes,
        origin,
    })
}

/// A non-negative number as u64, fractions dropped and huge values saturated.
fn non_negative(v: &Scalar<'_>) -> Option<u64> {
    match *v {
        Scalar::Int(n) => u64::try_from(n).ok(),
        Scalar::UInt(n) => Some(n),
        // `as` saturates, which is what a limit wants.
        Scalar::Float(f) if f >= 0.0 => Some(f as u64),
        _ => None,
    }
}

/// A short description of a bad `hello.v` for the error.
fn describe(v: &Scalar<'_>) -> String {
    match v {
        Scalar::Undefined => "undefined".into(),
        Scalar::Null => "null".into(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(n) => n.to_string(),
        Scalar::UInt(n) => n.to_string(),
        Scalar::Float(f) => f.to_string(),
        Scalar::Str(s) => format!("{:?}", s.chars().take(32).collect::<String>()),
        Scalar::Other => "a non-number".into(),
    }
}

fn goaway<P>(f: &mut Fields<'_, P>) -> Res<Goaway> {
    const OP: &str = "goaway";
    let reason = opt_string(f.reason.take(), OP, "reason")?;
    let error = defined(f.error.take()).map(|e| status(e, OP)).transpose()?;
    Ok(Goaway { reason, error })
}

fn call<P: Default>(f: &mut Fields<'_, P>) -> Res<Call<P>> {
    const OP: &str = "call";
    let id = call_id(f.id.as_ref(), OP, "id")?;
    let Some(Nested::Record(target)) = f.target.take() else {
        return Err(invalid(OP, "target"));
    };
    match &target.kind {
        None | Some(Scalar::Undefined) => {}
        Some(Scalar::Str(kind)) if kind == "cap" => {}
        Some(_) => return Err(invalid(OP, "target.kind")),
    }
    let target = cap_id(target.id.as_ref(), OP, "target.id")?;
    let method = match string(f.method.take(), OP, "method")? {
        // Short names stay inline: no allocation.
        Cow::Borrowed(s) => Text::copy_from(s),
        Cow::Owned(s) => Text::from(s),
    };
    let meta = call_meta(f.meta.take())?;
    Ok(Call {
        id,
        target,
        method,
        args: f.args.take().unwrap_or_default(),
        meta,
    })
}

/// `call.meta` as read.
pub(crate) fn call_meta(v: Option<Nested<'_, Meta<'_>>>) -> Res<Option<CallMeta>> {
    match v {
        None | Some(Nested::Scalar(Scalar::Undefined | Scalar::Null)) => Ok(None),
        Some(Nested::Record(m)) => meta(m).map(Some),
        Some(Nested::Scalar(_)) => Err(invalid("call", "meta")),
    }
}

fn meta(m: Meta<'_>) -> Res<CallMeta> {
    const OP: &str = "call";
    let parent_call_id = match m.parent_call_id {
        None | Some(Scalar::Undefined) => None,
        Some(v) => Some(call_id(Some(&v), OP, "meta.parentCallId")?),
    };
    let deadline_ms = match m.deadline_ms {
        None | Some(Scalar::Undefined) => None,
        Some(Scalar::Int(n)) => Some(n as f64),
        Some(Scalar::UInt(n)) => Some(n as f64),
        Some(Scalar::Float(f)) if f.is_finite() => Some(f),
        Some(_) => return Err(invalid(OP, "meta.deadlineMs")),
    };
    let context = match defined(m.context) {
        None => None,
        Some(Nested::Record(entries)) => Some(
            entries
                .into_iter()
                .map(|(k, v)| Ok((k, string(Some(v), OP, "meta.context")?.into_owned())))
                .collect::<Res<_>>()?,
        ),
        Some(Nested::Scalar(_)) => return Err(invalid(OP, "meta.context")),
    };
    Ok(CallMeta {
        parent_call_id,
        deadline_ms,
        context,
    })
}

fn result<P: Default>(f: &mut Fields<'_, P>) -> Res<ResultFrame<P>> {
    const OP: &str = "result";
    let id = call_id(f.id.as_ref(), OP, "id")?;
    let outcome = match f.ok.take() {
        Some(Scalar::Bool(true)) => Ok(f.value.take().unwrap_or_default()),
        Some(Scalar::Bool(false)) => {
            let error = f.error.take().ok_or_else(|| invalid(OP, "error"))?;
            Err(status(error, OP)?)
        }
        _ => return Err(invalid(OP, "ok")),
    };
    Ok(ResultFrame { id, outcome })
}

fn cancel<P>(f: &mut Fields<'_, P>) -> Res<Cancel> {
    const OP: &str = "cancel";
    let id = call_id(f.id.as_ref(), OP, "id")?;
    let reason = opt_string(f.reason.take(), OP, "reason")?;
    Ok(Cancel { id, reason })
}

fn stream<P: Default>(f: &mut Fields<'_, P>) -> Res<StreamFrame<P>> {
    const OP: &str = "stream";
    let id = call_id(f.id.as_ref(), OP, "id")?;
    let ev = string(f.ev.take(), OP, "ev")?;
    let event = match ev.as_ref() {
        "next" => StreamEvent::Next(f.value.take().unwrap_or_default()),
        // A missing or odd credit is ignored by the receiver, not a protocol error.
        "credit" => StreamEvent::Credit(match f.credit.take() {
            Some(Nested::Record(messages)) => integer_below(messages.as_ref(), u64::MAX),
            _ => None,
        }),
        "end" => StreamEvent::End,
        "error" => {
            let error = f.error.take().ok_or_else(|| invalid(OP, "error"))?;
            StreamEvent::Error(status(error, OP)?)
        }
        _ => return Err(invalid(OP, "ev")),
    };
    Ok(StreamFrame { id, event })
}

/// Any number: negatives and non-integers count as 0 (ignored by the receiver), huge
/// values saturate.
pub(crate) fn delta(v: &Scalar<'_>) -> Option<u32> {
    let clamp = |n: i128| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    match *v {
        Scalar::Int(n) => Some(clamp(i128::from(n))),
        Scalar::UInt(_) => Some(u32::MAX),
        Scalar::Float(f) if f.is_finite() && f.fract() == 0.0 => {
            // Saturating cast, exact for integral values in range.
            Some(clamp(f.clamp(-1.0, f64::from(u32::MAX)) as i128))
        }
        Scalar::Float(_) => Some(0),
        _ => None,
    }
}

/// A Status record. `full` records whether the `retry` key was present at all, so a
/// four-key status re-encodes as four keys.
fn status(v: Nested<'_, Status<'_>>, op: &'static str) -> Res<WireStatus> {
    let Nested::Record(s) = v else {
        return Err(invalid(op, "error"));
    };
    let code = string(s.code, op, "error.code")?.into_owned();
    let message = opt_string(s.message, op, "error.message")?;
    let full = s.retry.is_some();
    Ok(WireStatus {
        code,
        message,
        details: s.details.filter(|v| !v.is_undefined()),
        retry: s.retry.filter(|v| !v.is_undefined()),
        full,
    })
}
