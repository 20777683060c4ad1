//! The server under test: `bunite-rpc interop-server --tcp 127.0.0.1:0 --stats` as a child
//! process, so that its memory (`/proc/PID/status`) is the server's alone; its live counts
//! are asked for on its stdin (see the CLI's `server_stats`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub const MIB: f64 = 1024.0 * 1024.0;

/// The server's live counts (one `stats` line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub connections: usize,
    pub tasks: usize,
    pub handlers: usize,
    pub streams: usize,
    /// Bytes encoded and not yet handed to the transports.
    pub unsent: usize,
    pub runtime_tasks: usize,
    /// The allocator's figures, when the binary keeps them (feature `jemalloc-stats`);
    /// zeros otherwise.
    pub heap: Heap,
}

/// jemalloc's figures, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Heap {
    /// Allocated and live.
    pub allocated: usize,
    /// In active pages (live plus the unused parts of partly used slabs).
    pub active: usize,
    /// Resident, dirty pages not yet purged included.
    pub resident: usize,
    /// The allocator's own metadata.
    pub metadata: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connections, {} connection tasks, {} handlers, {} streams, {} runtime tasks",
            self.connections, self.tasks, self.handlers, self.streams, self.runtime_tasks
        )
    }
}

#[derive(Debug)]
pub struct Server {
    pub bin: PathBuf,
    child: Child,
    pub pid: u32,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    pub ws_url: String,
    pub tcp_url: String,
    pub ws_addr: SocketAddr,
    pub tcp_addr: SocketAddr,
    /// The runtime's tasks when idle (listeners, the stats reader).
    pub idle_runtime_tasks: usize,
}

impl Server {
    pub async fn start(bin: PathBuf) -> Result<Server> {
        let mut child = Command::new(&bin)
            .args(["interop-server", "--tcp", "127.0.0.1:0", "--stats"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().ok_or_else(|| anyhow!("no pid"))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut stdout = BufReader::new(stdout).lines();
        let (mut ws_url, mut tcp_url) = (String::new(), String::new());
        while ws_url.is_empty() || tcp_url.is_empty() {
            let line = tokio::time::timeout(Duration::from_secs(20), stdout.next_line())
                .await
                .context("the server did not print its URLs")??
                .ok_or_else(|| anyhow!("the server exited"))?;
            match line.strip_prefix("listening ") {
                Some(u) if u.starts_with("ws://") => ws_url = u.to_owned(),
                Some(u) if u.starts_with("tcp://") => tcp_url = u.to_owned(),
                _ => {}
            }
        }
        let ws_addr = ws_url
            .trim_start_matches("ws://")
            .trim_end_matches("/rpc")
            .parse()?;
        let tcp_addr = tcp_url.trim_start_matches("tcp://").parse()?;
        let mut server = Server {
            bin,
            child,
            pid,
            stdin,
            stdout,
            ws_url,
            tcp_url,
            ws_addr,
            tcp_addr,
            idle_runtime_tasks: 0,
        };
        server.idle_runtime_tasks = server.counts().await?.runtime_tasks;
        Ok(server)
    }

    pub async fn counts(&mut self) -> Result<Counts> {
        self.stdin.write_all(b"stats\n").await?;
        self.stdin.flush().await?;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(20), self.stdout.next_line())
                .await
                .context("the server did not answer stats")??
                .ok_or_else(|| anyhow!("the server exited"))?;
            let Some(rest) = line.strip_prefix("stats ") else {
                continue;
            };
            let mut c = Counts::default();
            for kv in rest.split_whitespace() {
                let (k, v) = kv.split_once('=').unwrap_or((kv, "0"));
                let v: usize = v.parse().unwrap_or(usize::MAX);
                match k {
                    "connections" => c.connections = v,
                    "tasks" => c.tasks = v,
                    "handlers" => c.handlers = v,
                    "streams" => c.streams = v,
                    "unsent" => c.unsent = v,
                    "runtime_tasks" => c.runtime_tasks = v,
                    "heap_allocated" => c.heap.allocated = v,
                    "heap_active" => c.heap.active = v,
                    "heap_resident" => c.heap.resident = v,
                    "heap_metadata" => c.heap.metadata = v,
                    _ => {}
                }
            }
            return Ok(c);
        }
    }

    fn status_kb(&self, key: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no {key} in /proc/{}/status", self.pid))
    }

    /// Resident set size now, in bytes.
    pub fn rss(&self) -> u64 {
        self.status_kb("VmRSS:").unwrap_or(0) * 1024
    }

    /// The resident set split as the kernel counts it: anonymous memory (the heap, stacks)
    /// and file-backed pages (the binary's code and data as they are touched).
    pub fn rss_parts(&self) -> String {
        let kb = |k: &str| self.status_kb(k).unwrap_or(0) as f64 / 1024.0;
        format!(
            "anon {:.1} MiB, file {:.1} MiB",
            kb("RssAnon:"),
            kb("RssFile:")
        )
    }

    /// Peak resident set size since the last [`reset_peak`](Self::reset_peak), in bytes.
    pub fn peak(&self) -> u64 {
        self.status_kb("VmHWM:").unwrap_or(0) * 1024
    }

    /// Resets the peak (`echo 5 > /proc/PID/clear_refs`); false if the kernel refused.
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok()
    }

    /// Waits until no connection, connection task, handler or stream is left and the
    /// runtime is back to its idle tasks; returns how long that took, or the counts left
    /// after `timeout`.
    pub async fn settle(&mut self, timeout: Duration) -> Result<Duration, Counts> {
        let start = Instant::now();
        loop {
            let c = self.counts().await.unwrap_or(Counts {
                connections: usize::MAX,
                ..Counts::default()
            });
            if c.connections == 0 && c.tasks == 0 && c.runtime_tasks <= self.idle_runtime_tasks {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(c);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `bunite-rpc interop-client` against both URLs; the failures, if any.
    pub async fn interop(&self) -> Result<()> {
        for url in [&self.tcp_url, &self.ws_url] {
            let out = Command::new(&self.bin)
                .args(["interop-client", url])
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(Duration::from_secs(120), out)
                .await
                .context("interop-client hung")??;
            if !out.status.success() {
                let text = String::from_utf8_lossy(&out.stdout);
                let fails: Vec<&str> = text.lines().filter(|l| !l.starts_with("PASS")).collect();
                bail!(
                    "interop-client {url}: {} {}",
                    fails.join("; "),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        Ok(())
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
