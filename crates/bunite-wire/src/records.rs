//! The record tables of PROTOCOL §3.3: the encoder's shape ring and the decoder's slot table.
//!
//! The two sides are deliberately asymmetric. The decoder obeys whatever the peer defines (64
//! slots, any id at any time). The encoder reproduces msgpackr 1.12 (`useRecords`,
//! `sequential`) byte for byte: a ring of 32 ids where a new shape evicts whatever shape held
//! its id. msgpackr keeps the last 32 created shapes in a FIFO and hands out ids round-robin;
//! with both at 32 the FIFO's oldest entry is always the one holding the next ring id, so a
//! ring of slots is the whole model.

use std::sync::Arc;

use crate::text::Text;

/// Number of ids the encoder cycles through (`0x40..=0x5f`).
pub(crate) const RING: usize = 32;
/// Number of slots a decoder keeps (`0x40..=0x7f`, addressed by `id & 0x3f`).
pub(crate) const SLOTS: usize = 64;
/// The first record id.
pub(crate) const FIRST_ID: u8 = 0x40;

/// How the encoder must write a record's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The shape is remembered: write the one-byte id.
    Known(u8),
    /// The shape was just created with this id: write `d4 72 id` and the key array.
    Defined(u8),
}

/// A shape's keys as the encoder remembers them: the bytes of each key's `str`.
type RingKeys = Box<[Box<[u8]>]>;

/// One slot change, kept so a failed bounded encode can be undone exactly.
#[derive(Debug)]
struct Undo {
    slot: usize,
    hash: u64,
    keys: Option<RingKeys>,
    next: usize,
}

/// The encoder's table: the shape held by each ring id, and the next id to hand out.
#[derive(Debug)]
pub(crate) struct ShapeRing {
    /// Hash of each slot's key sequence; scanned first so most misses never touch a string.
    hashes: [u64; RING],
    keys: [Option<RingKeys>; RING],
    next: usize,
    journal: Vec<Undo>,
}

impl Default for ShapeRing {
    fn default() -> Self {
        ShapeRing {
            hashes: [0; RING],
            keys: std::array::from_fn(|_| None),
            next: 0,
            journal: Vec::new(),
        }
    }
}

impl ShapeRing {
    /// Finds the shape of `keys` or creates it (evicting the shape that held the next id).
    ///
    /// Every creation is journaled until [`ShapeRing::commit`] or [`ShapeRing::rollback`].
    pub(crate) fn resolve<'k, I>(&mut self, keys: I) -> Shape
    where
        I: Iterator<Item = &'k [u8]> + ExactSizeIterator + Clone,
    {
        let hash = shape_hash(keys.clone());
        for (slot, (&h, held)) in self.hashes.iter().zip(&self.keys).enumerate() {
            if h == hash {
                if let Some(held) = held {
                    if held.len() == keys.len() && held.iter().map(|k| &**k).eq(keys.clone()) {
                        return Shape::Known(id_of(slot));
                    }
                }
            }
        }
        // `next` is always below RING; the modulo makes the indexing evidently in bounds.
        let slot = self.next % RING;
        let new_keys: RingKeys = keys.map(Box::from).collect();
        self.journal.push(Undo {
            slot,
            hash: std::mem::replace(&mut self.hashes[slot], hash),
            keys: self.keys[slot].replace(new_keys),
            next: self.next,
        });
        self.next = (slot + 1) % RING;
        Shape::Defined(id_of(slot))
    }

    /// Forgets the journal: the changes since the last commit stay.
    pub(crate) fn commit(&mut self) {
        self.journal.clear();
    }

    /// Undoes every change since the last commit, newest first.
    pub(crate) fn rollback(&mut self) {
        while let Some(undo) = self.journal.pop() {
            let slot = undo.slot % RING;
            self.hashes[slot] = undo.hash;
            self.keys[slot] = undo.keys;
            self.next = undo.next;
        }
    }
}

fn id_of(slot: usize) -> u8 {
    // slot < RING (32), so the sum stays within 0x40..=0x5f.
    FIRST_ID + (slot % RING) as u8
}

