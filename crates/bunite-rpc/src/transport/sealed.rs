//! The encrypted pipe (PROTOCOL §2): AES-256-GCM per message around any transport.
//!
//! Each message becomes `0x01 ‖ IV (12 bytes) ‖ ciphertext ‖ tag (16 bytes)`, with no
//! associated data, under a 32-byte key shared out of band. An inbound message with another
//! first byte, shorter than [`OVERHEAD`], or failing authentication is a
//! [`TransportError::Protocol`]: the connection sends goaway and closes the pipe.
//!
//! [`Sealed::new`] takes the inner transport's `max_bytes` as the bound on *frames* and
//! raises the inner bound by [`OVERHEAD`] itself, so a frame of exactly `max_bytes` still
//! fits once sealed.
//!
//! # IVs, replays and reflections
//!
//! The wire says only that IVs are 12 bytes; how we draw them is ours. Each [`SealedSink`]
//! draws a random 8-byte salt and sends `salt ‖ counter` (a 4-byte counter from 0; a fresh
//! salt every 2^32 messages), so its IVs never repeat, and a message whose IV carries one of
//! *our* salts is our own message sent back to us (a reflection, e.g. our hello): refused.
//!
//! A message whose IV this connection has already accepted is a replay: refused, and the
//! pipe closes. The [`SealedSource`] remembers the last [`REPLAY_WINDOW`] (1,024) IVs it
//! accepted, 8 bytes each (8 KiB per busy connection, nothing up front; a lookup scans the
//! window, ~0.1 µs, next to AES-GCM's cost). 1,024 is the default in-flight limit: every
//! frame a peer could still expect an answer to is inside it.
//!
//! A peer that draws its IVs as ours do sends its counters one after another under one salt,
//! so the source also refuses a message whose IV has the salt of the last one it accepted
//! but not the next counter ([`OpenError::OutOfSequence`]): a message of ours dropped,
//! reordered, or replayed from beyond the window is refused at the first message out of
//! turn, and the pipe closes. A peer that draws every IV at random (bunite-core's TypeScript
//! pipe; the wire allows it) never repeats a salt, and has only the window: a replay of one
//! of its messages from beyond the window opens, and the codec (PROTOCOL §3) refuses it only
//! if it no longer decodes; a replayed `call` whose id is no longer live runs again. Nor is
//! the first message under a salt checked (a hello taken away before anything else was
//! accepted is not noticed here), nor a message that follows one of another salt (see the
//! next section).
//!
//! What the pipe does **not** protect against:
//!
//! - **Replay across connections that share a key.** A message recorded on one connection
//!   opens on any other connection with the same key (as in bunite-core 0.10: no counter on
//!   the wire, no per-connection state the peer could check); what the codec makes of it is
//!   not defined (a frame the receiver takes as its own, or a decode error). Give each
//!   connection its own key: derive it from a per-connection secret, e.g. the host spawns
//!   each plugin with a fresh random key in its environment, or both sides derive
//!   `HKDF(master, connection id)` with a connection id the host chooses and passes along
//!   out of band.
//! - **Dropping, reordering or replaying messages of a peer with random IVs.** The codec is
//!   stateful only in its record definitions: a message taken away, swapped or replayed
//!   shows up as a decode error only if it defines a record another one uses. Otherwise it
//!   goes unnoticed: a call or an answer silently missing (the caller waits, until its
//!   deadline if it has one), a stream value skipped, frames taken out of order. Between two
//!   of our peers these are refused, as above. Dropping the last messages of a connection is
//!   not detectable by anyone, and looks like a stall. Traffic analysis (message sizes and
//!   timing) is not hidden at all.
//!
//! ```
//! use bunite_rpc::transport::{memory, sealed::{Key, Sealed}};
//! use bunite_rpc::Connection;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let key = Key::from_hex(&"2a".repeat(32)).unwrap();
//! let (a, b) = memory::pair();
//! let server = Connection::new(Sealed::new(a, key.clone()));
//! let client = Connection::new(Sealed::new(b, key));
//! # drop((server, client));
//! # }
//! ```

