//! The encoder's shape ring (PROTOCOL §3.3): which key list each of the 32 ids holds.
//!
//! Two ways in. A value's record is found by its keys' content: a hash scanned over the used
//! slots, then a comparison (with a memo of the last slot found, since records of one shape
//! come in runs: the rows of a table, one method's args). A frame's own records have key
//! lists known at compile time ([`StaticShape`]); each remembers per ring the slot it was
//! last found in, and a slot holding that very shape (compared by address) means the shape
//! is known: a compare instead of a hash. Both hints are only hints: a slot is always checked
//! to still hold the shape (eviction, rollback), and a miss falls back to the lookup by
//! content, so the ids handed out are exactly those of the content lookup alone.

use std::sync::Arc;

use super::{FIRST_ID, FORGET_OVER, RING};
use crate::frame_codec::STATIC_SHAPES;

/// How the encoder must write a record's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// The shape is remembered: write the one-byte id.
    Known(u8),
    /// The shape was just created with this id: write `d4 72 id` and the key array.
    Defined(u8),
}

/// A key list known at compile time, with its own entry in every ring's table of hints.
/// Always a `static`, so that its address identifies it.
#[derive(Debug)]
pub(crate) struct StaticShape {
    pub(crate) keys: &'static [&'static str],
    /// Unique per shape, below [`STATIC_SHAPES`] (`frame_codec::shapes` tests both).
    pub(crate) hint: usize,
}

/// A record key as the encoder is given it: a `&'static str` (a struct's field name, a
/// literal), which can be recognised by address, or any other key's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyRef<'k> {
    Static(&'static str),
    Bytes(&'k [u8]),
}

impl<'k> KeyRef<'k> {
    #[inline]
    pub(crate) fn bytes(self) -> &'k [u8] {
        match self {
            KeyRef::Static(s) => s.as_bytes(),
            KeyRef::Bytes(b) => b,
        }
    }
}

/// The keys a slot holds: a value's record's keys (kept as the static strings they were,
/// or copied), or a static shape. A struct's keys as the encoder learned them are held as
/// that very list (see [`ShapeRing::resolve_learned`]), so that the next record of the
/// struct is recognised by address.
#[derive(Debug)]
enum Held {
    Owned(Box<[Box<[u8]>]>),
    Statics(Arc<[&'static str]>),
    Static(&'static StaticShape),
    /// A shape whose keys took more than [`FORGET_OVER`] bytes: its id was handed out, but
    /// nothing is kept and nothing matches it.
    Forgotten,
}

impl Held {
    /// Held for a new shape of `keys`.
    fn of<'k>(keys: impl ExactSizeIterator<Item = KeyRef<'k>> + Clone) -> Held {
        let statics: Option<Arc<[&'static str]>> = keys
            .clone()
            .map(|k| match k {
                KeyRef::Static(s) => Some(s),
                KeyRef::Bytes(_) => None,
            })
            .collect();
        match statics {
            Some(statics) => Held::Statics(statics),
            None if keys.clone().map(|k| k.bytes().len()).sum::<usize>() > FORGET_OVER => {
                Held::Forgotten
            }
            None => Held::Owned(keys.map(|k| Box::from(k.bytes())).collect()),
        }
    }

    /// Whether these are exactly `keys`, in order.
    #[inline]
    fn same<'k>(&self, keys: impl ExactSizeIterator<Item = KeyRef<'k>>) -> bool {
        match self {
            Held::Statics(held) => {
                held.len() == keys.len()
                    && held.iter().zip(keys).all(|(a, b)| match b {
                        // The same string by address: no need to read it.
                        KeyRef::Static(b) if std::ptr::eq(*a, b) => true,
                        b => same_key(a.as_bytes(), b.bytes()),
                    })
            }
            Held::Owned(held) => {
                held.len() == keys.len()
                    && held.iter().zip(keys).all(|(a, b)| same_key(a, b.bytes()))
            }
            Held::Static(s) => {
                s.keys.len() == keys.len()
                    && s.keys
                        .iter()
                        .zip(keys)
                        .all(|(a, b)| same_key(a.as_bytes(), b.bytes()))
            }
            Held::Forgotten => false,
        }
    }
}

/// Byte equality of two keys; keys of up to 16 bytes (nearly all) compared a word or two
/// at a time instead of through `memcmp`.
#[inline]
fn same_key(a: &[u8], b: &[u8]) -> bool {
    /// The `N` bytes at `at` (zeros if out of range, which callers never ask for).
    fn word<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
        b.get(at..at + N)
            .and_then(|w| w.try_into().ok())
            .unwrap_or([0; N])
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Two overlapping loads cover every length from N to 2N.
    match n {
        0 => true,
        1..=3 => a == b,
        4..=7 => word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4),
        8..=16 => word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, n - 8) == word::<8>(b, n - 8),
        _ => a == b,
    }
}

