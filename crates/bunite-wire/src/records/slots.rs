//! The decoder's slot table (PROTOCOL §3.3): the keys each of the 64 slots was defined with.

use std::sync::Arc;

use super::SLOTS;
use crate::frame_codec::Name;
use crate::text::Text;

/// Where a key ends in [`SlotKeys`]' joined string, and what the key means to the frame
/// reader, in one word: the end in the high 56 bits, the [`Name`] in the low 8. A message
/// long enough for an end to need more than 56 bits (64 PiB) cannot be held in memory.
#[derive(Debug, Clone, Copy)]
struct KeyEnd(u64);

impl KeyEnd {
    fn new(end: usize, name: Name) -> KeyEnd {
        KeyEnd((end as u64) << 8 | name as u64)
    }

    fn end(self) -> usize {
        // Fits: it came from a usize.
        (self.0 >> 8) as usize
    }

    fn name(self) -> Name {
        Name::from_index(self.0 as u8)
    }

    fn is(self, name: Name) -> bool {
        self.0 as u8 == name as u8
    }
}

/// The keys of one record definition, as the decoder keeps them.
///
/// Held twice on purpose: as [`Text`]s, which a materialized [`crate::Record`] clones (a
/// copy for short keys, an `Arc` increment for long ones, never an allocation), and as one
/// joined string with offsets, which the serde deserializer reads as `&str` for free. Each
/// key's meaning to the frame reader ([`Name`]) is worked out once, here, so reading a frame
/// costs no string comparison per key.
#[derive(Debug)]
pub(crate) struct SlotKeys {
    joined: Box<str>,
    /// End offset and name of each key.
    ends: Box<[KeyEnd]>,
    texts: Box<[Text]>,
    /// What it takes: [`SlotKeys::cost`] of its keys.
    cost: usize,
}

impl SlotKeys {
    /// The shape of `keys`, in order.
    #[cfg(test)]
    pub(crate) fn new(keys: &[&str]) -> SlotKeys {
        SlotKeys::costing(keys, SlotKeys::cost(keys))
    }

