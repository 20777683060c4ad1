//! Serving on an existing axum `Router` (feature `axum`): a page and `/rpc` on one port,
//! the `Origin` and peer address reaching the policy, and the endpoint's connection bound.
#![cfg(feature = "axum")]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::{response::Html, routing::get, Router};
use bunite_rpc::transport::axum::RpcEndpoint;
use bunite_rpc::transport::ws::{self, http::Uri, ClientRequestBuilder};
use bunite_rpc::transport::{ListenerConfig, Transport};
use bunite_rpc::{Attestation, Code, Connection, ConnectionSet, Policy, Record, Value};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(5);

/// Stops the server's accept loop when dropped (with the test body), so that no task
/// outlives the test.
struct Stop(tokio::task::JoinHandle<()>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves a page at `/` and bunite at `/rpc` (the counter, for `https://app.example` only);
/// each server connection is sent on the channel. Serving stops when the [`Stop`] is dropped.
async fn serve(config: ListenerConfig) -> (SocketAddr, mpsc::UnboundedReceiver<Connection>, Stop) {
    let (tx, rx) = mpsc::unbounded_channel();
    let rpc = RpcEndpoint::new(config).route(move |up| {
        let tx = tx.clone();
        async move {
            assert!(up.peer_addr.is_some_and(|a| a.ip().is_loopback()));
            assert!(up.headers.contains_key("sec-websocket-key"));
            assert_eq!(up.transport.info().kind, "ws");
            let origin = up.origin.unwrap_or_default();
            let conn = Connection::builder()
                .attestation(Attestation {
                    origin,
                    ..Attestation::default()
                })
                .policy(Policy::new(|_name, who| {
                    who.origin == "https://app.example"
                }))
                .serve(counter_def(), counter_impl())
                .connect(up.transport);
            track(&conn);
            let _ = tx.send(conn);
        }
    });
    let app = Router::new()
        .route("/", get(|| async { Html("<h1>the page</h1>") }))
        .route("/rpc", rpc);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
    (addr, rx, Stop(task))
}

fn request(addr: SocketAddr, origin: &str) -> ClientRequestBuilder {
    let uri: Uri = format!("ws://{addr}/rpc").parse().unwrap();
    ClientRequestBuilder::new(uri).with_header("Origin", origin)
}

#[test]
fn a_page_and_rpc_on_one_port_with_the_origin_for_the_policy() {
    run(async {
        let (addr, mut conns, _stop) = serve(ListenerConfig::default()).await;

        // The page, over plain HTTP on the same port.
        let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
        http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut page = String::new();
        http.read_to_string(&mut page).await.unwrap();
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("<h1>the page</h1>"));

        // The allowed origin gets the counter.
        let client = tracked(
            ws::connect(request(addr, "https://app.example"))
                .await
                .unwrap(),
        );
        let server = timeout(WAIT, conns.recv()).await.unwrap().unwrap();
        let counter = client.bootstrap(&counter_def()).await.unwrap();
        let r = counter
            .call_value("increment", Value::Record(Record::new().with("delta", 1)))
            .await
            .unwrap();
        assert_eq!(r, Value::Record(Record::new().with("count", 1)));
        drop(counter);
        assert_clean(&[&server, &client]).await;
        client.close();
        timeout(WAIT, server.closed()).await.unwrap();

        // Another origin is denied by the policy.
        let client = tracked(
            ws::connect(request(addr, "https://evil.example"))
                .await
                .unwrap(),
        );
        let denied = client.bootstrap(&counter_def()).await.unwrap_err();
        assert_eq!(denied.code(), Code::FailedPrecondition);
        assert_eq!(denied.reason(), Some("unauthorized"));
        client.close();
    });
}

