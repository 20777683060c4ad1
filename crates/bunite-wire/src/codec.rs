//! The stateful msgpackr-compatible codec (PROTOCOL §3): one [`Encoder`] and one [`Decoder`]
//! per connection direction, each keeping its record table for the connection's lifetime.
//!
//! Because of that state, every frame a connection sends must go through the same encoder in
//! order, and every frame it receives through the same decoder in order (PROTOCOL §2).
//!
//! A record's keys must be distinct. The encoder writes what it is given; the decoder
//! rejects a definition that repeats a key, because a JS object keeps the last of two equal
//! keys and [`crate::Record::get`] the first, and the two peers would read different frames.

pub(crate) mod budget;
pub(crate) mod cursor;
pub(crate) mod decode;
pub(crate) mod encode;
pub(crate) mod skip;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytes::Bytes;

use crate::frame::{Frame, FrameError};
use crate::limits::DecodeLimits;
use crate::payload::Payload;
use crate::records::{ShapeRing, SlotTable};
use crate::serde_impl::direct::StructKeys;
use crate::serde_impl::SerdeError;
use crate::text::LastName;
use crate::value::Value;
use budget::Meter;
use cursor::{Ctx, Cursor};

/// Why bytes are not a valid bunite value. Plain data, no allocation: cheap to return from
/// the hot path and to log. Any of these is a protocol error (PROTOCOL §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended inside a value.
    #[error("unexpected end of input")]
    UnexpectedEof,
    /// A complete value was followed by more bytes.
    #[error("trailing bytes after the value")]
    TrailingBytes,
    /// A string is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A record reference to a slot that was never defined.
    #[error("reference to undefined record slot 0x{0:02x}")]
    UnknownRecordSlot(u8),
    /// Nesting deeper than [`DecodeLimits::max_depth`].
    #[error("value nested deeper than the depth limit")]
    DepthExceeded,
    /// The input is longer than [`DecodeLimits::max_bytes`].
    #[error("message exceeds the size limit")]
    TooLarge,
    /// Decoding the input would take more memory than its decode budget allows
    /// ([`DecodeLimits::decode_budget`], PROTOCOL §13.11).
    #[error("message would decode into more memory than its budget allows")]
    OverBudget,
    /// An extension type this codec does not know, or one used in a form it never takes.
    #[error("invalid or unknown extension type {0}")]
    InvalidExtension(i8),
    /// A byte msgpack never uses (`0xc1`).
    #[error("reserved byte 0x{0:02x}")]
    ReservedByte(u8),
    /// A record definition whose keys are not an array of distinct strings.
    #[error("record definition keys are not an array of distinct strings")]
    BadRecordKeys,
    /// A typed array with an unknown subtype or a length that is not a multiple of its
    /// element size.
    #[error("malformed typed array")]
    BadTypedArray,
    /// A CapRef whose varint is malformed, longer than 5 bytes, or not below 2^32.
    #[error("malformed capability reference")]
    BadCapRef,
    /// A timestamp of 8 or 12 bytes whose nanoseconds are a second or more. (An ext -1 of
    /// another length than 4, 8 or 12 bytes is msgpackr's invalid Date,
    /// [`Timestamp::INVALID`](crate::Timestamp::INVALID).)
    #[error("malformed timestamp")]
    BadTimestamp,
    /// A record definition would take the record table, which keeps definitions for the
    /// connection's life, past [`DecodeLimits::max_record_table_bytes`].
    #[error(
        "record definitions would keep {needed} bytes, more than the record table's \
         limit of {max} bytes (max_record_table_bytes)"
    )]
    RecordTableFull {
        /// What the table would take with the definition.
        needed: usize,
        /// The limit.
        max: usize,
    },
}

/// An encoded value would be larger than the allowed maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("encoded value is at least {size} bytes, above the maximum of {max}")]
pub struct TooLarge {
    /// A lower bound of the encoded size, above `max`: the encoder stops as soon as it
    /// knows the value cannot fit.
    pub size: usize,
    /// The maximum that was asked for.
    pub max: usize,
}

/// Why a frame with an [`Outgoing`](crate::Outgoing) payload was not encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// It would be larger than the allowed maximum.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// Its typed payload does not serialize (the error [`crate::to_value`] gives).
    #[error(transparent)]
    Serialize(#[from] SerdeError),
}

/// Why bytes are not a valid frame: either not a value, or a value that is not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameDecodeError {
    /// The bytes are not a valid value.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The value is not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

