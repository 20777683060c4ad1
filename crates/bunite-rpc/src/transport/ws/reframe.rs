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

use tokio::io::ReadBuf;

/// The longest piece tungstenite is handed: what its read buffer keeps after long
/// messages (about twice this, as it may double the buffer to make room). Smaller costs
/// tungstenite a copy of each long message as it puts the fragments together (a 64 KiB
/// message: about 0.85x the throughput of one frame), nothing on the wire.
pub(crate) const CUT: usize = 8 * 1024;

/// The longest frame header: 2 bytes, a 64-bit length, a masking key.
const MAX_HEADER: usize = 14;

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
}

/// A data message whose first frame's header has been read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Announced {
    /// Its number: the first message is 1.
    pub(super) number: u64,
    /// Its size on the wire: its one frame, header included, or the frame limit if
    /// fragments follow (its size is not known yet).
    pub(super) size: u64,
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
        }
    }

    /// The message whose first header was read since the last call, if any.
    pub(super) fn take_announced(&mut self) -> Option<Announced> {
        self.announced.take()
    }

    /// Whether a data message is under way between two of its frames.
    pub(super) fn in_message(&self) -> bool {
        self.in_message
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
    /// bytes were taken. Header bytes may be taken without anything written yet.
    pub(super) fn feed(&mut self, mut input: &[u8], out: &mut ReadBuf<'_>) -> usize {
        let start = input.len();
        loop {
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
                    at: taken as i64 - self.have as i64,
                });
            }
            self.in_message = !fin;
        }
        self.data_frame = data;
        if data && len > self.fragment && len <= self.max_frame {
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
        let o = &mut self.out;
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
        (self.out_len, self.out_pos) = (n, 0);
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

    use tokio::io::ReadBuf;

    use super::Reframe;

    /// `bytes` through a reader that cuts frames of up to `max_frame` bytes into pieces of
    /// `fragment`, `chunk` input bytes and `room` output bytes at a time, then the end of the
    /// input; and whether the bytes ended inside a frame. Panics if the reader stops making
    /// progress, or says a message under way is longer than the frame limit allows.
    pub(in super::super) fn through(
        bytes: &[u8],
        max_frame: usize,
        fragment: usize,
        chunk: usize,
        room: usize,
    ) -> (Vec<u8>, bool) {
        let mut r = Reframe::with_fragment(max_frame, fragment);
        let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8);
        let mut space = vec![0u8; room];
        for piece in bytes.chunks(chunk) {
            let mut piece = piece;
            while !piece.is_empty() {
                let mut buf = ReadBuf::new(&mut space);
                let used = r.feed(piece, &mut buf);
                assert!(
                    used > 0 || !buf.filled().is_empty(),
                    "no progress with room for {room} bytes"
                );
                out.extend_from_slice(buf.filled());
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
        (out, ended_mid_frame)
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
        harness::through(bytes, max_frame, CUT, chunk, room).0
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
            let (got, error) = messages(through(&bytes, 16 << 20, chunk, room), CUT);
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
