//! Timeouts with documented defaults: connecting (TCP, TLS and the WebSocket handshake
//! together) and bootstrapping (the wait for the peer's hello included).

mod common;

use std::time::Duration;

use bunite_rpc::transport::memory;
use bunite_rpc::{Code, Connection, Limits, LocalError, Policy};
use common::*;

use tokio::time::{timeout, Instant};

fn quick_bootstrap() -> Limits {
    Limits {
        bootstrap_timeout: Some(Duration::from_millis(200)),
        ..Limits::default()
    }
}

#[test]
fn the_defaults_are_documented_values() {
    assert_eq!(
        Limits::default().bootstrap_timeout,
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        bunite_rpc::transport::CONNECT_TIMEOUT,
        Duration::from_secs(10)
    );
}

#[test]
fn a_bootstrap_waiting_for_a_hello_that_never_comes_times_out() {
    run(async {
        let (a, _silent) = memory::pair();
        let conn = tracked_with(Connection::builder().limits(quick_bootstrap()), a);
        let started = Instant::now();
        let error = timeout(Duration::from_secs(5), conn.bootstrap(&counter_def()))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(error.local_kind(), Some(LocalError::DeadlineExceeded));
        assert_eq!(error.code(), Code::DeadlineExceeded);
        assert!(error.message().contains("\"test.counter\""), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        conn.close();
    });
}

#[test]
fn a_bootstrap_the_peer_never_answers_times_out_and_is_cancelled() {
    run(async {
        // The peer's policy never decides.
        let policy =
            Policy::from_async(|_name, _who| std::future::pending::<Result<bool, String>>());
        let (server, client) = pair_with(
            Connection::builder()
                .policy(policy)
                .serve(counter_def(), counter_impl()),
            Connection::builder().limits(quick_bootstrap()),
        );
        let error = timeout(Duration::from_secs(5), client.bootstrap(&counter_def()))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(error.local_kind(), Some(LocalError::DeadlineExceeded));
        // The session keeps a cancelled bootstrap pending until the peer answers, so that a
        // late CapRef is released; closing clears it (the leak check of `run`).
        client.close();
        timeout(Duration::from_secs(5), server.closed())
            .await
            .unwrap();
    });
}

#[cfg(feature = "ws")]
#[test]
fn a_websocket_server_that_never_answers_the_handshake_times_out() {
    run(async {
        use bunite_rpc::transport::ws::WsConnector;
        // Connections land in the backlog; nobody answers HTTP.
        let mute = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/rpc", mute.local_addr().unwrap());
        let started = Instant::now();
        let error = WsConnector::new()
            .connect_timeout(Duration::from_millis(200))
            .connect(url.as_str())
            .await
            .unwrap_err();
        assert_eq!(error.io_kind(), Some(std::io::ErrorKind::TimedOut));
        assert!(
            error.report().contains("timed out after 200 ms"),
            "{}",
            error.report()
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    });
}
