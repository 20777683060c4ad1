//! Scenarios 2-4: idle connections, slow peers, callers that never read their replies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use bunite_rpc::transport::{byte_stream, ws};
use bunite_rpc::{Connection, Value};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::closes::rec;
use crate::peers::{open, Kind, SideClient, MAX_BYTES};
use crate::server::Server;
use crate::{after, mib, rss_row, Plan, Report};

/// The listener's receive budget (`ListenerConfig::default`), shared by both listeners.
const RECEIVE_BUDGET: u64 = 256 << 20;

/// Waits until the server counts `n` connections.
async fn wait_for(server: &mut Server, n: usize) -> Result<()> {
    for _ in 0..600 {
        if server.counts().await?.connections >= n {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(anyhow!("the server never counted {n} connections"))
}

async fn idle_conns(server: &Server, kind: Kind, n: usize) -> Vec<Connection> {
    let (tcp, url) = (server.tcp_addr, server.ws_url.clone());
    futures::stream::iter(0..n)
        .map(|_| {
            let url = url.clone();
            async move {
                match kind {
                    Kind::Tcp => byte_stream::tcp_connect(tcp)
                        .await
                        .map(Connection::new)
                        .ok(),
                    Kind::Ws => ws::connect(url.as_str()).await.map(Connection::new).ok(),
                }
            }
        })
        .buffer_unordered(64)
        .filter_map(|c| async move { c })
        .collect()
        .await
}

pub async fn idle(
    server: &mut Server,
    report: &mut Report,
    plan: &Plan,
    baseline: u64,
) -> Result<()> {
    eprintln!(
        "== idle flood: {} TCP, then {} WebSocket",
        plan.idle, plan.idle
    );
    // The cost per connection on a fresh server (no warm-up): on the server under test,
    // memory freed by earlier scenarios and kept by the allocator absorbs new connections.
    let mut fresh = Server::start(server.bin.clone()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    flood(&mut fresh, report, plan, true).await?;
    after_long_messages(&mut fresh, report, plan).await?;
    fresh.stop().await;
    // The same flood on the server under test, for the checks after it.
    flood(server, report, plan, false).await?;
    let rss = after(server, report, plan, "idle flood", baseline).await;
    rss_row(report, "idle flood", rss, baseline);
    Ok(())
}

/// One message each way per connection before it idles: below 128 KiB, so a peer sends it
/// as one frame.
const LONG_MESSAGE: usize = 120 * 1024;

/// How long the allocator is given to return the freed message buffers to the kernel
/// (jemalloc's decay is 10 s) before the RSS is read.
const DECAY: Duration = Duration::from_secs(15);

/// What an idle WebSocket connection keeps after it carried one long message each way:
/// `plan.idle` connections each echo [`LONG_MESSAGE`] bytes and stay open (tungstenite
/// keeps its buffers at their high-water mark, outside every budget).
async fn after_long_messages(server: &mut Server, report: &mut Report, plan: &Plan) -> Result<()> {
    let rss0 = server.rss();
    let conns = idle_conns(server, Kind::Ws, plan.idle).await;
    wait_for(server, conns.len()).await?;
    let echoes = futures::future::join_all(conns.iter().map(|c| async move {
        let counter = c.bootstrap_name("interop.counter", None).await.ok()?;
        let long = Value::Bin(vec![7; LONG_MESSAGE]);
        let back = counter.call_value("echo", long.clone()).await.ok()?;
        (back == long).then_some(())
    }))
    .await;
    let echoed = echoes.iter().flatten().count();
    tokio::time::sleep(DECAY).await;
    let rss1 = server.rss();
    let per = rss1.saturating_sub(rss0) as f64 / conns.len().max(1) as f64 / 1000.0;
    report.row(
        &format!(
            "idle WebSocket connections after one {} KiB message each way ({} open, {echoed} echoed)",
            LONG_MESSAGE / 1024,
            conns.len()
        ),
        "",
        format!(
            "{per:.1} KB each (server RSS {} -> {}, read {} s after the echoes)",
            mib(rss0),
            mib(rss1),
            DECAY.as_secs()
        ),
        None,
    );
    for c in &conns {
        c.close();
    }
    futures::future::join_all(conns.iter().map(|c| c.closed())).await;
    if echoed < conns.len() {
        return Err(anyhow!(
            "{} of {} long echoes failed",
            conns.len() - echoed,
            conns.len()
        ));
    }
    Ok(())
}

/// Opens the idle connections, measures, closes them; `rows`: report the costs.
async fn flood(server: &mut Server, report: &mut Report, plan: &Plan, rows: bool) -> Result<()> {
    let rss0 = server.rss();
    let tcp = idle_conns(server, Kind::Tcp, plan.idle).await;
    wait_for(server, tcp.len()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = server.rss();
    let ws = idle_conns(server, Kind::Ws, plan.idle).await;
    wait_for(server, tcp.len() + ws.len()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss2 = server.rss();
    let per = |delta: u64, n: usize| delta as f64 / n.max(1) as f64 / 1000.0;
    let (per_tcp, per_ws) = (
        per(rss1.saturating_sub(rss0), tcp.len()),
        per(rss2.saturating_sub(rss1), ws.len()),
    );
    if rows {
        report.row(
            &format!("idle TCP connections ({} open, fresh server)", tcp.len()),
            "",
            format!(
                "{per_tcp:.1} KB each (server RSS {} -> {})",
                mib(rss0),
                mib(rss1)
            ),
            None,
        );
        report.row(
            &format!(
                "idle WebSocket connections ({} open, fresh server)",
                ws.len()
            ),
            "≤ 16 KB each",
            format!(
                "{per_ws:.1} KB each (server RSS {} -> {})",
                mib(rss1),
                mib(rss2)
            ),
            Some(per_ws <= 16.0 && ws.len() == plan.idle),
        );
    } else {
        eprintln!(
            "   on the server under test: {} + {} idle, RSS {} -> {} -> {}",
            tcp.len(),
            ws.len(),
            mib(rss0),
            mib(rss1),
            mib(rss2)
        );
    }
    let all: Vec<Connection> = tcp.into_iter().chain(ws).collect();
    for c in &all {
        c.close();
    }
    futures::future::join_all(all.iter().map(|c| c.closed())).await;
    Ok(())
}

pub async fn slow(
    server: &mut Server,
    report: &mut Report,
    plan: &Plan,
    baseline: u64,
) -> Result<()> {
    eprintln!(
        "== slow peers: {} peers each send half of a {} message and stop",
        plan.slow,
        mib(MAX_BYTES as u64)
    );
    let rss0 = server.rss();
    server.reset_peak();
    let side = SideClient::start(server.tcp_addr).await?;
    let stop = CancellationToken::new();
    let mut holders = Vec::new();
    for i in 0..plan.slow {
        let kind = Kind::of(i as u64);
        let addr = listener_of(server, kind);
        let mut peer = open(kind, addr, None).await?;
        let counter = peer.counter().await?;
        let stop = stop.clone();
        holders.push(tokio::spawn(async move {
            tokio::select! {
                _ = peer.write_partial(MAX_BYTES, MAX_BYTES / 2) => {}
                _ = stop.cancelled() => {}
            }
            stop.cancelled().await;
            drop(counter);
            peer.cut(i % 4 == 0);
        }));
    }
    tokio::time::sleep(plan.hold).await;
    let (held, peak) = (server.rss(), server.peak());
    stop.cancel();
    for h in holders {
        let _ = h.await;
    }
    let lat = side.stop().await?;
    let cost = peak.saturating_sub(rss0);
    report.row(
        &format!(
            "{} slow peers holding half-sent maximal messages",
            plan.slow
        ),
        "≤ the listener's budget (256 MiB)",
        format!(
            "peak RSS {} above the {} before (RSS {} while held)",
            mib(cost),
            mib(rss0),
            mib(held)
        ),
        Some(cost <= RECEIVE_BUDGET),
    );
    side_row(report, "slow peers", &lat);
    let rss = after(server, report, plan, "slow peers", baseline).await;
    rss_row(report, "slow peers", rss, baseline);
    Ok(())
}

/// Callers that never read: how many calls each makes, for replies of how many bytes.
struct Unread {
    calls: usize,
    reply: i64,
    /// The rows' name.
    name: &'static str,
    /// Whether to see, after the hold, if the server lets go of callers that sent FIN.
    fin: bool,
}

/// Callers that never read their replies: many calls for 256 KiB each (the server stops
/// reading them once the send budget cannot pay), then a few for 32 MiB each (which the
/// budget cannot pay for once it is spent: refused rather than held, RELIABILITY finding
/// 12; before, each connection held one whole, 933 MiB above the baseline for 20).
pub async fn unread(
    server: &mut Server,
    report: &mut Report,
    plan: &Plan,
    baseline: u64,
) -> Result<()> {
    let many = Unread {
        calls: 512,
        reply: 256 * 1024,
        name: "never-read callers",
        fin: true,
    };
    unread_with(server, report, plan, baseline, many).await?;
    let long = Unread {
        calls: 4,
        reply: 32 << 20,
        name: "never-read callers of long replies",
        fin: false,
    };
    unread_with(server, report, plan, baseline, long).await
}

async fn unread_with(
    server: &mut Server,
    report: &mut Report,
    plan: &Plan,
    baseline: u64,
    ask: Unread,
) -> Result<()> {
    let Unread {
        calls,
        reply,
        name,
        fin,
    } = ask;
    let size = match reply >> 20 {
        0 => format!("{} KiB", reply >> 10),
        m => format!("{m} MiB"),
    };
    eprintln!(
        "== callers that never read: {} connections x {calls} calls for {size}",
        plan.unread
    );
    let rss0 = server.rss();
    server.reset_peak();
    let side = SideClient::start(server.tcp_addr).await?;
    let mut peers = Vec::new();
    let mut callers = Vec::new();
    for i in 0..plan.unread {
        let kind = Kind::of(i as u64);
        let addr = listener_of(server, kind);
        let flag = Arc::new(AtomicBool::new(false));
        let peer = open(kind, addr, Some(flag.clone())).await?;
        let counter = peer.counter().await?;
        flag.store(true, Ordering::Release);
        callers.push(tokio::spawn(async move {
            let args = rec(&[("n", reply.into())]);
            let calls = (0..calls).map(|_| counter.call_value("bytes", args.clone()));
            futures::future::join_all(calls).await;
        }));
        peers.push(peer);
    }
    tokio::time::sleep(plan.hold).await;
    let counts = server.counts().await?;
    let (held, peak) = (server.rss(), server.peak());
    // FIN both ways, but the stalled clients keep their descriptors (and never read): does
    // the server let go of connections whose peer sent FIN while it was stalled writing?
    let mut conns = Vec::new();
    for p in peers {
        // SO_LINGER 0 as well: once the client's own descriptor closes, a reset.
        crate::peers::cut(p.raw, true);
        conns.push(p.conn);
    }
    if fin {
        tokio::time::sleep(plan.hold).await;
        let stuck = server.counts().await?.connections - 1; // the side client
        report.row(
            &format!("{name} after their FIN (socket left open, never read)"),
            "let go",
            format!(
                "{stuck} of {} connections still held after {} s",
                plan.unread,
                plan.hold.as_secs()
            ),
            Some(stuck == 0),
        );
    }
    // Closing the clients closes their descriptors (after their own close grace), which
    // resets the sockets: the server's writes then fail. (Without the reset, a TCP
    // connection stays held until the client's kernel gives up on its orphaned socket.)
    for c in &conns {
        c.close();
    }
    for c in callers {
        c.abort();
    }
    drop(conns);
    let lat = side.stop().await?;
    report.row(
        &format!(
            "{} callers never reading {calls} replies of {size}",
            plan.unread
        ),
        "",
        format!(
            "peak RSS {} above the {} before (RSS {} while held; {} handlers running, {} unsent)",
            mib(peak.saturating_sub(rss0)),
            mib(rss0),
            mib(held),
            counts.handlers,
            mib(counts.unsent as u64)
        ),
        None,
    );
    // What waits to be sent is paid from the listeners' send budget (the default, 256 MiB)
    // beyond a free allowance, reading stops when it cannot be, and an answer beyond what
    // it can pay and a 256 KiB overdraft is refused: at most the allowance and the
    // overdraft more a connection.
    let bound = (256 << 20) + plan.unread as u64 * (16 + 256 + 4) * 1024;
    report.row(
        &format!("{name}: answers waiting to be sent"),
        &format!("<= send budget + 276 KiB a caller ({})", mib(bound)),
        mib(counts.unsent as u64),
        Some(counts.unsent as u64 <= bound),
    );
    side_row(report, name, &lat);
    let rss = after(server, report, plan, name, baseline).await;
    rss_row(report, name, rss, baseline);
    Ok(())
}

/// Long echoes each keeper has in flight at once, and their size: enough for the server to
/// read each into a buffer of its own while the ones before are still being answered.
const KEEPER_ECHOES: usize = 4;
const KEEPER_ECHO: usize = 200 * 1024;

/// Keepers that do their long echoes together (bounds this process's own memory).
const KEEPER_WAVE: usize = 50;

/// How long the keepers go on calling before the server's RSS is read.
const KEEPER_HOLD: Duration = Duration::from_secs(15);

/// Scenario 4b: connections that make a few long calls at once and then a small call every
/// 50 ms, so that they never go idle: the read buffers the server keeps for them between
/// messages must stay within the listener's budget, and a side client stays served.
pub async fn keepers(
    server: &mut Server,
    report: &mut Report,
    plan: &Plan,
    baseline: u64,
) -> Result<()> {
    eprintln!(
        "== keepers: {} connections each echo {KEEPER_ECHOES} x {} KiB at once, then call every 50 ms",
        plan.keepers,
        KEEPER_ECHO / 1024
    );
    let rss0 = server.rss();
    server.reset_peak();
    let side = SideClient::start(server.tcp_addr).await?;
    let stop = CancellationToken::new();
    let long = Value::Bin(vec![7u8; KEEPER_ECHO]);
    let mut keepers = Vec::new();
    let mut failed = 0;
    for wave in (0..plan.keepers).collect::<Vec<_>>().chunks(KEEPER_WAVE) {
        let mut echoed = Vec::new();
        for &i in wave {
            let kind = Kind::of(i as u64);
            let addr = listener_of(server, kind);
            let peer = open(kind, addr, None).await?;
            let counter = peer.counter().await?;
            let (done_tx, done) = tokio::sync::oneshot::channel();
            let (stop, long) = (stop.clone(), long.clone());
            keepers.push(tokio::spawn(async move {
                let calls = (0..KEEPER_ECHOES).map(|_| counter.call_value("echo", long.clone()));
                let ok = futures::future::join_all(calls)
                    .await
                    .iter()
                    .all(|r| r.as_ref().is_ok_and(|v| *v == long));
                drop(long);
                let _ = done_tx.send(ok);
                while !stop.is_cancelled() {
                    let _ = counter.call_value("increment", Value::Undefined).await;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = stop.cancelled() => {}
                    }
                }
                drop(counter);
                peer.cut(false);
            }));
            echoed.push(done);
        }
        for done in echoed {
            if !done.await.unwrap_or(false) {
                failed += 1;
            }
        }
    }
    // Long enough for the allocator to give back what the echoes freed (jemalloc purges
    // about 10 s after a free), so that what is left is what the server keeps.
    tokio::time::sleep(KEEPER_HOLD).await;
    let (held, peak) = (server.rss(), server.peak());
    stop.cancel();
    for k in keepers {
        let _ = k.await;
    }
    let lat = side.stop().await?;
    let cost = held.saturating_sub(rss0);
    report.row(
        &format!(
            "{} keepers: {KEEPER_ECHOES} long echoes at once, then a call every 50 ms",
            plan.keepers
        ),
        "≤ the listener's budget (256 MiB) + 64 KiB a connection",
        format!(
            "RSS {} above the {} before while they call ({:.0} KiB each; peak {}); {failed} echoes failed",
            mib(cost),
            mib(rss0),
            cost as f64 / 1024.0 / plan.keepers.max(1) as f64,
            mib(peak.saturating_sub(rss0)),
        ),
        Some(cost <= RECEIVE_BUDGET + plan.keepers as u64 * 64 * 1024 && failed == 0),
    );
    side_row(report, "keepers", &lat);
    let rss = after(server, report, plan, "keepers", baseline).await;
    rss_row(report, "keepers", rss, baseline);
    Ok(())
}

/// The listener of `kind`'s connections.
fn listener_of(server: &Server, kind: Kind) -> std::net::SocketAddr {
    match kind {
        Kind::Tcp => server.tcp_addr,
        Kind::Ws => server.ws_addr,
    }
}

/// The row of a side client that must have been served throughout scenario `name`.
fn side_row(report: &mut Report, name: &str, lat: &crate::peers::Latency) {
    report.row(
        &format!("{name}: side client"),
        "served",
        lat.summary(),
        Some(lat.errors == 0 && lat.calls > 0),
    );
}
