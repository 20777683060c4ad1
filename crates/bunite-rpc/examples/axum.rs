//! Run with: `cargo run -p bunite-rpc --example axum --features axum` (then open
//! http://127.0.0.1:3000/)
//!
//! Serving on an existing axum `Router` (feature `axum`): a web page at `/` and bunite at
//! `/rpc`, one port, one HTTP server. The page's Origin reaches the policy through the
//! attestation. With `--once` it calls itself once and exits (as CI runs it).

use std::net::SocketAddr;

use axum::{response::Html, routing::get, Router};
use bunite_rpc::transport::axum::RpcEndpoint;
use bunite_rpc::transport::ws::{self, http::Uri, ClientRequestBuilder};
use bunite_rpc::transport::ListenerConfig;
use bunite_rpc::{cap, Attestation, Connection, Policy, Status};

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

    let rpc = RpcEndpoint::new(ListenerConfig::default()).route(|up| async move {
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
        let conn = Connection::builder()
            .attestation(attestation)
            .policy(Policy::new(move |_name, who| who.origin == same_site))
            .serve_cap::<GreeterCap>(English)
            .connect(up.transport);
        conn.closed().await;
    });
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/rpc", rpc);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    println!("serving http://{local}/ and ws://{local}/rpc");
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    if !once {
        server.await??;
        return Ok(());
    }
    let uri: Uri = format!("ws://{local}/rpc").parse()?;
    let request = ClientRequestBuilder::new(uri).with_header("Origin", format!("http://{local}"));
    let conn = Connection::new(ws::connect(request).await?);
    let greeter = GreeterCap::bootstrap(&conn).await?;
    println!("{}", greeter.greet("axum".into()).await?);
    conn.close();
    Ok(())
}
