//! Walking over a value without building it: the same validation as the `Value` builder
//! (`decode.rs`), record definitions applied to the slot table in order, and, when asked,
//! the same charges to the decode budget as building it would make, so a frame's check
//! knows what materializing its payload will cost before anything is allocated.

use super::budget;
use super::cursor::{Ctx, Head, Res};
use super::decode::marker_counts;
use super::DecodeError::{self, InvalidExtension};
use crate::ids::CapId;

/// What a skip does besides validating.
pub(crate) struct Skip<'v> {
    /// Charge what building the value would allocate (the frame check). Without it only
    /// record definitions, which really allocate, are charged.
    pub(crate) charge_values: bool,
    /// Collects every CapRef passed.
    pub(crate) caps: Option<&'v mut Vec<CapId>>,
}

impl Skip<'_> {
    /// The frame check: charges as building would.
    pub(crate) fn charging() -> Skip<'static> {
        Skip {
            charge_values: true,
            caps: None,
        }
    }

    /// Passing over a value nobody will build.
    pub(crate) fn quiet() -> Skip<'static> {
        Skip {
            charge_values: false,
            caps: None,
        }
    }

    fn charge(&self, cx: &mut Ctx<'_, '_>, n: usize) -> Res<()> {
        if self.charge_values {
            cx.meter.charge(n)
        } else {
            Ok(())
        }
    }
}

/// Skips one value at `depth`.
///
/// The common tokens are told by their first byte and passed without being decoded
/// (fixed-size scalars, strings checked as UTF-8 without making a `str`, record
/// references); the rest go through [`skip_head`]. The errors are those of reading each
/// token's header, in the same order.
#[inline]
pub(crate) fn skip(cx: &mut Ctx<'_, '_>, depth: usize, how: &mut Skip<'_>) -> Res<()> {
    let Some(b) = cx.cur.peek() else {
        return Err(DecodeError::UnexpectedEof);
    };
    match b {
        0x00..=0x3f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => cx.cur.pass(1),
        0xcc | 0xd0 => cx.cur.pass(2),
        0xcd | 0xd1 => cx.cur.pass(3),
        0xca | 0xce | 0xd2 => cx.cur.pass(5),
        0xcb | 0xcf | 0xd3 => cx.cur.pass(9),
        0xa0..=0xbf | 0xd9..=0xdb => {
            let n = cx.cur.skip_str()?.unwrap_or_default();
            how.charge(cx, budget::heap(n))
        }
        0x40..=0x7f => {
            cx.cur.pass(1)?;
            let inner = cx.nest(depth)?;
            let n = cx.key_count(b)?;
            skip_record(cx, n, inner, how)
        }
        _ => {
            let head = cx.cur.head()?;
            skip_head(cx, head, depth, how)
        }
    }
}

/// The `n` values of a record whose header was just read, at `inner`.
fn skip_record(cx: &mut Ctx<'_, '_>, n: usize, inner: usize, how: &mut Skip<'_>) -> Res<()> {
    let cap = cx.plausible(n);
    how.charge(cx, budget::record(cap))?;
    for _ in 0..n {
        skip(cx, inner, how)?;
    }
    Ok(())
}

/// Skips the value whose header was just read.
pub(crate) fn skip_head(
    cx: &mut Ctx<'_, '_>,
    head: Head<'_>,
    depth: usize,
    how: &mut Skip<'_>,
) -> Res<()> {
    match head {
        Head::Str(s) => how.charge(cx, budget::heap(s.len())),
        Head::Bin(b) | Head::Typed(_, b) => how.charge(cx, budget::heap(b.len())),
        Head::CapRef(id) => {
            if let Some(caps) = how.caps.as_deref_mut() {
                // Charged whatever the mode: this list is really built.
                cx.meter.charge(std::mem::size_of::<CapId>() * 2)?;
                caps.push(id);
            }
            Ok(())
        }
        Head::Array(n) => {
            let inner = cx.nest(depth)?;
            let cap = cx.plausible(n);
            how.charge(cx, budget::array(cap))?;
            for _ in 0..n {
                skip(cx, inner, how)?;
            }
            Ok(())
        }
        Head::Map(n) => {
            let inner = cx.nest(depth)?;
            let cap = n.min(cx.cur.remaining() / 2);
            how.charge(cx, budget::map(cap))?;
            for _ in 0..n {
                skip(cx, inner, how)?;
                skip(cx, inner, how)?;
            }
            Ok(())
        }
        Head::RecordDef(_) | Head::RecordRef(_) => {
            // Only the key count matters here, so a reference takes no clone of the shape.
            let inner = cx.nest(depth)?;
            let n = match head {
                Head::RecordRef(id) => cx.key_count(id)?,
                _ => cx.record_shape(head, depth)?.0.len(),
            };
            skip_record(cx, n, inner, how)
        }
        Head::Marker(typ) => {
            let (min, max) = marker_counts(typ);
            let inner = cx.nest(depth)?;
            let items = cx.cur.head()?;
            skip_head(cx, items, inner, how)?;
            match items {
                Head::Array(n) if (min..=max).contains(&n) => {
                    if typ != 0x73 {
                        // Error and RegExp become records.
                        how.charge(cx, budget::record(n))?;
                    }
                    Ok(())
                }
                _ => Err(InvalidExtension(typ)),
            }
        }
        Head::Undefined
        | Head::Null
        | Head::Bool(_)
        | Head::Int(_)
        | Head::UInt(_)
        | Head::Float(_)
        | Head::Timestamp(_) => Ok(()),
    }
}
