//! Run with: `cargo run -p bunite-rpc --example tls --features tls`
//!
//! TLS (feature `tls`): a `wss://` listener with a certificate made here (rcgen; a real
//! server loads PEM files with `ServerTls::from_pem_files`), a client that trusts it
//! through a CA file, and one that does not.

use bunite_rpc::transport::tls::{ClientTls, ServerTls};
use bunite_rpc::transport::ws::{WsConnector, WsListener};
use bunite_rpc::transport::ListenerConfig;
use bunite_rpc::{cap, Connection, Status};

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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let (cert, key) = (made.cert.pem(), made.key_pair.serialize_pem());

    let tls = ServerTls::from_pem(cert.as_bytes(), key.as_bytes())?;
    let listener =
        WsListener::bind_with("127.0.0.1:0", "/rpc", ListenerConfig::default().tls(tls)).await?;
    let url = format!("wss://localhost:{}/rpc", listener.local_addr()?.port());
    tokio::spawn(async move {
        while let Ok(accepted) = listener.accept().await {
            Connection::builder()
                .serve_cap::<GreeterCap>(English)
                .connect(accepted.transport);
        }
    });

    // A client that trusts the certificate (for a real server: ClientTls::platform(), the
    // default of `ws::connect("wss://…")`).
    let trusted = ClientTls::from_ca_pem(cert.as_bytes())?;
    let conn = Connection::new(
        WsConnector::new()
            .tls(trusted)
            .connect(url.as_str())
            .await?,
    );
    let greeter = GreeterCap::bootstrap(&conn).await?;
    println!("{}", greeter.greet("ada".into()).await?);
    conn.close();

    // One that trusts another certificate refuses the handshake, and says what to do.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let wrong = ClientTls::from_ca_pem(other.cert.pem().as_bytes())?;
    let refused = WsConnector::new()
        .tls(wrong)
        .connect(url.as_str())
        .await
        .unwrap_err();
    println!("untrusted: {}", refused.report());
    Ok(())
}
