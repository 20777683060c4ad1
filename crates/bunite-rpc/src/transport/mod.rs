//! Message transports (PROTOCOL §2): one encoded frame per message, in order, reliably.
//!
//! A transport splits into a [`MessageSink`] (written by the connection's writer task) and a
//! [`MessageSource`] (read by its reader task). Each adapter is small; the connection core
//! knows nothing about sockets.
//!
//! # Features
//!
//! Each adapter beyond the in-memory pair is behind a cargo feature; all are on by default.
//!
//! - [`memory`]: an in-process pair. Always available.
//! - [`stream`] (feature `stream`): length-prefixed messages over a byte stream: TCP, Unix
//!   sockets, a child process's stdio, our own stdio.
//! - [`ws`] (feature `ws`): one message per binary WebSocket message; a listener for hosts
//!   (path `/rpc`) and a client.
//! - [`sealed`] (feature `sealed`): the encrypted pipe, AES-256-GCM per message, wrapping any
//!   other transport.

pub mod memory;
#[cfg(feature = "sealed")]
pub mod sealed;
#[cfg(feature = "stream")]
pub mod stream;
#[cfg(feature = "ws")]
pub mod ws;

use std::future::Future;

use bytes::Bytes;

/// Why a transport failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// An I/O error.
    #[error("transport I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A message above the receiver's `maxBytes` (the transport refused to read it).
    #[error("message of {len} bytes exceeds maxBytes {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The peer broke the transport's framing (e.g. a text WebSocket message).
    #[error("{0}")]
    Protocol(String),
    /// The transport is closed.
    #[error("transport closed")]
    Closed,
}

/// The sending half of a message transport.
pub trait MessageSink: Send + 'static {
    /// Sends one message (it may be buffered until [`flush`](MessageSink::flush)).
    fn send(&mut self, msg: Bytes) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Flushes buffered messages. The writer calls it after each batch.
    fn flush(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send {
        async { Ok(()) }
    }

    /// Closes the sending side; the peer's source then ends.
    fn close(&mut self) -> impl Future<Output = Result<(), TransportError>> + Send;
}

/// The receiving half of a message transport.
pub trait MessageSource: Send + 'static {
    /// The next message; `Ok(None)` when the peer closed cleanly.
    fn recv(&mut self) -> impl Future<Output = Result<Option<Bytes>, TransportError>> + Send;
}

/// A message transport that splits into its two halves.
pub trait Transport: Send + 'static {
    /// The sending half.
    type Sink: MessageSink;
    /// The receiving half.
    type Source: MessageSource;

    /// Splits the transport.
    fn split(self) -> (Self::Sink, Self::Source);
}
