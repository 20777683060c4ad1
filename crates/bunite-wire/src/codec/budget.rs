//! The decode budget's meter and the cost of what decoding allocates (see
//! [`crate::limits`] for the rules and the default).

use std::mem::size_of;

use super::DecodeError;
use crate::records::SlotTable;
use crate::text::Text;
use crate::value::Value;

/// Allocator overhead charged per heap allocation: glibc's chunk header and rounding.
pub(crate) const ALLOC: usize = 16;

/// Bytes of a heap allocation of `len` bytes (nothing for an empty one, which never
/// allocates).
pub(crate) fn heap(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len.saturating_add(ALLOC)
    }
}

/// A `Vec<Value>` of `n` elements.
pub(crate) fn array(n: usize) -> usize {
    heap(n.saturating_mul(size_of::<Value>()))
}

/// A record's `Vec<(Text, Value)>` of `n` fields (the keys are shared, not copied).
pub(crate) fn record(n: usize) -> usize {
    heap(n.saturating_mul(size_of::<(Text, Value)>()))
}

/// A map's `Vec<(Value, Value)>` of `n` entries.
pub(crate) fn map(n: usize) -> usize {
    heap(n.saturating_mul(size_of::<(Value, Value)>()))
}

/// A copy of the slot table, made when a definition arrives while a snapshot of it is held.
pub(crate) const TABLE_COPY: usize = size_of::<SlotTable>() + ALLOC;

/// Counts down what a decode may still allocate. Charged before every allocation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meter {
    limit: usize,
    left: usize,
}

impl Meter {
    /// A meter allowing `limit` bytes.
    pub(crate) fn new(limit: usize) -> Meter {
        Meter { limit, left: limit }
    }

    /// Takes `n` bytes from the budget, or fails without taking any.
    pub(crate) fn charge(&mut self, n: usize) -> Result<(), DecodeError> {
        self.left = self.left.checked_sub(n).ok_or(DecodeError::OverBudget)?;
        Ok(())
    }

    /// Bytes charged so far.
    pub(crate) fn spent(&self) -> usize {
        self.limit - self.left
    }

    /// The budget this meter started with.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}
