//! A [`Value`] record read as frame [`Fields`] ([`crate::Frame::from_value`]), moving its
//! payload out without copying. The rules are in `validate.rs`, shared with the lazy path.

use super::fields::{first, Fields, Listed, Meta, Name, Nested, Scalar, Status, Target};
use super::validate::{self, HelloBounds};
use crate::frame::{Frame, FrameError};
use crate::value::{Record, Value};

/// Validates a value as a frame.
pub(crate) fn frame_from_value(value: Value) -> Result<Frame, FrameError> {
    frame_from_value_with(value, HelloBounds::NONE)
}

/// Validates a value as a frame, a `hello` within `bounds`.
pub(crate) fn frame_from_value_with(
    value: Value,
    bounds: HelloBounds,
) -> Result<Frame, FrameError> {
    let Value::Record(r) = value else {
        return Err(FrameError::NotRecord);
    };
    let mut f = Fields::default();
    // A hostile local record may repeat a key: the first occurrence counts.
    for (k, v) in r.0 {
        match Name::of(&k) {
            Name::Op => first(&mut f.op, v.into()),
            Name::Id => first(&mut f.id, v.into()),
            Name::V => first(&mut f.v, v.into()),
            Name::Mode => first(&mut f.mode, v.into()),
            Name::Origin => first(&mut f.origin, v.into()),
            Name::MaxBytes => first(&mut f.max_bytes, v.into()),
            Name::Reason => first(&mut f.reason, v.into()),
            Name::Method => first(&mut f.method, v.into()),
            Name::Ev => first(&mut f.ev, v.into()),
            Name::Ok => first(&mut f.ok, v.into()),
            Name::Args => first(&mut f.args, v),
            Name::Value => first(&mut f.value, v),
            Name::Features => first(
                &mut f.features,
                match v {
                    Value::Array(items) if items.len() > bounds.max_features => {
                        Listed::Items(Err(FrameError::Invalid {
                            op: "hello",
                            field: "features",
                        }))
                    }
                    v => listed(v, |s| validate::feature(s.into(), bounds)),
                },
            ),
            Name::Caps => first(
                &mut f.caps,
                listed(v, |item| match item {
                    Value::Record(r) => validate::drop_entry(Some((
                        r.get("id").cloned().map(Scalar::from).as_ref(),
                        r.get("delta").cloned().map(Scalar::from).as_ref(),
                    ))),
                    _ => validate::drop_entry(None),
                }),
            ),
            Name::CapIds => first(
                &mut f.cap_ids,
                listed(v, |item| validate::revoked_id(&item.into())),
            ),
            Name::Target => first(&mut f.target, nested(v, target)),
            Name::Meta => first(&mut f.meta, nested(v, meta)),
            Name::Error => first(&mut f.error, nested(v, status)),
            Name::Credit => first(
                &mut f.credit,
                nested(v, |mut r| take(&mut r, "messages").map(Scalar::from)),
            ),
            // Keys of nested records mean nothing in a frame.
            _ => {}
        }
    }
    validate::frame(&mut f, bounds)
}

/// Moves the first value of `key` out of the record.
fn take(r: &mut Record, key: &str) -> Option<Value> {
    r.0.iter_mut()
        .find(|(k, _)| k == key)
        .map(|(_, v)| std::mem::take(v))
}

fn nested<T>(v: Value, read: impl FnOnce(Record) -> T) -> Nested<'static, T> {
    match v {
        Value::Record(r) => Nested::Record(read(r)),
        other => Nested::Scalar(other.into()),
    }
}

fn listed<T>(v: Value, judge: impl FnMut(Value) -> Result<T, FrameError>) -> Listed<'static, T> {
    match v {
        Value::Array(items) => Listed::Items(items.into_iter().map(judge).collect()),
        other => Listed::Scalar(other.into()),
    }
}

fn target(mut r: Record) -> Target<'static> {
    Target {
        kind: take(&mut r, "kind").map(Scalar::from),
        id: take(&mut r, "id").map(Scalar::from),
    }
}

fn meta(mut r: Record) -> Meta<'static> {
    Meta {
        parent_call_id: take(&mut r, "parentCallId").map(Scalar::from),
        deadline_ms: take(&mut r, "deadlineMs").map(Scalar::from),
        context: take(&mut r, "context").map(|c| {
            nested(c, |c| {
                c.0.into_iter()
                    .map(|(k, v)| (String::from(k), Scalar::from(v)))
                    .collect()
            })
        }),
    }
}

fn status(mut r: Record) -> Status<'static> {
    Status {
        code: take(&mut r, "code").map(Scalar::from),
        message: take(&mut r, "message").map(Scalar::from),
        details: take(&mut r, "details"),
        retry: take(&mut r, "retry"),
    }
}
