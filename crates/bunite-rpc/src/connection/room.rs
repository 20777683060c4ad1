//! Room to send: whether the driver may read more from the peer (or produce more stream
//! values) given what waits to be written. Two bounds: the connection's own
//! [`Limits::max_unsent_bytes`](crate::Limits::max_unsent_bytes), and, on a listener's
//! connection, its send [`ByteBudget`] across connections: what waits beyond
//! [`FREE_PER_CONNECTION`] is paid from it, and reading stops while it cannot be. So peers
//! that never read our answers hold at most the budget between them, plus a free allowance
//! and the answers of handlers already running each, instead of `max_unsent_bytes` each.
//!
//! Paying never waits: bytes that wait to be written are already held, whether or not the
//! budget can pay for them, so a connection that cannot pay stops reading and goes on
//! writing; each write that makes progress wakes it to try again, and what it no longer
//! needs goes back at once ([`Room::settle`]). Nothing here holds a runtime type.
//!
//! While it pays, the peer must keep a pace ([`Limits::send_deadline`](
//! crate::Limits::send_deadline)): from the moment paying starts, it has the deadline's
//! `for_len` of the bytes it has taken since ([`Room::deadline`]). Otherwise a peer that
//! takes a byte now and then (which the write-stall limit, counting only a total stop,
//! never ends) would hold its share of the budget for as long as it liked.

use std::time::{Duration, Instant};

use crate::transport::budget::FREE_PER_CONNECTION;
use crate::transport::{BudgetPermit, ByteBudget, ReceiveDeadline};

/// The bounds on what waits to be sent, and what is paid for it.
#[derive(Debug)]
pub(super) struct Room {
    max_unsent: usize,
    paid: Option<Paid>,
    /// The pace the peer must keep while paying, and since when (with the bytes written
    /// then) the connection pays.
    pace: Option<ReceiveDeadline>,
    paying_since: Option<(Instant, u64)>,
}

#[derive(Debug)]
struct Paid {
    budget: ByteBudget,
    permit: BudgetPermit,
}

impl Room {
    pub(super) fn new(max_unsent: usize, budget: Option<ByteBudget>) -> Self {
        Room {
            max_unsent,
            paid: budget.map(|budget| Paid {
                budget,
                permit: BudgetPermit::default(),
            }),
            pace: None,
            paying_since: None,
        }
    }

    /// With `pace` kept while paying (see the module docs).
    pub(super) fn with_pace(mut self, pace: Option<ReceiveDeadline>) -> Self {
        self.pace = pace;
        self
    }

    /// When the peer will have fallen behind its pace, given the bytes `written` to it so
    /// far: `None` while nothing is paid for (the clock stops, and starts afresh when
    /// paying does) or without a pace.
    pub(super) fn deadline(&mut self, written: u64, now: Instant) -> Option<Instant> {
        let pace = match self.pace {
            Some(pace) if self.paid() > 0 => pace,
            _ => {
                self.paying_since = None;
                return None;
            }
        };
        let (since, at) = *self.paying_since.get_or_insert((now, written));
        // Past what an `Instant` can hold: never.
        since.checked_add(pace.for_len(written.saturating_sub(at)))
    }

    /// Nothing waits to be paid for: the pace's clock stops (as in
    /// [`deadline`](Self::deadline), without reading the time).
    pub(super) fn unpaced(&mut self) {
        self.paying_since = None;
    }

    /// The bytes taken, and the time passed, since paying started.
    pub(super) fn behind(&self, written: u64, now: Instant) -> (u64, Duration) {
        self.paying_since
            .map_or((0, Duration::ZERO), |(since, at)| {
                (
                    written.saturating_sub(at),
                    now.saturating_duration_since(since),
                )
            })
    }

    /// Whether what waits to be sent is paid from a budget, so that the sink's
    /// [`queued`](crate::transport::MessageSink::queued) bytes matter.
    pub(super) fn budgeted(&self) -> bool {
        self.paid.is_some()
    }