    /// The shape of `keys`, whose [`SlotKeys::cost`] the caller has worked out (to charge
    /// it before allocating).
    pub(crate) fn costing(keys: &[&str], cost: usize) -> SlotKeys {
        let joined: String = keys.concat();
        let mut end = 0;
        let ends = keys
            .iter()
            .map(|k| {
                end += k.len();
                KeyEnd::new(end, Name::of(k))
            })
            .collect();
        let texts = keys.iter().map(|k| Text::copy_from(k)).collect();
        SlotKeys {
            joined: joined.into_boxed_str(),
            ends,
            texts,
            cost,
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
            .saturating_add(heap(n.saturating_mul(std::mem::size_of::<KeyEnd>())))
            .saturating_add(heap(n.saturating_mul(std::mem::size_of::<Text>())))
            .saturating_add(long)
            .saturating_add(heap(std::mem::size_of::<SlotKeys>() + 16))
    }

    /// Bytes it takes, as [`SlotKeys::cost`] counts them.
    pub(crate) fn kept(&self) -> usize {
        self.cost
    }

    /// Number of keys.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// The keys as texts.
    pub(crate) fn texts(&self) -> &[Text] {
        &self.texts
    }

    /// What key `i` means to the frame reader (`Other` if out of range, which callers never
    /// ask for).
    #[inline]
    pub(crate) fn name(&self, i: usize) -> Name {
        self.ends.get(i).map_or(Name::Other, |e| e.name())
    }

    /// Whether the keys mean exactly `names`, in order (a frame's usual shape).
    #[inline]
    pub(crate) fn names_are(&self, names: &[Name]) -> bool {
        self.ends.len() == names.len() && self.ends.iter().zip(names).all(|(e, &n)| e.is(n))
    }

    /// Key `i` as a `str` (empty if out of range, which callers never ask for).
    #[inline]
    pub(crate) fn key(&self, i: usize) -> &str {
        let start = match i.checked_sub(1) {
            Some(prev) => self.ends.get(prev).map_or(0, |e| e.end()),
            None => 0,
        };
        let end = self.ends.get(i).map_or(start, |e| e.end());
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
    /// What the defined slots take together ([`SlotKeys::kept`]).
    kept: usize,
}

impl Default for SlotTable {
    fn default() -> Self {
        SlotTable {
            slots: std::array::from_fn(|_| None),
            kept: 0,
        }
    }
}

impl SlotTable {
    /// Defines (or redefines) the slot of `id`.
    pub(crate) fn define(&mut self, id: u8, shape: Arc<SlotKeys>) {
        let added = shape.kept();
        if let Some(slot) = self.slots.get_mut(usize::from(id) % SLOTS) {
            let gone = slot.as_ref().map_or(0, |s| s.kept());
            *slot = Some(shape);
            self.kept = self.kept.saturating_sub(gone).saturating_add(added);
        }
    }

    /// What the table would take with the slot of `id` defined by a shape taking `cost`.
    pub(crate) fn kept_with(&self, id: u8, cost: usize) -> usize {
        let gone = self
            .slots
            .get(usize::from(id) % SLOTS)
            .and_then(|s| s.as_ref())
            .map_or(0, |s| s.kept());
        self.kept.saturating_sub(gone).saturating_add(cost)
    }

    /// What the defined slots take together.
    pub(crate) fn kept(&self) -> usize {
        self.kept
    }

    /// What the shapes of this table that `earlier` does not hold take: the definitions
    /// that came between the two.
    pub(crate) fn added_since(&self, earlier: &SlotTable) -> usize {
        self.slots
            .iter()
            .zip(&earlier.slots)
            .map(|(now, then)| match (now, then) {
                (Some(now), Some(then)) if Arc::ptr_eq(now, then) => 0,
                (Some(now), _) => now.kept(),
                (None, _) => 0,
            })
            .sum()
    }

    /// The shape of the slot of `id`, if it was ever defined.
    #[inline]
    pub(crate) fn get(&self, id: u8) -> Option<&Arc<SlotKeys>> {
        self.slots.get(usize::from(id) % SLOTS)?.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_table_counts_what_its_slots_keep_and_gives_back_what_is_overwritten() {
        let mut slots = SlotTable::default();
        let wide: Vec<String> = (0..100)
            .map(|i| format!("a key of thirty bytes, no {i:03}"))
            .collect();
        let wide: Vec<&str> = wide.iter().map(String::as_str).collect();
        let (small, large) = (SlotKeys::cost(&["a", "b"]), SlotKeys::cost(&wide));
        assert!(large > 100 * 30 && small < large);
        assert_eq!(slots.kept_with(0x40, large), large);
        slots.define(0x40, Arc::new(SlotKeys::new(&wide)));
        slots.define(0x41, Arc::new(SlotKeys::new(&["a", "b"])));
        assert_eq!(slots.kept(), large + small);
        // Redefining 0x40 (the same slot as 0x00) would give its wide shape back.
        assert_eq!(slots.kept_with(0x00, small), 2 * small);
        slots.define(0x40, Arc::new(SlotKeys::new(&["a", "b"])));
        assert_eq!(slots.kept(), 2 * small);
    }

    #[test]
    fn shapes_read_keys_as_str_and_text_and_know_their_names() {
        let long = "k".repeat(40);
        let shape = SlotKeys::new(&["", "id", &long, "é", "op", "messages"]);
        let keys: Vec<&str> = (0..shape.len()).map(|i| shape.key(i)).collect();
        assert_eq!(keys, ["", "id", long.as_str(), "é", "op", "messages"]);
        assert_eq!(shape.texts()[2], long.as_str());
        assert_eq!(shape.key(9), "");
        let names: Vec<Name> = (0..shape.len() + 1).map(|i| shape.name(i)).collect();
        use Name::*;
        assert_eq!(names, [Other, Id, Other, Other, Op, Messages, Other]);
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn the_names_cost_nothing_more() {
        // Packed into the offsets: a key costs the budget what it did before names.
        assert_eq!(std::mem::size_of::<KeyEnd>(), std::mem::size_of::<usize>());
    }
}
