//! A serde `Deserializer` straight over a payload's msgpack bytes
//! ([`crate::Payload::deserialize`]).
//!
//! It answers every request exactly as [`super::ValueDeserializer`] would answer it for the
//! `Value` these bytes decode to (the lenient reads of the parent module's docs included), so
//! `payload.deserialize::<T>()` and `from_value::<T>(payload.to_value()?)` agree for every
//! `T`; the property tests hold it to that. Each request reads one token and acts on it:
//! records are read with the keys of their shape (a `&str` borrowed from the slot table, no
//! allocation), definitions inside the payload are applied to a private copy of the
//! snapshot, and only what the target keeps is allocated. Rare values with no serde word of
//! their own (CapRef, Timestamp, JS Set / Error / RegExp) are built as a small `Value` and
//! handed to `ValueDeserializer`, which is equivalent by construction.
//!
//! What the target builds is charged to the message's decode budget: the size of each
//! sequence element, map key and map value of the target type (known from the seed), and the
//! length of every string and byte string read.
//!
//! One deliberate difference: strings are offered with `visit_str` (borrowed) where
//! `ValueDeserializer` offers `visit_string` (owned). Every visitor that accepts strings
//! implements `visit_str`, and matching a field name or an enum tag then costs no
//! allocation.

use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Error as _, Unexpected, Visitor};

use super::de::{byte_sized, typed_iter, visit_integral, ValueDeserializer};
use super::raw_access::{EnumRaw, MapRaw, RecordRaw, SeqRaw, ValuesRaw};
use super::{magic, stash, SerdeError};
use crate::codec::budget;
use crate::codec::cursor::{Ctx, Head};
use crate::codec::decode::from_head;
use crate::codec::skip::{skip, Skip};
use crate::codec::DecodeError;
use crate::value::Value;

type Res<T> = Result<T, SerdeError>;

pub(super) fn decode_err(e: DecodeError) -> SerdeError {
    SerdeError::new(format!("payload: {e}"))
}

/// Reads a `T` from `cx` (one value at `depth`, the whole input).
pub(crate) fn from_ctx<T: DeserializeOwned>(mut cx: Ctx<'_, '_>, depth: usize) -> Res<T> {
    let out = read_one(&mut cx, depth, PhantomData::<T>)?;
    if cx.cur.at_end() {
        Ok(out)
    } else {
        Err(decode_err(DecodeError::TrailingBytes))
    }
}

/// Hands one value at `depth` to `seed`; if the seed returned without reading it (a custom
/// visitor may), skips it so the next read starts where it should.
#[inline]
pub(super) fn read_one<'de, S: DeserializeSeed<'de>>(
    cx: &mut Ctx<'_, '_>,
    depth: usize,
    seed: S,
) -> Res<S::Value> {
    let start = cx.cur.pos();
    let out = seed.deserialize(Raw {
        cx: &mut *cx,
        depth,
    })?;
    if cx.cur.pos() == start {
        skip(cx, depth, &mut Skip::quiet()).map_err(decode_err)?;
    }
    Ok(out)
}

/// Charges `n` bytes to the budget.
#[inline]
pub(super) fn charge(cx: &mut Ctx<'_, '_>, n: usize) -> Res<()> {
    cx.meter.charge(n).map_err(decode_err)
}

/// What a token is, for serde's error messages (as `de::unexpected` of its `Value`).
pub(super) fn unexpected<'h>(head: &Head<'h>) -> Unexpected<'h> {
    match *head {
        Head::Undefined => Unexpected::Other("undefined"),
        Head::Null => Unexpected::Unit,
        Head::Bool(b) => Unexpected::Bool(b),
        Head::Int(n) => Unexpected::Signed(n),
        Head::UInt(n) => Unexpected::Unsigned(n),
        Head::Float(f) => Unexpected::Float(f),
        Head::Str(s) => Unexpected::Str(s),
        Head::Bin(b) => Unexpected::Bytes(b),
        Head::Array(_) | Head::Marker(0x73) => Unexpected::Seq,
        Head::Map(_) | Head::RecordDef(_) | Head::RecordRef(_) | Head::Marker(_) => Unexpected::Map,
        Head::CapRef(_) => Unexpected::Other("capability reference"),
        Head::Typed(..) => Unexpected::Other("typed array"),
        Head::Timestamp(_) => Unexpected::Other("timestamp"),
    }
}

/// The deserializer for one value at `depth`.
pub(crate) struct Raw<'r, 'a, 's> {
    pub(super) cx: &'r mut Ctx<'a, 's>,
    pub(super) depth: usize,
}