    /// Whether there is room for more: `unsent` bytes (the session's encoded frames and a
    /// message the sink refused) are within `max_unsent_bytes`, and those plus the sink's
    /// `queued` bytes are paid for beyond the free allowance. Pays what it lacks now if
    /// the budget has it, all at once; never waits. Pays even past `max_unsent_bytes`:
    /// those bytes are held all the same, and an answer let through counted on them.
    pub(super) fn check(&mut self, unsent: usize, queued: usize) -> bool {
        let paid_for = self.pay_beyond(unsent + queued, FREE_PER_CONNECTION);
        paid_for && unsent <= self.max_unsent
    }

    /// How many bytes answers may add to `waiting` now: the rest of the free allowance and
    /// of what is paid, what the budget has, and its overdraft
    /// ([`ByteBudget::answer_overdraft`]; unbounded without a budget). The session holds
    /// answers to it (`Session::set_send_room`): a longer one is refused with
    /// `resource_exhausted` rather than held beyond the budget. The overdraft keeps a peer
    /// that reads, whose connection reads again as soon as what waits is back within the
    /// free allowance, from having its next short answer refused while others hold the
    /// whole budget; what it lets a connection hold unpaid stays within the free allowance
    /// and the overdraft. A snapshot, that bounds how much of an answer is
    /// encoded: another connection may take the budget's bytes meanwhile, so the answer is
    /// queued only once [`pay_answer`](Self::pay_answer) has paid for it.
    pub(super) fn allowance(&self, waiting: usize) -> usize {
        match &self.paid {
            None => usize::MAX,
            Some(paid) => (FREE_PER_CONNECTION + paid.permit.bytes())
                .saturating_add(paid.budget.answer_overdraft())
                .saturating_add(paid.budget.available())
                .saturating_sub(waiting),
        }
    }

    /// Pays for what waits as an answer is queued, `waiting` bytes with it: what they owe
    /// beyond the free allowance and the overdraft, less what is paid, is taken from the
    /// budget at once, or the answer is refused (`false`). Where the
    /// [`allowance`](Self::allowance) is a snapshot that another connection may take bytes
    /// from before they are paid for, this takes them or refuses, so two connections
    /// never count on the same bytes. Without a budget, always `true`.
    pub(super) fn pay_answer(&mut self, waiting: usize) -> bool {
        let overdraft = self
            .paid
            .as_ref()
            .map_or(0, |p| p.budget.answer_overdraft());
        self.pay_beyond(waiting, FREE_PER_CONNECTION.saturating_add(overdraft))
    }

    /// Whether `waiting` bytes beyond `free` are paid for, paying what is lacking from the
    /// budget now if it has it, all at once (never waits; nothing taken otherwise). Always
    /// without a budget.
    fn pay_beyond(&mut self, waiting: usize, free: usize) -> bool {
        let Some(paid) = &mut self.paid else {
            return true;
        };
        let lacking = waiting
            .saturating_sub(free)
            .saturating_sub(paid.permit.bytes());
        if lacking == 0 {
            return true;
        }
        match paid.budget.try_acquire(lacking) {
            Some(more) => {
                paid.permit.merge(more);
                true
            }
            None => false,
        }
    }

    /// Gives back what is paid beyond what `waiting` bytes need now.
    pub(super) fn settle(&mut self, waiting: usize) {
        if let Some(paid) = &mut self.paid {
            let owed = waiting.saturating_sub(FREE_PER_CONNECTION);
            paid.permit
                .release(paid.permit.bytes().saturating_sub(owed));
        }
    }

