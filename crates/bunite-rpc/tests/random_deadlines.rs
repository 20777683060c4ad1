//! Seeded random cases on a paused clock for the timers `random_timers.rs` does not reach:
//! the receive deadline of a message stalled part way, the send deadline and the
//! write-stall limit of a peer that stops reading, and [`CLOSE_GRACE`], the time a closed
//! or drained connection gives a peer that reads nothing (`docs/RELIABILITY.md`, "Receive
//! and send deadlines and the close grace").
//!
//! Each case is one seed, on [`run_paused`]: a connection over the byte stream on an
//! in-process duplex pipe, its peer raw bytes written and read by the case, which draws
//! one of three kinds:
//!
//! - **receive**: a receive deadline (grace of 1 ms to a minute, a minimum rate of 1 B/s
//!   to 256 KiB/s), sometimes a receive budget; one to three `echo` calls of up to 300 KB
//!   cut into pieces sent at random times, the last cut short inside its message in most
//!   cases. What must hold: the connection is cut off exactly when the deadline's rule
//!   (grace from the message's first stall, a second per `min_rate` bytes that arrived
//!   since) says, never otherwise, with a goaway `deadline_exceeded` after the answers
//!   to the messages that arrived whole; its pending bootstrap fails `unavailable` with
//!   the same words; the budget comes back whole.
//! - **send**: short calls for long answers (a few hundred KB, over a 4 KiB pipe) that the
//!   peer reads part of, at a pace, and then stops reading; a write-stall limit, a send
//!   deadline, or both, with or without a send budget. What must hold: the connection
//!   ends no earlier than the first limit can pass given the bytes the peer took and when,
//!   nor later than the first sure to pass, as `WriteStalled` or `SlowReader` (whose
//!   `taken` and `after` are checked against the rule), without a goaway; nothing is left
//!   waiting to be sent and the budget is whole.
//! - **close grace**: one or two connections whose peers read nothing, holding answers
//!   longer than the pipe and the sink take and calls still running; then a close, a
//!   drain with a grace, or a `ConnectionSet` stop; each peer starts reading again at a
//!   random time or never. What must hold: each connection shuts down when the close,
//!   the drain's end or its write-stall limit says, and finishes (`closed`) once its peer
//!   has read everything and its source has lingered (for [`LINGER_QUIET`], the peer
//!   sending nothing more), or [`CLOSE_GRACE`] after its shutdown, whichever comes first;
//!   a stop returns when the last one finishes; a peer that read again gets every answer
//!   and the goaway.
//!
//! [`random_websocket_receive_deadlines_on_a_paused_clock`] draws receive cases over a
//! listener's WebSocket connection instead (`testing::ws_listener_side` on the pipe): each
//! message one frame or two to five fragments, sometimes with pings between them, the
//! stream cut at random points (often inside a frame's header). There what arrives is a
//! message's data, not its frames' headers nor the pings, and a message in fragments is
//! told as long as the frame bound until its last.
//!
//! Times within a few milliseconds of each other (timer rounding) may happen in either
//! order: every order is tried ([`every_way`]). The harness then checks each connection
//! clean and idle, and no task left.
//!
//! `BUNITE_OPS_SEEDS=N` runs seeds `0..N` (or `A..B`), `BUNITE_OPS_SEED=S` seed S alone.
#![cfg(feature = "byte-stream")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bunite_rpc::connection::CLOSE_GRACE;
use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::budget::FREE_PER_CONNECTION;
use bunite_rpc::transport::byte_stream::{ByteStream, HIGH_WATER};
use bunite_rpc::transport::{
    ByteBudget, ReceiveDeadline, Transport, TransportError, LINGER, LINGER_QUIET,
};
use bunite_rpc::wire::{CallId, CapId, Decoder, Encoder, Frame, ResultFrame, WireStatus};
use bunite_rpc::{
    CapDef, Client, Code, Connection, ConnectionBuilder, ConnectionSet, Disconnect, Error, Limits,
    MethodDef, Record, Value,
};
use common::seeded::{each_seed, Rng};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Seeds of a plain run.
const SEEDS: u64 = 2000;

/// What tokio's timer wheel may add to a timer (it rounds up to the millisecond), over the
/// few timers an outcome goes through; times closer than this may come in either order.
const EPS: Duration = Duration::from_millis(4);

/// How long a case may take on the paused clock: far beyond its longest timer (a receive
/// deadline at 1 B/s is days).
const CASE_BOUND: Duration = Duration::from_secs(365 * 24 * 3600);

/// The pipe of the send and close-grace cases: far below the answers.
const PIPE: usize = 4096;

#[test]
fn random_deadlines_on_a_paused_clock() {
    let n = each_seed("random_deadlines", SEEDS, CASE_BOUND, run_paused, case);
    let tally = TALLY.lock().unwrap();
    eprintln!("random_deadlines: {n} cases: {tally:?}");
}

/// Seeds of a plain run of the WebSocket receive cases.
#[cfg(feature = "ws")]
const WS_SEEDS: u64 = 1000;

/// The receive cases over a listener's WebSocket connection (on an in-memory pipe): the
/// peer sends each message as one frame or in fragments, sometimes with pings between
/// them, cut at random points (often inside a frame's header) and sent at random times.
/// What arrives, by the rule, is a message's data: not its headers, nor the pings.
#[cfg(feature = "ws")]
#[test]
fn random_websocket_receive_deadlines_on_a_paused_clock() {
    let test = "random_websocket_receive_deadlines";
    let n = each_seed(test, WS_SEEDS, CASE_BOUND, run_paused, |seed| async move {
        receive(&mut Rng(seed), Framing::Ws).await;
    });
    let tally = TALLY.lock().unwrap();
    eprintln!("random_websocket_receive_deadlines: {n} cases: {tally:?}");
}

/// What the cases drove, for the run's line.
#[derive(Debug, Default)]
struct Tally {
    /// Receive cases cut off by the deadline, and ones whose messages all arrived, over
    /// the byte stream and over WebSocket.
    receive_cut: [u64; 2],
    receive_whole: [u64; 2],
    /// WebSocket cut-offs while the stream stood inside a frame's header, or inside a
    /// ping.
    ws_cut_in_a_header: u64,
    ws_cut_in_a_ping: u64,
    /// Send cases ended by the write-stall limit, and by the send deadline.
    write_stalled: u64,
    slow_reader: u64,
    /// Connections of the close-grace cases that finished as their peer read everything,
    /// at the close grace, or by the write-stall limit.
    delivered: u64,
    gave_up: u64,
    stalled_first: u64,
}

static TALLY: Mutex<Tally> = Mutex::new(Tally {
    receive_cut: [0; 2],
    receive_whole: [0; 2],
    ws_cut_in_a_header: 0,
    ws_cut_in_a_ping: 0,
    write_stalled: 0,
    slow_reader: 0,
    delivered: 0,
    gave_up: 0,
    stalled_first: 0,
});

async fn case(seed: u64) {
    let mut rng = Rng(seed);
    match rng.below(3) {
        0 => receive(&mut rng, Framing::Bytes).await,
        1 => send(&mut rng).await,
        _ => close_grace(&mut rng).await,
    }
}

/// Milliseconds from 1 to `max`, spread over the orders of magnitude.
fn ms(rng: &mut Rng, max: u64) -> u64 {
    let digits = rng.below(u64::from(max.ilog10()) + 1) as u32;
    let top = 10u64.pow(digits + 1).min(max);
    1 + rng.below(top)
}

fn millis(rng: &mut Rng, max: u64) -> Duration {
    Duration::from_millis(ms(rng, max))
}

// ---------------------------------------------------------------------------------------
// Orders of near times.

/// The choices of one run of a model: each comparison of two times within [`EPS`] of each
/// other takes the next bit of `pattern`.
struct Ties {
    pattern: u32,
    used: u32,
}

