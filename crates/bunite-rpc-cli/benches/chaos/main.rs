//! Chaos, floods and soak (issue 12, item 4): a real `bunite-rpc interop-server` over TCP
//! and WebSocket, attacked from this process, with figures.
//!
//! The server runs as a child process (`interop-server --tcp 127.0.0.1:0 --stats`), so its
//! RSS and peak RSS (`/proc/PID/status` `VmRSS`/`VmHWM`, the peak reset through
//! `clear_refs` before each measurement) are the server's alone; it reports its live
//! connections, their tasks, handlers and streams, and its runtime's tasks on request.
//! Scenarios, in order:
//!
//! 1. **random closes**: thousands of connections (TCP and WebSocket at random) cut (FIN or
//!    reset) at a random point: during the WebSocket handshake or the hello, mid-frame (a
//!    length prefix or frame header and part of its body), mid-call (`slow`, `increment`,
//!    `echo`, `makeChild` in flight), mid-stream (`watch` or `ticks` partly read);
//! 2. **idle flood**: N idle TCP then N idle WebSocket connections: the server's RSS per
//!    connection; then N WebSocket connections that each echo one 120 KiB message and stay
//!    open: what an idle connection keeps after a long message;
//! 3. **slow peers**: peers that send the header of a maximal message and half its body,
//!    then stop: the server's peak RSS against the listener's receive budget, a side
//!    client served meanwhile;
//! 4. **callers that never read**: connections that fire calls for 256 KiB replies and stop
//!    reading, then connections that each ask four times for 32 MiB (replies the send budget
//!    cannot pay for once it is spent, refused rather than held): the server's peak RSS and
//!    what waits to be sent, against the listener's send budget; then **keepers**: connections that make four 200 KiB
//!    echoes at once and then a small call every 50 ms, never idle: what the server keeps
//!    for them between messages, against the listener's budget;
//! 5. **maximal frames**: 64 MiB `call` frames whose args are an array of `nil`s or of small
//!    15-key records, one client at a time, then eight at once: peak RSS, the goaway each
//!    attacker gets, a side client's worst latency, RSS 15 s after;
//! 6. **soak**: connections making calls (increment, echo, a child made, pinged and
//!    disposed, a short stream) for ten minutes: RSS and tasks sampled, RSS trend.
//!
//! After every scenario the harness waits until the server has no connection, connection
//! task, handler or stream left and its runtime is back to its idle tasks; then it reads
//! the RSS and runs `bunite-rpc interop-client` against both URLs. Those three are the
//! gates (exit code 1 if one fails: tasks left after 45 s, RSS above baseline + 128 MiB,
//! an interop check failing); the other figures are reported against the targets
//! in the final table.
//!
//! Run with: `cargo bench -p bunite-rpc-cli --bench chaos` (the full run, ~20 min), or
//! `cargo bench -p bunite-rpc-cli --bench chaos -- --quick` (~4 min, run by `.ci/run`).
//! Options: `--soak SECS` (default 600, quick 20), `--idle N` (the idle flood's connections
//! of each kind: default 2,000, quick 300; `--quick --idle 2000` measures the idle cost at
//! the full run's count), `--decay SECS` (how long the RSS may take to come back within
//! 10% of the baseline after a scenario, default 30),
//! `--only closes,idle,slow,unread,keepers,frames,soak`, `--repeat N` (the sequence N times on one
//! server: does the memory kept after a scenario grow with each run?), `--bin PATH` (another
//! `bunite-rpc` binary). Raise `ulimit -n` above twice the idle flood (4,000 descriptors per
//! side for the full run).

mod closes;
mod floods;
mod frames;
mod peers;
mod server;
mod soak;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use server::{Server, MIB};

/// How big each scenario is.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub closes: usize,
    pub idle: usize,
    pub slow: usize,
    pub unread: usize,
    pub keepers: usize,
    pub hold: Duration,
    pub all_singles: bool,
    pub soak_conns: usize,
    pub soak: Duration,
    pub only: Option<Vec<String>>,
    /// The longest wait for the RSS to come back after a scenario ([`DECAY`]).
    pub decay: Duration,
    /// Runs of the whole sequence on the same server (memory kept or growing across runs).
    pub repeat: usize,
}

impl Plan {
    fn wants(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|n| n == name))
    }
}

/// One line of the final table.
#[derive(Debug)]
pub struct Row {
    pub figure: String,
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

/// The figures and the gate failures.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub failures: Vec<String>,
}

