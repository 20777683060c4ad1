//! `Serialize` types into [`Value`]s.

use serde::ser::{self, Serialize};

use super::{magic, value_impl, SerdeError};
use crate::ids::CapId;
use crate::text::Text;
use crate::value::{Record, Timestamp, TypedArray, Value};

type Res = Result<Value, SerdeError>;

/// The serde `Serializer` whose output is a [`Value`]; [`super::to_value`] in the form
/// serde's API wants.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValueSerializer;

fn err(msg: &str) -> SerdeError {
    SerdeError::new(msg)
}

impl ser::Serializer for ValueSerializer {
    type Ok = Value;
    type Error = SerdeError;
    type SerializeSeq = SeqSer;
    type SerializeTuple = SeqSer;
    type SerializeTupleStruct = SeqSer;
    type SerializeTupleVariant = VariantSer<SeqSer>;
    type SerializeMap = MapSer;
    type SerializeStruct = StructSer;
    type SerializeStructVariant = VariantSer<StructSer>;

    fn serialize_bool(self, v: bool) -> Res {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Res {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Res {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Res {
        Ok(Value::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Res {
        Ok(Value::Int(v))
    }
    fn serialize_i128(self, v: i128) -> Res {
        if let Ok(i) = i64::try_from(v) {
            Ok(Value::Int(i))
        } else if let Ok(u) = u64::try_from(v) {
            Ok(Value::UInt(u))
        } else {
            Err(err("i128 out of the range a bunite value can hold"))
        }
    }
    fn serialize_u8(self, v: u8) -> Res {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Res {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Res {
        Ok(Value::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Res {
        Ok(Value::uint(v))
    }
    fn serialize_u128(self, v: u128) -> Res {
        u64::try_from(v)
            .map(Value::uint)
            .map_err(|_| err("u128 out of the range a bunite value can hold"))
    }
    fn serialize_f32(self, v: f32) -> Res {
        Ok(Value::Float(v.into()))
    }
    fn serialize_f64(self, v: f64) -> Res {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Res {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Res {
        Ok(Value::Str(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Res {
        Ok(Value::Bin(v.to_vec()))
    }
    fn serialize_none(self) -> Res {
        Ok(Value::Undefined)
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Res {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Res {
        Ok(Value::Undefined)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Res {
        Ok(Value::Undefined)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Res {
        Ok(Value::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, name: &'static str, value: &T) -> Res {
        if !name.starts_with("$bunite::private::") {
            return value.serialize(self);
        }
        magic_newtype(name, value.serialize(self)?)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Res {
        let payload = value.serialize(self)?;
        Ok(Value::Record(Record(vec![(
            Text::from_static(variant),
            payload,
        )])))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer, SerdeError> {
        Ok(SeqSer(Vec::with_capacity(capacity(len))))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer, SerdeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqSer, SerdeError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantSer<SeqSer>, SerdeError> {
        Ok(VariantSer {
            variant,
            inner: SeqSer(Vec::with_capacity(capacity(Some(len)))),
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapSer, SerdeError> {
        Ok(MapSer {
            entries: Vec::with_capacity(capacity(len)),
            key: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<StructSer, SerdeError> {
        Ok(StructSer(Vec::with_capacity(capacity(Some(len)))))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantSer<StructSer>, SerdeError> {
        Ok(VariantSer {
            variant,
            inner: StructSer(Vec::with_capacity(capacity(Some(len)))),
        })
    }
}

/// A size hint is only a hint: cap what it may reserve up front.
fn capacity(len: Option<usize>) -> usize {
    len.unwrap_or(0).min(4096)
}

/// The newtypes of [`super::magic`], already serialized to their generic form.
fn magic_newtype(name: &'static str, inner: Value) -> Res {
    let single = |inner: Value, key: &str| match inner {
        Value::Record(Record(mut fields)) if matches!(fields.as_slice(), [(k, _)] if k == key) => {
            fields.pop().map(|(_, v)| v)
        }
        _ => None,
    };
    match name {
        magic::NULL => Ok(Value::Null),
        magic::CAPREF => single(inner, magic::CAPREF_KEY)
            .and_then(|v| u32::try_from(v.as_integer()?).ok())
            .map(|id| Value::CapRef(CapId(id)))
            .ok_or_else(|| err("malformed capability reference")),
        magic::TIMESTAMP => match single(inner, magic::TIMESTAMP_KEY) {
            Some(Value::Array(parts)) => match parts.as_slice() {
                [Value::Int(seconds), Value::Int(nanos)] => Ok(Value::Timestamp(Timestamp {
                    seconds: *seconds,
                    nanos: u32::try_from(*nanos).map_err(|_| err("malformed timestamp"))?,
                })),
                _ => Err(err("malformed timestamp")),
            },
            _ => Err(err("malformed timestamp")),
        },
        magic::MAP => match inner {
            Value::Map(entries) => Ok(Value::Map(entries)),
            Value::Record(Record(fields)) => Ok(Value::Map(
                fields
                    .into_iter()
                    .map(|(k, v)| (Value::Str(k.into()), v))
                    .collect(),
            )),
            _ => Err(err("malformed map")),
        },
        _ => match (value_impl::typed_kind(name), inner) {
            (Some(kind), Value::Bin(bytes)) => Ok(Value::TypedArray(TypedArray { kind, bytes })),
            (Some(_), _) => Err(err("malformed typed array")),
            // Not one of ours after all: an ordinary newtype.
            (None, inner) => Ok(inner),
        },
    }
}

/// Sequences, tuples and tuple structs.
#[derive(Debug)]
pub struct SeqSer(Vec<Value>);

impl SeqSer {
    fn push<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), SerdeError> {
        self.0.push(value.serialize(ValueSerializer)?);
        Ok(())
    }
}

impl ser::SerializeSeq for SeqSer {
    type Ok = Value;
    type Error = SerdeError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), SerdeError> {
        self.push(value)
    }
    fn end(self) -> Res {
        Ok(Value::Array(self.0))
    }
}

impl ser::SerializeTuple for SeqSer {
    type Ok = Value;
    type Error = SerdeError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), SerdeError> {
        self.push(value)
    }
    fn end(self) -> Res {
        Ok(Value::Array(self.0))
    }
}

impl ser::SerializeTupleStruct for SeqSer {
    type Ok = Value;
    type Error = SerdeError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), SerdeError> {
        self.push(value)
    }
    fn end(self) -> Res {
        Ok(Value::Array(self.0))
    }
}

/// Maps: a record when every key is a string, a msgpack map otherwise.
#[derive(Debug)]
pub struct MapSer {
    entries: Vec<(Value, Value)>,
    key: Option<Value>,
}

impl ser::SerializeMap for MapSer {
    type Ok = Value;
    type Error = SerdeError;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), SerdeError> {
        self.key = Some(key.serialize(ValueSerializer)?);
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), SerdeError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| err("map value without a key"))?;
        self.entries.push((key, value.serialize(ValueSerializer)?));
        Ok(())
    }
    fn end(self) -> Res {
        if !self.entries.iter().all(|(k, _)| matches!(k, Value::Str(_))) {
            return Ok(Value::Map(self.entries));
        }
        // A struct's field and a `#[serde(flatten)]` map may both hold a key: a record with
        // it twice is one a decoder refuses (ours, as a protocol error) or reads its own way
        // (a JS object keeps the last), so it is not made.
        let keys = self.entries.iter().map(|(k, _)| match k {
            Value::Str(k) => k.as_str(),
            _ => "",
        });
        if let Some(key) = crate::codec::cursor::repeated(keys) {
            return Err(SerdeError::capped(format_args!(
                "the map has the key {key:?} twice"
            )));
        }
        let fields = self
            .entries
            .into_iter()
            .filter_map(|(k, v)| match k {
                Value::Str(k) => Some((Text::from(k), v)),
                _ => None,
            })
            .collect();
        Ok(Value::Record(Record(fields)))
    }
}

/// Structs: a record in field order.
#[derive(Debug)]
pub struct StructSer(Vec<(Text, Value)>);

impl ser::SerializeStruct for StructSer {
    type Ok = Value;
    type Error = SerdeError;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), SerdeError> {
        // Field names are static: the key costs no allocation.
        self.0
            .push((Text::from_static(key), value.serialize(ValueSerializer)?));
        Ok(())
    }
    fn end(self) -> Res {
        Ok(Value::Record(Record(self.0)))
    }
}

/// Tuple and struct variants: `{Variant: payload}`.
#[derive(Debug)]
pub struct VariantSer<T> {
    variant: &'static str,
    inner: T,
}

impl VariantSer<SeqSer> {
    fn finish(self) -> Res {
        let payload = Value::Array(self.inner.0);
        Ok(Value::Record(Record(vec![(
            Text::from_static(self.variant),
            payload,
        )])))
    }
}

impl ser::SerializeTupleVariant for VariantSer<SeqSer> {
    type Ok = Value;
    type Error = SerdeError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), SerdeError> {
        self.inner.push(value)
    }
    fn end(self) -> Res {
        self.finish()
    }
}

impl ser::SerializeStructVariant for VariantSer<StructSer> {
    type Ok = Value;
    type Error = SerdeError;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), SerdeError> {
        ser::SerializeStruct::serialize_field(&mut self.inner, key, value)
    }
    fn end(self) -> Res {
        let payload = Value::Record(Record(self.inner.0));
        Ok(Value::Record(Record(vec![(
            Text::from_static(self.variant),
            payload,
        )])))
    }
}
