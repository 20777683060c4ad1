//! What must hold between any two inputs of a session, checked by its tests and by the
//! `session_ops` fuzz target (`fuzz::session_ops`) after every step: the tables agree with
//! each other, every limit holds, no timer outlives what it times, and a closed session
//! holds nothing.

use crate::hashing::Set;

use super::timers::Timer;
use super::{Session, Types};

impl<T: Types> Session<T> {
    /// Panics when a table disagrees with another, a limit is exceeded, a timer is armed
    /// for something finished, or a closed session still holds anything.
    pub(crate) fn check_invariants(&self) {
        let limits = &self.cfg.limits;
        self.inbound.check_invariants(&self.timers, limits);
        self.outbound.check_invariants(&self.timers, limits);
        self.check_streams();
        self.check_table();
        let queued: usize = self.transmit.iter().map(|m| m.len()).sum();
        assert_eq!(queued, self.transmit_bytes, "transmit_bytes out of step");
        let spare_timers = self.timers.count(|t| *t == Timer::Spares);
        assert_eq!(spare_timers, usize::from(self.spares.armed), "spares timer");
        let shed_timers = self.timers.count(|t| *t == Timer::Shed);
        assert_eq!(
            shed_timers,
            usize::from(self.outbound.shed_timer_armed()),
            "shed timer"
        );
        let hello_timers = self.timers.count(|t| *t == Timer::Hello);
        assert!(hello_timers <= 1, "two hello timers");
        if self.peer_hello.is_some() {
            assert_eq!(hello_timers, 0, "a hello timer after the peer's hello");
        }
        let drain_timers = self.timers.count(|t| *t == Timer::Drain);
        match self.draining {
            Some(Some(at)) if self.closed.is_none() => {
                assert_eq!(drain_timers, 1, "one drain timer while draining");
                assert!(self.timers.contains(at, Timer::Drain), "drain timer moved");
            }
            _ => assert_eq!(drain_timers, 0, "a drain timer without a drain"),
        }
        if self.closed.is_some() {
            self.check_closed();
        }
    }

    /// Every entry within the limit, below the next id, found at its own id (once), and
    /// every bootstrap instance a live entry of its name, still served.
    fn check_table(&self) {
        assert!(
            self.table.len() <= self.table.limit(),
            "cap table over its limit"
        );
        let mut ids = Set::default();
        for (id, entry) in self.table.entries() {
            assert!(!id.is_reserved(), "a user entry at a reserved id");
            assert!(
                u64::from(id.0) < self.table.next_id(),
                "entry {id} at or past next"
            );
            assert!(entry.refcount > 0, "entry {id} kept at refcount 0");
            assert!(ids.insert(id), "entry {id} held twice");
            let found = self.table.get(id).map(|e| std::ptr::eq(e, entry));
            assert_eq!(found, Some(true), "entry {id} not found at its id");
        }
        if self.closed.is_none() {
            for (name, id) in self.registry.instances() {
                let root = self.table.get(id).map(|e| e.def.name());
                assert_eq!(root, Some(name), "instance of {name:?} is not a live entry");
                assert!(
                    self.registry.get(name).is_some(),
                    "instance of {name:?} unserved"
                );
            }
        }
    }

    fn check_closed(&self) {
        assert_eq!(self.table.len(), 2, "table not cleared at shutdown");
        assert_eq!(self.timers.len(), 0, "timers left after shutdown");
        assert!(self.spares.is_empty(), "spare buffers kept after shutdown");
        assert_eq!(self.outbound.in_flight(), 0, "outbound left after shutdown");
        assert!(
            self.outbound.parked.is_empty(),
            "parked bootstraps after shutdown"
        );
        assert!(
            self.outbound.credit_due.is_empty(),
            "credit due after shutdown"
        );
        assert_eq!(
            self.outbound.buffered, 0,
            "buffered stream bytes after shutdown"
        );
        assert!(
            self.outbound.last_table.is_none(),
            "a record table kept after shutdown"
        );
        assert_eq!(
            self.outbound.pending_drop_bytes(),
            0,
            "drops after shutdown"
        );
        assert_eq!(self.inbound.runs_len(), 0, "runs left after shutdown");
        assert_eq!(self.inbound.active_len(), 0, "active calls after shutdown");
        assert_eq!(
            self.inbound.streams_len(),
            0,
            "server streams after shutdown"
        );
        assert!(
            self.inbound.policy.is_empty(),
            "policy checks after shutdown"
        );
        assert_eq!(
            self.poll_timeout(),
            None,
            "a timeout asked for after shutdown"
        );
    }
}
