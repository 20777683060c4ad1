//! `interop-server`: serves the caps of INTEROP.md on every connection, each connection
//! with its own state.

use std::io::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bunite_rpc::dynamic::DynCap;
use bunite_rpc::emitter::emitter_stream;
use bunite_rpc::transport::sealed::Key;
use bunite_rpc::transport::stream::ByteStream;
use bunite_rpc::transport::ws::WsListener;
use bunite_rpc::{
    Attestation, CallContext, CapDef, CapDefRef, CapImpl, Code, Connection, ExportedCap, MethodDef,
    Policy, Record, Returned, Returns, Status, Value,
};
use futures::StreamExt;

use crate::connect::{finish, transport_max};

/// Largest `bytes {n}` the server will produce (the protocol's default `maxBytes`).
const MAX_BYTES_REPLY: usize = 64 * 1024 * 1024 - 64;

/// Runs the server until killed.
pub async fn run(listen: &str, path: &str, tcp: Option<&str>, key: Option<Key>) -> Result<()> {
    let (ws_url, tcp_url, serving) = start(listen, path, tcp, key).await?;
    println!("listening {ws_url}");
    if let Some(url) = tcp_url {
        println!("listening {url}");
    }
    std::io::stdout().flush()?;
    serving.await?;
    Ok(())
}

/// Binds the sockets and returns their URLs and the task that accepts connections.
pub async fn start(
    listen: &str,
    path: &str,
    tcp: Option<&str>,
    key: Option<Key>,
) -> Result<(String, Option<String>, tokio::task::JoinHandle<()>)> {
    let max = transport_max(&key);
    let ws = WsListener::bind(listen, path).await?.with_max_bytes(max);
    let ws_url = format!("ws://{}{}", ws.local_addr()?, path);
    let tcp = match tcp {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    let tcp_url = match &tcp {
        Some(l) => Some(format!("tcp://{}", l.local_addr()?)),
        None => None,
    };
    let serving = tokio::spawn(async move {
        let ws_key = key.clone();
        let ws_loop = async move {
            while let Ok(accepted) = ws.accept().await {
                let attestation = Attestation {
                    origin: accepted.origin.unwrap_or_default(),
                    ..Attestation::default()
                };
                finish(accepted.transport, ws_key.clone(), builder(attestation));
            }
        };
        let tcp_loop = async move {
            let Some(listener) = tcp else { return };
            while let Ok((socket, _)) = listener.accept().await {
                let t = ByteStream::tcp(socket).with_max_bytes(max);
                finish(t, key.clone(), builder(Attestation::default()));
            }
        };
        tokio::join!(ws_loop, tcp_loop);
    });
    Ok((ws_url, tcp_url, serving))
}

/// A connection serving every interop cap with fresh state. The caps are served by the
/// builder, before the connection reads: a client may bootstrap as soon as it sees hello.
fn builder(attestation: Attestation) -> bunite_rpc::ConnectionBuilder {
    let builder = Connection::builder()
        .attestation(attestation)
        .origin("bunite-rpc interop-server")
        .policy(Policy::new(|name, _| name != "interop.secret"));
    interop_caps()
        .into_iter()
        .fold(builder, |b, (def, imp)| b.serve(def, imp))
}

/// Per-connection state of `interop.counter`.
#[derive(Default)]
struct State {
    count: AtomicI64,
    closed: AtomicU64,
    live_children: AtomicI64,
    cancelled_watches: AtomicU64,
}

/// Every interop cap, with fresh per-connection state.
fn interop_caps() -> Vec<(Arc<CapDef>, Arc<dyn CapImpl>)> {
    let state = Arc::new(State::default());
    let v = DynCap::new().call("v", |_, _| async { Ok(Value::from("2")) });
    let secret = DynCap::new().call("ping", |_, _| async { Ok(Value::from("secret")) });
    vec![
        (counter_def(), counter_impl(state)),
        (versioned_def(), v.build()),
        (ephemeral_def(), ephemeral_impl()),
        (secret_def(), secret.build()),
    ]
}

fn counter_def() -> Arc<CapDef> {
    let child = || CapDefRef::Lazy(child_def);
    [
        MethodDef::call("get").idempotent(),
        MethodDef::call("increment"),
        MethodDef::call("echo"),
        MethodDef::call("fail"),
        MethodDef::call("boom"),
        MethodDef::call("slow"),
        MethodDef::call("makeChild").returns(Returns::Cap(child())),
        MethodDef::call("children").returns(Returns::CapArray(child())),
        MethodDef::call("childMap").returns(Returns::CapRecord(child())),
        MethodDef::call("closedCount").idempotent(),
        MethodDef::call("liveChildren").idempotent(),
        MethodDef::call("cancelledWatches").idempotent(),
        MethodDef::stream("ticks"),
        MethodDef::stream("watch"),
        MethodDef::call("bytes"),
        MethodDef::call("askPeer"),
    ]
    .into_iter()
    .fold(CapDef::builder("interop.counter"), |b, m| b.method(m))
    .build()
}

fn child_def() -> Arc<CapDef> {
    CapDef::builder("interop.child")
        .method(MethodDef::call("name").idempotent())
        .method(MethodDef::call("ping"))
        .method(MethodDef::call("close"))
        .disposal("close")
        .build()
}

fn versioned_def() -> Arc<CapDef> {
    CapDef::builder("interop.versioned")
        .version("2")
        .method(MethodDef::call("v"))
        .build()
}

fn ephemeral_def() -> Arc<CapDef> {
    CapDef::builder("interop.ephemeral")
        .method(MethodDef::call("ping"))
        .method(MethodDef::call("unserveMe"))
        .build()
}

fn secret_def() -> Arc<CapDef> {
    CapDef::builder("interop.secret")
        .method(MethodDef::call("ping"))
        .build()
}

fn arg<'a>(args: &'a Value, key: &str) -> Option<&'a Value> {
    args.as_record().and_then(|r| r.get(key))
}

