//! Scenario 5: record definitions that the server would keep for the connection's life; then
//! maximal `call` frames (64 MiB of `nil`s, of small 15-key records), from one client at a
//! time, then from eight at once, with a side client calling throughout.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::peers::{
    decoder, goaway_of, hello, message_header, ms, nils, records, wide_record, Kind, SideClient,
};
use crate::peers::{Latency, MAX_BYTES};
use crate::server::Server;
use crate::{after, mib, Plan, Report};

/// What an attacker saw: how long until the goaway, and its code.
struct Answer {
    took: Duration,
    code: String,
}

/// Sends our hello and `frame`, then reads until the server's goaway.
async fn attack(server: &Server, kind: Kind, frame: Bytes) -> Result<Answer> {
    let start = Instant::now();
    let mut decoder = decoder();
    let code = match kind {
        Kind::Tcp => {
            let mut s = TcpStream::connect(server.tcp_addr).await?;
            let hello = hello();
            s.write_all(&message_header(Kind::Tcp, hello.len())).await?;
            s.write_all(&hello).await?;
            s.write_all(&message_header(Kind::Tcp, frame.len())).await?;
            s.write_all(&frame).await?;
            loop {
                let len = s.read_u32().await.map_err(|e| anyhow!("no goaway: {e}"))? as usize;
                if len > MAX_BYTES {
                    bail!("a {len}-byte message from the server");
                }
                let mut msg = vec![0; len];
                s.read_exact(&mut msg).await?;
                if let Some(code) = goaway_of(&mut decoder, &msg) {
                    break code;
                }
            }
        }
        Kind::Ws => {
            let s = TcpStream::connect(server.ws_addr).await?;
            let (mut ws, _) = tokio_tungstenite::client_async(server.ws_url.as_str(), s).await?;
            ws.send(Message::binary(hello())).await?;
            ws.send(Message::Binary(frame)).await?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(msg))) => {
                        if let Some(code) = goaway_of(&mut decoder, &msg) {
                            break code;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => bail!("no goaway: {e}"),
                    None => bail!("no goaway: the socket ended"),
                }
            }
        }
    };
    Ok(Answer {
        took: start.elapsed(),
        code,
    })
}

fn latency_row(report: &mut Report, what: &str, lat: &Latency) {
    report.row(
        &format!("{what}: side client"),
        "served; worst call < 50 ms",
        lat.summary(),
        Some(lat.errors == 0 && lat.calls > 0 && lat.worst < Duration::from_millis(50)),
    );
}

