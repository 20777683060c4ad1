//! [`Payload`]: a value received from the peer, validated but not yet materialized.
//!
//! Decoding a frame ([`crate::Decoder::decode_frame_lazy`]) validates the whole message and
//! keeps each payload as a zero-copy slice of the message plus a snapshot of the record slot
//! table where the payload starts. A handler then reads it straight into its own type
//! ([`Payload::deserialize`]), or as a [`Value`] ([`Payload::to_value`]), or only collects
//! its CapRefs to release them ([`Payload::cap_refs`]); each of these re-reads the bytes with
//! a private copy of the snapshot, so a payload can be read any number of times, from any
//! thread, long after later frames redefined the decoder's slots.

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;

use crate::codec::budget::Meter;
use crate::codec::cursor::{Ctx, Cursor, Head};
use crate::codec::skip::{skip, Skip};
use crate::codec::{decode, DecodeError};
use crate::ids::CapId;
use crate::records::SlotTable;
use crate::serde_impl::{from_value, SerdeError};
use crate::value::Value;

/// A value received from the peer: validated, not yet materialized (see the module docs).
///
/// Cheap to clone (two atomic increments for a received payload), `Send`, `Sync` and
/// `'static`.
#[derive(Clone, Default)]
pub struct Payload(Inner);

#[derive(Clone, Default)]
enum Inner {
    /// `undefined`, without allocating.
    #[default]
    Undefined,
    /// Built locally from a value.
    Local(Arc<Value>),
    /// Received: a slice of a message.
    Wire(Wire),
}

#[derive(Clone)]
struct Wire {
    /// Exactly the payload's bytes.
    bytes: Held,
    /// The decoder's slot table where the payload starts.
    slots: Arc<SlotTable>,
    /// The payload's depth in its message (the depth limit counts from the frame).
    depth: usize,
    max_depth: usize,
    /// The message's decode budget, which typed decoding charges.
    budget: usize,
    /// What materializing the payload as a `Value` costs, as the frame check measured it.
    cost: usize,
    /// The length of the whole message the payload is part of: a [`crate::Blob`] shares
    /// the message's buffer only when it is at least half of it.
    message: usize,
}

impl Payload {
    /// A payload built locally (tests, in-process use).
    pub fn from_value(v: Value) -> Payload {
        match v {
            Value::Undefined => Payload(Inner::Undefined),
            v => Payload(Inner::Local(Arc::new(v))),
        }
    }

    /// `undefined`: an absent value (no args, a void result).
    pub fn undefined() -> Payload {
        Payload(Inner::Undefined)
    }

    /// A received payload: `bytes` at `depth` in its message, read with `slots`.
    pub(crate) fn wire(
        bytes: Bytes,
        slots: Arc<SlotTable>,
        depth: usize,
        max_depth: usize,
        budget: usize,
        cost: usize,
        message: usize,
    ) -> Payload {
        Payload(Inner::Wire(Wire {
            bytes: Held::Shared(bytes),
            slots,
            depth,
            max_depth,
            budget,
            cost,
            message,
        }))
    }

    /// True when the payload is `undefined`.
    pub fn is_undefined(&self) -> bool {
        match &self.0 {
            Inner::Undefined => true,
            Inner::Local(v) => v.is_undefined(),
            Inner::Wire(w) => matches!(Cursor::new(w.bytes.as_slice()).head(), Ok(Head::Undefined)),
        }
    }

    /// The payload as a [`Value`]. A received payload allocates exactly what the frame check
    /// charged for it, so this never takes more than the message's decode budget.
    pub fn to_value(&self) -> Result<Value, DecodeError> {
        match &self.0 {
            Inner::Undefined => Ok(Value::Undefined),
            Inner::Local(v) => Ok(Value::clone(v)),
            Inner::Wire(w) => w.read(w.cost, decode::value),
        }
    }

