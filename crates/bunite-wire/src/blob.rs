//! [`Blob`]: binary data that a received message hands over without a copy.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::serde_impl::{magic, stash};

/// Binary data (msgpack `bin`, a JavaScript `Uint8Array`) held as [`Bytes`].
///
/// It goes on the wire exactly as [`serde_bytes::ByteBuf`] does, and reads everything a
/// `ByteBuf` reads. The difference is on receipt: read from a received payload
/// ([`Payload::deserialize`](crate::Payload::deserialize), which is how typed handlers get
/// their arguments and typed clients their results), a `Blob` of at least
/// [`Blob::SHARE_MIN`] bytes that is at least half of its message is a slice of the
/// message's own buffer instead of a copy of it. A 64 KiB echo then copies the payload
/// twice fewer times (out of the server's arguments and out of the client's result).
///
/// Sharing has the cost every zero-copy decoder has: the buffer the message arrived in
/// stays allocated while any `Blob` sharing it lives, and that buffer may hold other
/// messages too (over a byte stream, up to a few hundred KiB read at once). A handler that
/// keeps many blobs for long should keep copies ([`Blob::detached`]), each holding only its
/// own bytes. Other blobs are always copied: a short one, so that a short value never pins
/// a large buffer, and one that is less than half of its message, so that a peer cannot
/// make a small kept blob hold a large message (a 16 KiB blob beside 64 MiB of other
/// fields holds 16 KiB).
///
/// ```
/// use bunite_wire::{Blob, Payload, Value};
///
/// let payload = Payload::from_value(Value::Bin(vec![7; 4]));
/// let blob: Blob = payload.deserialize().unwrap();
/// assert_eq!(&blob[..], &[7, 7, 7, 7]);
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Blob(Bytes);

impl Blob {
    /// The smallest blob read from a received payload that shares the message's buffer
    /// (if it is also at least half of the message); shorter ones are copied.
    pub const SHARE_MIN: usize = 16 * 1024;

    /// A blob of these bytes.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Blob(bytes.into())
    }

    /// A blob holding a copy of `data`.
    pub fn copy_from_slice(data: &[u8]) -> Self {
        Blob(Bytes::copy_from_slice(data))
    }

    /// The bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The same bytes in an allocation of their own (no longer sharing a received
    /// message's buffer), to keep for long.
    pub fn detached(&self) -> Blob {
        Blob::copy_from_slice(&self.0)
    }
}

impl Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Blob").field(&self.0).finish()
    }
}

impl From<Bytes> for Blob {
    fn from(b: Bytes) -> Self {
        Blob(b)
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Self {
        Blob(v.into())
    }
}

impl From<&'static [u8]> for Blob {
    fn from(s: &'static [u8]) -> Self {
        Blob(Bytes::from_static(s))
    }
}

impl From<Blob> for Bytes {
    fn from(b: Blob) -> Self {
        b.0
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Our payload deserializer recognises the private name and hands over a slice of
        // the message (`stash`); every other deserializer sees an ordinary newtype.
        d.deserialize_newtype_struct(magic::BLOB, BlobVisitor)
    }
}

struct BlobVisitor;

impl<'de> Visitor<'de> for BlobVisitor {
    type Value = Blob;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Blob, D::Error> {
        serde_bytes::ByteBuf::deserialize(d).map(|b| Blob::from(b.into_vec()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Blob, E> {
        // Our deserializer's word for "take the shared slice"; nothing runs between its
        // put and this take. Any other string reads as its UTF-8 bytes, as for `ByteBuf`.
        match stash::take_bytes() {
            Some(b) if v == stash::BYTES_TAG => Ok(Blob(b)),
            _ => Ok(Blob::copy_from_slice(v.as_bytes())),
        }
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Blob, E> {
        Ok(Blob::copy_from_slice(v))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Blob, E> {
        Ok(Blob::from(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Blob, A::Error> {
        serde_bytes::ByteBuf::deserialize(de::value::SeqAccessDeserializer::new(seq))
            .map(|b| Blob::from(b.into_vec()))
    }
}