impl Report {
    pub fn row(&mut self, figure: &str, target: &str, measured: String, met: Option<bool>) {
        eprintln!(
            "   {figure}: {measured}{}",
            match met {
                Some(true) => " (met)",
                Some(false) => " (NOT met)",
                None => "",
            }
        );
        self.rows.push(Row {
            figure: figure.to_owned(),
            target: target.to_owned(),
            measured,
            met,
        });
    }

    pub fn fail(&mut self, what: String) {
        eprintln!("   GATE FAILED: {what}");
        self.failures.push(what);
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB)
}

/// How long the RSS may take by default to come back within 10% of the baseline after a
/// scenario settled (`--decay SECS`): an allocator gives freed memory back to the kernel
/// after a decay time, not at once (the binary's jemalloc purges pages about 10 s after
/// they were freed). Also the longest wait for the baseline to stop falling.
pub const DECAY: Duration = Duration::from_secs(30);

/// The RSS after a scenario, and how long after the scenario settled it was read.
#[derive(Debug, Clone, Copy)]
pub struct Back {
    pub rss: u64,
    pub waited: Duration,
}

/// After a scenario: nothing left, RSS back, every interop check passes. The RSS is read
/// once it is within 10% of `baseline`, or after [`DECAY`].
pub async fn after(
    server: &mut Server,
    report: &mut Report,
    plan: &Plan,
    name: &str,
    baseline: u64,
) -> Back {
    match server.settle(Duration::from_secs(45)).await {
        Ok(t) => eprintln!("   {name}: settled in {:.1} s", t.as_secs_f64()),
        Err(left) => report.fail(format!("{name}: left after 45 s: {left}")),
    }
    // The byte stream lets an idle read buffer go after 100 ms; the allocator gives freed
    // memory back after its decay time.
    let start = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let target = baseline + baseline / 10;
    let mut rss = server.rss();
    let mut shown = Duration::ZERO;
    while rss > target && start.elapsed() < plan.decay {
        if start.elapsed() >= shown + Duration::from_secs(5) {
            shown = start.elapsed();
            eprintln!(
                "   {name}: RSS {} {:.0} s after settling",
                mib(rss),
                shown.as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        rss = server.rss();
    }
    eprintln!(
        "   {name}: RSS {} ({}{})",
        mib(rss),
        server.rss_parts(),
        heap(server).await
    );
    let back = Back {
        rss,
        waited: start.elapsed(),
    };
    let gate = baseline + (128 << 20);
    if rss > gate {
        report.fail(format!(
            "{name}: RSS {} not back within baseline {} + 128 MiB",
            mib(rss),
            mib(baseline)
        ));
    }
    match server.interop().await {
        Ok(()) => eprintln!("   {name}: interop-client passes (TCP, WebSocket)"),
        Err(e) => report.fail(format!("{name}: {e:#}")),
    }
    back
}

/// The allocator's figures, when the server's binary keeps them (`jemalloc-stats`).
async fn heap(server: &mut Server) -> String {
    match server.counts().await {
        Ok(c) if c.heap.active > 0 => format!(
            "; heap: allocated {}, active {}, resident {}, metadata {}",
            mib(c.heap.allocated as u64),
            mib(c.heap.active as u64),
            mib(c.heap.resident as u64),
            mib(c.heap.metadata as u64)
        ),
        _ => String::new(),
    }
}

/// The RSS after a scenario against the baseline, as a row (target: within 10%).
pub fn rss_row(report: &mut Report, name: &str, back: Back, baseline: u64) {
    let pct = (back.rss as f64 / baseline as f64 - 1.0) * 100.0;
    report.row(
        &format!("{name}: RSS after, settled"),
        "within 10% of baseline",
        format!(
            "{} ({pct:+.1}%), read {:.1} s after settling",
            mib(back.rss),
            back.waited.as_secs_f64()
        ),
        Some(pct <= 10.0),
    );
}

/// The RSS once it has stopped falling (no new low for 3 s), at most `decay` after the
/// call: the baseline, after the warm-up's memory has been given back.
async fn steady_rss(server: &Server, decay: Duration) -> u64 {
    let start = std::time::Instant::now();
    let (mut low, mut low_at) = (server.rss(), start);
    while low_at.elapsed() < Duration::from_secs(3) && start.elapsed() < decay {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let rss = server.rss();
        if rss < low {
            (low, low_at) = (rss, std::time::Instant::now());
        }
    }
    low
}

fn parse_args() -> Result<(Plan, PathBuf)> {
    let mut quick = false;
    let mut soak = None;
    let mut idle = None;
    let mut decay = DECAY;
    let mut only = None;
    let mut repeat = 1;
    let mut bin = PathBuf::from(env!("CARGO_BIN_EXE_bunite-rpc"));
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--bench" => {} // cargo bench passes it
            "--soak" => soak = Some(args.next().unwrap_or_default().parse::<u64>()?),
            "--decay" => {
                decay = Duration::from_secs(args.next().unwrap_or_default().parse::<u64>()?)
            }
            "--idle" => idle = Some(args.next().unwrap_or_default().parse::<usize>()?),
            "--only" => {
                only = Some(
                    args.next()
                        .unwrap_or_default()
                        .split(',')
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "--repeat" => repeat = args.next().unwrap_or_default().parse::<usize>()?.max(1),
            "--bin" => bin = PathBuf::from(args.next().unwrap_or_default()),
            other => bail!("unknown argument {other:?} (see the top of benches/chaos/main.rs)"),
        }
    }
    let plan = match quick {
        true => Plan {
            quick,
            closes: 600,
            idle: idle.unwrap_or(300),
            slow: 20,
            unread: 6,
            keepers: 100,
            hold: Duration::from_secs(3),
            all_singles: false,
            soak_conns: 50,
            soak: Duration::from_secs(soak.unwrap_or(20)),
            only,
            decay,
            repeat,
        },
        false => Plan {
            quick,
            closes: 5000,
            idle: idle.unwrap_or(2000),
            slow: 100,
            unread: 20,
            keepers: 1000,
            hold: Duration::from_secs(8),
            all_singles: true,
            soak_conns: 200,
            soak: Duration::from_secs(soak.unwrap_or(600)),
            only,
            decay,
            repeat,
        },
    };
    Ok((plan, bin))
}

/// The soft limit on open files, from `/proc/self/limits`.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn main() -> Result<()> {
    let (plan, bin) = parse_args()?;
    if let Some(limit) = open_files_limit() {
        let need = 2 * plan.idle as u64 + 200;
        if limit < need {
            bail!("ulimit -n is {limit}; this plan needs {need}: raise it (ulimit -n 20000)");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run(plan, bin))?;
    rt.shutdown_timeout(Duration::from_secs(1));
    print_table(&report);
    if !report.failures.is_empty() {
        eprintln!("{} gate(s) failed:", report.failures.len());
        for f in &report.failures {
            eprintln!("- {f}");
        }
        std::process::exit(1);
    }
    Ok(())
}

async fn run(plan: Plan, bin: PathBuf) -> Result<Report> {
    let mut report = Report::default();
    let mut server = Server::start(bin).await?;
    eprintln!(
        "server pid {} at {} and {} ({} mode)",
        server.pid,
        server.tcp_url,
        server.ws_url,
        if plan.quick { "quick" } else { "full" }
    );
    eprintln!("load: {}", load());
    // Warm up (first connections, the interop client's 8 MiB reply) before the baseline.
    server.interop().await?;
    if let Err(left) = server.settle(Duration::from_secs(30)).await {
        bail!("the server did not settle after the warm-up: {left}");
    }
    let baseline = steady_rss(&server, plan.decay).await;
    eprintln!(
        "baseline RSS {} ({}{}; peak reset: {})",
        mib(baseline),
        server.rss_parts(),
        heap(&mut server).await,
        server.reset_peak()
    );
    report.row(
        "baseline RSS (after a warm-up interop run)",
        "",
        mib(baseline),
        None,
    );

    for round in 1..=plan.repeat {
        if plan.repeat > 1 {
            eprintln!("== round {round} of {}", plan.repeat);
        }
        if plan.wants("closes") {
            closes::run(&mut server, &mut report, &plan, baseline).await?;
        }
        if plan.wants("idle") {
            floods::idle(&mut server, &mut report, &plan, baseline).await?;
        }
        if plan.wants("slow") {
            floods::slow(&mut server, &mut report, &plan, baseline).await?;
        }
        if plan.wants("unread") {
            floods::unread(&mut server, &mut report, &plan, baseline).await?;
        }
        if plan.wants("keepers") {
            floods::keepers(&mut server, &mut report, &plan, baseline).await?;
        }
        if plan.wants("frames") {
            frames::run(&mut server, &mut report, &plan, baseline).await?;
        }
        if plan.wants("soak") {
            soak::run(&mut server, &mut report, &plan, baseline).await?;
        }
    }
    eprintln!("load: {}", load());
    server.stop().await;
    Ok(report)
}

/// `/proc/loadavg`'s three averages.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn print_table(report: &Report) {
    println!("| figure | target | measured | met |");
    println!("| --- | --- | --- | --- |");
    for r in &report.rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        println!("| {} | {} | {} | {met} |", r.figure, r.target, r.measured);
    }
}
