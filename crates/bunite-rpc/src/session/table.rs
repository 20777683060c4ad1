//! The cap table (PROTOCOL §7): cap-id → (definition, implementation, refcount).
//!
//! Plain data, no I/O. Ids 0 and 1 are reserved and never allocated or freed; user ids
//! start at 2 and are never reused on a connection.

use std::hash::BuildHasher;
use std::sync::Arc;

use bunite_wire::CapId;
use hashbrown::HashTable;

use crate::schema::CapDef;
use crate::status::{reason, Code, Status};

/// One live cap. It holds its own id, so that the table is a `HashTable` of 32-byte
/// entries: a map from id to an entry of the other fields would take 40 bytes a slot, the
/// id's 4 and 4 of padding (a tuple cannot use the padding at the end of its second field).
/// Whether an entry is its name's bootstrap instance is the registry's to say
/// (`Registry::instance`), not kept here a second time.
pub(crate) struct Entry<I> {
    id: CapId,
    pub refcount: u32,
    pub def: Arc<CapDef>,
    pub imp: I,
}

/// What the table holds at id 0 and 1 is not an [`Entry`]: id 0 is the bootstrap
/// dispatcher (handled by the registry) and id 1 is the optional runtime.
pub(crate) struct CapTable<I> {
    entries: HashTable<Entry<I>>,
    hasher: foldhash::fast::RandomState,
    runtime: Option<(Arc<CapDef>, I)>,
    next: u64,
    /// Counts the reserved ids, as the reference does.
    limit: usize,
}

/// How many ids the table reserves.
const RESERVED: usize = 2;

impl<I> CapTable<I> {
    pub fn new(limit: usize) -> Self {
        CapTable {
            entries: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            runtime: None,
            next: u64::from(CapId::FIRST_USER.0),
            limit,
        }
    }

    pub fn set_runtime(&mut self, def: Arc<CapDef>, imp: I) {
        self.runtime = Some((def, imp));
    }

    /// Live entries, counting the two reserved ids.
    pub fn len(&self) -> usize {
        self.entries.len() + RESERVED
    }

    /// Whether `n` more entries fit under the limit.
    pub fn has_room(&self, n: usize) -> bool {
        self.len().saturating_add(n) <= self.limit
    }

    fn hash(&self, id: CapId) -> u64 {
        self.hasher.hash_one(id)
    }

    /// Allocates a fresh id with refcount 1.
    pub fn allocate(&mut self, def: Arc<CapDef>, imp: I) -> Result<CapId, Status> {
        if self.len() >= self.limit {
            return Err(Status::new(
                Code::ResourceExhausted,
                format!("cap-table limit {}", self.limit),
            )
            .with_reason(reason::MAX_CAPS_PER_CONNECTION));
        }
        let id = u32::try_from(self.next).map_err(|_| {
            Status::new(Code::ResourceExhausted, "cap ids exhausted")
                .with_reason(reason::MAX_CAPS_PER_CONNECTION)
        })?;
        self.next += 1;
        let id = CapId(id);
        let hasher = &self.hasher;
        self.entries.insert_unique(
            hasher.hash_one(id),
            Entry {
                id,
                refcount: 1,
                def,
                imp,
            },
            |e| hasher.hash_one(e.id),
        );
        Ok(id)
    }

    /// Every live user entry.
    #[cfg(any(test, feature = "test-util"))]
    pub fn entries(&self) -> impl Iterator<Item = (CapId, &Entry<I>)> {
        self.entries.iter().map(|e| (e.id, e))
    }

    /// The largest number of entries, counting the reserved ids.
    #[cfg(any(test, feature = "test-util"))]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The next id to allocate.
    #[cfg(any(test, feature = "test-util"))]
    pub fn next_id(&self) -> u64 {
        self.next
    }

    /// Moves the next id to allocate on to `next` (as if that many had been used).
    #[cfg(test)]
    pub fn skip_to(&mut self, next: u64) {
        self.next = self.next.max(next);
    }

    pub fn get(&self, id: CapId) -> Option<&Entry<I>> {
        self.entries.find(self.hash(id), |e| e.id == id)
    }

    pub fn get_mut(&mut self, id: CapId) -> Option<&mut Entry<I>> {
        let hash = self.hash(id);
        self.entries.find_mut(hash, |e| e.id == id)
    }

