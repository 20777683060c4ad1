//! The hash tables of the call path: std's tables with foldhash's hasher.
//!
//! Call ids, cap ids and method names are looked up several times per call, and SipHash (std's
//! default) was a visible share of a round trip. foldhash is fast and randomly seeded per
//! table builder, which matters because some of these keys come from the peer.

/// A hash map with the fast, seeded hasher.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A hash set with the fast, seeded hasher.
pub(crate) type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
