//! The halves of a [`TcpTransport`](super::TcpTransport): a plain TCP socket split without
//! a lock (`into_split`), or any other [`Socket`] (TLS) split by tokio's `split`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::transport::Socket;

/// The reading half of a TCP (or TLS over TCP) socket.
#[derive(Debug)]
pub struct TcpReader(ReadInner);

/// The writing half of a TCP (or TLS over TCP) socket.
#[derive(Debug)]
pub struct TcpWriter(WriteInner);

#[derive(Debug)]
enum ReadInner {
    Plain(OwnedReadHalf),
    Other(ReadHalf<Socket>),
}

#[derive(Debug)]
enum WriteInner {
    Plain(OwnedWriteHalf),
    Other(WriteHalf<Socket>),
}

/// Splits a socket into its halves.
pub(super) fn split(socket: Socket) -> (TcpReader, TcpWriter) {
    match socket.into_tcp() {
        Ok(tcp) => {
            let (r, w) = tcp.into_split();
            (
                TcpReader(ReadInner::Plain(r)),
                TcpWriter(WriteInner::Plain(w)),
            )
        }
        Err(other) => {
            let (r, w) = tokio::io::split(other);
            (
                TcpReader(ReadInner::Other(r)),
                TcpWriter(WriteInner::Other(w)),
            )
        }
    }
}

impl AsyncRead for TcpReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            ReadInner::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReadInner::Other(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TcpWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            WriteInner::Plain(w) => Pin::new(w).poll_write(cx, buf),
            WriteInner::Other(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            WriteInner::Plain(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            WriteInner::Other(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            WriteInner::Plain(w) => w.is_write_vectored(),
            WriteInner::Other(w) => w.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            WriteInner::Plain(w) => Pin::new(w).poll_flush(cx),
            WriteInner::Other(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            WriteInner::Plain(w) => Pin::new(w).poll_shutdown(cx),
            WriteInner::Other(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}