const UNREPRESENTABLE: &str =
    "value cannot be encoded: a string, binary, array or map holds more than 2^32-1 items";

/// Encodes values for one direction of one connection.
///
/// Output is byte-identical with the reference peer's msgpackr encoder, including which
/// record ids it assigns (PROTOCOL §3.3).
#[derive(Debug, Default)]
pub struct Encoder {
    shapes: ShapeRing,
    /// The keys of the structs written directly ([`crate::Outgoing`]).
    structs: StructKeys,
}

// Every connection holds an encoder (per end), so its shape table grows with use instead
// of being 32 empty slots inline (it was 1,120 bytes).
const _: () = assert!(std::mem::size_of::<Encoder>() <= 160);

impl Encoder {
    /// A fresh encoder with an empty shape table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the encoding of `v` to `out`.
    ///
    /// # Panics
    ///
    /// If `v` holds a string, binary, array, map or record with more than 2^32-1 bytes or
    /// entries, which msgpack cannot represent; [`Encoder::encode_bounded`] returns an error
    /// instead.
    pub fn encode(&mut self, v: &Value, out: &mut Vec<u8>) {
        if self.encode_bounded(v, usize::MAX, out).is_err() {
            panic!("{UNREPRESENTABLE}");
        }
    }

    /// The encoding of `v` as a new vector.
    ///
    /// # Panics
    ///
    /// As [`Encoder::encode`].
    pub fn encode_to_vec(&mut self, v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(v, &mut out);
        out
    }

    /// Appends the encoding of `v` to `out` if it takes at most `max` bytes.
    ///
    /// On error nothing happened: `out` is truncated back to its length before the call and
    /// the shape table is exactly as it was, so the next value encodes as if this one had
    /// never been tried. The encoder stops as soon as it passes `max`, so an oversized value
    /// costs little more than `max` bytes of work.
    pub fn encode_bounded(
        &mut self,
        v: &Value,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), TooLarge> {
        too_large(self.bounded(max, out, |w| w.value(v)), max)
    }

    /// Appends the encoding of a frame to `out`.
    ///
    /// Writes the same bytes as encoding [`Frame::to_value`], without copying the frame's
    /// payload into a temporary [`Value`].
    ///
    /// # Panics
    ///
    /// As [`Encoder::encode`].
    pub fn encode_frame(&mut self, f: &Frame, out: &mut Vec<u8>) {
        if self.encode_frame_bounded(f, usize::MAX, out).is_err() {
            panic!("{UNREPRESENTABLE}");
        }
    }

    /// [`Encoder::encode_frame`] with the guarantees of [`Encoder::encode_bounded`].
    pub fn encode_frame_bounded(
        &mut self,
        f: &Frame,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), TooLarge> {
        too_large(
            self.bounded(max, out, |w| crate::frame_codec::encode::frame(w, f)),
            max,
        )
    }

    /// [`Encoder::encode_frame_bounded`] for a frame whose payload is an [`Outgoing`]
    /// value (or any [`AsOutgoing`]: an [`OutgoingRef`], say): a typed payload is
    /// serialized straight into `out`, with the bytes of encoding its `Value`. On error
    /// nothing happened, as with [`Encoder::encode_bounded`].
    ///
    /// [`Outgoing`]: crate::Outgoing
    /// [`AsOutgoing`]: crate::AsOutgoing
    /// [`OutgoingRef`]: crate::OutgoingRef
    pub fn encode_outgoing_frame_bounded<P: crate::AsOutgoing>(
        &mut self,
        f: &Frame<P>,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        self.encode_outgoing_frame_accepted(f, max, out, |_| true)
    }

    /// [`Encoder::encode_outgoing_frame_bounded`], kept only if `accept` agrees to its
    /// length once it is encoded (say, when the bytes must be paid for and the price is
    /// known only then). When `accept` refuses, nothing happened, as on any error, and the
    /// error is [`EncodeError::TooLarge`] with `size` the length refused.
    pub fn encode_outgoing_frame_accepted<P: crate::AsOutgoing>(
        &mut self,
        f: &Frame<P>,
        max: usize,
        out: &mut Vec<u8>,
        accept: impl FnOnce(usize) -> bool,
    ) -> Result<(), EncodeError> {
        self.bounded_accepted(
            max,
            out,
            |w| crate::frame_codec::encode::frame(w, f),
            accept,
        )
    }

    fn bounded(
        &mut self,
        max: usize,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut encode::Writer<'_>) -> Result<(), encode::Stop>,
    ) -> Result<(), EncodeError> {
        self.bounded_accepted(max, out, write, |_| true)
    }

