//! Validating a decoded value as a frame (PROTOCOL §4). Keys may come in any order; unknown
//! keys are ignored; numbers may be ints or integral float64s (PROTOCOL §3.1).

use crate::frame::{
    Call, CallMeta, Cancel, CapRevoked, DropEntry, DropFrame, Frame, FrameError, Goaway, Hello,
    ResultFrame, StreamEvent, StreamFrame, WireStatus,
};
use crate::ids::{CallId, CapId};
use crate::limits::Limits;
use crate::value::{Record, Value};

type Res<T> = Result<T, FrameError>;

/// Validates a decoded value as a frame, moving its payload out without copying.
pub(crate) fn frame_from_value(value: Value) -> Res<Frame> {
    let Value::Record(mut r) = value else {
        return Err(FrameError::NotRecord);
    };
    let op = match take(&mut r, "op") {
        Some(Value::Str(op)) => op,
        _ => return Err(FrameError::MissingOp),
    };
    match op.as_str() {
        "hello" => hello(r).map(Frame::Hello),
        "goaway" => goaway(r).map(Frame::Goaway),
        "call" => call(r).map(Frame::Call),
        "result" => result(r).map(Frame::Result),
        "cancel" => cancel(r).map(Frame::Cancel),
        "stream" => stream(r).map(Frame::Stream),
        "drop" => drop_frame(r).map(Frame::Drop),
        "cap_revoked" => cap_revoked(r).map(Frame::CapRevoked),
        _ => Err(FrameError::UnknownOp(op)),
    }
}

/// Moves the first value of `key` out of the record (a hostile peer may repeat keys).
fn take(r: &mut Record, key: &str) -> Option<Value> {
    r.0.iter_mut()
        .find(|(k, _)| k == key)
        .map(|(_, v)| std::mem::take(v))
}

/// Like [`take`], with a missing key and `undefined` both meaning absent.
fn take_defined(r: &mut Record, key: &str) -> Option<Value> {
    take(r, key).filter(|v| !v.is_undefined())
}

fn invalid(op: &'static str, field: &'static str) -> FrameError {
    FrameError::Invalid { op, field }
}

/// An integer in `0..bound`.
fn integer_below(v: Option<&Value>, bound: u64) -> Option<u64> {
    let n = v?.as_integer()?;
    u64::try_from(n).ok().filter(|&n| n < bound)
}

fn call_id(v: Option<Value>, op: &'static str, field: &'static str) -> Res<CallId> {
    integer_below(v.as_ref(), 1 << 53)
        .map(CallId)
        .ok_or_else(|| invalid(op, field))
}

fn cap_id(v: Option<&Value>, op: &'static str, field: &'static str) -> Res<CapId> {
    integer_below(v, 1 << 32)
        .and_then(|n| u32::try_from(n).ok())
        .map(CapId)
        .ok_or_else(|| invalid(op, field))
}

fn string(v: Option<Value>, op: &'static str, field: &'static str) -> Res<String> {
    match v {
        Some(Value::Str(s)) => Ok(s),
        _ => Err(invalid(op, field)),
    }
}

/// A string, or absent when missing or undefined.
fn opt_string(v: Option<Value>, op: &'static str, field: &'static str) -> Res<Option<String>> {
    match v {
        None | Some(Value::Undefined) => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(op, field)),
    }
}

fn hello(mut r: Record) -> Res<Hello> {
    const OP: &str = "hello";
    let v = take(&mut r, "v").unwrap_or_default();
    if v.as_integer() != Some(i128::from(crate::frame::PROTOCOL_VERSION)) {
        return Err(FrameError::Version(describe(&v)));
    }
    let mode = opt_string(take(&mut r, "mode"), OP, "mode")?.unwrap_or_else(|| "native".into());
    let features = match take_defined(&mut r, "features") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|f| string(Some(f), OP, "features"))
            .collect::<Res<_>>()?,
        Some(_) => return Err(invalid(OP, "features")),
    };
    let max_bytes = match take_defined(&mut r, "maxBytes") {
        None => Limits::DEFAULT_MAX_BYTES as u64,
        Some(v) => non_negative(&v).ok_or_else(|| invalid(OP, "maxBytes"))?,
    };
    let origin = opt_string(take(&mut r, "origin"), OP, "origin")?.unwrap_or_default();
    Ok(Hello {
        v: crate::frame::PROTOCOL_VERSION,
        mode,
        features,
        max_bytes,
        origin,
    })
}

