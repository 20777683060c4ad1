//! Test helpers shared by the crate's unit tests and its integration tests. Hidden, behind
//! `test-util`; not part of the public API.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// A writer that records each write call (the lengths of its slices) and takes at most
/// `limit` bytes per call, all it takes in `written`.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Each write call: the lengths of the slices it was given.
    pub calls: Vec<Vec<usize>>,
    /// Every byte taken, in order.
    pub written: Vec<u8>,
    /// The most bytes one call takes.
    pub limit: usize,
}

impl AsyncWrite for Recorder {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.calls.push(bufs.iter().map(|b| b.len()).collect());
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(self.limit - n);
            self.written.extend_from_slice(&b[..take]);
            n += take;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The server end of a WebSocket over `socket` (its handshake taken as done), made as a
/// listener makes its connections': reads under `config`'s receive budget and deadline,
/// answers paid from its send budget, pings at its interval. For tests that need a
/// listener's connection over an in-memory pipe (and so paused time).
#[cfg(feature = "ws")]
pub async fn ws_listener_side<S>(
    socket: S,
    config: &crate::transport::ListenerConfig,
) -> crate::transport::ws::WsTransport<S>
where
    S: tokio::io::AsyncRead + AsyncWrite + Unpin,
{
    crate::transport::ws::WsTransport::upgraded(socket, config, None).await
}
