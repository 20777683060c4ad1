//! `Serialize` types written straight into a frame, without a [`Value`] in between (see
//! [`crate::Outgoing`]).
//!
//! The bytes must be exactly those of encoding [`super::to_value`]'s result, record ids
//! included: a record's shape is resolved, and defined if new, before any of its values are
//! written (outer before inner, as msgpackr does). serde names a struct's keys one field at
//! a time, after its header would have to be written, so the keys of each struct are learned
//! the first time it is serialized and kept per (name, field count) in [`StructKeys`]:
//!
//! - **Known struct**: the header is written from the learned keys, and each field's key is
//!   checked against them as it comes.
//! - **New struct** (or one evicted from the table): it is collected into a `Value` by
//!   [`super::ValueSerializer`] and written whole at its end (nothing of it is written
//!   before, so ids stay in order), and its keys are learned.
//! - Maps, sequences of unknown length and the private newtypes (CapRef, Null, Map,
//!   Timestamp, typed arrays) are collected the same way: their keys or form are known only
//!   at their end.
//!
//! Anything unexpected (a field whose key is not the learned one, a different number of
//! fields or items than announced, a serialization error, the output passing its limit)
//! stops with [`Fallback`]; the caller then undoes what was written (bytes and shape ring)
//! and encodes the value's `Value` instead, so errors and sizes are exactly the `Value`
//! path's.

use std::sync::Arc;

use serde::ser::{self, Serialize, SerializeSeq, SerializeStruct, Serializer as _};

use super::ser::{MapSer, SeqSer, StructSer};
use super::ValueSerializer;
use crate::codec::encode::{Res, Writer};
use crate::records::KeyRef;
use crate::value::Value;

/// Direct writing gave up; encode the value's `Value` instead (see the module docs).
#[derive(Debug)]
pub(crate) struct Fallback;

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("direct encoding fell back")
    }
}

impl std::error::Error for Fallback {}

impl ser::Error for Fallback {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        Fallback
    }
}

type R = Result<(), Fallback>;

#[inline]
fn ok(r: Res) -> R {
    r.map_err(|_| Fallback)
}

/// Slots in [`StructKeys`]: a connection's typed values rarely have more struct shapes.
const SLOTS: usize = 64;

/// The keys of each struct serialized so far, by (name, field count): a direct-mapped table
/// of [`SLOTS`] entries, a newcomer replacing whatever held its slot. Names are compared by
/// address and length, so two structs of one name in different modules may share an
/// entry; the key check then sends the other one down the `Value` path, never wrong bytes.
/// The table is allocated with the first struct learned: an encoder that never sends a
/// typed struct (most idle connections) holds nothing.
#[derive(Debug, Default)]
pub(crate) struct StructKeys {
    slots: Vec<Option<Learned>>,
}

#[derive(Debug)]
struct Learned {
    name: &'static str,
    fields: usize,
    /// Shared with the struct being written, so that learning another struct into this
    /// slot meanwhile cannot pull the keys from under it.
    keys: Arc<[&'static str]>,
}

impl StructKeys {
    #[inline]
    fn slot(name: &'static str, fields: usize) -> usize {
        let h = (name.as_ptr() as usize ^ name.len().rotate_left(16) ^ fields.rotate_left(32))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15_u64 as usize);
        (h >> 20) % SLOTS
    }

    #[inline]
    fn get(&self, name: &'static str, fields: usize) -> Option<Arc<[&'static str]>> {
        match self.slots.get(Self::slot(name, fields)) {
            Some(Some(l)) if std::ptr::eq(l.name, name) && l.fields == fields => {
                Some(Arc::clone(&l.keys))
            }
            _ => None,
        }
    }

    /// The keys learned for a struct of this name (compared by content) and field count.
    #[cfg(test)]
    fn find(&self, name: &str, fields: usize) -> Option<Arc<[&'static str]>> {
        self.slots
            .iter()
            .flatten()
            .find(|l| l.name == name && l.fields == fields)
            .map(|l| Arc::clone(&l.keys))
    }

    fn learn(&mut self, name: &'static str, keys: Vec<&'static str>) {
        if self.slots.is_empty() {
            self.slots.resize_with(SLOTS, || None);
        }
        let fields = keys.len();
        if let Some(slot) = self.slots.get_mut(Self::slot(name, fields)) {
            *slot = Some(Learned {
                name,
                fields,
                keys: keys.into(),
            });
        }
    }
}

/// Writes one value straight into `w` (see the module docs).
pub(crate) fn write<T: Serialize + ?Sized>(w: &mut Writer<'_>, value: &T) -> R {
    value.serialize(Direct { w })
}

