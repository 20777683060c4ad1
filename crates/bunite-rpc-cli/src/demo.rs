//! `demo`: the first thing to run. Starts the interop server on 127.0.0.1, tours the protocol
//! against it with one line per feature, then serves until Ctrl-C or SIGTERM, which stops it
//! gracefully ([`crate::stop`]): calls in progress finish, new ones are refused (`--once`
//! exits).
//!
//! `demo --web` serves the same tour as a web page (`js/web/demo.html`, the web client in the
//! browser) on the same port as `/rpc`, and prints its URL.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bunite_rpc::{CallOptions, CapDef, Connection, ConnectionSet, MethodDef, Record, Value};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

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
    let connections = ConnectionSet::new();
    let (url, _, serving) =
        crate::interop_server::start(listen, "/rpc", None, None, None, &connections).await?;
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
    stop_on_signal(serving, &connections).await
}

/// Waits for Ctrl-C or SIGTERM, then stops as a server should ([`crate::stop`]): no new
/// connections, new calls refused (`unavailable`, reason `peer_closing`), calls in
/// progress finished for up to [`GRACE`](crate::stop::GRACE), then every connection closed
/// with a goaway. A second signal stops at once.
async fn stop_on_signal(
    serving: tokio::task::JoinHandle<()>,
    connections: &ConnectionSet,
) -> Result<()> {
    let grace = crate::stop::GRACE;
    let stopping = || {
        let _ = writeln!(
            std::io::stdout().lock(),
            "stopping: calls in progress may finish (up to {grace:?}); Ctrl-C again stops now"
        );
    };
    match crate::stop::serve_until(connections, serving, crate::stop::signal, grace, stopping).await
    {
        Some(n) => {
            let s = if n == 1 { "" } else { "s" };
            say!("stopped ({n} connection{s} drained)")
        }
        None => say!("stopped (connections closed at once)"),
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
    let connections = ConnectionSet::new();
    let kept = connections.clone();
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
            kept.insert(&conn);
        }
    });
    stop_on_signal(serving, &connections).await
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
