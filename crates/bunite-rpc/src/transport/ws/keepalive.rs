//! WebSocket pings: a connection that has heard nothing from its peer for one interval
//! sends a ping; if the peer then stays silent for another interval (no pong, no message),
//! the source fails with [`io::ErrorKind::TimedOut`] and the connection ends.
//!
//! Any frame from the peer counts as a sign of life, so a busy connection never pings.

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
    /// A ping went out and nothing came back since.
    awaiting: bool,
}

impl Keepalive {
    pub(super) fn new(interval: Duration) -> Self {
        Keepalive {
            interval,
            timer: Box::pin(tokio::time::sleep(interval)),
            awaiting: false,
        }
    }

    /// The peer sent a frame.
    pub(super) fn heard(&mut self) {
        self.awaiting = false;
        self.timer.as_mut().reset(Instant::now() + self.interval);
    }

    /// Polls the timer: a ping to send, or the error of a missed pong.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Result<Due, io::Error> {
        if self.timer.as_mut().poll(cx) == Poll::Pending {
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
        self.timer.as_mut().reset(Instant::now() + self.interval);
        // Register the waker for the new deadline.
        let _ = self.timer.as_mut().poll(cx);
        Ok(Due::Ping)
    }
}
