//! The sending half: length prefixes and bodies out in vectored writes (see the parent
//! module's `# Buffers`).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::sync::OwnedSemaphorePermit;

use crate::transport::{ByteBudget, MessageSink, TransportError};

/// Messages up to this size are copied, with their prefix, into the coalescing buffer;
/// larger ones go out as their own slice.
pub const COPY_MAX: usize = 4 * 1024;

/// Bytes the sink takes before [`poll_ready`](MessageSink::poll_ready) first writes them
/// out, and waits if the peer is not reading.
pub const HIGH_WATER: usize = 64 * 1024;

/// Capacity of the coalescing buffer kept once everything is written; a larger one is let
/// go, so an idle connection holds at most this much for writing.
pub const WRITE_KEEP: usize = 4 * 1024;

/// Slices per vectored write (well under every platform's `IOV_MAX`).
const MAX_SLICES: usize = 64;

/// The sending half of a [`ByteStream`](super::ByteStream).
#[derive(Debug)]
pub struct ByteStreamSink<W> {
    writer: W,
    /// Chunks to write, in order; `copy` follows them.
    queue: VecDeque<Bytes>,
    /// Prefixes and small bodies not yet moved to `queue`.
    copy: BytesMut,
    /// Bytes in `queue` and `copy`.
    queued: usize,
    /// `copy` shares its allocation with a chunk in `queue` (so it may be larger than its
    /// capacity shows).
    split: bool,
    closed: bool,
    /// Bytes written out so far ([`MessageSink::written`]).
    written: u64,
    /// The budget the connection pays what waits to be sent from
    /// ([`MessageSink::send_budget`]).
    budget: Option<ByteBudget>,
    _slot: Option<Arc<OwnedSemaphorePermit>>,
}

impl<W: AsyncWrite + Unpin> ByteStreamSink<W> {
    pub(super) fn new(
        writer: W,
        budget: Option<ByteBudget>,
        slot: Option<Arc<OwnedSemaphorePermit>>,
    ) -> Self {
        ByteStreamSink {
            writer,
            queue: VecDeque::new(),
            copy: BytesMut::new(),
            queued: 0,
            split: false,
            closed: false,
            written: 0,
            budget,
            _slot: slot,
        }
    }

    /// The writer; messages taken but not yet written are dropped.
    pub fn into_inner(self) -> W {
        self.writer
    }

    /// Writes until everything queued is out, or the writer would block.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.queued > 0 {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut used = 0;
            for (slot, chunk) in slices.iter_mut().zip(&self.queue) {
                *slot = IoSlice::new(chunk);
                used += 1;
            }
            if used < MAX_SLICES && !self.copy.is_empty() {
                if let Some(slot) = slices.get_mut(used) {
                    *slot = IoSlice::new(&self.copy);
                    used += 1;
                }
            }
            let slices = slices.get(..used).unwrap_or_default();
            let n = ready!(Pin::new(&mut self.writer).poll_write_vectored(cx, slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.advance(n);
        }
        self.trim();
        Poll::Ready(Ok(()))
    }

    /// Drops `n` written bytes from the front.
    fn advance(&mut self, mut n: usize) {
        self.queued -= n;
        self.written = self.written.wrapping_add(n as u64);
        while n > 0 {
            match self.queue.front_mut() {
                Some(front) if front.len() <= n => {
                    n -= front.len();
                    self.queue.pop_front();
                }
                Some(front) => {
                    front.advance(n);
                    return;
                }
                None => {
                    self.copy.advance(n);
                    return;
                }
            }
        }
    }

    /// Everything is written: keep a small coalescing buffer, let a large one go.
    fn trim(&mut self) {
        if self.split || self.copy.capacity() > WRITE_KEEP {
            self.copy = BytesMut::new();
            self.split = false;
        } else {
            self.copy.clear();
        }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> MessageSink for ByteStreamSink<W> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        if self.closed {
            return Poll::Ready(Err(TransportError::Closed));
        }
        if self.queued < HIGH_WATER {
            return Poll::Ready(Ok(()));
        }
        match self.poll_write_out(cx) {
            Poll::Ready(written) => Poll::Ready(written.map_err(TransportError::from)),
            // Written down below the mark: room again, though the peer is slow.
            Poll::Pending if self.queued < HIGH_WATER => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn start_send(&mut self, msg: Bytes) -> Result<(), TransportError> {
        if self.closed {
            return Err(TransportError::Closed);
        }
        let len = u32::try_from(msg.len()).map_err(|_| TransportError::TooLarge {
            len: msg.len() as u64,
            max: u32::MAX as usize,
        })?;
        if msg.len() <= COPY_MAX {
            self.copy.reserve(4 + msg.len());
            self.copy.put_u32(len);
            self.copy.put_slice(&msg);
        } else {
            self.copy.put_u32(len);
            self.queue.push_back(self.copy.split().freeze());
            self.queue.push_back(msg);
            self.split = true;
        }
        self.queued += 4 + len as usize;
        Ok(())
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        ready!(self.poll_write_out(cx))?;
        ready!(Pin::new(&mut self.writer).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        if !self.closed {
            ready!(self.poll_flush(cx))?;
            // Ends our direction (TCP FIN, pipe close).
            ready!(Pin::new(&mut self.writer).poll_shutdown(cx))?;
            self.closed = true;
        }
        Poll::Ready(Ok(()))
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn queued(&self) -> usize {
        self.queued
    }

    fn send_budget(&self) -> Option<ByteBudget> {
        self.budget.clone()
    }
}
