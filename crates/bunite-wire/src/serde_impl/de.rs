//! `Deserialize` types out of [`Value`]s, moving strings and bytes instead of copying them.

use std::borrow::Cow;

use serde::de::{
    self, DeserializeSeed, Error as _, IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor,
};

use super::key::KeyDeserializer;
use super::{magic, SerdeError};
use crate::value::{Record, TypedArray, TypedArrayKind, Value};
use serde::Deserializer as _;

type Res<T> = Result<T, SerdeError>;

/// The serde `Deserializer` that reads a [`Value`]; [`super::from_value`] in the form
/// serde's API wants.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueDeserializer {
    value: Value,
}

impl ValueDeserializer {
    /// A deserializer that consumes `value`.
    pub fn new(value: Value) -> Self {
        ValueDeserializer { value }
    }

    /// The exact protocol between this deserializer and `Value`'s own `Deserialize`: the
    /// variants serde has no word for travel as enum variants only `Value` understands.
    fn exact<'de, V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        let tagged = |tag, payload| EnumDeser {
            tag: Cow::Borrowed(tag),
            payload,
        };
        match self.value {
            Value::Undefined => visitor.visit_enum(tagged("Undefined", None)),
            Value::Null => visitor.visit_unit(),
            Value::Array(items) => visit_array(items, visitor),
            // Plain records go as maps (cheaper, and shallower on the stack); only those that
            // look like the generic form of a CapRef or Timestamp need the tag.
            Value::Record(r) if !looks_generic(&r) => visit_record(r, visitor),
            Value::Record(r) => visitor.visit_enum(tagged("Record", Some(Value::Record(r)))),
            Value::Map(m) => visitor.visit_enum(tagged("Map", Some(Value::Map(m)))),
            Value::CapRef(id) => {
                visitor.visit_enum(tagged("CapRef", Some(Value::Int(id.0.into()))))
            }
            Value::TypedArray(t) => {
                let parts = vec![Value::Int(t.kind.code().into()), Value::Bin(t.bytes)];
                visitor.visit_enum(tagged("TypedArray", Some(Value::Array(parts))))
            }
            Value::Timestamp(t) => {
                let parts = vec![Value::Int(t.seconds), Value::Int(t.nanos.into())];
                visitor.visit_enum(tagged("Timestamp", Some(Value::Array(parts))))
            }
            other => ValueDeserializer::new(other).deserialize_any(visitor),
        }
    }
}

impl IntoDeserializer<'_, SerdeError> for Value {
    type Deserializer = ValueDeserializer;
    fn into_deserializer(self) -> ValueDeserializer {
        ValueDeserializer::new(self)
    }
}

/// A single-key record that `Value`'s `Deserialize` would read as a CapRef or Timestamp.
fn looks_generic(r: &Record) -> bool {
    matches!(r.0.as_slice(), [(k, _)] if k == magic::CAPREF_KEY || k == magic::TIMESTAMP_KEY)
}

/// What a value is, for serde's error messages.
pub(crate) fn unexpected(v: &Value) -> Unexpected<'_> {
    match v {
        Value::Undefined => Unexpected::Other("undefined"),
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Int(n) => Unexpected::Signed(*n),
        Value::UInt(n) => Unexpected::Unsigned(*n),
        Value::Float(f) => Unexpected::Float(*f),
        Value::Str(s) => Unexpected::Str(s),
        Value::Bin(b) => Unexpected::Bytes(b),
        Value::Array(_) => Unexpected::Seq,
        Value::Record(_) | Value::Map(_) => Unexpected::Map,
        Value::CapRef(_) => Unexpected::Other("capability reference"),
        Value::TypedArray(_) => Unexpected::Other("typed array"),
        Value::Timestamp(_) => Unexpected::Other("timestamp"),
    }
}

fn byte_sized(kind: TypedArrayKind) -> bool {
    matches!(
        kind,
        TypedArrayKind::Int8
            | TypedArrayKind::Uint8
            | TypedArrayKind::Uint8Clamped
            | TypedArrayKind::ArrayBuffer
            | TypedArrayKind::DataView
    )
}