/// A non-negative number as u64, fractions dropped and huge values saturated.
fn non_negative(v: &Value) -> Option<u64> {
    match *v {
        Value::Int(n) => u64::try_from(n).ok(),
        Value::UInt(n) => Some(n),
        // `as` saturates, which is what a limit wants.
        Value::Float(f) if f >= 0.0 => Some(f as u64),
        _ => None,
    }
}

/// A short description of a bad `hello.v` for the error.
fn describe(v: &Value) -> String {
    match v {
        Value::Undefined => "undefined".into(),
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(n) => n.to_string(),
        Value::UInt(n) => n.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => format!("{:?}", s.chars().take(32).collect::<String>()),
        _ => "a non-number".into(),
    }
}

fn goaway(mut r: Record) -> Res<Goaway> {
    const OP: &str = "goaway";
    let reason = opt_string(take(&mut r, "reason"), OP, "reason")?;
    let error = take_defined(&mut r, "error")
        .map(|e| status(e, OP))
        .transpose()?;
    Ok(Goaway { reason, error })
}

fn call(mut r: Record) -> Res<Call> {
    const OP: &str = "call";
    let id = call_id(take(&mut r, "id"), OP, "id")?;
    let Some(Value::Record(target)) = take(&mut r, "target") else {
        return Err(invalid(OP, "target"));
    };
    match target.get("kind") {
        None | Some(Value::Undefined) => {}
        Some(Value::Str(kind)) if kind == "cap" => {}
        Some(_) => return Err(invalid(OP, "target.kind")),
    }
    let target = cap_id(target.get("id"), OP, "target.id")?;
    let method = string(take(&mut r, "method"), OP, "method")?;
    let args = take(&mut r, "args").unwrap_or_default();
    let meta = match take(&mut r, "meta") {
        None | Some(Value::Undefined | Value::Null) => None,
        Some(Value::Record(m)) => Some(meta(m)?),
        Some(_) => return Err(invalid(OP, "meta")),
    };
    Ok(Call {
        id,
        target,
        method,
        args,
        meta,
    })
}

fn meta(mut m: Record) -> Res<CallMeta> {
    const OP: &str = "call";
    let parent_call_id = take_defined(&mut m, "parentCallId")
        .map(|v| call_id(Some(v), OP, "meta.parentCallId"))
        .transpose()?;
    let deadline_ms = match take_defined(&mut m, "deadlineMs") {
        None => None,
        Some(Value::Int(n)) => Some(n as f64),
        Some(Value::UInt(n)) => Some(n as f64),
        Some(Value::Float(f)) if f.is_finite() => Some(f),
        Some(_) => return Err(invalid(OP, "meta.deadlineMs")),
    };
    let context = match take_defined(&mut m, "context") {
        None => None,
        Some(Value::Record(c)) => Some(
            c.0.into_iter()
                .map(|(k, v)| Ok((k, string(Some(v), OP, "meta.context")?)))
                .collect::<Res<_>>()?,
        ),
        Some(_) => return Err(invalid(OP, "meta.context")),
    };
    Ok(CallMeta {
        parent_call_id,
        deadline_ms,
        context,
    })
}

fn result(mut r: Record) -> Res<ResultFrame> {
    const OP: &str = "result";
    let id = call_id(take(&mut r, "id"), OP, "id")?;
    let outcome = match take(&mut r, "ok") {
        Some(Value::Bool(true)) => Ok(take(&mut r, "value").unwrap_or_default()),
        Some(Value::Bool(false)) => {
            let error = take(&mut r, "error").ok_or_else(|| invalid(OP, "error"))?;
            Err(status(error, OP)?)
        }
        _ => return Err(invalid(OP, "ok")),
    };
    Ok(ResultFrame { id, outcome })
}

