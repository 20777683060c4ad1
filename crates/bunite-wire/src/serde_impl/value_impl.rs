//! `Serialize` and `Deserialize` for [`Value`] itself, and the generic forms of the special
//! variants (see the parent module's docs).

use std::fmt;

use serde::de::{self, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Deserializer, Serialize};

use super::{magic, stash};
use crate::ids::CapId;
use crate::text::Text;
use crate::value::{Record, Timestamp, TypedArrayKind, Value};

/// The private newtype name of each typed-array kind.
const TYPED_NAMES: [(TypedArrayKind, &str); 13] = [
    (TypedArrayKind::Int8, "$bunite::private::TypedArray::Int8"),
    (TypedArrayKind::Uint8, "$bunite::private::TypedArray::Uint8"),
    (
        TypedArrayKind::Uint8Clamped,
        "$bunite::private::TypedArray::Uint8Clamped",
    ),
    (TypedArrayKind::Int16, "$bunite::private::TypedArray::Int16"),
    (
        TypedArrayKind::Uint16,
        "$bunite::private::TypedArray::Uint16",
    ),
    (TypedArrayKind::Int32, "$bunite::private::TypedArray::Int32"),
    (
        TypedArrayKind::Uint32,
        "$bunite::private::TypedArray::Uint32",
    ),
    (
        TypedArrayKind::Float32,
        "$bunite::private::TypedArray::Float32",
    ),
    (
        TypedArrayKind::Float64,
        "$bunite::private::TypedArray::Float64",
    ),
    (
        TypedArrayKind::BigInt64,
        "$bunite::private::TypedArray::BigInt64",
    ),
    (
        TypedArrayKind::BigUint64,
        "$bunite::private::TypedArray::BigUint64",
    ),
    (
        TypedArrayKind::ArrayBuffer,
        "$bunite::private::TypedArray::ArrayBuffer",
    ),
    (
        TypedArrayKind::DataView,
        "$bunite::private::TypedArray::DataView",
    ),
];

fn typed_name(kind: TypedArrayKind) -> &'static str {
    TYPED_NAMES
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(magic::TYPED_PREFIX, |(_, name)| name)
}

/// The kind whose private newtype name is `name`, if it is one.
pub(crate) fn typed_kind(name: &str) -> Option<TypedArrayKind> {
    if !name.starts_with(magic::TYPED_PREFIX) {
        return None;
    }
    TYPED_NAMES
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(k, _)| *k)
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Undefined => s.serialize_unit(),
            Value::Null => s.serialize_newtype_struct(magic::NULL, &()),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(n) => s.serialize_i64(*n),
            Value::UInt(n) => s.serialize_u64(*n),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Bin(b) => s.serialize_bytes(b),
            Value::Array(items) => s.collect_seq(items),
            Value::Record(r) => {
                let mut map = s.serialize_map(Some(r.len()))?;
                for (k, v) in r.iter() {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Value::Map(entries) => s.serialize_newtype_struct(magic::MAP, &PairsRepr(entries)),
            Value::CapRef(id) => s.serialize_newtype_struct(magic::CAPREF, &CapRefRepr(id.0)),
            Value::TypedArray(t) => {
                s.serialize_newtype_struct(typed_name(t.kind), serde_bytes::Bytes::new(&t.bytes))
            }
            Value::Timestamp(t) => s.serialize_newtype_struct(magic::TIMESTAMP, &TimestampRepr(*t)),
        }
    }
}

struct PairsRepr<'a>(&'a [(Value, Value)]);

impl Serialize for PairsRepr<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// `{"$capref": n}`: what a CapRef looks like to any format but ours.
pub(crate) struct CapRefRepr(pub(crate) u32);

impl Serialize for CapRefRepr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(magic::CAPREF_KEY, &self.0)?;
        map.end()
    }
}

/// `{"$timestamp": [seconds, nanos]}`.
struct TimestampRepr(Timestamp);

impl Serialize for TimestampRepr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(magic::TIMESTAMP_KEY, &(self.0.seconds, self.0.nanos))?;
        map.end()
    }
}

/// Reads a cap id from our deserializer (an integer inside the private newtype) or from any
/// other format (`{"$capref": n}`, or a bare integer).
pub(crate) struct CapRefVisitor;

