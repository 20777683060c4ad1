//! Long data frames cut into fragments on their way from the socket to tungstenite.
//!
//! tungstenite reserves a frame's whole length in its read buffer when it reads the
//! frame's header, and keeps that buffer at its high-water mark until the connection
//! closes: one 64 MiB message sent as one frame (as browsers send every message) left the
//! connection holding 64 MiB for the rest of its life, outside the listener's budget, and
//! one of 120 KiB left it holding 120 KiB. Fragments (RFC 6455 §5.4) are put together in a
//! buffer that leaves with the message.
//!
//! So a data or continuation frame longer than [`CUT`] is passed on as fragments of at
//! most that size: a header is written for each, and the payload passes untouched. A
//! masked payload stays valid because every fragment but the last is a multiple of four
//! bytes long, so each starts at the same phase of the same masking key. Control frames,
//! frames with reserved bits set and frames longer than the frame limit pass unchanged, so
//! tungstenite refuses what it refused before, as early as before. The cut is not seen on
//! the wire: the listener's budget and the receive deadline count the frames the peer sent.
//!
//! A reader may also take long frames **whole** ([`Reframe::take_whole`]): a final binary
//! frame longer than a fragment that starts a message, masked as the peer's role requires,
//! never reaches tungstenite. Its payload is read (and unmasked) straight into a buffer that
//! leaves as the message ([`Reframe::take_message`]): no
//! fragments for tungstenite to put together with a copy each, no read buffer of its own.
//! Browsers, the TypeScript peer and bunite send every message as one such frame. Once such
//! a message is complete the reader takes no more input until it is taken, so that it
//! keeps its place among the messages tungstenite reads: everything before it was handed
//! on, nothing after it yet. Every other frame (fragmented messages, text, control frames,
//! frames tungstenite must refuse) is handed on as before.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::ReadBuf;

use super::SOCKET_READ;
use crate::transport::recycle::Recycled;

/// The longest piece tungstenite is handed: what its read buffer keeps after long
/// messages (about twice this, as it may double the buffer to make room). Smaller costs
/// tungstenite a copy of each long message as it puts the fragments together (a 64 KiB
/// message: about 0.85x the throughput of one frame), nothing on the wire.
pub(crate) const CUT: usize = 8 * 1024;

/// The longest frame header: 2 bytes, a 64-bit length, a masking key.
const MAX_HEADER: usize = 14;

/// A frame taken whole reserves at most this much before its bytes arrive (its whole size
/// when shorter); beyond it the buffer grows with what comes, so a peer that announces a
/// long frame and stops is not given its size.
const WHOLE_RESERVE: usize = 1 << 20;

// Every fragment but the last starts the next at a multiple of four bytes.
const _: () = assert!(CUT % 4 == 0);

/// The frame reader's state between reads.
#[derive(Debug)]
pub(super) struct Reframe {
    /// Frames longer than this pass whole (tungstenite refuses them at their header).
    max_frame: u64,
    /// The longest piece a frame is cut into: [`CUT`] (smaller in the fuzz harness).
    fragment: u64,
    /// Header bytes read from the socket, not yet complete.
    header: [u8; MAX_HEADER],
    have: usize,
    /// A header to hand on (the original one, or a fragment's), and how much of it went.
    out: [u8; MAX_HEADER],
    out_len: usize,
    out_pos: usize,
    /// Payload bytes of the current piece still to pass on.
    piece: u64,
    /// The frame being cut, while pieces of it remain after the current one.
    cut: Option<Cut>,
    /// Data messages whose first frame's header has been read.
    messages: u64,
    /// The latest message, once its first header is read, until taken.
    announced: Option<Announced>,
    /// Whether the last data frame left its message unfinished (no FIN): a control frame
    /// read now is inside that message.
    in_message: bool,
    /// Whether the frame under way (or the last one) is a data frame.
    data_frame: bool,
    /// The latest data message's size, as announced.
    size: u64,
    /// Payload bytes of data frames read so far (the receive deadline's measure of
    /// progress: pings between a message's fragments are not).
    data_read: u64,
    /// Control frames read whole between two messages (not inside a fragmented one): the
    /// receive deadline times each on its own.
    controls_between: u64,
    /// Whether long frames are taken whole, and whether they must be masked to be (a
    /// server's peer masks its frames, a client's does not).
    whole_if_masked: Option<bool>,
    /// The frame being taken whole, while its payload arrives.
    whole: Option<Whole>,
    /// A message taken whole, complete, until [`take_message`](Reframe::take_message).
    message: Option<Bytes>,
}

