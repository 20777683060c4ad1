//! The harness's side of the sockets: library connections whose socket it can also write
//! to and cut (a second descriptor of the same socket), raw frames, the transport that
//! stops reading, and the side client that measures latency.

use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use bunite_rpc::transport::byte_stream::ByteStream;
use bunite_rpc::transport::ws::WsTransport;
use bunite_rpc::transport::{MessageSource, Transport, TransportError};
use bunite_rpc::wire::{DecodeLimits, Decoder, Encoder, Frame, Hello, PROTOCOL_VERSION};
use bunite_rpc::{Client, Connection, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Bytes;
use tokio_util::sync::CancellationToken;

/// The protocol's default `maxBytes`: the largest message the server accepts.
pub const MAX_BYTES: usize = 64 << 20;

/// What partial messages are made of (msgpack `nil`s).
static NILS: [u8; 64 * 1024] = [0xc0; 64 * 1024];

/// Which listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Ws,
}

impl Kind {
    pub fn of(i: u64) -> Kind {
        if i % 2 == 0 {
            Kind::Tcp
        } else {
            Kind::Ws
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "TCP",
            Kind::Ws => "WebSocket",
        }
    }
}

/// SplitMix64: the harness's only randomness (no dependency), seeded per connection.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// In `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The HTTP upgrade request of a WebSocket client.
pub fn upgrade_request(addr: SocketAddr) -> Vec<u8> {
    format!(
        "GET /rpc HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Sends the upgrade request and reads the response byte by byte (the server's first
/// message follows at once and must stay unread).
async fn ws_handshake(s: &mut TcpStream, addr: SocketAddr) -> Result<()> {
    s.write_all(&upgrade_request(addr)).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 4096 {
            bail!("WebSocket response too long");
        }
        head.push(s.read_u8().await?);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!(
            "WebSocket upgrade refused: {}",
            String::from_utf8_lossy(&head)
        );
    }
    Ok(())
}

/// A client connection made with the library, plus a second descriptor of its socket
/// (`raw`): the harness writes raw bytes through it and cuts the socket with it.
pub struct Peer {
    pub conn: Connection,
    pub raw: TcpStream,
    pub kind: Kind,
}

/// Connects a library client to the server's `kind` listener; `stall`, when given, stops
/// the client's reads once it is set (see [`Stall`]).
pub async fn open(kind: Kind, addr: SocketAddr, stall: Option<Arc<AtomicBool>>) -> Result<Peer> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let std = s.into_std()?;
    let raw = TcpStream::from_std(std.try_clone()?)?;
    let mut s = TcpStream::from_std(std)?;
    let conn = match kind {
        Kind::Tcp => connect(ByteStream::tcp(s), stall),
        Kind::Ws => {
            ws_handshake(&mut s, addr).await?;
            connect(
                WsTransport::from_raw_socket(s, Role::Client, MAX_BYTES).await,
                stall,
            )
        }
    };
    Ok(Peer { conn, raw, kind })
}

fn connect<T: Transport>(t: T, stall: Option<Arc<AtomicBool>>) -> Connection {
    match stall {
        Some(flag) => Connection::new(Stall { inner: t, flag }),
        None => Connection::new(t),
    }
}

impl Peer {
    pub async fn counter(&self) -> Result<Client> {
        Ok(self.conn.bootstrap_name("interop.counter", None).await?)
    }

    /// Writes the start of one message of `len` bytes (its length prefix, or its WebSocket
    /// frame header, masked with a zero key) and then `body` bytes of it, never the rest.
    pub async fn write_partial(&mut self, len: usize, body: usize) -> Result<()> {
        self.raw.write_all(&message_header(self.kind, len)).await?;
        let mut left = body.min(len);
        while left > 0 {
            let n = left.min(NILS.len());
            self.raw.write_all(&NILS[..n]).await?;
            left -= n;
        }
        Ok(())
    }

    /// Cuts the socket: FIN both ways, or a reset (`SO_LINGER` 0) once the library's
    /// descriptor closes too. The library connection then sees its transport end.
    pub fn cut(self, reset: bool) {
        cut(self.raw, reset);
        drop(self.conn);
    }
}