impl Ties {
    /// Whether `a` comes before `b` (either way when they are within [`EPS`]).
    fn before(&mut self, a: Instant, b: Instant) -> bool {
        if a + EPS < b {
            true
        } else if b + EPS < a {
            false
        } else {
            let bit = (self.pattern >> self.used.min(31)) & 1;
            self.used += 1;
            bit == 1
        }
    }
}

/// Every outcome the model `f` gives, each near tie taken both ways.
fn every_way<T>(mut f: impl FnMut(&mut Ties) -> T) -> Vec<T> {
    let mut out = Vec::new();
    let (mut pattern, mut most) = (0u32, 0u32);
    loop {
        let mut ties = Ties { pattern, used: 0 };
        out.push(f(&mut ties));
        most = most.max(ties.used).min(12);
        pattern += 1;
        if pattern >= 1 << most {
            return out;
        }
    }
}

// ---------------------------------------------------------------------------------------
// The raw peer.

/// The peer's writing half, with its encoder (stateful: record shapes).
struct Wr {
    w: WriteHalf<DuplexStream>,
    enc: Encoder,
    framing: Framing,
}

impl Wr {
    async fn frame(&mut self, frame: &Frame) {
        let bytes = self.framing.message(&mut self.enc, frame);
        self.w.write_all(&bytes).await.unwrap();
    }
}

/// The peer's reading half, with its decoder and what it read of a frame (over WebSocket,
/// of a message).
struct Rd {
    r: ReadHalf<DuplexStream>,
    dec: Decoder,
    buf: Vec<u8>,
    framing: Framing,
    partial: Vec<u8>,
}

impl Rd {
    /// The next frame; `None` at the end of the stream (or a WebSocket close).
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            let taken = self
                .framing
                .take(&mut self.buf, &mut self.dec, &mut self.partial);
            if let Some(frame) = taken {
                return frame.ok();
            }
            if self.read(4096).await == 0 {
                return None;
            }
        }
    }

    /// Reads at most `most` bytes; how many (0 at the end).
    async fn read(&mut self, most: usize) -> usize {
        let mut chunk = vec![0u8; most];
        let n = self.r.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Every whole frame read so far.
    fn frames(&mut self) -> Vec<Frame> {
        std::iter::from_fn(|| take_frame(&mut self.buf, &mut self.dec)).collect()
    }
}

/// A connection built from `builder`, serving `test.sized`, over `transport`, with the raw
/// peer on `end` framing its messages as `framing`: hellos exchanged, `test.sized`
/// bootstrapped (its cap-id). The connection also bootstraps a name from the peer, which
/// never answers: the caller that waits as long as the connection lives (its outcome, and
/// when).
async fn open(
    builder: ConnectionBuilder,
    transport: impl Transport,
    end: DuplexStream,
    framing: Framing,
) -> (Connection, Wr, Rd, CapId, Pending, CallId) {
    let (def, imp) = sized_cap();
    let conn = builder.serve(def, imp).connect(transport);
    track(&conn);
    let (r, w) = tokio::io::split(end);
    let mut wr = Wr {
        w,
        enc: Encoder::new(),
        framing,
    };
    let mut rd = Rd {
        r,
        dec: Decoder::new(Default::default()),
        buf: Vec::new(),
        framing,
        partial: Vec::new(),
    };
    wr.frame(&Frame::Hello(raw_hello())).await;
    assert!(matches!(rd.frame().await, Some(Frame::Hello(_))));
    let boot = Record::new().with("name", "test.sized").into();
    wr.frame(&call_frame(CapId(0), 1, "bootstrap", boot)).await;
    let cap = loop {
        match rd.frame().await.expect("the bootstrap's answer") {
            Frame::Result(r) if r.id == CallId(1) => match r.outcome {
                Ok(Value::CapRef(cap)) => break cap,
                other => panic!("bootstrap: {other:?}"),
            },
            _ => continue,
        }
    };
    let pending = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let def = CapDef::builder("raw.never").build();
            let r = conn.bootstrap(&def).await;
            (r, Instant::now())
        })
    };
    // Its frame is out before the case goes on.
    let boot_id = loop {
        match rd.frame().await.expect("the connection's bootstrap") {
            Frame::Call(c) if c.method == "bootstrap" => break c.id,
            _ => continue,
        }
    };
    (conn, wr, rd, cap, pending, boot_id)
}

type Pending = JoinHandle<(Result<Client, Error>, Instant)>;

/// When `conn` shut down (its close handlers ran), and a task that answers when
/// [`Connection::closed`] returned.
fn watch(conn: &Connection) -> (Arc<Mutex<Option<Instant>>>, JoinHandle<Instant>) {
    let at = Arc::new(Mutex::new(None));
    let slot = at.clone();
    conn.on_close(move || {
        slot.lock().unwrap().get_or_insert(Instant::now());
    });
    let conn = conn.clone();
    let finished = tokio::spawn(async move {
        conn.closed().await;
        Instant::now()
    });
    (at, finished)
}

/// The error of the connection's pending bootstrap, checked to have ended at `at` (within
/// [`EPS`]).
async fn pending_error(pending: Pending, at: Instant) -> Error {
    let (r, ended) = pending.await.unwrap();
    let e = match r {
        Ok(_) => panic!("the peer never answers the bootstrap"),
        Err(e) => e,
    };
    assert!(
        ended >= at && ended <= at + EPS,
        "the pending bootstrap ended {:?} after the shutdown: {e:?}",
        ended - at
    );
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(e.reason(), Some("peer_closing"), "{e:?}");
    e
}

fn within(t: Instant, from: Instant, to: Instant) -> bool {
    t >= from && t <= to + EPS
}

// ---------------------------------------------------------------------------------------
// The receive deadline.

/// How the bytes of a receive case ended, by the deadline's rule.
#[derive(Debug, Clone, PartialEq)]
enum Received {
    /// Cut off at `at`: the message under way had `after` (its deadline) and the connection
    /// says why in `message`; the messages before it arrived whole.
    Cut {
        at: Instant,
        message: String,
        whole: usize,
    },
    /// Every message arrived.
    Whole,
}

/// The message under way and its clock: its index, when it first stalled and how many of
/// the stream's bytes that count ([`Layout::arrived`]) had arrived then.
#[derive(Clone, Copy)]
struct Under {
    m: usize,
    start: Instant,
    at: u64,
}

/// The stream of a receive case as the receive deadline sees it.
#[derive(Debug)]
struct Layout {
    /// The bounds in the stream of each part the clock times on its own: the messages,
    /// and over WebSocket the pings between two of them.
    bounds: Vec<(usize, usize)>,
    /// Each part: from which point of the stream its length is known, and that length as
    /// the connection tells it (never, for a ping).
    known: Vec<(usize, u64)>,
    /// Each part: how many messages come before it.
    before: Vec<usize>,
    /// Over WebSocket, the frames of the stream (else `None`).
    frames: Option<Vec<WireFrame>>,
}

/// A WebSocket frame of a receive case's stream.
#[derive(Debug, Clone, Copy)]
struct WireFrame {
    /// Where it starts in the stream, and the lengths of its header and payload.
    at: usize,
    header: usize,
    payload: usize,
    /// A data frame (else a ping).
    data: bool,
}

impl Layout {
    /// The bytes of the stream's first `p` that count as arrived: every one over the byte
    /// stream; over WebSocket, the payload of data frames (not headers, not pings).
    fn arrived(&self, p: usize) -> u64 {
        let Some(frames) = &self.frames else {
            return p as u64;
        };
        frames
            .iter()
            .filter(|f| f.data)
            .map(|f| p.saturating_sub(f.at + f.header).min(f.payload) as u64)
            .sum()
    }

    /// The length of message `m` as the connection tells it once `p` bytes have arrived.
    fn len(&self, m: usize, p: usize) -> Option<u64> {
        let (from, len) = self.known[m];
        (p >= from).then_some(len)
    }
}

