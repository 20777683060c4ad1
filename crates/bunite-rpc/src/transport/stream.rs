//! Messages over a byte stream (PROTOCOL §2): each message is prefixed by its length as a
//! 4-byte big-endian unsigned integer.
//!
//! [`ByteStream`] works over any pair of tokio `AsyncRead`/`AsyncWrite` halves; helpers build
//! one over TCP ([`ByteStream::tcp`], [`tcp_connect`]), a Unix socket ([`ByteStream::unix`],
//! [`unix_connect`]), our own stdin/stdout ([`stdio`]) and a child process's stdio
//! ([`spawn_child`]).
//!
//! A length above the receiver's limit ([`ByteStream::with_max_bytes`], default
//! [`DEFAULT_MAX_BYTES`](bunite_wire::Limits::DEFAULT_MAX_BYTES)) is refused before its body
//! is read or allocated: the connection answers with goaway `resource_exhausted`. Keep the
//! limit at the connection's [`Limits::max_bytes`](crate::Limits::max_bytes) (plus
//! [`sealed::OVERHEAD`](crate::transport::sealed::OVERHEAD) under an encrypted pipe).
//!
//! Writes go through a [`BufWriter`]: the connection's writer sends a batch of messages,
//! then flushes once, so a burst of small frames becomes one write.
//!
//! ```no_run
//! use bunite_rpc::{transport::stream, Connection};
//!
//! # async fn run() -> std::io::Result<()> {
//! // Server: one connection per accepted socket.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(async move {
//!     while let Ok((socket, _)) = listener.accept().await {
//!         let _conn = Connection::new(stream::ByteStream::tcp(socket));
//!     }
//! });
//! // Client.
//! let client = Connection::new(stream::tcp_connect(addr).await?);
//! # drop(client);
//! # Ok(())
//! # }
//! ```

use std::io;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{tcp, TcpStream, ToSocketAddrs};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::{MessageSink, MessageSource, Transport, TransportError};

/// Size of the read and write buffers. Large enough to coalesce a batch of small frames
/// into one syscall; larger messages bypass the buffer.
const BUFFER_SIZE: usize = 64 * 1024;

/// A message transport over a byte stream: a reader half and a writer half.
#[derive(Debug)]
pub struct ByteStream<R, W> {
    reader: R,
    writer: W,
    max_bytes: usize,
}

/// A [`ByteStream`] over a TCP socket.
pub type TcpTransport = ByteStream<tcp::OwnedReadHalf, tcp::OwnedWriteHalf>;

/// A [`ByteStream`] over a Unix socket.
#[cfg(unix)]
pub type UnixTransport =
    ByteStream<tokio::net::unix::OwnedReadHalf, tokio::net::unix::OwnedWriteHalf>;

/// A [`ByteStream`] over this process's stdin and stdout.
pub type StdioTransport = ByteStream<tokio::io::Stdin, tokio::io::Stdout>;

/// A [`ByteStream`] over a child process's stdout and stdin.
pub type ChildTransport = ByteStream<ChildStdout, ChildStdin>;

impl<R, W> ByteStream<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// A transport reading messages from `reader` and writing them to `writer`.
    pub fn new(reader: R, writer: W) -> Self {
        ByteStream {
            reader,
            writer,
            max_bytes: bunite_wire::Limits::DEFAULT_MAX_BYTES,
        }
    }

    /// Sets the largest inbound message; a longer length prefix is refused with
    /// [`TransportError::TooLarge`] before anything is allocated.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The largest inbound message.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

impl TcpTransport {
    /// A transport over a connected (or accepted) TCP socket. Sets `TCP_NODELAY`: the
    /// writer already coalesces each batch, so Nagle's algorithm would only add latency.
    pub fn tcp(stream: TcpStream) -> Self {
        // Best effort: a socket that refuses the option still works, only slower.
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        ByteStream::new(r, w)
    }
}

#[cfg(unix)]
impl UnixTransport {
    /// A transport over a connected (or accepted) Unix socket.
    pub fn unix(stream: tokio::net::UnixStream) -> Self {
        let (r, w) = stream.into_split();
        ByteStream::new(r, w)
    }
}

