//! The record tables of PROTOCOL §3.3: the encoder's shape ring and the decoder's slot table.
//!
//! The two sides are deliberately asymmetric. The decoder obeys whatever the peer defines (64
//! slots, any id at any time). The encoder reproduces msgpackr 1.12 (`useRecords`,
//! `sequential`) byte for byte: a ring of 32 ids where a new shape evicts whatever shape held
//! its id. msgpackr keeps the last 32 created shapes in a FIFO and hands out ids round-robin;
//! with both at 32 the FIFO's oldest entry is always the one holding the next ring id, so a
//! ring of slots is the whole model.
//!
//! One exception, for memory: a shape whose keys take more than [`FORGET_OVER`] bytes (a
//! record used as a dictionary) is written as a definition with the next id, as msgpackr
//! writes it, but not remembered, so the next record of the same keys is defined again
//! (with the next id) where msgpackr would write its one-byte reference. Any decoder reads
//! the same values either way; what differs is only the bytes, and only for such records.
//! Without it, a handler that returns what a peer sent (an echo, an update that returns
//! the record) made the encoder keep copies of up to 32 such key lists for the connection's
//! life, whatever the peer's decoder would keep.
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
/// Key bytes above which the encoder does not remember a shape it defines (see the module
/// docs): 64 KiB, so the ring keeps at most 2 MiB of copied keys, and records of ordinary
/// shapes (frames, structs, objects of a few hundred keys) are remembered as msgpackr
/// remembers them.
pub(crate) const FORGET_OVER: usize = 64 * 1024;
