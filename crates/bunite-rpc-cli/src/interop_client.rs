//! `interop-client`: runs every check of INTEROP.md against a server, one line each.
//!
//! The checks use the dynamic API on purpose: an interop client must see the wire exactly as
//! any peer does, names and shapes spelled out.
//!
//! The server under test may be broken or hostile: what it answered is quoted in a failure
//! cut (`peer_text::debug` stops formatting a value after 1 KiB, so a 64 MiB answer is never
//! formatted whole), and each `FAIL` line is printed escaped and cut (`peer_text::shown`).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Result};
use bunite_rpc::dynamic::DynCap;
use bunite_rpc::{CallOptions, CapDef, Client, Code, Connection, Error, MethodDef, Status, Value};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::peer_text::{debug, shown};

/// One check: its INTEROP.md name and outcome.
pub struct Outcome {
    /// The check's name.
    pub name: &'static str,
    /// `Ok` or why it failed.
    pub result: Result<()>,
}

/// Serves the cap the server calls back (`askPeer`) from the start.
pub fn with_peer(builder: bunite_rpc::ConnectionBuilder) -> bunite_rpc::ConnectionBuilder {
    let def = CapDef::builder("interop.peer")
        .method(MethodDef::call("ping"))
        .build();
    let imp = DynCap::new().call("ping", |_, _| async { Ok(Value::from("pong from client")) });
    builder.serve(def, imp.build())
}

/// Runs every check in order on one connection (the counter starts at 0 for the first).
pub async fn run_checks(conn: &Connection) -> Vec<Outcome> {
    let mut out = Vec::new();
    macro_rules! check {
        ($name:literal, $f:expr) => {
            out.push(Outcome {
                name: $name,
                result: timed($f).await,
            });
        };
    }
    check!("bootstrap-and-calls", bootstrap_and_calls(conn));
    check!("echo-codec", echo_codec(conn));
    check!("errors", errors(conn));
    check!("unknown-method", unknown_method(conn));
    check!("unknown-cap", unknown_cap(conn));
    check!("versions", versions(conn));
    check!("policy", policy(conn));
    check!("runtime-absent", runtime_absent(conn));
    check!("sub-cap-dispose", sub_cap_dispose(conn));
    check!("cap-array-and-record", cap_array_and_record(conn));
    check!("stream-credit", stream_credit(conn));
    check!("stream-cancel", stream_cancel(conn));
    check!("cancel-call", cancel_call(conn));
    check!("deadline-server", deadline_server(conn));
    check!("deadline-client", deadline_client(conn));
    check!("revocation", revocation(conn));
    check!("bidirectional", bidirectional(conn));
    check!("concurrency", concurrency(conn));
    check!("large-payload", large_payload(conn));
    out
}

/// No check may hang the run.
async fn timed(f: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .map_err(|_| anyhow!("timed out after 30 s"))?
}

fn rec(pairs: &[(&str, Value)]) -> Value {
    Value::Record(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    )
}

fn field(v: &Value, key: &str) -> Result<Value> {
    v.as_record()
        .and_then(|r| r.get(key))
        .cloned()
        .ok_or_else(|| anyhow!("no {key:?} in {}", debug(v)))
}

fn int(v: &Value) -> Result<i128> {
    v.as_integer()
        .ok_or_else(|| anyhow!("not an integer: {}", debug(v)))
}

async fn counter(conn: &Connection) -> Result<Client> {
    Ok(conn.bootstrap_name("interop.counter", None).await?)
}

async fn count_of(c: &Client, method: &str, args: Value) -> Result<i128> {
    int(&field(&c.call_value(method, args).await?, "count")?)
}

fn expect_status(r: Result<Value, Error>, code: Code, reason: Option<&str>) -> Result<Status> {
    match r {
        Ok(v) => bail!("expected {code}, got {}", debug(&v)),
        Err(e) => {
            let s = e.into_status();
            ensure!(s.code == code, "expected {code}, got {s}");
            ensure!(s.reason() == reason, "expected reason {reason:?}, got {s}");
            Ok(s)
        }
    }
}

