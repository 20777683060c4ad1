//! The value model: everything a bunite frame can carry (PROTOCOL §3).

use crate::ids::CapId;
use crate::text::Text;

/// One value on the wire.
///
/// `Undefined` (JS `undefined`, `d4 00 00`) is distinct from `Null` (`c0`). Integers keep
/// their exact value: `Int` holds every integer that fits `i64`, `UInt` only those above
/// `i64::MAX`. Use [`Value::int`] / [`Value::uint`] to build them normalized.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// JS `undefined`; an absent value (`()`, `None`, no args).
    #[default]
    Undefined,
    /// JS `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// An integer above `i64::MAX` (only ever from `cf`).
    UInt(u64),
    /// A float (always sent as float64).
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// msgpack binary (a Node `Buffer`).
    Bin(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A JS object: string keys in order, sent as a msgpackr record (PROTOCOL §3.3).
    Record(Record),
    /// A msgpack map (keys not all strings); a JS `Map` on the other side.
    Map(Vec<(Value, Value)>),
    /// A capability reference (ext 0x50).
    CapRef(CapId),
    /// A JS typed array, `ArrayBuffer` or `DataView` (ext 0x74).
    TypedArray(TypedArray),
    /// A msgpack timestamp (ext -1, a JS `Date`), or an invalid Date
    /// ([`Timestamp::INVALID`], msgpackr's `d4 ff ff`).
    Timestamp(Timestamp),
}

impl Value {
    /// An integer, normalized (`Int` whenever it fits `i64`).
    pub fn int(n: i64) -> Value {
        Value::Int(n)
    }

    /// An unsigned integer, normalized (`Int` whenever it fits `i64`).
    pub fn uint(n: u64) -> Value {
        match i64::try_from(n) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(n),
        }
    }

    /// True for `Undefined`.
    pub fn is_undefined(&self) -> bool {
        matches!(self, Value::Undefined)
    }

    /// The string, if this is a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The record, if this is a `Record`.
    pub fn as_record(&self) -> Option<&Record> {
        match self {
            Value::Record(r) => Some(r),
            _ => None,
        }
    }

    /// The value as an exact integer: `Int`, `UInt`, or a `Float` with an integral value
    /// (the TypeScript peer sends large integers as float64, PROTOCOL §3.1).
    pub fn as_integer(&self) -> Option<i128> {
        match *self {
            Value::Int(i) => Some(i128::from(i)),
            Value::UInt(u) => Some(i128::from(u)),
            Value::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1.8e19 => {
                // Integral and within the u64/i64 range, so the cast is exact.
                Some(f as i128)
            }
            _ => None,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<i32> for Value {
    fn from(n: i32) -> Self {
        Value::Int(i64::from(n))
    }
}

impl From<u32> for Value {
    fn from(n: u32) -> Self {
        Value::Int(i64::from(n))
    }
}

impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Float(f)
    }
}

impl From<Record> for Value {
    fn from(r: Record) -> Self {
        Value::Record(r)
    }
}

impl From<Vec<Value>> for Value {
    fn from(a: Vec<Value>) -> Self {
        Value::Array(a)
    }
}

/// A JS object: string keys in insertion order with their values.
///
/// Keys are [`Text`]: a decoded record shares them with every other record of its shape, and
/// a key given as a `&'static str` (`Record::new().with("id", 1)`) is never copied.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Record(pub Vec<(Text, Value)>);

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Record(Vec::new())
    }

    /// Sets `key` to `value`: replaces the value in place if the key exists (keeping its
    /// position, as a JS object does), appends otherwise.
    pub fn insert(&mut self, key: impl Into<Text>, value: impl Into<Value>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// Builder form of [`Record::insert`].
    pub fn with(mut self, key: impl Into<Text>, value: impl Into<Value>) -> Self {
        self.insert(key, value);
        self
    }

    /// The value for `key` (the first, if a hostile peer sent a key twice).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Removes and returns the value for `key`.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl FromIterator<(String, Value)> for Record {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        iter.into_iter().map(|(k, v)| (Text::from(k), v)).collect()
    }
}

impl FromIterator<(Text, Value)> for Record {
    fn from_iter<I: IntoIterator<Item = (Text, Value)>>(iter: I) -> Self {
        let mut r = Record::new();
        for (k, v) in iter {
            r.insert(k, v);
        }
        r
    }
}

/// The element type of a JS typed array (the subtype byte of ext 0x74).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypedArrayKind {
    /// `Int8Array` (0).
    Int8,
    /// `Uint8Array` (1).
    Uint8,
    /// `Uint8ClampedArray` (2).
    Uint8Clamped,
    /// `Int16Array` (3).
    Int16,
    /// `Uint16Array` (4).
    Uint16,
    /// `Int32Array` (5).
    Int32,
    /// `Uint32Array` (6).
    Uint32,
    /// `Float32Array` (7).
    Float32,
    /// `Float64Array` (8).
    Float64,
    /// `BigInt64Array` (9).
    BigInt64,
    /// `BigUint64Array` (10).
    BigUint64,
    /// `ArrayBuffer` (0x10).
    ArrayBuffer,
    /// `DataView` (0x11).
    DataView,
}