pub async fn run(
    server: &mut Server,
    report: &mut Report,
    plan: &Plan,
    baseline: u64,
) -> Result<()> {
    wide_definitions(server, report).await?;
    let nil_frame = Bytes::from(nils(MAX_BYTES));
    let record_frame = Bytes::from(records(MAX_BYTES));
    eprintln!(
        "== maximal frames: {} of nils, {} of 15-key records",
        mib(nil_frame.len() as u64),
        mib(record_frame.len() as u64)
    );
    let singles = match plan.all_singles {
        true => vec![
            (Kind::Tcp, "nils"),
            (Kind::Tcp, "records"),
            (Kind::Ws, "nils"),
            (Kind::Ws, "records"),
        ],
        false => vec![(Kind::Tcp, "nils"), (Kind::Ws, "records")],
    };
    let frame_of = |what: &str| match what {
        "nils" => nil_frame.clone(),
        _ => record_frame.clone(),
    };
    let mut last = Instant::now();
    let before = server.rss();
    for (kind, what) in singles {
        let rss0 = server.rss();
        server.reset_peak();
        let side = SideClient::start(server.tcp_addr).await?;
        let answer = attack(server, kind, frame_of(what)).await;
        last = Instant::now();
        let lat = side.stop().await?;
        let peak = server.peak();
        let name = format!("one 64 MiB frame of {what} over {}", kind.name());
        let answered = match &answer {
            Ok(a) => format!("goaway {} after {:.0} ms", a.code, ms(a.took)),
            Err(e) => format!("{e:#}"),
        };
        report.row(
            &name,
            "peak RSS ≤ 300 MiB; goaway",
            format!("peak RSS {} (from {}); {answered}", mib(peak), mib(rss0)),
            Some(peak <= 300 << 20 && answer.is_ok()),
        );
        latency_row(report, &name, &lat);
    }
    fifteen_after(
        server,
        report,
        "one frame at a time",
        (last, before),
        baseline,
    )
    .await;

    let rss0 = server.rss();
    server.reset_peak();
    let side = SideClient::start(server.tcp_addr).await?;
    let start = Instant::now();
    let srv: &Server = server;
    let attacks = (0..8u64).map(|i| {
        let frame = frame_of(if i / 2 % 2 == 0 { "nils" } else { "records" });
        attack(srv, Kind::of(i), frame)
    });
    let answers = futures::future::join_all(attacks).await;
    let took = start.elapsed();
    let lat = side.stop().await?;
    let peak = server.peak();
    let goaways = answers.iter().filter(|a| a.is_ok()).count();
    let errors: Vec<String> = answers
        .iter()
        .filter_map(|a| a.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    report.row(
        "eight 64 MiB frames at once (4 TCP, 4 WebSocket; 4 nils, 4 records)",
        "peak RSS ≤ 1 GiB; goaway each",
        format!(
            "peak RSS {} (from {}); {goaways}/8 goaways, all within {:.1} s{}",
            mib(peak),
            mib(rss0),
            took.as_secs_f64(),
            errors.first().map(|e| format!("; {e}")).unwrap_or_default()
        ),
        Some(peak <= 1 << 30 && goaways == 8),
    );
    latency_row(report, "eight frames at once", &lat);
    let answered = (Instant::now(), rss0);
    fifteen_after(server, report, "eight frames at once", answered, baseline).await;
    after(server, report, plan, "maximal frames", baseline).await;
    Ok(())
}

/// The RSS 15 s after the last frame was answered.
async fn fifteen_after(
    server: &mut Server,
    report: &mut Report,
    what: &str,
    (answered, before): (Instant, u64),
    baseline: u64,
) {
    tokio::time::sleep_until((answered + Duration::from_secs(15)).into()).await;
    let rss = server.rss();
    report.row(
        &format!("{what}: RSS 15 s after the last answer"),
        "within 64 MiB of baseline",
        format!(
            "{} (baseline {}; {} before these frames)",
            mib(rss),
            mib(baseline),
            mib(before)
        ),
        Some(rss <= baseline + (64 << 20)),
    );
}

/// Wide record definitions, one per slot: 62 messages of 2 MB, each well within its decode
/// budget, each defining a record of 8,000 keys of 255 bytes in a slot of its own, to a cap
/// that does not exist. The server keeps every definition for the connection's life unless
/// its record table is bounded (`Limits::max_record_table_bytes`): before it was, the
/// connection held about 4.4 MB a message (273 MB for the 62) for as long as it stayed open.
async fn wide_definitions(server: &mut Server, report: &mut Report) -> Result<()> {
    const KEYS: usize = 8_000;
    eprintln!("== wide record definitions: 62 of {KEYS} keys of 255 bytes, one per slot");
    let rss0 = server.rss();
    server.reset_peak();
    let mut s = TcpStream::connect(server.tcp_addr).await?;
    let hello = hello();
    s.write_all(&message_header(Kind::Tcp, hello.len())).await?;
    s.write_all(&hello).await?;
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let mut sent = 0;
        for slot in 0x42..=0x7f_u8 {
            let frame = wide_record(slot, KEYS, 255);
            let header = message_header(Kind::Tcp, frame.len());
            if wr.write_all(&header).await.is_err() || wr.write_all(&frame).await.is_err() {
                break;
            }
            sent += 1;
        }
        (sent, wr) // The write half stays open: the connection lives on unless closed.
    });
    let mut decoder = decoder();
    let mut answers = 0_usize;
    let mut goaway = None;
    // The server's hello, then a result per call, until a goaway or 5 s of silence.
    while let Ok(Ok(len)) = tokio::time::timeout(Duration::from_secs(5), rd.read_u32()).await {
        let len = len as usize;
        if len > MAX_BYTES {
            bail!("a {len}-byte message from the server");
        }
        let mut msg = vec![0; len];
        rd.read_exact(&mut msg).await?;
        if let Some(code) = goaway_of(&mut decoder, &msg) {
            goaway = Some(code);
            break;
        }
        answers += 1;
    }
    let (sent, wr) = writer.await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = server.rss().saturating_sub(rss0);
    let peak = server.peak();
    drop((rd, wr));
    report.row(
        "62 wide record definitions, one per slot (2 MB messages, TCP)",
        "goaway; RSS held while the connection is open ≤ 16 MiB",
        format!(
            "{sent} sent, {} answered, {}; RSS held {} (peak {})",
            answers.saturating_sub(1),
            match &goaway {
                Some(code) => format!("goaway {code}"),
                None => "no goaway".to_owned(),
            },
            mib(held),
            mib(peak)
        ),
        Some(goaway.is_some() && held <= 16 << 20),
    );
    Ok(())
}
