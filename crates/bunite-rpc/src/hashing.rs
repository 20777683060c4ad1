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

/// What [`take_spaced`] remembers of a table that fills and empties in waves.
#[derive(Debug, Default)]
pub(crate) struct Spacing {
    /// The table's room right after it last gave room back (0: never).
    after: usize,
    /// A shrink was put off: the table's owner should call [`shed_put_off`] a while later
    /// (once: see `armed`).
    put_off: bool,
    /// The owner has arranged that call.
    pub(crate) armed: bool,
}

impl Spacing {
    /// Whether a shrink was put off and nothing will come back for it yet.
    #[inline]
    pub(crate) fn unarmed(&self) -> bool {
        self.put_off && !self.armed
    }

    /// Forgets what was put off (the table is gone or emptied for good).
    pub(crate) fn reset(&mut self) {
        *self = Spacing::default();
    }
}

/// [`take`] for a table that fills and empties in waves: a client's pending calls with many
/// in flight, whose replies come in batches as large as the calls one read answers. At 256
/// in flight the table fell below an eighth of its room at most reads, and [`shed`] shrank
/// it and let it grow back at nearly every wave (300 times in 40,000 calls, 3% of the
/// client's instructions). Here a table that has grown since it last gave room back does
/// not shrink at once: the shrink is put off ([`Spacing::unarmed`]) until its owner calls
/// [`shed_put_off`], a while later, when it gives back what is still too roomy then. So
/// waves pay for one shrink per that while, and a burst's room is still given back a while
/// after its end, whether or not anything happens then. A table that is only emptying
/// (no growth since its last shrink: the steps of a burst's end) gives back at once, as
/// [`shed`] does.
#[inline]
pub(crate) fn take_spaced<K: Eq + Hash, V>(
    map: &mut Map<K, V>,
    key: &K,
    spacing: &mut Spacing,
) -> Option<V> {
    let value = map.remove(key)?;
    let now = room(map);
    if too_roomy(now, map.len()) {
        if now <= spacing.after {
            give_back(|| map.shrink_to(map.len() * 2));
            spacing.after = room(map);
        } else {
            spacing.put_off = true;
        }
    }
    Some(value)
}

/// The shrink [`take_spaced`] put off, if the table is still too roomy.
pub(crate) fn shed_put_off<K: Eq + Hash, V>(map: &mut Map<K, V>, spacing: &mut Spacing) {
    spacing.put_off = false;
    spacing.armed = false;
    if too_roomy(room(map), map.len()) {
        give_back(|| map.shrink_to(map.len() * 2));
    }
    spacing.after = room(map);
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

    /// Waves of 256 calls, each answered all but `left` before the next comes (`left` 0:
    /// the table empties at each), through `take` (`spaced` false) or [`take_spaced`], whose
    /// put-off shrink runs every `every` waves: the shrinks they cost, and the room left
    /// once the last wave is answered and a put-off shrink has run.
    fn waves(left: u64, spaced: bool, every: usize) -> (usize, usize) {
        let mut map: Map<u64, u64> = Map::default();
        let mut spacing = Spacing::default();
        let mut waiting = std::collections::VecDeque::new();
        REHASHES.with(|n| n.set(0));
        let mut next = 0u64;
        let remove = |map: &mut Map<u64, u64>, spacing: &mut Spacing, key: u64| {
            let taken = if spaced {
                take_spaced(map, &key, spacing)
            } else {
                take(map, &key)
            };
            assert_eq!(taken, Some(key));
        };
        for wave in 0..100 {
            while waiting.len() < 256 {
                map.insert(next, next);
                waiting.push_back(next);
                next += 1;
            }
            while waiting.len() as u64 > left {
                remove(&mut map, &mut spacing, waiting.pop_front().unwrap());
            }
            if spacing.unarmed() {
                spacing.armed = true;
            }
            if wave % every == every - 1 && spacing.armed {
                shed_put_off(&mut map, &mut spacing);
            }
        }
        let shrinks = REHASHES.with(|n| n.get());
        while let Some(key) = waiting.pop_front() {
            remove(&mut map, &mut spacing, key);
        }
        assert!(map.is_empty());
        if spaced {
            assert!(spacing.put_off || room(&map) <= KEPT_ROOM);
            shed_put_off(&mut map, &mut spacing);
        }
        (shrinks, room(&map))
    }

    /// A table that fills and empties in waves shrinks once per put-off shrink with
    /// [`take_spaced`] (at every wave with `take`); emptied at the end, the put-off shrink
    /// gives its room back.
    #[test]
    fn waves_shrink_a_spaced_table_once_per_put_off_shrink() {
        for left in [0, 4, 40] {
            let (plain, _) = waves(left, false, 1);
            assert!(
                plain >= 90,
                "left {left}: take shrank {plain} times in 100 waves"
            );
            let (spaced, kept) = waves(left, true, 25);
            assert!(
                spaced <= 4 * 4,
                "left {left}: {spaced} shrinks in 100 waves"
            );
            assert!(kept <= KEPT_ROOM, "left {left}: room for {kept} kept");
        }
    }

    /// Draining a spaced table from 4,096 entries gives its room back step by step, as
    /// [`take`] does, once a put-off shrink has run (the first step is put off: the table
    /// grew since its last shrink).
    #[test]
    fn a_spaced_table_drained_gives_its_room_back() {
        let mut map: Map<u64, u64> = Map::default();
        let mut spacing = Spacing::default();
        for round in 0..3u64 {
            for key in 0..4_096 {
                map.insert(round * 10_000 + key, key);
            }
            for key in 0..2_048 {
                take_spaced(&mut map, &(round * 10_000 + key), &mut spacing);
            }
            assert!(
                !spacing.put_off,
                "round {round}: half full is not too roomy"
            );
            for key in 2_048..3_900 {
                take_spaced(&mut map, &(round * 10_000 + key), &mut spacing);
            }
            assert!(
                spacing.unarmed(),
                "round {round}: the first shrink is put off"
            );
            let before = room(&map);
            shed_put_off(&mut map, &mut spacing);
            assert!(
                room(&map) <= before / 2,
                "round {round}: shrunk when it ran"
            );
            for key in 3_900..4_096 {
                take_spaced(&mut map, &(round * 10_000 + key), &mut spacing);
            }
            assert!(
                !spacing.put_off,
                "round {round}: emptying steps are not put off"
            );
            assert!(
                room(&map) <= KEPT_ROOM,
                "round {round}: room for {} kept",
                room(&map)
            );
        }
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
