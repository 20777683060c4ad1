//! TLS (feature `tls`): calls over `wss://` and over a TLS byte stream with a self-signed
//! certificate made at test time, and a client that refuses a certificate it does not trust.
#![cfg(feature = "tls")]

mod common;

use std::time::Duration;

use bunite_rpc::transport::byte_stream::TcpMessageListener;
use bunite_rpc::transport::tls::{self, ClientTls, ServerTls};
use bunite_rpc::transport::ws::{self, WsConnector, WsListener};
use bunite_rpc::transport::{ListenerConfig, Transport};
use bunite_rpc::{Connection, Record, Value};
use common::*;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// A self-signed certificate for `localhost` and 127.0.0.1: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    (certified.cert.pem(), certified.key_pair.serialize_pem())
}

fn tls_config(cert: &str, key: &str) -> ListenerConfig {
    let server = ServerTls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    ListenerConfig::default().tls(server)
}

/// A WebSocket listener with TLS under a fresh self-signed certificate: the listener, its
/// `wss://localhost` URL and the certificate (PEM).
async fn wss_listener() -> (WsListener, String, String) {
    let (cert, key) = self_signed();
    let listener = WsListener::bind_with("127.0.0.1:0", "/rpc", tls_config(&cert, &key))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, format!("wss://localhost:{port}/rpc"), cert)
}

/// Serves the counter on one accepted connection and calls it from `client`.
async fn call_counter(server: Connection, client: Connection) {
    serve_counter(&server).await;
    let counter = client.bootstrap(&counter_def()).await.unwrap();
    let r = counter
        .call_value("increment", Value::Record(Record::new().with("delta", 2)))
        .await
        .unwrap();
    assert_eq!(r, Value::Record(Record::new().with("count", 2)));
    drop(counter);
    assert_clean(&[&server, &client]).await;
    client.close();
    timeout(WAIT, server.closed()).await.unwrap();
}

#[test]
fn a_call_over_wss_with_a_self_signed_certificate() {
    run(async {
        let (listener, url, cert) = wss_listener().await;
        let accepted = tokio::spawn(async move { listener.accept().await.unwrap() });

        let roots = ClientTls::from_ca_pem(cert.as_bytes()).unwrap();
        let transport = WsConnector::new()
            .tls(roots)
            .connect(url.as_str())
            .await
            .unwrap();
        assert_eq!(transport.info().kind, "wss");
        let client = tracked(transport);
        let accepted = timeout(WAIT, accepted).await.unwrap().unwrap();
        assert_eq!(accepted.transport.info().kind, "wss");
        call_counter(tracked(accepted.transport), client).await;
    });
}

#[test]
fn a_call_over_a_tls_byte_stream_to_an_ip_address() {
    run(async {
        let (cert, key) = self_signed();
        let listener = TcpMessageListener::bind("127.0.0.1:0", tls_config(&cert, &key))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = tokio::spawn(async move { listener.accept().await.unwrap() });

        let roots = ClientTls::from_ca_pem(cert.as_bytes()).unwrap();
        let transport = tls::tcp_connect("127.0.0.1", port, &roots).await.unwrap();
        assert_eq!(transport.info().kind, "tls");
        let client = tracked(transport);
        let (transport, peer) = timeout(WAIT, accepted).await.unwrap().unwrap();
        assert!(peer.ip().is_loopback());
        call_counter(tracked(transport), client).await;
    });
}

#[test]
fn a_client_refuses_a_certificate_it_does_not_trust_and_says_what_to_do() {
    run(async {
        let (listener, url, _) = wss_listener().await;
        // Another self-signed certificate: not the one the server presents.
        let (other, _) = self_signed();
        let roots = ClientTls::from_ca_pem(other.as_bytes()).unwrap();
        let error = WsConnector::new()
            .tls(roots)
            .connect(url.as_str())
            .await
            .unwrap_err();
        let text = error.report();
        assert!(
            text.contains("TLS handshake with localhost failed"),
            "{text}"
        );
        assert!(text.contains("certificate"), "{text}");
        assert!(text.contains("--ca FILE"), "{text}");
        drop(listener);
    });
}

