//! The two halves of a [`WsTransport`](super::WsTransport) over one shared socket, and the
//! lingering close (see the parent module's `# Closing`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::keepalive::Due;
use super::reframe::Header;
use super::Shared;
use crate::transport::{ByteBudget, MessageSink, MessageSource, TransportError};
use crate::transport::{LINGER, LINGER_BYTES, LINGER_QUIET};

/// The protocol error for a text message (PROTOCOL §2).
const TEXT_MESSAGE: &str = "text message on the bunite socket";

/// A message longer than this goes out as one frame written around tungstenite: its
/// header and its payload straight to the socket (after whatever tungstenite has buffered
/// before it, and before whatever it writes after), a server's without a copy, a client's
/// masked a piece at a time. tungstenite would copy the frame into its write buffer, which
/// keeps its high-water mark until the connection closes: an idle connection that had sent
/// one message of 120 KiB kept 120 KiB for it, so a peer asking for long replies on many
/// connections made each hold that (it was sent in 128 KiB fragments to bound it, and a
/// listener pays for a fragmented message at its frame limit, its size unknown until the
/// last fragment). Shorter messages go through tungstenite, which batches them.
pub(super) const LONG_MESSAGE: usize = super::WRITE_BUFFER;

/// The sending half of a [`WsTransport`](super::WsTransport).
#[derive(Debug)]
pub struct WsSink<S> {
    shared: Arc<Mutex<Shared<S>>>,
    closing: Closing,
    /// A long message taken by `start_send`, to be written around tungstenite once what
    /// tungstenite holds before it is out ([`LONG_MESSAGE`]).
    long: Option<Bytes>,
}

/// The receiving half of a [`WsTransport`](super::WsTransport).
#[derive(Debug)]
pub struct WsSource<S> {
    shared: Arc<Mutex<Shared<S>>>,
}

/// Where closing is.
#[derive(Debug)]
enum Closing {
    Open,
    /// Sending the close frame.
    Frame,
    /// Ending our direction.
    Shutdown,
    /// Discarding the peer's input until it closes.
    Linger {
        deadline: Pin<Box<Sleep>>,
        quiet: Pin<Box<Sleep>>,
        read: usize,
    },
    Done,
}

