//! Reading msgpack one token at a time from bytes a peer sent (PROTOCOL §3): every read is
//! bounds-checked, every scalar validated (UTF-8, extension forms, CapRefs, typed arrays,
//! timestamps) as its header is read.
//!
//! Every consumer of peer bytes sits on this: the `Value` builder (`decode.rs`), the
//! validating skip (`skip.rs`), the frame parser and the serde deserializer. [`Ctx`] adds
//! what they share: the record slot table, the decode budget and the depth limit.

mod quick;

use std::sync::Arc;

use super::budget::{self, Meter};
use super::DecodeError::{self, *};
use crate::ids::CapId;
use crate::records::{SlotKeys, SlotTable};
use crate::value::{Timestamp, TypedArrayKind};

pub(crate) type Res<T> = Result<T, DecodeError>;

/// Above this many keys, duplicate detection switches from pairwise comparison to a set.
const SMALL_KEY_COUNT: usize = 16;

/// One msgpack token: a scalar, or the header of a container.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Head<'a> {
    Undefined,
    Null,
    Bool(bool),
    /// Every integer that fits `i64`, whatever its wire form.
    Int(i64),
    /// Integers above `i64::MAX` (only from `cf`).
    UInt(u64),
    Float(f64),
    Str(&'a str),
    Bin(&'a [u8]),
    Array(usize),
    Map(usize),
    /// `d4 72 id`: the key array and then the values follow.
    RecordDef(u8),
    /// A one-byte record reference: the values follow.
    RecordRef(u8),
    CapRef(CapId),
    Typed(TypedArrayKind, &'a [u8]),
    Timestamp(Timestamp),
    /// The ext marker of a JS Set (0x73), Error (0x65) or RegExp (0x78): an array follows.
    Marker(i8),
}

/// A position in a message.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Goes back to a position this cursor was at (to re-read a peeked header).
    pub(crate) fn rewind(&mut self, pos: usize) {
        self.pos = pos.min(self.buf.len());
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
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
        // The hot path of every token: one bounds check.
        let b = *self.buf.get(self.pos).ok_or(UnexpectedEof)?;
        self.pos += 1;
        Ok(b)
    }

    fn len16(&mut self) -> Res<usize> {
        Ok(usize::from(u16::from_be_bytes(self.bytes()?)))
    }

    fn len32(&mut self) -> Res<usize> {
        let n = u32::from_be_bytes(self.bytes()?);
        usize::try_from(n).map_err(|_| UnexpectedEof)
    }

    /// The 8-, 16- or 32-bit length that follows a `str`/`bin`/`ext` header (`width` 0/1/2).
    fn sized_len(&mut self, width: u8) -> Res<usize> {
        match width {
            0 => Ok(usize::from(self.u8()?)),
            1 => self.len16(),
            _ => self.len32(),
        }
    }

    fn str(&mut self, n: usize) -> Res<&'a str> {
        std::str::from_utf8(self.take(n)?).map_err(|_| InvalidUtf8)
    }

    /// The next byte, not read.
    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// If the next token is a fixstr (every key and most names) holding exactly one of
    /// `words`: reads it and gives the word's index. Otherwise reads nothing. A word is valid
    /// UTF-8, so the bytes need no check.
    #[inline]
    pub(crate) fn fixstr_among(&mut self, words: &[&'static str]) -> Option<usize> {
        let (&b, rest) = self.buf.get(self.pos..)?.split_first()?;
        if b & 0xe0 != 0xa0 {
            return None;
        }
        let n = usize::from(b & 0x1f);
        let bytes = rest.get(..n)?;
        let i = words.iter().position(|w| w.as_bytes() == bytes)?;
        self.pos += 1 + n;
        Some(i)
    }

    /// Passes over `n` bytes (a token whose size its first byte told).
    #[inline]
    pub(crate) fn pass(&mut self, n: usize) -> Res<()> {
        self.take(n).map(|_| ())
    }

    /// If the next token is a string: passes over it, checking it is UTF-8 without making a
    /// `str` of it (an ASCII string, which almost every key and name is, costs one
    /// word-at-a-time scan), and gives its length. Otherwise reads nothing.
    #[inline]
    pub(crate) fn skip_str(&mut self) -> Res<Option<usize>> {
        let start = self.pos;
        let n = match self.u8()? {
            b @ 0xa0..=0xbf => usize::from(b & 0x1f),
            b @ 0xd9..=0xdb => self.sized_len(b - 0xd9)?,
            _ => {
                self.pos = start;
                return Ok(None);
            }
        };
        if is_utf8(self.take(n)?) {
            Ok(Some(n))
        } else {
            Err(InvalidUtf8)
        }
    }

    /// The next token.
    #[inline]
    pub(crate) fn head(&mut self) -> Res<Head<'a>> {
        let b = self.u8()?;
        Ok(match b {
            0x00..=0x3f => Head::Int(i64::from(b)),
            0x40..=0x7f => Head::RecordRef(b),
            0x80..=0x8f => Head::Map(usize::from(b & 0x0f)),
            0x90..=0x9f => Head::Array(usize::from(b & 0x0f)),
            0xa0..=0xbf => Head::Str(self.str(usize::from(b & 0x1f))?),
            0xc0 => Head::Null,
            0xc1 => return Err(ReservedByte(b)),
            0xc2 => Head::Bool(false),
            0xc3 => Head::Bool(true),
            0xc4..=0xc6 => {
                let n = self.sized_len(b - 0xc4)?;
                Head::Bin(self.take(n)?)
            }
            0xc7..=0xc9 => {
                let n = self.sized_len(b - 0xc7)?;
                let typ = self.u8()? as i8;
                if typ == 0x72 {
                    // Record definitions only ever come as `d4 72 id`.
                    return Err(InvalidExtension(typ));
                }
                self.ext(typ, n)?
            }
            0xca => Head::Float(f64::from(f32::from_be_bytes(self.bytes()?))),
            0xcb => Head::Float(f64::from_be_bytes(self.bytes()?)),
            0xcc => Head::Int(i64::from(self.u8()?)),
            0xcd => Head::Int(i64::from(u16::from_be_bytes(self.bytes()?))),
            0xce => Head::Int(i64::from(u32::from_be_bytes(self.bytes()?))),
            0xcf => {
                let n = u64::from_be_bytes(self.bytes()?);
                match i64::try_from(n) {
                    Ok(i) => Head::Int(i),
                    Err(_) => Head::UInt(n),
                }
            }
            0xd0 => Head::Int(i64::from(i8::from_be_bytes(self.bytes()?))),
            0xd1 => Head::Int(i64::from(i16::from_be_bytes(self.bytes()?))),
            0xd2 => Head::Int(i64::from(i32::from_be_bytes(self.bytes()?))),
            0xd3 => Head::Int(i64::from_be_bytes(self.bytes()?)),
            0xd4 => {
                let typ = self.u8()?;
                if typ == 0x72 {
                    return Ok(Head::RecordDef(self.u8()?));
                }
                self.ext(typ as i8, 1)?
            }
            0xd5..=0xd8 => {
                let typ = self.u8()? as i8;
                self.ext(typ, 1 << (b - 0xd4))?
            }
            0xd9..=0xdb => {
                let n = self.sized_len(b - 0xd9)?;
                Head::Str(self.str(n)?)
            }
            0xdc => Head::Array(self.len16()?),
            0xdd => Head::Array(self.len32()?),
            0xde => Head::Map(self.len16()?),
            0xdf => Head::Map(self.len32()?),
            0xe0..=0xff => Head::Int(i64::from(b as i8)),
        })
    }

    fn ext(&mut self, typ: i8, len: usize) -> Res<Head<'a>> {
        let data = self.take(len)?;
        match typ {
            0x00 => Ok(Head::Undefined),
            0x50 => capref(data).map(Head::CapRef),
            0x74 => typed_array(data),
            -1 => timestamp(data).map(Head::Timestamp),
            // msgpackr writes Set, Error and RegExp as a marker ext followed by a separately
            // packed array; the marker's data means nothing.
            0x73 | 0x65 | 0x78 => Ok(Head::Marker(typ)),
            _ => Err(InvalidExtension(typ)),
        }
    }

    /// The key array of a record definition: distinct strings. The temporary list (and the
    /// set that checks a long list for duplicates) is charged to `meter` before it exists.
    pub(crate) fn record_keys(&mut self, meter: &mut Meter) -> Res<Vec<&'a str>> {
        let n = match self.u8()? {
            b @ 0x90..=0x9f => usize::from(b & 0x0f),
            0xdc => self.len16()?,
            0xdd => self.len32()?,
            _ => return Err(BadRecordKeys),
        };
        // Every key takes at least one byte, so the input bounds the allocation.
        let cap = n.min(self.remaining());
        let per_key = if n > SMALL_KEY_COUNT { 64 } else { 16 };
        meter.charge(budget::heap(cap.saturating_mul(per_key)))?;
        let mut keys = Vec::with_capacity(cap);
        for _ in 0..n {
            let len = match self.u8()? {
                b @ 0xa0..=0xbf => usize::from(b & 0x1f),
                b @ 0xd9..=0xdb => self.sized_len(b - 0xd9)?,
                _ => return Err(BadRecordKeys),
            };
            keys.push(self.str(len)?);
        }
        if has_duplicates(&keys) {
            // A JS object keeps the last of two equal keys and Record::get the first: refuse
            // rather than let the two peers read different frames.
            return Err(BadRecordKeys);
        }
        Ok(keys)
    }
}