/// What the rule does to `pieces` (each: when it arrived, and the bytes of the stream
/// that had arrived with it) of a stream laid out as `layout`.
fn received(
    rule: ReceiveDeadline,
    layout: &Layout,
    pieces: &[(Instant, usize)],
    ties: &mut Ties,
) -> Received {
    let bounds = &layout.bounds;
    let mut under: Option<Under> = None;
    let mut arrived = 0;
    for j in 0..=pieces.len() {
        if let Some(u) = under {
            let allowed = rule.for_len(layout.arrived(arrived) - u.at);
            let at = u.start + allowed;
            let fires = match pieces.get(j) {
                Some(&(next, _)) => ties.before(at, next),
                None => true,
            };
            if fires {
                let e = TransportError::TooSlow {
                    after: allowed,
                    len: layout.len(u.m, arrived),
                };
                return Received::Cut {
                    at,
                    message: e.to_string(),
                    whole: layout.before[u.m],
                };
            }
        }
        let Some(&(t, after)) = pieces.get(j) else {
            break;
        };
        arrived = after;
        under = match bounds.iter().position(|&(s, e)| s < arrived && arrived < e) {
            Some(m) if under.is_some_and(|u| u.m == m) => under,
            Some(m) => Some(Under {
                m,
                start: t,
                at: layout.arrived(arrived),
            }),
            None => None,
        };
    }
    Received::Whole
}

/// The largest message of the WebSocket receive cases' listener.
const WS_MAX_BYTES: usize = 1 << 20;

/// The size a WebSocket connection tells for a message in fragments (its size is not
/// known until its last): its frame bound, `max_bytes` and the 64 bytes of room tungstenite
/// is given for a wrapper (`transport/ws.rs`, `frame_bound`).
const WS_FRAME_BOUND: u64 = WS_MAX_BYTES as u64 + 64;

/// The frames of one message (`payload`) from a WebSocket client, drawn: one frame, or two
/// to five fragments cut at random points, sometimes with pings between them. Appended to
/// `stream`, with each frame in `frames`; from where its length is known, and that length.
fn ws_message(
    rng: &mut Rng,
    payload: &[u8],
    stream: &mut Vec<u8>,
    frames: &mut Vec<WireFrame>,
) -> (usize, u64) {
    let s = stream.len();
    let mut cuts: Vec<usize> = match rng.chance(50) {
        true => vec![],
        false => (0..1 + rng.below(4))
            .map(|_| 1 + rng.below(payload.len() as u64 - 1) as usize)
            .collect(),
    };
    cuts.sort_unstable();
    cuts.dedup();
    cuts.push(payload.len());
    let pings = rng.chance(50);
    let mut from = 0;
    for (k, &cut) in cuts.iter().enumerate() {
        let fin = k + 1 == cuts.len();
        let opcode = if k == 0 { 0x2 } else { 0x0 };
        let header = ws_client_header(u8::from(fin) << 7 | opcode, cut - from);
        frames.push(WireFrame {
            at: stream.len(),
            header: header.len(),
            payload: cut - from,
            data: true,
        });
        stream.extend(header);
        stream.extend_from_slice(&payload[from..cut]);
        from = cut;
        if !fin && pings && rng.chance(60) {
            ws_ping(rng, stream, frames);
        }
    }
    // Known once the first header has arrived: the one frame's size, or the frame bound
    // standing in for a message in fragments.
    let first = frames.iter().find(|f| f.at == s).expect("its first frame");
    let len = match cuts.len() {
        1 => (stream.len() - s) as u64,
        _ => WS_FRAME_BOUND,
    };
    (s + first.header, len)
}

/// A client's ping of up to 125 bytes, appended to `stream` and `frames`.
fn ws_ping(rng: &mut Rng, stream: &mut Vec<u8>, frames: &mut Vec<WireFrame>) {
    let n = rng.below(126) as usize;
    let header = ws_client_header(0x89, n);
    frames.push(WireFrame {
        at: stream.len(),
        header: header.len(),
        payload: n,
        data: false,
    });
    stream.extend(header);
    stream.extend(std::iter::repeat_n(0x70, n));
}

/// A point inside (or just after) the header of one of `frames` that starts in
/// `from..to`.
fn in_a_header(rng: &mut Rng, frames: &[WireFrame], from: usize, to: usize) -> usize {
    let some: Vec<&WireFrame> = frames
        .iter()
        .filter(|f| (from..to).contains(&f.at))
        .collect();
    let f = some[rng.below(some.len() as u64) as usize];
    (f.at + 1 + rng.below(f.header as u64) as usize).min(to)
}

