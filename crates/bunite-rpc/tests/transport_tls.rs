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