/// FxHash over the key sequence, with each key's length mixed in so `["ab"]` and
/// `["a", "b"]` differ. Collisions only cost a string comparison.
fn shape_hash<'k>(keys: impl Iterator<Item = &'k [u8]>) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mix = |h: u64, v: u64| (h.rotate_left(5) ^ v).wrapping_mul(K);
    let mut h = 0u64;
    for key in keys {
        h = mix(h, key.len() as u64);
        let mut chunks = key.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            h = mix(h, u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            h = mix(h, u64::from_le_bytes(word));
        }
    }
    h
}

/// The keys of one record definition, as the decoder keeps them.
///
/// Held twice on purpose: as [`Text`]s, which a materialized [`crate::Record`] clones (a
/// copy for short keys, an `Arc` increment for long ones, never an allocation), and as one
/// joined string with offsets, which the serde deserializer reads as `&str` for free.
#[derive(Debug)]
pub(crate) struct SlotKeys {
    joined: Box<str>,
    /// End offset of each key in `joined`.
    ends: Box<[usize]>,
    texts: Box<[Text]>,
}

impl SlotKeys {
    /// The shape of `keys`, in order.
    pub(crate) fn new(keys: &[&str]) -> SlotKeys {
        let joined: String = keys.concat();
        let mut end = 0;
        let ends = keys
            .iter()
            .map(|k| {
                end += k.len();
                end
            })
            .collect();
        let texts = keys.iter().map(|k| Text::copy_from(k)).collect();
        SlotKeys {
            joined: joined.into_boxed_str(),
            ends,
            texts,
        }
    }

    /// Bytes a shape of `keys` allocates, for the decode budget: the joined string, the
    /// offsets, the texts and the keys too long to be inline.
    pub(crate) fn cost(keys: &[&str]) -> usize {
        use crate::codec::budget::heap;
        let total: usize = keys.iter().map(|k| k.len()).sum();
        let long: usize = keys
            .iter()
            .filter(|k| k.len() > Text::INLINE)
            .map(|k| heap(k.len().saturating_add(2 * std::mem::size_of::<usize>())))
            .sum();
        let n = keys.len();
        heap(total)
            .saturating_add(heap(n.saturating_mul(std::mem::size_of::<usize>())))
            .saturating_add(heap(n.saturating_mul(std::mem::size_of::<Text>())))
            .saturating_add(long)
            .saturating_add(heap(std::mem::size_of::<SlotKeys>() + 16))
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.texts.len()
    }

    /// The keys as texts.
    pub(crate) fn texts(&self) -> &[Text] {
        &self.texts
    }

    /// Key `i` as a `str` (empty if out of range, which callers never ask for).
    #[inline]
    pub(crate) fn key(&self, i: usize) -> &str {
        let start = match i.checked_sub(1) {
            Some(prev) => self.ends.get(prev).copied().unwrap_or(0),
            None => 0,
        };
        let end = self.ends.get(i).copied().unwrap_or(start);
        self.joined.get(start..end).unwrap_or_default()
    }
}

/// The decoder's table: the shape defined for each of the 64 slots.
///
/// Shapes are shared (`Arc`) so that a record's values can be decoded, and may redefine the
/// very slot being read, while its keys stay alive. The table itself is cloned into every
/// lazy payload as a snapshot (`Arc<SlotTable>`, copied on write), which is why it is
/// `Clone`.
#[derive(Debug, Clone)]
pub(crate) struct SlotTable {
    slots: [Option<Arc<SlotKeys>>; SLOTS],
}

impl Default for SlotTable {
    fn default() -> Self {
        SlotTable {
            slots: std::array::from_fn(|_| None),
        }
    }
}

impl SlotTable {
    /// Defines (or redefines) the slot of `id`.
    pub(crate) fn define(&mut self, id: u8, shape: Arc<SlotKeys>) {
        if let Some(slot) = self.slots.get_mut(usize::from(id) % SLOTS) {
            *slot = Some(shape);
        }
    }