#[test]
fn a_plain_client_at_a_tls_listener_fails_within_the_handshake_timeout() {
    run(async {
        let (cert, key) = self_signed();
        let config = tls_config(&cert, &key).handshake_timeout(Duration::from_millis(300));
        let listener = WsListener::bind_with("127.0.0.1:0", "/rpc", config)
            .await
            .unwrap();
        let url = format!(
            "ws://127.0.0.1:{}/rpc",
            listener.local_addr().unwrap().port()
        );
        let result = timeout(WAIT, ws::connect(url.as_str())).await.unwrap();
        assert!(result.is_err());
    });
}

#[test]
fn bad_pem_is_an_error_that_names_the_problem() {
    let e = ClientTls::from_ca_pem(b"not a certificate").unwrap_err();
    assert!(e.to_string().contains("no certificate"), "{e}");
    let (cert, _) = self_signed();
    let (_, other_key) = self_signed();
    let e = ServerTls::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("do not fit"), "{e}");
    let e = ClientTls::from_ca_pem_file("/nonexistent/ca.pem").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

// Hostile peers at a TLS listener (docs/RELIABILITY.md, "The deployment paths under hostile
// input"): what a plain TCP or WebSocket listener is held to holds inside TLS too.

/// A `tls://` listener (the byte stream inside TLS) under `config` with a fresh self-signed
/// certificate: the listener, its port and the roots a client trusts it with.
async fn tls_byte_listener(config: ListenerConfig) -> (TcpMessageListener, u16, ClientTls) {
    let (cert, key) = self_signed();
    let server = ServerTls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let listener = TcpMessageListener::bind("127.0.0.1:0", config.tls(server))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    (
        listener,
        port,
        ClientTls::from_ca_pem(cert.as_bytes()).unwrap(),
    )
}

/// A dropped `tls://` listener refuses connections from then on (as a plain one does and
/// `transport_ws`'s `a_dropped_listener_refuses_connections_at_once` asks of WebSocket's),
/// not once its background accept loop next runs.
#[test]
fn a_dropped_tls_byte_listener_refuses_connections_at_once() {
    run(async {
        let (listener, port, _) = tls_byte_listener(ListenerConfig::default()).await;
        drop(listener);
        let refused = std::net::TcpStream::connect(("127.0.0.1", port));
        assert!(refused.is_err(), "the dropped listener still accepts");
        let (plain, port) = {
            let l = TcpMessageListener::bind("127.0.0.1:0", ListenerConfig::default())
                .await
                .unwrap();
            let port = l.local_addr().unwrap().port();
            (l, port)
        };
        drop(plain);
        let refused = std::net::TcpStream::connect(("127.0.0.1", port));
        assert!(refused.is_err(), "the dropped plain listener still accepts");
    });
}

