//! The socket under tungstenite, charging the bytes it reads to a listener's budget until
//! the message they belong to is complete.
//!
//! tungstenite owns the framing, so the meter cannot reserve a whole message up front as
//! the byte stream does: it charges each read beyond
//! [`FREE_PER_CONNECTION`] and pauses reading while the budget is spent. The source tells
//! it when a message is complete ([`Metered::message_done`]), which gives the bytes back.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::transport::budget::{BudgetWaiter, FREE_PER_CONNECTION};
use crate::transport::{BudgetPermit, ByteBudget};

/// A socket whose reads may draw from a budget.
#[derive(Debug)]
pub(super) struct Metered<S> {
    io: S,
    meter: Option<Meter>,
}

#[derive(Debug)]
struct Meter {
    waiter: BudgetWaiter,
    permit: BudgetPermit,
    /// Bytes read since the last complete message.
    held: usize,
}

impl<S> Metered<S> {
    pub(super) fn new(io: S, budget: Option<&ByteBudget>) -> Self {
        let meter = budget.map(|b| Meter {
            waiter: b.waiter(),
            permit: BudgetPermit::default(),
            held: 0,
        });
        Metered { io, meter }
    }

    /// A message is complete: the bytes read for it go back to the budget.
    pub(super) fn message_done(&mut self) {
        if let Some(m) = &mut self.meter {
            m.held = 0;
            m.permit = BudgetPermit::default();
        }
    }

    pub(super) fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(m) = &mut this.meter else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        let charge = (m.held + buf.remaining()).saturating_sub(FREE_PER_CONNECTION);
        if m.permit.bytes() < charge {
            let more = charge - m.permit.bytes();
            let permit = ready!(m.waiter.poll_acquire(cx, more)).map_err(io::Error::other)?;
            m.permit.merge(permit);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        m.held += buf.filled().len() - before;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
