//! The socket under tungstenite: reads ahead in large chunks, and charges the bytes it
//! reads to a listener's budget until the message they belong to is complete.
//!
//! tungstenite reads at most its read buffer's size per call
//! ([`READ_BUFFER`](super::READ_BUFFER)), and that size is also the buffer an idle
//! connection keeps. Reading ahead here decouples the two: one
//! socket read of up to [`SOCKET_READ`] bytes (sized for the last message) serves many
//! small tungstenite reads (copied), so a 64 KiB message costs one `recvfrom` while
//! tungstenite's buffer stays small; the read-ahead buffer is let go as soon as it is
//! drained, and while a read waits for the socket, so idle costs nothing here (one of
//! 16 KiB or more is kept for the next read, until the connection has been idle for
//! [`IDLE_RELEASE`](crate::transport::recycle::IDLE_RELEASE)).
//!
//! Reads stay within [`FREE_PER_CONNECTION`] until a message needs more. A message longer
//! than that is paid for whole, as the byte stream does, once its first frame's header has
//! been read (the [`Reframe`] below reads every header) and the free allowance's worth of
//! input has: its one frame, or, when fragments follow and its size is not known yet, the
//! frame limit (so at most the budget over the limit of such messages are received at
//! once). A header alone draws nothing. All or nothing: two partly received
//! messages never wait on each other. (Drawing the bytes read by read, as before, let five
//! 64 MiB messages arriving at once each take a share of a 256 MiB budget and wait for
//! more, until the peers were dropped for missing pongs.) Beyond what was reserved (a
//! message over its size), each further read draws its bytes first: at once, while the
//! message holds what it drew (else it is refused as too large: waiting, it could wait on
//! a message that waits for what it holds). The source tells the
//! meter when a message is complete ([`Metered::message_done`]), which gives the bytes back;
//! a control frame between two messages does the same ([`Metered::control_done`]), one
//! inside a fragmented message does not.
//!
//! Bytes pass to tungstenite through a [`Reframe`], which cuts long frames into fragments
//! or takes them whole around tungstenite (`reframe.rs`); during a handshake, only up to
//! the end of its HTTP head. A message taken whole is for the source to take
//! ([`Metered::take_message`]) when tungstenite says it waits for more: while one is
//! held, a read here returns `Pending` (registering no waker) unless it passed on bytes
//! from before the message, and the source, which is the one reader, takes the message in
//! the same poll.
//!
//! While [`PONGS_OWED`] pongs are owed and the socket takes no more writes, nothing more
//! is read ([`Metered::ping_received`]): tungstenite answers each ping, and a pong it cannot
//! write goes into its write buffer after the ones before it, so a peer that sent pings and
//! read nothing made it hold one pong per ping, outside every budget (64 MiB of pings were
//! all read, their pongs held). Not at the first pong owed: while a long frame of ours is
//! on its way the pong waits behind it, and a peer that pings then (it hears nothing of
//! ours until the frame ends) is still reading; to stop reading it could keep it from
//! reading the frame, if it waits to send before it reads on. A bunite peer, or a browser,
//! sends a ping or two per silence before it gives up, never dozens.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::Role;

use super::reframe::{apply_mask, Reframe};
use super::SOCKET_READ;
use crate::transport::budget::{BudgetWaiter, FREE_PER_CONNECTION};
use crate::transport::deadline::{MessageClock, ReceiveDeadline};
use crate::transport::recycle::{IdleRelease, Recycled};
use crate::transport::{BudgetPermit, ByteBudget, TransportError};

/// A small read: what a socket read adds to the last message's size, and the least room
/// in the budget worth a read (tungstenite's own reads,
/// [`READ_BUFFER`](super::READ_BUFFER), are smaller).
const SMALL_READ: usize = 4 * 1024;

/// The smallest socket read.
const MIN_READ: usize = 2 * SMALL_READ;

/// Pongs owed, and not written for a full socket, past which nothing more is read (see the
/// module docs): at most 8 KiB of them (125 bytes of payload each), as many as
/// tungstenite's write buffer holds before it writes.
pub(super) const PONGS_OWED: usize = 64;

/// A socket that reads ahead, and whose reads may draw from a budget.
#[derive(Debug)]
pub(super) struct Metered<S> {
    io: S,
    /// Read from the socket, not yet handed to tungstenite.
    ahead: BytesMut,
    /// The size of the allocation `ahead` is in (0 for none).
    ahead_alloc: usize,
    /// Allocations `ahead` had before: a long message taken whole keeps its read's
    /// allocation until it has been handled, and the next read takes it back from here
    /// then, instead of a fresh one (`transport/recycle.rs`). Let go after
    /// [`IDLE_RELEASE`](crate::transport::recycle::IDLE_RELEASE) without input.
    recycled: Recycled,
    idle: IdleRelease,
    /// How much the next socket read asks for: the last message's size plus a little,
    /// between [`MIN_READ`] and [`SOCKET_READ`].
    next_read: usize,
    /// Bytes read since the last complete message.
    since_message: usize,
    meter: Option<Meter>,
    /// Data messages completed (as the source tells).
    completed: u64,
    /// Bytes written to the socket so far ([`MessageSink::written`](
    /// crate::transport::MessageSink::written)).
    written: u64,
    /// A long data frame written around tungstenite (see `halves::WsSink`), not yet all
    /// on the socket. It goes out before anything tungstenite writes after it.
    long: Option<LongFrame>,
    /// A piece of a client's long frame, masked; kept for the next one (at most
    /// [`MASK_PIECE`] + [`MASK_TAIL`]: allocating it for each long message cost a 64 KiB
    /// echo 10%).
    masked: Vec<u8>,
    /// While the handshake's HTTP head is read: how many bytes of its end (`\r\n\r\n`)
    /// have been seen. The head is passed on up to its end and no further, so that
    /// tungstenite keeps no frame bytes from the handshake read and the first frame starts
    /// at a header.
    head: Option<u8>,
    /// Frames on their way to tungstenite, long ones cut into fragments.
    reframe: Reframe,
    /// The receive deadline of the message (or frame) under way; its error reaches the
    /// source inside an `io::Error` (see `halves::io_error`).
    clock: MessageClock,
    /// The control frames between messages read whole when the clock was last checked.
    controls_timed: u64,
    /// Pings that reached the source since tungstenite last wrote out all it held: their
    /// pongs are owed (see the module docs).
    pongs_owed: usize,
    /// The last write found the socket full (its waker is registered for room).
    write_blocked: bool,
}

/// A data frame written around tungstenite.
#[derive(Debug)]
struct LongFrame {
    /// What is left of its header.
    header: Bytes,
    payload: Bytes,
    /// The masking key of a client's frame.
    key: Option<[u8; 4]>,
    /// Payload bytes written.
    sent: usize,
    /// Where the masked piece in `Metered::masked` starts in the payload.
    masked_from: usize,
}