    /// [`Payload::to_value`], without a copy for a local payload held nowhere else.
    pub fn into_value(self) -> Result<Value, DecodeError> {
        match self.0 {
            Inner::Local(v) => Ok(Arc::try_unwrap(v).unwrap_or_else(|v| Value::clone(&v))),
            _ => self.to_value(),
        }
    }

    /// The payload as a `T`, read straight from the message's bytes: exactly what
    /// `from_value::<T>(self.to_value()?)` gives, without building the `Value`.
    ///
    /// What it builds (each sequence element's and map entry's size, string and byte
    /// lengths) is charged against the message's decode budget; over it, the error says so.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, SerdeError> {
        match &self.0 {
            Inner::Undefined => from_value(Value::Undefined),
            Inner::Local(v) => from_value(Value::clone(v)),
            Inner::Wire(w) => {
                let mut slots = Arc::clone(&w.slots);
                let cx = Ctx {
                    cur: Cursor::new(w.bytes.as_slice()),
                    owner: w.bytes.shared().map(|b| (b, w.message)),
                    slots: &mut slots,
                    meter: Meter::new(w.budget),
                    max_depth: w.max_depth,
                    max_table: usize::MAX,
                };
                crate::serde_impl::raw_de::from_ctx(cx, w.depth)
            }
        }
    }

    /// Every CapRef inside, in order, without building a `Value` (to release them).
    pub fn cap_refs(&self) -> Vec<CapId> {
        let mut caps = Vec::new();
        match &self.0 {
            Inner::Undefined => {}
            Inner::Local(v) => collect_caps(v, &mut caps),
            Inner::Wire(w) => {
                let mut how = Skip {
                    charge_values: false,
                    caps: Some(&mut caps),
                };
                // Validated when the frame was decoded, so this only fails if the budget
                // cannot hold the list (which it always can: the frame check charged more).
                let _ = w.read(w.budget, |cx, depth| skip(cx, depth, &mut how));
            }
        }
        caps
    }

    /// Bytes on the wire (0 for a local payload).
    pub fn wire_len(&self) -> usize {
        match &self.0 {
            Inner::Wire(w) => w.bytes.len(),
            _ => 0,
        }
    }

    /// Readies the payload to be kept for long (a value waiting in a queue until it is
    /// read). A received payload is a slice of its message and keeps the whole message
    /// alive, and with it the buffer the message was read into, which may hold other
    /// messages too (the tail of a long one, up to 64 MiB). As for a [`crate::Blob`], one
    /// shorter than [`crate::Blob::SHARE_MIN`] or less than half of its message is copied
    /// out: a one-byte value beside 64 MiB of fields the decoder skipped, or read into the
    /// same buffer as a long message since dropped, then keeps its own bytes only. A longer
    /// one keeps its message, at most about twice its size, which
    /// [`Payload::kept_beyond`] counts.
    ///
    /// Short copies go into `arena`, a few KiB at a time, instead of an allocation each:
    /// give each queue its own, so that values read in order free its chunks in order and
    /// the arena keeps at most one chunk beyond the values not yet read.
    pub fn unpin(&mut self, arena: &mut BytesMut) {
        /// One chunk of an arena: a few hundred stream values of a few bytes.
        const CHUNK: usize = 4096;
        let Inner::Wire(w) = &mut self.0 else {
            return;
        };
        let len = w.bytes.len();
        if len >= crate::Blob::SHARE_MIN && len >= w.message.div_ceil(2) {
            return;
        }
        w.message = len;
        if len <= INLINE {
            let mut buf = [0; INLINE];
            buf[..len].copy_from_slice(w.bytes.as_slice());
            w.bytes = Held::Inline {
                len: len as u8,
                buf,
            };
            return;
        }
        if arena.capacity() - arena.len() < len {
            *arena = BytesMut::with_capacity(CHUNK.max(len));
        }
        arena.extend_from_slice(w.bytes.as_slice());
        w.bytes = Held::Shared(arena.split().freeze());
    }

    /// What keeping this payload costs beyond keeping payloads read with `last` (the table
    /// of one kept before it), and the table to pass for the next one: the message it keeps
    /// alive (only its own bytes after [`Payload::unpin`]), plus the record definitions its
    /// table holds that `last` does not (definitions its decoder may since have replaced,
    /// which the payload keeps alive). Each definition is counted once, with the first
    /// payload whose table holds it; with no `last`, the table is the decoder's own and
    /// nothing of it is counted. The table is `None` when it is `last` itself (a pointer
    /// comparison: nearly always) or the payload is local.
    pub fn kept_beyond(&self, last: Option<&TableSnapshot>) -> (usize, Option<TableSnapshot>) {
        let Inner::Wire(w) = &self.0 else {
            return (0, None);
        };
        let message = w.message.max(w.bytes.len());
        let added = match last {
            Some(last) if Arc::ptr_eq(&w.slots, &last.0) => return (message, None),
            Some(last) => w.slots.added_since(&last.0),
            None => 0,
        };
        let table = TableSnapshot(Arc::clone(&w.slots));
        (message.saturating_add(added), Some(table))
    }
}

