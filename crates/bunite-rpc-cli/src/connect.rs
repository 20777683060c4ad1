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
    connect_with(&Target::parse(url)?, &options, builder).await
}

/// Where a URL points: what [`connect_with`] needs of it, parsed once, so that a command
/// can tell a mistyped URL (a usage error) from a server it cannot reach before it
/// connects.
#[derive(Debug)]
pub struct Target<'a> {
    url: &'a str,
    kind: Kind<'a>,
}

#[derive(Debug)]
enum Kind<'a> {
    Tcp(&'a str),
    Tls { host: &'a str, port: u16 },
    Ws { uri: Uri, secure: bool },
}

impl<'a> Target<'a> {
    /// Reads `url`: its scheme, and the shape of what follows it.
    pub fn parse(url: &'a str) -> Result<Self> {
        let kind = if let Some(addr) = url.strip_prefix("tcp://") {
            Kind::Tcp(addr.trim_end_matches('/'))
        } else if let Some(addr) = url.strip_prefix("tls://") {
            let (host, port) = host_port(addr.trim_end_matches('/'))?;
            Kind::Tls { host, port }
        } else if url.starts_with("ws://") || url.starts_with("wss://") {
            Kind::Ws {
                uri: url.parse().with_context(|| format!("bad URL {url:?}"))?,
                secure: url.starts_with("wss://"),
            }
        } else {
            anyhow::bail!(
                "unsupported URL {url:?}: use ws://HOST:PORT/PATH, wss://HOST:PORT/PATH, \
                 tcp://HOST:PORT or tls://HOST:PORT"
            );
        };
        Ok(Target { url, kind })
    }
}

/// Connects `builder` to `target` with `options`.
pub async fn connect_with(
    target: &Target<'_>,
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
    let failed = || format!("connecting to {}", target.url);
    Ok(match &target.kind {
        Kind::Tcp(addr) => {
            let t = bunite_rpc::transport::byte_stream::tcp_connect(*addr)
                .await
                .with_context(failed)?;
            finish(t.with_max_bytes(max), options.key.clone(), builder)
        }
        Kind::Tls { host, port } => {
            let t = tls::tcp_connect(host, *port, &roots()?)
                .await
                .map_err(|e| anyhow::anyhow!(e.report()))
                .with_context(failed)?;
            finish(t.with_max_bytes(max), options.key.clone(), builder)
        }
        Kind::Ws { uri, secure } => {
            let mut connector = WsConnector::new().max_bytes(max);
            if *secure {
                connector = connector.tls(roots()?);
            }
            let mut request = ClientRequestBuilder::new(uri.clone());
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
            finish(t, options.key.clone(), builder)
        }
    })
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
