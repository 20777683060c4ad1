//! Frames to and from bytes and values (PROTOCOL §4).
//!
//! Encoding: `shapes.rs` holds the reference's key orders; `encode.rs` writes each kind of
//! frame straight to msgpack ([`crate::Encoder::encode_frame`]) and `to_value.rs` builds
//! the same frame as a [`crate::Value`] ([`crate::Frame::to_value`]).
//! Decoding reads a frame's [`fields`] either from a [`crate::Value`] (`decode.rs`) or
//! straight from the bytes (`lazy.rs`), and one set of rules (`validate.rs`) turns them into
//! a frame.

#[cfg(test)]
mod agree;
mod decode;
pub(crate) mod encode;
mod fields;
#[cfg(test)]
mod golden;
mod lazy;
mod shapes;
#[cfg(test)]
mod tests;
mod to_value;
mod validate;

pub(crate) use decode::{frame_from_value, frame_from_value_with};
pub(crate) use fields::Name;
pub(crate) use lazy::decode_lazy;
pub(crate) use shapes::STATIC_SHAPES;
pub(crate) use to_value::frame_to_value;
pub(crate) use validate::HelloBounds;