/// A receive case: the byte stream's (the first kind of [`case`]), or one over a
/// listener's WebSocket connection ([`random_websocket_receive_deadlines_on_a_paused_clock`]).
async fn receive(rng: &mut Rng, framing: Framing) {
    let grace = millis(rng, 60_000);
    let rate = [1u64, 1000, 64 * 1024, 256 * 1024][rng.below(4) as usize];
    let rule = ReceiveDeadline::new(grace, rate);
    let budget = rng.chance(40).then(|| ByteBudget::new(1 << 20));
    // A pipe that holds the whole stream: each piece arrives in one go (a piece cut in two
    // by a full pipe starts a message's clock with the part that fitted).
    let (a, b) = tokio::io::duplex(1 << 20);
    let limits = Limits {
        bootstrap_timeout: None,
        ..Limits::default()
    };
    let builder = Connection::builder().limits(limits);
    let (budget, (conn, mut wr, mut rd, cap, pending, _)) = match framing {
        Framing::Bytes => {
            let (ar, aw) = tokio::io::split(a);
            let mut transport = ByteStream::new(ar, aw).with_receive_deadline(Some(rule));
            if let Some(budget) = &budget {
                transport = transport.with_budget(budget.clone());
            }
            (budget, open(builder, transport, b, framing).await)
        }
        #[cfg(feature = "ws")]
        Framing::Ws => {
            // A listener's connection always has a receive budget: the default's size, or
            // 2 MiB. Not less: a message in fragments draws the frame bound (1 MiB) once 16
            // KiB of it have arrived, and a wait for the budget restarts its clock (the
            // buffers the connection keeps from earlier messages, paid from the budget,
            // make one wait for themselves to go), which the rule here does not model.
            let budget = ByteBudget::new(match budget {
                Some(_) => 2 << 20,
                None => 256 << 20,
            });
            let config = bunite_rpc::transport::ListenerConfig::default()
                .max_bytes(WS_MAX_BYTES)
                .receive_budget(budget.clone())
                .receive_deadline(Some(rule))
                .ping_interval(None);
            let transport = bunite_rpc::testing::ws_listener_side(a, &config).await;
            (Some(budget), open(builder, transport, b, framing).await)
        }
        #[cfg(not(feature = "ws"))]
        Framing::Ws => unreachable!("the WebSocket cases need feature ws"),
    };
    let (closed_at, finished) = watch(&conn);

    // The messages, and their bounds in the stream.
    let mut stream = Vec::new();
    let mut bounds = Vec::new();
    let mut known = Vec::new();
    let mut before = Vec::new();
    let mut frames = Vec::new();
    let mut sizes = Vec::new();
    for i in 0..1 + rng.below(3) {
        let n = match rng.below(3) {
            0 => rng.below(100),
            1 => rng.below(20_000),
            _ => rng.below(300_000),
        } as usize;
        let call = call_frame(cap, 2 + i, "echo", Value::Bin(vec![7; n]));
        if framing == Framing::Ws && rng.chance(25) {
            // A ping before the message: timed on its own while it arrives, by the grace
            // alone (nothing of it counts as arrived), and never told a length.
            let s = stream.len();
            ws_ping(rng, &mut stream, &mut frames);
            bounds.push((s, stream.len()));
            known.push((usize::MAX, 0));
            before.push(sizes.len());
        }
        let s = stream.len();
        let prefixed = length_prefixed(&mut wr.enc, &call);
        match framing {
            Framing::Bytes => {
                stream.extend(prefixed);
                // Known once its prefix has arrived.
                known.push((s + 4, (stream.len() - s) as u64));
            }
            Framing::Ws => known.push(ws_message(rng, &prefixed[4..], &mut stream, &mut frames)),
        }
        bounds.push((s, stream.len()));
        before.push(sizes.len());
        sizes.push(n);
    }
    // Most cases stop inside the last message (over WebSocket, often inside a header).
    let (s, e) = *bounds.last().unwrap();
    if rng.chance(70) {
        let at = match framing {
            Framing::Ws if rng.chance(30) => in_a_header(rng, &frames, s, e),
            _ => s + 1 + rng.below((e - s - 1) as u64) as usize,
        };
        stream.truncate(at);
    }
    let len = stream.len();
    let mut cuts: Vec<usize> = (0..rng.below(6))
        .map(|_| match framing {
            Framing::Ws if rng.chance(30) => in_a_header(rng, &frames, 0, len),
            _ => 1 + rng.below(len as u64) as usize,
        })
        .collect();
    cuts.push(stream.len());
    cuts.sort_unstable();
    cuts.dedup();
    let max_gap = grace.as_millis() as u64 * 2 + 10;
    let mut offsets = Vec::new();
    let mut offset = if rng.chance(50) { 0 } else { ms(rng, max_gap) };
    for _ in &cuts {
        offsets.push(Duration::from_millis(offset));
        offset += ms(rng, max_gap);
    }
    let layout = Layout {
        bounds,
        known,
        before,
        frames: (framing == Framing::Ws).then_some(frames),
    };

    // The writer: each piece at its time, while the connection reads. Over WebSocket the
    // peer stops writing as it reads the connection's close, and ends its side then (so
    // that the connection's close, which waits for the peer's end, finishes).
    let start = Instant::now();
    let (read_ended, mut ended) = tokio::sync::watch::channel(false);
    let (written, pieces_written) = tokio::sync::oneshot::channel();
    let writer = tokio::spawn(async move {
        let mut pieces = Vec::new();
        let mut from = 0;
        for (&cut, &offset) in cuts.iter().zip(&offsets) {
            match framing {
                Framing::Bytes => tokio::time::sleep_until(start + offset).await,
                Framing::Ws => tokio::select! {
                    _ = tokio::time::sleep_until(start + offset) => {}
                    _ = ended.wait_for(|e| *e) => break,
                },
            }
            let at = Instant::now();
            if wr.w.write_all(&stream[from..cut]).await.is_err() {
                break;
            }
            pieces.push((at, Instant::now(), cut));
            from = cut;
        }
        let _ = written.send(pieces);
        if framing == Framing::Ws {
            let _ = ended.wait_for(|e| *e).await;
            let _ = wr.w.shutdown().await;
        }
        wr
    });
    // The reader: every frame, and when the stream ended (over WebSocket, with the close).
    let reader = tokio::spawn(async move {
        let mut frames = Vec::new();
        while let Some(frame) = rd.frame().await {
            frames.push(frame);
        }
        let _ = read_ended.send(true);
        (frames, Instant::now())
    });
    let pieces = pieces_written.await.unwrap();
    // Past any deadline the last piece can leave.
    let last = pieces.last().map_or(start, |p| p.0);
    tokio::time::sleep_until(last + rule.for_len(len as u64) + Duration::from_secs(1)).await;
    let closed = *closed_at.lock().unwrap();
    for &(at, done, _) in &pieces {
        // A piece arrives at once while the connection reads (the model counts on it).
        assert!(
            closed.is_some_and(|c| c <= at) || done == at,
            "a piece took {:?} to write",
            done - at
        );
    }
    let arrivals: Vec<(Instant, usize)> = pieces
        .iter()
        .map(|&(at, _, cut)| (at, cut))
        .filter(|&(at, _)| closed.is_none_or(|c| at <= c))
        .collect();
    let outcomes = every_way(|ties| received(rule, &layout, &arrivals, ties));
    let fail = |why: String| -> ! {
        panic!(
            "{why}: rule {rule:?}, {layout:?}, pieces {pieces:?} (from {start:?}), \
             outcomes {outcomes:?}"
        )
    };
    if closed.is_none() {
        // Every message arrived: each was answered.
        if !outcomes.contains(&Received::Whole) {
            fail("not cut off".into());
        }
        TALLY.lock().unwrap().receive_whole[framing as usize] += 1;
        conn.close();
    }
    let (frames, eof) = reader.await.unwrap();
    let done = finished.await.unwrap();
    drop(writer.await.unwrap());
    let answers: Vec<(u64, Result<Value, String>)> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Result(r) => Some((r.id.0, r.outcome.clone().map_err(|e| e.code))),
            _ => None,
        })
        .collect();
    let goaway = frames.iter().find_map(|f| match f {
        Frame::Goaway(g) => Some(g.clone()),
        _ => None,
    });
    let whole = match closed {
        None => sizes.len(),
        Some(at) => {
            // The pending caller is told why. Of the outcomes (near ties taken both ways:
            // a deadline and the piece that would have moved it, or told the message's
            // length), the one cut off then, so, after the answers that came.
            let e = pending_error(pending, at).await;
            let told = match e.disconnect() {
                Some(Disconnect::ProtocolError { message }) => message.clone(),
                _ => fail(format!("cut off at {:?}: {e:?}", at - start)),
            };
            let Some(Received::Cut { message, whole, .. }) = outcomes.iter().find(|o| {
                matches!(o, Received::Cut { at: t, message, whole }
                    if within(at, *t, *t) && *message == told && *whole == answers.len())
            }) else {
                fail(format!("cut off at {:?}: {e:?}", at - start));
            };
            {
                let mut tally = TALLY.lock().unwrap();
                tally.receive_cut[framing as usize] += 1;
                // Where the stream stood: inside a frame's header, or a ping's.
                let stood = arrivals.iter().rev().find(|a| a.0 <= at).map_or(0, |a| a.1);
                for f in layout.frames.iter().flatten() {
                    if f.at < stood && stood < f.at + f.header {
                        tally.ws_cut_in_a_header += 1;
                    } else if !f.data && f.at < stood && stood < f.at + f.header + f.payload {
                        tally.ws_cut_in_a_ping += 1;
                    }
                }
            }
            // The peer is told why too.
            assert_eq!(e.message(), format!("protocol error: {message}"));
            let g = goaway.unwrap_or_else(|| fail("no goaway".into()));
            assert_eq!(g.reason.as_deref(), Some("deadline_exceeded"));
            let error = g.error.expect("the goaway's error");
            assert_eq!(error.code, "deadline_exceeded");
            assert_eq!(error.message.as_deref(), Some(message.as_str()));
            assert!(
                matches!(frames.last(), Some(Frame::Goaway(_))),
                "{frames:?}"
            );
            // Delivered at once: the peer reads. The connection finishes once its source
            // has lingered (`MessageSource::poll_linger`): over the byte stream, until the
            // peer has sent nothing for `LINGER_QUIET` (the writer goes on with its pieces),
            // for `LINGER` at most; over WebSocket the sink's close lingered already.
            let lingered = match framing {
                Framing::Bytes => {
                    let last = pieces.iter().map(|p| p.1).filter(|&t| t >= at).max();
                    (last.unwrap_or(at) + LINGER_QUIET).min(at + LINGER)
                }
                Framing::Ws => at,
            };
            assert!(
                within(eof, at, at) && within(done, lingered, lingered),
                "{eof:?} {done:?}, lingered until {lingered:?}"
            );
            *whole
        }
    };
    let expected: Vec<(u64, Result<Value, String>)> = (0..whole)
        .map(|i| (2 + i as u64, Ok(Value::Bin(vec![7; sizes[i]]))))
        .collect();
    assert_eq!(
        answers, expected,
        "the answers to the messages that arrived"
    );
    let stats = conn.stats();
    assert!(stats.is_idle(), "{stats:?}");
    if let Some(budget) = budget {
        assert_eq!(budget.available(), budget.limit(), "the receive budget");
    }
}

