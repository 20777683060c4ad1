//! The hash tables of the call path: hashbrown's maps (the code std's `HashMap` wraps)
//! with foldhash's hasher, and the rule by which they give back the room of a burst.
//!
//! Call ids, cap ids and method names are looked up several times per call, and SipHash (std's
//! default) was a visible share of a round trip. foldhash is fast and randomly seeded per
//! table builder, which matters because some of these keys come from the peer. hashbrown's
//! own crate also tells the size of a table's allocation, which [`shed`] needs: a table
//! keeps its room at its high-water mark, and `capacity()` is lowered by tombstones.

use std::hash::Hash;

/// A hash map with the fast, seeded hasher.
pub(crate) type Map<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

/// A hash set with the fast, seeded hasher.
pub(crate) type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Room for this many entries (slots of a table's allocation) is always kept: a table that
/// never grew past it (one call at a time) is never touched.
pub(crate) const KEPT_ROOM: usize = 64;

/// Gives back most of the room of `map` once it holds less than an eighth of it, if it
/// grew past [`KEPT_ROOM`] entries: a burst (256 calls in flight made the client's table of
/// pending calls 33 KB; a peer that had us export and release a thousand caps left the
/// cap table as large) is not kept for the connection's life. What is left is room for
/// twice what is held, which hashbrown rounds up to a power of two of slots at 7/8 load:
/// at most half the slots there were (an eighth, not a quarter, so that the rounding never
/// gives back the same size and rehashes for nothing), and at least 2.3 slots an entry, so
/// a steady load neither shrinks a table nor makes it grow again at once, and the
/// rehashing costs at most a constant per removal, amortized. Called where an entry is
/// removed: a comparison or two when there is nothing to give back.
#[inline]
pub(crate) fn shed<K: Eq + Hash, V>(map: &mut Map<K, V>) {
    if too_roomy(room(map), map.len()) {
        give_back(|| map.shrink_to(map.len() * 2));
    }
}

/// [`shed`] for a `HashTable` (values that hold their own key; `hash` hashes one).
#[inline]
pub(crate) fn shed_table<T>(table: &mut hashbrown::HashTable<T>, hash: impl Fn(&T) -> u64) {
    if too_roomy(table_room(table), table.len()) {
        give_back(|| table.shrink_to(table.len() * 2, hash));
    }
}

/// The rule of [`shed`]: past the room always kept, and less than an eighth of it used.
#[inline]
fn too_roomy(room: usize, len: usize) -> bool {
    room > KEPT_ROOM && len < room / 8
}

/// How many entries `map`'s allocation has slots for (a few arithmetic operations).
/// Not `capacity()`, which tells how many more inserts fit before the table grows:
/// removals leave tombstones that lower it, so a table emptied from a high load could read
/// as small while its allocation stayed whole.
#[inline]
pub(crate) fn room<K: Eq + Hash, V>(map: &Map<K, V>) -> usize {
    slots::<(K, V)>(map.allocation_size())
}

/// [`room`] for a `HashTable`.
#[inline]
pub(crate) fn table_room<T>(table: &hashbrown::HashTable<T>) -> usize {
    slots::<T>(table.allocation_size())
}

/// The slots of entries `T` in an allocation of `bytes`: a slot is an entry and its
/// control byte; the control bytes' extra group rounds down.
#[inline]
fn slots<T>(bytes: usize) -> usize {
    bytes / (std::mem::size_of::<T>() + 1)
}

/// Removes `key` from `map`, then gives back room as [`shed`] does.
#[inline]
pub(crate) fn take<K: Eq + Hash, V>(map: &mut Map<K, V>, key: &K) -> Option<V> {
    let value = map.remove(key);
    shed(map);
    value
}

/// Removes `key` from `map` if `wanted` says its value is the one (one lookup for the check and
/// the removal), then gives back room as [`shed`] does.
#[inline]
pub(crate) fn take_if<K: Eq + Hash, V>(
    map: &mut Map<K, V>,
    key: K,
    wanted: impl FnOnce(&V) -> bool,
) -> Option<V> {
    let value = match map.entry(key) {
        hashbrown::hash_map::Entry::Occupied(entry) if wanted(entry.get()) => entry.remove(),
        _ => return None,
    };
    shed(map);
    Some(value)
}

/// Rehashes a table into less room (`shrink`), off the path that finds nothing to give.
#[cold]
#[inline(never)]
fn give_back(shrink: impl FnOnce()) {
    #[cfg(test)]
    tests::REHASHES.with(|n| n.set(n.get() + 1));
    shrink();
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// How many times [`give_back`] ran on this thread.
        pub(super) static REHASHES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// A table filled to its load limit and emptied: removals leave tombstones, which
    /// lower `capacity()` (emptied without shedding, a table of 2,048 slots read 62 to 110
    /// by the hasher's seed, so a rule on `capacity()` sometimes never saw it as large),
    /// so [`room`] reads the allocation instead, and the room is given back.
    #[test]
    fn a_table_emptied_from_its_load_limit_gives_its_room_back() {
        let mut map: Map<u64, u64> = Map::default();
        let mut next = 0;
        while map.len() < 1_000 || map.len() < map.capacity() {
            map.insert(next, next);
            next += 1;
        }
        assert!(room(&map) >= 2_000);
        for key in 0..next {
            assert_eq!(take(&mut map, &key), Some(key));
        }
        assert!(map.is_empty());
        assert!(room(&map) <= KEPT_ROOM, "room for {} kept", room(&map));
    }

    /// Each time the rule gives room back, the table has at most half the slots it had:
    /// draining a table from 4,096 entries rehashes it a handful of times, each time into
    /// a smaller table, never at every removal below the threshold (at a quarter, the
    /// rounding gave back a table of the same size, rehashed at each removal for a while).
    #[test]
    fn giving_room_back_halves_the_table_at_least() {
        let mut map: Map<u64, u64> = Map::default();
        for key in 0..4_096 {
            map.insert(key, key);
        }
        REHASHES.with(|n| n.set(0));
        let mut last = room(&map);
        let mut shrinks = 0;
        for key in 0..4_096 {
            take(&mut map, &key);
            let now = room(&map);
            if now != last {
                assert!(
                    now <= last / 2,
                    "{last} -> {now} slots at {} entries",
                    map.len()
                );
                shrinks += 1;
            }
            last = now;
        }
        assert!(shrinks <= 8, "{shrinks} shrinks");
        assert_eq!(REHASHES.with(|n| n.get()), shrinks, "rehashed for nothing");
        assert!(last <= KEPT_ROOM);
    }

    /// A steady load never shrinks a table: while entries come and go around the same
    /// number its room never falls (it may grow once, when tombstones fill the table and
    /// the table makes room), so nothing is rehashed over and over.
    #[test]
    fn a_steady_load_keeps_its_room() {
        let mut map: Map<u64, u64> = Map::default();
        for key in 0..100 {
            map.insert(key, key);
        }
        let mut last = room(&map);
        let mut changes = 0;
        for key in 100..10_000u64 {
            map.insert(key, key);
            take(&mut map, &(key - 100));
            let now = room(&map);
            assert!(now >= last, "shrunk from {last} to {now} after {key}");
            changes += usize::from(now != last);
            last = now;
        }
        assert!(changes <= 1, "the room changed {changes} times");
        // A small table is never touched, even empty.
        let mut small: Map<u64, u64> = Map::default();
        small.insert(1, 1);
        let kept = room(&small);
        take(&mut small, &1);
        assert_eq!(room(&small), kept);
    }
}