/// A client's long frame is masked this much at a time, into a buffer it keeps.
const MASK_PIECE: usize = 64 * 1024;

/// A last piece this short is masked with the one before it, so that the two go out in
/// one write: a message of 64 KiB of data and its call's few bytes around them took a
/// write of its own for those few bytes.
const MASK_TAIL: usize = 8 * 1024;

/// Where the masked piece of a payload of `len` bytes that starts at `from` ends.
fn mask_piece_end(from: usize, len: usize) -> usize {
    if len - from <= MASK_PIECE + MASK_TAIL {
        len
    } else {
        from + MASK_PIECE
    }
}

#[derive(Debug)]
struct Meter {
    waiter: BudgetWaiter,
    /// Bytes drawn beyond the free allowance.
    permit: BudgetPermit,
    /// Bytes read from the socket since the last complete message.
    held: usize,
    /// The bytes to read until the message under way is complete, counted as `held` is
    /// (from the last release), once its first header has been read (0 before), and its
    /// number: what is drawn whole before the next read.
    need: usize,
    need_for: u64,
    /// The size of the message under way, if its one frame announced more than the budget
    /// and the free allowance could ever pay for.
    beyond_budget: Option<u64>,
}

impl<S> Metered<S> {
    /// Bytes written to the socket so far.
    pub(super) fn written(&self) -> u64 {
        self.written
    }

    /// Bytes of the long frame under way not yet on the socket.
    pub(super) fn long_left(&self) -> usize {
        self.long
            .as_ref()
            .map_or(0, |f| f.header.len() + f.payload.len() - f.sent)
    }

    /// `io` read for tungstenite, whose frame limit is `max_frame` (longer frames are not
    /// cut, so that it refuses them at their header), starting with the handshake's HTTP
    /// head if `handshake` (else with frames: a handshake made by another server). Long
    /// frames are taken whole if masked as `role`'s peer masks them.
    pub(super) fn new(
        io: S,
        budget: Option<&ByteBudget>,
        deadline: Option<ReceiveDeadline>,
        max_frame: usize,
        handshake: bool,
        role: Role,
    ) -> Self {
        let meter = budget.map(|b| Meter {
            waiter: b.waiter(),
            permit: BudgetPermit::default(),
            held: 0,
            need: 0,
            need_for: 0,
            beyond_budget: None,
        });
        Metered {
            io,
            written: 0,
            long: None,
            masked: Vec::new(),
            ahead: BytesMut::new(),
            ahead_alloc: 0,
            recycled: Recycled::within(budget.cloned()),
            idle: IdleRelease::default(),
            next_read: MIN_READ,
            since_message: 0,
            meter,
            completed: 0,
            head: handshake.then_some(0),
            reframe: Reframe::new(max_frame).take_whole(role == Role::Server),
            pongs_owed: 0,
            write_blocked: false,
            clock: MessageClock::new(deadline),
            controls_timed: 0,
        }
    }

    /// A data message is complete (or the socket's reading ended): the bytes read for it go
    /// back to the budget.
    pub(super) fn message_done(&mut self) {
        self.completed += 1;
        self.release();
    }

    /// A control frame was read: between two messages, the bytes read so far go back to
    /// the budget (so that pings never add up); inside a fragmented message, they stay
    /// counted with it. Whether a message is under way is asked of the messages started,
    /// not of where the reframing is: it runs ahead of tungstenite, and had often seen the
    /// header of a message's last fragment (so no message under way) by the time
    /// tungstenite returned a ping sent before it, which gave back the bytes of the
    /// message so far while its rest was still to come. A ping between two messages that
    /// arrives with the next one's header stays counted with that message.
    pub(super) fn control_done(&mut self) {
        if self.reframe.started() <= self.completed {
            self.release();
        }
    }

    /// The connection stops reading (see `MessageSource::pause`): the clock of the message
    /// under way stands still until it reads again.
    pub(super) fn pause(&mut self) {
        self.clock.pause();
    }

    fn release(&mut self) {
        self.clock.stop();
        let size = self.since_message.saturating_sub(self.ahead.len());
        self.next_read = (size + SMALL_READ).clamp(MIN_READ, SOCKET_READ);
        self.since_message = self.ahead.len();
        if let Some(m) = &mut self.meter {
            // Bytes read ahead belong to the next message and stay counted; so does its
            // size, if its header was among them (counted from here on: without what goes
            // back now, its own bytes and those before its header that stay).
            let released = m.held.saturating_sub(self.ahead.len());
            m.held = self.ahead.len();
            m.permit = BudgetPermit::default();
            m.need = match m.need_for <= self.completed {
                true => 0,
                false => m.need.saturating_sub(released),
            };
        }
    }

    /// The source was handed a ping, whose pong tungstenite writes with its next flush:
    /// past [`PONGS_OWED`] of them that cannot be written, no more is read (see the module
    /// docs).
    pub(super) fn ping_received(&mut self) {
        self.pongs_owed += 1;
    }

    /// A message read whole around tungstenite, complete: it comes after every message
    /// tungstenite has returned, and before any it returns next (see the module docs).
    pub(super) fn take_message(&mut self) -> Option<Bytes> {
        self.reframe.take_message()
    }

    pub(super) fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Lets the (drained) read-ahead buffer go, its allocation kept for reuse if large.
    fn retire_ahead(&mut self) {
        let ahead = std::mem::take(&mut self.ahead);
        let alloc = std::mem::take(&mut self.ahead_alloc);
        self.recycled.keep(ahead, alloc, SOCKET_READ);
    }

    /// The read-ahead buffer's capacity (tests: nothing is held while idle).
    #[cfg(test)]
    pub(super) fn ahead_capacity(&self) -> usize {
        self.ahead.capacity()
    }
}

impl Meter {
    /// The longest message this meter could ever pay for: the whole budget and the free
    /// allowance.
    fn most(&self) -> usize {
        FREE_PER_CONNECTION.saturating_add(self.waiter.limit())
    }

