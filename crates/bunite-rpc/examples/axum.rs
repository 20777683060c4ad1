//! Run with: `cargo run -p bunite-rpc --example axum --features axum` (then open
//! http://127.0.0.1:3000/)
//!
//! Serving on an existing axum `Router` (feature `axum`): a web page at `/` and bunite at
//! `/rpc`, one port, one HTTP server. The page's Origin reaches the policy through the
//! attestation. Ctrl-C stops it gracefully (the four steps of the `transport::axum`
//! module's `# Stopping`). With `--once` it calls itself once and stops the same way (as CI
//! runs it).

use std::net::SocketAddr;
use std::time::Duration;

use axum::{response::Html, routing::get, Router};
use bunite_rpc::transport::axum::RpcEndpoint;
use bunite_rpc::transport::ws::{self, http::Uri, ClientRequestBuilder};
use bunite_rpc::transport::ListenerConfig;
use bunite_rpc::{cap, Attestation, Connection, ConnectionSet, Policy, Status};

/// A greeter.
#[cap(name = "demo.Greeter")]
pub trait Greeter {
    /// Says hello.
    async fn greet(&self, name: String) -> Result<String, Status>;
}

struct English;

impl Greeter for English {
    async fn greet(&self, name: String) -> Result<String, Status> {
        Ok(format!("hello, {name}"))
    }
}

const PAGE: &str = r#"<!doctype html><title>bunite over axum</title>
<p>This page is served by axum; its bunite socket is <code>/rpc</code> on the same port.</p>"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let once = std::env::args().any(|a| a == "--once");
    let addr = if once {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:3000"
    };

    // Every connection joins the set, which stops them at the end.
    let connections = ConnectionSet::new();
    let endpoint = RpcEndpoint::new(ListenerConfig::default());
    let set = connections.clone();
    let rpc = endpoint.clone().route(move |up| {
        let set = set.clone();
        async move { set.insert(&greeter_connection(up)) }
    });
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/rpc", rpc);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    println!("serving http://{local}/ and ws://{local}/rpc");
    let (stop_http, http_stopping) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(async {
                let _ = http_stopping.await;
            })
            .await
    });
    if once {
        let uri: Uri = format!("ws://{local}/rpc").parse()?;
        let request =
            ClientRequestBuilder::new(uri).with_header("Origin", format!("http://{local}"));
        let conn = Connection::new(ws::connect(request).await?);
        let greeter = GreeterCap::bootstrap(&conn).await?;
        println!("{}", greeter.greet("axum".into()).await?);
        conn.close();
    } else {
        tokio::signal::ctrl_c().await?;
        println!("stopping (calls in progress may take 10s)");
    }
    // The graceful stop: axum's and the connections', in this order (module docs of
    // `transport::axum`, `# Stopping`).
    let _ = stop_http.send(());
    connections.drain(Duration::from_secs(10));
    http.await??;
    endpoint.handed_over().await;
    connections.closed().await;
    println!("stopped");
    Ok(())
}

/// The connection of an upgrade: its page's Origin in the attestation, and a policy that
/// lets only pages of this server bootstrap the greeter.
fn greeter_connection(up: bunite_rpc::transport::axum::Upgraded) -> Connection {
    let attestation = Attestation {
        origin: up.origin.unwrap_or_default(),
        ..Attestation::default()
    };
    let same_site = format!(
        "http://{}",
        up.headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
    );
    Connection::builder()
        .attestation(attestation)
        .policy(Policy::new(move |_name, who| who.origin == same_site))
        .serve_cap::<GreeterCap>(English)
        .connect(up.transport)
}
