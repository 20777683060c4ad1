//! The demo's web page and `/rpc` on one port: a tiny HTTP responder in front of the
//! WebSocket handshake.
//!
//! Each TCP connection's request head is peeked (not read) first: a WebSocket upgrade of
//! `/rpc` goes on to tungstenite's handshake with the bytes still unread, anything else is
//! a `GET` of a file of the web client's directory (`js/`): `/` is `web/demo.html`, `/js/…`
//! the compiled client (`dist/…`), `/vendor/msgpackr/…` msgpackr's ES modules. This is the
//! smallest sound way to share the port without a router: the library's `WsListener` stays
//! as it is, and nothing here parses more HTTP than a request line and two headers.
//!
//! Bounds: a request head of at most 8 KiB, read within 10 s; at most 256 requests being
//! handled at once; files of at most 16 MiB; paths of plain segments only (no `..`, no
//! hidden files).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bunite_rpc::transport::ws::{self, WsTransport};
use bunite_rpc::transport::ListenerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

/// The largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head (and finish the handshake).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests handled at once.
const MAX_CONCURRENT: usize = 256;
/// The largest file served.
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// A WebSocket accepted at `/rpc`, with its `Origin` header.
pub struct Accepted {
    pub transport: WsTransport,
    pub origin: Option<String>,
}

/// The directory the page and the client are served from (`js/` of this repository).
pub fn default_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../js")
}

/// Checks the client was built: the page's script and msgpackr are there.
pub fn check_root(root: &Path) -> Result<()> {
    for needed in [
        "web/demo.html",
        "dist/web/demo.js",
        "node_modules/msgpackr/index.js",
    ] {
        if !root.join(needed).is_file() {
            bail!(
                "{} is missing: build the web client first: (cd {} && npm ci && npm run build)",
                root.join(needed).display(),
                root.display()
            );
        }
    }
    Ok(())
}

/// Binds `addr`; returns its address and the sockets accepted at `/rpc`. Page requests are
/// answered in the background until the receiver is dropped.
pub async fn bind(
    addr: &str,
    root: PathBuf,
    max_bytes: usize,
) -> Result<(SocketAddr, mpsc::Receiver<Accepted>)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let (tx, rx) = mpsc::channel(64);
    let root = Arc::new(root);
    // One config for every socket: their partly received messages share one budget.
    let config = Arc::new(ListenerConfig::default().max_bytes(max_bytes));
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
        loop {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if tx.is_closed() {
                return;
            }
            let (tx, root, config) = (tx.clone(), Arc::clone(&root), Arc::clone(&config));
            tokio::spawn(async move {
                let handled =
                    tokio::time::timeout(HEAD_TIMEOUT, handle(stream, &root, &config)).await;
                if let Ok(Ok(Some(accepted))) = handled {
                    let _ = tx.send(accepted).await;
                }
                drop(permit);
            });
        }
    });
    Ok((local, rx))
}

/// The request line and the headers that matter.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    path: String,
    upgrade: bool,
    len: usize,
}

/// Reads the head of `buf` if it is complete (`None` if more bytes are needed).
fn parse_head(buf: &[u8]) -> Option<Result<Head>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let Ok(text) = std::str::from_utf8(&buf[..end]) else {
        return Some(Err(anyhow::anyhow!("request head is not UTF-8")));
    };
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target)) = (first.next(), first.next()) else {
        return Some(Err(anyhow::anyhow!("bad request line")));
    };
    let path = target
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_owned();
    let upgrade = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("upgrade") && v.trim().eq_ignore_ascii_case("websocket")
        })
    });
    Some(Ok(Head {
        method: method.to_owned(),
        path,
        upgrade,
        len: end,
    }))
}

// The handshake callback's `Result<Response, ErrorResponse>` is tungstenite's signature.
#[allow(clippy::result_large_err)]
async fn handle(
    mut stream: TcpStream,
    root: &Path,
    config: &ListenerConfig,
) -> Result<Option<Accepted>> {
    let mut buf = vec![0u8; MAX_HEAD];
    let head = loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        match parse_head(&buf[..n]) {
            Some(head) => break head?,
            None if n >= MAX_HEAD => {
                respond(
                    &mut stream,
                    431,
                    "text/plain",
                    b"request head too large",
                    false,
                )
                .await?;
                return Ok(None);
            }
            // More of the head is on its way.
            None => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    };
    if head.upgrade && head.path == "/rpc" {
        let _ = stream.set_nodelay(true);
        let (transport, origin) = ws::accept_upgrade(stream, "/rpc", config).await?;
        return Ok(Some(Accepted { transport, origin }));
    }
    // Consume the head we peeked, so closing does not reset the connection.
    let mut head_bytes = vec![0u8; head.len];
    stream.read_exact(&mut head_bytes).await?;
    let body = head.method != "HEAD";
    if head.method != "GET" && head.method != "HEAD" {
        respond(&mut stream, 405, "text/plain", b"GET only", body).await?;
        return Ok(None);
    }
    match file_for(root, &head.path) {
        Some(path) => match read_file(&path).await {
            Ok(bytes) => respond(&mut stream, 200, content_type(&path), &bytes, body).await?,
            Err(_) => respond(&mut stream, 404, "text/plain", b"not found", body).await?,
        },
        None => respond(&mut stream, 404, "text/plain", b"not found", body).await?,
    }
    Ok(None)
}

/// The file a URL path names, if it names one we serve.
fn file_for(root: &Path, path: &str) -> Option<PathBuf> {
    if path == "/" || path == "/index.html" {
        return Some(root.join("web/demo.html"));
    }
    let (base, rest) = if let Some(rest) = path.strip_prefix("/js/") {
        (root.join("dist"), rest)
    } else if let Some(rest) = path.strip_prefix("/vendor/msgpackr/") {
        (root.join("node_modules/msgpackr"), rest)
    } else if let Some(rest) = path.strip_prefix("/web/") {
        (root.join("web"), rest)
    } else {
        return None;
    };
    let plain = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    if !rest.split('/').all(plain) {
        return None;
    }
    Some(base.join(rest))
}

async fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let meta = tokio::fs::metadata(path).await?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return Err(std::io::Error::other("not a servable file"));
    }
    tokio::fs::read(path).await
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    with_body: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if with_body {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_read_once_complete() {
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n").is_none());
        let h = parse_head(b"GET /rpc?x=1 HTTP/1.1\r\nUpgrade: WebSocket\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.method.as_str(), h.path.as_str(), h.upgrade),
            ("GET", "/rpc", true)
        );
        let h = parse_head(b"GET /js/src/index.js HTTP/1.1\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!((h.upgrade, h.len), (false, 33));
    }

    #[test]
    fn only_plain_paths_under_the_served_folders() {
        let root = Path::new("/r");
        assert_eq!(file_for(root, "/"), Some(root.join("web/demo.html")));
        assert_eq!(
            file_for(root, "/js/src/index.js"),
            Some(root.join("dist/src/index.js"))
        );
        assert_eq!(
            file_for(root, "/vendor/msgpackr/pack.js"),
            Some(root.join("node_modules/msgpackr/pack.js"))
        );
        for bad in [
            "/js/../secret",
            "/js/src/../../x",
            "/js/.env",
            "/js//x",
            "/etc/passwd",
            "/js/a%2f..",
            "/vendor/msgpackr/",
        ] {
            assert_eq!(file_for(root, bad), None, "{bad}");
        }
    }
}
