//! How fast a message must arrive once it has started: the [`ReceiveDeadline`] of a
//! listener's connections (and, by default, of every byte stream, see
//! [`byte_stream`](super::byte_stream#limits)), and the clock both socket sources keep by it.
//!
//! Why: a long message holds its whole size of the listener's
//! [`receive_budget`](super::ListenerConfig::receive_budget) from the moment it is paid for
//! to its last byte (all or nothing, see [`budget`](super::budget)). A peer that starts a
//! maximal message and then stalls, or trickles it a byte at a time, would hold a quarter of
//! the default budget for as long as it keeps its socket open, and four such peers would
//! pause every other long message on the listener.
//!
//! The rule asks for progress: from the message's first stall, the peer has `grace` plus a
//! second per `min_rate` bytes of the message that have arrived since. So a peer that stops
//! sending is let go `grace` after it last kept pace, one that keeps `min_rate` (after the
//! grace) is never cut off, and no message takes longer than `grace + len / min_rate`.
//! (The deadline used to be that bound, fixed by the announced length as the message
//! started: a 4-byte prefix announcing 64 MiB, and nothing after it, held 64 MiB of the
//! budget for 286 s.) What counts as arrived is the message's own bytes: for a WebSocket
//! message, its data frames' payload, not the pings between its fragments.
//!
//! What counts as time: from the first moment the source finds the socket empty with a
//! message under way (a message that arrives in one read is never timed, and costs
//! nothing) to the message's last byte. Time spent waiting for the budget is ours, not the
//! peer's: it restarts the clock. So is the time the connection does not read at all,
//! because too much of what it sends waits for the peer or the listener's send budget cannot
//! pay for more ([`MessageSource::pause`](super::MessageSource::pause)): the peer could send
//! no faster than we read, so the clock stands still until the connection reads again. A
//! message that falls behind fails the source with
//! [`TransportError::TooSlow`](super::TransportError::TooSlow); the connection answers
//! with a goaway `deadline_exceeded` and closes, as it does for an oversize message.
//!
//! ```
//! use std::time::Duration;
//! use bunite_rpc::transport::{ListenerConfig, ReceiveDeadline};
//!
//! // A server on the open internet: 10 s at any point, and at least 1 MiB/s after that.
//! let tight = ReceiveDeadline::new(Duration::from_secs(10), 1 << 20);
//! let config = ListenerConfig::default().receive_deadline(Some(tight));
//! // So a maximal message arrives within 74 s, or not at all.
//! assert_eq!(tight.for_len(64 << 20), Duration::from_secs(74));
//! // The default: 30 s, then 256 KiB/s; a maximal message within 30 s + 256 s.
//! assert_eq!(ReceiveDeadline::default().for_len(64 << 20), Duration::from_secs(286));
//! # let _ = config;
//! ```

#[cfg(any(feature = "byte-stream", feature = "ws"))]
pub(crate) use clock::MessageClock;

/// Defined beside [`Limits`](crate::Limits), whose
/// [`send_deadline`](crate::Limits::send_deadline) keeps the same rule for what a peer is
/// sent, so that the session's plain data imports nothing of the transports.
pub use crate::limits::ReceiveDeadline;

/// The clock the socket sources keep (only they use it).
#[cfg(any(feature = "byte-stream", feature = "ws"))]
mod clock {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Context;
    use std::time::Duration;

    use tokio::time::{Instant, Sleep};

    use super::ReceiveDeadline;
    use crate::transport::TransportError;

    /// The clock of the message under way, kept by a socket source: set the first time the
    /// source finds the socket empty inside a message, checked each time after, stopped when
    /// the message is complete.
    ///
    /// One timer per connection, made at the first stall and kept: setting the clock for the
    /// next message costs a clock read, not a timer-wheel update. The timer stays where it was
    /// set while that is no later than the deadline; when it fires early (set for an earlier
    /// message, or before more of this one arrived), it moves to the current deadline.
    #[derive(Debug)]
    pub(crate) struct MessageClock {
        rule: Option<ReceiveDeadline>,
        /// The message under way, once it has stalled: when (moved later by the time the
        /// connection did not read), and how many of its bytes had arrived then.
        started: Option<(Instant, u64)>,
        /// Since when the connection has not read, while a message's clock runs.
        paused: Option<Instant>,
        pub(super) timer: Option<Pin<Box<Sleep>>>,
    }

