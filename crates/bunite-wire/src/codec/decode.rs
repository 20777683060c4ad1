//! Reading values (PROTOCOL §3) from bytes a peer sent: every read is bounds-checked, every
//! allocation sized by what the remaining input could really hold, recursion bounded by the
//! depth limit.

use std::sync::Arc;

use super::DecodeError::{self, *};
use crate::ids::CapId;
use crate::records::SlotTable;
use crate::value::{Record, Timestamp, TypedArray, TypedArrayKind, Value};

type Res<T> = Result<T, DecodeError>;

/// A key defined once is copied into every record that references its slot, so a short
/// message could otherwise expand into gigabytes of keys (a 1 MB key referenced a million
/// times by two-byte records). Each message may materialize at most this multiple of its
/// own size in key bytes, plus [`KEY_BUDGET_BASE`]: far above any real payload, whose keys
/// are short next to their values.
const KEY_EXPANSION: usize = 64;
/// See [`KEY_EXPANSION`]; lets tiny messages use long keys.
const KEY_BUDGET_BASE: usize = 64 * 1024;
/// Above this many keys, duplicate detection switches from pairwise comparison to a set.
const SMALL_KEY_COUNT: usize = 16;

pub(crate) struct Reader<'a, 's> {
    buf: &'a [u8],
    pos: usize,
    slots: &'s mut SlotTable,
    max_depth: usize,
    key_budget: usize,
}

impl<'a, 's> Reader<'a, 's> {
    pub(crate) fn new(buf: &'a [u8], slots: &'s mut SlotTable, max_depth: usize) -> Self {
        let key_budget = buf
            .len()
            .saturating_mul(KEY_EXPANSION)
            .saturating_add(KEY_BUDGET_BASE);
        Reader {
            buf,
            pos: 0,
            slots,
            max_depth,
            key_budget,
        }
    }

    /// Exactly one value, filling the whole input.
    pub(crate) fn read_one(mut self) -> Res<Value> {
        let v = self.value(0)?;
        if self.pos == self.buf.len() {
            Ok(v)
        } else {
            Err(TrailingBytes)
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(UnexpectedEof)?;
        let bytes = self.buf.get(self.pos..end).ok_or(UnexpectedEof)?;
        self.pos = end;
        Ok(bytes)
    }

    fn bytes<const N: usize>(&mut self) -> Res<[u8; N]> {
        self.take(N)?.try_into().map_err(|_| UnexpectedEof)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(u8::from_be_bytes(self.bytes()?))
    }

    fn len16(&mut self) -> Res<usize> {
        Ok(usize::from(u16::from_be_bytes(self.bytes()?)))
    }

    fn len32(&mut self) -> Res<usize> {
        let n = u32::from_be_bytes(self.bytes()?);
        usize::try_from(n).map_err(|_| UnexpectedEof)
    }

    /// The depth inside a container opened at `depth`.
    fn nest(&self, depth: usize) -> Res<usize> {
        let inner = depth.saturating_add(1);
        if inner > self.max_depth {
            Err(DepthExceeded)
        } else {
            Ok(inner)
        }
    }

    fn value(&mut self, depth: usize) -> Res<Value> {
        let b = self.u8()?;
        let v = match b {
            0x00..=0x3f => Value::Int(i64::from(b)),
            0x40..=0x7f => return self.record_ref(b, depth),
            0x80..=0x8f => return self.map(usize::from(b & 0x0f), depth),
            0x90..=0x9f => return self.array(usize::from(b & 0x0f), depth),
            0xa0..=0xbf => return self.str(usize::from(b & 0x1f)),
            0xc0 => Value::Null,
            0xc1 => return Err(ReservedByte(b)),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.sized_len(b - 0xc4)?;
                Value::Bin(self.take(n)?.to_vec())
            }
            0xc7..=0xc9 => {
                let n = self.sized_len(b - 0xc7)?;
                return self.ext(n, depth);
            }
            0xca => Value::Float(f64::from(f32::from_be_bytes(self.bytes()?))),
            0xcb => Value::Float(f64::from_be_bytes(self.bytes()?)),
            0xcc => Value::Int(i64::from(self.u8()?)),
            0xcd => Value::Int(i64::from(u16::from_be_bytes(self.bytes()?))),
            0xce => Value::Int(i64::from(u32::from_be_bytes(self.bytes()?))),
            0xcf => Value::uint(u64::from_be_bytes(self.bytes()?)),
            0xd0 => Value::Int(i64::from(i8::from_be_bytes(self.bytes()?))),
            0xd1 => Value::Int(i64::from(i16::from_be_bytes(self.bytes()?))),
            0xd2 => Value::Int(i64::from(i32::from_be_bytes(self.bytes()?))),
            0xd3 => Value::Int(i64::from_be_bytes(self.bytes()?)),
            0xd4 => {
                let typ = self.u8()?;
                if typ == 0x72 {
                    let id = self.u8()?;
                    return self.record_definition(id, depth);
                }
                return self.ext_body(typ as i8, 1, depth);
            }
            0xd5..=0xd8 => {
                let typ = self.u8()?;
                return self.ext_body(typ as i8, 1 << (b - 0xd4), depth);
            }
            0xd9..=0xdb => {
                let n = self.sized_len(b - 0xd9)?;
                return self.str(n);
            }
            0xdc => {
                let n = self.len16()?;
                return self.array(n, depth);
            }
            0xdd => {
                let n = self.len32()?;
                return self.array(n, depth);
            }
            0xde => {
                let n = self.len16()?;
                return self.map(n, depth);
            }
            0xdf => {
                let n = self.len32()?;
                return self.map(n, depth);
            }
            0xe0..=0xff => Value::Int(i64::from(b as i8)),
        };
        Ok(v)
    }