/// One slot change, kept so a failed bounded encode can be undone exactly.
#[derive(Debug)]
struct Undo {
    slot: usize,
    hash: u64,
    held: Option<Held>,
    next: usize,
}

/// The encoder's table: the shape held by each ring id, and the next id to hand out.
#[derive(Debug)]
pub(crate) struct ShapeRing {
    /// Hash of each slot's key sequence; scanned first so most misses never touch a string.
    /// Slots are made as ids are first handed out (in order, so `next <= hashes.len()`):
    /// a connection that uses a few shapes holds a few slots, not all 32 (an idle
    /// connection's encoder was 1 KiB of empty slots).
    hashes: Vec<u64>,
    /// What each slot holds; always as long as `hashes`.
    held: Vec<Option<Held>>,
    next: usize,
    journal: Vec<Undo>,
    /// The slot each static shape was last found in.
    hints: [u8; STATIC_SHAPES],
    /// The slot the last lookup by content found or created.
    last: usize,
}

impl Default for ShapeRing {
    fn default() -> Self {
        ShapeRing {
            hashes: Vec::new(),
            held: Vec::new(),
            next: 0,
            journal: Vec::new(),
            hints: [0; STATIC_SHAPES],
            last: 0,
        }
    }
}

impl ShapeRing {
    /// Finds the shape of `keys` or creates it (evicting the shape that held the next id).
    ///
    /// Every creation is journaled until [`ShapeRing::commit`] or [`ShapeRing::rollback`].
    pub(crate) fn resolve<'k, I>(&mut self, keys: I) -> Shape
    where
        I: ExactSizeIterator<Item = KeyRef<'k>> + Clone,
    {
        if self
            .held
            .get(self.last)
            .and_then(Option::as_ref)
            .is_some_and(|h| h.same(keys.clone()))
        {
            return Shape::Known(id_of(self.last));
        }
        let (slot, shape) = self.by_content(keys.clone(), || Held::of(keys));
        self.last = slot;
        shape
    }