/// A frame taken whole, as its payload arrives (the reader's `piece` is what is left of
/// it).
#[derive(Debug)]
struct Whole {
    /// The payload so far, unmasked.
    payload: BytesMut,
    mask: Option<[u8; 4]>,
}

impl Whole {
    /// Room for `n` more bytes of the `left` still to come: the capacity doubles, never
    /// beyond the frame's end.
    ///
    /// An allocation a message's buffer reaches while it is still short (up to
    /// [`SOCKET_READ`] bytes) is taken from `recycled`, an earlier message's that is gone,
    /// when one is free, or made (for `n` bytes, or for the doubled size when growing:
    /// nothing beyond what the growth rule reserves); one that holds the whole payload is
    /// kept in `recycled` for the messages after it. Growing by `reserve` made a fresh
    /// allocation per message, as often as not into fresh pages (8 echoes of 64 KiB in
    /// flight).
    fn make_room(&mut self, n: usize, left: usize, recycled: &mut Recycled) {
        let len = self.payload.len();
        let cap = self.payload.capacity();
        if cap - len >= n {
            return;
        }
        let size = len + n.max(cap).min(left);
        if size > SOCKET_READ {
            self.payload.reserve(size - len);
            return;
        }
        let whole = len + left;
        let (mut buf, alloc) = recycled.take_or_new(size, size);
        buf.extend_from_slice(&self.payload);
        if buf.capacity() >= whole {
            // A handle on the allocation, for reuse once the message is gone.
            let handle = buf.split_off(buf.capacity());
            recycled.keep(handle, alloc, SOCKET_READ);
        }
        self.payload = buf;
    }
}

/// Masks (or unmasks) `buf`, which starts `offset` bytes into a payload masked with `key`
/// (RFC 6455 §5.3).
pub(super) fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // The key from this offset's phase, twice: eight bytes at a time keep the phase.
    let key: [u8; 8] = std::array::from_fn(|i| key[(offset + i) % 4]);
    let word = u64::from_ne_bytes(key);
    let mut words = buf.chunks_exact_mut(8);
    for w in &mut words {
        let bytes: [u8; 8] = (&*w).try_into().unwrap_or_default();
        w.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (b, k) in words.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

/// A data message whose first frame's header has been read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Announced {
    /// Its number: the first message is 1.
    pub(super) number: u64,
    /// Its size on the wire: its one frame, header included, or the frame limit if
    /// fragments follow (its size is not known yet).
    pub(super) size: u64,
    /// Whether `size` is the message's own (one frame), not the frame limit standing in.
    pub(super) exact: bool,
    /// Where its header starts in the input of the [`Reframe::feed`] call that read the
    /// header's last byte: negative when the header began in an earlier call.
    pub(super) at: i64,
}

#[derive(Debug, Clone, Copy)]
struct Cut {
    /// Payload bytes after the current piece.
    left: u64,
    /// The original frame's FIN bit, for its last piece.
    fin: bool,
    /// The masking key, if any.
    mask: Option<[u8; 4]>,
}

impl Reframe {
    /// A reader that cuts frames of up to `max_frame` bytes.
    pub(super) fn new(max_frame: usize) -> Self {
        Reframe::with_fragment(max_frame, CUT)
    }

    /// A reader that cuts frames into pieces of `fragment` bytes, rounded down to a multiple
    /// of four (at least four).
    pub(super) fn with_fragment(max_frame: usize, fragment: usize) -> Self {
        Reframe {
            max_frame: max_frame as u64,
            fragment: (fragment as u64 & !3).max(4),
            header: [0; MAX_HEADER],
            have: 0,
            out: [0; MAX_HEADER],
            out_len: 0,
            out_pos: 0,
            piece: 0,
            cut: None,
            messages: 0,
            announced: None,
            in_message: false,
            data_frame: false,
            size: 0,
            data_read: 0,
            controls_between: 0,
            whole_if_masked: None,
            whole: None,
            message: None,
        }
    }

    /// Takes frames longer than a fragment whole (see the module docs) when they start a
    /// message, are final and binary, and are masked if `masked` (a server's reader) or
    /// unmasked if not (a client's): frames tungstenite would take as they are.
    pub(super) fn take_whole(mut self, masked: bool) -> Self {
        self.whole_if_masked = Some(masked);
        self
    }

    /// A message taken whole and complete, if any: the reader takes no more input until
    /// it is taken.
    pub(super) fn take_message(&mut self) -> Option<Bytes> {
        self.message.take()
    }