    impl MessageClock {
        pub(crate) fn new(rule: Option<ReceiveDeadline>) -> Self {
            MessageClock {
                rule,
                started: None,
                paused: None,
                timer: None,
            }
        }

        /// The socket has nothing more for the message under way, of `len` bytes as far as
        /// its headers tell (0 when not yet known), of which `arrived` have arrived (counted
        /// from any point that stays put while the message is under way): starts the clock
        /// if this is its first stall, moves the deadline by what arrived since, and
        /// registers `cx`'s waker for the deadline. The error once it has passed.
        pub(crate) fn check(
            &mut self,
            cx: &mut Context<'_>,
            len: u64,
            arrived: u64,
        ) -> Result<(), TransportError> {
            let Some(rule) = self.rule else {
                return Ok(());
            };
            self.resume();
            let (started, at) = *self
                .started
                .get_or_insert_with(|| (Instant::now(), arrived));
            let allowed = rule.for_len(arrived.saturating_sub(at));
            // A deadline past what the clock can say is never reached (30 years will do).
            let deadline = started
                .checked_add(allowed)
                .unwrap_or_else(|| started + Duration::from_secs(30 * 365 * 86_400));
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() > deadline {
                timer.as_mut().reset(deadline);
            }
            while timer.as_mut().poll(cx).is_ready() {
                if timer.deadline() >= deadline {
                    self.started = None;
                    return Err(TransportError::TooSlow {
                        after: allowed,
                        len: (len > 0).then_some(len),
                    });
                }
                timer.as_mut().reset(deadline);
            }
            Ok(())
        }

        /// The message under way is complete (or waits for the budget, which is not the
        /// peer's time): the next stall starts the clock afresh.
        pub(crate) fn stop(&mut self) {
            self.started = None;
            self.paused = None;
        }

        /// The connection stops reading for a reason of its own: until it reads again, the
        /// time is not the peer's
        /// ([`MessageSource::pause`](crate::transport::MessageSource::pause)).
        pub(crate) fn pause(&mut self) {
            if self.started.is_some() && self.paused.is_none() {
                self.paused = Some(Instant::now());
            }
        }

