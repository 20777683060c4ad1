//! [`Outgoing`]: a value to send, encoded only when its frame is written.

use std::any::Any;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::Serialize;

use crate::codec::encode::{Res, Stop, Writer};
use crate::serde_impl::{direct, to_value, SerdeError};
use crate::value::Value;

/// A value to send: a [`Value`], or a typed value that is serialized straight into its
/// frame when the frame is encoded ([`crate::Encoder::encode_outgoing_frame_bounded`]).
///
/// The bytes are exactly those of encoding the typed value's [`to_value`], record ids
/// included; what is saved is the `Value` tree in between (a record's field vector, a
/// string's or a binary's copy) and the time to build and drop it. A typed value that does
/// not serialize fails when its frame is encoded, with the error [`to_value`] gives.
///
/// ```
/// use bunite_wire::{to_value, CallId, Encoder, Frame, Outgoing, ResultFrame};
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct Point {
///     x: i32,
///     y: i32,
/// }
///
/// fn frame<P>(value: P) -> Frame<P> {
///     Frame::Result(ResultFrame { id: CallId(1), outcome: Ok(value) })
/// }
/// let mut direct = Vec::new();
/// Encoder::new().encode_outgoing_frame_bounded(
///     &frame(Outgoing::typed(Point { x: 1, y: 2 })),
///     usize::MAX,
///     &mut direct,
/// )?;
/// let mut via_value = Vec::new();
/// Encoder::new().encode_frame(&frame(to_value(&Point { x: 1, y: 2 })?), &mut via_value);
/// assert_eq!(direct, via_value);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Outgoing(Inner);

enum Inner {
    Value(Value),
    Typed(Box<dyn Typed + Send>),
}

/// A `Serialize` type, object-safe: written directly, or as its `Value`.
trait Typed {
    fn direct(&self, w: &mut Writer<'_>) -> Result<(), direct::Fallback>;
    fn to_value(&self) -> Result<Value, SerdeError>;
}

impl<T: Serialize> Typed for T {
    fn direct(&self, w: &mut Writer<'_>) -> Result<(), direct::Fallback> {
        direct::write(w, self)
    }

    fn to_value(&self) -> Result<Value, SerdeError> {
        to_value(self)
    }
}

impl Outgoing {
    /// A value already built.
    pub fn value(v: Value) -> Outgoing {
        Outgoing(Inner::Value(v))
    }

    /// A typed value, serialized when its frame is written.
    ///
    /// A few types become their [`Value`] at once instead, since that costs no more than
    /// boxing them: a `Value` itself, scalars, and `String` and [`serde_bytes::ByteBuf`],
    /// whose buffers are moved into the value, not copied.
    pub fn typed<T: Serialize + Send + 'static>(v: T) -> Outgoing {
        match taken(v) {
            Ok(value) => Outgoing::value(value),
            Err(v) => Outgoing(Inner::Typed(Box::new(v))),
        }
    }

    /// The value as a [`Value`] (serializing a typed one).
    pub fn to_value(&self) -> Result<Value, SerdeError> {
        match &self.0 {
            Inner::Value(v) => Ok(v.clone()),
            Inner::Typed(t) => t.to_value(),
        }
    }

    /// The value as a [`Value`] (serializing a typed one), without a copy of a built one.
    pub fn into_value(self) -> Result<Value, SerdeError> {
        match self.0 {
            Inner::Value(v) => Ok(v),
            Inner::Typed(t) => t.to_value(),
        }
    }

    /// The value borrowed, to be written where it is.
    pub fn by_ref(&self) -> OutgoingRef<'_> {
        match &self.0 {
            Inner::Value(v) => OutgoingRef(RefInner::Value(v)),
            Inner::Typed(t) => OutgoingRef(RefInner::Typed(&**t)),
        }
    }
}

/// A value to send, borrowed: a [`Value`], or a typed value where it lives, serialized
/// straight into its frame as an [`Outgoing`] is. For a caller that keeps the value in an
/// allocation of its own (say, beside the rest of a request) instead of boxing it into an
/// [`Outgoing`]; frames carry it through [`AsOutgoing`].
///
/// ```
/// use bunite_wire::{CallId, Encoder, Frame, Outgoing, OutgoingRef, ResultFrame};
///
/// fn frame<P>(payload: P) -> Frame<P> {
///     Frame::Result(ResultFrame { id: CallId(1), outcome: Ok(payload) })
/// }
/// let value = (1, "two");
/// let (mut borrowed, mut boxed) = (Vec::new(), Vec::new());
/// Encoder::new().encode_outgoing_frame_bounded(
///     &frame(OutgoingRef::typed(&value)),
///     usize::MAX,
///     &mut borrowed,
/// )?;
/// Encoder::new().encode_outgoing_frame_bounded(
///     &frame(Outgoing::typed(value)),
///     usize::MAX,
///     &mut boxed,
/// )?;
/// assert_eq!(borrowed, boxed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy)]
pub struct OutgoingRef<'a>(RefInner<'a>);