impl TypedArrayKind {
    /// Every kind, in the order of their subtype bytes.
    pub const ALL: [TypedArrayKind; 13] = [
        TypedArrayKind::Int8,
        TypedArrayKind::Uint8,
        TypedArrayKind::Uint8Clamped,
        TypedArrayKind::Int16,
        TypedArrayKind::Uint16,
        TypedArrayKind::Int32,
        TypedArrayKind::Uint32,
        TypedArrayKind::Float32,
        TypedArrayKind::Float64,
        TypedArrayKind::BigInt64,
        TypedArrayKind::BigUint64,
        TypedArrayKind::ArrayBuffer,
        TypedArrayKind::DataView,
    ];

    /// The subtype byte.
    pub fn code(self) -> u8 {
        match self {
            TypedArrayKind::Int8 => 0,
            TypedArrayKind::Uint8 => 1,
            TypedArrayKind::Uint8Clamped => 2,
            TypedArrayKind::Int16 => 3,
            TypedArrayKind::Uint16 => 4,
            TypedArrayKind::Int32 => 5,
            TypedArrayKind::Uint32 => 6,
            TypedArrayKind::Float32 => 7,
            TypedArrayKind::Float64 => 8,
            TypedArrayKind::BigInt64 => 9,
            TypedArrayKind::BigUint64 => 10,
            TypedArrayKind::ArrayBuffer => 0x10,
            TypedArrayKind::DataView => 0x11,
        }
    }

    /// The kind for a subtype byte, if known.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => TypedArrayKind::Int8,
            1 => TypedArrayKind::Uint8,
            2 => TypedArrayKind::Uint8Clamped,
            3 => TypedArrayKind::Int16,
            4 => TypedArrayKind::Uint16,
            5 => TypedArrayKind::Int32,
            6 => TypedArrayKind::Uint32,
            7 => TypedArrayKind::Float32,
            8 => TypedArrayKind::Float64,
            9 => TypedArrayKind::BigInt64,
            10 => TypedArrayKind::BigUint64,
            0x10 => TypedArrayKind::ArrayBuffer,
            0x11 => TypedArrayKind::DataView,
            _ => return None,
        })
    }

    /// Size of one element in bytes (1 for the byte views).
    pub fn element_size(self) -> usize {
        match self {
            TypedArrayKind::Int16 | TypedArrayKind::Uint16 => 2,
            TypedArrayKind::Int32 | TypedArrayKind::Uint32 | TypedArrayKind::Float32 => 4,
            TypedArrayKind::Float64 | TypedArrayKind::BigInt64 | TypedArrayKind::BigUint64 => 8,
            _ => 1,
        }
    }
}

/// A JS typed array: its kind and its raw little-endian element bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypedArray {
    /// The element type.
    pub kind: TypedArrayKind,
    /// Raw little-endian bytes; the length is a multiple of the element size.
    pub bytes: Vec<u8>,
}

/// A msgpack timestamp (ext -1), a JS `Date`.
///
/// A JS Date may be invalid (`new Date(undefined)`); msgpackr, the reference's codec, writes
/// one as `d4 ff ff` (an ext -1 of one byte) and reads every ext -1 whose data is not 4, 8
/// or 12 bytes as one. Here it is a timestamp whose `nanos` are out of range
/// ([`Timestamp::is_valid`] is false): every such timestamp is encoded as `d4 ff ff`, and
/// the decoder reads an ext -1 of any other length as [`Timestamp::INVALID`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Nanoseconds within the second (0..1_000_000_000); anything more makes the timestamp
    /// an invalid Date.
    pub nanos: u32,
}

impl Timestamp {
    /// The invalid Date, as the decoder reads msgpackr's `d4 ff ff` (and every ext -1 of a
    /// length other than 4, 8 or 12 bytes). Every timestamp that is not
    /// [valid](Timestamp::is_valid) is encoded as this one is, as `d4 ff ff`.
    pub const INVALID: Timestamp = Timestamp {
        seconds: 0,
        nanos: u32::MAX,
    };

    /// Whether this is a point in time: its nanoseconds are within a second. One that is
    /// not is a JS Invalid Date on the wire ([`Timestamp::INVALID`]).
    pub const fn is_valid(self) -> bool {
        self.nanos < 1_000_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::TypedArrayKind;

    #[test]
    fn all_holds_every_typed_array_kind_once_in_code_order() {
        let known: Vec<TypedArrayKind> = (0..=u8::MAX)
            .filter_map(TypedArrayKind::from_code)
            .collect();
        assert_eq!(known, TypedArrayKind::ALL);
    }
}