pub(super) fn lock<S>(shared: &Mutex<Shared<S>>) -> MutexGuard<'_, Shared<S>> {
    // Each critical section is one non-blocking poll: a panic inside leaves the socket in
    // a state the next poll reports on.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn split<S>(shared: Arc<Mutex<Shared<S>>>) -> (WsSink<S>, WsSource<S>) {
    let source = WsSource {
        shared: Arc::clone(&shared),
    };
    let sink = WsSink {
        shared,
        closing: Closing::Open,
        long: None,
    };
    (sink, source)
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MessageSink for WsSink<S> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        if !matches!(self.closing, Closing::Open) {
            return Poll::Ready(Err(TransportError::Closed));
        }
        let mut shared = lock(&self.shared);
        ready!(send_long(&mut shared, &mut self.long, cx))?;
        Pin::new(&mut shared.ws).poll_ready(cx).map_err(send_error)
    }

    fn start_send(&mut self, msg: Bytes) -> Result<(), TransportError> {
        // `poll_ready` wrote the last long message before saying ready.
        debug_assert!(self.long.is_none(), "start_send before poll_ready");
        if msg.len() > LONG_MESSAGE {
            self.long = Some(msg);
            return Ok(());
        }
        Pin::new(&mut lock(&self.shared).ws)
            .start_send(Message::Binary(msg))
            .map_err(send_error)
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        let mut shared = lock(&self.shared);
        ready!(send_long(&mut shared, &mut self.long, cx))?;
        Pin::new(&mut shared.ws).poll_flush(cx).map_err(send_error)
    }

    fn written(&self) -> u64 {
        lock(&self.shared).ws.get_ref().written()
    }

    /// The long message not yet all on the socket (the one taken, or the one under way).
    /// tungstenite's own write buffer, which holds short messages only and is written out
    /// once it passes [`WRITE_BUFFER`](super::WRITE_BUFFER), is left out.
    fn queued(&self) -> usize {
        let taken = self.long.as_ref().map_or(0, Bytes::len);
        taken + lock(&self.shared).ws.get_ref().long_left()
    }

    fn send_budget(&self) -> Option<ByteBudget> {
        lock(&self.shared).send_budget.clone()
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        loop {
            let mut shared = lock(&self.shared);
            match &mut self.closing {
                Closing::Open => {
                    // A message written around tungstenite is finished before the
                    // close frame.
                    if let Err(e) = ready!(send_long(&mut shared, &mut self.long, cx)) {
                        self.closing = Closing::Done;
                        return Poll::Ready(Err(e));
                    }
                    shared.read_done = true;
                    self.closing = Closing::Frame;
                }
                Closing::Frame => {
                    let sent = ready!(Pin::new(&mut shared.ws).poll_close(cx));
                    self.closing = match sent {
                        Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                            Closing::Shutdown
                        }
                        Err(e) => {
                            self.closing = Closing::Done;
                            return Poll::Ready(Err(send_error(e)));
                        }
                    };
                }
                Closing::Shutdown => {
                    let io = shared.ws.get_mut().get_mut();
                    // A socket the peer already reset is closed enough.
                    let _ = ready!(Pin::new(io).poll_shutdown(cx));
                    self.closing = Closing::Linger {
                        deadline: Box::pin(tokio::time::sleep(LINGER)),
                        quiet: Box::pin(tokio::time::sleep(LINGER_QUIET)),
                        read: 0,
                    };
                }
                Closing::Linger {
                    deadline,
                    quiet,
                    read,
                } => {
                    let io = shared.ws.get_mut().get_mut();
                    let before = *read;
                    let ended = drain(io, cx, read).is_ready();
                    if *read > before {
                        quiet.as_mut().reset(Instant::now() + LINGER_QUIET);
                    }
                    let waited = deadline.as_mut().poll(cx).is_ready();
                    if ended || waited || quiet.as_mut().poll(cx).is_ready() {
                        self.closing = Closing::Done;
                    } else {
                        return Poll::Pending;
                    }
                }
                Closing::Done => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// Reads and discards until the peer closes, fails, or sent [`LINGER_BYTES`]; `Pending`
/// while it may send more.
fn drain<S: AsyncRead + Unpin>(io: &mut S, cx: &mut Context<'_>, read: &mut usize) -> Poll<()> {
    let mut scratch = [0u8; 2048];
    while *read < LINGER_BYTES {
        let mut buf = ReadBuf::new(&mut scratch);
        match ready!(Pin::new(&mut *io).poll_read(cx, &mut buf)) {
            Ok(()) if !buf.filled().is_empty() => *read += buf.filled().len(),
            _ => return Poll::Ready(()),
        }
    }
    Poll::Ready(())
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MessageSource for WsSource<S> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, TransportError>> {
        let mut guard = lock(&self.shared);
        let shared = &mut *guard;
        if !shared.read_done {
            if let Err(e) = keep_alive(shared, cx) {
                shared.read_done = true;
                return Poll::Ready(Err(TransportError::Io(e)));
            }
        }
        let result = loop {
            if shared.read_done {
                return Poll::Ready(Ok(None));
            }
            let next = match Pin::new(&mut shared.ws).poll_next(cx) {
                Poll::Ready(next) => next,
                // tungstenite waits for bytes: the next message may be one read around it,
                // whole (the socket under it then waits for it to be taken).
                Poll::Pending => match shared.ws.get_mut().take_message() {
                    Some(bytes) => Some(Ok(Message::Binary(bytes))),
                    None => return Poll::Pending,
                },
            };
            if let Some(k) = &mut shared.keepalive {
                k.heard();
            }
            match next {
                None | Some(Ok(Message::Close(_))) => break Ok(None),
                Some(Ok(Message::Binary(bytes))) if bytes.len() > shared.max_bytes => {
                    break Err(TransportError::TooLarge {
                        len: bytes.len() as u64,
                        max: shared.max_bytes,
                    })
                }
                Some(Ok(Message::Binary(bytes))) => {
                    shared.ws.get_mut().message_done();
                    return Poll::Ready(Ok(Some(bytes)));
                }
                Some(Ok(Message::Text(_))) => {
                    break Err(TransportError::Protocol(TEXT_MESSAGE.to_owned()))
                }
                // Pings are answered by tungstenite itself (and nothing more is read
                // while the pong cannot be written: `metered.rs`); pongs need nothing.
                Some(Ok(Message::Ping(_))) => {
                    shared.ws.get_mut().ping_received();
                    shared.ws.get_mut().control_done();
                    continue;
                }
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => {
                    shared.ws.get_mut().control_done();
                    continue;
                }
                Some(Err(e)) => break recv_error(e, shared.max_bytes),
            }
        };
        // Ended or failed: tungstenite reads no more, and the sink's close drains the rest.
        shared.read_done = true;
        shared.ws.get_mut().message_done();
        Poll::Ready(result)
    }

    fn pause(&mut self) {
        lock(&self.shared).ws.get_mut().pause();
    }
}

/// Sends a ping when one is due (best effort: a socket that cannot take it now is busy
/// writing, and the peer's silence is what fails the connection); the error of a missed
/// pong.
fn keep_alive<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &mut Shared<S>,
    cx: &mut Context<'_>,
) -> io::Result<()> {
    let Some(k) = &mut shared.keepalive else {
        return Ok(());
    };
    if k.poll(cx)? == Due::Ping {
        let mut ws = Pin::new(&mut shared.ws);
        if let Poll::Ready(Ok(())) = ws.as_mut().poll_ready(cx) {
            if ws.as_mut().start_send(Message::Ping(Bytes::new())).is_ok() {
                let _ = ws.poll_flush(cx);
            }
        }
    }
    Ok(())
}

/// Writes a long message taken by `start_send` around tungstenite: first whatever
/// tungstenite holds (so the message goes after it), then the message's frame, header and
/// payload, straight to the socket. `Ready` once it is all written.
fn send_long<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &mut Shared<S>,
    long: &mut Option<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), TransportError>> {
    if long.is_some() {
        ready!(Pin::new(&mut shared.ws).poll_flush(cx)).map_err(send_error)?;
        if let Some(payload) = long.take() {
            // A client masks its frames with a fresh key each (RFC 6455 §5.3).
            let key = shared.mask.then(rand::random::<[u8; 4]>);
            let header = frame_header(payload.len(), key);
            shared.ws.get_mut().queue_frame(header, payload, key);
        }
    }
    shared
        .ws
        .get_mut()
        .poll_long(cx)
        .map_err(TransportError::Io)
}

