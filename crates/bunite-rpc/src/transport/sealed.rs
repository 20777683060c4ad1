//! The encrypted pipe (PROTOCOL §2): AES-256-GCM per message around any transport.
//!
//! Each message becomes `0x01 ‖ IV (12 random bytes) ‖ ciphertext ‖ tag (16 bytes)`, with no
//! associated data, under a 32-byte key shared out of band. A fresh random IV is drawn for
//! every message. An inbound message with another first byte, shorter than [`OVERHEAD`], or
//! failing authentication is a [`TransportError::Protocol`]: the connection sends goaway and
//! closes the pipe.
//!
//! A sealed message is [`OVERHEAD`] (29) bytes longer than the frame it carries, so the inner
//! transport's bound must be the connection's `max_bytes + OVERHEAD`.
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

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{AeadInPlace, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use bytes::Bytes;

use super::{MessageSink, MessageSource, Transport, TransportError};

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
    /// A first byte other than [`VERSION`].
    #[error("sealed message version {0:#04x}, expected 0x01")]
    Version(u8),
    /// Authentication failed: the wrong key, or the message was altered.
    #[error("sealed message failed authentication")]
    Auth,
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
        self.seal_with_iv(&iv, plaintext)
    }

    /// Seals `plaintext` under `iv`. Never reuse an IV with the same key: use
    /// [`seal`](Cipher::seal) except to reproduce test vectors.
    ///
    /// Fails only for a plaintext beyond AES-GCM's limit (about 64 GiB).
    pub fn seal_with_iv(
        &self,
        iv: &[u8; IV_LEN],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, TransportError> {
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(VERSION);
        out.extend_from_slice(iv);
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .encrypt_in_place_detached(Nonce::from_slice(iv), b"", &mut out[1 + IV_LEN..])
            .map_err(|_| TransportError::TooLarge {
                len: plaintext.len() as u64,
                max: usize::MAX,
            })?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens a sealed message: checks its version and length, authenticates and decrypts it.
    pub fn open(&self, msg: &[u8]) -> Result<Vec<u8>, OpenError> {
        if msg.len() < OVERHEAD {
            return Err(OpenError::TooShort(msg.len()));
        }
        let (&version, rest) = msg.split_first().ok_or(OpenError::TooShort(0))?;
        if version != VERSION {
            return Err(OpenError::Version(version));
        }
        // In range: `rest` holds at least IV_LEN + TAG_LEN bytes (checked above).
        let (iv, rest) = rest.split_at(IV_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut plaintext = ciphertext.to_vec();
        self.0
            .decrypt_in_place_detached(
                Nonce::from_slice(iv),
                b"",
                &mut plaintext,
                Tag::from_slice(tag),
            )
            .map_err(|_| OpenError::Auth)?;
        Ok(plaintext)
    }
}

/// Seals `plaintext` under `key` and `iv` (for test vectors; see [`Cipher::seal_with_iv`]).
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

/// Any transport, with every message sealed under one key.
#[derive(Debug)]
pub struct Sealed<T> {
    inner: T,
    cipher: Cipher,
}

impl<T: Transport> Sealed<T> {
    /// Wraps `inner`; both peers must use the same key.
    pub fn new(inner: T, key: Key) -> Self {
        Sealed {
            inner,
            cipher: Cipher::new(&key),
        }
    }
}

/// The sending half of a [`Sealed`] transport.
#[derive(Debug)]
pub struct SealedSink<S> {
    inner: S,
    cipher: Cipher,
}

/// The receiving half of a [`Sealed`] transport.
#[derive(Debug)]
pub struct SealedSource<S> {
    inner: S,
    cipher: Cipher,
}

impl<T: Transport> Transport for Sealed<T> {
    type Sink = SealedSink<T::Sink>;
    type Source = SealedSource<T::Source>;

    fn split(self) -> (Self::Sink, Self::Source) {
        let (sink, source) = self.inner.split();
        let cipher = self.cipher;
        let source = SealedSource {
            inner: source,
            cipher: cipher.clone(),
        };
        (
            SealedSink {
                inner: sink,
                cipher,
            },
            source,
        )
    }
}

impl<S: MessageSink> MessageSink for SealedSink<S> {
    async fn send(&mut self, msg: Bytes) -> Result<(), TransportError> {
        let sealed = self.cipher.seal(&msg)?;
        self.inner.send(sealed.into()).await
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.inner.flush().await
    }

    async fn close(&mut self) -> Result<(), TransportError> {
        self.inner.close().await
    }
}

impl<S: MessageSource> MessageSource for SealedSource<S> {
    async fn recv(&mut self) -> Result<Option<Bytes>, TransportError> {
        match self.inner.recv().await? {
            Some(msg) => Ok(Some(self.cipher.open(&msg)?.into())),
            None => Ok(None),
        }
    }
}