    /// [`ShapeRing::resolve`] for a struct's keys as the encoder learned them: by identity
    /// when the last slot found holds this very list (the records of one struct come in runs:
    /// one method's args, the rows of a table), otherwise by content, after which the slot
    /// holds this list (the same keys, so the ring means the same).
    #[inline]
    pub(crate) fn resolve_learned(&mut self, keys: &Arc<[&'static str]>) -> Shape {
        if let Some(Some(Held::Statics(held))) = self.held.get(self.last) {
            if Arc::ptr_eq(held, keys) {
                return Shape::Known(id_of(self.last));
            }
        }
        self.resolve_learned_slow(keys)
    }

    /// Through [`ShapeRing::resolve`] (its memo of the last slot, by content: a static
    /// frame shape of the same keys is found as before), then the slot found holds this
    /// list unless it holds a static shape. A rollback that restores the slot restores
    /// what its journal entry kept.
    #[inline(never)]
    fn resolve_learned_slow(&mut self, keys: &Arc<[&'static str]>) -> Shape {
        let shape = self.resolve(keys.iter().map(|k| KeyRef::Static(k)));
        if let Some(held @ Some(Held::Owned(_) | Held::Statics(_))) = self.held.get_mut(self.last) {
            *held = Some(Held::Statics(Arc::clone(keys)));
        }
        shape
    }

    /// [`ShapeRing::resolve`] for a static shape: by identity when its hint still holds.
    #[inline]
    pub(crate) fn resolve_static(&mut self, s: &'static StaticShape) -> Shape {
        let hint = self.hints.get(s.hint).map_or(0, |&h| usize::from(h) % RING);
        if let Some(Some(Held::Static(held))) = self.held.get(hint) {
            if std::ptr::eq(*held, s) {
                return Shape::Known(id_of(hint));
            }
        }
        self.resolve_static_slow(s)
    }

    #[cold]
    fn resolve_static_slow(&mut self, s: &'static StaticShape) -> Shape {
        let keys = s.keys.iter().map(|k| KeyRef::Static(k));
        let (slot, shape) = self.by_content(keys, || Held::Static(s));
        // Found as a value's record of the same keys: hold it as the static shape from now
        // on (the same keys, so the ring means the same), so the next lookup is by identity.
        // A rollback that restores this slot restores what its journal entry kept.
        if let Some(held @ Some(Held::Owned(_) | Held::Statics(_))) = self.held.get_mut(slot) {
            *held = Some(Held::Static(s));
        }
        if let Some(hint) = self.hints.get_mut(s.hint) {
            // slot < RING (32): it fits.
            *hint = slot as u8;
        }
        shape
    }

    /// The slot holding `keys`, or a new one holding `hold()`.
    fn by_content<'k, I>(&mut self, keys: I, hold: impl FnOnce() -> Held) -> (usize, Shape)
    where
        I: ExactSizeIterator<Item = KeyRef<'k>> + Clone,
    {
        let hash = shape_hash(keys.clone().map(KeyRef::bytes));
        for (slot, (&h, held)) in self.hashes.iter().zip(&self.held).enumerate() {
            if h == hash && held.as_ref().is_some_and(|held| held.same(keys.clone())) {
                return (slot, Shape::Known(id_of(slot)));
            }
        }
        // `next` is always below RING; the modulo makes that evident.
        let slot = self.next % RING;
        if slot >= self.held.len() {
            // The first use of this id (slots are made in order).
            self.hashes.push(0);
            self.held.push(None);
        }
        self.journal.push(Undo {
            slot,
            hash: std::mem::replace(&mut self.hashes[slot], hash),
            held: self.held[slot].replace(hold()),
            next: self.next,
        });
        self.next = (slot + 1) % RING;
        (slot, Shape::Defined(id_of(slot)))
    }

    /// Forgets the journal: the changes since the last commit stay.
    pub(crate) fn commit(&mut self) {
        self.journal.clear();
    }

    /// Where the journal stands: [`ShapeRing::rollback_to`] undoes what comes after.
    pub(crate) fn mark(&self) -> usize {
        self.journal.len()
    }

    /// Undoes every change since the last commit, newest first. The hints need no undoing:
    /// every use checks them.
    pub(crate) fn rollback(&mut self) {
        self.rollback_to(0);
    }

    /// Undoes the changes made since `mark`, newest first.
    pub(crate) fn rollback_to(&mut self, mark: usize) {
        while self.journal.len() > mark {
            let Some(undo) = self.journal.pop() else {
                break;
            };
            let slot = undo.slot % RING;
            self.hashes[slot] = undo.hash;
            self.held[slot] = undo.held;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(ring: &mut ShapeRing, keys: &[&str]) -> Shape {
        ring.resolve(keys.iter().map(|k| KeyRef::Bytes(k.as_bytes())))
    }

    /// Fills the ring's ids from `from` to the last with the shapes `k<i>` and commits, so
    /// that the next new shape evicts the one at the first id.
    fn fill_and_commit(ring: &mut ShapeRing, from: usize) {
        for i in from..RING {
            resolve(ring, &[&format!("k{i}")]);
        }
        ring.commit();
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
    fn a_shape_of_more_than_64_kib_of_keys_is_defined_each_time_and_kept_nowhere() {
        let mut ring = ShapeRing::default();
        let wide: Vec<String> = (0..300).map(|i| format!("{i:0>250}")).collect();
        let wide: Vec<&str> = wide.iter().map(String::as_str).collect();
        assert!(wide.iter().map(|k| k.len()).sum::<usize>() > FORGET_OVER);
        assert_eq!(resolve(&mut ring, &["a"]), Shape::Defined(0x40));
        assert_eq!(resolve(&mut ring, &wide), Shape::Defined(0x41));
        assert!(matches!(ring.held[1], Some(Held::Forgotten)));
        // Defined again with the next id, where msgpackr would refer to 0x41; the shapes
        // around it are remembered as before.
        assert_eq!(resolve(&mut ring, &wide), Shape::Defined(0x42));
        assert_eq!(resolve(&mut ring, &["a"]), Shape::Known(0x40));
        // Just under the bound, the shape is remembered.
        let under: Vec<String> = (0..256).map(|i| format!("{i:0>256}")).collect();
        let under: Vec<&str> = under.iter().map(String::as_str).collect();
        assert_eq!(under.iter().map(|k| k.len()).sum::<usize>(), FORGET_OVER);
        assert_eq!(resolve(&mut ring, &under), Shape::Defined(0x43));
        assert_eq!(resolve(&mut ring, &under), Shape::Known(0x43));
    }

    #[test]
    fn slots_are_made_as_ids_are_first_handed_out() {
        let mut ring = ShapeRing::default();
        assert_eq!(ring.held.len(), 0);
        resolve(&mut ring, &["a"]);
        resolve(&mut ring, &["b"]);
        resolve(&mut ring, &["a"]);
        assert_eq!((ring.hashes.len(), ring.held.len()), (2, 2));
        // A rolled-back creation leaves its slot empty, and the next shape takes it.
        ring.commit();
        assert_eq!(resolve(&mut ring, &["c"]), Shape::Defined(0x42));
        ring.rollback();
        assert_eq!(ring.held.len(), 3);
        assert_eq!(resolve(&mut ring, &["d"]), Shape::Defined(0x42));
        assert_eq!(resolve(&mut ring, &["c"]), Shape::Defined(0x43));
        // A full ring holds RING slots and no more.
        for i in 0..2 * RING {
            resolve(&mut ring, &[&format!("k{i}")]);
        }
        assert_eq!((ring.hashes.len(), ring.held.len()), (RING, RING));
    }

    #[test]
    fn static_and_copied_keys_of_one_shape_share_its_id() {
        let mut ring = ShapeRing::default();
        let statics = |ring: &mut ShapeRing, keys: &[&'static str]| {
            ring.resolve(keys.iter().map(|k| KeyRef::Static(k)))
        };
        // Held as static strings, then found by copies of their bytes, and the reverse.
        assert_eq!(statics(&mut ring, &["a", "b"]), Shape::Defined(0x40));
        assert_eq!(resolve(&mut ring, &["a", "b"]), Shape::Known(0x40));
        assert_eq!(resolve(&mut ring, &["c"]), Shape::Defined(0x41));
        assert_eq!(statics(&mut ring, &["c"]), Shape::Known(0x41));
        // Equal bytes at another address, and a static of other bytes.
        let other: &'static str = Box::leak(String::from("a").into_boxed_str());
        assert_eq!(statics(&mut ring, &[other, "b"]), Shape::Known(0x40));
        assert_eq!(statics(&mut ring, &["a", "bb"]), Shape::Defined(0x42));
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

    static AB: StaticShape = StaticShape {
        keys: &["a", "b"],
        hint: 0,
    };
    static AB_TOO: StaticShape = StaticShape {
        keys: &["a", "b"],
        hint: 1,
    };

    #[test]
    fn keys_compare_as_bytes_at_every_length() {
        for n in 0..40 {
            let a = vec![b'k'; n];
            assert!(same_key(&a, &a.clone()));
            assert!(!same_key(&a, &vec![b'k'; n + 1]));
            for at in 0..n {
                let mut b = a.clone();
                b[at] = b'j';
                assert!(!same_key(&a, &b), "{n} {at}");
            }
        }
    }

    #[test]
    fn static_shapes_share_ids_with_equal_value_records() {
        let mut ring = ShapeRing::default();
        assert_eq!(resolve(&mut ring, &["a", "b"]), Shape::Defined(0x40));
        assert_eq!(ring.resolve_static(&AB), Shape::Known(0x40));
        assert_eq!(ring.resolve_static(&AB), Shape::Known(0x40));
        // Another static of the same keys, and the value's record again: the same id.
        assert_eq!(ring.resolve_static(&AB_TOO), Shape::Known(0x40));
        assert_eq!(resolve(&mut ring, &["a", "b"]), Shape::Known(0x40));
        assert_eq!(ring.resolve_static(&AB), Shape::Known(0x40));
    }

    /// A struct's learned keys share ids with equal records of every other kind, are found
    /// by address once held, and never by address in a slot that eviction or a rollback
    /// gave to other keys.
    #[test]
    fn learned_keys_share_ids_and_never_outlive_their_slot() {
        let mut ring = ShapeRing::default();
        let ab: Arc<[&'static str]> = Arc::from(["a", "b"]);
        let ab_again: Arc<[&'static str]> = Arc::from(["a", "b"]);
        // A value's record first, then the learned list: the same id, held as the list.
        assert_eq!(resolve(&mut ring, &["a", "b"]), Shape::Defined(0x40));
        assert_eq!(ring.resolve_learned(&ab), Shape::Known(0x40));
        assert!(matches!(&ring.held[0], Some(Held::Statics(h)) if Arc::ptr_eq(h, &ab)));
        assert_eq!(ring.resolve_learned(&ab), Shape::Known(0x40));
        // Another list of the same keys, a value's record and a static shape: the same id.
        assert_eq!(ring.resolve_learned(&ab_again), Shape::Known(0x40));
        assert_eq!(resolve(&mut ring, &["a", "b"]), Shape::Known(0x40));
        assert_eq!(ring.resolve_static(&AB), Shape::Known(0x40));
        assert_eq!(ring.resolve_learned(&ab), Shape::Known(0x40));
        // Other keys in between: found by content, still the same id.
        assert_eq!(resolve(&mut ring, &["c"]), Shape::Defined(0x41));
        assert_eq!(ring.resolve_learned(&ab), Shape::Known(0x40));
        fill_and_commit(&mut ring, 2);
        // Evicted by the 33rd shape, which the last lookup found: defined afresh.
        assert_eq!(resolve(&mut ring, &["new"]), Shape::Defined(0x40));
        assert_eq!(ring.resolve_learned(&ab), Shape::Defined(0x41));
        assert_eq!(ring.resolve_learned(&ab), Shape::Known(0x41));
        ring.rollback();
        // Back as before: 0x41 holds "c" again, and the list is at 0x40.
        assert_eq!(ring.resolve_learned(&ab), Shape::Known(0x40));
        assert_eq!(resolve(&mut ring, &["c"]), Shape::Known(0x41));

        // A static frame shape of the same keys keeps its slot as it is (its hint holds).
        let mut ring = ShapeRing::default();
        assert_eq!(ring.resolve_static(&AB), Shape::Defined(0x40));
        assert_eq!(ring.resolve_learned(&ab), Shape::Known(0x40));
        assert_eq!(ring.resolve_learned(&ab), Shape::Known(0x40));
        assert!(matches!(&ring.held[0], Some(Held::Static(s)) if std::ptr::eq(*s, &AB)));
        assert_eq!(ring.resolve_static(&AB), Shape::Known(0x40));
    }

    #[test]
    fn a_static_hint_never_outlives_an_eviction_or_a_rollback() {
        let mut ring = ShapeRing::default();
        assert_eq!(ring.resolve_static(&AB), Shape::Defined(0x40));
        fill_and_commit(&mut ring, 1);
        // Evicted by the 33rd shape: defined afresh with the next id.
        assert_eq!(resolve(&mut ring, &["new"]), Shape::Defined(0x40));
        assert_eq!(ring.resolve_static(&AB), Shape::Defined(0x41));
        assert_eq!(ring.resolve_static(&AB), Shape::Known(0x41));
        ring.rollback();
        // Back as before: the hint (0x41) now points at k1, and AB is at 0x40 again.
        assert_eq!(ring.resolve_static(&AB), Shape::Known(0x40));
        assert_eq!(resolve(&mut ring, &["k1"]), Shape::Known(0x41));
    }
}
