//! `interop-server`: serves the caps of INTEROP.md on every connection, each connection
//! with its own state, until Ctrl-C or SIGTERM stops it gracefully ([`crate::stop`]).

use std::io::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bunite_rpc::transport::byte_stream::TcpMessageListener;
use bunite_rpc::transport::sealed::Key;
use bunite_rpc::transport::tls::ServerTls;
use bunite_rpc::transport::ws::WsListener;
use bunite_rpc::transport::ListenerConfig;
use bunite_rpc::typed::{Emitter, Stream};
use bunite_rpc::wire::serde_bytes::ByteBuf;
use bunite_rpc::{
    Attestation, CallContext, Code, Connection, ConnectionSet, Exported, Limits, Policy, Status,
    Value,
};

use crate::connect::finish;
use crate::interop_caps::*;
use crate::server_stats::Registry;
use crate::wire_shapes::{Shapes, WireShapesCap};

/// Largest `bytes {n}` the server will produce (the protocol's default `maxBytes`).
const MAX_BYTES_REPLY: usize = 64 * 1024 * 1024 - 64;

/// How the server is reached beyond its addresses: TLS, and who may bootstrap.
#[derive(Debug, Default, Clone)]
pub struct Access {
    /// Terminate TLS with this certificate (`wss://`, `tls://`).
    pub tls: Option<ServerTls>,
    /// When not empty, only WebSocket clients whose `Origin` is one of these may bootstrap
    /// (the policy sees the handshake's `Origin` in the attestation).
    pub allow_origins: Vec<String>,
    /// The listeners' bounds (TLS is set from `tls`); one receive budget for both.
    pub listener: ListenerConfig,
    /// Each connection's limits (`max_bytes` is set from `listener`).
    pub limits: Limits,
    /// Also serve the test cap `test.wireShapes` ([`crate::wire_shapes`]), for the web
    /// client's tests of the TypeScript bindings; not an INTEROP.md cap.
    pub wire_shapes: bool,
}

/// Runs the server until Ctrl-C or SIGTERM, then stops gracefully ([`crate::stop`]): no
/// new connections, new calls refused, the calls in progress answered (for up to
/// [`GRACE`](crate::stop::GRACE)), every connection closed with a goaway. With `stats`,
/// each line read on stdin is answered with one `stats …` line of live counts on stdout
/// (see [`crate::server_stats`]).
pub async fn run(
    listen: &str,
    path: &str,
    tcp: Option<&str>,
    key: Option<Key>,
    access: Access,
    stats: bool,
) -> Result<()> {
    let registry = stats.then(|| Arc::new(Registry::default()));
    let connections = ConnectionSet::new();
    let (ws_url, tcp_url, serving) = start_with(
        listen,
        path,
        tcp,
        key,
        access,
        registry.clone(),
        &connections,
    )
    .await?;
    println!("listening {ws_url}");
    if let Some(url) = tcp_url {
        println!("listening {url}");
    }
    std::io::stdout().flush()?;
    if let Some(registry) = registry {
        tokio::spawn(crate::server_stats::answer_stdin(registry));
    }
    let grace = crate::stop::GRACE;
    let stopping = || eprintln!("interop-server: stopping (calls in progress may take {grace:?})");
    match crate::stop::serve_until(&connections, serving, crate::stop::signal, grace, stopping)
        .await
    {
        Some(n) => eprintln!("interop-server: stopped ({n} connection(s) drained)"),
        None => eprintln!("interop-server: stopped (connections closed at once)"),
    }
    Ok(())
}

/// Binds the sockets and returns their URLs and the task that accepts connections.
pub async fn start(
    listen: &str,
    path: &str,
    tcp: Option<&str>,
    key: Option<Key>,
    registry: Option<Arc<Registry>>,
    connections: &ConnectionSet,
) -> Result<(String, Option<String>, tokio::task::JoinHandle<()>)> {
    start_with(
        listen,
        path,
        tcp,
        key,
        Access::default(),
        registry,
        connections,
    )
    .await
}