/// Cuts a socket (see [`Peer::cut`]).
pub fn cut(raw: TcpStream, reset: bool) {
    if reset {
        // Deprecated because a non-zero linger blocks on close; zero does not.
        #[allow(deprecated)]
        let _ = raw.set_linger(Some(Duration::ZERO));
    }
    if let Ok(std) = raw.into_std() {
        let _ = std.shutdown(Shutdown::Both);
    }
}

/// The header of one client-to-server message of `len` bytes: a 4-byte big-endian length,
/// or a final binary WebSocket frame header, masked with the key 0 (so the payload is sent
/// as is).
pub fn message_header(kind: Kind, len: usize) -> Vec<u8> {
    match kind {
        Kind::Tcp => (len as u32).to_be_bytes().to_vec(),
        Kind::Ws => {
            let mut h = vec![0x82, 0x80 | 127];
            h.extend((len as u64).to_be_bytes());
            h.extend([0u8; 4]);
            h
        }
    }
}

/// Our `hello`, encoded.
pub fn hello() -> Vec<u8> {
    let mut out = Vec::new();
    let hello = Hello {
        v: PROTOCOL_VERSION,
        mode: "native".into(),
        features: Vec::new(),
        max_bytes: MAX_BYTES as u64,
        origin: "chaos attacker".into(),
    };
    Encoder::new().encode_frame(&Frame::Hello(hello), &mut out);
    out
}

/// The frame prefix of `call {op, id:1, target:{kind:"cap", id:2}, method:"m", args}` in
/// hand-built msgpack (two record definitions), the args following.
fn call_with_args(args: &[u8]) -> Vec<u8> {
    let mut m = hex("d4724095 a26f70 a26964 a6746172676574 a66d6574686f64 a461726773");
    m.extend(hex(
        "a463616c6c 01 d4724192a46b696e64a26964 a3636170 02 a16d",
    ));
    m.extend_from_slice(args);
    m
}

fn hex(s: &str) -> Vec<u8> {
    let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    s.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap_or("00"), 16).unwrap_or(0))
        .collect()
}

fn array_of(n: usize) -> Vec<u8> {
    let mut h = vec![0xdd];
    h.extend((n as u32).to_be_bytes());
    h
}

/// A `call` of exactly `size` bytes whose args are an array of `nil`s.
pub fn nils(size: usize) -> Vec<u8> {
    let n = size - call_with_args(&array_of(0)).len();
    let mut args = array_of(n);
    args.resize(args.len() + n, 0xc0);
    call_with_args(&args)
}

/// A `call` whose args are one record defined in `slot` with `keys` distinct keys of `len`
/// bytes each, every value `nil`: a definition the server keeps in that slot for the
/// connection's life (PROTOCOL §3.3).
pub fn wide_record(slot: u8, keys: usize, len: u8) -> Vec<u8> {
    let mut args = vec![0xd4, 0x72, slot];
    args.extend(array_of(keys));
    for k in 0..keys {
        args.extend([0xd9, len]);
        args.extend(format!("{slot:02x}{k:0>width$}", width = usize::from(len) - 2).bytes());
    }
    args.resize(args.len() + keys, 0xc0);
    call_with_args(&args)
}

/// A `call` of at most `size` bytes whose args are an array of 15-key records of small
/// ints: one definition, then one-byte references (16 bytes a record).
pub fn records(size: usize) -> Vec<u8> {
    let keys: Vec<u8> = (b'a'..=b'o').flat_map(|k| [0xa1, k]).collect();
    let n = (size - call_with_args(&array_of(0)).len() - keys.len() - 3) / 16;
    let mut args = array_of(n);
    args.extend([0xd4, 0x72, 0x42, 0x9f]);
    args.extend(keys);
    args.extend([1u8; 15]);
    for _ in 1..n {
        args.push(0x42);
        args.extend([1u8; 15]);
    }
    call_with_args(&args)
}

