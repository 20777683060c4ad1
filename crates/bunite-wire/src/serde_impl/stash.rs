//! How this crate's deserializers hand a whole [`Value`] to `Value`'s own `Deserialize`.
//!
//! `Value` asks for itself as a private newtype ([`super::magic::VALUE`]) that only our
//! deserializers recognise. They answer by putting the value (already built: moved out of
//! the input, or decoded straight from the bytes with shared record keys) in this
//! thread-local slot and visiting an enum variant named [`TAG`]; `Value`'s visitor takes it
//! back at once. Serde's visitor API has no other way to pass a value through without
//! rebuilding it, which would copy every record key into a `String` and every container into
//! a new vector. Nothing runs between the put and the take, so the slot never holds more than
//! the value in flight.

use std::cell::Cell;

use crate::value::Value;

/// The variant name that says "take the stashed value".
pub(crate) const TAG: &str = "$bunite::private::Stashed";

thread_local! {
    static STASH: Cell<Option<Value>> = const { Cell::new(None) };
}

/// Hands `v` over to the next [`take`] on this thread.
pub(crate) fn put(v: Value) {
    STASH.with(|s| s.set(Some(v)));
}

/// The value handed over by [`put`].
pub(crate) fn take() -> Option<Value> {
    STASH.with(Cell::take)
}

/// The string our payload deserializer visits to say "take the stashed bytes": how a
/// [`Blob`](crate::Blob) gets a slice of the received message instead of a copy. (A string
/// from anywhere else finds nothing stashed and reads as its UTF-8 bytes, as for a
/// `ByteBuf`; a peer's string never reaches this word, it is not `bin`.)
pub(crate) const BYTES_TAG: &str = "$bunite::private::StashedBytes";

thread_local! {
    static BYTES: Cell<Option<bytes::Bytes>> = const { Cell::new(None) };
}

/// Hands `b` over to the next [`take_bytes`] on this thread.
pub(crate) fn put_bytes(b: bytes::Bytes) {
    BYTES.with(|s| s.set(Some(b)));
}

/// The bytes handed over by [`put_bytes`].
pub(crate) fn take_bytes() -> Option<bytes::Bytes> {
    BYTES.with(Cell::take)
}