    /// Bytes paid from the budget now.
    pub(super) fn paid(&self) -> usize {
        self.paid.as_ref().map_or(0, |p| p.permit.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::budget::ANSWER_OVERDRAFT;

    const FREE: usize = FREE_PER_CONNECTION;

    /// The pace: a deadline only while paying, moved on by each byte taken, started
    /// afresh after a spell of paying nothing.
    #[test]
    fn the_pace_counts_only_while_paying_and_each_byte_taken_buys_time() {
        let pace = ReceiveDeadline::new(Duration::from_secs(2), 1000);
        let budget = ByteBudget::new(100_000);
        let mut room = Room::new(1 << 20, Some(budget)).with_pace(Some(pace));
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(room.deadline(0, t0), None, "nothing paid");
        assert!(room.check(FREE + 10_000, 0));
        assert_eq!(room.deadline(500, t0 + s(1)), Some(t0 + s(3)));
        // 3,000 bytes taken since: three seconds more.
        assert_eq!(room.deadline(3_500, t0 + s(4)), Some(t0 + s(6)));
        assert_eq!(room.behind(3_500, t0 + s(4)), (3_000, s(3)));
        room.settle(FREE);
        assert_eq!(room.deadline(3_600, t0 + s(5)), None, "paid off");
        assert!(room.check(FREE + 1, 0));
        assert_eq!(room.deadline(3_600, t0 + s(9)), Some(t0 + s(11)), "afresh");
        room.unpaced();
        assert_eq!(
            room.deadline(3_600, t0 + s(10)),
            Some(t0 + s(12)),
            "stopped"
        );
        // Without a pace, or a budget, never.
        let mut unpaced = Room::new(1 << 20, Some(ByteBudget::new(100_000)));
        assert!(unpaced.check(FREE + 1, 0));
        assert_eq!(unpaced.deadline(0, t0), None);
        let mut unpaid = Room::new(1 << 20, None).with_pace(Some(pace));
        assert!(unpaid.check(1 << 20, 0));
        assert_eq!(unpaid.deadline(0, t0), None);
    }

    #[test]
    fn without_a_budget_only_the_unsent_limit_counts() {
        let mut room = Room::new(100, None);
        assert!(!room.budgeted());
        assert!(room.check(100, 1 << 30));
        assert!(!room.check(101, 0));
    }

    #[test]
    fn what_waits_beyond_the_allowance_is_paid_and_given_back_as_it_is_written() {
        let budget = ByteBudget::new(100_000);
        let mut room = Room::new(1 << 20, Some(budget.clone()));
        assert!(room.budgeted());
        assert!(room.check(FREE, 0));
        assert_eq!(room.paid(), 0);
        // The sink's bytes count as the session's do.
        assert!(room.check(FREE, 30_000));
        assert_eq!((room.paid(), budget.available()), (30_000, 70_000));
        // Paying again for what is paid takes nothing more.
        assert!(room.check(FREE + 10_000, 20_000));
        assert_eq!(budget.available(), 70_000);
        room.settle(FREE + 5_000);
        assert_eq!((room.paid(), budget.available()), (5_000, 95_000));
        room.settle(0);
        assert_eq!((room.paid(), budget.available()), (0, 100_000));
    }

    #[test]
    fn what_the_budget_cannot_pay_stops_reading_and_keeps_what_is_paid() {
        let budget = ByteBudget::new(100_000);
        let other = budget.try_acquire(60_000).unwrap();
        let mut room = Room::new(1 << 20, Some(budget.clone()));
        assert!(room.check(FREE + 40_000, 0));
        // 41,000 beyond the allowance, 1,000 lacking, none available: no room, and the
        // 40,000 already paid stay paid (those bytes are still held).
        assert!(!room.check(FREE + 41_000, 0));
        assert_eq!((room.paid(), budget.available()), (40_000, 0));
        drop(other);
        assert!(room.check(FREE + 41_000, 0));
        assert_eq!(budget.available(), 59_000);
        // More than the whole budget is never paid; writing it out makes room again.
        assert!(!room.check(FREE + 200_000, 0));
        room.settle(0);
        assert!(room.check(FREE, 0));
        assert_eq!(budget.available(), 100_000);
        // The unsent limit still holds on its own, and what is past it is paid for all
        // the same (it is held).
        let mut tight = Room::new(FREE + 10, Some(budget.clone()));
        assert!(!tight.check(FREE + 11, 0));
        assert_eq!((tight.paid(), budget.available()), (11, 100_000 - 11));
    }

    #[test]
    fn answers_may_take_what_could_be_paid_and_the_overdraft_no_more() {
        let budget = ByteBudget::new(100_000);
        let mut room = Room::new(1 << 20, Some(budget.clone()));
        // Nothing waits: the free allowance, the whole budget and the overdraft.
        assert_eq!(room.allowance(0), FREE + 100_000 + ANSWER_OVERDRAFT);
        // What waits comes off; paying for it moves bytes from the budget to the permit
        // and changes nothing.
        assert_eq!(room.allowance(FREE + 30_000), 70_000 + ANSWER_OVERDRAFT);
        assert!(room.check(FREE + 30_000, 0));
        assert_eq!(room.allowance(FREE + 30_000), 70_000 + ANSWER_OVERDRAFT);
        // Others holding the rest of the budget leave the overdraft at most.
        let others = budget.try_acquire(70_000).unwrap();
        assert_eq!(room.allowance(FREE + 30_000), ANSWER_OVERDRAFT);
        assert_eq!(room.allowance(FREE + 30_000 + ANSWER_OVERDRAFT + 1), 0);
        drop(others);
        // Without a budget: no bound.
        assert_eq!(Room::new(10, None).allowance(1 << 30), usize::MAX);
    }

    #[test]
    fn an_answer_is_paid_for_beyond_the_overdraft_or_refused() {
        let budget = ByteBudget::new(100_000);
        let mut room = Room::new(1 << 20, Some(budget.clone()));
        // Within the allowance and the overdraft: nothing to pay.
        assert!(room.pay_answer(FREE + ANSWER_OVERDRAFT));
        assert_eq!(room.paid(), 0);
        // Beyond: paid at once, and what is paid counts next time.
        assert!(room.pay_answer(FREE + ANSWER_OVERDRAFT + 60_000));
        assert_eq!((room.paid(), budget.available()), (60_000, 40_000));
        assert!(room.pay_answer(FREE + ANSWER_OVERDRAFT + 60_000));
        assert_eq!(budget.available(), 40_000);
        // More than the budget has: refused, nothing taken.
        assert!(!room.pay_answer(FREE + ANSWER_OVERDRAFT + 100_001));
        assert_eq!((room.paid(), budget.available()), (60_000, 40_000));
        // Without a budget, always.
        assert!(Room::new(10, None).pay_answer(usize::MAX));
    }

    /// The overdraft is the budget's own: set lower, answers get less beyond what it can
    /// pay (none at 0); set higher, more.
    #[test]
    fn the_overdraft_is_the_one_the_budget_was_given() {
        assert_eq!(ByteBudget::new(1).answer_overdraft(), ANSWER_OVERDRAFT);
        for overdraft in [0, 4096, 4 << 20] {
            let budget = ByteBudget::new(100_000).with_answer_overdraft(overdraft);
            let mut room = Room::new(1 << 20, Some(budget.clone()));
            assert_eq!(room.allowance(0), FREE + 100_000 + overdraft);
            let others = budget.try_acquire(100_000).unwrap();
            assert_eq!(room.allowance(FREE), overdraft);
            assert!(room.pay_answer(FREE + overdraft));
            assert!(
                !room.pay_answer(FREE + overdraft + 1),
                "nothing left to pay with"
            );
            drop(others);
            assert!(room.pay_answer(FREE + overdraft + 1));
            assert_eq!(room.paid(), 1);
        }
    }

    #[test]
    fn dropping_the_room_gives_everything_back() {
        let budget = ByteBudget::new(100_000);
        let mut room = Room::new(1 << 20, Some(budget.clone()));
        assert!(room.check(FREE + 50_000, 0));
        drop(room);
        assert_eq!(budget.available(), 100_000);
    }
}