/// A message under way is not timed while the connection itself does not read it (too much
/// of its answers waits to be sent): the peer can send no faster than we read, so that time
/// is ours. Here the message stalls, then the connection stops reading for 9.5 s while the
/// peer takes none of two long answers; the message's rule (1 s, then a second per 1,000
/// bytes) would have cut it off at the first read after, had that time been the peer's.
/// Over the byte stream, and over WebSocket below.
#[test]
fn a_message_is_not_timed_while_the_connection_does_not_read() {
    run_paused(async {
        let (a, b) = tokio::io::duplex(PIPE);
        let (ar, aw) = tokio::io::split(a);
        let transport = ByteStream::new(ar, aw).with_receive_deadline(Some(not_read_rule()));
        let (def, imp) = later_cap();
        let conn = Connection::builder()
            .limits(not_read_limits())
            .serve(def, imp)
            .connect(transport);
        not_read_case(conn, b, Framing::Bytes).await;
    });
}

/// [`a_message_is_not_timed_while_the_connection_does_not_read`] over a listener's
/// WebSocket connection: the peer writes a client's frames by hand (masked with a zero
/// key, so the payload is as it is) and reads the server's.
#[cfg(feature = "ws")]
#[test]
fn a_websocket_message_is_not_timed_while_the_connection_does_not_read() {
    use bunite_rpc::testing::ws_listener_side;
    use bunite_rpc::transport::ListenerConfig;
    run_paused(async {
        let (a, b) = tokio::io::duplex(PIPE);
        let config = ListenerConfig::default()
            .max_bytes(1 << 20)
            .receive_deadline(Some(not_read_rule()))
            .ping_interval(None);
        let (def, imp) = later_cap();
        let conn = Connection::builder()
            .limits(not_read_limits())
            .serve(def, imp)
            .connect(ws_listener_side(a, &config).await);
        not_read_case(conn, b, Framing::Ws).await;
    });
}

/// A ping between two messages that stalls part way is timed on its own; the message whose
/// first header comes with the ping's end starts its own clock at its own first stall (it
/// went on with the ping's: started at the ping's stall and counting its own bytes since,
/// it was cut off at 1.1 s here instead of 1.9 s). Found by
/// [`random_websocket_receive_deadlines_on_a_paused_clock`].
#[cfg(feature = "ws")]
#[test]
fn a_websocket_message_after_a_stalled_ping_has_a_clock_of_its_own() {
    use bunite_rpc::testing::ws_listener_side;
    use bunite_rpc::transport::ListenerConfig;
    run_paused(async {
        let (a, b) = tokio::io::duplex(1 << 20);
        // 1 s, then a second per 1,000 bytes.
        let rule = ReceiveDeadline::new(Duration::from_secs(1), 1000);
        let config = ListenerConfig::default()
            .max_bytes(1 << 20)
            .receive_deadline(Some(rule))
            .ping_interval(None);
        let limits = Limits {
            bootstrap_timeout: None,
            ..Limits::default()
        };
        let builder = Connection::builder().limits(limits);
        let transport = ws_listener_side(a, &config).await;
        let (conn, mut wr, mut rd, cap, pending, _) =
            open(builder, transport, b, Framing::Ws).await;
        let (closed_at, finished) = watch(&conn);
        let start = Instant::now();
        // A ping of 10 bytes: 3 bytes of its header, then nothing for 900 ms.
        let mut ping = ws_client_header(0x89, 10);
        ping.extend_from_slice(&[0x70; 10]);
        wr.w.write_all(&ping[..3]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
        // The rest of the ping, and a message of 20 KB as one frame: its header and 100
        // bytes of its payload. Its clock starts now, with nothing of it after.
        let call = call_frame(cap, 2, "echo", Value::Bin(vec![7; 20_000]));
        let payload = &length_prefixed(&mut wr.enc, &call)[4..];
        let mut message = ws_client_header(0x82, payload.len());
        let header = message.len();
        message.extend_from_slice(payload);
        let mut piece = ping[3..].to_vec();
        piece.extend_from_slice(&message[..header + 100]);
        wr.w.write_all(&piece).await.unwrap();
        let reader = tokio::spawn(async move {
            let mut frames = Vec::new();
            while let Some(frame) = rd.frame().await {
                frames.push(frame);
            }
            frames
        });
        tokio::time::sleep_until(start + Duration::from_secs(10)).await;
        let at = closed_at.lock().unwrap().expect("cut off");
        assert_eq!(
            at - start,
            Duration::from_millis(1900),
            "the message's grace from its own first stall"
        );
        let e = pending_error(pending, at).await;
        let too_slow = TransportError::TooSlow {
            after: Duration::from_secs(1),
            len: Some(message.len() as u64),
        };
        let cause = Disconnect::ProtocolError {
            message: too_slow.to_string(),
        };
        assert_eq!(e.disconnect(), Some(&cause), "{e:?}");
        wr.w.shutdown().await.unwrap();
        let frames = reader.await.unwrap();
        assert!(
            matches!(frames.last(), Some(Frame::Goaway(g)) if g.reason.as_deref() == Some("deadline_exceeded")),
            "{frames:?}"
        );
        finished.await.unwrap();
    });
}

/// The rule of the two tests above: 1 s, then a second per 1,000 bytes.
fn not_read_rule() -> ReceiveDeadline {
    ReceiveDeadline::new(Duration::from_secs(1), 1000)
}

/// The limits of the two tests above: reading stops above 64 KiB unsent, and nothing else
/// ends the connection.
fn not_read_limits() -> Limits {
    Limits {
        max_unsent_bytes: 64 * 1024,
        write_stall_timeout: None,
        send_deadline: None,
        bootstrap_timeout: None,
        ..Limits::default()
    }
}

/// `test.later`: `later` answers 200 KB after 500 ms, `echo` its arguments.
fn later_cap() -> (Arc<CapDef>, Arc<dyn bunite_rpc::CapImpl>) {
    let def = CapDef::builder("test.later")
        .method(MethodDef::call("later"))
        .method(MethodDef::call("echo"))
        .build();
    let imp = DynCap::new()
        .call("later", |_, _| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok(Value::Bin(vec![5; 200_000]))
        })
        .call("echo", |args, _| async move { Ok(args) })
        .build();
    (def, imp)
}

/// How a raw peer frames its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// A 4-byte length before each (the byte stream).
    Bytes,
    /// One WebSocket binary frame each, a client's: masked, with a zero key.
    Ws,
}

impl Framing {
    /// The bytes of one message.
    fn message(self, enc: &mut Encoder, frame: &Frame) -> Vec<u8> {
        let prefixed = length_prefixed(enc, frame);
        match self {
            Framing::Bytes => prefixed,
            Framing::Ws => {
                let payload = &prefixed[4..];
                let mut out = ws_client_header(0x82, payload.len());
                out.extend_from_slice(payload);
                out
            }
        }
    }

