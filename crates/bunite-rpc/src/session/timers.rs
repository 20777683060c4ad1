//! Every time-driven decision of a connection, in one place (STYLE habit 12):
//!
//! - an outbound call with a deadline fails `deadline_exceeded` at deadline + 500 ms and the
//!   peer is sent `cancel {reason:"deadline_exceeded"}` (PROTOCOL §11; `outbound`);
//! - an inbound call of a non-idempotent method is signalled at its deadline (`inbound`);
//! - a peer that sends no hello within [`Limits::hello_timeout`](crate::Limits) is dropped;
//! - a connection draining closes when its grace runs out, done or not (`Session::drain`);
//! - the allocations of large messages sent are let go a while after they are kept
//!   (`spares`), and the room of the pending calls' table a while after a shrink was put
//!   off (`outbound`, `hashing::take_spaced`).
//!
//! Timers are keyed entries in an ordered set, removed when their call finishes first, so
//! the set never holds more than one entry per live call (and one for the spares).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bunite_wire::CallId;

/// How long a client waits past a call's deadline before failing it (PROTOCOL §5).
pub(crate) const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// No hello from the peer yet.
    Hello,
    /// An outbound call's deadline (plus grace).
    Outbound(CallId),
    /// An inbound call's deadline.
    Inbound(CallId),
    /// Let the spare buffers of large messages go (`spares`).
    Spares,
    /// A drain's grace ran out: close.
    Drain,
    /// Give back the room of the pending calls' table, if it is still too roomy (a shrink
    /// put off while calls came in waves: `hashing::take_spaced`).
    Shed,
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    set: BTreeSet<(Instant, Timer)>,
    /// When the hello timer is due, while it is armed: disarmed by its key, so a peer that
    /// sends hello again and again costs a lookup each, not a walk over every call's timer.
    hello: Option<Instant>,
}

impl Timers {
    pub fn arm(&mut self, at: Instant, timer: Timer) {
        self.set.insert((at, timer));
    }

    pub fn disarm(&mut self, at: Instant, timer: Timer) {
        self.set.remove(&(at, timer));
    }

    pub fn arm_hello(&mut self, at: Instant) {
        self.arm(at, Timer::Hello);
        self.hello = Some(at);
    }

    pub fn disarm_hello(&mut self) {
        if let Some(at) = self.hello.take() {
            self.disarm(at, Timer::Hello);
        }
    }

    /// The earliest armed time.
    pub fn next(&self) -> Option<Instant> {
        self.set.first().map(|(at, _)| *at)
    }

    /// Removes and returns the earliest timer due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.set.first() {
            Some(&(at, timer)) if at <= now => {
                if timer == Timer::Hello {
                    self.hello = None;
                }
                self.set.pop_first().map(|(_, t)| t)
            }
            _ => None,
        }
    }

    pub fn clear(&mut self) {
        self.set.clear();
        self.hello = None;
    }

    #[cfg(any(test, feature = "test-util"))]
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether `timer` is armed at `at`.
    #[cfg(any(test, feature = "test-util"))]
    pub fn contains(&self, at: Instant, timer: Timer) -> bool {
        self.set.contains(&(at, timer))
    }

    /// How many armed timers match.
    #[cfg(any(test, feature = "test-util"))]
    pub fn count(&self, f: impl Fn(&Timer) -> bool) -> usize {
        self.set.iter().filter(|(_, t)| f(t)).count()
    }
}

/// `now + d`, saturating: a deadline too far to represent never fires.
pub(crate) fn after(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_pop_in_time_order_and_disarmed_ones_never() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.arm(t0 + Duration::from_secs(3), Timer::Outbound(CallId(1)));
        t.arm(t0 + Duration::from_secs(1), Timer::Inbound(CallId(2)));
        t.arm(t0 + Duration::from_secs(2), Timer::Outbound(CallId(3)));
        t.disarm(t0 + Duration::from_secs(2), Timer::Outbound(CallId(3)));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(t.pop_due(t0), None);
        let now = t0 + Duration::from_secs(5);
        assert_eq!(t.pop_due(now), Some(Timer::Inbound(CallId(2))));
        assert_eq!(t.pop_due(now), Some(Timer::Outbound(CallId(1))));
        assert_eq!(t.pop_due(now), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn the_hello_timer_is_disarmed_by_its_key_and_only_it() {
        let now = Instant::now();
        let mut timers = Timers::default();
        timers.arm_hello(now + Duration::from_secs(30));
        for i in 0..100 {
            timers.arm(now + Duration::from_millis(i), Timer::Inbound(CallId(i)));
        }
        timers.disarm_hello();
        assert_eq!(timers.len(), 100);
        assert_eq!(timers.count(|t| *t == Timer::Hello), 0);
        timers.disarm_hello(); // a second hello: nothing left to disarm
        assert_eq!(timers.len(), 100);
        // One that fired is not disarmed again.
        let mut timers = Timers::default();
        timers.arm_hello(now);
        assert_eq!(timers.pop_due(now), Some(Timer::Hello));
        assert_eq!(timers.hello, None);
    }

    #[test]
    fn a_deadline_too_far_to_represent_is_none() {
        assert_eq!(after(Instant::now(), Duration::MAX), None);
    }
}