        /// The connection reads again: the message's start moves later by the time it did
        /// not.
        fn resume(&mut self) {
            if let (Some(paused), Some((started, _))) = (self.paused.take(), &mut self.started) {
                *started += paused.elapsed();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::transport::TransportError;

    #[test]
    fn a_message_gets_the_grace_and_a_second_per_min_rate_bytes() {
        let rule = ReceiveDeadline::new(Duration::from_secs(30), 256 * 1024);
        assert_eq!(rule.for_len(0), Duration::from_secs(30));
        assert_eq!(rule.for_len(64 << 20), Duration::from_secs(30 + 256));
        assert_eq!(rule.for_len(128 * 1024), Duration::from_millis(30_500));
        let zero = ReceiveDeadline::new(Duration::ZERO, 0);
        assert_eq!(zero.min_rate, 1);
        assert_eq!(zero.for_len(u64::MAX), Duration::from_secs(u64::MAX));
        let wide = ReceiveDeadline::new(Duration::MAX, 1);
        assert_eq!(wide.for_len(10), Duration::MAX, "saturates");
    }

    async fn check(clock: &mut MessageClock, len: u64, arrived: u64) -> Result<(), TransportError> {
        poll_fn(|cx| Poll::Ready(clock.check(cx, len, arrived))).await
    }

    /// The deadline moves with what arrives: the grace from the first stall, and a second
    /// per `min_rate` bytes that arrived since.
    #[tokio::test(start_paused = true)]
    async fn the_deadline_moves_with_the_bytes_that_arrive() {
        let rule = ReceiveDeadline::new(Duration::from_secs(10), 1000);
        let mut clock = MessageClock::new(Some(rule));
        check(&mut clock, 5000, 100).await.unwrap();
        tokio::time::advance(Duration::from_secs(9)).await;
        check(&mut clock, 5000, 4100)
            .await
            .expect("10 s, and 4 s for 4,000 bytes");
        tokio::time::advance(Duration::from_millis(4999)).await;
        check(&mut clock, 5000, 4100).await.expect("14 s allowed");
        tokio::time::advance(Duration::from_millis(2)).await;
        let err = check(&mut clock, 5000, 4100).await.unwrap_err();
        assert!(
            matches!(err, TransportError::TooSlow { after, len: Some(5000) }
                if after == Duration::from_secs(14)),
            "{err:?}"
        );
    }

    /// What a message announced buys nothing: a peer that sends nothing after its first
    /// stall has the grace, though a maximal message would get 286 s if its bytes came at
    /// the minimum rate.
    #[tokio::test(start_paused = true)]
    async fn a_message_that_stops_arriving_has_the_grace_whatever_its_length() {
        let rule = ReceiveDeadline::default();
        let mut clock = MessageClock::new(Some(rule));
        check(&mut clock, 64 << 20, 4).await.unwrap();
        tokio::time::advance(rule.grace - Duration::from_millis(1)).await;
        check(&mut clock, 64 << 20, 4).await.unwrap();
        tokio::time::advance(Duration::from_millis(2)).await;
        let err = check(&mut clock, 64 << 20, 4).await.unwrap_err();
        assert!(
            matches!(err, TransportError::TooSlow { after, len: Some(len) }
                if after == rule.grace && len == 64 << 20),
            "{err:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_completed_message_stops_the_clock_and_the_next_starts_afresh() {
        let rule = ReceiveDeadline::new(Duration::from_secs(10), 1 << 20);
        let mut clock = MessageClock::new(Some(rule));
        check(&mut clock, 10, 1).await.unwrap();
        tokio::time::advance(Duration::from_secs(9)).await;
        clock.stop();
        check(&mut clock, 10, 1).await.unwrap();
        tokio::time::advance(Duration::from_secs(9)).await;
        // The timer was set for the first message (9 s ago): it fires early and moves.
        check(&mut clock, 10, 1).await.expect("9 s into its 10");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(check(&mut clock, 10, 1).await.is_err());
    }

    /// Time the connection does not read is not the peer's: the deadline moves by it.
    #[tokio::test(start_paused = true)]
    async fn time_the_connection_does_not_read_does_not_count() {
        let rule = ReceiveDeadline::new(Duration::from_secs(10), 1000);
        let mut clock = MessageClock::new(Some(rule));
        check(&mut clock, 5000, 100).await.unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        clock.pause();
        tokio::time::advance(Duration::from_secs(60)).await;
        clock.pause(); // Again while paused: it still counts from the first.
        tokio::time::advance(Duration::from_secs(5)).await;
        check(&mut clock, 5000, 100)
            .await
            .expect("4 s of the peer's time, then 65 s of ours");
        tokio::time::advance(Duration::from_millis(5999)).await;
        check(&mut clock, 5000, 100).await.expect("10 s allowed");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(check(&mut clock, 5000, 100).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_wakes_the_task_that_checked() {
        let rule = ReceiveDeadline::new(Duration::from_secs(5), 1000);
        let mut clock = MessageClock::new(Some(rule));
        let started = Instant::now();
        let err = poll_fn(|cx| match clock.check(cx, 0, 0) {
            Ok(()) => Poll::Pending,
            Err(e) => Poll::Ready(e),
        })
        .await;
        assert!(matches!(err, TransportError::TooSlow { len: None, .. }));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_rule_nothing_is_timed() {
        let mut clock = MessageClock::new(None);
        check(&mut clock, 1, 0).await.unwrap();
        tokio::time::advance(Duration::from_secs(1 << 30)).await;
        check(&mut clock, 1, 0).await.unwrap();
        assert!(clock.timer.is_none());
    }
}
