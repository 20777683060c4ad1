//! Run with: `cargo run -p bunite-rpc --example revocation`
//!
//! Revocation (PROTOCOL §8, §12): unserving a name revokes the instances clients hold; their
//! pending and later calls fail `failed_precondition` `{reason:"revoked"}`, and later ones
//! are refused locally without reaching the server.

use bunite_rpc::transport::memory;
use bunite_rpc::{cap, Connection, LocalError, Status};

/// A session token.
#[cap(name = "demo.Session")]
pub trait Session {
    /// Who is logged in.
    async fn whoami(&self) -> Result<String, Status>;
}

struct Ada;

impl Session for Ada {
    async fn whoami(&self) -> Result<String, Status> {
        Ok("ada".into())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (a, b) = memory::pair();
    let server = Connection::new(a);
    let client = Connection::new(b);
    let served = server.serve_cap::<SessionCap>(Ada).await?;
    let session = SessionCap::bootstrap(&client).await?;
    println!("before: {}", session.whoami().await?);

    // Log out: unserving revokes every instance.
    served.unserve().await;

    // The revocation reaches the client before the next call's result would.
    let mut error = session.whoami().await.unwrap_err();
    if error.local_kind() != Some(LocalError::Revoked) {
        println!("in flight: {error}");
        error = session.whoami().await.unwrap_err();
    }
    assert_eq!(error.reason(), Some("revoked"));
    println!("after: {error} (refused locally: nothing was sent)");
    client.close();
    Ok(())
}