/// The elements of a typed array as numbers (its bytes are little-endian).
fn typed_elements(t: &TypedArray) -> Vec<Value> {
    fn each<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> Value) -> Vec<Value> {
        bytes
            .chunks_exact(N)
            .filter_map(|c| c.try_into().ok())
            .map(f)
            .collect()
    }
    let b = &t.bytes;
    match t.kind {
        TypedArrayKind::Int8 => each(b, |[x]| Value::Int(i8::from_le_bytes([x]).into())),
        TypedArrayKind::Int16 => each(b, |x| Value::Int(i16::from_le_bytes(x).into())),
        TypedArrayKind::Uint16 => each(b, |x| Value::Int(u16::from_le_bytes(x).into())),
        TypedArrayKind::Int32 => each(b, |x| Value::Int(i32::from_le_bytes(x).into())),
        TypedArrayKind::Uint32 => each(b, |x| Value::Int(u32::from_le_bytes(x).into())),
        TypedArrayKind::Float32 => each(b, |x| Value::Float(f32::from_le_bytes(x).into())),
        TypedArrayKind::Float64 => each(b, |x| Value::Float(f64::from_le_bytes(x))),
        TypedArrayKind::BigInt64 => each(b, |x| Value::Int(i64::from_le_bytes(x))),
        TypedArrayKind::BigUint64 => each(b, |x| Value::uint(u64::from_le_bytes(x))),
        _ => b.iter().map(|&x| Value::Int(x.into())).collect(),
    }
}

fn visit_array<'de, V: Visitor<'de>>(items: Vec<Value>, visitor: V) -> Res<V::Value> {
    let len = items.len();
    let mut seq = SeqDeser(items.into_iter());
    let out = visitor.visit_seq(&mut seq)?;
    if seq.0.len() == 0 {
        Ok(out)
    } else {
        Err(SerdeError::invalid_length(len, &"fewer elements in array"))
    }
}

fn visit_record<'de, V: Visitor<'de>>(r: Record, visitor: V) -> Res<V::Value> {
    visitor.visit_map(RecordAccess {
        iter: r.0.into_iter(),
        value: None,
    })
}

fn visit_pairs<'de, V: Visitor<'de>>(m: Vec<(Value, Value)>, visitor: V) -> Res<V::Value> {
    visitor.visit_map(PairAccess {
        iter: m.into_iter(),
        value: None,
    })
}

/// An integral float as the smallest visit that holds it, so serde's own range checks
/// apply (overflow is an error, not a wrap).
fn visit_integral<'de, V: Visitor<'de>>(f: f64, visitor: V) -> Res<V::Value> {
    match Value::Float(f).as_integer() {
        Some(n) => match (i64::try_from(n), u64::try_from(n)) {
            (Ok(i), _) => visitor.visit_i64(i),
            (_, Ok(u)) => visitor.visit_u64(u),
            _ => visitor.visit_i128(n),
        },
        None => visitor.visit_f64(f),
    }
}