    /// The 8-, 16- or 32-bit length that follows a `str`/`bin`/`ext` header (`width` 0/1/2).
    fn sized_len(&mut self, width: u8) -> Res<usize> {
        match width {
            0 => Ok(usize::from(self.u8()?)),
            1 => self.len16(),
            _ => self.len32(),
        }
    }

    fn str(&mut self, n: usize) -> Res<Value> {
        self.string(n).map(Value::Str)
    }

    fn string(&mut self, n: usize) -> Res<String> {
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| InvalidUtf8)
    }

    fn array(&mut self, n: usize, depth: usize) -> Res<Value> {
        let inner = self.nest(depth)?;
        // Every element takes at least one byte, so the input bounds the allocation.
        let mut items = Vec::with_capacity(n.min(self.remaining()));
        for _ in 0..n {
            items.push(self.value(inner)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> Res<Value> {
        let inner = self.nest(depth)?;
        let mut entries = Vec::with_capacity(n.min(self.remaining() / 2));
        for _ in 0..n {
            let k = self.value(inner)?;
            let v = self.value(inner)?;
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }

    fn record_definition(&mut self, id: u8, depth: usize) -> Res<Value> {
        let inner = self.nest(depth)?;
        let keys: Arc<[String]> = self.record_keys()?.into();
        self.slots.define(id, Arc::clone(&keys));
        self.record_values(&keys, inner)
    }

    fn record_ref(&mut self, id: u8, depth: usize) -> Res<Value> {
        let inner = self.nest(depth)?;
        // A clone of the Arc: the values may redefine this very slot.
        let keys = self.slots.get(id).ok_or(UnknownRecordSlot(id))?;
        self.record_values(&keys, inner)
    }

    fn record_keys(&mut self) -> Res<Vec<String>> {
        let n = match self.u8()? {
            b @ 0x90..=0x9f => usize::from(b & 0x0f),
            0xdc => self.len16()?,
            0xdd => self.len32()?,
            _ => return Err(BadRecordKeys),
        };
        let mut keys = Vec::with_capacity(n.min(self.remaining()));
        for _ in 0..n {
            let len = match self.u8()? {
                b @ 0xa0..=0xbf => usize::from(b & 0x1f),
                b @ 0xd9..=0xdb => self.sized_len(b - 0xd9)?,
                _ => return Err(BadRecordKeys),
            };
            keys.push(self.string(len)?);
        }
        if has_duplicates(&keys) {
            // A JS object keeps the last of two equal keys and Record::get the first: refuse
            // rather than let the two peers read different frames.
            return Err(BadRecordKeys);
        }
        Ok(keys)
    }

    fn record_values(&mut self, keys: &[String], inner: usize) -> Res<Value> {
        let mut fields = Vec::with_capacity(keys.len().min(self.remaining()));
        for key in keys {
            self.key_budget = self.key_budget.checked_sub(key.len()).ok_or(TooLarge)?;
            let v = self.value(inner)?;
            fields.push((key.clone(), v));
        }
        Ok(Value::Record(Record(fields)))
    }

    fn ext(&mut self, len: usize, depth: usize) -> Res<Value> {
        let typ = self.u8()? as i8;
        if typ == 0x72 {
            // Record definitions only ever come as `d4 72 id`.
            return Err(InvalidExtension(typ));
        }
        self.ext_body(typ, len, depth)
    }

    fn ext_body(&mut self, typ: i8, len: usize, depth: usize) -> Res<Value> {
        let data = self.take(len)?;
        match typ {
            0x00 => Ok(Value::Undefined),
            0x50 => capref(data).map(Value::CapRef),
            0x74 => typed_array(data).map(Value::TypedArray),
            -1 => timestamp(data).map(Value::Timestamp),
            // msgpackr writes Set, Error and RegExp as a marker ext followed by a separately
            // packed array; the marker's data means nothing.
            0x73 => self
                .ext_payload(typ, depth, 0, usize::MAX)
                .map(Value::Array),
            0x65 => {
                let items = self.ext_payload(typ, depth, 2, 3)?;
                Ok(named_record(&["name", "message", "cause"], items))
            }
            0x78 => {
                let items = self.ext_payload(typ, depth, 2, 2)?;
                Ok(named_record(&["source", "flags"], items))
            }
            _ => Err(InvalidExtension(typ)),
        }
    }

    /// The array that follows a Set/Error/RegExp marker, with `min..=max` items.
    fn ext_payload(&mut self, typ: i8, depth: usize, min: usize, max: usize) -> Res<Vec<Value>> {
        let inner = self.nest(depth)?;
        match self.value(inner)? {
            Value::Array(items) if (min..=max).contains(&items.len()) => Ok(items),
            _ => Err(InvalidExtension(typ)),
        }
    }
}

/// A record of `names` zipped with `items`, leaving out a trailing undefined (an Error
/// without a cause).
fn named_record(names: &[&str], items: Vec<Value>) -> Value {
    let fields = names
        .iter()
        .zip(items)
        .filter(|(name, v)| !(**name == "cause" && v.is_undefined()))
        .map(|(name, v)| ((*name).to_owned(), v))
        .collect();
    Value::Record(Record(fields))
}

fn has_duplicates(keys: &[String]) -> bool {
    if keys.len() <= SMALL_KEY_COUNT {
        keys.iter()
            .enumerate()
            .any(|(i, k)| keys.iter().skip(i + 1).any(|other| other == k))
    } else {
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        !keys.iter().all(|k| seen.insert(k.as_str()))
    }
}

/// Unsigned LEB128, at most 5 bytes, ending exactly at the end of the data, below 2^32.
fn capref(data: &[u8]) -> Res<CapId> {
    if data.is_empty() || data.len() > 5 {
        return Err(BadCapRef);
    }
    let last = data.len() - 1;
    let mut id: u64 = 0;
    for (i, &byte) in data.iter().enumerate() {
        let more = byte & 0x80 != 0;
        if more != (i < last) {
            return Err(BadCapRef);
        }
        id |= u64::from(byte & 0x7f) << (7 * i);
    }
    u32::try_from(id).map(CapId).map_err(|_| BadCapRef)
}

fn typed_array(data: &[u8]) -> Res<TypedArray> {
    let (&code, bytes) = data.split_first().ok_or(BadTypedArray)?;
    let kind = TypedArrayKind::from_code(code).ok_or(BadTypedArray)?;
    if bytes.len() % kind.element_size() != 0 {
        return Err(BadTypedArray);
    }
    Ok(TypedArray {
        kind,
        bytes: bytes.to_vec(),
    })
}

/// The three msgpack timestamp forms: 32-bit seconds; 30-bit nanos + 34-bit seconds;
/// 32-bit nanos + signed 64-bit seconds.
fn timestamp(data: &[u8]) -> Res<Timestamp> {
    let (seconds, nanos) = match data.len() {
        4 => {
            let secs = u32::from_be_bytes(data.try_into().map_err(|_| BadTimestamp)?);
            (i64::from(secs), 0)
        }
        8 => {
            let packed = u64::from_be_bytes(data.try_into().map_err(|_| BadTimestamp)?);
            let secs = packed & ((1 << 34) - 1);
            ((secs as i64), (packed >> 34) as u32)
        }
        12 => {
            let (n, s) = data.split_at(4);
            let nanos = u32::from_be_bytes(n.try_into().map_err(|_| BadTimestamp)?);
            let secs = i64::from_be_bytes(s.try_into().map_err(|_| BadTimestamp)?);
            (secs, nanos)
        }
        _ => return Err(BadTimestamp),
    };
    if nanos >= 1_000_000_000 {
        return Err(BadTimestamp);
    }
    Ok(Timestamp { seconds, nanos })
}