/// [`start`] with TLS and an Origin allow-list.
pub async fn start_with(
    listen: &str,
    path: &str,
    tcp: Option<&str>,
    key: Option<Key>,
    access: Access,
    registry: Option<Arc<Registry>>,
    connections: &ConnectionSet,
) -> Result<(String, Option<String>, tokio::task::JoinHandle<()>)> {
    // One budget for the bytes of messages being received on both listeners.
    let mut config = access.listener;
    // What each connection's hello announces is what its listener accepts.
    let limits = Limits {
        max_bytes: config.max_bytes,
        ..access.limits
    };
    let tcp_limits = limits.clone();
    let secure = access.tls.is_some();
    if let Some(tls) = access.tls {
        config = config.tls(tls);
    }
    let allowed: Arc<Vec<String>> = Arc::new(access.allow_origins);
    let wire_shapes = access.wire_shapes;
    let ws = WsListener::bind_with(listen, path, config.clone()).await?;
    let scheme = if secure { "wss" } else { "ws" };
    let ws_url = format!("{scheme}://{}{}", ws.local_addr()?, path);
    let tcp = match tcp {
        Some(addr) => Some(TcpMessageListener::bind(addr, config).await?),
        None => None,
    };
    let scheme = if secure { "tls" } else { "tcp" };
    let tcp_url = match &tcp {
        Some(l) => Some(format!("{scheme}://{}", l.local_addr()?)),
        None => None,
    };
    let tcp_allowed = Arc::clone(&allowed);
    let (ws_set, tcp_set) = (connections.clone(), connections.clone());
    let serving = tokio::spawn(async move {
        let ws_key = key.clone();
        let ws_registry = registry.clone();
        let ws_loop = async move {
            while let Ok(accepted) = ws.accept().await {
                let attestation = Attestation {
                    origin: accepted.origin.unwrap_or_default(),
                    ..Attestation::default()
                };
                let builder =
                    serving(builder_for(attestation, &allowed), wire_shapes).limits(limits.clone());
                let conn = finish(accepted.transport, ws_key.clone(), builder);
                ws_set.insert(&conn);
                if let Some(r) = &ws_registry {
                    r.add(conn);
                }
            }
        };
        let tcp_loop = async move {
            let Some(listener) = tcp else { return };
            loop {
                match listener.accept().await {
                    Ok((t, _)) => {
                        let builder = serving(
                            builder_for(Attestation::default(), &tcp_allowed),
                            wire_shapes,
                        )
                        .limits(tcp_limits.clone());
                        let conn = finish(t, key.clone(), builder);
                        tcp_set.insert(&conn);
                        if let Some(r) = &registry {
                            r.add(conn);
                        }
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        eprintln!("interop-server: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        tokio::join!(ws_loop, tcp_loop);
    });
    Ok((ws_url, tcp_url, serving))
}

/// A connection serving every interop cap with fresh state. The caps are served by the
/// builder, before the connection reads: a client may bootstrap as soon as it sees hello.
pub(crate) fn builder(attestation: Attestation) -> bunite_rpc::ConnectionBuilder {
    builder_for(attestation, &Arc::new(Vec::new()))
}

/// [`builder`] whose policy also requires the attested `Origin` to be one of `allowed`
/// (when it is not empty): a policy over the Origin, as a web host's.
fn builder_for(
    attestation: Attestation,
    allowed: &Arc<Vec<String>>,
) -> bunite_rpc::ConnectionBuilder {
    let state = Arc::new(State::default());
    let allowed = Arc::clone(allowed);
    Connection::builder()
        .attestation(attestation)
        .origin("bunite-rpc interop-server")
        .policy(Policy::new(move |name, who| {
            name != "interop.secret" && (allowed.is_empty() || allowed.contains(&who.origin))
        }))
        .serve_cap::<InteropCounterCap>(Counter(state))
        .serve_cap::<InteropVersionedCap>(Versioned)
        .serve_cap::<InteropEphemeralCap>(Ephemeral)
        .serve_cap::<InteropSecretCap>(Secret)
}

/// `builder`, serving `test.wireShapes` as well when asked ([`Access::wire_shapes`]).
fn serving(
    builder: bunite_rpc::ConnectionBuilder,
    wire_shapes: bool,
) -> bunite_rpc::ConnectionBuilder {
    if wire_shapes {
        builder.serve_cap::<WireShapesCap>(Shapes)
    } else {
        builder
    }
}

/// Per-connection state of `interop.counter`.
#[derive(Default)]
struct State {
    count: AtomicI64,
    closed: AtomicU64,
    live_children: AtomicU64,
    cancelled_watches: AtomicU64,
}

struct Counter(Arc<State>);

impl Counter {
    fn count(&self) -> Count {
        Count {
            count: self.0.count.load(Ordering::SeqCst),
        }
    }

    fn child(&self, name: String) -> Exported<InteropChildCap> {
        self.0.live_children.fetch_add(1, Ordering::SeqCst);
        InteropChildCap::export(Child {
            name,
            state: self.0.clone(),
        })
    }
}

impl InteropCounter for Counter {
    async fn get(&self) -> Result<Count, Status> {
        Ok(self.count())
    }

    async fn increment(&self, delta: Option<Delta>) -> Result<Count, Status> {
        let d = delta.unwrap_or_default().get();
        // The delta is the peer's: a count it would take past i64 is refused, not wrapped
        // (or, in a debug build, a panic).
        let add = |count: i64| count.checked_add(d);
        let before = (self.0.count)
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, add)
            .map_err(|count| {
                Status::invalid_argument(format!("increment: {count} + {d} is out of range"))
            })?;
        Ok(Count {
            count: add(before).unwrap_or(before),
        })
    }

    async fn echo(&self, value: Value) -> Result<Value, Status> {
        Ok(value)
    }

    async fn fail(&self, how: FailParams) -> Result<(), Status> {
        let code = Code::parse(&how.code).unwrap_or(Code::Internal);
        let status = Status::new(code, how.message.as_deref().unwrap_or("requested failure"));
        Err(match &how.reason {
            Some(reason) => status.with_reason(reason),
            None => status,
        })
    }

    async fn boom(&self) -> Result<(), Status> {
        Err(Status::internal("boom"))
    }

    async fn slow(&self, p: SlowParams, ctx: CallContext) -> Result<String, Status> {
        let sleep = tokio::time::sleep(p.duration().min(Duration::from_secs(600)));
        tokio::pin!(sleep);
        if p.ignore_abort != Some(true) {
            tokio::select! {
                _ = &mut sleep => {}
                _ = ctx.cancelled() => return Ok("aborted".into()),
            }
        }
        sleep.await;
        Ok("done".into())
    }

    async fn make_child(&self, p: Named) -> Result<Exported<InteropChildCap>, Status> {
        Ok(self.child(p.name))
    }

    async fn children(&self, p: Names) -> Result<Vec<Exported<InteropChildCap>>, Status> {
        Ok(p.names.into_iter().map(|n| self.child(n)).collect())
    }

    async fn child_map(
        &self,
        p: Names,
    ) -> Result<Vec<(String, Exported<InteropChildCap>)>, Status> {
        Ok(p.names
            .into_iter()
            .map(|n| (n.clone(), self.child(n)))
            .collect())
    }

    async fn closed_count(&self) -> Result<u64, Status> {
        Ok(self.0.closed.load(Ordering::SeqCst))
    }

    async fn live_children(&self) -> Result<u64, Status> {
        Ok(self.0.live_children.load(Ordering::SeqCst))
    }

    async fn cancelled_watches(&self) -> Result<u64, Status> {
        Ok(self.0.cancelled_watches.load(Ordering::SeqCst))
    }

    fn ticks(&self, p: N) -> impl Stream<Item = Result<Tick, Status>> + Send + 'static {
        futures::stream::iter((0..p.n).map(|i| Ok(Tick { i })))
    }

    async fn watch(
        &self,
        p: Option<WatchParams>,
        _ctx: CallContext,
        mut out: Emitter<Count>,
    ) -> Result<(), Status> {
        // A watch never ends by itself: whenever it ends, it was cancelled (or the
        // connection went away), and the guard counts it as the producer is dropped.
        let _guard = WatchGuard(self.0.clone());
        let every = p
            .unwrap_or_default()
            .every()
            .clamp(Duration::from_millis(1), Duration::from_secs(60));
        loop {
            out.send(self.count()).await?;
            tokio::time::sleep(every).await;
        }
    }

    async fn bytes(&self, p: N) -> Result<Binary, Status> {
        let n = usize::try_from(p.n).ok().filter(|n| *n <= MAX_BYTES_REPLY);
        let n = n.ok_or_else(|| Status::invalid_argument("bytes: n must be 0..=64 MiB"))?;
        Ok(Binary(ByteBuf::from(
            (0..n).map(|k| (k % 256) as u8).collect::<Vec<u8>>(),
        )))
    }

    async fn ask_peer(&self, ctx: CallContext) -> Result<String, Status> {
        let peer = InteropPeerCap::bootstrap(&ctx.connection()).await?;
        Ok(peer.ping().await?)
    }
}

/// Counts a `watch` that ended.
struct WatchGuard(Arc<State>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.cancelled_watches.fetch_add(1, Ordering::SeqCst);
    }
}

/// A child; the runtime drops it when its cap-table entry is freed, which is what
/// `liveChildren` counts.
struct Child {
    name: String,
    state: Arc<State>,
}

impl Drop for Child {
    fn drop(&mut self) {
        self.state.live_children.fetch_sub(1, Ordering::SeqCst);
    }
}

impl InteropChild for Child {
    async fn name(&self) -> Result<String, Status> {
        Ok(self.name.clone())
    }

    async fn ping(&self, p: X) -> Result<i64, Status> {
        // The x is the peer's: past i64 it is refused, not wrapped (or, in a debug build,
        // a panic).
        p.x.checked_add(1)
            .ok_or_else(|| Status::invalid_argument(format!("ping: {} + 1 is out of range", p.x)))
    }

    async fn close(&self) -> Result<(), Status> {
        self.state.closed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct Versioned;

impl InteropVersioned for Versioned {
    async fn v(&self) -> Result<String, Status> {
        Ok("2".into())
    }
}

struct Ephemeral;

impl InteropEphemeral for Ephemeral {
    async fn ping(&self) -> Result<String, Status> {
        Ok("pong".into())
    }

    async fn unserve_me(&self, ctx: CallContext) -> Result<(), Status> {
        // Reply first, then unserve: the revocation follows the result on the wire.
        let conn = ctx.connection();
        ctx.after_reply(move || {
            tokio::spawn(async move { conn.unserve_cap::<InteropEphemeralCap>().await });
        });
        Ok(())
    }
}

struct Secret;

impl InteropSecret for Secret {
    async fn ping(&self) -> Result<String, Status> {
        Ok("secret".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `increment` adds the peer's delta: one that would take the count past i64 fails
    /// `invalid_argument` and leaves the count as it was (it panicked in a debug build and
    /// wrapped in a release one).
    #[tokio::test]
    async fn an_increment_past_i64_is_refused_and_changes_nothing() {
        let counter = Counter(Arc::default());
        let by = |delta| Some(Delta { delta: Some(delta) });
        assert_eq!(
            counter.increment(by(i64::MAX)).await.unwrap().count,
            i64::MAX
        );
        let e = counter.increment(by(1)).await.unwrap_err();
        assert_eq!(e.code, bunite_rpc::Code::InvalidArgument);
        assert_eq!(
            e.message,
            "increment: 9223372036854775807 + 1 is out of range"
        );
        assert_eq!(counter.get().await.unwrap().count, i64::MAX);
        assert_eq!(counter.increment(by(-5)).await.unwrap().count, i64::MAX - 5);
    }

    /// `ping {x}` answers x + 1: at `x = i64::MAX` it fails `invalid_argument` (it
    /// panicked in a debug build, answered `internal`, and wrapped to `i64::MIN` in a
    /// release one).
    #[tokio::test]
    async fn a_ping_past_i64_is_refused() {
        let child = Child {
            name: "kid".into(),
            state: Arc::default(),
        };
        assert_eq!(child.ping(X { x: 41 }).await.unwrap(), 42);
        assert_eq!(child.ping(X { x: i64::MIN }).await.unwrap(), i64::MIN + 1);
        let e = child.ping(X { x: i64::MAX }).await.unwrap_err();
        assert_eq!(e.code, bunite_rpc::Code::InvalidArgument);
        assert_eq!(e.message, "ping: 9223372036854775807 + 1 is out of range");
    }
}
