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

use std::task::{Context, Poll};

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

/// The receiving half of a message transport.
pub trait MessageSource: Send + Unpin + 'static {
    /// The next message; `Ready(Ok(None))` once the peer closed cleanly.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, TransportError>>;
}

/// The sending half of a message transport, with the semantics of `futures::Sink<Bytes>`.
pub trait MessageSink: Send + Unpin + 'static {
    /// Ready when the sink can take one more message.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>>;

    /// Takes one message; call only after `poll_ready` returned `Ready(Ok(()))`. It may
    /// wait in a buffer until [`poll_flush`](MessageSink::poll_flush).
    fn start_send(&mut self, msg: Bytes) -> Result<(), TransportError>;

    /// Writes out every message taken so far.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>>;

    /// Flushes, then closes the sending direction.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>>;
}

/// A message transport that splits into its two halves.
pub trait Transport: Send + 'static {
    /// The sending half.
    type Sink: MessageSink;
    /// The receiving half.
    type Source: MessageSource;

    /// Splits the transport.
    fn split(self) -> (Self::Sink, Self::Source);

    /// What the transport is and whom it reaches, for traces and logs.
    fn info(&self) -> TransportInfo {
        TransportInfo::default()
    }
}

/// What a transport is and whom it reaches (see [`Transport::info`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportInfo {
    /// Its kind: `"memory"`, `"tcp"`, `"ws"`, … (empty if unknown).
    pub kind: &'static str,
    /// The peer's address, when the transport has one.
    pub peer: Option<String>,
}

impl TransportInfo {
    /// A transport of `kind`, reaching `peer`.
    pub fn new(kind: &'static str, peer: Option<String>) -> Self {
        TransportInfo { kind, peer }
    }
}