#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod fuzz;
mod pipe;

pub use pipe::{Sealed, SealedSink, SealedSource, REPLAY_WINDOW};

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{AeadInPlace, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use bytes::{Buf, Bytes, BytesMut};

use super::TransportError;

/// The first byte of every sealed message.
pub const VERSION: u8 = 0x01;
/// Length of the random IV.
pub const IV_LEN: usize = 12;
/// Length of the authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message adds to its plaintext (version, IV, tag): also the shortest
/// valid sealed message.
pub const OVERHEAD: usize = 1 + IV_LEN + TAG_LEN;

/// A 32-byte AES-256 key. Its `Debug` output does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

/// A key that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key is 64 hex digits (32 bytes)")]
pub struct InvalidKey;

impl Key {
    /// A key from its bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }

    /// Parses 64 hex digits (surrounding whitespace ignored), e.g. a CLI's `--key`.
    pub fn from_hex(s: &str) -> Result<Self, InvalidKey> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| InvalidKey)?;
        Ok(Key(bytes))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::str::FromStr for Key {
    type Err = InvalidKey;

    fn from_str(s: &str) -> Result<Self, InvalidKey> {
        Key::from_hex(s)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why an inbound sealed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Shorter than [`OVERHEAD`].
    #[error("sealed message of {0} bytes is shorter than {OVERHEAD}")]
    TooShort(usize),
    /// A first byte other than [`VERSION`]: most likely a peer that does not seal (a plain
    /// frame starts with a msgpack byte), or a wrong address.
    #[error(
        "sealed message starts with {0:#04x}, not 0x01: the peer is probably not using the \
         encrypted pipe (check that both sides have the same key setting)"
    )]
    Version(u8),
    /// Authentication failed: the wrong key, or the message was altered.
    #[error("sealed message failed authentication (a different key, or an altered message)")]
    Auth,
    /// A message whose IV this connection already accepted: a replay.
    #[error("sealed message replayed (its IV was already accepted on this connection)")]
    Replay,
    /// Our own message sent back to us (its IV carries our salt).
    #[error("sealed message reflected (it is one of ours, sent back to us)")]
    Reflected,
    /// A message whose IV has the salt of the last one accepted but not the next counter:
    /// a message of a peer that draws its IVs as we do was dropped, reordered or replayed
    /// from beyond the replay window.
    #[error(
        "sealed message out of sequence (counter {got} after {after}: a message was dropped, \
         reordered or replayed)"
    )]
    OutOfSequence {
        /// The counter of the last message accepted under that salt.
        after: u32,
        /// This message's counter.
        got: u32,
    },
}

impl From<OpenError> for TransportError {
    fn from(e: OpenError) -> Self {
        TransportError::Protocol(e.to_string())
    }
}

/// A key ready to seal and open messages (the AES key schedule is computed once).
#[derive(Clone)]
pub struct Cipher(Aes256Gcm);

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)") // never the key
    }
}

impl Cipher {
    /// A cipher for `key`.
    pub fn new(key: &Key) -> Self {
        Cipher(Aes256Gcm::new(&key.0.into()))
    }