impl<'a> Raw<'_, 'a, '_> {
    #[inline]
    pub(super) fn head(&mut self) -> Res<Head<'a>> {
        self.cx.cur.head().map_err(decode_err)
    }

    /// The bytes here as a slice of the received message, for a `Blob`: only when they are
    /// at least `Blob::SHARE_MIN` long and at least half of the message (a short blob, or
    /// one beside much else, would keep a buffer far larger than itself), charged as the
    /// copy they replace. Otherwise `None`, and the cursor is where it was.
    fn shared_blob(&mut self) -> Res<Option<bytes::Bytes>> {
        let Some((owner, message)) = self.cx.owner else {
            return Ok(None);
        };
        let start = self.cx.cur.pos();
        if let Head::Bin(b) | Head::Typed(_, b) = self.head()? {
            if b.len() >= crate::Blob::SHARE_MIN && b.len().saturating_mul(2) >= message {
                charge(self.cx, budget::heap(b.len()))?;
                return Ok(Some(owner.slice_ref(b)));
            }
        }
        self.cx.cur.rewind(start);
        Ok(None)
    }

    /// Builds the value whose header was just read and hands it to `ValueDeserializer`.
    fn built(&mut self, head: Head<'_>) -> Res<ValueDeserializer> {
        from_head(self.cx, head, self.depth)
            .map(ValueDeserializer::new)
            .map_err(decode_err)
    }

    /// `deserialize_any` of the value whose header was just read.
    #[inline]
    fn any<'de, V: Visitor<'de>>(mut self, head: Head<'_>, visitor: V) -> Res<V::Value> {
        match head {
            Head::Undefined | Head::Null => visitor.visit_unit(),
            Head::Bool(b) => visitor.visit_bool(b),
            Head::Int(n) => visitor.visit_i64(n),
            Head::UInt(n) => visitor.visit_u64(n),
            Head::Float(f) => visitor.visit_f64(f),
            Head::Str(s) => {
                charge(self.cx, budget::heap(s.len()))?;
                visitor.visit_str(s)
            }
            Head::Bin(b) => self.byte_buf(b, visitor),
            Head::Typed(kind, b) if byte_sized(kind) => self.byte_buf(b, visitor),
            Head::Typed(kind, b) => visit_values(self.cx, typed_iter(kind, b), visitor),
            Head::Array(n) => self.seq(n, visitor),
            Head::Map(n) => self.map(n, visitor),
            Head::RecordDef(_) | Head::RecordRef(_) => self.record(head, visitor),
            Head::CapRef(_) | Head::Timestamp(_) | Head::Marker(_) => {
                de::Deserializer::deserialize_any(self.built(head)?, visitor)
            }
        }
    }

    fn byte_buf<'de, V: Visitor<'de>>(self, b: &[u8], visitor: V) -> Res<V::Value> {
        charge(self.cx, budget::heap(b.len()))?;
        visitor.visit_byte_buf(b.to_vec())
    }

    fn seq<'de, V: Visitor<'de>>(self, n: usize, visitor: V) -> Res<V::Value> {
        let depth = self.cx.nest(self.depth).map_err(decode_err)?;
        let mut access = SeqRaw {
            cx: self.cx,
            depth,
            left: n,
        };
        let out = visitor.visit_seq(&mut access)?;
        if access.left == 0 {
            Ok(out)
        } else {
            Err(SerdeError::invalid_length(n, &"fewer elements in array"))
        }
    }

    fn record<'de, V: Visitor<'de>>(self, head: Head<'_>, visitor: V) -> Res<V::Value> {
        let (shape, depth) = self.cx.record_shape(head, self.depth).map_err(decode_err)?;
        let mut access = RecordRaw {
            cx: self.cx,
            depth,
            keys: &shape,
            next: 0,
            value_pending: false,
        };
        let out = visitor.visit_map(&mut access)?;
        access.skip_rest()?;
        Ok(out)
    }

    fn map<'de, V: Visitor<'de>>(self, n: usize, visitor: V) -> Res<V::Value> {
        let depth = self.cx.nest(self.depth).map_err(decode_err)?;
        let mut access = MapRaw {
            cx: self.cx,
            depth,
            left: n,
            value_pending: false,
        };
        let out = visitor.visit_map(&mut access)?;
        access.skip_rest()?;
        Ok(out)
    }

    /// Reads a header; gives it back (unread) unless it is `undefined` or `null`.
    fn nil(&mut self) -> Res<bool> {
        let start = self.cx.cur.pos();
        let nil = matches!(self.head()?, Head::Undefined | Head::Null);
        if !nil {
            self.cx.cur.rewind(start);
        }
        Ok(nil)
    }
}

