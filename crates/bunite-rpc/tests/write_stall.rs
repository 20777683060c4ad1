//! The write-stall limit (`Limits::write_stall_timeout`): a peer that stops reading is cut
//! off once our writes make no progress for the limit, its pending calls fail saying so and
//! nothing of the connection is left; a slow reader that keeps taking bytes is not cut off;
//! `None` waits forever. Over the byte-stream transport on a small in-memory pipe, with
//! paused time.
#![cfg(feature = "byte-stream")]

mod common;

use std::time::Duration;

use bunite_rpc::transport::budget::{ANSWER_OVERDRAFT, FREE_PER_CONNECTION};
use bunite_rpc::transport::byte_stream::ByteStream;
use bunite_rpc::transport::{ByteBudget, ReceiveDeadline};
use bunite_rpc::wire::{CallId, CapId, Decoder, DropEntry, DropFrame, Encoder, Frame, ResultFrame};
use bunite_rpc::{Code, Connection, Disconnect, Limits, Record, Value};
use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::time::{timeout, Instant};

/// The pipe's buffer: far below the results, so the server's writes wait at once.
const PIPE: usize = 4096;
const RESULT: usize = 64 * 1024;
const CALLS: u64 = 8;

fn stall_limits(limit: Option<Duration>) -> Limits {
    Limits {
        write_stall_timeout: limit,
        ..Limits::default()
    }
}

/// A server serving the counter over one end of a small pipe, and the raw other end, past
/// the hello exchange and the counter's bootstrap.
async fn server_and_raw(limit: Option<Duration>) -> (Connection, Raw) {
    server_and_raw_within(limit, None).await
}

/// As [`server_and_raw`], the server's answers paid from `budget` as a listener's are.
async fn server_and_raw_within(
    limit: Option<Duration>,
    budget: Option<&ByteBudget>,
) -> (Connection, Raw) {
    server_and_raw_with(stall_limits(limit), budget).await
}

/// As [`server_and_raw_within`], with the server's `limits`.
async fn server_and_raw_with(limits: Limits, budget: Option<&ByteBudget>) -> (Connection, Raw) {
    let (a, mut raw) = tokio::io::duplex(PIPE);
    let (ar, aw) = tokio::io::split(a);
    let mut transport = ByteStream::new(ar, aw);
    if let Some(budget) = budget {
        transport = transport.with_send_budget(budget.clone());
    }
    let server = Connection::builder().limits(limits).connect(transport);
    track(&server);
    serve_counter(&server).await;
    let mut enc = Encoder::new();
    let mut dec = Decoder::new(Default::default());
    write_frame(&mut raw, &mut enc, &Frame::Hello(raw_hello())).await;
    assert!(matches!(
        read_frame(&mut raw, &mut dec).await,
        Frame::Hello(_)
    ));
    let mut raw = Raw {
        io: raw,
        enc,
        dec,
        cap: CapId(0),
    };
    raw.cap = raw.bootstrap(1, "test.counter").await;
    (server, raw)
}

/// What [`Raw::read_paced`] read: the answers, the time, and whether the server ended it.
struct Paced {
    answered: u64,
    took: Duration,
    ended: bool,
}

/// The raw client: its end of the pipe, its codec (stateful: both ends know the record
/// shapes seen so far) and the counter's cap-id.
struct Raw {
    io: DuplexStream,
    enc: Encoder,
    dec: Decoder,
    cap: CapId,
}

impl Raw {
    /// Bootstraps `name` with call id `id`; its cap-id.
    async fn bootstrap(&mut self, id: u64, name: &str) -> CapId {
        let boot = call_frame(
            CapId(0),
            id,
            "bootstrap",
            Record::new().with("name", name).into(),
        );
        write_frame(&mut self.io, &mut self.enc, &boot).await;
        match read_frame(&mut self.io, &mut self.dec).await {
            Frame::Result(ResultFrame {
                outcome: Ok(Value::CapRef(id)),
                ..
            }) => id,
            other => panic!("{other:?}"),
        }
    }

    /// Sends `CALLS` echo calls of `RESULT` bytes each, whose results fill far more than
    /// the pipe.
    async fn send_echoes(&mut self) {
        for id in 2..2 + CALLS {
            let args = Value::Bin(vec![7; RESULT]);
            let frame = call_frame(self.cap, id, "echo", args);
            write_frame(&mut self.io, &mut self.enc, &frame).await;
        }
    }

