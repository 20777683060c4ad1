//! `Deserialize` types out of [`Value`]s, moving strings and bytes instead of copying them.

use serde::de::{
    self, DeserializeSeed, Error as _, IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor,
};

use super::key::KeyDeserializer;
use super::{magic, stash, SerdeError};
use crate::text::Text;
use crate::value::{Record, TypedArray, TypedArrayKind, Value};

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
    /// value is handed over whole (see `stash`), neither rebuilt nor copied.
    pub(crate) fn exact<'de, V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        stash::put(self.value);
        visitor.visit_enum(EnumDeser {
            tag: Text::from_static(stash::TAG),
            payload: None,
        })
    }
}

impl IntoDeserializer<'_, SerdeError> for Value {
    type Deserializer = ValueDeserializer;
    fn into_deserializer(self) -> ValueDeserializer {
        ValueDeserializer::new(self)
    }
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

pub(crate) fn byte_sized(kind: TypedArrayKind) -> bool {
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
    typed_iter(t.kind, &t.bytes).collect()
}

/// The elements of typed-array bytes as numbers, one per element.
pub(crate) fn typed_iter(
    kind: TypedArrayKind,
    bytes: &[u8],
) -> impl ExactSizeIterator<Item = Value> + '_ {
    bytes
        .chunks_exact(kind.element_size())
        .map(move |c| typed_element(kind, c))
}

/// One little-endian element (a chunk of the kind's element size).
fn typed_element(kind: TypedArrayKind, c: &[u8]) -> Value {
    fn le<const N: usize>(c: &[u8]) -> [u8; N] {
        c.try_into().unwrap_or([0; N])
    }
    match kind {
        TypedArrayKind::Int8 => Value::Int(i8::from_le_bytes(le(c)).into()),
        TypedArrayKind::Int16 => Value::Int(i16::from_le_bytes(le(c)).into()),
        TypedArrayKind::Uint16 => Value::Int(u16::from_le_bytes(le(c)).into()),
        TypedArrayKind::Int32 => Value::Int(i32::from_le_bytes(le(c)).into()),
        TypedArrayKind::Uint32 => Value::Int(u32::from_le_bytes(le(c)).into()),
        TypedArrayKind::Float32 => Value::Float(f32::from_le_bytes(le(c)).into()),
        TypedArrayKind::Float64 => Value::Float(f64::from_le_bytes(le(c))),
        TypedArrayKind::BigInt64 => Value::Int(i64::from_le_bytes(le(c))),
        TypedArrayKind::BigUint64 => Value::uint(u64::from_le_bytes(le(c))),
        _ => Value::Int(u8::from_le_bytes(le(c)).into()),
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
pub(crate) fn visit_integral<'de, V: Visitor<'de>>(f: f64, visitor: V) -> Res<V::Value> {
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
                let key = Text::from_static(magic::CAPREF_KEY);
                visit_record(Record(vec![(key, Value::Int(id.0.into()))]), visitor)
            }
            Value::Timestamp(t) => {
                let key = Text::from_static(magic::TIMESTAMP_KEY);
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
            Value::Str(s) => (Text::from(s), None),
            Value::Record(Record(mut fields)) if fields.len() == 1 => match fields.pop() {
                Some((k, v)) => (k, Some(v)),
                None => return Err(SerdeError::custom("empty enum record")),
            },
            other => return Err(SerdeError::invalid_type(unexpected(&other), &visitor)),
        };
        visitor.visit_enum(EnumDeser { tag, payload })
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
    iter: std::vec::IntoIter<(Text, Value)>,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for RecordAccess {
    type Error = SerdeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Res<Option<K::Value>> {
        let Some((k, v)) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some(v);
        seed.deserialize(KeyDeserializer(&k)).map(Some)
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
    pub(crate) tag: Text,
    pub(crate) payload: Option<Value>,
}

impl<'de> de::EnumAccess<'de> for EnumDeser {
    type Error = SerdeError;
    type Variant = VariantDeser;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Res<(S::Value, VariantDeser)> {
        let variant = seed.deserialize(self.tag.as_str().into_deserializer())?;
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