/// Whether `b` is UTF-8, without making a `str` of it. Short ASCII strings (keys, names,
/// most short values) are checked a word or two at a time.
#[inline]
pub(crate) fn is_utf8(b: &[u8]) -> bool {
    is_short_ascii(b).unwrap_or_else(|| b.is_ascii()) || std::str::from_utf8(b).is_ok()
}

/// Whether `b` is ASCII, for 4 to 16 bytes (two overlapping loads); `None` for other lengths.
#[inline]
fn is_short_ascii(b: &[u8]) -> Option<bool> {
    fn word<const N: usize>(b: Option<&[u8]>) -> Option<[u8; N]> {
        b?.try_into().ok()
    }
    let n = b.len();
    if (8..=16).contains(&n) {
        let lo = u64::from_le_bytes(word(b.get(..8))?);
        let hi = u64::from_le_bytes(word(b.get(n - 8..))?);
        Some((lo | hi) & 0x8080_8080_8080_8080 == 0)
    } else if (4..8).contains(&n) {
        let lo = u32::from_le_bytes(word(b.get(..4))?);
        let hi = u32::from_le_bytes(word(b.get(n - 4..))?);
        Some((lo | hi) & 0x8080_8080 == 0)
    } else {
        None
    }
}

fn has_duplicates(keys: &[&str]) -> bool {
    repeated(keys.iter().copied()).is_some()
}

