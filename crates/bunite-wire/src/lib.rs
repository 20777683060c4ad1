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
//! - [`frame`]: typed [`Frame`]s and their validation.
//! - [`limits`]: the [`Limits`] every decoder enforces.
#![deny(missing_docs)]

pub mod codec;
pub mod frame;
mod frame_codec;
pub mod ids;
pub mod limits;
mod records;
pub mod serde_impl;
pub mod value;

pub use codec::{DecodeError, Decoder, Encoder, TooLarge};
pub use frame::{
    Call, CallMeta, Cancel, CapRevoked, DropEntry, DropFrame, Frame, FrameError, Goaway, Hello,
    ResultFrame, StreamEvent, StreamFrame, WireStatus, PROTOCOL_VERSION,
};
pub use ids::{CallId, CapId};
pub use limits::Limits;
pub use serde_impl::{from_value, to_value, CapRef, SerdeError};
pub use value::{Record, Timestamp, TypedArray, TypedArrayKind, Value};