    /// While a frame taken whole waits for its payload and no input is held back: its
    /// message's buffer, with room reserved for the next bytes of it (at most `want`), and
    /// how many to read into it. Bytes read there are then given to
    /// [`whole_read`](Self::whole_read), not to [`feed`](Self::feed).
    pub(super) fn whole_room(
        &mut self,
        want: usize,
        recycled: &mut Recycled,
    ) -> Option<(&mut BytesMut, usize)> {
        let whole = self.whole.as_mut()?;
        let most = whole.payload.capacity().max(WHOLE_RESERVE);
        let n = want.min(self.piece as usize).min(most);
        if n == 0 {
            return None;
        }
        whole.make_room(n, self.piece as usize, recycled);
        Some((&mut whole.payload, n))
    }

    /// Takes the next payload bytes of a frame taken whole from the front of `input`. A
    /// payload that is all there is split off without a copy (its message keeps `input`'s
    /// allocation); the start of one that is not is copied into a buffer of its own (see
    /// [`Whole::make_room`]), which the rest is read into: left in `input`'s allocation,
    /// still shared with what came before it, it was copied out again to grow.
    pub(super) fn take_payload(&mut self, input: &mut BytesMut, recycled: &mut Recycled) {
        let Some(whole) = &mut self.whole else {
            return;
        };
        let left = self.piece as usize;
        let n = left.min(input.len());
        if n == 0 {
            return;
        }
        if whole.payload.capacity() == 0 && n == left {
            whole.payload = input.split_to(n);
        } else {
            whole.make_room(n, left, recycled);
            whole.payload.extend_from_slice(&input[..n]);
            input.advance(n);
        }
        self.whole_read(n);
    }

    /// `n` bytes were read into the buffer [`whole_room`](Self::whole_room) gave: they are
    /// unmasked, and the message is complete with its last.
    pub(super) fn whole_read(&mut self, n: usize) {
        let Some(whole) = &mut self.whole else {
            debug_assert!(n == 0, "{n} bytes read for no frame");
            return;
        };
        let at = whole.payload.len() - n;
        if let Some(key) = whole.mask {
            apply_mask(&mut whole.payload[at..], key, at);
        }
        self.piece -= n as u64;
        self.data_read += n as u64;
        if self.piece == 0 {
            self.message = self.whole.take().map(|w| w.payload.freeze());
        }
    }

    /// Whether a complete message taken whole waits to be taken.
    pub(super) fn holds_message(&self) -> bool {
        self.message.is_some()
    }

    /// The message whose first header was read since the last call, if any.
    pub(super) fn take_announced(&mut self) -> Option<Announced> {
        self.announced.take()
    }

    /// Payload bytes of data frames read so far, since the reader was made.
    pub(super) fn data_read(&self) -> u64 {
        self.data_read
    }

    /// How many control frames have been read whole between two messages.
    pub(super) fn controls_between(&self) -> u64 {
        self.controls_between
    }

    /// How many data messages have started (their first frame's header read).
    pub(super) fn started(&self) -> u64 {
        self.messages
    }

    /// Whether the peer is inside a frame or a fragmented message (a frame's header or
    /// payload partly read, or more fragments to come), and the announced size of the
    /// message it belongs to (0 for a control frame between messages, or a header not yet
    /// complete).
    pub(super) fn under_way(&self) -> Option<u64> {
        if !self.mid_frame() && !self.in_message {
            return None;
        }
        let data = self.in_message || (self.have == 0 && self.data_frame);
        Some(if data { self.size } else { 0 })
    }

    /// Whether a frame's header or payload is partly read.
    pub(super) fn mid_frame(&self) -> bool {
        self.have > 0 || self.piece > 0 || self.cut.is_some()
    }

    /// Passes bytes of `input` on to `out` as far as it has room; returns how many input
    /// bytes were taken. Header bytes, and the payload of a frame taken whole, may be taken
    /// without anything written. Takes nothing while a message taken whole waits.
    pub(super) fn feed(&mut self, mut input: &[u8], out: &mut ReadBuf<'_>) -> usize {
        let start = input.len();
        loop {
            // A message taken whole waits, or its payload goes to `take_payload`.
            if self.message.is_some() || self.whole.is_some() {
                break;
            }
            // A header to hand on first.
            if self.out_pos < self.out_len {
                let n = (self.out_len - self.out_pos).min(out.remaining());
                out.put_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                if self.out_pos < self.out_len {
                    break;
                }
            }
            if self.piece > 0 {
                let n = (self.piece.min(input.len() as u64) as usize).min(out.remaining());
                if n == 0 {
                    break;
                }
                out.put_slice(&input[..n]);
                input = &input[n..];
                self.piece -= n as u64;
                if self.data_frame {
                    self.data_read += n as u64;
                } else if self.piece == 0 && !self.in_message {
                    self.controls_between += 1;
                }
                continue;
            }
            if let Some(cut) = self.cut {
                self.next_piece(cut);
                continue;
            }
            // Between frames: read a header.
            if input.is_empty() {
                break;
            }
            let want = header_len(&self.header[..self.have]);
            let n = (want - self.have).min(input.len());
            self.header[self.have..self.have + n].copy_from_slice(&input[..n]);
            self.have += n;
            input = &input[n..];
            if self.have == header_len(&self.header[..self.have]) {
                self.start_frame(start - input.len());
            }
        }
        start - input.len()
    }