    /// The next whole message in `buf` (taken out of it): a frame, `Err` for the server's
    /// close, `None` if more must be read first.
    fn take(
        self,
        buf: &mut Vec<u8>,
        dec: &mut Decoder,
        partial: &mut Vec<u8>,
    ) -> Option<Result<Frame, ()>> {
        match self {
            Framing::Bytes => take_frame(buf, dec).map(Ok),
            Framing::Ws => loop {
                // A server's frames are not masked.
                let (&b0, &b1) = (buf.first()?, buf.get(1)?);
                let (len, at) = match b1 & 0x7f {
                    126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
                    127 => {
                        let bytes: [u8; 8] = buf.get(2..10)?.try_into().unwrap();
                        (u64::from_be_bytes(bytes) as usize, 10)
                    }
                    n => (n as usize, 2),
                };
                if buf.len() < at + len {
                    return None;
                }
                let payload: Vec<u8> = buf.drain(..at + len).skip(at).collect();
                match b0 & 0x0f {
                    0x8 => return Some(Err(())),
                    0x0 | 0x2 => partial.extend_from_slice(&payload),
                    _ => continue, // a ping or pong
                }
                if b0 & 0x80 != 0 {
                    let mut message = (partial.len() as u32).to_be_bytes().to_vec();
                    message.append(partial);
                    return take_frame(&mut message, dec).map(Ok);
                }
            },
        }
    }
}

/// The case of the two tests above, `conn` serving [`later_cap`], its peer on `end`.
async fn not_read_case(conn: Connection, end: DuplexStream, framing: Framing) {
    track(&conn);
    let (mut r, mut w) = tokio::io::split(end);
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(Default::default());
    let (mut buf, mut partial) = (Vec::new(), Vec::new());
    let mut next = async |r: &mut ReadHalf<DuplexStream>| loop {
        if let Some(frame) = framing.take(&mut buf, &mut dec, &mut partial) {
            return frame.ok();
        }
        let mut chunk = [0u8; 4096];
        match r.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    };
    let hello = framing.message(&mut enc, &Frame::Hello(raw_hello()));
    w.write_all(&hello).await.unwrap();
    assert!(matches!(next(&mut r).await, Some(Frame::Hello(_))));
    let boot = Record::new().with("name", "test.later").into();
    let boot = framing.message(&mut enc, &call_frame(CapId(0), 1, "bootstrap", boot));
    w.write_all(&boot).await.unwrap();
    let cap = loop {
        match next(&mut r).await.expect("the bootstrap's answer") {
            Frame::Result(r) if r.id == CallId(1) => match r.outcome {
                Ok(Value::CapRef(cap)) => break cap,
                other => panic!("bootstrap: {other:?}"),
            },
            _ => continue,
        }
    };
    let start = Instant::now();
    // Answered at 500 ms: the transport takes the first answer, the second waits with more
    // than the connection may hold unsent, so it stops reading until the peer takes them.
    for id in [2, 4] {
        let later = framing.message(&mut enc, &call_frame(cap, id, "later", Value::Undefined));
        w.write_all(&later).await.unwrap();
    }
    // An echo of 20 KB: 1,000 bytes now (its clock starts as they run out), the rest at
    // 600 ms, as far as the pipe takes it while the connection does not read.
    let echo = call_frame(cap, 3, "echo", Value::Bin(vec![7; 20_000]));
    let echo = framing.message(&mut enc, &echo);
    w.write_all(&echo[..1000]).await.unwrap();
    let writer = tokio::spawn(async move {
        tokio::time::sleep_until(start + Duration::from_millis(600)).await;
        w.write_all(&echo[1000..]).await.unwrap();
        w
    });
    tokio::time::sleep_until(start + Duration::from_secs(10)).await;
    assert!(!conn.is_closed());
    let unsent = conn.current_stats().await.unsent_bytes;
    assert!(unsent > 64 * 1024, "not reading for {unsent} unsent bytes");
    // The peer reads again: the long answers, then the echo's.
    let mut answers = Vec::new();
    while answers.len() < 3 {
        match next(&mut r).await {
            Some(Frame::Result(r)) => answers.push((r.id, r.outcome.map_err(|e| e.code))),
            Some(Frame::Goaway(g)) => panic!("goaway at {:?}: {g:?}", start.elapsed()),
            Some(_) => {}
            None => panic!("the connection ended"),
        }
    }
    let long = Ok(Value::Bin(vec![5; 200_000]));
    assert_eq!(answers[0], (CallId(2), long.clone()));
    assert_eq!(answers[1], (CallId(4), long));
    assert_eq!(answers[2], (CallId(3), Ok(Value::Bin(vec![7; 20_000]))));
    let _w = writer.await.unwrap();
    assert!(!conn.is_closed());
}

// ---------------------------------------------------------------------------------------
// The send deadline and the write-stall limit.

/// The earliest (`early`) or latest time the write-stall limit `limit` ends a connection
/// whose transport took bytes at `progress` (in order; bytes wait throughout).
fn stall_end(limit: Duration, progress: &[Instant], early: bool) -> Instant {
    for (i, &p) in progress.iter().enumerate() {
        let end = p + limit;
        match progress.get(i + 1) {
            None => return end,
            Some(&next) if early && end <= next + EPS => return end,
            Some(&next) if !early && end + EPS < next => return end,
            Some(_) => {}
        }
    }
    unreachable!("the last progress ends the loop")
}

/// The earliest (`early`) or latest time the send deadline `rule` ends a connection that
/// started paying at `since`, whose peer read `reads` (when, and the bytes read by then),
/// taking `extra` bytes more than it read (what the pipe holds, counted as taken).
fn pace_end(
    rule: ReceiveDeadline,
    since: Instant,
    reads: &[(Instant, usize)],
    extra: usize,
    early: bool,
) -> Instant {
    let mut taken = 0;
    let mut from = since;
    for i in 0..=reads.len() {
        let end = since + rule.for_len((taken + extra) as u64);
        match reads.get(i) {
            None => return end.max(from),
            Some(&(next, _)) if early && end <= next + EPS => return end.max(from),
            Some(&(next, _)) if !early && end + EPS < next => return end.max(from),
            Some(&(next, read)) => {
                taken = read;
                from = next;
            }
        }
    }
    unreachable!("the last read ends the loop")
}