#[derive(Clone, Copy)]
enum RefInner<'a> {
    Value(&'a Value),
    Typed(&'a dyn Typed),
}

impl<'a> OutgoingRef<'a> {
    /// A value already built.
    pub fn value(v: &'a Value) -> OutgoingRef<'a> {
        OutgoingRef(RefInner::Value(v))
    }

    /// A typed value, serialized when its frame is written (as [`Outgoing::typed`]'s).
    pub fn typed<T: Serialize>(v: &'a T) -> OutgoingRef<'a> {
        OutgoingRef(RefInner::Typed(v))
    }

    /// The value as a [`Value`] (serializing a typed one).
    pub fn to_value(self) -> Result<Value, SerdeError> {
        match self.0 {
            RefInner::Value(v) => Ok(v.clone()),
            RefInner::Typed(t) => t.to_value(),
        }
    }

    /// Writes the value: a typed one directly, or, when that gives up, as its `Value`
    /// after undoing what the attempt wrote (see `serde_impl::direct`).
    ///
    /// A typed value's `Serialize` is the caller's code running inside the encoder: if it
    /// panics, what it wrote is undone and the value fails to serialize, so the panic costs
    /// this one frame, not the encoder (or the connection) it ran in.
    pub(crate) fn write(self, w: &mut Writer<'_>) -> Res {
        match self.0 {
            RefInner::Value(v) => w.value(v),
            RefInner::Typed(t) => {
                let mark = w.mark();
                let attempt = catch_unwind(AssertUnwindSafe(|| {
                    if t.direct(w).is_ok() {
                        return Ok(None);
                    }
                    w.undo(mark);
                    t.to_value().map(Some)
                }));
                match attempt {
                    Ok(Ok(None)) => Ok(()),
                    Ok(Ok(Some(v))) => w.value(&v),
                    Ok(Err(e)) => Err(Stop::Serialize(Box::new(e))),
                    Err(_panic) => {
                        w.undo(mark);
                        Err(Stop::Serialize(Box::new(SerdeError::new(
                            "the value panicked while serializing",
                        ))))
                    }
                }
            }
        }
    }
}

/// A frame payload that can be written as an outgoing value: [`Outgoing`], [`OutgoingRef`],
/// or a type of the caller's that holds one of those or a typed value
/// ([`Encoder::encode_outgoing_frame_bounded`](crate::Encoder::encode_outgoing_frame_bounded)).
pub trait AsOutgoing {
    /// The value to write.
    fn as_outgoing(&self) -> OutgoingRef<'_>;
}

impl AsOutgoing for Outgoing {
    #[inline]
    fn as_outgoing(&self) -> OutgoingRef<'_> {
        self.by_ref()
    }
}

impl AsOutgoing for OutgoingRef<'_> {
    #[inline]
    fn as_outgoing(&self) -> OutgoingRef<'_> {
        *self
    }
}

/// [`to_value`] taking the value: a `String`'s or a [`serde_bytes::ByteBuf`]'s buffer is
/// moved into the [`Value`], not copied (and a `Value` is returned as it is).
pub fn into_value<T: Serialize + 'static>(v: T) -> Result<Value, SerdeError> {
    match taken(v) {
        Ok(value) => Ok(value),
        Err(v) => to_value(&v),
    }
}

/// `v` as its [`Value`] when that is a move or a copy of a scalar (the types named on
/// [`Outgoing::typed`]); otherwise `v` back. Which applies is known at compile time for
/// each `T`.
fn taken<T: 'static>(v: T) -> Result<Value, T> {
    // Held in an `Option` so that `Any` can take a value out without a box.
    let mut held = Some(v);
    let any = &mut held as &mut dyn Any;
    let value = if let Some(v) = any.downcast_mut::<Option<Value>>() {
        v.take()
    } else if let Some(s) = any.downcast_mut::<Option<String>>() {
        s.take().map(Value::Str)
    } else if let Some(b) = any.downcast_mut::<Option<serde_bytes::ByteBuf>>() {
        b.take().map(|b| Value::Bin(b.into_vec()))
    } else if let Some(n) = any.downcast_mut::<Option<u64>>() {
        n.map(Value::uint)
    } else if let Some(n) = any.downcast_mut::<Option<i64>>() {
        n.map(Value::Int)
    } else if let Some(n) = any.downcast_mut::<Option<u32>>() {
        n.map(|n| Value::Int(n.into()))
    } else if let Some(n) = any.downcast_mut::<Option<i32>>() {
        n.map(|n| Value::Int(n.into()))
    } else if let Some(f) = any.downcast_mut::<Option<f64>>() {
        f.map(Value::Float)
    } else if let Some(b) = any.downcast_mut::<Option<bool>>() {
        b.map(Value::Bool)
    } else if any.downcast_mut::<Option<()>>().is_some() {
        Some(Value::Undefined)
    } else {
        None
    };
    match (value, held) {
        (Some(value), _) => Ok(value),
        (None, Some(v)) => Err(v),
        // Never: `held` is emptied only by a branch that made a value.
        (None, None) => Ok(Value::Undefined),
    }
}

impl From<Value> for Outgoing {
    fn from(v: Value) -> Self {
        Outgoing::value(v)
    }
}

impl fmt::Debug for OutgoingRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            RefInner::Value(v) => f.debug_tuple("OutgoingRef").field(v).finish(),
            RefInner::Typed(_) => f.write_str("OutgoingRef(<typed>)"),
        }
    }
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Value(v) => f.debug_tuple("Outgoing").field(v).finish(),
            Inner::Typed(_) => f.write_str("Outgoing(<typed>)"),
        }
    }
}