    /// Header bytes taken but not handed on (the socket ended inside a header): handed on
    /// as they are, so tungstenite sees the same truncated frame.
    pub(super) fn flush_partial(&mut self, out: &mut ReadBuf<'_>) {
        if self.have > 0 && self.out_pos == self.out_len {
            self.out[..self.have].copy_from_slice(&self.header[..self.have]);
            (self.out_len, self.out_pos, self.have) = (self.have, 0, 0);
        }
        let n = (self.out_len - self.out_pos).min(out.remaining());
        out.put_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
    }

    /// A whole header was read, its last byte the `taken`th of this call's input: hand it
    /// on as it is, or start cutting its frame.
    fn start_frame(&mut self, taken: usize) {
        let h = &self.header[..self.have];
        let (len, mask) = payload_len(h);
        let opcode = h[0] & 0x0f;
        let data = matches!(opcode, 0..=2) && h[0] & 0x70 == 0;
        let fin = h[0] & 0x80 != 0;
        let whole = opcode == 2
            && fin
            && data
            && !self.in_message
            && self.whole_if_masked == Some(mask.is_some())
            && len > self.fragment
            && len <= self.max_frame;
        if data {
            if opcode != 0 && len <= self.max_frame {
                self.messages += 1;
                let size = match fin {
                    true => self.have as u64 + len,
                    false => self.max_frame,
                };
                self.size = size;
                self.announced = Some(Announced {
                    number: self.messages,
                    size,
                    exact: fin,
                    at: taken as i64 - self.have as i64,
                });
            }
            self.in_message = !fin;
        }
        self.data_frame = data;
        if whole {
            // Its payload (within the frame limit, a `usize`) goes around tungstenite.
            self.whole = Some(Whole {
                payload: BytesMut::new(),
                mask,
            });
            (self.out_len, self.out_pos) = (0, 0);
            self.piece = len;
        } else if data && len > self.fragment && len <= self.max_frame {
            self.write_header(false, opcode, mask, self.fragment);
            self.piece = self.fragment;
            self.cut = Some(Cut {
                left: len - self.fragment,
                fin,
                mask,
            });
        } else {
            self.out[..self.have].copy_from_slice(h);
            (self.out_len, self.out_pos) = (self.have, 0);
            self.piece = len;
            if !data && !self.in_message && len == 0 {
                self.controls_between += 1;
            }
        }
        self.have = 0;
    }

    /// The header of the next piece of the frame being cut.
    fn next_piece(&mut self, cut: Cut) {
        let len = cut.left.min(self.fragment);
        let last = len == cut.left;
        self.write_header(last && cut.fin, 0, cut.mask, len);
        self.piece = len;
        self.cut = (!last).then_some(Cut {
            left: cut.left - len,
            ..cut
        });
    }

    fn write_header(&mut self, fin: bool, opcode: u8, mask: Option<[u8; 4]>, len: u64) {
        let header = Header::new(fin, opcode, mask, len);
        self.out = header.bytes;
        (self.out_len, self.out_pos) = (header.len, 0);
    }
}

/// A frame header (RFC 6455 §5.2).
pub(super) struct Header {
    bytes: [u8; MAX_HEADER],
    len: usize,
}