    fn bounded_accepted(
        &mut self,
        max: usize,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut encode::Writer<'_>) -> Result<(), encode::Stop>,
        accept: impl FnOnce(usize) -> bool,
    ) -> Result<(), EncodeError> {
        let start = out.len();
        let mut w = encode::Writer::new(
            out,
            start.saturating_add(max),
            &mut self.shapes,
            &mut self.structs,
        );
        let stop = match write(&mut w) {
            Ok(()) if accept(out.len() - start) => {
                self.shapes.commit();
                return Ok(());
            }
            Ok(()) => encode::Stop::Overflow(out.len()),
            Err(stop) => stop,
        };
        out.truncate(start);
        self.shapes.rollback();
        Err(match stop {
            encode::Stop::Overflow(reached) => EncodeError::TooLarge(TooLarge {
                size: reached.saturating_sub(start),
                max,
            }),
            encode::Stop::Serialize(e) => EncodeError::Serialize(*e),
        })
    }
}

/// The error of encoding a [`Value`] or a frame of them: those always serialize, so only
/// their size can fail.
fn too_large(r: Result<(), EncodeError>, max: usize) -> Result<(), TooLarge> {
    match r {
        Ok(()) => Ok(()),
        Err(EncodeError::TooLarge(e)) => Err(e),
        Err(EncodeError::Serialize(_)) => Err(TooLarge { size: 0, max }),
    }
}

/// Decodes values for one direction of one connection.
///
/// The record slot table is shared copy-on-write with the [`Payload`]s of the frames it
/// decoded: taking a payload's snapshot costs an atomic increment, and the table is copied
/// only when a definition arrives while a snapshot is alive.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: DecodeLimits,
    slots: Arc<SlotTable>,
    /// The last long method name of a call, shared by the calls that name it again.
    names: LastName,
}

impl Decoder {
    /// A fresh decoder with an empty slot table.
    pub fn new(limits: DecodeLimits) -> Self {
        Decoder {
            limits,
            slots: Arc::default(),
            names: LastName::default(),
        }
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// Decodes exactly one value from `bytes` (one message), within the message's decode
    /// budget ([`DecodeLimits::decode_budget`]).
    ///
    /// After an error the slot table may hold definitions from the failed message; the
    /// connection is closing anyway (PROTOCOL §11).
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Value, DecodeError> {
        if bytes.len() > self.limits.max_bytes {
            return Err(DecodeError::TooLarge);
        }
        let mut cx = Ctx {
            cur: Cursor::new(bytes),
            owner: None,
            slots: &mut self.slots,
            meter: Meter::new(self.limits.decode_budget(bytes.len())),
            max_depth: self.limits.max_depth,
            max_table: self.limits.max_record_table_bytes,
        };
        let v = decode::value(&mut cx, 0)?;
        if cx.cur.at_end() {
            Ok(v)
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    /// Decodes one message and validates it as a frame, its payload materialized as a
    /// [`Value`].
    ///
    /// The message is decoded into a `Value` (within its decode budget, as
    /// [`Decoder::decode`]) and validated by the rules of [`Decoder::decode_frame_lazy`],
    /// `hello` bounds included: the two accept the same frames and make the same ones
    /// (`tests/lazy.rs` and the `frame_sequence` fuzz target hold them to it).
    pub fn decode_frame(&mut self, bytes: &[u8]) -> Result<Frame, FrameDecodeError> {
        let value = self.decode(bytes)?;
        let bounds = crate::frame_codec::HelloBounds::of(&self.limits);
        Ok(crate::frame_codec::frame_from_value_with(value, bounds)?)
    }

    /// Decodes one message as a frame without materializing its payload.
    ///
    /// The whole message is validated: well-formed msgpack, the depth limit, every record
    /// reference defined and every definition applied to the slot table in order, UTF-8,
    /// extension forms, the frame's fields, and the decode budget, charged as if every
    /// value in it were materialized (see [`crate::limits`]). The payload (a call's `args`,
    /// a result's `value`, a stream `next`'s `value`) is kept as a [`Payload`]: a slice of
    /// `msg` and a snapshot of the slot table where it starts. The frame's own fields are
    /// read straight from the bytes, never through a `Value`.
    pub fn decode_frame_lazy(&mut self, msg: &Bytes) -> Result<Frame<Payload>, FrameDecodeError> {
        crate::frame_codec::decode_lazy(&self.limits, &mut self.slots, &mut self.names, msg)
    }
}
