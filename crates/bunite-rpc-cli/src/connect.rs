//! Connecting to a URL (`ws://…`, `wss://…`, `tcp://…`, `tls://…`), optionally inside the
//! encrypted pipe, with the handshake options of `call` and `stream` (`--origin`, `-H`,
//! `--ca`).

use anyhow::{Context, Result};
use bunite_rpc::transport::sealed::{Key, Sealed, OVERHEAD};
use bunite_rpc::transport::tls::{self, ClientTls};
use bunite_rpc::transport::ws::{http::Uri, ClientRequestBuilder, WsConnector};
use bunite_rpc::transport::{MaxBytes, Transport};
use bunite_rpc::{Connection, ConnectionBuilder, Limits};

/// The transport bound of a connection with our default limits: room for the sealed pipe's
/// overhead when there is a key.
pub fn transport_max(key: &Option<Key>) -> usize {
    Limits::default().max_bytes + if key.is_some() { OVERHEAD } else { 0 }
}

/// How to reach a server, beyond its URL.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// The AES-256-GCM pipe key.
    pub key: Option<Key>,
    /// Trust only this CA file for `wss://` and `tls://` (default: the platform's roots).
    pub ca: Option<std::path::PathBuf>,
    /// The WebSocket handshake's `Origin`.
    pub origin: Option<String>,
    /// Further WebSocket handshake headers.
    pub headers: Vec<(String, String)>,
}

/// Connects `builder` to `url`.
pub async fn connect(
    url: &str,
    key: Option<Key>,
    builder: ConnectionBuilder,
) -> Result<Connection> {
    let options = Options {
        key,
        ..Options::default()
    };
    connect_with(url, &options, builder).await
}

/// Checks that `url` is one [`connect_with`] takes (its scheme, and the shape of what
/// follows it) without connecting, so that a command can tell a mistyped URL (a usage
/// error) from a server it cannot reach.
pub fn check_url(url: &str) -> Result<()> {
    if let Some(addr) = url.strip_prefix("tls://") {
        host_port(addr.trim_end_matches('/'))?;
    } else if url.starts_with("ws://") || url.starts_with("wss://") {
        url.parse::<Uri>()
            .with_context(|| format!("bad URL {url:?}"))?;
    } else if !url.starts_with("tcp://") {
        return Err(unsupported(url));
    }
    Ok(())
}

/// The error of a URL whose scheme we do not take.
fn unsupported(url: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "unsupported URL {url:?}: use ws://HOST:PORT/PATH, wss://HOST:PORT/PATH, \
         tcp://HOST:PORT or tls://HOST:PORT"
    )
}

/// Connects `builder` to `url` with `options`.
pub async fn connect_with(
    url: &str,
    options: &Options,
    builder: ConnectionBuilder,
) -> Result<Connection> {
    let max = Limits::default().max_bytes;
    let roots = || -> Result<ClientTls> {
        Ok(match &options.ca {
            Some(path) => ClientTls::from_ca_pem_file(path)?,
            None => ClientTls::platform()?,
        })
    };
    check_url(url)?;
    let failed = || format!("connecting to {url}");
    let conn = if let Some(addr) = url.strip_prefix("tcp://") {
        let addr = addr.trim_end_matches('/');
        let t = bunite_rpc::transport::byte_stream::tcp_connect(addr)
            .await
            .with_context(failed)?;
        start(t.with_max_bytes(max), options, builder)
    } else if let Some(addr) = url.strip_prefix("tls://") {
        let (host, port) = host_port(addr.trim_end_matches('/'))?;
        let t = tls::tcp_connect(host, port, &roots()?)
            .await
            .map_err(|e| anyhow::anyhow!(e.report()))
            .with_context(failed)?;
        start(t.with_max_bytes(max), options, builder)
    } else if url.starts_with("ws://") || url.starts_with("wss://") {
        let mut connector = WsConnector::new().max_bytes(max);
        if url.starts_with("wss://") {
            connector = connector.tls(roots()?);
        }
        let uri: Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
        let mut request = ClientRequestBuilder::new(uri);
        if let Some(origin) = &options.origin {
            request = request.with_header("Origin", origin);
        }
        for (name, value) in &options.headers {
            request = request.with_header(name, value);
        }
        let t = connector
            .connect(request)
            .await
            .map_err(|e| anyhow::anyhow!(e.report()))
            .with_context(failed)?;
        start(t, options, builder)
    } else {
        return Err(unsupported(url));
    };
    Ok(conn)
}

/// `HOST:PORT` (a bracketed IPv6 host too).
fn host_port(addr: &str) -> Result<(&str, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("{addr:?} is not HOST:PORT"))?;
    let port = port
        .parse()
        .with_context(|| format!("{port:?} is not a port"))?;
    Ok((host, port))
}

/// Starts the connection over `t` (sealed when there is a key).
fn start<T: Transport + MaxBytes>(
    t: T,
    options: &Options,
    builder: ConnectionBuilder,
) -> Connection {
    match &options.key {
        Some(key) => builder.connect(Sealed::new(t, key.clone())),
        None => builder.connect(t),
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
