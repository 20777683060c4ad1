//! Writing values (PROTOCOL §3.1–3.3), byte-identical with msgpackr 1.12.

use std::sync::Arc;

use crate::records::{KeyRef, Shape, ShapeRing, StaticShape};
use crate::serde_impl::direct::StructKeys;
use crate::serde_impl::SerdeError;
use crate::value::{Timestamp, TypedArray, Value};

/// Why writing stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The output passed the caller's maximum, or a length msgpack cannot express. Holds a
    /// lower bound of the length `out` would have reached.
    Overflow(usize),
    /// A typed value failed to serialize (its `Serialize` impl, or a number no bunite
    /// value holds). Boxed: every write returns this type, and a word-sized error keeps
    /// `Res` as small as a plain overflow.
    Serialize(Box<SerdeError>),
}

pub(crate) type Res = Result<(), Stop>;

/// A string, binary or typed array this long or longer reserves [`PAYLOAD_TAIL`] bytes
/// beyond itself before it is copied.
const LARGE_PAYLOAD: usize = 4096;

/// Room left after a large payload for what usually follows it (the frame's last fields):
/// without it, the first byte written after a 64 KiB payload doubled the buffer and copied
/// the payload a second time.
const PAYLOAD_TAIL: usize = 256;

/// Integers from -2^31 to 2^32-1 are msgpack ints; beyond, the reference sends float64
/// up to 2^53 in magnitude (PROTOCOL §3.1).
const MAX_SAFE: i64 = 1 << 53;

/// Appends to `out`, failing once it grows past `limit` (an absolute length).
pub(crate) struct Writer<'a> {
    out: &'a mut Vec<u8>,
    limit: usize,
    shapes: &'a mut ShapeRing,
    structs: &'a mut StructKeys,
}