    /// Reads `chunk` bytes every `every` until every echo of [`send_echoes`](Self::send_echoes)
    /// is answered (each answer checked) or the server drops its end; gives up after two
    /// minutes (of the paused clock).
    async fn read_paced(&mut self, chunk: usize, every: Duration) -> Paced {
        let start = Instant::now();
        let (mut got, mut answered) = (Vec::new(), 0);
        let mut buf = vec![0u8; chunk];
        while answered < CALLS {
            assert!(start.elapsed() < Duration::from_secs(120), "still reading");
            tokio::time::sleep(every).await;
            let n = self.io.read(&mut buf).await.unwrap();
            if n == 0 {
                return Paced {
                    answered,
                    took: start.elapsed(),
                    ended: true,
                };
            }
            got.extend_from_slice(&buf[..n]);
            while let Some(frame) = take_frame(&mut got, &mut self.dec) {
                match frame {
                    Frame::Result(r) => assert_eq!(r.outcome, Ok(Value::Bin(vec![7; RESULT]))),
                    other => panic!("{other:?}"),
                }
                answered += 1;
            }
        }
        Paced {
            answered,
            took: start.elapsed(),
            ended: false,
        }
    }

    /// Releases the counter, so the server is clean again.
    async fn release(&mut self) {
        let frame = Frame::Drop(DropFrame {
            caps: vec![DropEntry {
                id: self.cap,
                delta: 1,
            }],
        });
        write_frame(&mut self.io, &mut self.enc, &frame).await;
    }
}

#[test]
fn a_peer_that_stops_reading_is_cut_off_after_the_write_stall_timeout() {
    run_paused(async {
        let limit = Duration::from_millis(200);
        let (server, mut raw) = server_and_raw(Some(limit)).await;
        let start = Instant::now();
        raw.send_echoes().await;
        // The peer reads nothing more, but keeps its end open.
        timeout(Duration::from_secs(5), server.closed())
            .await
            .expect("the stalled connection must close");
        let took = start.elapsed();
        assert!(took >= limit, "closed after {took:?}, before the limit");
        assert!(took < limit * 3, "closed after {took:?}");
        let stats = server.stats();
        assert!(stats.is_idle(), "{stats:?}");
        assert_eq!(stats.tasks, 0, "{stats:?}");
        // The server dropped its end: the peer reads what was written, then the end.
        let mut rest = Vec::new();
        raw.io.read_to_end(&mut rest).await.unwrap();
        assert!(rest.len() < CALLS as usize * RESULT, "{} bytes", rest.len());
    });
}

#[test]
fn a_slow_reader_that_keeps_reading_is_not_cut_off() {
    run_paused(async {
        let limit = Duration::from_millis(200);
        let (server, mut raw) = server_and_raw(Some(limit)).await;
        raw.send_echoes().await;
        // 1 KiB every 100 ms: each 64 KiB result takes 6.4 s to read, so only the bytes the
        // sink writes out of a message it holds (never a completed flush) show progress.
        let read = raw.read_paced(1024, Duration::from_millis(100)).await;
        assert!(
            !read.ended,
            "the server closed a live reader: {:?}",
            server.stats()
        );
        assert!(!server.is_closed());
        raw.release().await;
        assert_clean(&[&server]).await;
        drop(raw);
    });
}

