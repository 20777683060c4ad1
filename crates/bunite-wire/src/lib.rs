//! The bunite wire codec: values, the stateful msgpackr-compatible record codec, and typed
//! frames, byte-compatible with the bunite-core 0.10 TypeScript peer
//! (`../shared/spec/PROTOCOL.md` §3–4). This crate does no I/O and has no async runtime.
//!
//! # Layout
//!
//! - [`ids`]: `CapId` and `CallId` newtypes.
//! - [`text`]: [`Text`], the cheap-clone string of record keys and method names.
//! - [`value`]: the [`Value`] model (undefined distinct from null, records with ordered keys,
//!   non-string-key maps, CapRefs, typed arrays, timestamps).
//! - [`codec`]: the stateful [`Encoder`] and [`Decoder`], one per direction per connection;
//!   inside, `cursor` reads tokens, `decode` builds values, `skip` validates and measures
//!   without building, `budget` counts what decoding may allocate.
//! - `records` (private): the encoder's shape ring and the decoder's slot table (§3.3).
//! - [`payload`]: [`Payload`], a received value validated but not yet materialized;
//!   [`Outgoing`], a value to send, a typed one serialized straight into its frame.
//! - [`serde_impl`]: any `Serialize`/`Deserialize` type to and from a [`Value`]
//!   ([`to_value`], [`from_value`], [`CapRef`]), and straight from a payload's bytes
//!   (`raw_de`).
//! - [`frame`]: typed [`Frame`]s, generic over their payload; `frame_codec` (private) holds
//!   their key orders and the one set of validation rules, fed from a `Value` or straight
//!   from the bytes.
//! - [`limits`]: the [`DecodeLimits`] every decoder enforces, the decode budget among them.
//!
//! # Receiving
//!
//! [`Decoder::decode_frame_lazy`] validates a whole message (within its decode budget,
//! PROTOCOL §13.11) and returns a `Frame<Payload>`; a handler then reads the payload
//! straight into its own type:
//!
//! ```
//! use bunite_wire::{Call, CallId, CapId, Decoder, Encoder, Frame, DecodeLimits, Record, Value};
//! use serde::Deserialize;
//!
//! #[derive(Debug, PartialEq, Deserialize)]
//! struct Increment {
//!     delta: i64,
//! }
//!
//! let call = Frame::Call(Call {
//!     id: CallId(1),
//!     target: CapId(2),
//!     method: "increment".into(),
//!     args: Value::Record(Record::new().with("delta", 5)),
//!     meta: None,
//! });
//! let mut bytes = Vec::new();
//! Encoder::new().encode_frame(&call, &mut bytes);
//!
//! let mut decoder = Decoder::new(DecodeLimits::default());
//! let Frame::Call(received) = decoder.decode_frame_lazy(&bytes.into())? else {
//!     unreachable!("a call was sent");
//! };
//! assert_eq!(received.method, "increment");
//! assert_eq!(received.args.deserialize::<Increment>()?, Increment { delta: 5 });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Encoding and decoding values
//!
//! One encoder and one decoder per direction, each living as long as the connection:
//!
//! ```
//! use bunite_wire::{from_value, to_value, Decoder, Encoder, DecodeLimits};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Point {
//!     x: i32,
//!     label: Option<String>,
//! }
//!
//! let mut encoder = Encoder::new();
//! let mut decoder = Decoder::new(DecodeLimits::default());
//!
//! let sent = Point { x: 3, label: Some("a".into()) };
//! let first = encoder.encode_to_vec(&to_value(&sent)?);
//! // The first record of a shape carries its keys (`d4 72 40` + key array) ...
//! assert_eq!(&first[..3], &[0xd4, 0x72, 0x40]);
//! let second = encoder.encode_to_vec(&to_value(&sent)?);
//! // ... later ones only the one-byte shape id and the values.
//! assert_eq!(second, [0x40, 0x03, 0xa1, b'a']);
//!
//! for bytes in [first, second] {
//!     let received: Point = from_value(decoder.decode(&bytes)?)?;
//!     assert_eq!(received, sent);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod blob;
pub mod codec;
pub mod frame;
mod frame_codec;
pub mod ids;
pub mod limits;
mod outgoing;
pub mod payload;
mod records;
pub mod serde_impl;
pub mod text;
#[cfg(feature = "typescript")]
mod typescript;
pub mod value;

pub use blob::Blob;
pub use codec::{DecodeError, Decoder, EncodeError, Encoder, FrameDecodeError, TooLarge};
pub use frame::{
    Call, CallMeta, Cancel, CapRevoked, DropEntry, DropFrame, Frame, FrameError, Goaway, Hello,
    ResultFrame, StreamEvent, StreamFrame, WireStatus, PROTOCOL_VERSION,
};
pub use ids::{CallId, CapId};
pub use limits::DecodeLimits;
pub use outgoing::{into_value, AsOutgoing, Outgoing, OutgoingRef};
pub use payload::{Payload, TableSnapshot};
pub use serde_bytes;
pub use serde_impl::{from_value, from_value_ref, to_value, CapRef, SerdeError};
pub use text::Text;
pub use value::{Record, Timestamp, TypedArray, TypedArrayKind, Value};