/// A point [`Writer::undo`] returns to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    len: usize,
    journal: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(
        out: &'a mut Vec<u8>,
        limit: usize,
        shapes: &'a mut ShapeRing,
        structs: &'a mut StructKeys,
    ) -> Self {
        Writer {
            out,
            limit,
            shapes,
            structs,
        }
    }

    /// The keys learned of the structs written directly (`serde_impl::direct`).
    #[inline]
    pub(crate) fn structs(&mut self) -> &mut StructKeys {
        self.structs
    }

    /// Where the output and the shape ring stand now.
    #[inline]
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            len: self.out.len(),
            journal: self.shapes.mark(),
        }
    }

    /// Drops what was written since `mark` and undoes the shapes it defined, as if it had
    /// never been tried.
    pub(crate) fn undo(&mut self, mark: Mark) {
        self.out.truncate(mark.len);
        self.shapes.rollback_to(mark.journal);
    }

    /// Checked after every value: one comparison keeps an oversized value from being
    /// written in full.
    #[inline]
    fn check(&self) -> Res {
        if self.out.len() > self.limit {
            Err(Stop::Overflow(self.out.len()))
        } else {
            Ok(())
        }
    }

    /// Fails before copying a payload that cannot fit, so a huge string costs nothing.
    #[inline]
    fn room(&self, n: usize) -> Res {
        match self.out.len().checked_add(n) {
            Some(end) if end <= self.limit => Ok(()),
            _ => Err(Stop::Overflow(self.out.len().saturating_add(n))),
        }
    }

    pub(crate) fn value(&mut self, v: &Value) -> Res {
        match v {
            Value::Undefined => self.undefined(),
            Value::Null => self.out.push(0xc0),
            Value::Bool(b) => self.bool(*b),
            Value::Int(n) => self.int(*n),
            Value::UInt(n) => self.uint(*n),
            Value::Float(f) => self.float(*f),
            Value::Str(s) => self.str(s)?,
            Value::Bin(b) => self.bin(b)?,
            Value::Array(items) => {
                self.array_header(items.len())?;
                for item in items {
                    self.item(item)?;
                }
            }
            Value::Record(r) => {
                self.record_header(r.0.iter().map(|(k, _)| k.key_ref()))?;
                for (_, item) in &r.0 {
                    self.item(item)?;
                }
            }
            Value::Map(entries) => {
                self.header(entries.len(), 0x80, 0xde, 0xdf)?;
                for (k, item) in entries {
                    self.value(k)?;
                    self.value(item)?;
                }
            }
            Value::CapRef(id) => self.capref(id.0),
            Value::TypedArray(t) => self.typed_array(t)?,
            Value::Timestamp(t) => self.timestamp(*t),
        }
        self.check()
    }

    /// An item of an array or a record: the common scalars here, without the call.
    #[inline]
    fn item(&mut self, v: &Value) -> Res {
        match v {
            Value::Int(n) => self.int(*n),
            Value::Str(s) => self.str(s)?,
            Value::Float(f) => self.float(*f),
            Value::Bool(b) => self.bool(*b),
            _ => return self.value(v),
        }
        self.check()
    }

    // One complete value each, then the check `value` makes after every value (so a frame
    // written field by field fails at exactly the point its `Value` would, with the same
    // size). A record's or an array's check comes after its last item.

    /// `undefined`, checked.
    #[inline]
    pub(crate) fn undefined_v(&mut self) -> Res {
        self.undefined();
        self.check()
    }

    /// A boolean, checked.
    #[inline]
    pub(crate) fn bool_v(&mut self, b: bool) -> Res {
        self.bool(b);
        self.check()
    }

    /// An integer, checked.
    #[inline]
    pub(crate) fn int_v(&mut self, n: i64) -> Res {
        self.int(n);
        self.check()
    }

    /// An unsigned integer, checked.
    #[inline]
    pub(crate) fn uint_v(&mut self, n: u64) -> Res {
        self.uint(n);
        self.check()
    }

    /// A float, checked.
    #[inline]
    pub(crate) fn float_v(&mut self, f: f64) -> Res {
        self.float(f);
        self.check()
    }

    /// A string, checked.
    #[inline]
    pub(crate) fn str_v(&mut self, s: &str) -> Res {
        self.str(s)?;
        self.check()
    }

    /// A string given as its UTF-8 bytes (a [`crate::Text`]'s, which needs no check to
    /// give them), checked.
    #[inline]
    pub(crate) fn utf8_v(&mut self, s: &[u8]) -> Res {
        self.utf8(s)?;
        self.check()
    }

    /// A binary, checked.
    #[inline]
    pub(crate) fn bin_v(&mut self, b: &[u8]) -> Res {
        self.bin(b)?;
        self.check()
    }

    /// A string, or `undefined` for `None`, checked.
    #[inline]
    pub(crate) fn opt_str_v(&mut self, s: Option<&str>) -> Res {
        match s {
            Some(s) => self.str_v(s),
            None => self.undefined_v(),
        }
    }

    /// The check after a record's or an array's last item.
    #[inline]
    pub(crate) fn end(&self) -> Res {
        self.check()
    }

    /// The header of a record of static keys (its values follow, one per key, in order):
    /// the shape ring finds a frame's shapes by address.
    #[inline]
    pub(crate) fn static_record(&mut self, s: &'static StaticShape) -> Res {
        let shape = self.shapes.resolve_static(s);
        self.shape_header(shape, s.keys.iter().map(|k| k.as_bytes()))
    }

    #[inline]
    fn undefined(&mut self) {
        self.out.extend_from_slice(&[0xd4, 0x00, 0x00]);
    }

    #[inline]
    fn bool(&mut self, b: bool) {
        self.out.push(if b { 0xc3 } else { 0xc2 });
    }

    /// The reference's integer rules: never fixint 64..127 (those bytes are record ids).
    fn int(&mut self, n: i64) {
        let out = &mut *self.out;
        match n {
            0..=0x3f => out.push(n as u8),
            0x40..=0xff => out.extend_from_slice(&[0xcc, n as u8]),
            0x100..=0xffff => {
                let [a, b] = (n as u16).to_be_bytes();
                out.extend_from_slice(&[0xcd, a, b]);
            }
            0x1_0000..=0xffff_ffff => {
                let [a, b, c, d] = (n as u32).to_be_bytes();
                out.extend_from_slice(&[0xce, a, b, c, d]);
            }
            -32..=-1 => out.push(n as u8),
            -128..=-33 => out.extend_from_slice(&[0xd0, n as u8]),
            -32768..=-129 => {
                out.push(0xd1);
                out.extend_from_slice(&(n as i16).to_be_bytes());
            }
            -0x8000_0000..=-32769 => {
                out.push(0xd2);
                out.extend_from_slice(&(n as i32).to_be_bytes());
            }
            _ if (-MAX_SAFE..=MAX_SAFE).contains(&n) => self.float(n as f64),
            _ => {
                out.push(0xd3);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
    }

    #[inline]
    fn uint(&mut self, n: u64) {
        match i64::try_from(n) {
            Ok(i) => self.int(i),
            Err(_) => {
                self.out.push(0xcf);
                self.out.extend_from_slice(&n.to_be_bytes());
            }
        }
    }

    #[inline]
    fn float(&mut self, f: f64) {
        let [a, b, c, d, e, g, h, i] = f.to_bits().to_be_bytes();
        self.out.extend_from_slice(&[0xcb, a, b, c, d, e, g, h, i]);
    }

    #[inline]
    fn str(&mut self, s: &str) -> Res {
        self.utf8(s.as_bytes())
    }

    /// A string given as its (UTF-8) bytes.
    #[inline]
    fn utf8(&mut self, s: &[u8]) -> Res {
        let n = s.len();
        self.room(n)?;
        match n {
            0..=31 => self.out.push(0xa0 | n as u8),
            32..=0xff => self.out.extend_from_slice(&[0xd9, n as u8]),
            _ => self.header(n, 0, 0xda, 0xdb)?,
        }
        self.payload(s);
        Ok(())
    }

    fn bin(&mut self, b: &[u8]) -> Res {
        let n = b.len();
        self.room(n)?;
        match u8::try_from(n) {
            Ok(n8) => self.out.extend_from_slice(&[0xc4, n8]),
            Err(_) => self.header(n, 0, 0xc5, 0xc6)?,
        }
        self.payload(b);
        Ok(())
    }

    /// Copies a payload's bytes, reserving [`PAYLOAD_TAIL`] more when it is large.
    #[inline]
    fn payload(&mut self, bytes: &[u8]) {
        if bytes.len() >= LARGE_PAYLOAD {
            self.out.reserve(bytes.len() + PAYLOAD_TAIL);
        }
        self.out.extend_from_slice(bytes);
    }

    #[inline]
    pub(crate) fn array_header(&mut self, n: usize) -> Res {
        self.header(n, 0x90, 0xdc, 0xdd)
    }

    /// A length header: `fix | n` below 16 (when `fix` is non-zero), then 16 and 32 bits.
    fn header(&mut self, n: usize, fix: u8, h16: u8, h32: u8) -> Res {
        if fix != 0 && n < 16 {
            self.out.push(fix | n as u8);
        } else if let Ok(n16) = u16::try_from(n) {
            self.out.push(h16);
            self.out.extend_from_slice(&n16.to_be_bytes());
        } else {
            let n32 =
                u32::try_from(n).map_err(|_| Stop::Overflow(self.out.len().saturating_add(n)))?;
            self.out.push(h32);
            self.out.extend_from_slice(&n32.to_be_bytes());
        }
        Ok(())
    }

    /// The record's shape is resolved, and defined if new, before any of its values are
    /// written: outer records take their ids before inner ones, as in msgpackr.
    /// Keys come as bytes (always those of a `str`): a `Text` key gives its bytes without the
    /// UTF-8 check that making a `&str` of an inline text costs.
    pub(crate) fn record_header<'k, I>(&mut self, keys: I) -> Res
    where
        I: ExactSizeIterator<Item = KeyRef<'k>> + Clone,
    {
        let shape = self.shapes.resolve(keys.clone());
        self.shape_header(shape, keys.map(KeyRef::bytes))
    }

    /// A record's header for a struct's keys as the encoder learned them
    /// ([`ShapeRing::resolve_learned`]).
    pub(crate) fn learned_record_header(&mut self, keys: &Arc<[&'static str]>) -> Res {
        let shape = self.shapes.resolve_learned(keys);
        self.shape_header(shape, keys.iter().map(|k| k.as_bytes()))
    }

    /// A record's header once the ring has `shape` for `keys`: the id alone when known,
    /// the definition when just made.
    #[inline]
    fn shape_header<'k>(
        &mut self,
        shape: Shape,
        keys: impl ExactSizeIterator<Item = &'k [u8]>,
    ) -> Res {
        match shape {
            Shape::Known(id) => {
                self.out.push(id);
                Ok(())
            }
            Shape::Defined(id) => self.definition(id, keys),
        }
    }

    /// `d4 72 id` and the key array.
    fn definition<'k>(&mut self, id: u8, keys: impl ExactSizeIterator<Item = &'k [u8]>) -> Res {
        self.out.extend_from_slice(&[0xd4, 0x72, id]);
        self.array_header(keys.len())?;
        for k in keys {
            self.utf8(k)?;
        }
        Ok(())
    }

    /// Ext 0x50 with the LEB128 cap-id in the smallest ext form for its length.
    fn capref(&mut self, id: u32) {
        let mut data = [0u8; 5];
        let mut len = 0;
        let mut rest = id;
        for byte in &mut data {
            len += 1;
            *byte = (rest & 0x7f) as u8;
            rest >>= 7;
            if rest == 0 {
                break;
            }
            *byte |= 0x80;
        }
        let header: &[u8] = match len {
            1 => &[0xd4, 0x50],
            2 => &[0xd5, 0x50],
            3 => &[0xc7, 0x03, 0x50],
            4 => &[0xd6, 0x50],
            _ => &[0xc7, 0x05, 0x50],
        };
        self.out.extend_from_slice(header);
        self.out.extend_from_slice(&data[..len.min(data.len())]);
    }

    /// Ext 0x74. msgpackr always uses the sized ext forms (`c7`/`c8`/`c9`) here, never
    /// fixext, even when the data length is 1, 2, 4, 8 or 16.
    fn typed_array(&mut self, t: &TypedArray) -> Res {
        let n = t.bytes.len().saturating_add(1);
        self.room(n)?;
        match u8::try_from(n) {
            Ok(n8) => self.out.extend_from_slice(&[0xc7, n8]),
            Err(_) => self.header(n, 0, 0xc8, 0xc9)?,
        }
        self.out.extend_from_slice(&[0x74, t.kind.code()]);
        self.payload(&t.bytes);
        Ok(())
    }

    /// Ext -1 in msgpackr's choice of forms: 32-bit for whole seconds in 0..2^32, 64-bit
    /// for other times in that range, 96-bit otherwise; an invalid timestamp (nanos of a
    /// second or more) as msgpackr writes an invalid Date, `d4 ff ff`.
    fn timestamp(&mut self, t: Timestamp) {
        let out = &mut *self.out;
        if !t.is_valid() {
            out.extend_from_slice(&[0xd4, 0xff, 0xff]);
            return;
        }
        match u32::try_from(t.seconds) {
            Ok(secs) if t.nanos == 0 => {
                out.extend_from_slice(&[0xd6, 0xff]);
                out.extend_from_slice(&secs.to_be_bytes());
            }
            Ok(secs) => {
                out.extend_from_slice(&[0xd7, 0xff]);
                let packed = (u64::from(t.nanos) << 34) | u64::from(secs);
                out.extend_from_slice(&packed.to_be_bytes());
            }
            Err(_) => {
                out.extend_from_slice(&[0xc7, 0x0c, 0xff]);
                out.extend_from_slice(&t.nanos.to_be_bytes());
                out.extend_from_slice(&t.seconds.to_be_bytes());
            }
        }
    }
}
