//! The hash tables of the call path: std's tables with foldhash's hasher.
//!
//! Call ids, cap ids and method names are looked up several times per call, and SipHash (std's
//! default) was a visible share of a round trip. foldhash is fast and randomly seeded per
//! table builder, which matters because some of these keys come from the peer.

/// A hash map with the fast, seeded hasher.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A hash set with the fast, seeded hasher.
pub(crate) type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// The most entries an empty table keeps room for: one that a burst grew past this (256
/// calls in flight made the client's table of pending calls 33 KB) gives its room back
/// when it empties, so a connection that has gone quiet holds what an idle one does. A
/// table that never grew past it (one call at a time) is never touched, and one that never
/// empties (a steady load) is never shrunk.
pub(crate) const KEPT_ROOM: usize = 64;

/// Gives back the room of `map` if it is empty and a burst grew it past [`KEPT_ROOM`]
/// entries. Called where an entry is removed: a test and a comparison otherwise.
#[inline]
pub(crate) fn shed<K, V>(map: &mut Map<K, V>) {
    if map.is_empty() && map.capacity() > KEPT_ROOM {
        shed_room(map);
    }
}

#[cold]
#[inline(never)]
fn shed_room<K, V>(map: &mut Map<K, V>) {
    *map = Map::with_hasher(map.hasher().clone());
}