fn cancel(mut r: Record) -> Res<Cancel> {
    const OP: &str = "cancel";
    let id = call_id(take(&mut r, "id"), OP, "id")?;
    let reason = opt_string(take(&mut r, "reason"), OP, "reason")?;
    Ok(Cancel { id, reason })
}

fn stream(mut r: Record) -> Res<StreamFrame> {
    const OP: &str = "stream";
    let id = call_id(take(&mut r, "id"), OP, "id")?;
    let ev = string(take(&mut r, "ev"), OP, "ev")?;
    let event = match ev.as_str() {
        "next" => StreamEvent::Next(take(&mut r, "value").unwrap_or_default()),
        // A missing or odd credit is ignored by the receiver, not a protocol error.
        "credit" => StreamEvent::Credit(match take(&mut r, "credit") {
            Some(Value::Record(c)) => integer_below(c.get("messages"), u64::MAX),
            _ => None,
        }),
        "end" => StreamEvent::End,
        "error" => {
            let error = take(&mut r, "error").ok_or_else(|| invalid(OP, "error"))?;
            StreamEvent::Error(status(error, OP)?)
        }
        _ => return Err(invalid(OP, "ev")),
    };
    Ok(StreamFrame { id, event })
}

fn drop_frame(mut r: Record) -> Res<DropFrame> {
    const OP: &str = "drop";
    let Some(Value::Array(items)) = take(&mut r, "caps") else {
        return Err(invalid(OP, "caps"));
    };
    let caps = items
        .iter()
        .map(|item| {
            let Value::Record(entry) = item else {
                return Err(invalid(OP, "caps"));
            };
            let id = cap_id(entry.get("id"), OP, "caps.id")?;
            let delta = entry
                .get("delta")
                .and_then(delta)
                .ok_or_else(|| invalid(OP, "caps.delta"))?;
            Ok(DropEntry { id, delta })
        })
        .collect::<Res<_>>()?;
    Ok(DropFrame { caps })
}

/// Any number: negatives and non-integers count as 0 (ignored by the receiver), huge
/// values saturate.
fn delta(v: &Value) -> Option<u32> {
    let clamp = |n: i128| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    match *v {
        Value::Int(n) => Some(clamp(i128::from(n))),
        Value::UInt(_) => Some(u32::MAX),
        Value::Float(f) if f.is_finite() && f.fract() == 0.0 => {
            // Saturating cast, exact for integral values in range.
            Some(clamp(f.clamp(-1.0, f64::from(u32::MAX)) as i128))
        }
        Value::Float(_) => Some(0),
        _ => None,
    }
}

fn cap_revoked(mut r: Record) -> Res<CapRevoked> {
    const OP: &str = "cap_revoked";
    let Some(Value::Array(items)) = take(&mut r, "capIds") else {
        return Err(invalid(OP, "capIds"));
    };
    let cap_ids = items
        .iter()
        .map(|v| cap_id(Some(v), OP, "capIds"))
        .collect::<Res<_>>()?;
    Ok(CapRevoked { cap_ids })
}

/// A Status record. `full` records whether the `retry` key was present at all, so a
/// four-key status re-encodes as four keys.
fn status(v: Value, op: &'static str) -> Res<WireStatus> {
    let Value::Record(mut r) = v else {
        return Err(invalid(op, "error"));
    };
    let code = string(take(&mut r, "code"), op, "error.code")?;
    let message = opt_string(take(&mut r, "message"), op, "error.message")?;
    let details = take_defined(&mut r, "details");
    let retry = take(&mut r, "retry");
    let full = retry.is_some();
    Ok(WireStatus {
        code,
        message,
        details,
        retry: retry.filter(|v| !v.is_undefined()),
        full,
    })
}