    /// Seals `plaintext` under a fresh random IV.
    pub fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut iv = [0u8; IV_LEN];
        OsRng
            .try_fill_bytes(&mut iv)
            .map_err(|e| TransportError::Io(std::io::Error::other(e.to_string())))?;
        self.seal_iv(&iv, plaintext)
    }

    /// Seals `plaintext` under `iv`, for test vectors. Never reuse an IV with the same key.
    #[cfg(feature = "test-util")]
    #[doc(hidden)]
    pub fn seal_with_iv(
        &self,
        iv: &[u8; IV_LEN],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, TransportError> {
        self.seal_iv(iv, plaintext)
    }

    /// Seals `plaintext` under `iv`. Fails only for a plaintext beyond AES-GCM's limit
    /// (about 64 GiB).
    pub(crate) fn seal_iv(
        &self,
        iv: &[u8; IV_LEN],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, TransportError> {
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(VERSION);
        out.extend_from_slice(iv);
        out.extend_from_slice(plaintext);
        let sealed = out.get_mut(1 + IV_LEN..).unwrap_or_default();
        let tag = self
            .0
            .encrypt_in_place_detached(Nonce::from_slice(iv), b"", sealed)
            .map_err(|_| TransportError::TooLarge {
                len: plaintext.len() as u64,
                max: usize::MAX,
            })?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens a sealed message: checks its version and length, authenticates and decrypts it.
    pub fn open(&self, msg: &[u8]) -> Result<Vec<u8>, OpenError> {
        let iv = check(msg)?;
        let body = msg.get(1 + IV_LEN..).unwrap_or_default();
        let mut plaintext = body.to_vec();
        self.decrypt(&iv, &mut plaintext)?;
        Ok(plaintext)
    }

    /// [`open`](Cipher::open) without copying when `msg` is not shared: decrypts in place.
    /// Returns the plaintext and the message's IV.
    pub(crate) fn open_bytes(&self, msg: Bytes) -> Result<(Bytes, [u8; IV_LEN]), OpenError> {
        let iv = check(&msg)?;
        let mut body = match msg.try_into_mut() {
            Ok(unique) => unique,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        body.advance(1 + IV_LEN);
        let plaintext = self.decrypt_tail(&iv, body)?;
        Ok((plaintext.freeze(), iv))
    }

    /// Decrypts `body` (ciphertext ‖ tag) in place; returns the plaintext.
    fn decrypt_tail(&self, iv: &[u8; IV_LEN], mut body: BytesMut) -> Result<BytesMut, OpenError> {
        let text_len = body.len().checked_sub(TAG_LEN).ok_or(OpenError::Auth)?;
        let tag = body.split_off(text_len);
        self.0
            .decrypt_in_place_detached(Nonce::from_slice(iv), b"", &mut body, Tag::from_slice(&tag))
            .map_err(|_| OpenError::Auth)?;
        Ok(body)
    }

    /// Decrypts `body` (ciphertext ‖ tag) in place and drops the tag.
    fn decrypt(&self, iv: &[u8; IV_LEN], body: &mut Vec<u8>) -> Result<(), OpenError> {
        let text_len = body.len().checked_sub(TAG_LEN).ok_or(OpenError::Auth)?;
        let tag = body.split_off(text_len);
        self.0
            .decrypt_in_place_detached(Nonce::from_slice(iv), b"", body, Tag::from_slice(&tag))
            .map_err(|_| OpenError::Auth)
    }
}

/// Checks a sealed message's length and version; returns its IV.
fn check(msg: &[u8]) -> Result<[u8; IV_LEN], OpenError> {
    if msg.len() < OVERHEAD {
        return Err(OpenError::TooShort(msg.len()));
    }
    let (&version, rest) = msg.split_first().ok_or(OpenError::TooShort(0))?;
    if version != VERSION {
        return Err(OpenError::Version(version));
    }
    rest.first_chunk::<IV_LEN>()
        .copied()
        .ok_or(OpenError::TooShort(msg.len()))
}

/// Seals `plaintext` under `key` and `iv`, for test vectors.
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub fn seal_with_iv(
    key: &Key,
    iv: &[u8; IV_LEN],
    plaintext: &[u8],
) -> Result<Vec<u8>, TransportError> {
    Cipher::new(key).seal_with_iv(iv, plaintext)
}

/// Opens a sealed message under `key` (see [`Cipher::open`]).
pub fn open(key: &Key, msg: &[u8]) -> Result<Vec<u8>, OpenError> {
    Cipher::new(key).open(msg)
}