/// The record table received payloads are read with ([`Payload::kept_beyond`]): payloads
/// read from the same stretch of messages share one, and a definition makes the next
/// payloads hold another, so a payload kept for long may keep definitions its decoder has
/// replaced.
#[derive(Clone)]
pub struct TableSnapshot(Arc<SlotTable>);

impl std::fmt::Debug for TableSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableSnapshot")
            .field("kept", &self.0.kept())
            .finish()
    }
}

/// A received payload's bytes: a slice of its message, or a copy short enough to keep
/// inline ([`Payload::unpin`]).
#[derive(Clone)]
enum Held {
    Shared(Bytes),
    Inline { len: u8, buf: [u8; INLINE] },
}

/// The longest payload [`Payload::unpin`] keeps inline: a number, a short string, a small
/// record of a few fields, in the room a `Bytes` takes anyway.
const INLINE: usize = 23;

impl Held {
    fn as_slice(&self) -> &[u8] {
        match self {
            Held::Shared(b) => b,
            Held::Inline { len, buf } => &buf[..usize::from(*len)],
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// The message buffer the bytes are a slice of, which a `Blob` read from them may share.
    fn shared(&self) -> Option<&Bytes> {
        match self {
            Held::Shared(b) => Some(b),
            Held::Inline { .. } => None,
        }
    }
}

impl Wire {
    /// Runs `read` over the payload with a private copy of its slot table and `limit` bytes
    /// of budget; the payload must be read exactly.
    fn read<T>(
        &self,
        limit: usize,
        read: impl FnOnce(&mut Ctx<'_, '_>, usize) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        let mut slots = Arc::clone(&self.slots);
        let mut cx = Ctx {
            cur: Cursor::new(self.bytes.as_slice()),
            owner: None,
            slots: &mut slots,
            meter: Meter::new(limit),
            max_depth: self.max_depth,
            max_table: usize::MAX,
        };
        let out = read(&mut cx, self.depth)?;
        if cx.cur.at_end() {
            Ok(out)
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

fn collect_caps(v: &Value, out: &mut Vec<CapId>) {
    match v {
        Value::CapRef(id) => out.push(*id),
        Value::Array(items) => items.iter().for_each(|v| collect_caps(v, out)),
        Value::Record(r) => r.0.iter().for_each(|(_, v)| collect_caps(v, out)),
        Value::Map(m) => m.iter().for_each(|(k, v)| {
            collect_caps(k, out);
            collect_caps(v, out);
        }),
        _ => {}
    }
}

impl From<Value> for Payload {
    fn from(v: Value) -> Self {
        Payload::from_value(v)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Undefined => f.write_str("Payload(undefined)"),
            Inner::Local(v) => f.debug_tuple("Payload").field(v).finish(),
            Inner::Wire(w) => f
                .debug_struct("Payload")
                .field("wire_len", &w.bytes.len())
                .field("cost", &w.cost)
                .finish(),
        }
    }
}