/// Whether `msg` is a goaway; its error code if it has one.
pub fn goaway_of(decoder: &mut Decoder, msg: &[u8]) -> Option<String> {
    match decoder.decode_frame(msg) {
        Ok(Frame::Goaway(g)) => Some(g.error.map(|e| e.code).unwrap_or_default()),
        _ => None,
    }
}

pub fn decoder() -> Decoder {
    Decoder::new(DecodeLimits::default())
}

/// A transport whose source stops reading for good once `flag` is set: a peer that calls
/// and never reads its replies.
pub struct Stall<T> {
    inner: T,
    flag: Arc<AtomicBool>,
}

pub struct StallSource<S> {
    inner: S,
    flag: Arc<AtomicBool>,
}

impl<T: Transport> Transport for Stall<T> {
    type Sink = T::Sink;
    type Source = StallSource<T::Source>;

    fn split(self) -> (T::Sink, StallSource<T::Source>) {
        let (sink, source) = self.inner.split();
        let source = StallSource {
            inner: source,
            flag: self.flag,
        };
        (sink, source)
    }
}

impl<S: MessageSource> MessageSource for StallSource<S> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, TransportError>> {
        if self.flag.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        self.inner.poll_recv(cx)
    }

    fn pause(&mut self) {
        self.inner.pause();
    }

    fn poll_linger(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.poll_linger(cx)
    }
}

/// Latencies seen by the side client.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub calls: usize,
    pub errors: usize,
    pub worst: Duration,
    pub sorted: Vec<Duration>,
}

impl Latency {
    pub fn p99(&self) -> Duration {
        let i = (self.sorted.len() * 99 / 100).min(self.sorted.len().saturating_sub(1));
        self.sorted.get(i).copied().unwrap_or_default()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} calls, {} failed, worst {:.1} ms, p99 {:.1} ms",
            self.calls,
            self.errors,
            ms(self.worst),
            ms(self.p99())
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A client on its own TCP connection calling `interop.counter.get` one after another
/// (1 ms apart) until stopped, on its own thread and runtime: what it measures is the
/// server's answer, not how busy the harness's own runtime is (the attackers of a scenario
/// run there, and writing or masking a 64 MiB frame holds a worker thread for a while).
pub struct SideClient {
    stop: CancellationToken,
    done: tokio::sync::oneshot::Receiver<Result<Latency>>,
}

impl SideClient {
    pub async fn start(addr: SocketAddr) -> Result<SideClient> {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let (ready_tx, ready) = tokio::sync::oneshot::channel::<Result<()>>();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("side-client".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                let result = rt.block_on(side_calls(addr, stopped, ready_tx));
                let _ = done_tx.send(result);
            })?;
        ready
            .await
            .map_err(|_| anyhow!("the side client's thread ended"))??;
        Ok(SideClient { stop, done })
    }

    pub async fn stop(self) -> Result<Latency> {
        self.stop.cancel();
        self.done
            .await
            .map_err(|_| anyhow!("the side client's thread ended"))?
    }
}

/// The side client's loop: connects, says when it is ready, calls until `stop`.
async fn side_calls(
    addr: SocketAddr,
    stop: CancellationToken,
    ready: tokio::sync::oneshot::Sender<Result<()>>,
) -> Result<Latency> {
    let opened = async {
        let peer = open(Kind::Tcp, addr, None).await?;
        let counter = peer.counter().await?;
        anyhow::Ok((peer, counter))
    };
    let (peer, counter) = match opened.await {
        Ok(opened) => {
            let _ = ready.send(Ok(()));
            opened
        }
        Err(e) => {
            let _ = ready.send(Err(anyhow!("side client: {e:#}")));
            return Err(e);
        }
    };
    let mut lat = Latency::default();
    while !stop.is_cancelled() {
        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            counter.call_value("get", Value::Undefined),
        )
        .await;
        let d = t.elapsed();
        lat.calls += 1;
        lat.worst = lat.worst.max(d);
        lat.sorted.push(d);
        if !matches!(r, Ok(Ok(_))) {
            lat.errors += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    lat.sorted.sort();
    drop(counter);
    peer.conn.close();
    peer.conn.closed().await;
    Ok(lat)
}