/// A TLS client socket to the listener at `port`, for writing bytes by hand inside TLS.
async fn raw_tls(
    port: u16,
    roots: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tls::rustls;
    use tls::rustls::pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(roots) {
        store.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// Reads until the peer closes (or resets) the socket: true if it did within `within`.
async fn closed_within(socket: &mut (impl tokio::io::AsyncRead + Unpin), within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut sink = [0u8; 1024];
    timeout(within, async {
        while let Ok(n) = socket.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .is_ok()
}

/// Frames from a TLS byte stream's source until it ends: the goaway, if one came.
async fn goaway_then_end(
    source: &mut impl bunite_rpc::transport::MessageSource,
) -> Option<bunite_rpc::wire::Goaway> {
    use bunite_rpc::transport::MessageSourceExt;
    use bunite_rpc::wire::{DecodeLimits, Decoder, Frame};
    let mut dec = Decoder::new(DecodeLimits::default());
    let mut goaway = None;
    while let Ok(Some(msg)) = timeout(WAIT, source.recv()).await.expect("the server hung") {
        if let Frame::Goaway(g) = dec.decode_frame(&msg).expect("a frame") {
            goaway = Some(g);
        }
    }
    goaway
}

/// A fresh client of the listener at `port` is accepted and called: the listener's slot is
/// free again.
async fn served_once_more(listener: &TcpMessageListener, port: u16, roots: ClientTls) {
    let client = tokio::spawn(async move { tls::tcp_connect("127.0.0.1", port, &roots).await });
    let (transport, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let client = timeout(WAIT, client).await.unwrap().unwrap().unwrap();
    call_counter(tracked(transport), tracked(client)).await;
}

/// A TCP peer that connects to a TLS listener and sends nothing, and one that sends half a
/// ClientHello, are closed at the listener's handshake timeout, and the connection slots
/// their handshakes held come back: with `max_connections(2)`, a real client waits behind
/// them only until then, and the listener keeps accepting afterwards.
#[test]
fn peers_that_never_finish_the_tls_handshake_are_closed_at_the_handshake_timeout() {
    run(async {
        let handshake_timeout = Duration::from_millis(300);
        let config = ListenerConfig::default()
            .max_connections(2)
            .handshake_timeout(handshake_timeout);
        let (listener, port, roots) = tls_byte_listener(config).await;
        let started = tokio::time::Instant::now();
        let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut half = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        // A handshake record of 512 bytes, of which 40 come.
        use tokio::io::AsyncWriteExt;
        let mut hello = vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        hello.resize(40, 0x2a);
        half.write_all(&hello).await.unwrap();
        // Both slots are taken by the handshakes: the real client's waits in the backlog.
        let client = tokio::spawn(async move { tls::tcp_connect("127.0.0.1", port, &roots).await });
        assert!(closed_within(&mut silent, WAIT).await, "the silent peer");
        assert!(closed_within(&mut half, WAIT).await, "the half ClientHello");
        assert!(
            started.elapsed() >= handshake_timeout,
            "closed before the handshake timeout: {:?}",
            started.elapsed()
        );
        let (transport, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let client = timeout(WAIT, client).await.unwrap().unwrap().unwrap();
        call_counter(tracked(transport), tracked(client)).await;
    });
}

/// Garbage instead of a ClientHello (an HTTP request, a record of an unknown type, a
/// handshake record longer than TLS allows) fails the handshake at once, not at the
/// handshake timeout (a minute here), and gives the listener's only slot back each time.
#[test]
fn garbage_instead_of_a_client_hello_is_closed_at_once_and_frees_its_slot() {
    run(async {
        let config = ListenerConfig::default()
            .max_connections(1)
            .handshake_timeout(Duration::from_secs(60));
        let (listener, port, roots) = tls_byte_listener(config).await;
        let garbage: [&[u8]; 3] = [
            b"GET /rpc HTTP/1.1\r\nHost: localhost\r\n\r\n",
            &[0x42; 64],
            &[0x16, 0x03, 0x01, 0xff, 0xff, 0x01, 0x00],
        ];
        for bytes in garbage {
            use tokio::io::AsyncWriteExt;
            let mut peer = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            peer.write_all(bytes).await.unwrap();
            assert!(closed_within(&mut peer, WAIT).await, "{bytes:?}");
        }
        served_once_more(&listener, port, roots).await;
    });
}

/// A TLS peer that completes the handshake and never says hello is dropped at the
/// connection's hello timeout (a goaway, then the end), and its slot comes back.
#[test]
fn a_tls_peer_that_never_says_hello_is_closed_at_the_hello_timeout() {
    run(async {
        let config = ListenerConfig::default().max_connections(1);
        let (listener, port, roots) = tls_byte_listener(config).await;
        let mute = tls::tcp_connect("127.0.0.1", port, &roots).await.unwrap();
        let (transport, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let hello_timeout = Duration::from_millis(300);
        let limits = bunite_rpc::Limits {
            hello_timeout: Some(hello_timeout),
            ..Default::default()
        };
        let started = tokio::time::Instant::now();
        let server = tracked_with(Connection::builder().limits(limits), transport);
        let (_sink, mut source) = mute.split();
        let goaway = goaway_then_end(&mut source).await.expect("a goaway");
        assert!(
            started.elapsed() >= hello_timeout,
            "{:?}",
            started.elapsed()
        );
        let e = goaway.error.expect("goaway error");
        assert_eq!(e.code, "deadline_exceeded");
        timeout(WAIT, server.closed()).await.unwrap();
        drop((_sink, source));
        // The slot is back.
        served_once_more(&listener, port, roots).await;
    });
}

/// PROTOCOL §11 over TLS as over plain TCP: a message above the listener's `max_bytes`
/// gets goaway `resource_exhausted` `max_frame_bytes` before the close, every time, even
/// with its 4 MiB body still arriving as the server closes.
#[test]
fn an_oversize_message_over_tls_gets_goaway_before_the_close_in_every_run() {
    run(async {
        use bunite_rpc::transport::MessageSinkExt;
        let config = ListenerConfig::default().max_bytes(1024);
        let (listener, port, roots) = tls_byte_listener(config).await;
        for run in 0..10 {
            let client = tls::tcp_connect("127.0.0.1", port, &roots).await.unwrap();
            let (transport, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
            let server = tracked(transport);
            let (mut sink, mut source) = client.split();
            let sent = tokio::spawn(async move {
                let r = sink.send(bytes::Bytes::from(vec![0u8; 4 << 20])).await;
                (r, sink)
            });
            let goaway = goaway_then_end(&mut source).await;
            let g = goaway.unwrap_or_else(|| panic!("run {run}: closed without goaway"));
            assert_eq!(g.reason.as_deref(), Some("resource_exhausted"), "run {run}");
            let e = g.error.expect("goaway error");
            assert_eq!(e.reason(), Some("max_frame_bytes"), "run {run}");
            let (sent, sink) = timeout(WAIT, sent).await.unwrap().unwrap();
            assert!(
                sent.is_ok(),
                "run {run}: the server reset the socket: {sent:?}"
            );
            drop((sink, source));
            timeout(WAIT, server.closed()).await.unwrap();
        }
    });
}

/// The receive budget is shared across a TLS listener's connections as across a plain
/// one's: a peer that sends part of a long message inside TLS and stalls holds it, a
/// second connection's long call waits for it, and at the stalled message's deadline the
/// staller gets goaway `deadline_exceeded`, the bytes go back, and the call is answered.
#[test]
fn a_stalled_message_over_tls_holds_the_shared_budget_until_its_deadline() {
    run(async {
        use bunite_rpc::transport::ReceiveDeadline;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (cert, key) = self_signed();
        let budget = bunite_rpc::transport::ByteBudget::new(100_000);
        let grace = Duration::from_millis(500);
        let config = tls_config(&cert, &key)
            .receive_budget(budget.clone())
            .receive_deadline(Some(ReceiveDeadline::new(grace, 1 << 30)));
        let listener = TcpMessageListener::bind("127.0.0.1:0", config)
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();

        // The staller: past the server's hello, 30,000 bytes of a 90,000-byte message.
        let mut staller = raw_tls(port, cert.as_bytes()).await;
        let (transport, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let stalled_server = tracked(transport);
        let mut prefix = [0u8; 4];
        staller.read_exact(&mut prefix).await.unwrap();
        let mut hello = vec![0u8; u32::from_be_bytes(prefix) as usize];
        staller.read_exact(&mut hello).await.unwrap();
        // Before the bytes go: on two workers the server may take them, and start the
        // message's clock, before the writes return here.
        let stalled_at = tokio::time::Instant::now();
        staller.write_all(&90_000u32.to_be_bytes()).await.unwrap();
        staller.write_all(&[0u8; 30_000]).await.unwrap();
        staller.flush().await.unwrap();
        eventually(|| budget.available() <= 10_000).await;

        // A well-behaved client's 50 KB call waits for the budget behind it.
        let roots = ClientTls::from_ca_pem(cert.as_bytes()).unwrap();
        let client = tracked(tls::tcp_connect("127.0.0.1", port, &roots).await.unwrap());
        let (transport, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        let server = tracked(transport);
        serve_counter(&server).await;
        let counter = client.bootstrap(&counter_def()).await.unwrap();
        let long = Value::Bin(vec![1; 50_000]);
        let echoed = timeout(WAIT, counter.call_value("echo", long.clone()))
            .await
            .expect("the call waited past the staller's deadline")
            .unwrap();
        assert_eq!(echoed, long);
        assert!(
            stalled_at.elapsed() >= grace,
            "the call did not wait for the budget: {:?}",
            stalled_at.elapsed()
        );

        // The staller got its goaway and the end; its bytes are back.
        let mut rest = Vec::new();
        timeout(WAIT, staller.read_to_end(&mut rest))
            .await
            .unwrap()
            .ok();
        let mut dec = bunite_rpc::wire::Decoder::new(bunite_rpc::wire::DecodeLimits::default());
        let mut goaway = None;
        while let Some(frame) = take_frame(&mut rest, &mut dec) {
            if let bunite_rpc::wire::Frame::Goaway(g) = frame {
                goaway = Some(g);
            }
        }
        let goaway = goaway.expect("the staller's goaway");
        assert_eq!(goaway.reason.as_deref(), Some("deadline_exceeded"));
        timeout(WAIT, stalled_server.closed()).await.unwrap();
        drop(counter);
        assert_clean(&[&server, &client]).await;
        client.close();
        timeout(WAIT, server.closed()).await.unwrap();
        eventually(|| budget.available() == 100_000).await;
    });
}
