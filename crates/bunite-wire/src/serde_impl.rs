//! Any `Serialize` / `Deserialize` type to and from a [`Value`].
//!
//! # Mapping
//!
//! | Rust (serde data model) | [`Value`] |
//! | --- | --- |
//! | struct, map with only string keys | `Record` (fields in declaration order) |
//! | map with other keys | `Map` |
//! | `None`, `()`, unit struct | `Undefined` |
//! | `Some(x)`, newtype struct | `x` |
//! | sequence, tuple, tuple struct | `Array` |
//! | bytes (`serde_bytes`, [`Blob`](crate::Blob)) | `Bin` |
//! | unit variant | `Str(name)` |
//! | newtype / tuple / struct variant | `{Variant: payload}` (serde's external tagging) |
//! | integers | `Int`, or `UInt` above `i64::MAX`; 128-bit integers when they fit |
//! | [`CapRef`] | `CapRef` |
//!
//! Deserializing is lenient where the TypeScript peer is loose: `Undefined` and `Null` both
//! read as `None` / `()`; a float with an integral value reads as any integer type that
//! holds it (overflow is an error, never a wrap); integers read as floats; `Bin`, a
//! byte-sized typed array (a JS `Uint8Array`) or an array of small integers all read as
//! bytes; record keys read as integers for maps with integer keys; a missing `Option`
//! field is `None`.
//!
//! [`Value`] itself implements `Serialize` and `Deserialize`. Through [`to_value`] /
//! [`from_value`] every variant round-trips exactly. Through another format it degrades:
//! `Undefined` and `Null` become unit (`null`), `Bin` and typed arrays bytes, `Record` and
//! `Map` maps, `CapRef(n)` the map `{"$capref": n}` and `Timestamp` the map
//! `{"$timestamp": [seconds, nanos]}` (msgpackr's invalid Date,
//! [`Timestamp::INVALID`](crate::Timestamp::INVALID), is `[0, 4294967295]`; nanos of a
//! second or more are an invalid Date on the wire). Deserializing a `Value` from another
//! format gives `Record` for string-keyed maps (`CapRef` / `Timestamp` for the two
//! single-key maps just named), `Map` for others, `Int` for integers and `Float` for other
//! numbers.
//!
//! The special cases travel through serde as newtype structs with private names that only
//! this module's serializer and deserializers recognise; any other format sees an ordinary
//! newtype. `Value` itself is handed over whole by our deserializers (`stash.rs`), never
//! rebuilt key by key.
//!
//! [`crate::Payload::deserialize`] reads a type straight from a received payload's bytes
//! (`raw_de.rs`), with exactly the results of [`from_value`] on the payload's `Value`.
//!
//! What that builds is charged to the message's decode budget, with one exception out of
//! our reach: an untagged enum buffers its input in serde's private `Content` (charged, as
//! it is read through our deserializer), and an untagged enum nested in itself (`enum Tree
//! { Leaf(i64), Node(Vec<Tree>) }`) has serde copy the part below it again at each level.
//! A payload nested `d` deep can so take about `d` times its budget: a 1 MiB string under
//! 200 levels took 212 MB, against a budget of 7.3 MB. For recursive params a peer sends,
//! use an externally or internally tagged enum (no copies), or [`Value`].

mod de;
pub(crate) mod direct;
mod key;
mod raw_access;
pub(crate) mod raw_de;
mod ser;
pub(crate) mod stash;
#[cfg(test)]
mod tests;
mod value_impl;

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::CapId;
use crate::value::Value;

pub use de::ValueDeserializer;
pub use ser::ValueSerializer;

/// Private newtype names (see the module docs).
pub(crate) mod magic {
    pub(crate) const VALUE: &str = "$bunite::private::Value";
    /// [`crate::Blob`]: shared with the received message where it can be.
    pub(crate) const BLOB: &str = "$bunite::private::Blob";
    pub(crate) const CAPREF: &str = "$bunite::private::CapRef";
    pub(crate) const NULL: &str = "$bunite::private::Null";
    pub(crate) const MAP: &str = "$bunite::private::Map";
    pub(crate) const TIMESTAMP: &str = "$bunite::private::Timestamp";
    /// One name per typed-array kind, so another format sees plain bytes.
    pub(crate) const TYPED_PREFIX: &str = "$bunite::private::TypedArray::";
    /// The generic map keys of a CapRef and a Timestamp in other formats.
    pub(crate) const CAPREF_KEY: &str = "$capref";
    pub(crate) const TIMESTAMP_KEY: &str = "$timestamp";
}

/// An error converting between a Rust type and a [`Value`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SerdeError {
    message: String,
}

impl SerdeError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        SerdeError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl serde::ser::Error for SerdeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerdeError::new(msg.to_string())
    }
}

/// The most a deserializing error's message keeps, in bytes. serde's messages quote what
/// was read (`invalid type: string "…"`, an unknown field or variant), escaped, so a
/// peer's 16 MiB string of control characters made an 80 MiB message, which went back to
/// the peer as the call's error; the rest is cut at a character boundary and marked `…`,
/// as the session cuts the peer's text it sends back.
const MAX_MESSAGE: usize = 1024;

impl SerdeError {
    /// An error whose message is at most [`MAX_MESSAGE`] bytes of `msg`, for messages that
    /// quote what a peer sent.
    pub(crate) fn capped(msg: impl fmt::Display) -> Self {
        SerdeError::new(crate::text::format_capped(
            MAX_MESSAGE,
            format_args!("{msg}"),
        ))
    }
}

impl serde::de::Error for SerdeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerdeError::capped(msg)
    }
}

/// Converts any serializable value into a [`Value`].
pub fn to_value<T: Serialize + ?Sized>(v: &T) -> Result<Value, SerdeError> {
    v.serialize(ValueSerializer)
}

/// Converts a [`Value`] into any deserializable type, moving strings and bytes out of it.
pub fn from_value<T: DeserializeOwned>(v: Value) -> Result<T, SerdeError> {
    T::deserialize(ValueDeserializer::new(v))
}

/// [`from_value`] from a borrowed value. It clones the value first: prefer [`from_value`]
/// when the value can be given up.
pub fn from_value_ref<T: DeserializeOwned>(v: &Value) -> Result<T, SerdeError> {
    from_value(v.clone())
}

/// A capability reference inside a serde type: (de)serializes as a [`Value::CapRef`]
/// (ext 0x50 on the wire, PROTOCOL §3.2).
///
/// Through this crate's deserializer only a real `CapRef` value is accepted, never a
/// number. Other formats see `{"$capref": n}`; so does serde's internal buffering (untagged
/// and internally tagged enums, `flatten`), which therefore also accepts a record of that
/// one key in place of a CapRef.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CapRef(pub CapId);

impl Serialize for CapRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(magic::CAPREF, &value_impl::CapRefRepr(self.0 .0))
    }
}

impl<'de> Deserialize<'de> for CapRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_newtype_struct(magic::CAPREF, value_impl::CapRefVisitor)
            .map(|id| CapRef(CapId(id)))
    }
}

impl From<CapId> for CapRef {
    fn from(id: CapId) -> Self {
        CapRef(id)
    }
}