async fn bootstrap_and_calls(conn: &Connection) -> Result<()> {
    let c = counter(conn).await?;
    ensure!(
        count_of(&c, "increment", rec(&[("delta", 5.into())])).await? == 5,
        "+5"
    );
    ensure!(
        count_of(&c, "increment", rec(&[("delta", 1.into())])).await? == 6,
        "+1"
    );
    ensure!(
        count_of(&c, "increment", Value::Undefined).await? == 7,
        "default +1"
    );
    ensure!(count_of(&c, "get", Value::Undefined).await? == 7, "get");
    Ok(())
}

/// The rich value of the echo-codec check.
pub fn rich_value() -> Value {
    let ints = [
        63i64,
        64,
        127,
        128,
        4_294_967_295,
        -1,
        -32,
        -33,
        -128,
        -129,
        -32769,
        -2_147_483_648,
    ];
    let shape = |x: i64| rec(&[("x", x.into()), ("y", Value::from("same shape"))]);
    rec(&[
        (
            "ints",
            Value::Array(ints.iter().map(|i| Value::from(*i)).collect()),
        ),
        ("float", Value::Float(3.25)),
        ("unicode", Value::from("héllo ☃ 😀 日本")),
        (
            "nested",
            rec(&[(
                "a",
                rec(&[("b", rec(&[("c", Value::Array(vec![1.into(), rec(&[])]))]))]),
            )]),
        ),
        ("empty", rec(&[])),
        ("twins", Value::Array(vec![shape(1), shape(2)])),
        ("bin", Value::Bin((0..=255u8).collect())),
        ("long", Value::from("x".repeat(300))),
        ("null", Value::Null),
    ])
}

async fn echo_codec(conn: &Connection) -> Result<()> {
    let c = counter(conn).await?;
    let v = rich_value();
    let back = c.call_value("echo", v.clone()).await?;
    ensure!(back == v, "echo differs: {}", debug(&back));
    Ok(())
}

async fn errors(conn: &Connection) -> Result<()> {
    let c = counter(conn).await?;
    let args = rec(&[
        ("code", "failed_precondition".into()),
        ("message", "nope".into()),
        ("reason", "unauthorized".into()),
    ]);
    let s = expect_status(
        c.call_value("fail", args).await,
        Code::FailedPrecondition,
        Some("unauthorized"),
    )?;
    ensure!(s.message == "nope", "message {}", debug(&s.message));
    let s = expect_status(
        c.call_value("boom", Value::Undefined).await,
        Code::Internal,
        None,
    )?;
    ensure!(s.message == "boom", "boom message {}", debug(&s.message));
    Ok(())
}

async fn unknown_method(conn: &Connection) -> Result<()> {
    let c = counter(conn).await?;
    expect_status(
        c.call_value("noSuchMethod", Value::Undefined).await,
        Code::NotFound,
        None,
    )?;
    Ok(())
}

async fn unknown_cap(conn: &Connection) -> Result<()> {
    let r = conn
        .bootstrap_name("interop.missing", None)
        .await
        .map(|_| Value::Undefined);
    expect_status(r, Code::NotFound, None)?;
    Ok(())
}

async fn versions(conn: &Connection) -> Result<()> {
    let r = conn
        .bootstrap_name("interop.versioned", Some("1"))
        .await
        .map(|_| Value::Undefined);
    expect_status(r, Code::FailedPrecondition, Some("version_mismatch"))?;
    for version in [Some("2"), None] {
        let v = conn.bootstrap_name("interop.versioned", version).await?;
        ensure!(
            v.call_value("v", Value::Undefined).await? == Value::from("2"),
            "v"
        );
    }
    Ok(())
}

async fn policy(conn: &Connection) -> Result<()> {
    let r = conn
        .bootstrap_name("interop.secret", None)
        .await
        .map(|_| Value::Undefined);
    expect_status(r, Code::FailedPrecondition, Some("unauthorized"))?;
    Ok(())
}

async fn runtime_absent(conn: &Connection) -> Result<()> {
    expect_status(
        conn.runtime().call_value("appName", Value::Undefined).await,
        Code::NotFound,
        None,
    )?;
    Ok(())
}