/// Connects to a TCP address.
pub async fn tcp_connect(addr: impl ToSocketAddrs) -> io::Result<TcpTransport> {
    Ok(ByteStream::tcp(TcpStream::connect(addr).await?))
}

/// Connects to a Unix socket.
#[cfg(unix)]
pub async fn unix_connect(path: impl AsRef<std::path::Path>) -> io::Result<UnixTransport> {
    Ok(ByteStream::unix(
        tokio::net::UnixStream::connect(path).await?,
    ))
}

/// The child side of [`spawn_child`]: this process's stdin and stdout.
///
/// Nothing else may write to stdout. Tokio reads stdin on a blocking thread that cannot be
/// interrupted, so end the runtime with `shutdown_timeout`/`shutdown_background` rather than
/// waiting for that read.
pub fn stdio() -> StdioTransport {
    ByteStream::new(tokio::io::stdin(), tokio::io::stdout())
}

/// Spawns `cmd` with piped stdin and stdout (stderr is left as configured) and returns the
/// child with a transport over its stdio. The child is killed if the handle is dropped.
pub fn spawn_child(mut cmd: Command) -> io::Result<(Child, ChildTransport)> {
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let missing = || io::Error::other("child spawned without piped stdio");
    let stdin = child.stdin.take().ok_or_else(missing)?;
    let stdout = child.stdout.take().ok_or_else(missing)?;
    Ok((child, ByteStream::new(stdout, stdin)))
}

/// The sending half of a [`ByteStream`].
#[derive(Debug)]
pub struct StreamSink<W>(Option<BufWriter<W>>);

/// The receiving half of a [`ByteStream`].
#[derive(Debug)]
pub struct StreamSource<R> {
    reader: BufReader<R>,
    max_bytes: usize,
}

impl<R, W> Transport for ByteStream<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Sink = StreamSink<W>;
    type Source = StreamSource<R>;

    fn split(self) -> (StreamSink<W>, StreamSource<R>) {
        let sink = StreamSink(Some(BufWriter::with_capacity(BUFFER_SIZE, self.writer)));
        let source = StreamSource {
            reader: BufReader::with_capacity(BUFFER_SIZE, self.reader),
            max_bytes: self.max_bytes,
        };
        (sink, source)
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> MessageSink for StreamSink<W> {
    async fn send(&mut self, msg: Bytes) -> Result<(), TransportError> {
        let w = self.0.as_mut().ok_or(TransportError::Closed)?;
        let len = u32::try_from(msg.len()).map_err(|_| TransportError::TooLarge {
            len: msg.len() as u64,
            max: u32::MAX as usize,
        })?;
        w.write_all(&len.to_be_bytes()).await?;
        w.write_all(&msg).await?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        let w = self.0.as_mut().ok_or(TransportError::Closed)?;
        Ok(w.flush().await?)
    }

    async fn close(&mut self) -> Result<(), TransportError> {
        match self.0.take() {
            // `shutdown` flushes, then ends our direction (TCP FIN, pipe close).
            Some(mut w) => Ok(w.shutdown().await?),
            None => Ok(()),
        }
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> MessageSource for StreamSource<R> {
    async fn recv(&mut self) -> Result<Option<Bytes>, TransportError> {
        let mut prefix = [0u8; 4];
        let mut filled = 0;
        while filled < prefix.len() {
            let n = self.reader.read(&mut prefix[filled..]).await?;
            if n == 0 {
                // End of stream: clean between messages, truncation inside one.
                return match filled {
                    0 => Ok(None),
                    _ => Err(truncated()),
                };
            }
            filled += n;
        }
        let len = u32::from_be_bytes(prefix);
        if len as u64 > self.max_bytes as u64 {
            return Err(TransportError::TooLarge {
                len: len.into(),
                max: self.max_bytes,
            });
        }
        let mut body = vec![0u8; len as usize];
        match self.reader.read_exact(&mut body).await {
            Ok(_) => Ok(Some(Bytes::from(body))),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(truncated()),
            Err(e) => Err(e.into()),
        }
    }
}

fn truncated() -> TransportError {
    TransportError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "byte stream ended inside a message",
    ))
}
