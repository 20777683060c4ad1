//! Define a cap, serve it over WebSocket, call it.
//!
//! Run with: `cargo run -p bunite-rpc --example quickstart`

use bunite_rpc::transport::ws::{self, WsListener};
use bunite_rpc::{cap, Attestation, Connection, Status};

/// A greeter: the trait is the cap's schema, shared by server and client.
#[cap(name = "demo.Greeter", version = "1")]
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Server: one connection per WebSocket, each serving the greeter from the start.
    let listener = WsListener::bind("127.0.0.1:0", "/rpc").await?;
    let url = format!("ws://{}/rpc", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok(accepted) = listener.accept().await {
            let origin = accepted.origin.unwrap_or_default();
            Connection::builder()
                .attestation(Attestation {
                    origin,
                    ..Attestation::default()
                })
                .serve_cap::<GreeterCap>(English)
                .connect(accepted.transport);
        }
    });

    // Client: connect, bootstrap the typed client, call.
    let conn = Connection::new(ws::connect(url.as_str()).await?);
    let greeter: GreeterClient = GreeterCap::bootstrap(&conn).await?;
    println!("{}", greeter.greet("ada".into()).await?);
    conn.close();
    Ok(())
}