macro_rules! integers {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
            match self.value {
                Value::Float(f) => visit_integral(f, visitor),
                _ => self.deserialize_any(visitor),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for ValueDeserializer {
    type Error = SerdeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        match self.value {
            Value::Undefined | Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(n) => visitor.visit_i64(n),
            Value::UInt(n) => visitor.visit_u64(n),
            Value::Float(f) => visitor.visit_f64(f),
            Value::Str(s) => visitor.visit_string(s),
            Value::Bin(b) => visitor.visit_byte_buf(b),
            Value::TypedArray(t) if byte_sized(t.kind) => visitor.visit_byte_buf(t.bytes),
            Value::TypedArray(t) => visit_array(typed_elements(&t), visitor),
            Value::Array(items) => visit_array(items, visitor),
            Value::Record(r) => visit_record(r, visitor),
            Value::Map(m) => visit_pairs(m, visitor),
            Value::CapRef(id) => {
                let key = magic::CAPREF_KEY.to_owned();
                visit_record(Record(vec![(key, Value::Int(id.0.into()))]), visitor)
            }
            Value::Timestamp(t) => {
                let key = magic::TIMESTAMP_KEY.to_owned();
                let parts = vec![Value::Int(t.seconds), Value::Int(t.nanos.into())];
                visit_record(Record(vec![(key, Value::Array(parts))]), visitor)
            }
        }
    }

    integers! {
        deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        match self.value {
            Value::Bin(b) => visitor.visit_byte_buf(b),
            Value::TypedArray(t) => visitor.visit_byte_buf(t.bytes),
            Value::Array(items) => visit_array(items, visitor),
            other => ValueDeserializer::new(other).deserialize_any(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        match self.value {
            Value::Bin(b) => visit_array(
                b.into_iter().map(|x| Value::Int(x.into())).collect(),
                visitor,
            ),
            Value::TypedArray(t) => visit_array(typed_elements(&t), visitor),
            other => ValueDeserializer::new(other).deserialize_any(visitor),
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

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        match self.value {
            Value::Undefined | Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        match self.value {
            Value::Undefined | Value::Null => visitor.visit_unit(),
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
        self,
        name: &'static str,
        visitor: V,
    ) -> Res<V::Value> {
        match name {
            magic::VALUE => self.exact(visitor),
            magic::CAPREF => match self.value {
                Value::CapRef(id) => {
                    visitor.visit_newtype_struct(ValueDeserializer::new(Value::Int(id.0.into())))
                }
                // A number is never a capability, whatever a peer claims.
                other => Err(SerdeError::invalid_type(unexpected(&other), &visitor)),
            },
            _ => visitor.visit_newtype_struct(self),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Res<V::Value> {
        let (tag, payload) = match self.value {
            Value::Str(s) => (s, None),
            Value::Record(Record(mut fields)) if fields.len() == 1 => match fields.pop() {
                Some((k, v)) => (k, Some(v)),
                None => return Err(SerdeError::custom("empty enum record")),
            },
            other => return Err(SerdeError::invalid_type(unexpected(&other), &visitor)),
        };
        visitor.visit_enum(EnumDeser {
            tag: Cow::Owned(tag),
            payload,
        })
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool f32 f64 char str string map struct identifier
    }
}

struct SeqDeser(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for SeqDeser {
    type Error = SerdeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Res<Option<T::Value>> {
        self.0
            .next()
            .map(|v| seed.deserialize(ValueDeserializer::new(v)))
            .transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct RecordAccess {
    iter: std::vec::IntoIter<(String, Value)>,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for RecordAccess {
    type Error = SerdeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Res<Option<K::Value>> {
        let Some((k, v)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some(v);
        seed.deserialize(KeyDeserializer(k)).map(Some)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Res<T::Value> {
        let v = self
            .value
            .take()
            .ok_or_else(|| SerdeError::custom("value before key"))?;
        seed.deserialize(ValueDeserializer::new(v))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct PairAccess {
    iter: std::vec::IntoIter<(Value, Value)>,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for PairAccess {
    type Error = SerdeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Res<Option<K::Value>> {
        let Some((k, v)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some(v);
        seed.deserialize(ValueDeserializer::new(k)).map(Some)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Res<T::Value> {
        let v = self
            .value
            .take()
            .ok_or_else(|| SerdeError::custom("value before key"))?;
        seed.deserialize(ValueDeserializer::new(v))
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// An enum as serde sees it: the variant name and its payload, if any.
pub(crate) struct EnumDeser {
    pub(crate) tag: Cow<'static, str>,
    pub(crate) payload: Option<Value>,
}

impl<'de> de::EnumAccess<'de> for EnumDeser {
    type Error = SerdeError;
    type Variant = VariantDeser;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Res<(S::Value, VariantDeser)> {
        let variant = match self.tag {
            Cow::Borrowed(s) => seed.deserialize(s.into_deserializer())?,
            Cow::Owned(s) => seed.deserialize(s.into_deserializer())?,
        };
        Ok((variant, VariantDeser(self.payload)))
    }
}

pub(crate) struct VariantDeser(Option<Value>);

impl<'de> de::VariantAccess<'de> for VariantDeser {
    type Error = SerdeError;

    fn unit_variant(self) -> Res<()> {
        match self.0 {
            None | Some(Value::Undefined | Value::Null) => Ok(()),
            Some(other) => Err(SerdeError::invalid_type(
                unexpected(&other),
                &"unit variant",
            )),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Res<T::Value> {
        match self.0 {
            Some(v) => seed.deserialize(ValueDeserializer::new(v)),
            None => Err(SerdeError::invalid_type(
                Unexpected::UnitVariant,
                &"newtype variant",
            )),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Res<V::Value> {
        match self.0 {
            Some(v) => de::Deserializer::deserialize_seq(ValueDeserializer::new(v), visitor),
            None => Err(SerdeError::invalid_type(
                Unexpected::UnitVariant,
                &"tuple variant",
            )),
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Res<V::Value> {
        match self.0 {
            Some(v) => de::Deserializer::deserialize_any(ValueDeserializer::new(v), visitor),
            None => Err(SerdeError::invalid_type(
                Unexpected::UnitVariant,
                &"struct variant",
            )),
        }
    }
}