    /// The runtime's definition and implementation, for id 1.
    pub fn runtime(&self) -> Option<(&Arc<CapDef>, &I)> {
        self.runtime.as_ref().map(|(d, i)| (d, i))
    }

    /// Subtracts `delta`; frees the entry at zero and returns it. Reserved and unknown ids
    /// are ignored.
    pub fn release(&mut self, id: CapId, delta: u32) -> Option<Entry<I>> {
        let entry = self.get_mut(id)?;
        entry.refcount = entry.refcount.saturating_sub(delta);
        if entry.refcount == 0 {
            self.remove(id)
        } else {
            None
        }
    }

    /// Removes an entry whatever its refcount (unserve, failed result), then gives back
    /// room as [`crate::hashing::shed`] does for maps.
    pub fn remove(&mut self, id: CapId) -> Option<Entry<I>> {
        let hash = self.hash(id);
        let (entry, _) = self.entries.find_entry(hash, |e| e.id == id).ok()?.remove();
        let hasher = &self.hasher;
        crate::hashing::shed_table(&mut self.entries, |e| hasher.hash_one(e.id));
        Some(entry)
    }

    /// Removes every user entry (shutdown); ids are still never reused.
    pub fn drain(&mut self) -> Vec<(CapId, Entry<I>)> {
        let mut entries: Vec<_> = self.entries.drain().map(|e| (e.id, e)).collect();
        // Disposals run in allocation order, whatever the hash order.
        entries.sort_by_key(|(id, _)| *id);
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> Arc<CapDef> {
        CapDef::builder("t.cap").build()
    }

    /// An entry of the runtime's kind (a fat `Arc`, as `Arc<dyn CapImpl>` is) is 32 bytes
    /// with its id: the table's slot, where a map's `(id, entry)` took 40.
    #[test]
    fn an_entry_with_its_id_takes_32_bytes() {
        type Imp = Arc<dyn std::any::Any + Send + Sync>;
        assert_eq!(std::mem::size_of::<Entry<Imp>>(), 32);
    }

    #[test]
    fn ids_start_at_two_and_are_never_reused() {
        let mut t = CapTable::<()>::new(16);
        let a = t.allocate(def(), ()).unwrap();
        let b = t.allocate(def(), ()).unwrap();
        assert_eq!((a, b), (CapId(2), CapId(3)));
        assert!(t.release(a, 1).is_some());
        let c = t.allocate(def(), ()).unwrap();
        assert_eq!(c, CapId(4));
    }

    #[test]
    fn the_limit_counts_the_reserved_ids() {
        let mut t = CapTable::<()>::new(3);
        t.allocate(def(), ()).unwrap();
        let err = t.allocate(def(), ()).unwrap_err();
        assert_eq!(err.code, Code::ResourceExhausted);
        assert_eq!(err.message, "cap-table limit 3");
        assert_eq!(err.reason(), Some("max_caps_per_connection"));
    }

    /// A peer that had us export a thousand caps and released them leaves the table
    /// holding room for a few, not for a thousand (about 100 KB).
    #[test]
    fn released_entries_give_their_room_back() {
        let mut t = CapTable::<()>::new(2_000);
        let ids: Vec<CapId> = (0..1_000).map(|_| t.allocate(def(), ()).unwrap()).collect();
        assert!(crate::hashing::table_room(&t.entries) >= 1_000);
        for id in &ids[3..] {
            assert!(t.release(*id, 1).is_some());
        }
        assert_eq!(t.len(), 3 + RESERVED);
        let room = crate::hashing::table_room(&t.entries);
        assert!(
            room <= crate::hashing::KEPT_ROOM,
            "room for {room} entries kept"
        );
        // What is left is still there.
        for id in &ids[..3] {
            assert!(t.get_mut(*id).is_some());
        }
    }

    #[test]
    fn release_frees_at_zero_and_ignores_reserved_and_unknown_ids() {
        let mut t = CapTable::<()>::new(16);
        let a = t.allocate(def(), ()).unwrap();
        t.get_mut(a).unwrap().refcount = 2;
        assert!(t.release(a, 1).is_none());
        assert!(t.release(CapId(0), 1).is_none());
        assert!(t.release(CapId(1), 1).is_none());
        assert!(t.release(CapId(99), 1).is_none());
        assert!(t.release(a, 1).is_some());
        assert_eq!(t.len(), 2);
    }
}