    /// How many bytes the next socket read may take: what the free allowance and the
    /// permit leave, topped up from the budget when that is less than one small read.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // A message longer than the whole budget and the free allowance could never be
        // paid for: refused, as over the byte stream, as soon as its header says so.
        let most = self.most();
        let too_large = |len: u64| {
            let e = TransportError::TooLarge { len, max: most };
            Poll::Ready(Err(io::Error::other(e)))
        };
        if let Some(len) = self.beyond_budget {
            return too_large(len);
        }
        // The message under way, whole, beyond the free allowance (never above the budget,
        // which no wait could give: a message in fragments, paid for at the frame limit),
        // once the allowance's worth has been read: a header alone draws nothing (the
        // header of a first fragment drew the frame limit, 64 MiB, for 14 bytes), and
        // the clock asks for progress from then on (`deadline.rs`).
        let whole = match self.held < FREE_PER_CONNECTION {
            true => 0,
            false => (self.need.saturating_sub(FREE_PER_CONNECTION)).min(self.waiter.limit()),
        };
        ready!(self.waiter.poll_hold(cx, &mut self.permit, whole)).map_err(io::Error::other)?;
        let allowed = FREE_PER_CONNECTION + self.permit.bytes();
        let room = allowed.saturating_sub(self.held);
        // Less than a small read left is enough when it is the rest of a message paid for
        // whole: a top-up would queue behind the messages waiting for their whole, and
        // those wait for this one.
        if room >= SMALL_READ || (room > 0 && self.need > 0) {
            return Poll::Ready(Ok(room.min(SOCKET_READ)));
        }
        if self.need > allowed {
            // A message in fragments that has read the whole budget and goes on: the
            // permit holds all of it, so no top-up could come, and waiting for one would
            // hold the budget for good (a wait for the budget is not the peer's time).
            return too_large(self.held as u64 + 1);
        }
        let now = self.waiter.try_acquire(SOCKET_READ);
        let more = match now.or_else(|| self.waiter.try_acquire(SMALL_READ)) {
            Some(permit) => permit,
            // A message in fragments that has read all it was paid for (the frame limit:
            // its fragments' headers and the pings between them count) and goes on: it may
            // take more only if the budget has it now. Waiting for it, holding what the
            // message drew, queued the top-up behind a message waiting for its whole,
            // which waited for what this one held: neither was ever read again, and the
            // listener's other long messages waited behind them
            // (`tests/random_receive_budget.rs`).
            None if self.permit.bytes() > 0 => return too_large(self.held as u64 + 1),
            None => ready!(self.waiter.poll_acquire(cx, SMALL_READ)).map_err(io::Error::other)?,
        };
        self.permit.merge(more);
        let allowed = FREE_PER_CONNECTION + self.permit.bytes();
        Poll::Ready(Ok(allowed.saturating_sub(self.held).min(SOCKET_READ)))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let start = buf.filled().len();
        // Kept allocations yield to a message waiting for the budget.
        this.recycled.under_pressure();
        loop {
            if this.reframe.holds_message() {
                // For the source to take: bytes before it go first.
                return match buf.filled().len() > start {
                    true => Poll::Ready(Ok(())),
                    false => Poll::Pending,
                };
            }
            if this.pongs_owed >= PONGS_OWED && this.write_blocked {
                // The write that found the socket full wakes this task too (tungstenite's
                // write waker wakes its reader); the peer's time still runs.
                if buf.filled().len() > start {
                    return Poll::Ready(Ok(()));
                }
                this.check_clock(cx)?;
                return Poll::Pending;
            }
            if this.ahead.is_empty() {
                let room = match &mut this.meter {
                    Some(m) => match m.poll_room(cx)? {
                        Poll::Ready(room) => room,
                        Poll::Pending => {
                            // Waiting for the budget is not the peer's time; what this
                            // connection keeps only to spare allocations goes first.
                            this.clock.stop();
                            this.recycled.under_pressure();
                            return Poll::Pending;
                        }
                    },
                    None => usize::MAX,
                };
                // The rest of a frame taken whole is read straight into its message; any
                // other bytes into the read-ahead buffer.
                let (target, want, direct) = match this.reframe.whole_room(room, &mut this.recycled)
                {
                    Some((payload, want)) => (payload, want, true),
                    None => {
                        let want = room.min(this.next_read);
                        if this.ahead.capacity() < want {
                            (this.ahead, this.ahead_alloc) = this.recycled.take_or_new(want, want);
                        }
                        (&mut this.ahead, want, false)
                    }
                };
                let mut limited = target.limit(want);
                let polled =
                    tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut limited);
                let n = match polled {
                    Poll::Ready(n) => n?,
                    Poll::Pending => {
                        // Nothing to read: hold no buffer while waiting (an idle connection
                        // waits here, and would otherwise keep `want` bytes reserved), and
                        // none kept for reuse once the wait has lasted.
                        this.retire_ahead();
                        if !this.recycled.is_empty() && this.idle.poll_elapsed(cx) {
                            this.recycled.clear();
                        }
                        this.check_clock(cx)?;
                        return Poll::Pending;
                    }
                };
                this.since_message += n;
                this.idle.busy();
                if let Some(m) = &mut this.meter {
                    m.held += n;
                }
                if n == 0 {
                    // The end of the socket, after any header bytes held back.
                    this.reframe.flush_partial(buf);
                    return Poll::Ready(Ok(()));
                }
                if direct {
                    this.reframe.whole_read(n);
                    continue;
                }
            }
            let before = buf.filled().len();
            let used = match &mut this.head {
                None => {
                    let used = this.reframe.feed(&this.ahead, buf);
                    if let (Some(a), Some(m)) = (this.reframe.take_announced(), &mut this.meter) {
                        // What was read before the message (a handshake's head, a ping)
                        // stays counted with it: the bytes of it read so far are those
                        // from its header's start to the end of the read-ahead.
                        let of_it = (this.ahead.len() as i64 - a.at).max(0) as usize;
                        let before = m.held.saturating_sub(of_it);
                        let size = usize::try_from(a.size).unwrap_or(usize::MAX);
                        m.need = before.saturating_add(size);
                        m.need_for = a.number;
                        m.beyond_budget = (a.exact && size > m.most()).then_some(a.size);
                    }
                    used
                }
                Some(matched) => {
                    let (n, end) = head(&this.ahead, matched, buf.remaining());
                    buf.put_slice(this.ahead.get(..n).unwrap_or_default());
                    if end {
                        this.head = None;
                    }
                    n
                }
            };
            this.ahead.advance(used);
            // A frame taken whole: its payload, the read-ahead buffer's allocation with it
            // when it is all there (no copy), else copied into a buffer of its own.
            this.reframe
                .take_payload(&mut this.ahead, &mut this.recycled);
            if this.ahead.is_empty() {
                // Drained: hold no read-ahead buffer while idle.
                this.retire_ahead();
            }
            // Only header bytes (or a payload taken whole) so far: read on (an empty read
            // would mean the end).
            if buf.filled().len() > before || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S> Metered<S> {
    /// Stalled inside a frame: within its deadline, or failed (the handshake has its own
    /// timeout).
    fn check_clock(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        // A control frame between two messages read whole since: the clock its stall
        // started is done with it. A message whose first header came with its end starts
        // its own at its own first stall (it went on with the ping's, and was cut off up
        // to the grace early).
        let controls = self.reframe.controls_between();
        if controls != self.controls_timed {
            self.controls_timed = controls;
            self.clock.stop();
        }
        if let (None, Some(size)) = (self.head, self.reframe.under_way()) {
            let arrived = self.reframe.data_read();
            let timed_out = self.clock.check(cx, size, arrived);
            timed_out.map_err(|e| io::Error::new(io::ErrorKind::TimedOut, e))?;
        }
        Ok(())
    }

    /// Notes whether a write found the socket full; one that wrote out everything
    /// tungstenite held (a flush) sent the pongs owed.
    fn wrote<T>(&mut self, polled: Poll<io::Result<T>>, flushed: bool) -> Poll<io::Result<T>> {
        self.write_blocked = polled.is_pending();
        if flushed && polled.is_ready() {
            self.pongs_owed = 0;
        }
        polled
    }
}

/// How many of `bytes` (at most `room`) belong to the HTTP head, and whether they end it;
/// `matched` carries the part of `\r\n\r\n` seen from one call to the next.
fn head(bytes: &[u8], matched: &mut u8, room: usize) -> (usize, bool) {
    for (i, &b) in bytes.iter().take(room).enumerate() {
        *matched = match (*matched, b) {
            (0 | 2, b'\r') | (1 | 3, b'\n') => *matched + 1,
            (_, b'\r') => 1,
            _ => 0,
        };
        if *matched == 4 {
            return (i + 1, true);
        }
    }
    (bytes.len().min(room), false)
}

impl<S: AsyncWrite + Unpin> Metered<S> {
    /// Queues a data frame to write around tungstenite: its header, and its payload as it
    /// is (a server's) or masked with `key` a piece at a time as it is written (a
    /// client's); [`poll_long`](Self::poll_long) writes it.
    pub(super) fn queue_frame(&mut self, header: Bytes, payload: Bytes, key: Option<[u8; 4]>) {
        debug_assert!(self.long.is_none(), "one long frame at a time");
        self.long = Some(LongFrame {
            header,
            payload,
            key,
            sent: 0,
            masked_from: 0,
        });
    }