/// Polls `f` until it holds (the server learns of drops asynchronously).
async fn until(mut f: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    for _ in 0..200 {
        if f().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("condition never held")
}

async fn sub_cap_dispose(conn: &Connection) -> Result<()> {
    let c = counter(conn).await?;
    let closed0 = int(&c.call_value("closedCount", Value::Undefined).await?)?;
    let live0 = int(&c.call_value("liveChildren", Value::Undefined).await?)?;
    let child = c
        .call_cap("makeChild", rec(&[("name", "kid".into())]))
        .await?;
    ensure!(
        int(&child.call_value("ping", rec(&[("x", 41.into())])).await?)? == 42,
        "ping"
    );
    ensure!(
        int(&c.call_value("liveChildren", Value::Undefined).await?)? == live0 + 1,
        "liveChildren rose"
    );
    let id = child.id();
    // Dispose through a client that knows the disposal method: `close`, then `drop`.
    let def = CapDef::builder("interop.child")
        .method(MethodDef::call("close"))
        .disposal("close")
        .build();
    child.with_def(def).dispose().await;
    ensure!(
        int(&c.call_value("closedCount", Value::Undefined).await?)? == closed0 + 1,
        "closedCount rose"
    );
    until(async || Ok(int(&c.call_value("liveChildren", Value::Undefined).await?)? == live0))
        .await?;
    let r = conn
        .client_for(id)
        .call_value("ping", rec(&[("x", 1.into())]))
        .await;
    expect_status(r, Code::NotFound, None)?;
    Ok(())
}

async fn cap_array_and_record(conn: &Connection) -> Result<()> {
    let c = counter(conn).await?;
    let names = rec(&[(
        "names",
        Value::Array(vec!["a".into(), "b".into(), "c".into()]),
    )]);
    let kids = c.call_caps("children", names.clone()).await?;
    ensure!(kids.len() == 3, "3 children");
    for (kid, expect) in kids.iter().zip(["a", "b", "c"]) {
        ensure!(
            kid.call_value("name", Value::Undefined).await? == Value::from(expect),
            "child name"
        );
    }
    let map = c.call_cap_record("childMap", names).await?;
    ensure!(
        map.iter().map(|(k, _)| k.as_str()).eq(["a", "b", "c"]),
        "childMap keys"
    );
    for (k, kid) in &map {
        ensure!(
            kid.call_value("name", Value::Undefined).await? == Value::from(k.as_str()),
            "childMap name"
        );
    }
    Ok(())
}

async fn stream_credit(conn: &Connection) -> Result<()> {
    let c = counter(conn).await?;
    let items: Vec<Result<Value, Error>> =
        c.stream("ticks", rec(&[("n", 100.into())])).collect().await;
    ensure!(items.len() == 100, "got {} items", items.len());
    for (i, item) in items.into_iter().enumerate() {
        ensure!(
            int(&field(&item?, "i")?)? == i as i128,
            "item {i} out of order"
        );
    }
    Ok(())
}

async fn stream_cancel(conn: &Connection) -> Result<()> {
    let c = counter(conn).await?;
    let before = int(&c.call_value("cancelledWatches", Value::Undefined).await?)?;
    let mut watch = c.stream("watch", rec(&[("everyMs", 5.into())]));
    for _ in 0..3 {
        watch.next().await.ok_or_else(|| anyhow!("watch ended"))??;
    }
    watch.cancel();
    drop(watch);
    until(async || Ok(int(&c.call_value("cancelledWatches", Value::Undefined).await?)? > before))
        .await
}

async fn cancel_call(conn: &Connection) -> Result<()> {
    let c = counter(conn).await?;
    let token = CancellationToken::new();
    let t2 = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        t2.cancel();
    });
    let start = Instant::now();
    let opts = CallOptions {
        cancel: Some(token),
        ..CallOptions::default()
    };
    let r = c.call_with("slow", rec(&[("ms", 5000.into())]), opts).await;
    expect_status(r, Code::Cancelled, None)?;
    ensure!(
        start.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        start.elapsed()
    );
    Ok(())
}

async fn deadline_server(conn: &Connection) -> Result<()> {
    let c = counter(conn).await?;
    let start = Instant::now();
    let v = c
        .call_with(
            "slow",
            rec(&[("ms", 5000.into())]),
            CallOptions::deadline(Duration::from_millis(100)),
        )
        .await?;
    ensure!(v == Value::from("aborted"), "got {}", debug(&v));
    let took = start.elapsed();
    ensure!(
        took >= Duration::from_millis(90) && took < Duration::from_millis(2500),
        "took {took:?}"
    );
    Ok(())
}

