//! The fuzz harness of the WebSocket read path (`fuzz/fuzz_targets/ws_frames.rs`; its corpus
//! is replayed by `tests/transport_ws.rs` on stable Rust). Hidden, behind `test-util`.
//!
//! The input is a few settings and then the bytes a hostile client sends: any frames,
//! well-formed or not. tungstenite reads them twice, as a listener's connection would (server
//! role, frames and messages bounded), once straight and once through a `Reframe` that cuts
//! long data frames into fragments, with the bytes arriving in chunks of any size. Half the
//! inputs (a bit of the settings) also take long frames whole, as a listener's reader does:
//! each message so taken is put back where it was taken as the fragments the cut would have
//! made, so that it is checked in its place and with its payload unmasked. The cut
//! must change nothing tungstenite sees: the same messages, then an error in both or in
//! neither, with one exception: when the bytes end inside a frame, a check tungstenite
//! makes once a frame is complete (a client frame must be masked, text must be UTF-8) may
//! refuse a complete fragment of it through the cut while the straight read just runs out
//! of bytes (refusing earlier, never later). No frame longer than a fragment may reach
//! tungstenite unless both refuse it, and the reader's state (`under_way`) must hold without
//! panicking after every byte.

use std::io::Cursor;

use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Message};

use super::reframe::harness::{through, Input};

/// What one input did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Messages read (the same both ways).
    pub messages: usize,
    /// Whether reading ended with an error (both ways), not at the end of the bytes.
    pub refused: bool,
    /// Whether a frame was cut into fragments or taken whole.
    pub cut: bool,
    /// Messages taken whole (read around tungstenite).
    pub taken_whole: usize,
}

/// Runs one fuzz input. Panics when the cut changes what tungstenite reads.
pub fn ws_frames(data: &[u8]) -> Outcome {
    let [f, b0, b1, chunk, room, wire @ ..] = data else {
        return Outcome::default();
    };
    // Pieces of 128-188 bytes, so that control frames (at most 125) are never longer than a
    // piece; frames and messages bounded a little or a lot above that.
    let fragment = 128 + 4 * usize::from(f % 16);
    let bound = fragment + usize::from(u16::from_be_bytes([*b0, *b1]) % 4096);
    let (chunk, room) = (1 + usize::from(*chunk), 1 + usize::from(*room));
    let whole = (f & 0x10 != 0).then_some(true);

    let (cut, ended_mid_frame, taken_whole) = through(wire, bound, fragment, chunk, room, whole);
    let was_cut = cut != wire;
    let (straight, straight_error) = read_all(wire.to_vec(), bound, bound);
    // Through the cut, tungstenite takes no frame longer than a piece: a longer one reaches
    // it only if it passed uncut, to be refused.
    let (through_cut, cut_error) = read_all(cut, fragment, bound);
    assert_eq!(
        through_cut, straight,
        "the cut changed the messages (errors: {cut_error:?} / {straight_error:?})"
    );
    let earlier = cut_error.is_some() && straight_error.is_none() && ended_mid_frame;
    assert!(
        cut_error.is_some() == straight_error.is_some() || earlier,
        "one way refused and not the other: {cut_error:?} / {straight_error:?}"
    );
    Outcome {
        messages: straight.len(),
        refused: cut_error.is_some(),
        cut: was_cut,
        taken_whole,
    }
}

/// Every message a listener's tungstenite reads from `bytes` (frames up to `max_frame`,
/// messages up to `max_message`), and the error that ends them if not the end of the bytes.
fn read_all(
    bytes: Vec<u8>,
    max_frame: usize,
    max_message: usize,
) -> (Vec<Message>, Option<String>) {
    let config = WebSocketConfig::default()
        .read_buffer_size(256)
        .max_frame_size(Some(max_frame))
        .max_message_size(Some(max_message));
    let mut ws = WebSocket::from_raw_socket(Input(Cursor::new(bytes)), Role::Server, Some(config));
    let mut got = Vec::new();
    loop {
        match ws.read() {
            Ok(m) => got.push(m),
            Err(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake))
            | Err(Error::ConnectionClosed | Error::AlreadyClosed) => return (got, None),
            Err(e) => return (got, Some(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(settings: [u8; 5], frames: &[&[u8]]) -> Vec<u8> {
        let mut data = settings.to_vec();
        for f in frames {
            data.extend_from_slice(f);
        }
        data
    }

    /// A masked binary frame of `len` bytes of `byte`.
    fn binary(fin: bool, len: u16, byte: u8) -> Vec<u8> {
        let mut f = vec![u8::from(fin) << 7 | 2, 0x80 | 126];
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&[9, 8, 7, 6]);
        f.extend(std::iter::repeat_n(byte, usize::from(len)));
        f
    }

    #[test]
    fn a_long_frame_is_cut_and_read_the_same() {
        let out = ws_frames(&input([0, 4, 0, 7, 30], &[&binary(true, 1000, 5)]));
        assert_eq!(
            out,
            Outcome {
                messages: 1,
                refused: false,
                cut: true,
                taken_whole: 0,
            }
        );
        // The same frame taken whole (a bit of the settings), put back in its place.
        let out = ws_frames(&input([0x10, 4, 0, 7, 30], &[&binary(true, 1000, 5)]));
        assert_eq!((out.messages, out.refused, out.taken_whole), (1, false, 1));
    }

    #[test]
    fn a_frame_over_the_bound_is_refused_both_ways() {
        // Bound 128 + 100: a frame of 1000 passes uncut, and is refused.
        let out = ws_frames(&input([0, 0, 100, 50, 50], &[&binary(true, 1000, 5)]));
        assert!(out.refused && !out.cut && out.messages == 0, "{out:?}");
    }

    #[test]
    fn an_unmasked_client_frame_is_refused_both_ways() {
        let mut f = binary(true, 300, 1);
        f[1] &= 0x7f;
        f.drain(4..8);
        let out = ws_frames(&input([3, 4, 0, 255, 255], &[&binary(true, 10, 2), &f]));
        assert_eq!((out.messages, out.refused), (1, true));
    }
}