    /// The shape of the slot of `id`, if it was ever defined.
    pub(crate) fn get(&self, id: u8) -> Option<&Arc<SlotKeys>> {
        self.slots.get(usize::from(id) % SLOTS)?.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(ring: &mut ShapeRing, keys: &[&str]) -> Shape {
        ring.resolve(keys.iter().map(|k| k.as_bytes()))
    }

    #[test]
    fn new_shapes_take_ids_in_order_and_are_remembered() {
        let mut ring = ShapeRing::default();
        assert_eq!(resolve(&mut ring, &["a"]), Shape::Defined(0x40));
        assert_eq!(resolve(&mut ring, &["a", "b"]), Shape::Defined(0x41));
        assert_eq!(resolve(&mut ring, &[]), Shape::Defined(0x42));
        assert_eq!(resolve(&mut ring, &["a"]), Shape::Known(0x40));
        assert_eq!(resolve(&mut ring, &["a", "b"]), Shape::Known(0x41));
        assert_eq!(resolve(&mut ring, &[]), Shape::Known(0x42));
        // Same bytes, different split: a different shape.
        assert_eq!(resolve(&mut ring, &["ab"]), Shape::Defined(0x43));
        assert_eq!(resolve(&mut ring, &["b", "a"]), Shape::Defined(0x44));
    }

    #[test]
    fn the_33rd_shape_wraps_and_evicts_the_oldest() {
        let mut ring = ShapeRing::default();
        let names: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        for (i, n) in names.iter().take(32).enumerate() {
            assert_eq!(resolve(&mut ring, &[n]), Shape::Defined(0x40 + i as u8));
        }
        assert_eq!(resolve(&mut ring, &["k5"]), Shape::Known(0x45));
        assert_eq!(resolve(&mut ring, &["new"]), Shape::Defined(0x40));
        // k0 was evicted by "new"; defining it again takes the next id and evicts k1.
        assert_eq!(resolve(&mut ring, &["k0"]), Shape::Defined(0x41));
        assert_eq!(resolve(&mut ring, &["k1"]), Shape::Defined(0x42));
        assert_eq!(resolve(&mut ring, &["new"]), Shape::Known(0x40));
        assert_eq!(resolve(&mut ring, &["k31"]), Shape::Known(0x5f));
    }

    #[test]
    fn rollback_restores_slots_and_next_id_exactly() {
        let mut ring = ShapeRing::default();
        for i in 0..31 {
            resolve(&mut ring, &[&format!("k{i}")]);
        }
        ring.commit();
        // Wraps: 0x5f then 0x40 (evicting k0), then k0 again at 0x41 (evicting k1).
        assert_eq!(resolve(&mut ring, &["x"]), Shape::Defined(0x5f));
        assert_eq!(resolve(&mut ring, &["y"]), Shape::Defined(0x40));
        assert_eq!(resolve(&mut ring, &["k0"]), Shape::Defined(0x41));
        ring.rollback();
        assert_eq!(resolve(&mut ring, &["k0"]), Shape::Known(0x40));
        assert_eq!(resolve(&mut ring, &["k1"]), Shape::Known(0x41));
        assert_eq!(resolve(&mut ring, &["y"]), Shape::Defined(0x5f));
    }

    #[test]
    fn slot_table_masks_ids_and_overwrites() {
        let mut slots = SlotTable::default();
        assert!(slots.get(0x40).is_none());
        slots.define(0x7f, Arc::new(SlotKeys::new(&["a"])));
        assert_eq!(slots.get(0x3f).map(|s| s.key(0)), Some("a"));
        slots.define(0x7f, Arc::new(SlotKeys::new(&[])));
        assert_eq!(slots.get(0x7f).map(|k| k.len()), Some(0));
    }

    #[test]
    fn shapes_read_keys_as_str_and_text() {
        let long = "k".repeat(40);
        let shape = SlotKeys::new(&["", "id", &long, "é"]);
        let keys: Vec<&str> = (0..shape.len()).map(|i| shape.key(i)).collect();
        assert_eq!(keys, ["", "id", long.as_str(), "é"]);
        assert_eq!(shape.texts()[2], long.as_str());
        assert_eq!(shape.key(9), "");
    }
}