async fn deadline_client(conn: &Connection) -> Result<()> {
    let c = counter(conn).await?;
    let start = Instant::now();
    let args = rec(&[("ms", 5000.into()), ("ignoreAbort", true.into())]);
    let r = c
        .call_with(
            "slow",
            args,
            CallOptions::deadline(Duration::from_millis(100)),
        )
        .await;
    expect_status(r, Code::DeadlineExceeded, None)?;
    let took = start.elapsed();
    ensure!(
        took >= Duration::from_millis(590) && took < Duration::from_millis(3000),
        "took {took:?}"
    );
    Ok(())
}

async fn revocation(conn: &Connection) -> Result<()> {
    let e = conn.bootstrap_name("interop.ephemeral", None).await?;
    ensure!(
        e.call_value("ping", Value::Undefined).await? == Value::from("pong"),
        "ping"
    );
    e.call_value("unserveMe", Value::Undefined).await?;
    until(
        async || match e.call_value("ping", Value::Undefined).await {
            Ok(_) => Ok(false),
            Err(s) => {
                ensure!(
                    s.code() == Code::FailedPrecondition && s.reason() == Some("revoked"),
                    "got {s}"
                );
                Ok(true)
            }
        },
    )
    .await?;
    let r = conn
        .bootstrap_name("interop.ephemeral", None)
        .await
        .map(|_| Value::Undefined);
    expect_status(r, Code::NotFound, None)?;
    Ok(())
}

async fn bidirectional(conn: &Connection) -> Result<()> {
    let c = counter(conn).await?;
    let v = c.call_value("askPeer", Value::Undefined).await?;
    ensure!(v == Value::from("pong from client"), "got {}", debug(&v));
    Ok(())
}

async fn concurrency(conn: &Connection) -> Result<()> {
    let c = counter(conn).await?;
    let before = count_of(&c, "get", Value::Undefined).await?;
    let calls = (0..1000).map(|_| c.call_value("increment", Value::Undefined));
    for r in futures::future::join_all(calls).await {
        r?;
    }
    let after = count_of(&c, "get", Value::Undefined).await?;
    ensure!(after == before + 1000, "{before} + 1000 != {after}");
    Ok(())
}

async fn large_payload(conn: &Connection) -> Result<()> {
    let c = counter(conn).await?;
    let n = 8 * 1024 * 1024;
    match c
        .call_value("bytes", rec(&[("n", Value::from(n as i64))]))
        .await?
    {
        Value::Bin(b) => {
            ensure!(b.len() == n, "got {} bytes", b.len());
            ensure!(
                b.iter().enumerate().all(|(k, x)| *x == (k % 256) as u8),
                "content differs"
            );
            Ok(())
        }
        other => bail!(
            "expected binary, got a {:?}",
            std::mem::discriminant(&other)
        ),
    }
}

/// Connects to `url`, runs every check, prints one line each and the totals; returns the
/// number of failures.
pub async fn run(url: &str, key: Option<bunite_rpc::transport::sealed::Key>) -> Result<usize> {
    let builder = with_peer(Connection::builder().origin("bunite-rpc interop-client"));
    let conn = crate::connect::connect(url, key, builder).await?;
    let outcomes = run_checks(&conn).await;
    conn.close();
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    let printed = print_outcomes(&mut std::io::stdout().lock(), &outcomes);
    conn.closed().await;
    match printed {
        // A reader that has gone (`interop-client … | head -1`) ends the output; the exit
        // code still says whether every check passed.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(failed),
    }
}

/// Prints `PASS name` / `FAIL name: why` and `N passed, M failed` to `out`.
pub fn print_outcomes(out: &mut impl std::io::Write, outcomes: &[Outcome]) -> std::io::Result<()> {
    let mut failed = 0;
    for o in outcomes {
        match &o.result {
            Ok(()) => writeln!(out, "PASS {}", o.name)?,
            Err(e) => {
                failed += 1;
                // The server's words (its messages, values it answered) escaped and cut.
                writeln!(out, "FAIL {}: {}", o.name, shown(&format!("{e:#}")))?;
            }
        }
    }
    writeln!(out, "{} passed, {} failed", outcomes.len() - failed, failed)?;
    out.flush()
}
