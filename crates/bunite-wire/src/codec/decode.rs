//! Building [`Value`]s from bytes a peer sent (PROTOCOL §3). Every allocation is charged to
//! the decode budget before it is made and sized by what the remaining input can really
//! hold, never by a length header alone; recursion is bounded by the depth limit.

use super::budget;
use super::cursor::{Ctx, Head, Res};
use super::DecodeError::InvalidExtension;
use crate::text::Text;
use crate::value::{Record, TypedArray, Value};

/// One value at `depth`.
pub(crate) fn value(cx: &mut Ctx<'_, '_>, depth: usize) -> Res<Value> {
    let head = cx.cur.head()?;
    from_head(cx, head, depth)
}

/// The value whose header was just read.
pub(crate) fn from_head(cx: &mut Ctx<'_, '_>, head: Head<'_>, depth: usize) -> Res<Value> {
    Ok(match head {
        Head::Undefined => Value::Undefined,
        Head::Null => Value::Null,
        Head::Bool(b) => Value::Bool(b),
        Head::Int(n) => Value::Int(n),
        Head::UInt(n) => Value::UInt(n),
        Head::Float(f) => Value::Float(f),
        Head::Str(s) => {
            cx.meter.charge(budget::heap(s.len()))?;
            Value::Str(s.to_owned())
        }
        Head::Bin(b) => {
            cx.meter.charge(budget::heap(b.len()))?;
            Value::Bin(b.to_vec())
        }
        Head::Array(n) => Value::Array(array(cx, n, depth)?),
        Head::Map(n) => map(cx, n, depth)?,
        Head::RecordDef(_) | Head::RecordRef(_) => record(cx, head, depth)?,
        Head::CapRef(id) => Value::CapRef(id),
        Head::Typed(kind, bytes) => {
            cx.meter.charge(budget::heap(bytes.len()))?;
            Value::TypedArray(TypedArray {
                kind,
                bytes: bytes.to_vec(),
            })
        }
        Head::Timestamp(t) => Value::Timestamp(t),
        Head::Marker(typ) => marker(cx, typ, depth)?,
    })
}

fn array(cx: &mut Ctx<'_, '_>, n: usize, depth: usize) -> Res<Vec<Value>> {
    let inner = cx.nest(depth)?;
    let cap = cx.plausible(n);
    cx.meter.charge(budget::array(cap))?;
    let mut items = Vec::with_capacity(cap);
    for _ in 0..n {
        items.push(value(cx, inner)?);
    }
    Ok(items)
}

fn map(cx: &mut Ctx<'_, '_>, n: usize, depth: usize) -> Res<Value> {
    let inner = cx.nest(depth)?;
    // Every entry takes at least two bytes.
    let cap = n.min(cx.cur.remaining() / 2);
    cx.meter.charge(budget::map(cap))?;
    let mut entries = Vec::with_capacity(cap);
    for _ in 0..n {
        let k = value(cx, inner)?;
        let v = value(cx, inner)?;
        entries.push((k, v));
    }
    Ok(Value::Map(entries))
}

fn record(cx: &mut Ctx<'_, '_>, head: Head<'_>, depth: usize) -> Res<Value> {
    let (shape, inner) = cx.record_shape(head, depth)?;
    let cap = cx.plausible(shape.len());
    cx.meter.charge(budget::record(cap))?;
    let mut fields = Vec::with_capacity(cap);
    // The keys are the shape's: a copy of a short key, an `Arc` increment for a long one.
    for key in shape.texts() {
        let v = value(cx, inner)?;
        fields.push((key.clone(), v));
    }
    Ok(Value::Record(Record(fields)))
}

/// The item counts a Set (any), Error (name, message, cause?) and RegExp (source, flags)
/// array may have.
pub(crate) fn marker_counts(typ: i8) -> (usize, usize) {
    match typ {
        0x73 => (0, usize::MAX),
        0x65 => (2, 3),
        _ => (2, 2),
    }
}

/// The array that follows a Set/Error/RegExp marker, as an array or a record.
fn marker(cx: &mut Ctx<'_, '_>, typ: i8, depth: usize) -> Res<Value> {
    let (min, max) = marker_counts(typ);
    let inner = cx.nest(depth)?;
    let items = match value(cx, inner)? {
        Value::Array(items) if (min..=max).contains(&items.len()) => items,
        _ => return Err(InvalidExtension(typ)),
    };
    let names: &[&'static str] = match typ {
        0x73 => return Ok(Value::Array(items)),
        0x65 => &["name", "message", "cause"],
        _ => &["source", "flags"],
    };
    cx.meter.charge(budget::record(items.len()))?;
    // A trailing undefined is an Error without a cause.
    let fields = names
        .iter()
        .zip(items)
        .filter(|(name, v)| !(**name == "cause" && v.is_undefined()))
        .map(|(name, v)| (Text::from_static(name), v))
        .collect();
    Ok(Value::Record(Record(fields)))
}
