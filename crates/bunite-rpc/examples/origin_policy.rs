//! Run with: `cargo run -p bunite-rpc --example origin_policy`
//!
//! A policy over the Origin: a WebSocket server whose attestation carries the handshake's
//! `Origin`, and a policy that lets only one origin bootstrap. The hello's own `origin`
//! claim is never trusted (PROTOCOL §6).

use bunite_rpc::transport::ws::{self, http::Uri, ClientRequestBuilder, WsListener};
use bunite_rpc::{cap, Attestation, Code, Connection, Policy, Status, TrustLevel};

/// The cap only the app's own page may use.
#[cap(name = "demo.Secrets")]
pub trait Secrets {
    /// A secret.
    async fn reveal(&self) -> Result<String, Status>;
}

struct Vault;

impl Secrets for Vault {
    async fn reveal(&self) -> Result<String, Status> {
        Ok("42".into())
    }
}

const APP: &str = "https://app.example";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = WsListener::bind("127.0.0.1:0", ws::DEFAULT_PATH).await?;
    let url = format!("ws://{}/rpc", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok(accepted) = listener.accept().await {
            // The host knows the Origin from the handshake: that is the attestation.
            let origin = accepted.origin.unwrap_or_default();
            let level = if origin == APP {
                TrustLevel::TrustedOrigin
            } else {
                TrustLevel::Untrusted
            };
            Connection::builder()
                .attestation(Attestation {
                    origin,
                    level,
                    ..Attestation::default()
                })
                .policy(Policy::new(|_name, who| {
                    who.level == TrustLevel::TrustedOrigin
                }))
                .serve_cap::<SecretsCap>(Vault)
                .connect(accepted.transport);
        }
    });

    for origin in [APP, "https://elsewhere.example"] {
        let request = ClientRequestBuilder::new(url.parse::<Uri>()?).with_header("Origin", origin);
        let conn = Connection::new(ws::connect(request).await?);
        match SecretsCap::bootstrap(&conn).await {
            Ok(secrets) => println!("{origin}: reveal → {}", secrets.reveal().await?),
            Err(e) => {
                assert_eq!(e.code(), Code::FailedPrecondition);
                println!("{origin}: refused ({e})");
            }
        }
        conn.close();
    }
    Ok(())
}
