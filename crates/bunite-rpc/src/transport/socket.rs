//! [`Socket`]: the byte stream under the socket transports — a TCP connection, the same
//! inside TLS (feature `tls`), or a connection another HTTP server upgraded (feature
//! `axum`) — so that [`WsTransport`](super::ws::WsTransport) and the listeners have one type
//! whatever carries them. Also the TCP socket options every bunite socket gets.
//!
//! # Keepalive
//!
//! A peer that goes silent without closing (a laptop that sleeps, a cable pulled, a NAT that
//! forgets the flow) is noticed by TCP keepalive on every TCP socket the transports make or
//! accept: after [`TCP_KEEPALIVE`] of silence the kernel probes every
//! [`TCP_KEEPALIVE_INTERVAL`], and after [`TCP_KEEPALIVE_RETRIES`] unanswered probes the
//! socket fails (`ETIMEDOUT`), which ends the connection with
//! [`Disconnect::Transport`](crate::Disconnect::Transport). WebSocket connections also ping
//! (see [`ws`](super::ws)); pipes and stdio have no such mechanism.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

#[cfg(doc)]
use super::TCP_KEEPALIVE;
use super::{TCP_KEEPALIVE_INTERVAL, TCP_KEEPALIVE_RETRIES};

/// Sets what every bunite TCP socket gets: `TCP_NODELAY` (the sinks batch frames
/// themselves, so Nagle's algorithm would only add latency) and keepalive after `idle`
/// (`None`: keepalive off). Best effort: a socket that refuses an option still works.
pub fn tune_tcp(stream: &TcpStream, idle: Option<Duration>) {
    let _ = stream.set_nodelay(true);
    let Some(idle) = idle else { return };
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_RETRIES);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

/// Runs `connect` within `timeout`, failing with [`io::ErrorKind::TimedOut`] naming `what`.
pub(crate) async fn within<T, E: From<io::Error>>(
    timeout: Duration,
    what: &str,
    connect: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match tokio::time::timeout(timeout, connect).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "connecting to {what} timed out after {} ms",
                timeout.as_millis()
            ),
        )
        .into()),
    }
}

/// A connected byte stream: TCP, TLS over TCP, or an upgraded HTTP connection.
#[derive(Debug)]
pub struct Socket(Inner);

#[derive(Debug)]
enum Inner {
    Tcp(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
    #[cfg(feature = "axum")]
    Upgraded(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>),
}

impl Socket {
    /// The TCP connection's peer address (`None` for an upgraded connection, whose
    /// address the HTTP server knows).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match &self.0 {
            Inner::Tcp(s) => s.peer_addr().ok(),
            #[cfg(feature = "tls")]
            Inner::Tls(s) => s.get_ref().0.peer_addr().ok(),
            #[cfg(feature = "axum")]
            Inner::Upgraded(_) => None,
        }
    }

    /// Whether the bytes go through TLS that this process terminates.
    pub fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Inner::Tls(_) = &self.0 {
            return true;
        }
        false
    }

    /// The plain TCP stream, or the socket back if it is something else.
    #[cfg_attr(not(feature = "byte-stream"), allow(dead_code))]
    pub(crate) fn into_tcp(self) -> Result<TcpStream, Socket> {
        match self.0 {
            Inner::Tcp(s) => Ok(s),
            #[allow(unreachable_patterns)]
            other => Err(Socket(other)),
        }
    }

    #[cfg(feature = "tls")]
    pub(crate) fn tls(stream: tokio_rustls::TlsStream<TcpStream>) -> Self {
        Socket(Inner::Tls(Box::new(stream)))
    }

    #[cfg(feature = "axum")]
    pub(crate) fn upgraded(io: hyper::upgrade::Upgraded) -> Self {
        Socket(Inner::Upgraded(hyper_util::rt::TokioIo::new(io)))
    }
}

impl From<TcpStream> for Socket {
    fn from(stream: TcpStream) -> Self {
        Socket(Inner::Tcp(stream))
    }
}

/// Calls `$method` on whichever stream the socket holds.
macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.get_mut().0 {
            Inner::Tcp($s) => $e,
            #[cfg(feature = "tls")]
            Inner::Tls($s) => {
                let $s = &mut **$s;
                $e
            }
            #[cfg(feature = "axum")]
            Inner::Upgraded($s) => $e,
        }
    };
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Inner::Tcp(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Inner::Tls(s) => s.is_write_vectored(),
            #[cfg(feature = "axum")]
            Inner::Upgraded(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tuned_sockets_have_nodelay_and_keepalive() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        tune_tcp(&stream, Some(Duration::from_secs(7)));
        let sock = socket2::SockRef::from(&stream);
        assert!(stream.nodelay().unwrap());
        assert!(sock.keepalive().unwrap());
        #[cfg(any(target_os = "linux", target_os = "macos"))]
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        let plain = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        tune_tcp(&plain, None);
        assert!(!socket2::SockRef::from(&plain).keepalive().unwrap());
    }
}
