//! Scenario 1: connections cut at random points.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use bunite_rpc::{Record, Value};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::peers::{self, cut, hello, message_header, open, Kind, Rng, MAX_BYTES};
use crate::server::Server;
use crate::{after, mib, rss_row, Plan, Report};

/// Where a connection is cut.
const POINTS: [&str; 4] = ["handshake/hello", "mid-frame", "mid-call", "mid-stream"];

/// How many connections are in flight at once.
const CONCURRENCY: usize = 64;

pub fn rec(pairs: &[(&str, Value)]) -> Value {
    Value::Record(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<Record>(),
    )
}

pub async fn run(
    server: &mut Server,
    report: &mut Report,
    plan: &Plan,
    baseline: u64,
) -> Result<()> {
    eprintln!("== random closes: {} connections", plan.closes);
    let (tcp, ws) = (server.tcp_addr, server.ws_addr);
    server.reset_peak();
    let start = Instant::now();
    let outcomes: Vec<(usize, Result<()>)> = futures::stream::iter(0..plan.closes)
        .map(move |i| async move {
            let mut rng = Rng::new(i as u64);
            let point = rng.below(POINTS.len() as u64) as usize;
            let r = tokio::time::timeout(Duration::from_secs(20), one(tcp, ws, rng, point)).await;
            (
                point,
                r.unwrap_or_else(|_| Err(anyhow::anyhow!("timed out"))),
            )
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let took = start.elapsed();
    let mut per_point = [0usize; 4];
    let mut errors = Vec::new();
    for (point, r) in outcomes {
        per_point[point] += 1;
        if let Err(e) = r {
            errors.push(format!("{}: {e:#}", POINTS[point]));
        }
    }
    let peak = server.peak();
    eprintln!(
        "   cut {} connections in {:.1} s: {}; {} setups failed{}",
        plan.closes,
        took.as_secs_f64(),
        POINTS
            .iter()
            .zip(per_point)
            .map(|(p, n)| format!("{n} {p}"))
            .collect::<Vec<_>>()
            .join(", "),
        errors.len(),
        errors
            .first()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    report.row(
        "random closes: connections cut",
        "5,000",
        format!(
            "{} in {:.1} s ({} setups failed), peak RSS {}",
            plan.closes,
            took.as_secs_f64(),
            errors.len(),
            mib(peak)
        ),
        None,
    );
    let rss = after(server, report, plan, "random closes", baseline).await;
    rss_row(report, "random closes", rss, baseline);
    Ok(())
}

/// One connection, cut at `point`.
async fn one(tcp: SocketAddr, ws: SocketAddr, mut rng: Rng, point: usize) -> Result<()> {
    let kind = Kind::of(rng.next());
    let addr = match kind {
        Kind::Tcp => tcp,
        Kind::Ws => ws,
    };
    let reset = rng.below(2) == 0;
    let pause = Duration::from_millis(rng.below(20));
    match point {
        0 => {
            // During the WebSocket handshake, or inside the hello of a TCP connection.
            let mut s = TcpStream::connect(addr).await?;
            let bytes = match kind {
                Kind::Ws => peers::upgrade_request(addr),
                Kind::Tcp => {
                    let hello = hello();
                    [message_header(Kind::Tcp, hello.len()), hello].concat()
                }
            };
            let k = rng.below(bytes.len() as u64) as usize;
            s.write_all(&bytes[..k]).await?;
            tokio::time::sleep(pause / 4).await;
            cut(s, reset);
        }
        1 => {
            // A message's header and part of its body.
            let mut peer = open(kind, addr, None).await?;
            let _counter = peer.counter().await?;
            let len = 16 + rng.below(MAX_BYTES as u64 / 32) as usize;
            let body = rng.below(len as u64) as usize;
            peer.write_partial(len, body).await?;
            tokio::time::sleep(pause / 4).await;
            peer.cut(reset);
        }
        2 => {
            // Calls in flight: a slow one, increments, an echo, a child.
            let peer = open(kind, addr, None).await?;
            let c = peer.counter().await?;
            let calls = tokio::spawn(async move {
                let slow = c.call_value("slow", rec(&[("ms", 2000.into())]));
                let incs = futures::future::join_all(
                    (0..8).map(|_| c.call_value("increment", Value::Undefined)),
                );
                let echo = c.call_value("echo", Value::Bin(vec![7; 64 * 1024]));
                let child = c.call_cap("makeChild", rec(&[("name", "x".into())]));
                let _ = futures::join!(slow, incs, echo, child);
            });
            tokio::time::sleep(pause).await;
            peer.cut(reset);
            let _ = tokio::time::timeout(Duration::from_secs(10), calls).await;
        }
        _ => {
            // A stream partly read.
            let peer = open(kind, addr, None).await?;
            let c = peer.counter().await?;
            let mut stream = match rng.below(2) {
                0 => c.stream("watch", rec(&[("everyMs", 1.into())])),
                _ => c.stream("ticks", rec(&[("n", 100_000.into())])),
            };
            for _ in 0..rng.below(40) {
                if stream.next().await.is_none() {
                    break;
                }
            }
            peer.cut(reset);
            drop(stream);
        }
    }
    Ok(())
}
