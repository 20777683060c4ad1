//! Run with: `cargo run -p bunite-rpc --example plugin_crash`
//!
//! A child-process plugin that crashes: the host spawns this same program as a plugin
//! speaking over its stdin/stdout, calls it, then asks it to crash. The pending call fails
//! at once with `unavailable` and a `Disconnect` saying the transport ended; the host goes
//! on.

use std::time::Duration;

use bunite_rpc::transport::byte_stream;
use bunite_rpc::{cap, Connection, Status};

/// What the plugin offers.
#[cap(name = "demo.Plugin")]
pub trait Plugin {
    /// Echoes.
    async fn echo(&self, text: String) -> Result<String, Status>;
    /// Kills the plugin's process, as a bug would.
    async fn crash(&self) -> Result<(), Status>;
}

struct Impl;

impl Plugin for Impl {
    async fn echo(&self, text: String) -> Result<String, Status> {
        Ok(text)
    }

    async fn crash(&self) -> Result<(), Status> {
        std::process::exit(101);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Runtime::new()?;
    if std::env::args().nth(1).as_deref() == Some("plugin") {
        // The child: serve on stdio until the host goes away.
        rt.block_on(async {
            let conn = Connection::builder()
                .serve_cap::<PluginCap>(Impl)
                .connect(byte_stream::stdio());
            conn.closed().await;
        });
        rt.shutdown_timeout(Duration::from_millis(100));
        return Ok(());
    }
    rt.block_on(host())
}

async fn host() -> Result<(), Box<dyn std::error::Error>> {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.arg("plugin");
    let (mut child, transport) = byte_stream::spawn_child(cmd)?;
    let conn = Connection::new(transport);
    let plugin = PluginCap::bootstrap(&conn).await?;
    println!("echo → {}", plugin.echo("hi".into()).await?);

    let error = tokio::time::timeout(Duration::from_secs(5), plugin.crash())
        .await?
        .unwrap_err();
    println!("crash → {error} ({:?})", error.disconnect());
    println!("the plugin exited with {}", child.wait().await?);
    Ok(())
}
