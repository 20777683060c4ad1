//! WebSocket pings: a connection that has heard nothing from its peer for one interval
//! sends a ping; if the peer then stays silent for another interval (no pong, no message),
//! the source fails with [`io::ErrorKind::TimedOut`] and the connection ends.
//!
//! Any frame from the peer counts as a sign of life, so a busy connection never pings. A
//! frame only sets a flag (no clock read, no timer reset per message); the timer, when it
//! fires, looks at the flag: so a ping goes out after one to two intervals of silence, and
//! the connection closes one interval after an unanswered ping.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// What the source should do now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Due {
    /// Nothing yet (the timer is armed).
    Nothing,
    /// Send a ping.
    Ping,
}

#[derive(Debug)]
pub(super) struct Keepalive {
    interval: Duration,
    timer: Pin<Box<Sleep>>,
    /// A frame arrived since the timer last fired.
    heard: bool,
    /// A ping went out and nothing came back since.
    awaiting: bool,
}

impl Keepalive {
    pub(super) fn new(interval: Duration) -> Self {
        Keepalive {
            interval,
            timer: Box::pin(tokio::time::sleep(interval)),
            heard: false,
            awaiting: false,
        }
    }

    /// The peer sent a frame.
    pub(super) fn heard(&mut self) {
        self.heard = true;
        self.awaiting = false;
    }

    /// Polls the timer: a ping to send, or the error of a missed pong.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Result<Due, io::Error> {
        if self.timer.as_mut().poll(cx) == Poll::Pending {
            return Ok(Due::Nothing);
        }
        self.timer.as_mut().reset(Instant::now() + self.interval);
        // Register the waker for the new deadline.
        let _ = self.timer.as_mut().poll(cx);
        if std::mem::take(&mut self.heard) {
            return Ok(Due::Nothing);
        }
        if self.awaiting {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the peer answered no WebSocket ping within {} ms",
                    self.interval.as_millis()
                ),
            ));
        }
        self.awaiting = true;
        Ok(Due::Ping)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn step(k: &mut Keepalive) -> Result<Due, io::ErrorKind> {
        std::future::poll_fn(|cx| Poll::Ready(k.poll(cx).map_err(|e| e.kind()))).await
    }

    #[tokio::test(start_paused = true)]
    async fn pings_after_silence_and_fails_one_interval_after_an_unanswered_ping() {
        let interval = Duration::from_secs(1);
        let mut k = Keepalive::new(interval);
        assert_eq!(step(&mut k).await, Ok(Due::Nothing));
        // Traffic during the first interval: no ping when it ends.
        k.heard();
        tokio::time::advance(interval).await;
        assert_eq!(step(&mut k).await, Ok(Due::Nothing));
        // A silent interval: a ping; its pong arrives.
        tokio::time::advance(interval).await;
        assert_eq!(step(&mut k).await, Ok(Due::Ping));
        k.heard();
        tokio::time::advance(interval).await;
        assert_eq!(step(&mut k).await, Ok(Due::Nothing));
        // Another ping, unanswered: the connection fails one interval later.
        tokio::time::advance(interval).await;
        assert_eq!(step(&mut k).await, Ok(Due::Ping));
        tokio::time::advance(interval).await;
        assert_eq!(step(&mut k).await, Err(io::ErrorKind::TimedOut));
    }
}