/// The header of a final binary frame of `len` bytes, masked with `key` if given (RFC 6455
/// §5.2).
fn frame_header(len: usize, key: Option<[u8; 4]>) -> Bytes {
    Bytes::copy_from_slice(Header::new(true, 2, key, len as u64).as_bytes())
}

fn send_error(e: WsError) -> TransportError {
    match e {
        WsError::Io(e) => TransportError::Io(e),
        WsError::ConnectionClosed | WsError::AlreadyClosed => TransportError::Closed,
        other => TransportError::Io(io::Error::other(other.to_string())),
    }
}

fn recv_error(e: WsError, max: usize) -> Result<Option<Bytes>, TransportError> {
    match e {
        // The end of the socket, with or without a closing handshake.
        WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ok(None),
        WsError::Capacity(CapacityError::MessageTooLong { size, .. }) => {
            Err(TransportError::TooLarge {
                len: size as u64,
                max,
            })
        }
        WsError::Io(e) => Err(io_error(e)),
        WsError::Protocol(e) => Err(TransportError::Protocol(format!("WebSocket: {e}"))),
        other => Err(TransportError::Io(io::Error::other(other.to_string()))),
    }
}

/// A read error: the socket's, or the receive deadline's or the budget's (which the socket
/// under tungstenite wraps in an `io::Error`).
fn io_error(e: io::Error) -> TransportError {
    let ours = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TransportError>());
    match ours {
        Some(&TransportError::TooSlow { after, len }) => TransportError::TooSlow { after, len },
        // A message longer than the listener's budget can pay for (`metered.rs`).
        Some(&TransportError::TooLarge { len, max }) => TransportError::TooLarge { len, max },
        _ => TransportError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use futures::FutureExt;
    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::super::WsTransport;
    use super::lock;
    use crate::transport::{ByteBudget, MessageSink, MessageSinkExt, MessageSource, Transport};

    /// An idle connection holds no read-ahead buffer once its messages are read and its
    /// source waits for the next one (it used to keep 8 KiB reserved for that read).
    #[tokio::test]
    async fn an_idle_connection_holds_no_read_ahead_buffer() {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let server = WsTransport::from_raw_socket(a, Role::Server, 1 << 20).await;
        let client = WsTransport::from_raw_socket(b, Role::Client, 1 << 20).await;
        let shared = std::sync::Arc::clone(&server.shared);
        let (_server_sink, mut source) = server.split();
        let (mut sink, _client_source) = client.split();
        for size in [100, 64 * 1024] {
            sink.send(vec![3u8; size].into()).await.unwrap();
            let got = std::future::poll_fn(|cx| source.poll_recv(cx)).await;
            assert_eq!(got.unwrap().unwrap().len(), size);
            let waiting = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(source.poll_recv(cx).is_pending())
            })
            .await;
            assert!(waiting, "nothing more was sent");
            assert_eq!(
                lock(&shared).ws.get_ref().ahead_capacity(),
                0,
                "after {size} bytes"
            );
        }
    }

    /// On the server side a long message goes out as one frame written around tungstenite,
    /// after what tungstenite held before it and before what it writes after it; short
    /// ones go through tungstenite. The bytes on the wire, frame by frame.
    #[tokio::test]
    async fn a_long_message_from_a_server_is_one_frame_between_the_short_ones() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let t = WsTransport::from_raw_socket(ours, Role::Server, 1 << 20).await;
        let (mut sink, _source) = t.split();
        let long = vec![9u8; 200 * 1024];
        for msg in [&b"one"[..], &long, &b"two"[..]] {
            sink.feed(Bytes::copy_from_slice(msg)).await.unwrap();
        }
        sink.flush().await.unwrap();
        let mut want = vec![0x82, 3, b'o', b'n', b'e', 0x82, 127];
        want.extend_from_slice(&(long.len() as u64).to_be_bytes());
        want.extend_from_slice(&long);
        want.extend_from_slice(&[0x82, 3, b't', b'w', b'o']);
        let mut got = vec![0u8; want.len()];
        peer.read_exact(&mut got).await.unwrap();
        assert!(got == want, "the frames on the wire differ");
        assert_eq!(sink.written(), want.len() as u64);
        // A frame header of each length form.
        for (len, header) in [
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65_535, vec![0x82, 126, 255, 255]),
            (65_536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            assert_eq!(super::frame_header(len, None)[..], header[..], "{len}");
        }
    }

    /// A client's long message is one frame too, masked with a key of its own, the mask
    /// applied across the pieces it is masked in (64 KiB each); and a server reads it
    /// back whole.
    #[tokio::test]
    async fn a_long_message_from_a_client_is_one_masked_frame() {
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let t = WsTransport::from_raw_socket(ours, Role::Client, 1 << 20).await;
        let (mut sink, _source) = t.split();
        let long: Vec<u8> = (0..150_001u32).map(|i| (i % 253) as u8).collect();
        sink.send(Bytes::from(long.clone())).await.unwrap();
        let mut header = [0u8; 14];
        peer.read_exact(&mut header).await.unwrap();
        assert_eq!(header[..2], [0x82, 0x80 | 127], "final, binary, masked");
        assert_eq!(header[2..10], (long.len() as u64).to_be_bytes());
        let key = [header[10], header[11], header[12], header[13]];
        let mut payload = vec![0u8; long.len()];
        peer.read_exact(&mut payload).await.unwrap();
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
        assert!(payload == long, "the payload unmasked differs");

        // Between two ends: the server unmasks it.
        let (a, b) = tokio::io::duplex(1 << 20);
        let server = WsTransport::from_raw_socket(a, Role::Server, 1 << 20).await;
        let client = WsTransport::from_raw_socket(b, Role::Client, 1 << 20).await;
        let (_server_sink, mut source) = server.split();
        let (mut sink, _client_source) = client.split();
        sink.send(Bytes::from(long.clone())).await.unwrap();
        let got = std::future::poll_fn(|cx| source.poll_recv(cx)).await;
        assert!(got.unwrap().unwrap() == long);
    }

    /// A large message on a pipe that is read a little at a time: the flush stays pending,
    /// but `written` grows with every read (the write-stall limit counts it as progress).
    #[tokio::test]
    async fn written_counts_the_bytes_of_a_message_as_the_peer_takes_them() {
        let (ours, mut peer) = tokio::io::duplex(4096);
        let t = WsTransport::from_raw_socket(ours, Role::Server, 1 << 20).await;
        let (mut sink, _source) = t.split();
        assert_eq!(sink.written(), 0);
        sink.feed(vec![7u8; 64 * 1024].into()).await.unwrap();
        assert!(sink.flush().now_or_never().is_none(), "the pipe is full");
        let first = sink.written();
        assert!(first > 0 && first < 64 * 1024, "{first}");
        let mut chunk = [0u8; 1024];
        for _ in 0..4 {
            let n = peer.read(&mut chunk).await.unwrap();
            assert!(n > 0);
        }
        assert!(sink.flush().now_or_never().is_none());
        assert!(sink.written() > first, "{} after {first}", sink.written());
    }

    /// A long message counts as queued (`MessageSink::queued`, which a listener's
    /// connection pays from its send budget) from the moment the sink takes it until the
    /// peer has taken its last byte; the sink tells the send budget it was given
    /// (`MessageSink::send_budget`), and a transport without one tells none.
    #[tokio::test]
    async fn a_long_message_is_queued_until_the_peer_takes_it_and_tells_its_send_budget() {
        const MAX: usize = 1 << 20;
        const LEN: usize = 64 * 1024;
        let budget = ByteBudget::new(MAX);
        let (ours, mut peer) = tokio::io::duplex(4096);
        let t = WsTransport::from_raw_socket(ours, Role::Server, MAX).await;
        let (mut sink, _source) = t.with_send_budget(budget.clone()).split();
        let paid = sink.send_budget().unwrap().try_acquire(1000).unwrap();
        assert_eq!(budget.available(), MAX - 1000);
        drop(paid);

        assert_eq!(sink.queued(), 0);
        sink.feed(vec![7u8; LEN].into()).await.unwrap();
        assert_eq!(sink.queued(), LEN);
        assert!(sink.flush().now_or_never().is_none(), "the pipe is full");
        // The rest of the frame, its 10-byte header included, is still queued.
        let left = sink.queued();
        assert!(left > 0 && left < LEN, "{left}");
        assert_eq!(left as u64 + sink.written(), LEN as u64 + 10);
        let mut frame = vec![0u8; LEN + 10];
        let (read, flushed) = tokio::join!(peer.read_exact(&mut frame), sink.flush());
        read.unwrap();
        flushed.unwrap();
        assert_eq!(sink.queued(), 0);

        let (ours, _peer) = tokio::io::duplex(4096);
        let plain = WsTransport::from_raw_socket(ours, Role::Server, MAX).await;
        assert!(plain.split().0.send_budget().is_none());
    }
}
