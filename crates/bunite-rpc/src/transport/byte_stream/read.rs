//! The receiving half: one reused `BytesMut`, messages split off without copying (see the
//! parent module's `# Buffers`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;

use crate::transport::budget::{BudgetWaiter, FREE_PER_CONNECTION};
use crate::transport::deadline::{MessageClock, ReceiveDeadline};
use crate::transport::recycle::{IdleRelease, Recycled};
use crate::transport::{
    BudgetPermit, ByteBudget, MessageSource, TransportError, LINGER, LINGER_BYTES, LINGER_QUIET,
};

/// What a read asks for when no message is under way: room for a few dozen small frames.
/// A larger burst finds out by filling it, and the next read asks for twice as much (up to
/// [`READ_BURST`]). Kept small because every connection holds it until it has been idle for
/// [`IDLE_RELEASE`]: a server that accepts a thousand connections at once holds a thousand
/// of them through the handshakes (8 KiB made an idle TCP connection measure 33-35 KB both
/// ends, where 2 KiB measures 25-26 KB; `docs/BENCHMARKS.md`).
pub const READ_CHUNK: usize = 2 * 1024;

/// The most a read asks for beyond what it needs when reads keep filling their buffer (a
/// burst of small messages, such as a stream's values): the slack doubles from
/// [`READ_CHUNK`] up to this, and falls back once a read comes up short. Not under a
/// [`ByteBudget`], whose free allowance per connection is smaller.
pub const READ_BURST: usize = 64 * 1024;

/// How far a long message's buffer may grow ahead of the bytes that have arrived, at least
/// (it may also double what has arrived). A peer that announces a long message and sends
/// little costs about this much.
pub const READ_AHEAD: usize = 64 * 1024;

pub use crate::transport::recycle::IDLE_RELEASE;

/// Around a message this long (length prefix included) reads ask for whole messages and a
/// little more ([`READ_CHUNK`]): see `ByteStreamSource::poll_room`.
const LONG_MESSAGE: usize = 16 * 1024;

/// The largest first read: a fresh buffer is sized for the last message received (so a
/// run of 64 KiB messages reads each in one call), up to this.
pub const READ_MAX_FIRST: usize = 256 * 1024;

/// The most one [`poll_recv`](MessageSource::poll_recv) reads (and one read asks for) of a
/// long message before it lets the connection's task go back to the runtime's queue
/// (waking it at once): the others on its worker thread get their turn between two slices
/// of a long message instead of after all of it. Without it one poll read as much of a
/// 64 MiB message as the socket held, dozens of reads into a doubling buffer, and one such
/// message kept a side connection waiting 24 ms for a call (`docs/RELIABILITY.md`). A
/// message this long or shorter is read as before.
pub const READ_SLICE: usize = 1024 * 1024;

const PREFIX: usize = 4;

/// Allocations larger than this are not kept for reuse (a long message's buffer grows in
/// place instead). A read buffer is shared with the messages split off it until they have
/// been handled, so the next read that needs room finds its buffer in use; it takes a kept
/// one instead of a fresh allocation once their messages are gone (`transport/recycle.rs`:
/// fresh allocations of 64 KiB and more came as fresh pages from glibc, and a 64 KiB echo
/// faulted about 18 pages per round trip).
const RETIRE_MAX: usize = READ_MAX_FIRST + READ_BURST;

/// The receiving half of a [`ByteStream`](super::ByteStream).
#[derive(Debug)]
pub struct ByteStreamSource<R> {
    /// Taken on drop, to linger.
    reader: Option<R>,
    /// Spawns the lingering reader, with the slot (made where `R`'s bounds are known).
    linger: fn(R, Option<Arc<OwnedSemaphorePermit>>),
    /// The linger its connection waits for ([`MessageSource::poll_linger`]), once begun:
    /// then dropping the source lingers no more.
    lingering: Option<Box<Lingering>>,
    buf: BytesMut,
    /// The size of the allocation `buf` is in (0 for none), as far as it is known.
    alloc: usize,
    /// Allocations `buf` had before (see [`RETIRE_MAX`]).
    recycled: Recycled,
    max_bytes: usize,
    budget: Option<BudgetWaiter>,
    /// Budget drawn for the message being received, and between messages for the read
    /// buffer's allocation beyond the free allowance.
    permit: BudgetPermit,
    /// The size (prefix included) of the last message received: the next fresh buffer's.
    last: usize,
    /// What a read asks for beyond what it needs: [`READ_CHUNK`], doubled (up to
    /// [`READ_BURST`]) while reads fill their buffer.
    slack: usize,
    /// When the buffers are let go (none while no buffer is held).
    idle: IdleRelease,
    /// The receive deadline of the message under way.
    clock: MessageClock,
    state: State,
    /// A listener's connection slot (shared with the sink): the socket is the listener's
    /// until it is closed, so a lingering reader takes it along.
    slot: Option<Arc<OwnedSemaphorePermit>>,
    /// Whether the peer has sent a byte yet.
    heard: bool,
    /// The error when the peer ends the stream before its first byte (see
    /// [`SILENT_SERVER`](super::SILENT_SERVER)); `None`: a clean end.
    silent: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Ended,
    Failed,
}

