//! The bunite wire codec: values, the stateful msgpackr-compatible record codec, and typed
//! frames, byte-compatible with the bunite-core 0.10 TypeScript peer
//! (`../shared/spec/PROTOCOL.md` §3–4). This crate does no I/O and has no async runtime.
//!
//! # Layout
//!
//! - [`ids`]: `CapId` and `CallId` newtypes.
//! - [`value`]: the [`Value`] model (undefined distinct from null, records with ordered keys,
//!   non-string-key maps, CapRefs, typed arrays, timestamps).
//! - [`codec`]: the stateful [`Encoder`] and [`Decoder`], one per direction per connection.
//! - `records` (private): the encoder's shape ring and the decoder's slot table (§3.3).
//! - [`serde_impl`]: any `Serialize`/`Deserialize` type to and from a [`Value`]
//!   ([`to_value`], [`from_value`], [`CapRef`]).
//! - [`frame`]: typed [`Frame`]s; `frame_codec` (private) holds their key orders and
//!   validation.
//! - [`limits`]: the [`Limits`] every decoder enforces.
//!
//! # Example
//!
//! One encoder and one decoder per direction, each living as long as the connection:
//!
//! ```
//! use bunite_wire::{from_value, to_value, Decoder, Encoder, Limits};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct Point {
//!     x: i32,
//!     label: Option<String>,
//! }
//!
//! let mut encoder = Encoder::new();
//! let mut decoder = Decoder::new(Limits::default());
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

pub mod codec;
pub mod frame;
mod frame_codec;
pub mod ids;
pub mod limits;
pub mod payload;
mod records;
pub mod serde_impl;
pub mod text;
pub mod value;

pub use codec::{DecodeError, Decoder, Encoder, FrameDecodeError, TooLarge};
pub use frame::{
    Call, CallMeta, Cancel, CapRevoked, DropEntry, DropFrame, Frame, FrameError, Goaway, Hello,
    ResultFrame, StreamEvent, StreamFrame, WireStatus, PROTOCOL_VERSION,
};
pub use ids::{CallId, CapId};
pub use limits::Limits;
pub use payload::Payload;
pub use serde_bytes;
pub use serde_impl::{from_value, from_value_ref, to_value, CapRef, SerdeError};
pub use text::Text;
pub use value::{Record, Timestamp, TypedArray, TypedArrayKind, Value};
