//! The record tables of PROTOCOL §3.3: the encoder's shape ring and the decoder's slot table.
//!
//! The two sides are deliberately asymmetric. The decoder obeys whatever the peer defines (64
//! slots, any id at any time). The encoder reproduces msgpackr 1.12 (`useRecords`,
//! `sequential`) byte for byte: a ring of 32 ids where a new shape evicts whatever shape held
//! its id. msgpackr keeps the last 32 created shapes in a FIFO and hands out ids round-robin;
//! with both at 32 the FIFO's oldest entry is always the one holding the next ring id, so a
//! ring of slots is the whole model.
//!
//! - `ring`: the encoder's [`ShapeRing`], with a fast path for the key lists known at compile
//!   time ([`StaticShape`]: frames and their nested records).
//! - `slots`: the decoder's [`SlotTable`] of [`SlotKeys`], each definition's keys kept with
//!   what they mean to the frame reader.

mod ring;
mod slots;

pub(crate) use ring::{KeyRef, Shape, ShapeRing, StaticShape};
pub(crate) use slots::{SlotKeys, SlotTable};

/// Number of ids the encoder cycles through (`0x40..=0x5f`).
pub(crate) const RING: usize = 32;
/// Number of slots a decoder keeps (`0x40..=0x7f`, addressed by `id & 0x3f`).
pub(crate) const SLOTS: usize = 64;
/// The first record id.
pub(crate) const FIRST_ID: u8 = 0x40;