/// While a listener's send budget pays for its answers, a peer must take them at the send
/// deadline's pace (`Limits::send_deadline`): one that reads 10 KiB/s against a pace of
/// 64 KiB/s after a 1 s grace is cut off once it falls behind (about 1.2 s in), though it
/// never stops reading (the write-stall limit alone would serve it for good: see
/// `a_slow_reader_that_keeps_reading_is_not_cut_off`); nothing of it is left and the budget
/// is whole. A peer that keeps the pace, on the same budget, is served to the end.
#[test]
fn a_reader_too_slow_for_the_send_deadline_is_cut_off_while_the_budget_pays() {
    run_paused(async {
        let budget = ByteBudget::new(1 << 20);
        let limits = Limits {
            write_stall_timeout: Some(Duration::from_millis(500)),
            send_deadline: Some(ReceiveDeadline::new(Duration::from_secs(1), 64 * 1024)),
            ..Limits::default()
        };
        let (server, mut raw) = server_and_raw_with(limits.clone(), Some(&budget)).await;
        raw.send_echoes().await;
        // 1 KiB every 100 ms: 10 KiB/s.
        let read = raw.read_paced(1024, Duration::from_millis(100)).await;
        let (took, answered) = (read.took, read.answered);
        assert!(read.ended, "served to the end at 10 KiB/s");
        assert!(took >= Duration::from_secs(1), "cut off after {took:?}");
        assert!(took < Duration::from_secs(3), "cut off after {took:?}");
        assert!(answered < CALLS, "{answered} answers read");
        timeout(Duration::from_secs(5), server.closed())
            .await
            .expect("the slow reader's connection closes");
        let stats = server.stats();
        assert!(stats.is_idle(), "{stats:?}");
        assert_eq!(stats.tasks, 0, "{stats:?}");
        assert_eq!(budget.available(), 1 << 20);

        // 8 KiB every 50 ms (160 KiB/s) keeps the pace.
        let (server, mut raw) = server_and_raw_with(limits, Some(&budget)).await;
        raw.send_echoes().await;
        let read = raw.read_paced(8 * 1024, Duration::from_millis(50)).await;
        assert!(!read.ended, "a reader keeping the pace was cut off");
        assert!(!server.is_closed());
        raw.release().await;
        assert_clean(&[&server]).await;
        drop(raw);
        timeout(Duration::from_secs(5), server.closed())
            .await
            .unwrap();
        assert_eq!(budget.available(), 1 << 20);
    });
}

/// Without a budget (a client's connection, or one not made by a listener) the send
/// deadline does nothing: the same slow reader, with the same limits, is served to the end.
#[test]
fn without_a_send_budget_the_send_deadline_does_nothing() {
    run_paused(async {
        let limits = Limits {
            write_stall_timeout: Some(Duration::from_millis(500)),
            send_deadline: Some(ReceiveDeadline::new(Duration::from_secs(1), 64 * 1024)),
            ..Limits::default()
        };
        let (server, mut raw) = server_and_raw_with(limits, None).await;
        raw.send_echoes().await;
        let read = raw.read_paced(1024, Duration::from_millis(100)).await;
        assert!(!read.ended, "cut off without a budget");
        raw.release().await;
        assert_clean(&[&server]).await;
        drop(raw);
    });
}

/// Limits past what an instant can hold mean "never", as `None` does: a stalled peer is
/// waited for, and nothing panics (`Duration::MAX` as the write-stall limit overflowed the
/// driver's instant arithmetic).
#[test]
fn limits_of_duration_max_never_end_a_stalled_peer() {
    run_paused(async {
        // Enough for every answer: the server reads every call, and pays.
        let budget = ByteBudget::new(1 << 20);
        let limits = Limits {
            write_stall_timeout: Some(Duration::MAX),
            send_deadline: Some(ReceiveDeadline::new(Duration::MAX, 1)),
            ..Limits::default()
        };
        let (server, mut raw) = server_and_raw_with(limits, Some(&budget)).await;
        raw.send_echoes().await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!server.is_closed(), "{:?}", server.stats());
        assert!(server.stats().unsent_bytes > 0, "{:?}", server.stats());
        drop(raw);
        timeout(Duration::from_secs(5), server.closed())
            .await
            .expect("closes once the peer is gone");
        assert!(server.stats().is_idle(), "{:?}", server.stats());
        assert_eq!(budget.available(), 1 << 20);
    });
}

/// On a connection whose answers a send budget pays for, `Stats::unsent_bytes` counts
/// every byte not yet written: what the session holds and what the transport took whole
/// and has not written (it counted only the first, so a never-reading peer's hold looked
/// a message smaller per connection than it was).
#[test]
fn unsent_bytes_count_what_the_transport_holds_too() {
    run_paused(async {
        let budget = ByteBudget::new(1 << 20);
        let (server, mut raw) = server_and_raw_within(None, Some(&budget)).await;
        raw.send_echoes().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let unsent = server.stats().unsent_bytes;
        let answers = CALLS as usize * RESULT;
        assert!(
            unsent + PIPE >= answers,
            "{unsent} bytes unsent of {answers} + framing"
        );
        assert_eq!(
            budget.limit() - budget.available(),
            unsent - FREE_PER_CONNECTION
        );
        drop(raw);
        timeout(Duration::from_secs(5), server.closed())
            .await
            .unwrap();
        assert_eq!(server.stats().unsent_bytes, 0);
        assert_eq!(budget.available(), budget.limit());
    });
}