fn count_record(n: i64) -> Value {
    Value::Record(Record::new().with("count", n))
}

fn names(args: &Value) -> Vec<String> {
    match arg(args, "names") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn counter_impl(state: Arc<State>) -> Arc<dyn CapImpl> {
    let s = state.clone();
    let get = move |_, _| {
        let n = s.count.load(Ordering::SeqCst);
        async move { Ok(count_record(n)) }
    };
    let s = state.clone();
    let increment = move |args: Value, _| {
        let delta = arg(&args, "delta").and_then(Value::as_integer).unwrap_or(1) as i64;
        let n = s.count.fetch_add(delta, Ordering::SeqCst) + delta;
        async move { Ok(count_record(n)) }
    };
    let (s1, s2, s3) = (state.clone(), state.clone(), state.clone());
    let (s4, s5, s6, s7) = (state.clone(), state.clone(), state.clone(), state);
    DynCap::new()
        .call("get", get)
        .call("increment", increment)
        .call("echo", |args, _| async move { Ok(args) })
        .call("fail", |args: Value, _| async move {
            Err::<Value, _>(requested_failure(&args))
        })
        .call("boom", |_, _| async {
            Err::<Value, _>(Status::internal("boom"))
        })
        .call("slow", slow)
        .call("makeChild", move |args: Value, _| {
            let child = child(
                arg(&args, "name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                &s1,
            );
            async move { Ok(child) }
        })
        .call("children", move |args: Value, _| {
            let kids: Vec<ExportedCap> = names(&args).into_iter().map(|n| child(n, &s2)).collect();
            async move { Ok(kids) }
        })
        .call("childMap", move |args: Value, _| {
            let kids = names(&args)
                .into_iter()
                .map(|n| (n.clone(), child(n, &s3)))
                .collect();
            async move { Ok(Returned::CapRecord(kids)) }
        })
        .call("closedCount", move |_, _| {
            let n = s4.closed.load(Ordering::SeqCst);
            async move { Ok(Value::uint(n)) }
        })
        .call("liveChildren", move |_, _| {
            let n = s5.live_children.load(Ordering::SeqCst);
            async move { Ok(Value::Int(n)) }
        })
        .call("cancelledWatches", move |_, _| {
            let n = s6.cancelled_watches.load(Ordering::SeqCst);
            async move { Ok(Value::uint(n)) }
        })
        .stream("ticks", |args: Value, _| {
            let n = arg(&args, "n")
                .and_then(Value::as_integer)
                .unwrap_or(0)
                .max(0) as i64;
            Ok(
                futures::stream::iter(
                    (0..n).map(|i| Ok(Value::Record(Record::new().with("i", i)))),
                )
                .boxed(),
            )
        })
        .stream("watch", move |args: Value, _| Ok(watch(&args, s7.clone())))
        .call("bytes", |args: Value, _| async move {
            let n = arg(&args, "n").and_then(Value::as_integer).unwrap_or(0);
            let n = usize::try_from(n).ok().filter(|n| *n <= MAX_BYTES_REPLY);
            let n = n.ok_or_else(|| Status::invalid_argument("bytes: n must be 0..=64 MiB"))?;
            Ok(Value::Bin((0..n).map(|k| (k % 256) as u8).collect()))
        })
        .call("askPeer", |_, ctx: CallContext| async move {
            let peer = ctx
                .connection()
                .bootstrap_name("interop.peer", None)
                .await?;
            peer.call_value("ping", Value::Undefined).await
        })
        .build()
}

/// `fail {code, message?, reason?}`: that Status (`details = {reason}` when given).
fn requested_failure(args: &Value) -> Status {
    let code = arg(args, "code")
        .and_then(Value::as_str)
        .and_then(Code::parse)
        .unwrap_or(Code::Internal);
    let message = arg(args, "message")
        .and_then(Value::as_str)
        .unwrap_or("requested failure");
    let status = Status::new(code, message);
    match arg(args, "reason").and_then(Value::as_str) {
        Some(reason) => status.with_reason(reason),
        None => status,
    }
}

/// `slow {ms, ignoreAbort?}`: "done" after `ms`, or "aborted" at once when signalled.
async fn slow(args: Value, ctx: CallContext) -> Result<Value, Status> {
    let ms = arg(&args, "ms")
        .and_then(Value::as_integer)
        .unwrap_or(0)
        .clamp(0, 600_000) as u64;
    let ignore = matches!(arg(&args, "ignoreAbort"), Some(Value::Bool(true)));
    let sleep = tokio::time::sleep(Duration::from_millis(ms));
    tokio::pin!(sleep);
    if !ignore {
        tokio::select! {
            _ = &mut sleep => {}
            _ = ctx.cancelled() => return Ok(Value::from("aborted")),
        }
    }
    sleep.await;
    Ok(Value::from("done"))
}

/// Counts a watch that ended before its natural end, which is every watch: it never ends.
struct WatchGuard(Arc<State>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.cancelled_watches.fetch_add(1, Ordering::SeqCst);
    }
}

fn watch(args: &Value, state: Arc<State>) -> bunite_rpc::ValueStream {
    let every = arg(args, "everyMs")
        .and_then(Value::as_integer)
        .unwrap_or(5)
        .clamp(1, 60_000) as u64;
    emitter_stream(move |mut em| async move {
        let _guard = WatchGuard(state.clone());
        loop {
            em.send(count_record(state.count.load(Ordering::SeqCst)))
                .await?;
            tokio::time::sleep(Duration::from_millis(every)).await;
        }
    })
}

/// Counts live children: the runtime drops the implementation when the entry is freed.
struct Live(Arc<State>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live_children.fetch_sub(1, Ordering::SeqCst);
    }
}

fn child(name: String, state: &Arc<State>) -> ExportedCap {
    state.live_children.fetch_add(1, Ordering::SeqCst);
    let live = Arc::new(Live(state.clone()));
    let closed = state.clone();
    let imp = DynCap::new()
        .call("name", move |_, _| {
            let (name, _live) = (name.clone(), live.clone());
            async move { Ok(Value::from(name)) }
        })
        .call("ping", |args: Value, _| async move {
            let x = arg(&args, "x").and_then(Value::as_integer).unwrap_or(0);
            Ok(Value::from(x as i64 + 1))
        })
        .call("close", move |_, _| {
            closed.closed.fetch_add(1, Ordering::SeqCst);
            async { Ok(Value::Undefined) }
        })
        .build();
    ExportedCap::new(child_def(), imp)
}

fn ephemeral_impl() -> Arc<dyn CapImpl> {
    DynCap::new()
        .call("ping", |_, _| async { Ok(Value::from("pong")) })
        .call("unserveMe", |_, ctx: CallContext| async move {
            // Reply first, then unserve: the revocation follows the result on the wire.
            let conn = ctx.connection();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                conn.unserve("interop.ephemeral");
            });
            Ok(Value::Undefined)
        })
        .build()
}