/// A key that `keys` holds twice, if any (the one whose second occurrence comes first).
pub(crate) fn repeated<'k, I>(keys: I) -> Option<&'k str>
where
    I: ExactSizeIterator<Item = &'k str> + Clone,
{
    if keys.len() <= SMALL_KEY_COUNT {
        (keys.clone().enumerate())
            .find(|&(i, k)| keys.clone().take(i).any(|earlier| earlier == k))
            .map(|(_, k)| k)
    } else {
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        keys.into_iter().find(|k| !seen.insert(*k))
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

fn typed_array(data: &[u8]) -> Res<Head<'_>> {
    let (&code, bytes) = data.split_first().ok_or(BadTypedArray)?;
    let kind = TypedArrayKind::from_code(code).ok_or(BadTypedArray)?;
    if bytes.len() % kind.element_size() != 0 {
        return Err(BadTypedArray);
    }
    Ok(Head::Typed(kind, bytes))
}

/// The three msgpack timestamp forms: 32-bit seconds; 30-bit nanos + 34-bit seconds;
/// 32-bit nanos + signed 64-bit seconds. Data of any other length is msgpackr's invalid
/// Date (it writes one as `d4 ff ff`, and `unpack.js` reads every other length as
/// `new Date('invalid')`): [`Timestamp::INVALID`].
///
/// Nanos of a second or more in the 8- or 12-byte form stay an error, as the msgpack spec
/// has it: msgpackr never writes them (its nanos are a Date's milliseconds times 10^6), so no
/// reference peer sends them, and a `Timestamp` holding them would now be the invalid Date,
/// which is not what msgpackr makes of them (it adds them to the seconds, and in the 12-byte
/// form reads nanos of 2^31 or more as negative). Refusing them is the one reading that does
/// not invent a meaning.
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
        _ => return Ok(Timestamp::INVALID),
    };
    let t = Timestamp { seconds, nanos };
    if !t.is_valid() {
        return Err(BadTimestamp);
    }
    Ok(t)
}