#[test]
fn without_a_write_stall_timeout_a_stalled_peer_is_waited_for() {
    run_paused(async {
        let (server, mut raw) = server_and_raw(None).await;
        raw.send_echoes().await;
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(!server.is_closed());
        assert!(server.stats().unsent_bytes > 0, "{:?}", server.stats());
        // Once the peer reads again, every call is answered.
        for _ in 0..CALLS {
            assert!(matches!(
                read_frame(&mut raw.io, &mut raw.dec).await,
                Frame::Result(ResultFrame { outcome: Ok(_), .. })
            ));
        }
        raw.release().await;
        assert_clean(&[&server]).await;
        drop(raw);
    });
}

#[test]
fn calls_pending_on_a_stalled_write_fail_saying_the_peer_stopped_reading() {
    run_paused(async {
        let limit = Duration::from_millis(300);
        let (a, mut raw) = tokio::io::duplex(PIPE);
        let (ar, aw) = tokio::io::split(a);
        let client = Connection::builder()
            .limits(stall_limits(Some(limit)))
            .connect(ByteStream::new(ar, aw));
        track(&client);
        // The raw peer answers the hello and the bootstrap, then reads nothing.
        let peer = tokio::spawn(async move {
            let mut enc = Encoder::new();
            let mut dec = Decoder::new(Default::default());
            write_frame(&mut raw, &mut enc, &Frame::Hello(raw_hello())).await;
            loop {
                match read_frame(&mut raw, &mut dec).await {
                    Frame::Call(c) if c.method == "bootstrap" => {
                        let answer = Frame::Result(ResultFrame {
                            id: c.id,
                            outcome: Ok(Value::CapRef(CapId(2))),
                        });
                        write_frame(&mut raw, &mut enc, &answer).await;
                        return raw;
                    }
                    _ => continue,
                }
            }
        });
        let counter = client.bootstrap(&counter_def()).await.unwrap();
        let raw = peer.await.unwrap();
        let calls: Vec<_> = (0..4)
            .map(|_| counter.call_value("echo", Value::Bin(vec![1; RESULT])))
            .collect();
        for result in futures::future::join_all(calls).await {
            let e = result.unwrap_err();
            assert_eq!(
                e.disconnect(),
                Some(&Disconnect::WriteStalled { after: limit }),
                "{e:?}"
            );
            assert_eq!(e.code(), Code::Unavailable);
            assert_eq!(
                e.message(),
                "write stalled: the peer stopped reading for 0.3 s"
            );
        }
        drop(counter);
        timeout(Duration::from_secs(5), client.closed())
            .await
            .unwrap();
        assert!(client.stats().is_idle(), "{:?}", client.stats());
        drop(raw);
    });
}

/// Peers that send calls and never read the answers hold at most the listener's send budget
/// between them (plus a free allowance and an answer each), not `max_unsent_bytes` each:
/// the server stops reading them once it cannot pay, so their own writes stop. Here the
/// calls are as long as their answers (64 KiB echoes), so they arrive one at a time.
#[test]
fn peers_that_never_read_hold_no_more_than_the_budget_between_them() {
    never_reading_peers("echo", Value::Bin(vec![7; RESULT]), 32);
}

/// As above with short calls for long answers, many arriving in one read: each answer is
/// counted before the next call is read (when they were run after the whole read, one
/// pass of 16 calls queued 1 MiB of answers unpaid).
#[test]
fn short_calls_for_long_answers_are_counted_one_by_one() {
    never_reading_peers("big", Value::Null, 256);
}