async fn send(rng: &mut Rng) {
    let budgeted = rng.chance(75);
    let stall = (!budgeted || rng.chance(75)).then(|| millis(rng, 60_000));
    let pace = (stall.is_none() || rng.chance(75)).then(|| {
        let rate = [4096u64, 64 * 1024, 256 * 1024][rng.below(3) as usize];
        ReceiveDeadline::new(millis(rng, 60_000), rate)
    });
    let calls = 1 + rng.below(6) as usize;
    let n = 32 * 1024 + rng.below(200_000) as usize;
    let total = calls * n;
    // Enough for every answer: paying never stops for the budget.
    let budget = ByteBudget::new(2 * total + (1 << 20));
    let limits = Limits {
        write_stall_timeout: stall,
        send_deadline: pace,
        bootstrap_timeout: None,
        ..Limits::default()
    };
    let (a, b) = tokio::io::duplex(PIPE);
    let (ar, aw) = tokio::io::split(a);
    let mut transport = ByteStream::new(ar, aw);
    if budgeted {
        transport = transport.with_send_budget(budget.clone());
    }
    let builder = Connection::builder().limits(limits);
    let (conn, mut wr, mut rd, cap, pending, _) = open(builder, transport, b, Framing::Bytes).await;
    let (closed_at, finished) = watch(&conn);

    // Short calls for long answers, all at once; the answers are ready at once.
    let sent = Instant::now();
    for i in 0..calls {
        let args = Record::new().with("n", n as i64).into();
        wr.frame(&call_frame(cap, 2 + i as u64, "sized", args))
            .await;
    }
    assert_eq!(Instant::now(), sent);
    // The peer reads part of them at a pace, never so much that less than the free
    // allowance waits (the connection pays throughout), then stops and keeps its end open.
    let chunk = [512usize, 1024, 4096, 16 * 1024][rng.below(4) as usize];
    let most = total.saturating_sub(FREE_PER_CONNECTION + 2 * PIPE + HIGH_WATER) / chunk;
    let reads = rng.below(most as u64 + 1);
    let first = if rng.chance(30) { 0 } else { ms(rng, 20_000) };
    let every = ms(rng, 5_000);
    let reader = tokio::spawn(async move {
        let mut log = Vec::new();
        let mut read = 0;
        tokio::time::sleep(Duration::from_millis(first)).await;
        for i in 0..reads {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(every)).await;
            }
            let n = rd.read(chunk).await;
            if n == 0 {
                break;
            }
            read += n;
            log.push((Instant::now(), read));
        }
        (log, rd)
    });
    let done = finished.await.unwrap();
    let at = closed_at.lock().unwrap().expect("the connection shut down");
    let (log, mut rd) = reader.await.unwrap();
    // What the peer had taken when the connection ended (what it read after is what was
    // left in the pipe).
    let before: Vec<(Instant, usize)> = log.iter().copied().filter(|r| r.0 <= at).collect();
    let mut progress = vec![sent];
    progress.extend(before.iter().map(|r| r.0));
    let fail = |why: String| -> ! {
        panic!(
            "{why} after {:?}: stall {stall:?}, pace {pace:?}, budgeted {budgeted}, {calls} \
             calls of {n}, reads {before:?} (from {sent:?})",
            at - sent
        )
    };
    let paced = pace.filter(|_| budgeted);
    let stall_ends = stall.map(|l| {
        (
            stall_end(l, &progress, true),
            stall_end(l, &progress, false),
        )
    });
    let pace_ends = paced.map(|r| {
        let early = pace_end(r, sent, &before, 0, true);
        (early, pace_end(r, sent, &before, PIPE, false))
    });
    let earliest = stall_ends
        .iter()
        .chain(&pace_ends)
        .map(|e| e.0)
        .min()
        .unwrap();
    let latest = stall_ends
        .iter()
        .chain(&pace_ends)
        .map(|e| e.1)
        .min()
        .unwrap();
    if !within(at, earliest, latest) {
        fail(format!("ended between {earliest:?} and {latest:?}?"));
    }
    // Nothing more can be written: it finishes at once.
    assert!(within(done, at, at), "finished {:?} after", done - at);
    let e = pending_error(pending, at).await;
    match e.disconnect() {
        Some(Disconnect::WriteStalled { after }) => {
            let Some((from, to)) = stall_ends.filter(|_| Some(*after) == stall) else {
                fail(format!("{e:?}"));
            };
            if !within(at, from, to) {
                fail(format!("{e:?} not at the limit"));
            }
            TALLY.lock().unwrap().write_stalled += 1;
        }
        Some(Disconnect::SlowReader { taken, after }) => {
            let (Some(rule), Some((from, to))) = (paced, pace_ends) else {
                fail(format!("{e:?}"));
            };
            // Ended as its pace passed, given what it took since paying began (at once).
            // (A read in the instant it ended may have come after.)
            let read = before.last().map_or(0, |r| r.1) as u64;
            let surely = before.iter().rev().find(|r| r.0 + EPS < at);
            let surely = surely.map_or(0, |r| r.1) as u64;
            let allowed = rule.for_len(*taken);
            let fits = *after == at - sent
                && *after >= allowed
                && *after <= allowed + EPS
                && (surely..=read + PIPE as u64).contains(taken)
                && within(at, from, to);
            if !fits {
                fail(format!("{e:?}: took {read} bytes, allowed {allowed:?}"));
            }
            TALLY.lock().unwrap().slow_reader += 1;
        }
        _ => fail(format!("{e:?}")),
    }
    // Nothing waits, nothing is paid; the peer reads what was in the pipe, whole answers
    // in order and no goaway (the transport takes nothing more).
    let stats = conn.stats();
    assert!(stats.is_idle() && stats.unsent_bytes == 0, "{stats:?}");
    assert_eq!(budget.available(), budget.limit(), "the send budget");
    while rd.read(64 * 1024).await > 0 {}
    let mut next = 2;
    for frame in rd.frames() {
        match frame {
            Frame::Result(r) => {
                assert_eq!(r.id, CallId(next));
                assert_eq!(r.outcome, Ok(Value::Bin(vec![5; n])));
                next += 1;
            }
            other => fail(format!("{other:?} sent")),
        }
    }
    assert!(next < 2 + calls as u64, "every answer was taken");
    drop(wr);
}

// ---------------------------------------------------------------------------------------
// The close grace.

/// `test.slow`: `sleep {ms}` answers `"slept"` after `ms`.
fn slow_cap() -> (Arc<CapDef>, Arc<dyn bunite_rpc::CapImpl>) {
    let def = CapDef::builder("test.slow")
        .method(MethodDef::call("sleep"))
        .build();
    let imp = DynCap::new()
        .call("sleep", |args: Value, _| async move {
            let ms = args
                .as_record()
                .and_then(|r| r.get("ms"))
                .and_then(Value::as_integer)
                .unwrap_or(0) as u64;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Value::from("slept"))
        })
        .build();
    (def, imp)
}

/// How a close-grace case ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Close,
    Drain,
    /// A `ConnectionSet`'s stop, which drains.
    Set,
}

/// One connection of a close-grace case, as drawn.
struct Held {
    stall: Option<Duration>,
    /// When its `sleep` handlers answer.
    sleeps: Vec<Instant>,
    /// Whether it waits on the peer's answer to a bootstrap (which never comes).
    pending: bool,
    /// When its peer reads again, if it does.
    resume: Option<Instant>,
}

/// How one connection of a close-grace case ends, by the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ends {
    /// It shut down.
    shut: Instant,
    /// By the write-stall limit (else the close or the drain).
    stalled: bool,
    /// It finished (`closed` returned).
    done: Instant,
    /// Its peer read everything, the goaway included.
    delivered: bool,
}

/// What the model says of `h`, the stop beginning at `t0` with `grace` (for a drain)
/// after its calls at `sent`.
fn ends(
    h: &Held,
    stop: Stop,
    t0: Instant,
    grace: Duration,
    sent: Instant,
    ties: &mut Ties,
) -> Ends {
    // The shutdown the stop asks for: at once, or when nothing is in progress (the
    // handlers that answer in time), at the grace at the latest.
    let shut = match stop {
        Stop::Close => t0,
        Stop::Drain | Stop::Set => {
            let end = t0 + grace;
            let mut last = t0;
            let mut by_grace = !h.pending;
            for &s in &h.sleeps {
                if ties.before(s, end) {
                    last = last.max(s);
                } else {
                    by_grace = false;
                }
            }
            if by_grace {
                last
            } else {
                end
            }
        }
    };
    // Before it, the write-stall limit: bytes wait from `sent`, and nothing is taken
    // until the peer reads again (which takes everything at once).
    if let Some(limit) = h.stall {
        let stalls = sent + limit;
        let read_first = h.resume.is_some_and(|r| ties.before(r, stalls));
        if !read_first && ties.before(stalls, shut) {
            return Ends {
                shut: stalls,
                stalled: true,
                done: stalls,
                delivered: false,
            };
        }
    }
    let gives_up = shut + CLOSE_GRACE;
    match h.resume {
        // Then its source lingers (`MessageSource::poll_linger`) until the peer, which
        // sends nothing more and keeps its end open, has been quiet for `LINGER_QUIET`,
        // within the grace.
        Some(r) if ties.before(r, gives_up) => Ends {
            shut,
            stalled: false,
            done: (r.max(shut) + LINGER_QUIET).min(gives_up),
            delivered: true,
        },
        _ => Ends {
            shut,
            stalled: false,
            done: gives_up,
            delivered: false,
        },
    }
}