    /// Writes the frame [`queue_frame`](Self::queue_frame) queued; `Pending` until it is
    /// all on the socket.
    pub(super) fn poll_long(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Metered {
            io: socket,
            long,
            masked,
            written,
            ..
        } = self;
        while let Some(f) = long.as_mut() {
            if f.header.is_empty() && f.sent == f.payload.len() {
                break;
            }
            let body: &[u8] = match f.key {
                None => &f.payload[f.sent..],
                Some(key) => {
                    if f.sent >= f.masked_from + masked.len() {
                        let end = mask_piece_end(f.sent, f.payload.len());
                        masked.clear();
                        masked.extend_from_slice(&f.payload[f.sent..end]);
                        apply_mask(masked, key, f.sent);
                        f.masked_from = f.sent;
                    }
                    &masked[f.sent - f.masked_from..]
                }
            };
            let n = if f.header.is_empty() {
                ready!(Pin::new(&mut *socket).poll_write(cx, body))?
            } else if socket.is_write_vectored() {
                let slices = [io::IoSlice::new(&f.header), io::IoSlice::new(body)];
                ready!(Pin::new(&mut *socket).poll_write_vectored(cx, &slices))?
            } else {
                ready!(Pin::new(&mut *socket).poll_write(cx, &f.header))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written = written.wrapping_add(n as u64);
            let from_header = n.min(f.header.len());
            f.header.advance(from_header);
            f.sent += n - from_header;
        }
        *long = None;
        masked.clear();
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = this.poll_long(cx);
        ready!(this.wrote(polled, false))?;
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        let n = ready!(this.wrote(polled, false))?;
        this.written = this.written.wrapping_add(n as u64);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = this.poll_long(cx);
        ready!(this.wrote(polled, false))?;
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        let n = ready!(this.wrote(polled, false))?;
        this.written = this.written.wrapping_add(n as u64);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = this.poll_long(cx);
        ready!(this.wrote(polled, false))?;
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.wrote(polled, true)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_long(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::AsyncWriteExt;
    use tokio_tungstenite::tungstenite::Message;

    use super::super::READ_BUFFER;
    use super::*;
    use crate::testing::Recorder;

    /// Polls one read into a buffer of `READ_BUFFER` bytes: what it gave, or `None` if
    /// it is pending.
    async fn read_once<S: AsyncRead + Unpin>(m: &mut Metered<S>) -> Option<Vec<u8>> {
        poll_fn(|cx| {
            let mut space = [0u8; READ_BUFFER];
            let mut buf = ReadBuf::new(&mut space);
            Poll::Ready(match Pin::new(&mut *m).poll_read(cx, &mut buf) {
                Poll::Ready(r) => {
                    r.unwrap();
                    Some(buf.filled().to_vec())
                }
                Poll::Pending => None,
            })
        })
        .await
    }

    /// An idle connection waits in `poll_read`: it must not keep the read-ahead buffer it
    /// reserved for the socket read while it waits (8 KiB a connection before).
    #[tokio::test]
    async fn a_read_that_waits_holds_no_buffer() {
        let budget = ByteBudget::new(1 << 20);
        for budget in [None, Some(&budget)] {
            let (ours, mut peer) = tokio::io::duplex(64 * 1024);
            let mut m = Metered::new(ours, budget, None, 1 << 20, false, Role::Server);
            assert_eq!(read_once(&mut m).await, None, "nothing sent yet");
            assert_eq!(
                m.ahead.capacity(),
                0,
                "an empty read-ahead buffer kept while idle"
            );

            // One binary frame of 6,000 bytes in all (a 4-byte header): more than one read,
            // less than a fragment (so it passes uncut).
            let mut frame = vec![0x82, 126];
            frame.extend_from_slice(&5_996u16.to_be_bytes());
            frame.resize(6_000, 1);
            const _: () = assert!(6_000 > READ_BUFFER && 6_000 < super::super::reframe::CUT);
            peer.write_all(&frame).await.unwrap();
            let mut got = 0;
            while got < 6_000 {
                let chunk = read_once(&mut m).await.expect("bytes were sent");
                assert!(!chunk.is_empty() && chunk.len() <= READ_BUFFER);
                got += chunk.len();
            }
            assert_eq!(got, 6_000);
            m.message_done();
            assert_eq!(m.ahead.capacity(), 0, "drained: the buffer is let go");
            assert_eq!(read_once(&mut m).await, None);
            assert_eq!(m.ahead.capacity(), 0, "waiting again: no buffer kept");
        }
    }

    /// The handshake's HTTP head is passed on up to its end and no further, even when the
    /// first frame came in the same read, so tungstenite keeps no frame bytes from its
    /// handshake read; then frames pass (a long one in fragments).
    #[tokio::test]
    async fn the_head_ends_at_its_blank_line_and_frames_follow() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let mut m = Metered::new(ours, None, None, 1 << 20, true, Role::Server);
        let head = b"GET /rpc HTTP/1.1\r\nHost: x\r\nA: \r\r\n\r\n".to_vec();
        let long = super::super::reframe::CUT + 10;
        let mut frame = vec![0x82, 127];
        frame.extend_from_slice(&(long as u64).to_be_bytes());
        frame.resize(10 + long, 7);
        peer.write_all(&[head.clone(), frame].concat())
            .await
            .unwrap();
        let mut got = Vec::new();
        while got.len() < head.len() {
            got.extend(read_once(&mut m).await.expect("sent"));
        }
        assert_eq!(got, head, "the head and nothing after it");
        let first = read_once(&mut m).await.expect("sent");
        // A first fragment: binary, not final, a fragment long (in the shortest form).
        let fragment = super::super::reframe::CUT;
        let mut header = vec![0x02];
        match u16::try_from(fragment) {
            Ok(len) => header.extend([&[126][..], &len.to_be_bytes()].concat()),
            Err(_) => header.extend([&[127][..], &(fragment as u64).to_be_bytes()].concat()),
        }
        assert_eq!(first[..header.len()], header[..]);
    }

    /// A client's long frame goes out 64 KiB of payload a write, its header with the first
    /// piece, and a short last piece with the one before it: a 64 KiB echo's call (64 KiB
    /// and a few bytes) is one write, not two.
    #[tokio::test]
    async fn a_masked_frame_goes_out_in_as_few_writes_as_its_pieces() {
        let key = [9, 8, 7, 6];
        for (len, writes) in [
            (64 * 1024 + 26, 1),
            (MASK_PIECE + MASK_TAIL, 1),
            (MASK_PIECE + MASK_TAIL + 1, 2),
            (200 * 1024, 3),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let socket = Recorder {
                limit: usize::MAX,
                ..Recorder::default()
            };
            let mut m = Metered::new(socket, None, None, 1 << 20, false, Role::Server);
            m.queue_frame(
                Bytes::from_static(b"HEAD"),
                payload.clone().into(),
                Some(key),
            );
            poll_fn(|cx| m.poll_long(cx)).await.unwrap();
            let calls = &m.io.calls;
            assert_eq!(calls.len(), writes, "writes for {len} bytes");
            let most = 4 + MASK_PIECE + MASK_TAIL;
            assert!(calls.iter().all(|c| c.iter().sum::<usize>() <= most));
            let mut wire = m.io.written.clone();
            assert_eq!(&wire[..4], b"HEAD");
            apply_mask(&mut wire[4..], key, 0);
            assert!(wire[4..] == payload[..], "{len} bytes unmasked differ");
        }
    }

    /// Masking a piece that starts anywhere in a payload is masking the payload byte by
    /// byte with the key's bytes in turn.
    #[test]
    fn a_mask_applies_from_any_offset() {
        let key = [0x12, 0x34, 0x56, 0x78];
        let payload: Vec<u8> = (0..37u8).collect();
        for offset in 0..8 {
            for len in [0, 1, 3, 4, 5, 29] {
                let mut piece = payload[offset..offset + len].to_vec();
                apply_mask(&mut piece, key, offset);
                let want: Vec<u8> = (offset..offset + len)
                    .map(|i| payload[i] ^ key[i % 4])
                    .collect();
                assert_eq!(piece, want, "offset {offset}, {len} bytes");
            }
        }
    }

    /// An unmasked binary frame of `len` payload bytes, whole (`fin`) or a first fragment.
    fn binary(len: usize, fin: bool) -> Vec<u8> {
        let mut frame = vec![if fin { 0x82 } else { 0x02 }, 127];
        frame.extend_from_slice(&(len as u64).to_be_bytes());
        frame.resize(10 + len, 5);
        frame
    }

    /// Sends one long unmasked binary frame (what a server sends) and takes it whole.
    async fn long_message(
        m: &mut Metered<tokio::io::DuplexStream>,
        peer: &mut tokio::io::DuplexStream,
        len: usize,
    ) -> Bytes {
        peer.write_all(&binary(len, true)).await.unwrap();
        assert_eq!(read_once(m).await, None, "nothing for tungstenite");
        let msg = m.take_message().expect("taken whole");
        m.message_done();
        assert_eq!(msg.len(), len);
        msg
    }

    /// A message taken whole keeps its read's allocation while it is handled, and the
    /// next read takes that allocation back once the message is gone, instead of a fresh
    /// one per message (glibc faulted a fresh one's pages in again each time); what is kept
    /// is let go once the connection has been idle for `IDLE_RELEASE`.
    #[tokio::test(start_paused = true)]
    async fn a_long_messages_allocation_is_reused_once_it_is_gone_and_let_go_when_idle() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let mut m = Metered::new(ours, None, None, 1 << 20, false, Role::Client);
        let len = 40 * 1024;
        // The first is read into a small read-ahead; the next ones into one sized for it.
        drop(long_message(&mut m, &mut peer, len).await);
        let second = long_message(&mut m, &mut peer, len).await;
        let held = long_message(&mut m, &mut peer, len).await;
        assert_ne!(held.as_ptr(), second.as_ptr(), "in use: not reused");
        let freed = [second.as_ptr(), held.as_ptr()];
        drop((second, held));
        // Both allocations are kept (with the read-ahead's), and one comes back.
        assert!(m.recycled.len() >= 2);
        let again = long_message(&mut m, &mut peer, len).await;
        assert!(
            freed.contains(&again.as_ptr()),
            "the allocation of a message gone is reused"
        );
        drop(again);

        assert!(!m.recycled.is_empty());
        assert_eq!(read_once(&mut m).await, None, "idle");
        tokio::time::sleep(crate::transport::recycle::IDLE_RELEASE).await;
        assert_eq!(read_once(&mut m).await, None);
        assert!(m.recycled.is_empty(), "let go after an idle spell");
        assert_eq!(m.ahead.capacity(), 0);
    }

    /// Reads from `m` until `total` bytes came, a read at a time, letting other tasks run
    /// between two reads (so that connections read side by side).
    async fn read_all<S: AsyncRead + Unpin>(m: &mut Metered<S>, total: usize) {
        let mut got = 0;
        while got < total {
            got += read_once(m).await.map_or(0, |chunk| chunk.len());
            tokio::task::yield_now().await;
        }
    }

    /// Three 200 KiB messages at once, each on its own connection, under a 300 KiB budget:
    /// read by read, each took a share of the budget and waited for more, and none ever
    /// completed. Paid for whole, one is received at a time and all complete.
    #[tokio::test]
    async fn long_messages_arriving_together_under_a_small_budget_all_complete() {
        let budget = ByteBudget::new(300 * 1024);
        let len = 200 * 1024;
        let mut readers = Vec::new();
        for _ in 0..3 {
            let (ours, mut peer) = tokio::io::duplex(1 << 20);
            peer.write_all(&binary(len, true)).await.unwrap();
            readers.push(tokio::spawn({
                let mut m = Metered::new(ours, Some(&budget), None, 1 << 20, false, Role::Server);
                async move {
                    read_all(&mut m, 10 + len).await;
                    m.message_done();
                    drop(peer);
                }
            }));
        }
        let all = futures::future::join_all(readers);
        tokio::time::timeout(std::time::Duration::from_secs(10), all)
            .await
            .expect("every message completes");
        assert_eq!(budget.available(), budget.limit(), "every byte given back");
    }

    /// A fragmented message holds its bytes until it completes, whatever control frames
    /// come between its fragments (a ping between each used to give them all back).
    #[tokio::test]
    async fn a_ping_inside_a_fragmented_message_gives_nothing_back() {
        let budget = ByteBudget::new(4 << 20);
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let mut m = Metered::new(ours, Some(&budget), None, 1 << 20, false, Role::Server);
        let first = binary(100 * 1024, false);
        peer.write_all(&first).await.unwrap();
        read_all(&mut m, first.len()).await;
        // Paid for whole: its size is unknown, so the frame limit.
        let held = budget.limit() - budget.available();
        assert_eq!(held, (1 << 20) - FREE_PER_CONNECTION);
        peer.write_all(&[0x89, 0]).await.unwrap();
        read_all(&mut m, 2).await;
        m.control_done();
        assert_eq!(
            budget.limit() - budget.available(),
            held,
            "still held after the ping"
        );
        // The last fragment, then a ping between messages.
        let mut last = vec![0x80, 126];
        last.extend_from_slice(&1000u16.to_be_bytes());
        last.resize(4 + 1000, 5);
        peer.write_all(&last).await.unwrap();
        read_all(&mut m, last.len()).await;
        m.message_done();
        // Back but for the read allocations kept for reuse, which the budget pays for.
        let kept = m.recycled.kept_bytes();
        assert!(kept <= 4 * SOCKET_READ, "{kept}");
        assert_eq!(
            budget.available() + kept,
            budget.limit(),
            "the message's bytes are back"
        );
        peer.write_all(&[0x89, 0]).await.unwrap();
        read_all(&mut m, 2).await;
        m.control_done();
        assert_eq!(budget.available() + m.recycled.kept_bytes(), budget.limit());
    }

    /// Reads until the source fails; the error (within `secs`, else the test fails).
    async fn read_to_error<S: AsyncRead + Unpin>(m: &mut Metered<S>, secs: u64) -> io::Error {
        let reading = async {
            loop {
                let r = poll_fn(|cx| {
                    let mut space = [0u8; READ_BUFFER];
                    let mut buf = ReadBuf::new(&mut space);
                    Pin::new(&mut *m).poll_read(cx, &mut buf)
                })
                .await;
                if let Err(e) = r {
                    return e;
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(secs), reading)
            .await
            .expect("the source fails instead of waiting")
    }

    /// A message longer than the whole budget (and the free allowance) can never be paid
    /// for: it is refused as too large, as over the byte stream, whether its header says so
    /// or its fragments add up to it. It used to take the whole budget and then wait for a
    /// top-up that nothing could give, holding the budget for good (the wait for the
    /// budget does not count against the receive deadline).
    #[tokio::test]
    async fn a_message_longer_than_the_budget_is_refused_not_waited_for() {
        let budget = ByteBudget::new(128 * 1024);
        let over = 128 * 1024 + FREE_PER_CONNECTION + 1;
        let one_frame = binary(over, true);
        let mut fragmented = binary(100 * 1024, false);
        let mut rest = vec![0x80, 127];
        rest.extend_from_slice(&((over - 100 * 1024) as u64).to_be_bytes());
        rest.resize(10 + over - 100 * 1024, 5);
        fragmented.extend(rest);
        for (what, frames) in [("one frame", one_frame), ("fragments", fragmented)] {
            let (ours, mut peer) = tokio::io::duplex(1 << 20);
            let mut m = Metered::new(ours, Some(&budget), None, 1 << 20, false, Role::Server);
            let writer = tokio::spawn(async move {
                let _ = peer.write_all(&frames).await;
                peer
            });
            let e = read_to_error(&mut m, 10).await;
            assert!(too_large(&e), "{what}: {e}");
            drop(m);
            drop(writer.await.unwrap());
            assert_eq!(budget.available(), budget.limit(), "{what}: given back");
        }
    }

    /// A fragmented message is paid for at the frame limit, or the whole budget when that
    /// is less: one that fits the budget completes.
    #[tokio::test]
    async fn a_fragmented_message_within_a_budget_below_the_frame_limit_completes() {
        let budget = ByteBudget::new(128 * 1024);
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let mut m = Metered::new(ours, Some(&budget), None, 1 << 20, false, Role::Server);
        let mut frames = binary(64 * 1024, false);
        let mut last = vec![0x80, 127];
        last.extend_from_slice(&(70_000u64).to_be_bytes());
        last.resize(10 + 70_000, 5);
        frames.extend(last);
        peer.write_all(&frames).await.unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            read_all(&mut m, frames.len()),
        )
        .await
        .expect("read whole");
        m.message_done();
        assert_eq!(budget.available() + m.recycled.kept_bytes(), budget.limit());
    }

    /// A ping that arrives with the header of a message's last fragment: the reframing has
    /// seen that header (so no message under way, by its count) by the time tungstenite
    /// returns the ping, and the message's bytes so far went back to the budget while its
    /// last fragment was still to come (and tungstenite kept them): a peer that put a ping
    /// before each message's last fragment kept the message so far outside the budget.
    #[tokio::test]
    async fn a_ping_read_with_the_next_fragments_header_gives_nothing_back() {
        let budget = ByteBudget::new(4 << 20);
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let mut m = Metered::new(ours, Some(&budget), None, 1 << 20, false, Role::Server);
        let mut bytes = binary(100 * 1024, false);
        bytes.extend([0x89, 0]);
        let last = 1000;
        let mut rest = vec![0x80, 126];
        rest.extend_from_slice(&(last as u16).to_be_bytes());
        bytes.extend(&rest);
        peer.write_all(&bytes).await.unwrap();
        // All of it (more comes out than goes in: the long fragment is cut).
        assert!(read_until_waiting(&mut m).await > bytes.len());
        let held = budget.limit() - budget.available();
        assert_eq!(held, (1 << 20) - FREE_PER_CONNECTION, "paid for whole");
        // tungstenite returns the ping.
        m.control_done();
        assert_eq!(budget.limit() - budget.available(), held, "still held");
        peer.write_all(&vec![5; last]).await.unwrap();
        assert_eq!(read_until_waiting(&mut m).await, last);
        m.message_done();
        assert_eq!(
            budget.available() + m.recycled.kept_bytes(),
            budget.limit(),
            "back once the message is complete"
        );
    }

    /// The header of a first fragment (a message whose size is not known, so paid for at
    /// the frame limit) draws nothing from the budget until the free allowance's worth of
    /// the message has arrived; then the message is paid for whole, and a peer that sends
    /// nothing more is let go once the grace, and the time what it sent earned, have
    /// passed. Before, the header alone drew the frame limit, held until grace + frame
    /// limit / min rate (here 17 s).
    #[tokio::test(start_paused = true)]
    async fn a_first_fragment_is_paid_for_once_it_arrives_and_must_keep_arriving() {
        use std::time::Duration;

        let budget = ByteBudget::new(4 << 20);
        let rule = ReceiveDeadline::new(Duration::from_secs(1), 64 * 1024);
        let (mut m, mut peer) = timed_server(&budget, rule);
        let fragment = binary(100 * 1024, false);
        // The header (10 bytes) and 90 bytes of payload: the clock starts.
        peer.write_all(&fragment[..100]).await.unwrap();
        let started = tokio::time::Instant::now();
        assert!(read_until_waiting(&mut m).await > 0);
        assert_eq!(budget.available(), budget.limit(), "a header draws nothing");
        let sent = FREE_PER_CONNECTION + 10;
        peer.write_all(&fragment[100..sent]).await.unwrap();
        assert!(read_until_waiting(&mut m).await > 0);
        let held = budget.limit() - budget.available();
        assert_eq!(held, (1 << 20) - FREE_PER_CONNECTION, "paid for whole");
        let e = read_to_error(&mut m, 10).await;
        let inner = e.get_ref().and_then(|e| e.downcast_ref::<TransportError>());
        // The grace, and what arrived after the first stall at the minimum rate.
        let earned = rule.for_len((sent - 100) as u64);
        assert!(
            matches!(inner, Some(&TransportError::TooSlow { after, .. }) if after == earned),
            "{e:?}"
        );
        let took = started.elapsed();
        assert!(
            took >= earned && took <= earned + Duration::from_millis(1),
            "{took:?}"
        );
    }

    /// One client's messages, each whole or in fragments, pings between messages and between
    /// fragments, as masked frames; and what tungstenite should read of them.
    fn client_frames(specs: &[(usize, usize, bool)]) -> (Vec<u8>, Vec<Message>) {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        let framed = |mut f: Frame| {
            f.header_mut().mask = Some([1, 2, 3, 4]);
            let mut out = Vec::new();
            f.format(&mut out).unwrap();
            out
        };
        let (mut bytes, mut want) = (Vec::new(), Vec::new());
        for (n, &(len, parts, ping)) in specs.iter().enumerate() {
            let data: Vec<u8> = (0..len).map(|i| (i + n) as u8).collect();
            let step = len.div_ceil(parts).max(1);
            let pieces: Vec<&[u8]> = match len {
                0 => vec![&[]],
                _ => data.chunks(step).collect(),
            };
            for (i, p) in pieces.iter().enumerate() {
                let opcode = match i {
                    0 => OpCode::Data(Data::Binary),
                    _ => OpCode::Data(Data::Continue),
                };
                let last = i + 1 == pieces.len();
                bytes.extend(framed(Frame::message(p.to_vec(), opcode, last)));
                if last {
                    want.push(Message::Binary(data.clone().into()));
                }
                if ping {
                    bytes.extend(framed(Frame::ping(b"p".to_vec())));
                    want.push(Message::Ping(b"p".to_vec().into()));
                }
            }
        }
        (bytes, want)
    }

    /// Reads `bytes` as a server through a `Metered` under `budget`, telling the meter of
    /// each message as the WebSocket source does; returns what tungstenite read, and the
    /// error that ended the reading, if any.
    async fn serve(
        bytes: Vec<u8>,
        budget: ByteBudget,
        max: usize,
    ) -> (Vec<Message>, Option<tokio_tungstenite::tungstenite::Error>) {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (ours, mut peer) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            peer.write_all(&bytes).await.unwrap();
            peer.shutdown().await.unwrap();
            // Pongs come back: read them so that writing never blocks.
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut sink).await;
        });
        let m = Metered::new(
            ours,
            Some(&budget),
            None,
            super::super::frame_bound(max),
            false,
            Role::Server,
        );
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            m,
            Role::Server,
            Some(super::super::config(max)),
        )
        .await;
        let mut got = Vec::new();
        // As the source reads: a message taken whole when tungstenite waits.
        let next = |cx: &mut Context<'_>,
                    ws: &mut tokio_tungstenite::WebSocketStream<
            Metered<tokio::io::DuplexStream>,
        >| {
            match ws.poll_next_unpin(cx) {
                Poll::Pending => match ws.get_mut().take_message() {
                    Some(bytes) => Poll::Ready(Some(Ok(Message::Binary(bytes)))),
                    None => Poll::Pending,
                },
                ready => ready,
            }
        };
        let error = loop {
            let msg = match poll_fn(|cx| next(cx, &mut ws)).await {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => break Some(e),
                None => break None,
            };
            match msg {
                Message::Binary(_) => ws.get_mut().message_done(),
                _ => ws.get_mut().control_done(),
            }
            got.push(msg);
        };
        ws.get_mut().message_done();
        drop(ws);
        writer.abort();
        (got, error)
    }

    /// Each client's frames served at once, each on its own connection under `budget`:
    /// what each read and the error that ended it, with what it should have read (within
    /// 5 s, else the test fails: no client may wait forever).
    async fn serve_clients(
        clients: &[Vec<(usize, usize, bool)>],
        budget: &ByteBudget,
        max: usize,
    ) -> Vec<(
        (Vec<Message>, Option<tokio_tungstenite::tungstenite::Error>),
        Vec<Message>,
    )> {
        let (runs, wants): (Vec<_>, Vec<_>) = clients
            .iter()
            .map(|specs| {
                let (bytes, want) = client_frames(specs);
                (tokio::spawn(serve(bytes, budget.clone(), max)), want)
            })
            .unzip();
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            futures::future::join_all(runs),
        )
        .await
        .expect("no client waits forever");
        got.into_iter().map(Result::unwrap).zip(wants).collect()
    }

    /// Whether `e` is the source's refusal of a message as too large.
    fn too_large(e: &io::Error) -> bool {
        let ours = e.get_ref().and_then(|e| e.downcast_ref::<TransportError>());
        matches!(ours, Some(TransportError::TooLarge { .. }))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Three clients at once, each sending messages of any size up to the limit, whole
        /// or in fragments, with pings between: under a budget that holds one maximal
        /// message, every message arrives unchanged, none waits forever, and every byte
        /// goes back to the budget.
        #[test]
        fn clients_under_a_budget_of_one_maximal_message_all_get_through(
            clients in proptest::collection::vec(
                proptest::collection::vec((0usize..=200_000, 1usize..4, proptest::prelude::any::<bool>()), 1..4),
                1..=3,
            ),
        ) {
            let max = 200_000;
            let budget = ByteBudget::new(super::super::frame_bound(max) + 64 * 1024);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                for (got, want) in serve_clients(&clients, &budget, max).await {
                    assert_eq!(got.0, want);
                }
                assert_eq!(budget.available(), budget.limit());
            });
        }

        /// Under a budget below the frame limit, a message in fragments (whose size is not
        /// known) is paid for with the whole budget: every message the budget holds arrives
        /// unchanged and in order, and one longer than the budget and the free allowance
        /// ends its client's reading as too large instead of waiting for a top-up that
        /// nothing could give (which held the whole budget for good). None waits forever,
        /// and every byte goes back to the budget.
        #[test]
        fn clients_under_a_budget_below_the_frame_limit_get_through_or_are_refused(
            limit in 32usize * 1024..=160 * 1024,
            clients in proptest::collection::vec(
                proptest::collection::vec((0usize..=200_000, 1usize..4, proptest::prelude::any::<bool>()), 1..4),
                1..=3,
            ),
        ) {
            let max = 200_000;
            let budget = ByteBudget::new(limit);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                for (got, want) in serve_clients(&clients, &budget, max).await {
                    let (got, error) = got;
                    assert!(got.len() <= want.len() && got[..] == want[..got.len()], "in order, unchanged");
                    let refused = want[got.len()..].iter().find_map(|m| match m {
                        Message::Binary(b) => Some(b.len()),
                        _ => None,
                    });
                    use tokio_tungstenite::tungstenite::error::ProtocolError;
                    match (refused, error) {
                        // The end of the stream (the client sends no close frame).
                        (None, None | Some(tokio_tungstenite::tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {}
                        (Some(len), Some(tokio_tungstenite::tungstenite::Error::Io(e))) => {
                            assert!(too_large(&e), "{e}");
                            assert!(len > limit, "a message of {len} bytes fits a budget of {limit}");
                        }
                        (refused, error) => panic!("message {refused:?} not received: {error:?}"),
                    }
                    // Every message beyond the budget and the allowance is refused, give or
                    // take what tungstenite took of it in the read that completed the
                    // message before it (at most one of its reads, which the meter counts
                    // from that message's end on).
                    let most = limit + FREE_PER_CONNECTION + READ_BUFFER;
                    assert!(got.iter().all(|m| m.len() <= most));
                }
                assert_eq!(budget.available(), budget.limit());
            });
        }
    }

    /// A server's reader of 1 MiB frames, drawing from `budget` and timed by `rule`, and
    /// the peer's end of its socket.
    fn timed_server(
        budget: &ByteBudget,
        rule: ReceiveDeadline,
    ) -> (Metered<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (ours, peer) = tokio::io::duplex(1 << 20);
        let m = Metered::new(ours, Some(budget), Some(rule), 1 << 20, false, Role::Server);
        (m, peer)
    }

    /// Reads until the socket has nothing more: the bytes read.
    async fn read_until_waiting<S: AsyncRead + Unpin>(m: &mut Metered<S>) -> usize {
        let mut got = 0;
        while let Some(chunk) = read_once(m).await {
            got += chunk.len();
        }
        got
    }

    /// Time spent waiting for the budget is not the peer's: a message whose header stalled
    /// (its clock started), then waited ten times its deadline for the budget, still gets
    /// its whole deadline once it has the budget. (With the clock left running, the first
    /// stall after the wait failed it.) Past that deadline, it fails.
    #[tokio::test(start_paused = true)]
    async fn waiting_for_the_budget_does_not_count_against_the_receive_deadline() {
        use std::time::Duration;

        let budget = ByteBudget::new(1 << 20);
        let rule = ReceiveDeadline::new(Duration::from_secs(1), 1 << 20);
        let (mut m, mut peer) = timed_server(&budget, rule);
        let frame = binary(200 * 1024, true);
        // Half of the header, and a pause: the clock starts.
        peer.write_all(&frame[..5]).await.unwrap();
        assert_eq!(read_once(&mut m).await, None);
        tokio::time::sleep(Duration::from_millis(900)).await;
        // More of it, while the budget is held elsewhere for ten deadlines.
        let hold = budget.try_acquire(1 << 20).unwrap();
        peer.write_all(&frame[5..100_000]).await.unwrap();
        let before = read_until_waiting(&mut m).await;
        assert!(
            before < FREE_PER_CONNECTION,
            "{before} read without the budget"
        );
        tokio::time::sleep(Duration::from_secs(12)).await;
        drop(hold);
        let after = read_until_waiting(&mut m).await;
        assert!(after > 0, "nothing read once the budget came back");
        // The rest within its deadline (1 s + 0.2 s from that stall): it arrives, all of it
        // (cut into fragments on the way).
        tokio::time::sleep(Duration::from_millis(800)).await;
        peer.write_all(&frame[100_000..]).await.unwrap();
        let rest = read_until_waiting(&mut m).await;
        let cut = super::super::reframe::harness::through(
            &frame,
            1 << 20,
            super::super::reframe::CUT,
            frame.len(),
            frame.len(),
            None,
        );
        assert_eq!(before + after + rest, cut.0.len());
        m.message_done();
        // The next message stalls past its own deadline: it fails.
        peer.write_all(&frame[..100]).await.unwrap();
        assert!(read_until_waiting(&mut m).await > 0);
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let failed = poll_fn(|cx| {
            let mut space = [0u8; READ_BUFFER];
            let mut buf = ReadBuf::new(&mut space);
            Pin::new(&mut m).poll_read(cx, &mut buf)
        })
        .await
        .unwrap_err();
        let inner = failed
            .get_ref()
            .and_then(|e| e.downcast_ref::<TransportError>());
        assert!(
            matches!(inner, Some(TransportError::TooSlow { .. })),
            "{failed:?}"
        );
    }
}