/// A connection that cannot pay for its answer (the budget is spent elsewhere) stops
/// reading, and reads again once the answer is written, even when the write completes at
/// once (no waker is left registered then: reading had stopped before the source was
/// polled, and the sink took everything). Here the pipe holds the whole answer.
#[test]
fn a_connection_that_could_not_pay_reads_again_once_its_answer_is_written() {
    run_paused(async {
        let budget = ByteBudget::new(1 << 20);
        let spent = budget.try_acquire(1 << 20).unwrap();
        let (a, raw) = tokio::io::duplex(4 * RESULT);
        let (ar, aw) = tokio::io::split(a);
        let server = Connection::new(ByteStream::new(ar, aw).with_send_budget(budget.clone()));
        track(&server);
        serve_counter(&server).await;
        let (def, imp) = big_cap();
        server.serve(def, imp).await.unwrap().detach();
        let mut raw = Raw {
            io: raw,
            enc: Encoder::new(),
            dec: Decoder::new(Default::default()),
            cap: CapId(0),
        };
        write_frame(&mut raw.io, &mut raw.enc, &Frame::Hello(raw_hello())).await;
        assert!(matches!(
            read_frame(&mut raw.io, &mut raw.dec).await,
            Frame::Hello(_)
        ));
        let counter = raw.bootstrap(1, "test.counter").await;
        let big = raw.bootstrap(2, "test.big").await;
        let frame = call_frame(big, 3, "big", Value::Null);
        write_frame(&mut raw.io, &mut raw.enc, &frame).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let frame = call_frame(counter, 4, "get", Value::Null);
        write_frame(&mut raw.io, &mut raw.enc, &frame).await;
        let start = Instant::now();
        for id in [3, 4] {
            let got = timeout(
                Duration::from_secs(5),
                read_frame(&mut raw.io, &mut raw.dec),
            )
            .await
            .unwrap_or_else(|_| panic!("call {id} unanswered: {:?}", server.stats()));
            assert!(
                matches!(&got, Frame::Result(r) if r.id == CallId(id) && r.outcome.is_ok()),
                "{got:?}"
            );
        }
        // Nothing waits on a timer here: a connection that stalled would be woken only by
        // one of its timers, seconds later (time is paused and jumps to it).
        let took = start.elapsed();
        assert!(took < Duration::from_millis(50), "answered after {took:?}");
        drop(spent);
        drop(raw);
        timeout(Duration::from_secs(5), server.closed())
            .await
            .unwrap();
        assert!(server.stats().is_idle(), "{:?}", server.stats());
        assert_eq!(budget.available(), 1 << 20);
    });
}

/// Answers that fill the send budget (peers reading slowly hold it as long as they like)
/// keep no message from being received: the receive budget is another. A 64 KiB echo on
/// another connection is received and answered at once, its answer written unpaid while
/// that connection stops reading; with one budget for both it would wait for good.
#[test]
fn a_long_message_is_received_while_answers_hold_the_send_budget() {
    run_paused(async {
        let (receive, send) = (ByteBudget::new(1 << 20), ByteBudget::new(1 << 20));
        let spent = send.try_acquire(1 << 20).unwrap();
        let (server, client, counter) = counter_over_pipe(Some(&receive), &send).await;
        for _ in 0..3 {
            let echo = counter.call_value("echo", Value::Bin(vec![7; RESULT]));
            let got = timeout(Duration::from_secs(5), echo)
                .await
                .expect("the echo is received and answered")
                .unwrap();
            assert_eq!(got, Value::Bin(vec![7; RESULT]));
        }
        drop((counter, spent));
        assert_clean(&[&server, &client]).await;
        client.close();
        for c in [&client, &server] {
            timeout(Duration::from_secs(10), c.closed()).await.unwrap();
        }
        // The server's source may linger a little to read the client's end, then goes.
        tokio::time::sleep(bunite_rpc::transport::LINGER).await;
        assert_eq!(receive.available(), 1 << 20);
        assert_eq!(send.available(), 1 << 20);
    });
}