/// The serializer; one per value, borrowing the frame's writer.
pub(crate) struct Direct<'w, 'a> {
    w: &'w mut Writer<'a>,
}

impl<'w, 'a> Direct<'w, 'a> {
    /// Writes a value collected by the `Value` serializer.
    fn collected(self, v: Result<Value, super::SerdeError>) -> R {
        ok(self.w.value(&v.map_err(|_| Fallback)?))
    }
}

impl<'w, 'a> ser::Serializer for Direct<'w, 'a> {
    type Ok = ();
    type Error = Fallback;
    type SerializeSeq = Seq<'w, 'a>;
    type SerializeTuple = Seq<'w, 'a>;
    type SerializeTupleStruct = Seq<'w, 'a>;
    type SerializeTupleVariant = Seq<'w, 'a>;
    type SerializeMap = Map<'w, 'a>;
    type SerializeStruct = Struct<'w, 'a>;
    type SerializeStructVariant = Struct<'w, 'a>;

    fn serialize_bool(self, v: bool) -> R {
        ok(self.w.bool_v(v))
    }
    fn serialize_i8(self, v: i8) -> R {
        ok(self.w.int_v(v.into()))
    }
    fn serialize_i16(self, v: i16) -> R {
        ok(self.w.int_v(v.into()))
    }
    fn serialize_i32(self, v: i32) -> R {
        ok(self.w.int_v(v.into()))
    }
    fn serialize_i64(self, v: i64) -> R {
        ok(self.w.int_v(v))
    }
    fn serialize_i128(self, v: i128) -> R {
        if let Ok(i) = i64::try_from(v) {
            ok(self.w.int_v(i))
        } else if let Ok(u) = u64::try_from(v) {
            ok(self.w.uint_v(u))
        } else {
            Err(Fallback)
        }
    }
    fn serialize_u8(self, v: u8) -> R {
        ok(self.w.int_v(v.into()))
    }
    fn serialize_u16(self, v: u16) -> R {
        ok(self.w.int_v(v.into()))
    }
    fn serialize_u32(self, v: u32) -> R {
        ok(self.w.int_v(v.into()))
    }
    fn serialize_u64(self, v: u64) -> R {
        ok(self.w.uint_v(v))
    }
    fn serialize_u128(self, v: u128) -> R {
        let v = u64::try_from(v).map_err(|_| Fallback)?;
        ok(self.w.uint_v(v))
    }
    fn serialize_f32(self, v: f32) -> R {
        ok(self.w.float_v(v.into()))
    }
    fn serialize_f64(self, v: f64) -> R {
        ok(self.w.float_v(v))
    }
    fn serialize_char(self, v: char) -> R {
        ok(self.w.str_v(v.encode_utf8(&mut [0; 4])))
    }
    fn serialize_str(self, v: &str) -> R {
        ok(self.w.str_v(v))
    }
    fn serialize_bytes(self, v: &[u8]) -> R {
        ok(self.w.bin_v(v))
    }
    fn serialize_none(self) -> R {
        ok(self.w.undefined_v())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        ok(self.w.undefined_v())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> R {
        ok(self.w.undefined_v())
    }
    fn serialize_unit_variant(self, _name: &'static str, _index: u32, variant: &'static str) -> R {
        ok(self.w.str_v(variant))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, name: &'static str, value: &T) -> R {
        if name.starts_with("$bunite::private::") {
            let v = ser::Serializer::serialize_newtype_struct(ValueSerializer, name, value);
            return self.collected(v);
        }
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> R {
        ok(self.w.record_header([KeyRef::Static(variant)].into_iter()))?;
        value.serialize(Direct { w: &mut *self.w })?;
        ok(self.w.end())
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Seq<'w, 'a>, Fallback> {
        match len {
            Some(n) => {
                ok(self.w.array_header(n))?;
                Ok(Seq::Direct {
                    w: self.w,
                    left: n,
                    variant: false,
                })
            }
            None => Ok(Seq::Collect {
                w: self.w,
                inner: ValueSerializer.serialize_seq(None).map_err(|_| Fallback)?,
            }),
        }
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'w, 'a>, Fallback> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Seq<'w, 'a>, Fallback> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Seq<'w, 'a>, Fallback> {
        ok(self.w.record_header([KeyRef::Static(variant)].into_iter()))?;
        ok(self.w.array_header(len))?;
        Ok(Seq::Direct {
            w: self.w,
            left: len,
            variant: true,
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Map<'w, 'a>, Fallback> {
        Ok(Map {
            w: self.w,
            inner: ValueSerializer.serialize_map(len).map_err(|_| Fallback)?,
        })
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Struct<'w, 'a>, Fallback> {
        Struct::open(self.w, name, len, false)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Struct<'w, 'a>, Fallback> {
        ok(self.w.record_header([KeyRef::Static(variant)].into_iter()))?;
        // The variant's name stands for the struct's: the fields are the variant's.
        Struct::open(self.w, variant, len, true)
    }
}

/// Sequences, tuples, tuple structs and tuple variants.
pub(crate) enum Seq<'w, 'a> {
    /// The array header is written; `left` items are still to come.
    Direct {
        w: &'w mut Writer<'a>,
        left: usize,
        /// A tuple variant: the `{Variant: [...]}` record closes after the array.
        variant: bool,
    },
    /// Length unknown at the start: collected, written at the end.
    Collect {
        w: &'w mut Writer<'a>,
        inner: SeqSer,
    },
}

impl Seq<'_, '_> {
    fn item<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        match self {
            Seq::Direct { w, left, .. } => {
                *left = left.checked_sub(1).ok_or(Fallback)?;
                value.serialize(Direct { w })
            }
            Seq::Collect { inner, .. } => inner.serialize_element(value).map_err(|_| Fallback),
        }
    }

    fn finish(self) -> R {
        match self {
            Seq::Direct { w, left, variant } => {
                if left != 0 {
                    return Err(Fallback);
                }
                ok(w.end())?;
                if variant {
                    ok(w.end())?;
                }
                Ok(())
            }
            Seq::Collect { w, inner } => Direct { w }.collected(inner.end()),
        }
    }
}

impl ser::SerializeSeq for Seq<'_, '_> {
    type Ok = ();
    type Error = Fallback;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        self.item(value)
    }
    fn end(self) -> R {
        self.finish()
    }
}

impl ser::SerializeTuple for Seq<'_, '_> {
    type Ok = ();
    type Error = Fallback;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        self.item(value)
    }
    fn end(self) -> R {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Seq<'_, '_> {
    type Ok = ();
    type Error = Fallback;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        self.item(value)
    }
    fn end(self) -> R {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Seq<'_, '_> {
    type Ok = ();
    type Error = Fallback;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        self.item(value)
    }
    fn end(self) -> R {
        self.finish()
    }
}

/// Maps: collected (a record or a map, decided by their keys), written at the end.
pub(crate) struct Map<'w, 'a> {
    w: &'w mut Writer<'a>,
    inner: MapSer,
}

impl ser::SerializeMap for Map<'_, '_> {
    type Ok = ();
    type Error = Fallback;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> R {
        self.inner.serialize_key(key).map_err(|_| Fallback)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        self.inner.serialize_value(value).map_err(|_| Fallback)
    }
    fn end(self) -> R {
        Direct { w: self.w }.collected(self.inner.end())
    }
}

/// Structs and struct variants.
pub(crate) enum Struct<'w, 'a> {
    /// Keys known: the header is written, each field's key is checked against `keys[at]`.
    Direct {
        w: &'w mut Writer<'a>,
        keys: Arc<[&'static str]>,
        at: usize,
        variant: bool,
    },
    /// A struct not seen before: collected, written and learned at the end.
    Collect {
        w: &'w mut Writer<'a>,
        name: &'static str,
        inner: StructSer,
        keys: Vec<&'static str>,
        variant: bool,
    },
}

impl<'w, 'a> Struct<'w, 'a> {
    fn open(
        w: &'w mut Writer<'a>,
        name: &'static str,
        len: usize,
        variant: bool,
    ) -> Result<Self, Fallback> {
        if let Some(keys) = w.structs().get(name, len) {
            ok(w.learned_record_header(&keys))?;
            return Ok(Struct::Direct {
                w,
                keys,
                at: 0,
                variant,
            });
        }
        Ok(Struct::Collect {
            w,
            name,
            inner: ValueSerializer
                .serialize_struct(name, len)
                .map_err(|_| Fallback)?,
            keys: Vec::with_capacity(len.min(64)),
            variant,
        })
    }

    fn field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> R {
        match self {
            Struct::Direct { w, keys, at, .. } => {
                match keys.get(*at) {
                    Some(k) if std::ptr::eq(*k, key) || *k == key => {}
                    _ => return Err(Fallback),
                }
                *at += 1;
                value.serialize(Direct { w })
            }
            Struct::Collect { inner, keys, .. } => {
                keys.push(key);
                inner.serialize_field(key, value).map_err(|_| Fallback)
            }
        }
    }

    fn finish(self) -> R {
        match self {
            Struct::Direct {
                w,
                keys,
                at,
                variant,
            } => {
                if at != keys.len() {
                    return Err(Fallback);
                }
                ok(w.end())?;
                if variant {
                    ok(w.end())?;
                }
                Ok(())
            }
            Struct::Collect {
                w,
                name,
                inner,
                keys,
                variant,
            } => {
                let record = inner.end().map_err(|_| Fallback)?;
                ok(w.value(&record))?;
                w.structs().learn(name, keys);
                if variant {
                    ok(w.end())?;
                }
                Ok(())
            }
        }
    }
}

impl ser::SerializeStruct for Struct<'_, '_> {
    type Ok = ();
    type Error = Fallback;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> R {
        self.field(key, value)
    }
    fn end(self) -> R {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Struct<'_, '_> {
    type Ok = ();
    type Error = Fallback;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> R {
        self.field(key, value)
    }
    fn end(self) -> R {
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use serde::ser::SerializeStruct;
    use serde::Serialize;

    use super::{write, StructKeys};
    use crate::codec::encode::Writer;
    use crate::records::ShapeRing;

    #[derive(Serialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[derive(Serialize)]
    struct Line {
        from: Point,
        to: Point,
    }

    struct Encoder {
        out: Vec<u8>,
        shapes: ShapeRing,
        structs: StructKeys,
    }

    impl Encoder {
        fn new() -> Self {
            Encoder {
                out: Vec::new(),
                shapes: ShapeRing::default(),
                structs: StructKeys::default(),
            }
        }

        /// The bytes, when the direct path took `v`.
        fn direct<T: Serialize>(&mut self, v: &T) -> Option<Vec<u8>> {
            self.out.clear();
            let mut w = Writer::new(
                &mut self.out,
                usize::MAX,
                &mut self.shapes,
                &mut self.structs,
            );
            let taken = write(&mut w, v).is_ok();
            self.shapes.commit();
            taken.then(|| self.out.clone())
        }
    }

    #[test]
    fn a_struct_is_learned_once_then_written_from_its_keys() {
        let mut enc = Encoder::new();
        assert_eq!(
            enc.structs.slots.capacity(),
            0,
            "nothing held before a struct"
        );
        let first = enc
            .direct(&Point { x: 1, y: 2 })
            .expect("collected and learned");
        assert_eq!(first[..3], [0xd4, 0x72, 0x40], "defined with the first id");
        let keys = enc.structs.find("Point", 2).expect("learned");
        assert_eq!(&keys[..], ["x", "y"]);
        let second = enc
            .direct(&Point { x: 3, y: 4 })
            .expect("written from the keys");
        assert_eq!(second, [0x40, 0x03, 0x04]);
    }

    #[test]
    fn nested_structs_are_learned_outer_first_and_keep_msgpackr_ids() {
        let mut enc = Encoder::new();
        let line = Line {
            from: Point { x: 1, y: 2 },
            to: Point { x: 3, y: 4 },
        };
        // First: the line is collected whole (ids 0x40 outer, 0x41 inner).
        let first = enc.direct(&line).expect("collected");
        assert_eq!(first[..3], [0xd4, 0x72, 0x40]);
        assert!(enc.structs.find("Line", 2).is_some());
        assert!(
            enc.structs.find("Point", 2).is_none(),
            "inner values were collected"
        );
        // Second: the line is direct, its points collected (and learned) one by one.
        let known = [0x40, 0x41, 1, 2, 0x41, 3, 4];
        assert_eq!(enc.direct(&line).expect("direct"), known);
        assert!(enc.structs.find("Point", 2).is_some());
        // Third: all direct.
        assert_eq!(enc.direct(&line).expect("direct"), known);
    }

    /// One name (one address) for two key lists, as two structs of one name may have.
    static SHARED: &str = "Shared";

    struct Keyed(&'static str);

    impl Serialize for Keyed {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut st = s.serialize_struct(SHARED, 1)?;
            st.serialize_field(self.0, &1)?;
            st.end()
        }
    }

    /// Announces two fields, gives one.
    struct Short;

    impl Serialize for Short {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut st = s.serialize_struct(SHARED, 2)?;
            st.serialize_field("a", &1)?;
            st.end()
        }
    }

    #[test]
    fn a_struct_that_does_not_match_what_was_learned_falls_back() {
        let mut enc = Encoder::new();
        enc.direct(&Keyed("a")).expect("learned");
        assert!(enc.direct(&Keyed("a")).is_some(), "the learned keys");
        assert!(enc.direct(&Keyed("b")).is_none(), "another key: fall back");
        assert!(enc.direct(&Keyed("a")).is_some(), "the first keys stay");
        // Collected each time: what it gave is learned under the count it gave (one), never
        // under the count it announced.
        enc.direct(&Short).expect("collected");
        enc.direct(&Short).expect("collected again");
        assert!(enc.structs.find("Shared", 2).is_none());
    }
}
