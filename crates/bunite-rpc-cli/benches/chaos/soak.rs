//! Scenario 6: connections making calls for a long while, RSS and tasks sampled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use bunite_rpc::transport::{byte_stream, ws};
use bunite_rpc::{Connection, Value};
use futures::StreamExt;

use crate::closes::rec;
use crate::peers::Kind;
use crate::server::{Server, MIB};
use crate::{after, load, mib, rss_row, Plan, Report};

/// Each connection's pause between rounds (a round: increment, echo, sometimes a child or
/// a stream): a steady load rather than a throughput race on a shared machine.
const PAUSE: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    errors: AtomicU64,
}

async fn caller(
    server: (std::net::SocketAddr, String),
    kind: Kind,
    until: Instant,
    tally: Arc<Tally>,
) {
    let conn = match kind {
        Kind::Tcp => byte_stream::tcp_connect(server.0)
            .await
            .ok()
            .map(Connection::new),
        Kind::Ws => ws::connect(server.1.as_str())
            .await
            .ok()
            .map(Connection::new),
    };
    let Some(conn) = conn else {
        tally.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if let Err(()) = rounds(&conn, until, &tally).await {
        tally.errors.fetch_add(1, Ordering::Relaxed);
    }
    conn.close();
    conn.closed().await;
}

async fn rounds(conn: &Connection, until: Instant, tally: &Tally) -> Result<(), ()> {
    let c = conn
        .bootstrap_name("interop.counter", None)
        .await
        .map_err(drop)?;
    let mut i: i64 = 0;
    while Instant::now() < until {
        i += 1;
        let mut calls = 2;
        c.call_value("increment", Value::Undefined)
            .await
            .map_err(drop)?;
        let v = rec(&[("i", i.into()), ("s", "soak".into())]);
        c.call_value("echo", v).await.map_err(drop)?;
        if i % 50 == 0 {
            let child = c
                .call_cap("makeChild", rec(&[("name", "soak".into())]))
                .await
                .map_err(drop)?;
            child
                .call_value("ping", rec(&[("x", i.into())]))
                .await
                .map_err(drop)?;
            child.dispose().await;
            calls += 3;
        }
        if i % 100 == 1 {
            let n = c.stream("ticks", rec(&[("n", 20.into())])).count().await;
            if n != 20 {
                return Err(());
            }
            calls += 1;
        }
        tally.calls.fetch_add(calls, Ordering::Relaxed);
        tokio::time::sleep(PAUSE).await;
    }
    Ok(())
}

pub async fn run(
    server: &mut Server,
    report: &mut Report,
    plan: &Plan,
    baseline: u64,
) -> Result<()> {
    eprintln!(
        "== soak: {} connections for {} s",
        plan.soak_conns,
        plan.soak.as_secs()
    );
    let start = Instant::now();
    let until = start + plan.soak;
    let tally = Arc::new(Tally::default());
    let callers: Vec<_> = (0..plan.soak_conns as u64)
        .map(|i| {
            let addrs = (server.tcp_addr, server.ws_url.clone());
            tokio::spawn(caller(addrs, Kind::of(i), until, tally.clone()))
        })
        .collect();
    let every = (plan.soak / 60).max(Duration::from_secs(1));
    let mut samples: Vec<(f64, u64, usize, usize)> = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(every.min(until.saturating_duration_since(Instant::now()))).await;
        let c = server.counts().await?;
        let rss = server.rss();
        let t = start.elapsed().as_secs_f64();
        samples.push((t, rss, c.tasks, c.runtime_tasks));
    }
    for c in callers {
        let _ = c.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let calls = tally.calls.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    // The trend: the mean RSS of the last quarter of the samples against that of the
    // quarter after the first 10% (warm-up).
    let mean = |from: f64, to: f64| {
        let n = samples.len() as f64;
        let part: Vec<u64> = samples
            .iter()
            .enumerate()
            .filter(|(k, _)| (*k as f64) >= from * n && (*k as f64) < to * n)
            .map(|(_, s)| s.1)
            .collect();
        part.iter().sum::<u64>() as f64 / part.len().max(1) as f64
    };
    let (early, late) = (mean(0.10, 0.35), mean(0.75, 1.0));
    let growth = (late / early - 1.0) * 100.0;
    let (min, max) = samples
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s.1), hi.max(s.1)));
    let tasks = samples
        .iter()
        .fold((usize::MAX, 0), |(lo, hi), s| (lo.min(s.2), hi.max(s.2)));
    eprintln!("   samples (s, RSS MiB, connection tasks, runtime tasks):");
    for s in &samples {
        eprintln!("     {:.0} {:.1} {} {}", s.0, s.1 as f64 / MIB, s.2, s.3);
    }
    report.row(
        &format!("soak: {} connections for {:.0} s", plan.soak_conns, secs),
        "",
        format!(
            "{calls} calls ({:.0}/s), {errors} connections failed; load {}",
            calls as f64 / secs,
            load()
        ),
        Some(errors == 0),
    );
    report.row(
        "soak: RSS trend",
        "flat (growth ≤ 5%)",
        format!(
            "{:.1} -> {:.1} MiB ({growth:+.1}%); min {} max {}; connection tasks {}-{}",
            early / MIB,
            late / MIB,
            mib(min),
            mib(max),
            tasks.0,
            tasks.1
        ),
        Some(growth <= 5.0),
    );
    let rss = after(server, report, plan, "soak", baseline).await;
    rss_row(report, "soak", rss, baseline);
    Ok(())
}