impl<R: AsyncRead + Unpin + Send + 'static> ByteStreamSource<R> {
    pub(super) fn new(
        reader: R,
        max_bytes: usize,
        budget: Option<ByteBudget>,
        deadline: Option<ReceiveDeadline>,
        slot: Option<Arc<OwnedSemaphorePermit>>,
    ) -> Self {
        ByteStreamSource {
            reader: Some(reader),
            linger: linger::<R>,
            lingering: None,
            buf: BytesMut::new(),
            alloc: 0,
            recycled: Recycled::within(budget.clone()),
            max_bytes,
            budget: budget.map(|b| b.waiter()),
            permit: BudgetPermit::default(),
            last: 0,
            slack: READ_CHUNK,
            idle: IdleRelease::default(),
            clock: MessageClock::new(deadline),
            state: State::Open,
            heard: false,
            silent: None,
            slot,
        }
    }

    /// Ends with `why` (an `UnexpectedEof`) instead of a clean end if the peer ends the
    /// stream before its first byte.
    pub(super) fn silent_means(mut self, why: Option<&'static str>) -> Self {
        self.silent = why;
        self
    }

    /// What the end of the stream between messages means: `None` for a clean end, or the
    /// error [`silent_means`](Self::silent_means) gave if the peer has not said a word.
    fn end(&self) -> Option<io::Error> {
        let why = self.silent.filter(|_| !self.heard)?;
        Some(io::Error::new(io::ErrorKind::UnexpectedEof, why))
    }

    /// A read's error: a reset before the peer's first byte carries the hint
    /// [`silent_means`](Self::silent_means) gave, as a silent end does. A WebSocket server
    /// that closes a client whose request is not HTTP resets the connection instead when
    /// bytes of ours are still unread in its socket (the rest of our hello, or a frame sent
    /// after it).
    fn failed(&self, e: io::Error) -> io::Error {
        use io::ErrorKind::{ConnectionAborted, ConnectionReset};
        match self.silent {
            Some(why) if !self.heard && matches!(e.kind(), ConnectionReset | ConnectionAborted) => {
                io::Error::new(e.kind(), format!("{e}: {why}"))
            }
            _ => e,
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
    /// long message, drawn from the budget first once the free allowance's worth of it has
    /// arrived; the most the read may take. `Pending` while the budget is spent.
    ///
    /// Reads ask for a little more than they need: a read that fills its buffer exactly
    /// leaves tokio unsure whether more is waiting, which costs an extra empty read. Around
    /// long messages ([`LONG_MESSAGE`] or more) a read asks for whole messages (as many
    /// more of the size of the last as the slack holds) and [`READ_CHUNK`]: one that runs
    /// on into a message leaves its start at the end of the buffer, where it is moved out
    /// (copied) when it needs room, into another allocation, as the buffer is still shared
    /// with the messages before it. Reads that ran on by most of a 64 KiB message copied
    /// every such message once (`docs/BENCHMARKS.md`).
    fn poll_room(
        &mut self,
        cx: &mut Context<'_>,
        len: Option<usize>,
    ) -> Poll<Result<usize, TransportError>> {
        let Some(len) = len else {
            // Under a budget, a first read stays within the free allowance.
            let first = match self.budget {
                Some(_) => FREE_PER_CONNECTION - READ_CHUNK,
                None => READ_MAX_FIRST,
            };
            let size = self.last.min(first);
            let ask = match size >= LONG_MESSAGE {
                // Messages like the last, as many as it and the slack hold.
                true => (size + self.slack) / size * size + READ_CHUNK,
                false => size + self.slack,
            };
            // Under a budget, what is read of a message before it is paid for stays within
            // the free allowance, with what is already here of it (the start of a length
            // prefix).
            let ask = match self.budget {
                Some(_) => ask.min(FREE_PER_CONNECTION.saturating_sub(self.buf.len()).max(1)),
                None => ask,
            };
            // On an empty buffer no longer shared with a message, this reuses its memory.
            self.reserve(ask);
            return Poll::Ready(Ok(ask));
        };
        let total = PREFIX + len;
        // The whole message beyond the free allowance, all or nothing.
        let charge = total.saturating_sub(FREE_PER_CONNECTION);
        let held = self.permit.bytes();
        let payable = self.budget.as_ref().is_some_and(|w| charge <= w.limit());
        if payable && held < charge && self.buf.len() < FREE_PER_CONNECTION {
            // Paid for once the free allowance's worth of it has arrived, not on its
            // announcement: a bare prefix announcing 64 MiB drew a quarter of the default
            // budget for 4 bytes. (One that no budget could pay for is refused below, as its
            // prefix arrives.) Meanwhile the clock asks for progress (`deadline.rs`).
            let room = FREE_PER_CONNECTION - self.buf.len();
            self.reserve(room);
            return Poll::Ready(Ok(room));
        }
        if held > 0 && held < charge {
            // What the last message drew, kept for its buffer, and what this one lacks
            // now; else wait holding nothing.
            match self
                .budget
                .as_ref()
                .and_then(|w| w.try_acquire(charge - held))
            {
                Some(more) => self.permit.merge(more),
                None => self.hold_nothing_while_waiting(),
            }
        }
        if let Some(waiter) = &mut self.budget {
            if waiter.poll_hold(cx, &mut self.permit, charge)?.is_pending() {
                // Waiting for the budget is not the peer's time; what this connection
                // keeps only to spare allocations goes first.
                self.clock.stop();
                self.recycled.under_pressure();
                return Poll::Pending;
            }
        }
        let missing = total - self.buf.len();
        if self.budget.is_some() && total > READ_SLICE && self.buf.len() >= READ_SLICE {
            // Paid for whole (above), and a slice of it is here: the rest of a long message
            // gets its room at once, so it is never copied into a larger buffer again; its
            // pages are touched only as its bytes arrive. (Growing by doubling copied up to
            // 32 MiB, faulting in as many fresh pages, in one go on the runtime's thread.)
            // Before a slice has arrived, the buffer grows with the data, as below: an
            // announcement alone costs little.
            if self.spare() < missing {
                self.reserve(missing);
            }
            return Poll::Ready(Ok(missing + READ_CHUNK));
        }
        // The buffer grows with the data, never with the announcement: by at most what has
        // arrived (or READ_AHEAD).
        let ahead = self.buf.len().max(READ_AHEAD);
        if total >= LONG_MESSAGE {
            // This one's rest and a little more, and messages like it as far as the slack
            // and the room hold.
            let rest = missing + READ_CHUNK;
            if self.spare() < rest {
                self.reserve(rest.min(ahead + READ_CHUNK));
            }
            let more = self.spare().saturating_sub(rest).min(self.slack) / total * total;
            return Poll::Ready(Ok(rest + more));
        }
        // Grow only once the room left is small.
        if self.spare() < missing.min(self.slack) {
            self.reserve((missing + self.slack).min(ahead));
        }
        match self.budget {
            // Of what follows this message, no more than the free allowance: a read into
            // a large buffer (one a long message left, still paid for) took 64 KiB of the
            // next long message before it was paid for, and then waited for the rest of
            // its charge holding that, while others waited for what it held.
            Some(_) => Poll::Ready(Ok(missing + FREE_PER_CONNECTION)),
            None => Poll::Ready(Ok(usize::MAX)),
        }
    }

    fn spare(&self) -> usize {
        self.buf.capacity() - self.buf.len()
    }

    /// Makes room for `bytes` more, unless there is already. A buffer whose allocation is
    /// still shared with messages in use moves to a kept allocation that no message uses
    /// any more, or to a fresh one (and its own is kept); a long message's buffer grows as
    /// `BytesMut` grows it.
    fn reserve(&mut self, bytes: usize) {
        if self.spare() >= bytes || self.buf.try_reclaim(bytes) {
            return;
        }
        let need = self.buf.len() + bytes;
        if need > RETIRE_MAX || self.alloc > RETIRE_MAX {
            self.buf.reserve(bytes);
            self.alloc = self.buf.capacity();
            return;
        }
        let (mut fresh, alloc) = self.recycled.take_or_new(need, need.max(self.alloc));
        // What has arrived of the next message (little: the rest is read into the room).
        fresh.extend_from_slice(&self.buf);
        let old = std::mem::replace(&mut self.buf, fresh);
        let old_alloc = std::mem::replace(&mut self.alloc, alloc);
        self.recycled.keep(old, old_alloc, RETIRE_MAX);
    }

    /// A message was split off: the permit, which paid for it, now pays for what the read
    /// buffer's allocation holds beyond the free allowance (given back in part, or topped
    /// up), so that a buffer a long message left is held within the budget too. When the
    /// budget cannot pay for it, or a request on it waits, the buffer goes, unless input
    /// after the message is in it (then it keeps what the message drew until the next
    /// message is split off).
    fn pay_for_buffer(&mut self) {
        let Some(waiter) = &self.budget else {
            return;
        };
        let over = self.alloc.saturating_sub(FREE_PER_CONNECTION);
        let held = self.permit.bytes();
        // A message waiting for the budget gets what is held only to spare an allocation.
        let paid = !self.recycled.under_pressure()
            && (held >= over
                || waiter.try_acquire(over - held).is_some_and(|more| {
                    self.permit.merge(more);
                    true
                }));
        if paid {
            self.permit.release(held.saturating_sub(over));
        } else if self.buf.is_empty() {
            self.let_buffer_go();
        }
    }

    /// About to wait for the budget: hold nothing of it meanwhile, so that two connections
    /// never each hold part of it while they wait for more. (What a long message drew,
    /// kept for its buffer while the start of the next one was in it, waited for the rest
    /// of the next one's charge: two such connections, and answers waiting to be sent
    /// paid from the same budget, waited on each other for good.) What has arrived of the
    /// next message (read within the free allowance before its charge) moves to a buffer
    /// of its own within that allowance, and the large one goes.
    fn hold_nothing_while_waiting(&mut self) {
        if self.buf.len() > FREE_PER_CONNECTION {
            return; // Not read before its message is paid for (reads stay within it).
        }
        let room = (self.buf.len() + READ_CHUNK).min(FREE_PER_CONNECTION);
        let mut small = BytesMut::with_capacity(room);
        small.extend_from_slice(&self.buf);
        self.buf = small;
        self.alloc = self.buf.capacity();
        self.permit = BudgetPermit::default();
    }

    /// Holds no read buffer, and nothing of the budget for one.
    fn let_buffer_go(&mut self) {
        self.buf = BytesMut::new();
        self.alloc = 0;
        self.permit = BudgetPermit::default();
    }

    /// Between messages with nothing to read: once that has lasted [`IDLE_RELEASE`], let
    /// the buffer go. (Letting it go at once would make a busy connection allocate a
    /// fresh buffer for every read, which measured 1.6x slower on 64 KiB echoes.)
    fn poll_release(&mut self, cx: &mut Context<'_>) {
        if !self.buf.is_empty() || (self.alloc == 0 && self.recycled.is_empty()) {
            return;
        }
        if self.recycled.under_pressure() || self.idle.poll_elapsed(cx) {
            self.idle.stop();
            self.let_buffer_go();
            self.recycled.clear();
            self.slack = READ_CHUNK;
        }
    }

    fn poll_message(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, TransportError>> {
        // Bytes read by this call (see READ_SLICE).
        let mut read = 0;
        loop {
            let len = self.announced()?;
            if let Some(len) = len {
                if self.buf.len() >= PREFIX + len {
                    let mut msg = self.buf.split_to(PREFIX + len);
                    msg.advance(PREFIX);
                    self.clock.stop();
                    self.last = PREFIX + len;
                    if self.last > READ_MAX_FIRST && self.buf.is_empty() {
                        // A buffer sized for a long message is not kept for the next one.
                        self.buf = BytesMut::new();
                        self.alloc = 0;
                    }
                    self.pay_for_buffer();
                    return Poll::Ready(Ok(Some(msg.freeze())));
                }
                if read >= READ_SLICE {
                    // Between two slices of a long message: the task's turn ends here.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            let most = ready!(self.poll_room(cx, len))?;
            // No read takes this call past its slice (below it here: see the check above).
            let room = self.spare().min(most).min(READ_SLICE.saturating_sub(read));
            let Some(reader) = self.reader.as_mut() else {
                return Poll::Ready(Err(TransportError::Closed));
            };
            let n = match poll_read_buf(Pin::new(reader), cx, &mut (&mut self.buf).limit(room)) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(self.failed(e).into())),
                Poll::Pending if !self.buf.is_empty() => {
                    // Stalled inside a message: within its deadline, or failed.
                    let len = len.map_or(0, |len| (PREFIX + len) as u64);
                    self.clock.check(cx, len, self.buf.len() as u64)?;
                    return Poll::Pending;
                }
                Poll::Pending => {
                    self.poll_release(cx);
                    return Poll::Pending;
                }
            };
            read += n;
            self.heard |= n > 0;
            self.idle.busy();
            self.slack = match n {
                // Filled: more is probably waiting; ask for more next time.
                n if n == room && self.budget.is_none() => (self.slack * 2).min(READ_BURST),
                n if n < READ_CHUNK => READ_CHUNK,
                _ => self.slack,
            };
            if n == 0 {
                // End of stream: clean between messages, truncation inside one.
                return match self.buf.is_empty() {
                    true => match self.end() {
                        None => Poll::Ready(Ok(None)),
                        Some(e) => Poll::Ready(Err(e.into())),
                    },
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
                self.alloc = 0;
                self.recycled.clear();
                self.idle.stop();
                self.permit = BudgetPermit::default();
            }
        }
        Poll::Ready(result)
    }

    fn pause(&mut self) {
        self.clock.pause();
    }

    /// Reads and discards until the peer ends its direction or fails, goes quiet for
    /// [`LINGER_QUIET`], or [`LINGER`] or [`LINGER_BYTES`] is reached, as the task that
    /// dropping the source spawns would; the buffers and the budget drawn for a message
    /// under way are let go first.
    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.state == State::Ended {
            return Poll::Ready(());
        }
        let Some(reader) = self.reader.as_mut() else {
            return Poll::Ready(());
        };
        let lingering = match &mut self.lingering {
            Some(lingering) => lingering,
            None => {
                self.buf = BytesMut::new();
                self.alloc = 0;
                self.recycled.clear();
                self.idle.stop();
                self.permit = BudgetPermit::default();
                self.lingering.insert(Box::new(Lingering::new()))
            }
        };
        if lingering.poll(reader, cx).is_ready() {
            self.reader = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// A linger under way in the source ([`MessageSource::poll_linger`]).
#[derive(Debug)]
struct Lingering {
    /// When it ends whatever the peer sends.
    deadline: Instant,
    /// At the sooner of `deadline` and [`LINGER_QUIET`] after the last read.
    timer: Pin<Box<tokio::time::Sleep>>,
    /// Bytes read and discarded so far.
    read: usize,
}

impl Lingering {
    fn new() -> Self {
        let now = Instant::now();
        Lingering {
            deadline: now + LINGER,
            timer: Box::pin(tokio::time::sleep_until(
                (now + LINGER_QUIET).min(now + LINGER),
            )),
            read: 0,
        }
    }

    fn poll<R: AsyncRead + Unpin>(&mut self, reader: &mut R, cx: &mut Context<'_>) -> Poll<()> {
        let mut scratch = [0u8; 2048];
        let before = self.read;
        while self.read < LINGER_BYTES {
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => self.read += buf.filled().len(),
                // The peer ended its direction, or failed.
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => break,
            }
        }
        if self.read >= LINGER_BYTES {
            return Poll::Ready(());
        }
        if self.read > before {
            let quiet = (Instant::now() + LINGER_QUIET).min(self.deadline);
            self.timer.as_mut().reset(quiet);
        }
        self.timer.as_mut().poll(cx)
    }
}

/// Dropped before the peer's end (after an oversize message, or on our close) and not
/// lingered by its connection: keep reading and discarding for a while, so that the kernel
/// does not reset the socket over unread input and destroy the goaway we just sent before
/// the peer reads it.
impl<R> Drop for ByteStreamSource<R> {
    fn drop(&mut self) {
        if self.state != State::Ended && self.lingering.is_none() {
            if let Some(reader) = self.reader.take() {
                (self.linger)(reader, self.slot.take());
            }
        }
    }
}

/// Reads and discards `reader` on a task until the peer closes or fails, goes quiet for
/// [`LINGER_QUIET`], or [`LINGER`] or [`LINGER_BYTES`] is reached; outside a runtime, drops
/// it at once. The connection's `slot` is held until then: the socket is still open, and
/// with the slot given back at once, peers that went on sending after their connections
/// closed held lingering sockets beyond `max_connections` (forty with a bound of one).
fn linger<R: AsyncRead + Unpin + Send + 'static>(
    mut reader: R,
    slot: Option<Arc<OwnedSemaphorePermit>>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let _slot = slot;
        let deadline = Instant::now() + LINGER;
        let mut scratch = [0u8; 2048];
        let mut read = 0;
        while read < LINGER_BYTES {
            let quiet = (Instant::now() + LINGER_QUIET).min(deadline);
            match tokio::time::timeout_at(quiet, reader.read(&mut scratch)).await {
                Ok(Ok(n)) if n > 0 => read += n,
                _ => return,
            }
        }
    });
}