impl Header {
    /// The header of a frame of `len` payload bytes with `opcode`, final if `fin`, masked
    /// with `mask` if given.
    pub(super) fn new(fin: bool, opcode: u8, mask: Option<[u8; 4]>, len: u64) -> Self {
        let mut o = [0; MAX_HEADER];
        o[0] = u8::from(fin) << 7 | opcode;
        let masked = u8::from(mask.is_some()) << 7;
        let mut n = 2;
        if len < 126 {
            o[1] = masked | len as u8;
        } else if let Ok(len) = u16::try_from(len) {
            o[1] = masked | 126;
            o[2..4].copy_from_slice(&len.to_be_bytes());
            n = 4;
        } else {
            o[1] = masked | 127;
            o[2..10].copy_from_slice(&len.to_be_bytes());
            n = 10;
        }
        if let Some(key) = mask {
            o[n..n + 4].copy_from_slice(&key);
            n += 4;
        }
        Header { bytes: o, len: n }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// How long the header starting with `h` is: 2 until its second byte is known.
fn header_len(h: &[u8]) -> usize {
    let Some(&b1) = h.get(1) else {
        return 2;
    };
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

/// The payload length and masking key of a whole header.
fn payload_len(h: &[u8]) -> (u64, Option<[u8; 4]>) {
    let (len, at) = match h[1] & 0x7f {
        126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
        127 => {
            let mut b = [0; 8];
            b.copy_from_slice(&h[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = (h[1] & 0x80 != 0).then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
    (len, mask)
}

/// Driving a reader by hand, for its tests and the fuzz harness (`ws/fuzz.rs`).
#[cfg(any(test, feature = "test-util"))]
pub(super) mod harness {
    use std::io::{Cursor, Read, Write};

    use bytes::BytesMut;
    use tokio::io::ReadBuf;

    use super::{Header, Reframe};
    use crate::transport::recycle::Recycled;

    /// `bytes` through a reader that cuts frames of up to `max_frame` bytes into pieces of
    /// `fragment`, `chunk` input bytes and `room` output bytes at a time, then the end of the
    /// input; whether the bytes ended inside a frame; and how many messages were taken
    /// whole. With `whole` (whether frames must
    /// be masked to be), long frames are taken whole, and each message so taken is put back
    /// where it was taken, as the fragments the cut would have made of it (masked with a
    /// zero key if masked): the bytes tungstenite would read if it read it. Panics if the
    /// reader stops making progress, or says a message under way is longer than the frame
    /// limit allows.
    pub(in super::super) fn through(
        bytes: &[u8],
        max_frame: usize,
        fragment: usize,
        chunk: usize,
        room: usize,
        whole: Option<bool>,
    ) -> (Vec<u8>, bool, usize) {
        let mut r = Reframe::with_fragment(max_frame, fragment);
        if let Some(masked) = whole {
            r = r.take_whole(masked);
        }
        let fragment = r.fragment as usize;
        let mut taken = 0;
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8);
        let mut space = vec![0u8; room];
        // One for the run, as a reader keeps it: later messages reuse earlier ones' buffers.
        let mut recycled = Recycled::default();
        for piece in bytes.chunks(chunk) {
            let mut piece = piece;
            while !piece.is_empty() {
                let mut buf = ReadBuf::new(&mut space);
                let fed = r.feed(piece, &mut buf);
                out.extend_from_slice(buf.filled());
                let mut rest = BytesMut::from(&piece[fed..]);
                r.take_payload(&mut rest, &mut recycled);
                let used = piece.len() - rest.len();
                let message = r.take_message();
                assert!(
                    used > 0 || !buf.filled().is_empty() || message.is_some(),
                    "no progress with room for {room} bytes"
                );
                if let Some(m) = message {
                    assert!(
                        m.len() > fragment && m.len() <= max_frame,
                        "{} taken",
                        m.len()
                    );
                    put_back(&mut out, &m, fragment, whole == Some(true));
                    taken += 1;
                }
                piece = &piece[used..];
                // A message under way was paid for at no more than the frame limit.
                let size = r.under_way().unwrap_or_default();
                assert!(size <= (max_frame + 14) as u64, "{size} under way");
            }
        }
        let ended_mid_frame = r.mid_frame();
        loop {
            let mut buf = ReadBuf::new(&mut space);
            r.feed(&[], &mut buf);
            r.flush_partial(&mut buf);
            if buf.filled().is_empty() {
                break;
            }
            out.extend_from_slice(buf.filled());
        }
        (out, ended_mid_frame, taken)
    }

    /// A message as fragments of `fragment` bytes, binary then continuations.
    fn put_back(out: &mut Vec<u8>, message: &[u8], fragment: usize, masked: bool) {
        let pieces: Vec<&[u8]> = message.chunks(fragment).collect();
        for (i, p) in pieces.iter().enumerate() {
            let (fin, opcode) = (i + 1 == pieces.len(), u8::from(i == 0) << 1);
            let mask = masked.then_some([0; 4]);
            out.extend_from_slice(Header::new(fin, opcode, mask, p.len() as u64).as_bytes());
            out.extend_from_slice(p);
        }
    }

    /// Reads from the bytes given; what tungstenite writes (pongs, close replies) goes
    /// nowhere.
    pub(in super::super) struct Input(pub Cursor<Vec<u8>>);

    impl Read for Input {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl Write for Input {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use proptest::prelude::*;
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
    use tokio_tungstenite::tungstenite::{Error, Message};

    use super::*;

    /// A frame as a client (masked) or a server (unmasked) would send it.
    fn frame(fin: bool, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut f = match opcode {
            OpCode::Control(Control::Ping) => Frame::ping(payload.to_vec()),
            _ => Frame::message(payload.to_vec(), opcode, fin),
        };
        if let Some(key) = mask {
            f.header_mut().mask = Some(key);
        }
        let mut out = Vec::new();
        f.format(&mut out).unwrap();
        out
    }

    /// `bytes` passed through a `Reframe`, `chunk` input bytes and `room` output bytes at a
    /// time.
    fn through(bytes: &[u8], max_frame: usize, chunk: usize, room: usize) -> Vec<u8> {
        harness::through(bytes, max_frame, CUT, chunk, room, None).0
    }

    /// Feeds `input` to `r` as the socket under tungstenite does (the payload of a frame
    /// taken whole from the same buffer); returns what was handed on.
    fn feed_all(r: &mut Reframe, input: &[u8]) -> Vec<u8> {
        let mut input = BytesMut::from(input);
        let mut space = vec![0u8; 4 * CUT];
        let mut out = Vec::new();
        let mut recycled = Recycled::default();
        loop {
            let mut buf = ReadBuf::new(&mut space);
            let used = r.feed(&input, &mut buf);
            out.extend_from_slice(buf.filled());
            input.advance(used);
            let before = input.len();
            r.take_payload(&mut input, &mut recycled);
            if used == 0 && buf.filled().is_empty() && input.len() == before {
                return out;
            }
        }
    }

    /// Every message tungstenite reads from `bytes` (as a server: unmasked frames
    /// accepted too), with frames no longer than `max_frame`; the error that ends them,
    /// if not the end of the bytes.
    fn messages(bytes: Vec<u8>, max_frame: usize) -> (Vec<Message>, Option<String>) {
        let config = WebSocketConfig::default()
            .max_frame_size(Some(max_frame))
            .max_message_size(Some(16 << 20))
            .accept_unmasked_frames(true);
        let input = harness::Input(Cursor::new(bytes));
        let mut ws = WebSocket::from_raw_socket(input, Role::Server, Some(config));
        let mut got = Vec::new();
        loop {
            match ws.read() {
                Ok(m) => got.push(m),
                Err(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    return (got, None)
                }
                Err(e) => return (got, Some(e.to_string())),
            }
        }
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn a_long_frame_reaches_tungstenite_in_fragments_and_whole() {
        let long = payload(3 * CUT + 123, 1);
        for mask in [None, Some([1, 2, 3, 4])] {
            let bytes = frame(true, OpCode::Data(Data::Binary), &long, mask);
            // tungstenite with a frame limit of one fragment reads it whole.
            let (got, error) = messages(through(&bytes, 64 << 20, 5000, 4096), CUT);
            assert_eq!(error, None);
            assert_eq!(got, vec![Message::Binary(long.clone().into())]);
            // Without the cut, the same limit refuses it.
            let (_, error) = messages(bytes, CUT);
            assert!(error.is_some());
        }
    }

    /// A masked binary frame longer than a fragment, read by a server's reader, never
    /// reaches tungstenite: its payload, unmasked, is the message taken, and it comes
    /// after the frames before it (handed on first) and before those after it (held back
    /// until the message is taken). Its size is under way while its payload arrives.
    #[test]
    fn a_long_frame_is_taken_whole_in_its_place() {
        let key = Some([0x11, 0x22, 0x33, 0x44]);
        let long = payload(5 * CUT + 3, 9);
        let (short, ping) = (
            frame(true, OpCode::Data(Data::Binary), b"short", key),
            frame(true, OpCode::Control(Control::Ping), b"p", key),
        );
        let whole = frame(true, OpCode::Data(Data::Binary), &long, key);
        let mut r = Reframe::new(1 << 20).take_whole(true);
        let mut bytes = [&short[..], &ping, &whole[..1000]].concat();
        assert_eq!(feed_all(&mut r, &bytes), [&short[..], &ping].concat());
        assert_eq!(r.under_way(), Some(whole.len() as u64), "paid for whole");
        assert!(r.take_message().is_none(), "not complete yet");
        bytes = [&whole[1000..], &short[..]].concat();
        assert_eq!(
            feed_all(&mut r, &bytes),
            b"",
            "held back behind the message"
        );
        assert!(r.holds_message());
        assert_eq!(r.under_way(), None, "complete");
        assert!(r.take_message().unwrap() == long, "the payload, unmasked");
        assert_eq!(feed_all(&mut r, &short), short, "then what follows");
    }

    /// Only frames tungstenite would take as they are, and that start a message, are
    /// taken whole: not an unmasked frame on a server's reader (nor a masked one on a
    /// client's), nor a fragment, a text frame, a frame with a reserved bit or one over the
    /// limit; those pass as they did.
    #[test]
    fn only_final_binary_frames_masked_for_the_role_are_taken_whole() {
        let long = payload(2 * CUT + 5, 3);
        let key = Some([1, 2, 3, 4]);
        let binary = |fin, mask| frame(fin, OpCode::Data(Data::Binary), &long, mask);
        let mut reserved = binary(true, key);
        reserved[0] |= 0x20;
        let cases = [
            (binary(true, None), true),
            (binary(true, key), false),
            (binary(false, key), true),
            (frame(true, OpCode::Data(Data::Text), &long, key), true),
            (reserved, true),
        ];
        for (i, (bytes, masked)) in cases.iter().enumerate() {
            let mut r = Reframe::new(1 << 20).take_whole(*masked);
            let plain = through(bytes, 1 << 20, bytes.len(), bytes.len());
            assert_eq!(feed_all(&mut r, bytes), plain, "case {i}");
            assert!(r.take_message().is_none(), "case {i}");
        }
        // Over the limit: passed uncut for tungstenite to refuse.
        let over = binary(true, key);
        let mut r = Reframe::new(2 * CUT).take_whole(true);
        assert_eq!(feed_all(&mut r, &over), over);
        // Continuing a fragmented message: not the start of one.
        let mut r = Reframe::new(1 << 20).take_whole(true);
        let first = frame(false, OpCode::Data(Data::Binary), b"a", key);
        let last = frame(true, OpCode::Data(Data::Continue), &long, key);
        let plain = through(&[&first[..], &last].concat(), 1 << 20, 99_999, 99_999);
        assert_eq!(feed_all(&mut r, &[&first[..], &last].concat()), plain);
        assert!(r.take_message().is_none());
    }

    /// A peer that announces a long frame and sends little of it is not given the frame's
    /// size: nothing is reserved at its header, and a read straight into its message asks
    /// for at most `WHOLE_RESERVE` more than the message holds.
    #[test]
    fn a_frame_taken_whole_reserves_no_more_than_arrives() {
        let len = 64u64 << 20;
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(&[0; 4]);
        let mut r = Reframe::new(1 << 30).take_whole(true);
        assert_eq!(feed_all(&mut r, &header), b"");
        assert_eq!(r.under_way(), Some(len + header.len() as u64));
        assert_eq!(r.whole.as_ref().unwrap().payload.capacity(), 0);
        let mut recycled = Recycled::default();
        let (buf, n) = r.whole_room(usize::MAX, &mut recycled).unwrap();
        assert_eq!(n, WHOLE_RESERVE);
        assert!(buf.capacity() >= n && buf.capacity() < 2 * WHOLE_RESERVE);
        // Bytes read there are unmasked (a zero key leaves them) and counted.
        buf.extend_from_slice(&vec![7u8; n]);
        r.whole_read(n);
        assert_eq!(r.under_way(), Some(len + header.len() as u64));
        assert!(r.take_message().is_none());
    }

    #[test]
    fn frames_longer_than_the_limit_and_control_frames_pass_unchanged() {
        let long = payload(CUT + 8, 2);
        let over = frame(true, OpCode::Data(Data::Binary), &long, Some([9, 8, 7, 6]));
        assert_eq!(through(&over, CUT + 7, 1000, 333), over);
        let ping = frame(
            true,
            OpCode::Control(Control::Ping),
            b"hi",
            Some([1, 1, 1, 1]),
        );
        assert_eq!(through(&ping, 1 << 20, 1, 1), ping);
        let short = frame(true, OpCode::Data(Data::Binary), &payload(CUT, 3), None);
        assert_eq!(through(&short, 1 << 20, 777, 100), short);
        // A reserved bit: passed on for tungstenite to refuse.
        let mut odd = frame(true, OpCode::Data(Data::Binary), &long, None);
        odd[0] |= 0x40;
        assert_eq!(through(&odd, 1 << 20, 4096, 4096), odd);
    }

    #[test]
    fn a_stream_that_ends_inside_a_header_ends_there_for_tungstenite_too() {
        let bytes = frame(
            true,
            OpCode::Data(Data::Binary),
            &payload(70_000, 4),
            Some([5; 4]),
        );
        for cut in 1..10 {
            assert_eq!(through(&bytes[..cut], 1 << 20, 3, 7), &bytes[..cut]);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any sequence of messages, each sent whole or fragmented by its sender, with
        /// pings between, masked or not, read in any chunks: tungstenite reads the same
        /// messages through the cut, and never a frame longer than a fragment.
        #[test]
        fn messages_are_unchanged_by_the_cut(
            specs in prop::collection::vec(
                (0usize..3 * CUT, 1usize..4, any::<bool>(), any::<u8>()), 1..5),
            masked in any::<bool>(),
            whole in any::<bool>(),
            chunk in 1usize..200_000,
            room in 1usize..70_000,
        ) {
            let mask = masked.then_some([0x5a, 0x01, 0xf0, 0x77]);
            let mut bytes = Vec::new();
            let mut want = Vec::new();
            for (len, parts, ping, seed) in specs {
                let data = payload(len, seed);
                let step = len.div_ceil(parts).max(1);
                let pieces: Vec<&[u8]> = if len == 0 { vec![&[]] } else { data.chunks(step).collect() };
                if ping {
                    bytes.extend(frame(true, OpCode::Control(Control::Ping), b"p", mask));
                    want.push(Message::Ping(b"p".to_vec().into()));
                }
                for (i, p) in pieces.iter().enumerate() {
                    let opcode = if i == 0 { OpCode::Data(Data::Binary) } else { OpCode::Data(Data::Continue) };
                    bytes.extend(frame(i + 1 == pieces.len(), opcode, p, mask));
                    // A ping between a sender's own fragments.
                    if ping && i == 0 && pieces.len() > 1 {
                        bytes.extend(frame(true, OpCode::Control(Control::Ping), b"q", mask));
                        want.push(Message::Ping(b"q".to_vec().into()));
                    }
                }
                want.push(Message::Binary(data.into()));
            }
            // Frames taken whole are put back as the cut's fragments, in their place.
            let whole = whole.then_some(masked);
            let (cut, _, _) = harness::through(&bytes, 16 << 20, CUT, chunk, room, whole);
            let (got, error) = messages(cut, CUT);
            prop_assert_eq!(error, None);
            prop_assert_eq!(got, want);
        }

        /// Fed a byte at a time, the reader says a message is under way exactly between
        /// the first byte of a frame and the end of its message (pings inside a fragmented
        /// message included), and with the size the message was paid for: its one frame,
        /// or the frame limit when fragments follow; 0 for a ping between messages or a
        /// first header not yet complete.
        #[test]
        fn under_way_holds_between_a_messages_first_byte_and_its_last(
            specs in prop::collection::vec(
                (0usize..2 * CUT + 10, 1usize..4, any::<bool>()), 1..4),
        ) {
            let max_frame = 16 << 20;
            let mask = Some([1, 2, 3, 4]);
            let (mut bytes, mut expect) = (Vec::new(), Vec::<Option<u64>>::new());
            let ping = frame(true, OpCode::Control(Control::Ping), b"p", mask);
            for (len, parts, with_ping) in specs {
                if with_ping {
                    // Between messages: 0 until its last byte.
                    expect.extend(vec![Some(0); ping.len() - 1]);
                    expect.push(None);
                    bytes.extend_from_slice(&ping);
                }
                let data = payload(len, 7);
                let step = len.div_ceil(parts).max(1);
                let pieces: Vec<&[u8]> = if len == 0 { vec![&[]] } else { data.chunks(step).collect() };
                let whole = pieces.len() == 1;
                for (i, p) in pieces.iter().enumerate() {
                    let opcode = if i == 0 { OpCode::Data(Data::Binary) } else { OpCode::Data(Data::Continue) };
                    let last = i + 1 == pieces.len();
                    let f = frame(last, opcode, p, mask);
                    let size = if whole { f.len() as u64 } else { max_frame as u64 };
                    let header = f.len() - p.len();
                    // A first header is not the message's until it is complete.
                    let before = if i == 0 { Some(0) } else { Some(size) };
                    expect.extend(vec![before; header - 1]);
                    expect.extend(vec![Some(size); f.len() - header]);
                    expect.push(Some(size));
                    if last {
                        *expect.last_mut().unwrap() = None;
                    }
                    bytes.extend_from_slice(&f);
                    if with_ping && i == 0 && !last {
                        expect.extend(vec![Some(size); ping.len()]);
                        bytes.extend_from_slice(&ping);
                    }
                }
            }
            prop_assert_eq!(bytes.len(), expect.len());
            let mut r = Reframe::new(max_frame);
            let mut space = vec![0u8; 2 * CUT];
            prop_assert_eq!(r.under_way(), None);
            for (at, byte) in bytes.iter().enumerate() {
                let mut buf = ReadBuf::new(&mut space);
                prop_assert_eq!(r.feed(std::slice::from_ref(byte), &mut buf), 1);
                prop_assert_eq!(r.under_way(), expect[at], "after byte {}", at);
            }
        }
    }
}