#[test]
fn past_max_connections_an_upgrade_is_refused_with_503() {
    run(async {
        let (addr, mut conns, _stop) = serve(ListenerConfig::default().max_connections(1)).await;
        let first = tracked(
            ws::connect(request(addr, "https://app.example"))
                .await
                .unwrap(),
        );
        let server = timeout(WAIT, conns.recv()).await.unwrap().unwrap();
        let refused = ws::connect(request(addr, "https://app.example"))
            .await
            .unwrap_err();
        assert!(
            refused.report().contains("HTTP 503"),
            "{}",
            refused.report()
        );
        // Once the first connection is gone, its slot is free again.
        first.close();
        timeout(WAIT, server.closed()).await.unwrap();
        drop(server);
        let mut second = None;
        for _ in 0..50 {
            if let Ok(t) = ws::connect(request(addr, "https://app.example")).await {
                second = Some(t);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(second.is_some(), "the slot was not given back");
    });
}

#[test]
fn a_plain_get_at_the_rpc_route_is_told_to_upgrade() {
    run(async {
        let (addr, _conns, _stop) = serve(ListenerConfig::default()).await;
        let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
        http.write_all(b"GET /rpc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        http.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 426"), "{answer}");
    });
}

/// Connections handed to `axum::serve` by the test: in-memory pipes whose buffers it sizes.
struct Pipes(mpsc::UnboundedReceiver<tokio::io::DuplexStream>);

impl axum::serve::Listener for Pipes {
    type Io = tokio::io::DuplexStream;
    type Addr = ();

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.0.recv().await {
            Some(io) => (io, ()),
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<()> {
        Ok(())
    }
}

const UPGRADE: &[u8] =
    b"GET /rpc HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

/// An upgrade that hyper cannot hand over (the client reads nothing, so the `101` is never
/// all written) holds its connection slot for `handshake_timeout` at most, as a handshake on
/// our own listener does. It held it for as long as the client kept the connection open:
/// `max_connections` such clients had every other upgrade answered 503.
#[test]
fn an_upgrade_never_handed_over_gives_its_slot_back_after_the_handshake_timeout() {
    run(async {
        let config = ListenerConfig::default()
            .max_connections(1)
            .handshake_timeout(Duration::from_millis(300));
        let endpoint = RpcEndpoint::new(config);
        let (conns_tx, mut conns) = mpsc::unbounded_channel();
        let rpc = endpoint.clone().route(move |up| {
            let conns_tx = conns_tx.clone();
            async move {
                let _ = conns_tx.send(tracked(up.transport));
            }
        });
        let (pipes, accept) = mpsc::unbounded_channel();
        let app = Router::new().route("/rpc", rpc);
        let _stop = Stop(tokio::spawn(async move {
            axum::serve(Pipes(accept), app).await.unwrap()
        }));

        // A pipe of 64 bytes: the upgrade request goes through, the 101 does not.
        let (mut stuck, server_end) = tokio::io::duplex(64);
        pipes.send(server_end).unwrap();
        timeout(WAIT, stuck.write_all(UPGRADE))
            .await
            .unwrap()
            .unwrap();
        eventually(|| endpoint.connections() == 1).await;
        assert_eq!(endpoint.handovers(), 1);
        // The slot comes back once the handshake timeout has passed, and the hand-over
        // is no longer in flight...
        eventually(|| endpoint.connections() == 0).await;
        eventually(|| endpoint.handovers() == 0).await;
        assert!(
            conns.try_recv().is_err(),
            "the stuck upgrade was handed over"
        );

        // ...for a client that completes its upgrade.
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        pipes.send(server_end).unwrap();
        let (client, _) = tokio_tungstenite::client_async("ws://x/rpc", client_end)
            .await
            .unwrap();
        let server = timeout(WAIT, conns.recv()).await.unwrap().unwrap();
        assert_eq!(endpoint.connections(), 1);
        // The callback returned: the hand-over is done while the connection lives.
        timeout(WAIT, endpoint.handed_over()).await.unwrap();
        assert_eq!(endpoint.handovers(), 0);
        drop(client);
        timeout(WAIT, server.closed()).await.unwrap();
        drop(server);
        eventually(|| endpoint.connections() == 0).await;
        drop(stuck);
    });
}

// Hostile peers at an axum endpoint (docs/RELIABILITY.md, "The deployment paths under
// hostile input").

/// An axum server of [`serve_endpoint`]: [`Server::stop`] shuts it down gracefully and
/// waits for it; dropped, it signals the shutdown and aborts what is left of it, so that no
/// task outlives the test.
struct Server {
    signal: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// axum's graceful shutdown: returns once axum has stopped.
    async fn stop(mut self) {
        let _ = self.signal.take().unwrap().send(());
        timeout(WAIT, &mut self.task)
            .await
            .expect("axum did not stop")
            .unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal.take();
        self.task.abort();
    }
}

/// Serves `endpoint` at `/rpc` on loopback TCP, each connection built by `builder` (the
/// counter served), tracked and sent on the channel.
async fn serve_endpoint(
    endpoint: RpcEndpoint,
    builder: impl Fn() -> bunite_rpc::ConnectionBuilder + Clone + Send + Sync + 'static,
) -> (SocketAddr, mpsc::UnboundedReceiver<Connection>, Server) {
    let (tx, rx) = mpsc::unbounded_channel();
    let rpc = endpoint.route(move |up| {
        let (tx, builder) = (tx.clone(), builder.clone());
        async move {
            let conn = builder()
                .serve(counter_def(), counter_impl())
                .connect(up.transport);
            track(&conn);
            let _ = tx.send(conn);
        }
    });
    let app = Router::new().route("/rpc", rpc);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let (signal, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, service)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    let server = Server {
        signal: Some(signal),
        task,
    };
    (addr, rx, server)
}

/// An upgrade request whose head never completes holds no connection slot (the route has
/// not run: the head is hyper's to time out), and an upgrade completed by a client that
/// never says hello holds its slot only until the connection's hello timeout.
#[test]
fn an_upgrade_that_never_completes_or_never_says_hello_holds_no_slot_for_long() {
    run(async {
        let endpoint = RpcEndpoint::new(ListenerConfig::default().max_connections(1));
        let hello_timeout = Duration::from_millis(300);
        let limits = bunite_rpc::Limits {
            hello_timeout: Some(hello_timeout),
            ..Default::default()
        };
        let builder = move || Connection::builder().limits(limits.clone());
        let (addr, mut conns, server) = serve_endpoint(endpoint.clone(), builder).await;

        // Half an upgrade request's head, and no more.
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET /rpc HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n")
            .await
            .unwrap();

        // A client that upgrades and then says nothing: its slot is the endpoint's only one.
        // The clock starts before it connects: the server's connection, and its hello
        // timer, may start well before the client's handshake returns on a loaded machine.
        let started = tokio::time::Instant::now();
        let (mut mute, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/rpc"))
            .await
            .unwrap();
        let server_conn = timeout(WAIT, conns.recv()).await.unwrap().unwrap();
        assert_eq!(endpoint.connections(), 1);
        // It is sent the server's hello, a goaway at the hello timeout, and the close.
        let mut goaway = None;
        let mut dec = bunite_rpc::wire::Decoder::new(bunite_rpc::wire::DecodeLimits::default());
        while let Some(Ok(msg)) = timeout(WAIT, futures::StreamExt::next(&mut mute))
            .await
            .expect("the server hung")
        {
            if let tokio_tungstenite::tungstenite::Message::Binary(b) = msg {
                if let bunite_rpc::wire::Frame::Goaway(g) = dec.decode_frame(&b).unwrap() {
                    goaway = Some(g);
                }
            }
        }
        assert!(
            started.elapsed() >= hello_timeout,
            "{:?}",
            started.elapsed()
        );
        let e = goaway.expect("a goaway").error.expect("its error");
        assert_eq!(e.code, "deadline_exceeded");
        timeout(WAIT, server_conn.closed()).await.unwrap();
        drop(server_conn);
        eventually(|| endpoint.connections() == 0).await;

        // The slot is free for a client that says hello, the half head still held.
        let client = tracked(
            ws::connect(format!("ws://{addr}/rpc").as_str())
                .await
                .unwrap(),
        );
        let server_conn = timeout(WAIT, conns.recv()).await.unwrap().unwrap();
        let counter = client.bootstrap(&counter_def()).await.unwrap();
        counter.call_value("get", Value::Undefined).await.unwrap();
        drop(counter);
        assert_clean(&[&server_conn, &client]).await;
        client.close();
        timeout(WAIT, server_conn.closed()).await.unwrap();
        drop((half, mute));
        server.stop().await;
    });
}

/// Many upgrades at once beyond `max_connections`: exactly the bound's worth are served,
/// the rest answered 503, and every slot comes back once those connections end.
#[test]
fn many_concurrent_upgrades_beyond_the_bound_get_exactly_the_bound() {
    run(async {
        const BOUND: usize = 3;
        let endpoint = RpcEndpoint::new(ListenerConfig::default().max_connections(BOUND));
        let (addr, mut conns, _server) =
            serve_endpoint(endpoint.clone(), Connection::builder).await;
        let url = format!("ws://{addr}/rpc");
        for round in 0..2 {
            let attempts = (0..12).map(|_| ws::connect(url.as_str()));
            let mut clients = Vec::new();
            for attempt in futures::future::join_all(attempts).await {
                match attempt {
                    Ok(t) => clients.push(tracked(t)),
                    Err(e) => assert!(e.report().contains("HTTP 503"), "{}", e.report()),
                }
            }
            assert_eq!(clients.len(), BOUND, "round {round}");
            assert_eq!(endpoint.connections(), BOUND, "round {round}");
            let mut servers = Vec::new();
            for _ in 0..BOUND {
                servers.push(timeout(WAIT, conns.recv()).await.unwrap().unwrap());
            }
            for client in &clients {
                client.close();
            }
            for server in &servers {
                timeout(WAIT, server.closed()).await.unwrap();
            }
            drop(servers);
            eventually(|| endpoint.connections() == 0).await;
        }
    });
}

/// PROTOCOL §11 through an axum endpoint as through a `WsListener`: a message above the
/// endpoint's `max_bytes` gets goaway `resource_exhausted` `max_frame_bytes`, then a close
/// frame, every time, with the 4 MiB message still arriving as the server closes.
#[test]
fn an_oversize_message_through_axum_gets_goaway_then_a_close_frame_in_every_run() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    run(async {
        let endpoint = RpcEndpoint::new(ListenerConfig::default().max_bytes(1024));
        let (addr, mut conns, _server) =
            serve_endpoint(endpoint.clone(), Connection::builder).await;
        for run in 0..10 {
            let (mut raw, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/rpc"))
                .await
                .unwrap();
            let server = timeout(WAIT, conns.recv()).await.unwrap().unwrap();
            let sent = raw.send(Message::binary(vec![0xc0u8; 4 << 20])).await;
            assert!(
                sent.is_ok(),
                "run {run}: the server reset the socket: {sent:?}"
            );
            let mut dec = bunite_rpc::wire::Decoder::new(bunite_rpc::wire::DecodeLimits::default());
            let mut goaway = None;
            let close = loop {
                match timeout(WAIT, raw.next()).await.expect("timed out") {
                    Some(Ok(Message::Binary(b))) => {
                        if let bunite_rpc::wire::Frame::Goaway(g) = dec.decode_frame(&b).unwrap() {
                            goaway = Some(g);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => break Ok(frame),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break Err(e.to_string()),
                    None => break Err("ended without a close frame".to_owned()),
                }
            };
            let g = goaway.unwrap_or_else(|| panic!("run {run}: no goaway before {close:?}"));
            let e = g.error.expect("goaway error");
            assert_eq!(e.reason(), Some("max_frame_bytes"), "run {run}");
            assert!(close.is_ok(), "run {run}: {close:?}");
            drop(raw);
            timeout(WAIT, server.closed()).await.unwrap();
        }
        drop(conns);
        eventually(|| endpoint.connections() == 0).await;
    });
}

/// Stopping the axum server (its graceful shutdown), waiting for the endpoint's
/// hand-overs, and then the connections it handed over (a `ConnectionSet`), as the module
/// docs' `# Stopping` says, leaves nothing: no connection, no slot, no task (the harness
/// checks that last), with a call in flight and a client that never said hello among them.
#[test]
fn stopping_the_axum_server_and_its_connections_leaves_no_task() {
    run(async {
        let endpoint = RpcEndpoint::new(ListenerConfig::default());
        let set = ConnectionSet::new();
        let (addr, mut conns, server) = serve_endpoint(endpoint.clone(), Connection::builder).await;
        let url = format!("ws://{addr}/rpc");
        let client = tracked(ws::connect(url.as_str()).await.unwrap());
        let (mute, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        for _ in 0..2 {
            set.insert(&timeout(WAIT, conns.recv()).await.unwrap().unwrap());
        }
        let counter = client.bootstrap(&counter_def()).await.unwrap();
        let waiting =
            tokio::spawn(async move { counter.call_value("wait", Value::Undefined).await });
        eventually(|| set.len() == 2).await;

        server.stop().await;
        set.drain(Duration::from_millis(200));
        timeout(WAIT, endpoint.handed_over()).await.unwrap();
        assert_eq!(endpoint.handovers(), 0);
        timeout(WAIT, set.closed()).await.unwrap();
        assert!(set.is_empty());
        let refused = timeout(WAIT, waiting).await.unwrap().unwrap();
        assert!(refused.is_err(), "{refused:?}");
        timeout(WAIT, client.closed()).await.unwrap();
        drop(mute);
        eventually(|| endpoint.connections() == 0).await;
    });
}

/// The window between hyper's hand-over and the route's callback, held open by the test
/// hook: axum has stopped, and the connection it handed over has not joined the set yet.
/// The stop of the module docs' `# Stopping` (axum's end, then the endpoint's
/// `handed_over`, then the set's `closed`) does not return until it has joined, drained
/// and closed. Without `handed_over` the stop returned at once with the set empty, and the
/// connection joined after it (`docs/RELIABILITY.md`, "Two loose ends").
#[test]
fn a_stop_waits_for_a_connection_handed_over_to_join_the_set() {
    run(async {
        let endpoint = RpcEndpoint::new(ListenerConfig::default());
        let set = ConnectionSet::new();
        let joined = Arc::new(AtomicUsize::new(0));
        let rpc = endpoint.clone().route({
            let (set, joined) = (set.clone(), joined.clone());
            move |up| {
                let (set, joined) = (set.clone(), joined.clone());
                async move {
                    let conn = Connection::builder()
                        .serve(counter_def(), counter_impl())
                        .connect(up.transport);
                    track(&conn);
                    set.insert(&conn);
                    joined.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let app = Router::new().route("/rpc", rpc);
        let (addr, signal, http) = serve_axum(app).await;

        endpoint.hold_handovers(true);
        // The client has read its 101: hyper has handed the connection over.
        let client = tracked(ws::connect(format!("ws://{addr}/rpc")).await.unwrap());
        eventually(|| endpoint.handovers_held() == 1).await;
        assert_eq!(endpoint.handovers(), 1);

        // At the signal: axum's graceful shutdown and the set's drain; axum ends, the
        // upgraded connection being no longer its.
        signal.send(()).unwrap();
        set.drain(Duration::from_millis(200));
        timeout(WAIT, http).await.unwrap().unwrap().unwrap();
        assert_eq!(joined.load(Ordering::SeqCst), 0);
        let mut stop = tokio::spawn({
            let (endpoint, set, joined) = (endpoint.clone(), set.clone(), joined.clone());
            async move {
                endpoint.handed_over().await;
                set.closed().await;
                joined.load(Ordering::SeqCst)
            }
        });
        let early = timeout(Duration::from_millis(100), &mut stop).await;
        assert!(
            early.is_err(),
            "the stop returned while a connection handed over had not joined: {early:?}"
        );

        endpoint.hold_handovers(false);
        let joined_at_return = timeout(WAIT, stop).await.unwrap().unwrap();
        assert_eq!(joined_at_return, 1, "the stop returned before the join");
        assert!(set.is_empty());
        assert_eq!(endpoint.handovers(), 0);
        // It joined a draining set with nothing running: drained, closed with a goaway.
        timeout(WAIT, client.closed()).await.unwrap();
        eventually(|| endpoint.connections() == 0).await;
    });
}

/// Stopping axum (its graceful shutdown, or `axum::serve`'s future dropped) ends the wait
/// for an upgrade hyper has not handed over at once, not at the handshake timeout: hyper
/// shuts down the connection still writing its `101`, and the slot, the task and the
/// socket go with it. (hyper hands the socket over as it shuts down, the `101` cut short,
/// so the route's callback runs once more: here it drops the transport. RELIABILITY, "Two
/// loose ends".)
#[test]
fn stopping_axum_ends_an_upgrade_never_handed_over_at_once() {
    for graceful in [true, false] {
        run(async {
            let config = ListenerConfig::default().handshake_timeout(Duration::from_secs(60));
            let endpoint = RpcEndpoint::new(config);
            let rpc = endpoint.clone().route(|up| async move { drop(up) });
            let (pipes, accept) = mpsc::unbounded_channel();
            let app = Router::new().route("/rpc", rpc);
            let (signal, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(async move {
                if graceful {
                    let stopped = async {
                        let _ = stopped.await;
                    };
                    axum::serve(Pipes(accept), app)
                        .with_graceful_shutdown(stopped)
                        .await
                        .unwrap()
                } else {
                    axum::serve(Pipes(accept), app).await.unwrap()
                }
            });
            // A pipe of 64 bytes: the upgrade request goes through, the 101 does not.
            let (mut stuck, server_end) = tokio::io::duplex(64);
            pipes.send(server_end).unwrap();
            stuck.write_all(UPGRADE).await.unwrap();
            eventually(|| endpoint.connections() == 1).await;

            if graceful {
                signal.send(()).unwrap();
                timeout(WAIT, server).await.unwrap().unwrap();
            } else {
                server.abort();
                drop(signal);
            }
            let metrics = tokio::runtime::Handle::current().metrics();
            eventually(|| endpoint.connections() == 0 && metrics.num_alive_tasks() == 0).await;
            // The 64 bytes of the 101 that fit, then the end.
            let mut answer = Vec::new();
            timeout(WAIT, stuck.read_to_end(&mut answer))
                .await
                .unwrap()
                .unwrap();
            assert!(answer.starts_with(b"HTTP/1.1 101"), "{answer:?}");
            assert_eq!(answer.len(), 64);
        });
    }
}

/// A `tcp://` client at an axum endpoint: hyper answers our hello, which is not HTTP, with
/// `400 Bad Request`, and the client's error says the peer answered with HTTP and that a
/// WebSocket endpoint wants `ws://` (it blamed "a plugin printing to stdout").
#[cfg(feature = "byte-stream")]
#[test]
fn a_tcp_client_at_an_axum_endpoint_is_told_it_answered_with_http() {
    use bunite_rpc::transport::byte_stream;
    run(async {
        let endpoint = RpcEndpoint::new(ListenerConfig::default());
        let (addr, _conns, server) = serve_endpoint(endpoint.clone(), Connection::builder).await;
        let client = tracked(byte_stream::tcp_connect(addr).await.unwrap());
        let e = client.bootstrap(&counter_def()).await.unwrap_err();
        timeout(WAIT, client.closed()).await.unwrap();
        let hint = [
            "the peer answered with HTTP (\"HTTP\"",
            "use ws://HOST:PORT/PATH",
        ];
        // The bootstrap waits for the server's hello and gets the cause, unless (on two
        // workers) the connection had closed before it was made: `closed_by` tells then.
        if e.local_kind() != Some(bunite_rpc::LocalError::Closed) {
            assert!(hint.iter().all(|h| e.to_string().contains(h)), "{e}");
        }
        let why = client.closed_by().expect("the cause").status().message;
        assert!(hint.iter().all(|h| why.contains(h)), "{why}");
        assert_eq!(endpoint.connections(), 0);
        server.stop().await;
    });
}
