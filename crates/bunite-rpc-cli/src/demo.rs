//! `demo`: the first thing to run. Starts the interop server on 127.0.0.1, tours the protocol
//! against it with one line per feature, then serves until Ctrl-C, which drains its
//! connections: calls in progress finish, new ones are refused (`--once` exits).
//!
//! `demo --web` serves the same tour as a web page (`js/web/demo.html`, the web client in the
//! browser) on the same port as `/rpc`, and prints its URL.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bunite_rpc::{CallOptions, CapDef, Connection, MethodDef, Record, Value};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::server_stats::Registry;

/// Writes a line (`say!(@part …)`: a part of one) to stdout, returning the error from the
/// enclosing function where `println!` would panic: a reader that has gone
/// (`demo --once | head -2`) ends the demo quietly (see `report` in main.rs).
macro_rules! say {
    () => {
        writeln!(std::io::stdout().lock())?
    };
    (@part $($fmt:tt)*) => {{
        let mut out = std::io::stdout().lock();
        write!(out, $($fmt)*)?;
        out.flush()?;
    }};
    ($($fmt:tt)*) => {
        writeln!(std::io::stdout().lock(), $($fmt)*)?
    };
}

/// Runs the demo.
pub async fn run(listen: &str, once: bool) -> Result<()> {
    let registry = Arc::new(Registry::default());
    let (url, _, serving) =
        crate::interop_server::start(listen, "/rpc", None, None, Some(Arc::clone(&registry)))
            .await?;
    say!("server     listening on {url} (the interop caps: interop.counter, interop.child, …)");
    let builder = crate::interop_client::with_peer(Connection::builder());
    let conn = crate::connect::connect(&url, None, builder).await?;
    tour(&conn).await?;
    conn.close();
    conn.closed().await;
    if once {
        serving.abort();
        return Ok(());
    }
    say!();
    say!("Still serving. From another shell:");
    say!("  bunite-rpc call {url} interop.counter increment '{{\"delta\": 2}}'");
    say!("  bunite-rpc stream {url} interop.counter ticks '{{\"n\": 5}}'");
    say!("  bunite-rpc interop-client {url}");
    say!("Ctrl-C to stop.");
    stop_on_ctrl_c(serving, &registry).await
}

/// How long calls in progress may take to finish once Ctrl-C is pressed.
const GRACE: Duration = Duration::from_secs(5);

/// Waits for Ctrl-C, then stops as a server should: no new connections, new calls refused
/// (`unavailable`, reason `peer_closing`), calls in progress finished for up to [`GRACE`],
/// then every connection closed. A second Ctrl-C stops at once.
async fn stop_on_ctrl_c(serving: tokio::task::JoinHandle<()>, registry: &Registry) -> Result<()> {
    tokio::signal::ctrl_c().await?;
    serving.abort();
    say!("stopping: calls in progress may finish (up to {GRACE:?}); Ctrl-C again stops now");
    tokio::select! {
        n = registry.drain(GRACE) => {
            let s = if n == 1 { "" } else { "s" };
            say!("stopped ({n} connection{s} drained)")
        }
        again = tokio::signal::ctrl_c() => again?,
    }
    Ok(())
}

/// Serves the demo page and the interop caps on one port until Ctrl-C.
pub async fn run_web(listen: &str, root: std::path::PathBuf) -> Result<()> {
    crate::web::check_root(&root)?;
    let max = crate::connect::transport_max(&None);
    let (addr, mut accepted) = crate::web::bind(listen, root, max).await?;
    say!("web        http://{addr}/  (the demo page; its socket is ws://{addr}/rpc)");
    say!("Open it in a browser and follow the tour. Ctrl-C to stop.");
    std::io::stdout().flush()?;
    let registry = Arc::new(Registry::default());
    let kept = Arc::clone(&registry);
    let serving = tokio::spawn(async move {
        while let Some(a) = accepted.recv().await {
            let attestation = bunite_rpc::Attestation {
                origin: a.origin.unwrap_or_default(),
                ..bunite_rpc::Attestation::default()
            };
            let conn = crate::connect::finish(
                a.transport,
                None,
                crate::interop_server::builder(attestation),
            );
            kept.add(conn);
        }
    });
    stop_on_ctrl_c(serving, &registry).await
}

fn rec(k: &'static str, v: impl Into<Value>) -> Value {
    Value::Record(Record::new().with(k, v))
}

async fn tour(conn: &Connection) -> Result<()> {
    let counter = conn.bootstrap_name("interop.counter", None).await?;
    say!("bootstrap  interop.counter -> cap-id {}", counter.id());

    let v = counter.call_value("increment", rec("delta", 5)).await?;
    say!("call       increment {{delta: 5}} -> {}", show(&v));

    let kid = counter.call_cap("makeChild", rec("name", "ada")).await?;
    let name = kid.call_value("name", Value::Undefined).await?;
    let child_def = CapDef::builder("interop.child")
        .method(MethodDef::call("close"))
        .disposal("close")
        .build();
    let id = kid.id();
    kid.with_def(child_def).dispose().await;
    say!("sub-cap    makeChild {{name: \"ada\"}} -> cap-id {id} named {}; disposed (close, then drop)", show(&name));

    let n = 40;
    let mut ticks = counter.stream("ticks", rec("n", n as i64));
    let mut got = 0;
    let tty = std::io::stdout().is_terminal();
    let bar = |got: usize| -> String {
        (0..20)
            .map(|i| if i < got * 20 / n { '#' } else { '.' })
            .collect()
    };
    while let Some(item) = ticks.next().await {
        item?;
        got += 1;
        if tty {
            say!(@part "\rstream     ticks {{n: {n}}} [{}] {got}/{n}", bar(got));
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }
    if !tty {
        say!(@part "stream     ticks {{n: {n}}} [{}] {got}/{n}", bar(got));
    }
    say!(" (credit-based flow control)");

    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        t.cancel();
    });
    let start = Instant::now();
    let opts = CallOptions {
        cancel: Some(token),
        ..CallOptions::default()
    };
    match counter.call_with("slow", rec("ms", 5000), opts).await {
        Err(e) => say!(
            "cancel     slow {{ms: 5000}} cancelled after {:?} -> {e}",
            start.elapsed()
        ),
        Ok(v) => bail!("slow was not cancelled: {v:?}"),
    }

    match conn.bootstrap_name("interop.secret", None).await {
        Err(e) => say!("policy     bootstrap interop.secret -> {e}"),
        Ok(_) => bail!("the policy let interop.secret through"),
    }

    let eph = conn.bootstrap_name("interop.ephemeral", None).await?;
    eph.call_value("unserveMe", Value::Undefined).await?;
    let revoked = loop {
        match eph.call_value("ping", Value::Undefined).await {
            Err(e) => break e,
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    say!("revoke     interop.ephemeral unserved by the server -> {revoked}");
    Ok(())
}

fn show(v: &Value) -> String {
    crate::json::to_json(v).map_or_else(|| "undefined".to_owned(), |j| j.to_string())
}