/// What every reader of one message shares: the cursor, the record slot table (the
/// decoder's own, or a payload's private copy of its snapshot), the budget and the depth
/// limit.
pub(crate) struct Ctx<'a, 's> {
    pub(crate) cur: Cursor<'a>,
    /// The buffer `cur` reads, when it is a received payload's: what a
    /// [`Blob`](crate::Blob) is sliced from; and the length of the whole message.
    pub(crate) owner: Option<(&'a bytes::Bytes, usize)>,
    pub(crate) slots: &'s mut Arc<SlotTable>,
    pub(crate) meter: Meter,
    pub(crate) max_depth: usize,
    /// [`DecodeLimits::max_record_table_bytes`](crate::DecodeLimits): what the slot table
    /// may keep (`usize::MAX` when a payload reads again what its frame's check admitted).
    pub(crate) max_table: usize,
}

impl<'a> Ctx<'a, '_> {
    /// The depth inside a container opened at `depth`.
    pub(crate) fn nest(&self, depth: usize) -> Res<usize> {
        let inner = depth.saturating_add(1);
        if inner > self.max_depth {
            Err(DepthExceeded)
        } else {
            Ok(inner)
        }
    }

    /// Reads a definition's keys (after `d4 72 id`), charges them and defines the slot.
    /// The table is copied first if a payload still holds a snapshot of it.
    pub(crate) fn define(&mut self, id: u8) -> Res<Arc<SlotKeys>> {
        let keys = self.cur.record_keys(&mut self.meter)?;
        let cost = SlotKeys::cost(&keys);
        self.meter.charge(cost)?;
        let needed = self.slots.kept_with(id, cost);
        if needed > self.max_table {
            return Err(RecordTableFull {
                needed,
                max: self.max_table,
            });
        }
        let shape = Arc::new(SlotKeys::costing(&keys, cost));
        if Arc::get_mut(self.slots).is_none() {
            self.meter.charge(budget::TABLE_COPY)?;
        }
        Arc::make_mut(self.slots).define(id, Arc::clone(&shape));
        Ok(shape)
    }

    /// The shape of a referenced slot. A clone of the `Arc`: the values may redefine this
    /// very slot.
    pub(crate) fn lookup(&self, id: u8) -> Res<Arc<SlotKeys>> {
        self.slots.get(id).cloned().ok_or(UnknownRecordSlot(id))
    }

    /// The number of keys of a referenced slot.
    pub(crate) fn key_count(&self, id: u8) -> Res<usize> {
        self.slots
            .get(id)
            .map(|s| s.len())
            .ok_or(UnknownRecordSlot(id))
    }

    /// The shape of a record header at `depth`: nests first, then defines or looks up.
    pub(crate) fn record_shape(
        &mut self,
        head: Head<'_>,
        depth: usize,
    ) -> Res<(Arc<SlotKeys>, usize)> {
        let inner = self.nest(depth)?;
        let shape = match head {
            Head::RecordDef(id) => self.define(id)?,
            Head::RecordRef(id) => self.lookup(id)?,
            _ => return Err(BadRecordKeys),
        };
        Ok((shape, inner))
    }

    /// Elements a container of `n` may really hold: each takes at least one byte, so never
    /// more than the bytes left. What pre-allocation trusts instead of the header.
    pub(crate) fn plausible(&self, n: usize) -> usize {
        n.min(self.cur.remaining())
    }
}
