//! The receiving half: one reused `BytesMut`, messages split off without copying (see the
//! parent module's `# Buffers`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncRead;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::io::poll_read_buf;

use crate::transport::budget::{BudgetWaiter, FREE_PER_CONNECTION};
use crate::transport::{BudgetPermit, ByteBudget, MessageSource, TransportError};

/// What a read asks for when no message is under way: enough for a burst of small frames.
pub const READ_CHUNK: usize = 8 * 1024;

/// How far a long message's buffer may grow ahead of the bytes that have arrived, at least
/// (it may also double what has arrived). A peer that announces a long message and sends
/// little costs about this much.
pub const READ_AHEAD: usize = 64 * 1024;

/// The largest first read: a fresh buffer is sized for the last message received (so a
/// run of 64 KiB messages reads each in one call), up to this.
pub const READ_MAX_FIRST: usize = 256 * 1024;

const PREFIX: usize = 4;

/// The receiving half of a [`ByteStream`](super::ByteStream).
#[derive(Debug)]
pub struct ByteStreamSource<R> {
    reader: R,
    buf: BytesMut,
    max_bytes: usize,
    budget: Option<BudgetWaiter>,
    /// Budget drawn for the message being received.
    permit: BudgetPermit,
    /// The size (prefix included) of the last message received: the next fresh buffer's.
    last: usize,
    state: State,
    _slot: Option<Arc<OwnedSemaphorePermit>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Ended,
    Failed,
}

impl<R: AsyncRead + Unpin> ByteStreamSource<R> {
    pub(super) fn new(
        reader: R,
        max_bytes: usize,
        budget: Option<ByteBudget>,
        slot: Option<Arc<OwnedSemaphorePermit>>,
    ) -> Self {
        ByteStreamSource {
            reader,
            buf: BytesMut::new(),
            max_bytes,
            budget: budget.map(|b| b.waiter()),
            permit: BudgetPermit::default(),
            last: 0,
            state: State::Open,
            _slot: slot,
        }
    }

    /// The length the buffered prefix announces, checked against `max_bytes`.
    fn announced(&self) -> Result<Option<usize>, TransportError> {
        let Some(prefix) = self.buf.first_chunk::<PREFIX>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        if u64::from(len) <= self.max_bytes as u64 {
            return Ok(Some(len as usize));
        }
        let (len, max) = (u64::from(len), self.max_bytes);
        let printable = prefix
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace());
        Err(match printable {
            true => TransportError::TextForLength {
                text: String::from_utf8_lossy(prefix).into_owned(),
                len,
                max,
            },
            false => TransportError::TooLarge { len, max },
        })
    }

    /// Makes room for the next read: a fresh chunk between messages, or room for more of a
    /// long message, drawn from the budget first. `Pending` while the budget is spent.
    fn poll_room(
        &mut self,
        cx: &mut Context<'_>,
        len: Option<usize>,
    ) -> Poll<Result<(), TransportError>> {
        // Reads ask for a little more than they need: a read that fills its buffer exactly
        // leaves tokio unsure whether more is waiting, which costs an extra empty read.
        let Some(len) = len else {
            if self.buf.capacity() == self.buf.len() {
                // Under a budget, a first read stays within the free allowance.
                let first = match self.budget {
                    Some(_) => FREE_PER_CONNECTION - READ_CHUNK,
                    None => READ_MAX_FIRST,
                };
                self.buf.reserve(self.last.min(first) + READ_CHUNK);
            }
            return Poll::Ready(Ok(()));
        };
        let total = PREFIX + len;
        if let Some(waiter) = &mut self.budget {
            // All or nothing: the whole message beyond the free allowance, so two partly
            // received messages never wait on each other.
            let charge = total.saturating_sub(FREE_PER_CONNECTION);
            if self.permit.bytes() < charge {
                let more = charge - self.permit.bytes();
                let permit = ready!(waiter.poll_acquire(cx, more))?;
                self.permit.merge(permit);
            }
        }
        if self.buf.capacity() == self.buf.len() {
            let missing = total - self.buf.len() + READ_CHUNK;
            self.buf
                .reserve(missing.min(self.buf.len().max(READ_AHEAD)));
        }
        Poll::Ready(Ok(()))
    }

    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, TransportError>> {
        loop {
            let len = self.announced()?;
            if let Some(len) = len {
                if self.buf.len() >= PREFIX + len {
                    let mut msg = self.buf.split_to(PREFIX + len);
                    msg.advance(PREFIX);
                    self.permit = BudgetPermit::default();
                    self.last = PREFIX + len;
                    return Poll::Ready(Ok(Some(msg.freeze())));
                }
            }
            ready!(self.poll_room(cx, len))?;
            let n = match poll_read_buf(Pin::new(&mut self.reader), cx, &mut self.buf) {
                Poll::Ready(n) => n?,
                Poll::Pending => {
                    // Idle between messages: hold no buffer while waiting.
                    if self.buf.is_empty() {
                        self.buf = BytesMut::new();
                    }
                    return Poll::Pending;
                }
            };
            if n == 0 {
                // End of stream: clean between messages, truncation inside one.
                return match self.buf.is_empty() {
                    true => Poll::Ready(Ok(None)),
                    false => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "byte stream ended inside a message",
                    )
                    .into())),
                };
            }
        }
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> MessageSource for ByteStreamSource<R> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, TransportError>> {
        match self.state {
            State::Open => {}
            State::Ended => return Poll::Ready(Ok(None)),
            State::Failed => return Poll::Ready(Err(TransportError::Closed)),
        }
        let result = ready!(self.poll_message(cx));
        match &result {
            Ok(Some(_)) => {}
            Ok(None) => self.state = State::Ended,
            Err(_) => {
                self.state = State::Failed;
                self.buf = BytesMut::new();
                self.permit = BudgetPermit::default();
            }
        }
        Poll::Ready(result)
    }
}