/// A sequence of ready-made values (typed-array elements, bytes read as numbers), with
/// `ValueDeserializer`'s check that the visitor took them all.
fn visit_values<'de, V: Visitor<'de>>(
    cx: &mut Ctx<'_, '_>,
    items: impl ExactSizeIterator<Item = Value>,
    visitor: V,
) -> Res<V::Value> {
    let len = items.len();
    let mut access = ValuesRaw { cx, items };
    let out = visitor.visit_seq(&mut access)?;
    if access.items.len() == 0 {
        Ok(out)
    } else {
        Err(SerdeError::invalid_length(len, &"fewer elements in array"))
    }
}

/// Integers: the forms a small integer nearly always takes read in one step (exactly as
/// the general path would read them, `Head::Int`), anything else through [`Raw::head`].
macro_rules! integers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(mut self, visitor: V) -> Res<V::Value> {
            if let Some(n) = self.cx.cur.int() {
                return visitor.visit_i64(n);
            }
            match self.head()? {
                Head::Float(f) => visit_integral(f, visitor),
                head => self.any(head, visitor),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Raw<'_, '_, '_> {
    type Error = SerdeError;

    fn deserialize_any<V: Visitor<'de>>(mut self, visitor: V) -> Res<V::Value> {
        let head = self.head()?;
        self.any(head, visitor)
    }

    integers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    }

    fn deserialize_bytes<V: Visitor<'de>>(mut self, visitor: V) -> Res<V::Value> {
        match self.head()? {
            Head::Bin(b) | Head::Typed(_, b) => self.byte_buf(b, visitor),
            Head::Array(n) => self.seq(n, visitor),
            head => self.any(head, visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(mut self, visitor: V) -> Res<V::Value> {
        match self.head()? {
            Head::Bin(b) => visit_values(self.cx, b.iter().map(|&x| Value::Int(x.into())), visitor),
            Head::Typed(kind, b) => visit_values(self.cx, typed_iter(kind, b), visitor),
            head => self.any(head, visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Res<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Res<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(mut self, visitor: V) -> Res<V::Value> {
        if self.nil()? {
            return visitor.visit_none();
        }
        let depth = self.depth;
        read_one(self.cx, depth, SomeSeed(visitor))
    }

    fn deserialize_unit<V: Visitor<'de>>(mut self, visitor: V) -> Res<V::Value> {
        match self.head()? {
            Head::Undefined | Head::Null => visitor.visit_unit(),
            other => Err(SerdeError::invalid_type(unexpected(&other), &visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Res<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        mut self,
        name: &'static str,
        visitor: V,
    ) -> Res<V::Value> {
        if name == magic::BLOB {
            if let Some(shared) = self.shared_blob()? {
                stash::put_bytes(shared);
                return visitor.visit_str(stash::BYTES_TAG);
            }
            // Any other `Blob` reads as bytes do (below).
        }
        match name {
            // `Value` itself: built with shared keys and handed over whole.
            magic::VALUE => {
                let head = self.head()?;
                self.built(head)?.exact(visitor)
            }
            magic::CAPREF => match self.head()? {
                Head::CapRef(id) => {
                    visitor.visit_newtype_struct(ValueDeserializer::new(Value::Int(id.0.into())))
                }
                // A number is never a capability, whatever a peer claims.
                other => Err(SerdeError::invalid_type(unexpected(&other), &visitor)),
            },
            _ => {
                let depth = self.depth;
                read_one(self.cx, depth, NewtypeSeed(visitor))
            }
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        mut self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Res<V::Value> {
        let head = self.head()?;
        match head {
            Head::Str(tag) => visitor.visit_enum(EnumRaw { tag, payload: None }),
            Head::RecordDef(_) | Head::RecordRef(_) => {
                let (shape, depth) = self.cx.record_shape(head, self.depth).map_err(decode_err)?;
                if shape.len() != 1 {
                    return Err(SerdeError::invalid_type(Unexpected::Map, &visitor));
                }
                let start = self.cx.cur.pos();
                let out = visitor.visit_enum(EnumRaw {
                    tag: shape.key(0),
                    payload: Some(Raw {
                        cx: &mut *self.cx,
                        depth,
                    }),
                })?;
                if self.cx.cur.pos() == start {
                    skip(self.cx, depth, &mut Skip::quiet()).map_err(decode_err)?;
                }
                Ok(out)
            }
            other => Err(SerdeError::invalid_type(unexpected(&other), &visitor)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        skip(self.cx, self.depth, &mut Skip::quiet()).map_err(decode_err)?;
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool f32 f64 char str string map struct identifier
    }
}

/// `visit_some` of a visitor, as a seed (so [`read_one`] can guard it).
struct SomeSeed<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for SomeSeed<V> {
    type Value = V::Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_some(d)
    }
}

/// `visit_newtype_struct` of a visitor, as a seed.
struct NewtypeSeed<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for NewtypeSeed<V> {
    type Value = V::Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.0.visit_newtype_struct(d)
    }
}