impl<'de> Visitor<'de> for CapRefVisitor {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a capability reference")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        d.deserialize_any(CapRefVisitor)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<u32, E> {
        u32::try_from(n).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(n), &self))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<u32, E> {
        u32::try_from(n).map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u32, A::Error> {
        match map.next_key::<String>()? {
            Some(k) if k == magic::CAPREF_KEY => {
                let id = map.next_value::<u32>()?;
                if map.next_key::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("extra keys in a capability reference"));
                }
                Ok(id)
            }
            _ => Err(de::Error::invalid_type(de::Unexpected::Map, &self)),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_newtype_struct(magic::VALUE, ValueVisitor)
    }
}

struct ValueVisitor;

/// Size hints come from the peer: never reserve more than this up front.
const MAX_PREALLOC: usize = 4096;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any bunite value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Int(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::uint(n))
    }
    fn visit_i128<E: de::Error>(self, n: i128) -> Result<Value, E> {
        if let Ok(i) = i64::try_from(n) {
            Ok(Value::Int(i))
        } else {
            u64::try_from(n)
                .map(Value::UInt)
                .map_err(|_| E::custom("integer out of the range a bunite value can hold"))
        }
    }
    fn visit_u128<E: de::Error>(self, n: u128) -> Result<Value, E> {
        u64::try_from(n)
            .map(Value::uint)
            .map_err(|_| E::custom("integer out of the range a bunite value can hold"))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::Str(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::Str(s))
    }
    fn visit_bytes<E>(self, b: &[u8]) -> Result<Value, E> {
        Ok(Value::Bin(b.to_vec()))
    }
    fn visit_byte_buf<E>(self, b: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bin(b))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    /// Maps from other formats: a record when every key is a string (a CapRef or Timestamp
    /// for their generic forms), a msgpack map otherwise.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: Vec<(Value, Value)> =
            Vec::with_capacity(map.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        if !entries.iter().all(|(k, _)| matches!(k, Value::Str(_))) {
            return Ok(Value::Map(entries));
        }
        if let Some(special) = generic_special(&entries) {
            return Ok(special);
        }
        let fields = entries
            .into_iter()
            .filter_map(|(k, v)| match k {
                Value::Str(k) => Some((Text::from(k), v)),
                _ => None,
            })
            .collect();
        Ok(Value::Record(Record(fields)))
    }

    /// Only this crate's deserializers call this: the value comes whole (see `stash`).
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (StashTag, variant) = data.variant::<StashTag>()?;
        variant.unit_variant()?;
        stash::take().ok_or_else(|| de::Error::custom("no value handed over"))
    }
}

/// `{"$capref": n}` and `{"$timestamp": [s, n]}` from a format that has no such values.
fn generic_special(entries: &[(Value, Value)]) -> Option<Value> {
    let [(Value::Str(key), v)] = entries else {
        return None;
    };
    match (key.as_str(), v) {
        (magic::CAPREF_KEY, v) => {
            let id = u32::try_from(v.as_integer()?).ok()?;
            Some(Value::CapRef(CapId(id)))
        }
        (magic::TIMESTAMP_KEY, Value::Array(parts)) => match parts.as_slice() {
            [s, n] => {
                let seconds = i64::try_from(s.as_integer()?).ok()?;
                let nanos = u32::try_from(n.as_integer()?)
                    .ok()
                    .filter(|&n| n < 1_000_000_000)?;
                Some(Value::Timestamp(Timestamp { seconds, nanos }))
            }
            _ => None,
        },
        _ => None,
    }
}

/// The one variant name of this crate's deserializers' private protocol.
struct StashTag;

impl<'de> Deserialize<'de> for StashTag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StashTag, D::Error> {
        struct TagVisitor;
        impl Visitor<'_> for TagVisitor {
            type Value = StashTag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a bunite value tag")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StashTag, E> {
                if s == stash::TAG {
                    Ok(StashTag)
                } else {
                    Err(E::unknown_variant(s, &[]))
                }
            }
        }
        d.deserialize_identifier(TagVisitor)
    }
}

impl Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Record {
    /// Accepts a record (or any string-keyed map); anything else is an error.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // What it got is named as serde names it (never the value itself, which may be
        // as long as the message it came in).
        match Value::deserialize(deserializer)? {
            Value::Record(r) => Ok(r),
            other => Err(serde::de::Error::invalid_type(
                super::de::unexpected(&other),
                &"a record",
            )),
        }
    }
}
