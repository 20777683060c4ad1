//! The serde access types of the raw deserializer (`raw_de.rs`): sequences, records, maps
//! and enums read one element at a time from the bytes, each element charged to the budget.

use std::mem::size_of;

use serde::de::{
    self, DeserializeSeed, Error as _, IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor,
};

use super::de::ValueDeserializer;
use super::key::KeyDeserializer;
use super::raw_de::{charge, decode_err, read_one, unexpected, Raw};
use super::SerdeError;
use crate::codec::cursor::{Ctx, Head};
use crate::codec::skip::{skip, Skip};
use crate::records::SlotKeys;
use crate::value::Value;

type Res<T> = Result<T, SerdeError>;

pub(super) struct SeqRaw<'r, 'a, 's> {
    pub(super) cx: &'r mut Ctx<'a, 's>,
    pub(super) depth: usize,
    pub(super) left: usize,
}

impl<'de> SeqAccess<'de> for SeqRaw<'_, '_, '_> {
    type Error = SerdeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Res<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        charge(self.cx, size_of::<T::Value>())?;
        read_one(self.cx, self.depth, seed).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        // Never more than the input can hold: a hint sizes allocations.
        Some(self.left.min(self.cx.cur.remaining()))
    }
}

pub(super) struct ValuesRaw<'r, 'a, 's, I> {
    pub(super) cx: &'r mut Ctx<'a, 's>,
    pub(super) items: I,
}

impl<'de, I: ExactSizeIterator<Item = Value>> SeqAccess<'de> for ValuesRaw<'_, '_, '_, I> {
    type Error = SerdeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Res<Option<T::Value>> {
        let Some(v) = self.items.next() else {
            return Ok(None);
        };
        charge(self.cx, size_of::<T::Value>())?;
        seed.deserialize(ValueDeserializer::new(v)).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

pub(super) struct RecordRaw<'r, 'a, 's, 'k> {
    pub(super) cx: &'r mut Ctx<'a, 's>,
    pub(super) depth: usize,
    pub(super) keys: &'k SlotKeys,
    pub(super) next: usize,
    pub(super) value_pending: bool,
}

impl RecordRaw<'_, '_, '_, '_> {
    /// Skips the values the visitor did not read (a `ValueDeserializer` simply drops them).
    pub(super) fn skip_rest(&mut self) -> Res<()> {
        let left = self.keys.len().saturating_sub(self.next) + usize::from(self.value_pending);
        for _ in 0..left {
            skip(self.cx, self.depth, &mut Skip::quiet()).map_err(decode_err)?;
        }
        self.next = self.keys.len();
        self.value_pending = false;
        Ok(())
    }
}

impl<'de> MapAccess<'de> for RecordRaw<'_, '_, '_, '_> {
    type Error = SerdeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Res<Option<K::Value>> {
        if self.value_pending {
            // The visitor skipped a value: pass over it, as dropping it would.
            skip(self.cx, self.depth, &mut Skip::quiet()).map_err(decode_err)?;
            self.value_pending = false;
        }
        if self.next >= self.keys.len() {
            return Ok(None);
        }
        let key = self.keys.key(self.next);
        self.next += 1;
        self.value_pending = true;
        charge(self.cx, size_of::<K::Value>().saturating_add(key.len()))?;
        seed.deserialize(KeyDeserializer(key)).map(Some)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Res<T::Value> {
        if !self.value_pending {
            return Err(SerdeError::custom("value before key"));
        }
        self.value_pending = false;
        charge(self.cx, size_of::<T::Value>())?;
        read_one(self.cx, self.depth, seed)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.keys.len().saturating_sub(self.next))
    }
}

pub(super) struct MapRaw<'r, 'a, 's> {
    pub(super) cx: &'r mut Ctx<'a, 's>,
    pub(super) depth: usize,
    pub(super) left: usize,
    pub(super) value_pending: bool,
}

impl MapRaw<'_, '_, '_> {
    pub(super) fn skip_rest(&mut self) -> Res<()> {
        let values = self.left.saturating_mul(2) + usize::from(self.value_pending);
        for _ in 0..values {
            skip(self.cx, self.depth, &mut Skip::quiet()).map_err(decode_err)?;
        }
        self.left = 0;
        self.value_pending = false;
        Ok(())
    }
}

impl<'de> MapAccess<'de> for MapRaw<'_, '_, '_> {
    type Error = SerdeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Res<Option<K::Value>> {
        if self.value_pending {
            skip(self.cx, self.depth, &mut Skip::quiet()).map_err(decode_err)?;
            self.value_pending = false;
        }
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        self.value_pending = true;
        charge(self.cx, size_of::<K::Value>())?;
        read_one(self.cx, self.depth, seed).map(Some)
    }
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Res<T::Value> {
        if !self.value_pending {
            return Err(SerdeError::custom("value before key"));
        }
        self.value_pending = false;
        charge(self.cx, size_of::<T::Value>())?;
        read_one(self.cx, self.depth, seed)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left.min(self.cx.cur.remaining() / 2))
    }
}

/// An enum: a string tag alone, or a one-key record's key and its value.
pub(super) struct EnumRaw<'t, 'r, 'a, 's> {
    pub(super) tag: &'t str,
    pub(super) payload: Option<Raw<'r, 'a, 's>>,
}

impl<'de, 'r, 'a, 's> de::EnumAccess<'de> for EnumRaw<'_, 'r, 'a, 's> {
    type Error = SerdeError;
    type Variant = VariantRaw<'r, 'a, 's>;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Res<(S::Value, Self::Variant)> {
        let variant = seed.deserialize(self.tag.into_deserializer())?;
        Ok((variant, VariantRaw(self.payload)))
    }
}

pub(super) struct VariantRaw<'r, 'a, 's>(Option<Raw<'r, 'a, 's>>);

fn no_payload(what: &'static str) -> SerdeError {
    SerdeError::invalid_type(Unexpected::UnitVariant, &what)
}

impl<'de> de::VariantAccess<'de> for VariantRaw<'_, '_, '_> {
    type Error = SerdeError;

    fn unit_variant(self) -> Res<()> {
        let Some(mut raw) = self.0 else { return Ok(()) };
        match raw.head()? {
            Head::Undefined | Head::Null => Ok(()),
            other => Err(SerdeError::invalid_type(
                unexpected(&other),
                &"unit variant",
            )),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Res<T::Value> {
        let raw = self.0.ok_or_else(|| no_payload("newtype variant"))?;
        read_one(raw.cx, raw.depth, seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Res<V::Value> {
        let raw = self.0.ok_or_else(|| no_payload("tuple variant"))?;
        de::Deserializer::deserialize_seq(raw, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Res<V::Value> {
        let raw = self.0.ok_or_else(|| no_payload("struct variant"))?;
        de::Deserializer::deserialize_any(raw, visitor)
    }
}