async fn close_grace(rng: &mut Rng) {
    let stop = [Stop::Close, Stop::Drain, Stop::Set][rng.below(3) as usize];
    let grace = millis(rng, 30_000);
    let count = 1 + rng.below(2) as usize;
    let mut conns = Vec::new();
    let set = ConnectionSet::new();
    let sent = Instant::now();
    for _ in 0..count {
        let stall = (!rng.chance(40)).then(|| millis(rng, 60_000));
        let limits = Limits {
            write_stall_timeout: stall,
            bootstrap_timeout: None,
            ..Limits::default()
        };
        let (a, b) = tokio::io::duplex(PIPE);
        let (ar, aw) = tokio::io::split(a);
        let (def, imp) = slow_cap();
        let builder = Connection::builder().limits(limits).serve(def, imp);
        let (conn, mut wr, rd, cap, pending, boot_id) =
            open(builder, ByteStream::new(ar, aw), b, Framing::Bytes).await;
        assert_eq!(Instant::now(), sent);
        set.insert(&conn);
        let watched = watch(&conn);
        let boot = Record::new().with("name", "test.slow").into();
        wr.frame(&call_frame(CapId(0), 2, "bootstrap", boot)).await;
        // The peer reads nothing more: `test.slow` is the next cap-id.
        let slow = CapId(cap.0 + 1);
        // Answers longer than the pipe and what the sink takes before it waits.
        let sized = 3 + rng.below(3);
        let n = 40 * 1024 + rng.below(60_000) as usize;
        for i in 0..sized {
            let args = Record::new().with("n", n as i64).into();
            wr.frame(&call_frame(cap, 10 + i, "sized", args)).await;
        }
        let mut sleeps = Vec::new();
        for i in 0..rng.below(3) {
            let ms = ms(rng, 40_000);
            let args = Record::new().with("ms", ms as i64).into();
            wr.frame(&call_frame(slow, 100 + i, "sleep", args)).await;
            sleeps.push(sent + Duration::from_millis(ms));
        }
        // Read and answered (the sized calls) or running before the stop can begin (one
        // that began first would refuse them); no time passes meanwhile.
        let running = sleeps.len();
        for _ in 0..10_000 {
            let stats = conn.stats();
            if stats.active_calls == running && stats.unsent_bytes > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let stats = conn.stats();
        assert!(
            stats.active_calls == running && stats.unsent_bytes > 0,
            "{stats:?}"
        );
        assert_eq!(Instant::now(), sent);
        // Without the connection's own bootstrap pending (the peer refuses it), a drain
        // may end early.
        let pending = if rng.chance(50) {
            Some(pending)
        } else {
            let refused = WireStatus {
                code: "not_found".into(),
                message: Some("no".into()),
                details: None,
                retry: None,
                full: false,
            };
            let answer = ResultFrame {
                id: boot_id,
                outcome: Err(refused),
            };
            wr.frame(&Frame::Result(answer)).await;
            let (r, _) = pending.await.unwrap();
            assert_eq!(r.err().map(|e| e.code()), Some(Code::NotFound));
            None
        };
        let held = Held {
            stall,
            sleeps,
            pending: pending.is_some(),
            resume: None,
        };
        conns.push((conn, wr, Some(rd), pending, watched, held, sized, n));
    }
    // The stop begins after a while (or at once); each peer reads again later, or never.
    let t0 = sent + Duration::from_millis(if rng.chance(50) { 0 } else { ms(rng, 20_000) });
    for c in &mut conns {
        c.5.resume = rng
            .chance(60)
            .then(|| t0 + Duration::from_millis(ms(rng, 2 * CLOSE_GRACE.as_millis() as u64)));
    }
    let mut readers = Vec::new();
    for c in &mut conns {
        let resume = c.5.resume;
        let mut rd = c.2.take().unwrap();
        readers.push(tokio::spawn(async move {
            let Some(resume) = resume else {
                // Never reads again; keeps its end open until the connection finished.
                return (rd, None);
            };
            tokio::time::sleep_until(resume).await;
            let mut frames = Vec::new();
            while let Some(frame) = rd.frame().await {
                frames.push(frame);
            }
            (rd, Some((frames, Instant::now())))
        }));
    }
    tokio::time::sleep_until(t0).await;
    let stopped = match stop {
        Stop::Close => {
            for c in &conns {
                c.0.close();
            }
            None
        }
        Stop::Drain => {
            for c in &conns {
                c.0.drain(grace);
            }
            None
        }
        Stop::Set => {
            let open = set
                .serve_with_shutdown(std::future::pending(), async {}, grace)
                .await;
            Some((open, Instant::now()))
        }
    };
    let mut last_done = t0;
    // Connections that shut down before the stop began (by their write-stall limit), and
    // in its instant.
    let (mut before, mut with) = (0, 0);
    for (c, reader) in conns.into_iter().zip(readers) {
        let (conn, wr, _, pending, (closed_at, finished), held, sized, n) = c;
        let outcomes = every_way(|ties| ends(&held, stop, t0, grace, sent, ties));
        let done = finished.await.unwrap();
        let shut = closed_at.lock().unwrap().expect("shut down");
        let (rd, read) = reader.await.unwrap();
        let fail = |why: String| -> ! {
            panic!(
                "{why}: shut down {:?} and finished {:?} after the stop began; {stop:?} with \
                 grace {grace:?} after {:?}, stall {:?}, sleeps {:?}, pending {}, resume \
                 {:?}; outcomes {outcomes:?}",
                shut - t0,
                done - t0,
                t0 - sent,
                held.stall,
                held.sleeps.iter().map(|s| *s - sent).collect::<Vec<_>>(),
                held.pending,
                held.resume.map(|r| r - t0),
            )
        };
        let delivered = read.as_ref().is_some_and(|(frames, eof)| {
            *eof <= done + EPS && matches!(frames.last(), Some(Frame::Goaway(_)))
        });
        let Some(o) = outcomes.iter().find(|o| {
            within(shut, o.shut, o.shut) && within(done, o.done, o.done) && o.delivered == delivered
        }) else {
            fail(format!("explained by no outcome (delivered {delivered})"));
        };
        {
            let mut tally = TALLY.lock().unwrap();
            match (o.stalled, o.delivered) {
                (true, _) => tally.stalled_first += 1,
                (false, true) => tally.delivered += 1,
                (false, false) => tally.gave_up += 1,
            }
        }
        last_done = last_done.max(done);
        before += usize::from(shut < t0);
        with += usize::from(shut == t0);
        if let Some(pending) = pending {
            let e = pending_error(pending, shut).await;
            let cause = match o.stalled {
                true => Disconnect::WriteStalled {
                    after: held.stall.unwrap(),
                },
                false => Disconnect::LocalClose,
            };
            assert_eq!(e.disconnect(), Some(&cause), "{e:?}");
        }
        if let Some((frames, _)) = read.filter(|_| delivered) {
            // Every answer that was ready, then the goaway.
            let mut answered = 0;
            for frame in &frames {
                match frame {
                    Frame::Result(r) if (10..100).contains(&r.id.0) => {
                        assert_eq!(r.outcome, Ok(Value::Bin(vec![5; n])));
                        answered += 1;
                    }
                    Frame::Result(r) if r.id.0 >= 100 => {
                        assert_eq!(r.outcome, Ok(Value::from("slept")));
                    }
                    Frame::Result(r) => assert_eq!(r.id, CallId(2), "{r:?}"),
                    Frame::Goaway(g) => assert_eq!(g.reason.as_deref(), Some("peer_closing")),
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(answered, sized, "every sized answer");
        }
        let stats = conn.stats();
        assert!(stats.is_idle() && stats.unsent_bytes == 0, "{stats:?}");
        drop((rd, wr));
    }
    if let Some((open, at)) = stopped {
        // The stop returns as the last connection finishes.
        assert!(
            (count - before - with..=count - before).contains(&open),
            "{open} open of {count}"
        );
        assert!(
            within(at, last_done, last_done),
            "the stop returned {:?} after the stop began, the last connection finished {:?} \
             after",
            at - t0,
            last_done - t0
        );
    }
}
