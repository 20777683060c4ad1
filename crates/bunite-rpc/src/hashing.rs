//! The hash tables of the call path: std's tables with foldhash's hasher.
//!
//! Call ids, cap ids and method names are looked up several times per call, and SipHash (std's
//! default) was a visible share of a round trip. foldhash is fast and randomly seeded per
//! table builder, which matters because some of these keys come from the peer.

use std::hash::Hash;

/// A hash map with the fast, seeded hasher.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A hash set with the fast, seeded hasher.
pub(crate) type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// Room for this many entries is always kept: a table that never grew past it (one call at
/// a time) is never touched.
pub(crate) const KEPT_ROOM: usize = 64;

/// Gives back most of the room of `map` once it holds less than a quarter of it, if it
/// grew past [`KEPT_ROOM`] entries: a burst (256 calls in flight made the client's table of
/// pending calls 33 KB; a peer that had us export and release a thousand caps left the
/// cap table as large) is not kept for the connection's life. What is left is twice what
/// is held, so a steady load neither shrinks a table nor makes it grow again at once, and
/// the rehashing costs at most a constant per removal, amortized. Called where an entry is
/// removed: a comparison or two when there is nothing to give back.
#[inline]
pub(crate) fn shed<K: Eq + Hash, V>(map: &mut Map<K, V>) {
    let room = map.capacity();
    if room > KEPT_ROOM && map.len() < room / 4 {
        shed_room(map);
    }
}

/// Removes `key` from `map`, then gives back room as [`shed`] does.
#[inline]
pub(crate) fn take<K: Eq + Hash, V>(map: &mut Map<K, V>, key: &K) -> Option<V> {
    let value = map.remove(key);
    shed(map);
    value
}

#[cold]
#[inline(never)]
fn shed_room<K: Eq + Hash, V>(map: &mut Map<K, V>) {
    map.shrink_to(map.len() * 2);
}
