//! Connecting to a URL (`ws://…` or `tcp://…`), optionally inside the encrypted pipe.

use anyhow::{bail, Context, Result};
use bunite_rpc::transport::byte_stream::ByteStream;
use bunite_rpc::transport::sealed::{Key, Sealed, OVERHEAD};
use bunite_rpc::transport::{ws, MaxBytes, Transport};
use bunite_rpc::{Connection, ConnectionBuilder, Limits};

/// The transport bound of a connection with our default limits: room for the sealed pipe's
/// overhead when there is a key.
pub fn transport_max(key: &Option<Key>) -> usize {
    Limits::default().max_bytes + if key.is_some() { OVERHEAD } else { 0 }
}

/// Connects `builder` to `url`.
pub async fn connect(
    url: &str,
    key: Option<Key>,
    builder: ConnectionBuilder,
) -> Result<Connection> {
    // The sealed pipe makes room for its own overhead.
    let max = Limits::default().max_bytes;
    if let Some(addr) = url.strip_prefix("tcp://") {
        let addr = addr.trim_end_matches('/');
        let socket = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(finish(
            ByteStream::tcp(socket).with_max_bytes(max),
            key,
            builder,
        ))
    } else if url.starts_with("ws://") || url.starts_with("wss://") {
        let t = ws::connect_with_max_bytes(url, max)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        Ok(finish(t, key, builder))
    } else {
        bail!("unsupported URL {url:?}: use ws://HOST:PORT/PATH or tcp://HOST:PORT")
    }
}

/// Starts the connection over `t`, sealed when there is a key.
pub fn finish<T: Transport + MaxBytes>(
    t: T,
    key: Option<Key>,
    builder: ConnectionBuilder,
) -> Connection {
    match key {
        Some(key) => builder.connect(Sealed::new(t, key)),
        None => builder.connect(t),
    }
}