/// Answers longer than [`ANSWER_OVERDRAFT`] that the send budget cannot pay for are
/// refused with `resource_exhausted {reason:"max_frame_bytes"}` instead of being held
/// beyond the budget: before, every connection that could not pay held one such answer
/// whole (20 never-reading callers of 32 MiB answers took a server 933 MiB past its
/// 256 MiB budget, RELIABILITY finding 12). Short answers still go while the budget is
/// held, refusals end as soon as it is paid back, and nothing is left.
#[test]
fn long_answers_the_send_budget_cannot_pay_for_are_refused_not_held_beyond_it() {
    const BUDGET: usize = 1 << 20;
    const LONG: i64 = 1 << 20;
    const SHORT: i64 = 200 * 1024;
    run_paused(async {
        let budget = ByteBudget::new(BUDGET);
        let mut peers = Vec::new();
        for _ in 0..4 {
            peers.push(sized_peer(stall_limits(None), &budget).await);
        }
        // The first peer's answer takes the budget; the others ask twice each for as
        // much, and once for a short answer; nobody reads.
        for (i, (_, raw, cap)) in peers.iter_mut().enumerate() {
            let asks: &[i64] = if i == 0 {
                &[LONG]
            } else {
                &[LONG, LONG, SHORT]
            };
            for (k, n) in asks.iter().enumerate() {
                let frame = sized_call(*cap, 3 + k as u64, *n);
                write_frame(&mut raw.io, &mut raw.enc, &frame).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let held: usize = peers.iter().map(|p| p.0.stats().unsent_bytes).sum();
        let each = FREE_PER_CONNECTION + ANSWER_OVERDRAFT;
        assert!(
            held <= BUDGET + peers.len() * each,
            "{held} bytes unsent across {} peers, budget {BUDGET}",
            peers.len()
        );

        // Each peer reads: the first its long answer, the others two refusals (the budget
        // had no room) and the short answer.
        for (i, (_, raw, _)) in peers.iter_mut().enumerate() {
            let n = if i == 0 { 1 } else { 3 };
            for k in 0..n {
                let answer = read_frame(&mut raw.io, &mut raw.dec).await;
                let Frame::Result(r) = answer else {
                    panic!("peer {i}: {answer:?}");
                };
                assert_eq!(r.id, CallId(3 + k), "peer {i}");
                match (i, k) {
                    (0, _) => assert_eq!(r.outcome, Ok(Value::Bin(vec![5; LONG as usize]))),
                    (_, 2) => assert_eq!(r.outcome, Ok(Value::Bin(vec![5; SHORT as usize]))),
                    _ => {
                        let e = r.outcome.expect_err("refused");
                        assert_eq!(e.code, "resource_exhausted", "peer {i}: {e:?}");
                        assert_eq!(e.reason(), Some("max_frame_bytes"), "peer {i}");
                        let message = e.message.as_deref().unwrap_or_default();
                        assert!(message.contains("send budget"), "peer {i}: {message}");
                    }
                }
            }
        }
        // Paid back: the same long answer goes now.
        for (_, raw, cap) in &mut peers[1..] {
            let frame = sized_call(*cap, 9, LONG);
            write_frame(&mut raw.io, &mut raw.enc, &frame).await;
            match read_frame(&mut raw.io, &mut raw.dec).await {
                Frame::Result(r) => assert_eq!(r.outcome, Ok(Value::Bin(vec![5; LONG as usize]))),
                other => panic!("{other:?}"),
            }
        }
        let servers = peers.into_iter().map(|(server, ..)| server).collect();
        all_close_and_the_budget_is_whole(servers, &budget).await;
    });
}

/// The overdraft is the send budget's (`ByteBudget::with_answer_overdraft`): while another
/// connection holds the whole budget, an answer of 200 KiB goes within the default
/// overdraft (256 KiB) and is refused with none; the connection holds at most the free
/// allowance and its overdraft unpaid either way.
#[test]
fn the_answer_overdraft_is_the_send_budgets_to_set() {
    const BUDGET: usize = 1 << 20;
    const SHORT: i64 = 200 * 1024;
    for overdraft in [ANSWER_OVERDRAFT, 0] {
        run_paused(async move {
            let budget = ByteBudget::new(BUDGET).with_answer_overdraft(overdraft);
            let mut holder = sized_peer(stall_limits(None), &budget).await;
            let mut asker = sized_peer(stall_limits(None), &budget).await;
            // The holder's answer takes the whole budget; nobody reads yet.
            let frame = sized_call(holder.2, 3, BUDGET as i64);
            write_frame(&mut holder.1.io, &mut holder.1.enc, &frame).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(budget.available() < SHORT as usize, "the budget is held");
            let frame = sized_call(asker.2, 3, SHORT);
            write_frame(&mut asker.1.io, &mut asker.1.enc, &frame).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let unsent = asker.0.stats().unsent_bytes;
            assert!(
                unsent <= FREE_PER_CONNECTION + overdraft,
                "{unsent} bytes unsent"
            );

            let Frame::Result(r) = read_frame(&mut asker.1.io, &mut asker.1.dec).await else {
                panic!("a result");
            };
            if overdraft >= SHORT as usize {
                assert_eq!(r.outcome, Ok(Value::Bin(vec![5; SHORT as usize])));
            } else {
                let e = r.outcome.expect_err("refused: no overdraft");
                assert_eq!(e.code, "resource_exhausted", "{e:?}");
                assert_eq!(e.reason(), Some("max_frame_bytes"));
            }
            let Frame::Result(r) = read_frame(&mut holder.1.io, &mut holder.1.dec).await else {
                panic!("a result");
            };
            assert_eq!(r.outcome, Ok(Value::Bin(vec![5; BUDGET])));
            let servers = [holder, asker].map(|(server, ..)| server).into();
            all_close_and_the_budget_is_whole(servers, &budget).await;
        });
    }
}

/// The same bound when a connection stops reading at `max_unsent_bytes` rather than for
/// the budget: what it holds past that limit is paid for too. (It stopped before paying:
/// an answer let through counting on the budget was held unpaid while the sink held the
/// two before it, and others took those bytes; 20 callers of 32 MiB answers held 364 MiB
/// against a 256 MiB budget.)
#[test]
fn answers_past_the_unsent_limit_are_paid_for_too() {
    const BUDGET: usize = 8 << 20;
    const LONG: i64 = 1 << 20;
    run_paused(async {
        let budget = ByteBudget::new(BUDGET);
        let limits = Limits {
            max_unsent_bytes: 3 << 19,
            ..stall_limits(None)
        };
        let mut peers = Vec::new();
        for _ in 0..4 {
            let (server, mut raw, sized) = sized_peer(limits.clone(), &budget).await;
            for id in [3, 4, 5] {
                let frame = sized_call(sized, id, LONG);
                write_frame(&mut raw.io, &mut raw.enc, &frame).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            peers.push((server, raw));
        }
        let held: usize = peers.iter().map(|p| p.0.stats().unsent_bytes).sum();
        let bound = BUDGET + peers.len() * (FREE_PER_CONNECTION + ANSWER_OVERDRAFT);
        assert!(held <= bound, "{held} bytes unsent, bound {bound}");
        let mut answered = 0;
        for (i, (_, raw)) in peers.iter_mut().enumerate() {
            for id in [3, 4, 5] {
                match read_frame(&mut raw.io, &mut raw.dec).await {
                    Frame::Result(r) => {
                        assert_eq!(r.id, CallId(id), "peer {i}");
                        match r.outcome {
                            Ok(v) => {
                                assert_eq!(v, Value::Bin(vec![5; LONG as usize]));
                                answered += 1;
                            }
                            Err(e) => assert_eq!(e.reason(), Some("max_frame_bytes"), "{e:?}"),
                        }
                    }
                    other => panic!("peer {i}: {other:?}"),
                }
            }
        }
        assert!(
            answered >= 8,
            "only {answered} answers of 12 under an 8 MiB budget"
        );
        let servers = peers.into_iter().map(|(server, _)| server).collect();
        all_close_and_the_budget_is_whole(servers, &budget).await;
    });
}

/// A server serving `test.sized` over a small pipe with `limits`, paying its answers from
/// `budget` as a listener's connection does; the raw peer, and the cap it bootstrapped.
async fn sized_peer(limits: Limits, budget: &ByteBudget) -> (Connection, Raw, CapId) {
    let (server, mut raw) = server_and_raw_with(limits, Some(budget)).await;
    let (def, imp) = sized_cap();
    server.serve(def, imp).await.unwrap().detach();
    let sized = raw.bootstrap(2, "test.sized").await;
    (server, raw, sized)
}

/// A call of `sized {n}` on `cap`.
fn sized_call(cap: CapId, id: u64, n: i64) -> Frame {
    call_frame(cap, id, "sized", Record::new().with("n", n).into())
}

/// Waits for `servers`, whose peers are gone (their ends dropped with them), to close with
/// nothing left, and checks that `budget` is whole again.
async fn all_close_and_the_budget_is_whole(servers: Vec<Connection>, budget: &ByteBudget) {
    for server in &servers {
        timeout(Duration::from_secs(5), server.closed())
            .await
            .expect("a connection whose peer is gone must close");
        let stats = server.stats();
        assert!(stats.is_idle(), "{stats:?}");
        assert_eq!(stats.tasks, 0, "{stats:?}");
    }
    assert_eq!(budget.available(), budget.limit());
}

/// `test.big`'s one method, `big`: an answer of `RESULT` bytes, at once.
fn big_cap() -> (
    std::sync::Arc<bunite_rpc::CapDef>,
    std::sync::Arc<dyn bunite_rpc::CapImpl>,
) {
    let def = bunite_rpc::CapDef::builder("test.big")
        .method(bunite_rpc::MethodDef::call("big"))
        .build();
    let imp = bunite_rpc::dynamic::DynCap::new()
        .call("big", |_, _| async move { Ok(Value::Bin(vec![7; RESULT])) })
        .build();
    (def, imp)
}

/// Three peers call `method` `many` times each (`2 MiB` of answers or more a peer, eight
/// times the budget) and never read; then small calls on another connection under the same
/// budget are still answered (they need none of it), one peer reads again and gets every
/// answer, and everything paid goes back once the connections close.
fn never_reading_peers(method: &'static str, args: Value, many: u64) {
    const BUDGET: usize = 256 * 1024;
    const PEERS: usize = 3;
    run_paused(async move {
        let budget = ByteBudget::new(BUDGET);
        let mut peers = Vec::new();
        for _ in 0..PEERS {
            let (server, mut raw) = server_and_raw_within(None, Some(&budget)).await;
            let (def, imp) = big_cap();
            server.serve(def, imp).await.unwrap().detach();
            let big = raw.bootstrap(2, "test.big").await;
            let target = if method == "big" { big } else { raw.cap };
            let (rd, mut wr) = tokio::io::split(raw.io);
            let (mut enc, args) = (raw.enc, args.clone());
            let writer = tokio::spawn(async move {
                for id in 3..3 + many {
                    let frame = call_frame(target, id, method, args.clone());
                    write_frame(&mut wr, &mut enc, &frame).await;
                }
                wr
            });
            peers.push((server, rd, raw.dec, writer));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let held: usize = peers.iter().map(|p| p.0.stats().unsent_bytes).sum();
        let each = FREE_PER_CONNECTION + RESULT + 1024;
        assert!(
            held <= BUDGET + PEERS * each,
            "{held} bytes unsent across {PEERS} peers, budget {BUDGET}"
        );
        for (_, _, _, writer) in &peers {
            assert!(!writer.is_finished(), "the server read every call");
        }

        // Small calls under the same budget need none of it.
        let (server, client, counter) = counter_over_pipe(None, &budget).await;
        for n in 1..=3i64 {
            let got = counter.call_value("increment", Value::Null).await.unwrap();
            assert_eq!(got, Value::from(Record::new().with("count", n)));
        }
        drop(counter);
        assert_clean(&[&server, &client]).await;

        // The first peer reads again: every answer comes, and its calls are all read.
        let (server, mut rd, mut dec, writer) = peers.remove(0);
        for id in 3..3 + many {
            match read_frame(&mut rd, &mut dec).await {
                Frame::Result(r) => {
                    assert_eq!(r.id, CallId(id));
                    assert_eq!(r.outcome, Ok(Value::Bin(vec![7; RESULT])));
                }
                other => panic!("{other:?}"),
            }
        }
        let wr = writer.await.unwrap();
        assert_eq!(server.stats().unsent_bytes, 0, "{:?}", server.stats());
        drop(rd.unsplit(wr));

        // The others go away unread: their connections end, and the budget is whole.
        let mut servers = vec![server];
        for (server, rd, _, writer) in peers {
            writer.abort();
            let _ = writer.await;
            drop(rd);
            servers.push(server);
        }
        all_close_and_the_budget_is_whole(servers, &budget).await;
    });
}

/// A server serving the counter over a small pipe, reading under `receive` and paying its
/// answers from `send` as a listener's connection does, and a client on the other end with
/// the counter bootstrapped.
async fn counter_over_pipe(
    receive: Option<&ByteBudget>,
    send: &ByteBudget,
) -> (Connection, Connection, bunite_rpc::Client) {
    let (a, b) = tokio::io::duplex(PIPE);
    let (ar, aw) = tokio::io::split(a);
    let mut transport = ByteStream::new(ar, aw).with_send_budget(send.clone());
    if let Some(receive) = receive {
        transport = transport.with_budget(receive.clone());
    }
    let server = Connection::new(transport);
    track(&server);
    serve_counter(&server).await;
    let (br, bw) = tokio::io::split(b);
    let client = Connection::new(ByteStream::new(br, bw));
    track(&client);
    let counter = client.bootstrap(&counter_def()).await.unwrap();
    (server, client, counter)
}

async fn write_frame(w: &mut (impl AsyncWrite + Unpin), enc: &mut Encoder, frame: &Frame) {
    w.write_all(&length_prefixed(enc, frame)).await.unwrap();
}

async fn read_frame(r: &mut (impl AsyncRead + Unpin), dec: &mut Decoder) -> Frame {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
    r.read_exact(&mut body).await.unwrap();
    dec.decode_frame(&body).expect("valid frame")
}
