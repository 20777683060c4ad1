//! TLS for the socket transports (feature `tls`): rustls with its `ring` provider, no
//! OpenSSL.
//!
//! - **Clients**: [`ClientTls`] holds the roots a client trusts: the platform's
//!   ([`ClientTls::platform`], the default of `wss://` URLs in [`ws::connect`](super::ws::connect)),
//!   a CA file ([`ClientTls::from_ca_pem_file`], e.g. for a self-signed server), or any
//!   rustls config. [`tcp_connect`] opens a length-prefixed byte stream inside TLS
//!   (`tls://HOST:PORT` in the CLI); [`WsConnector::tls`](super::ws::WsConnector::tls) sets
//!   the roots of `wss://`.
//! - **Servers**: [`ServerTls`] holds a certificate chain and its key, from PEM files
//!   ([`ServerTls::from_pem_files`]) or a rustls config. Given to a
//!   [`ListenerConfig`](super::ListenerConfig) with [`tls`](super::ListenerConfig::tls),
//!   it makes [`WsListener`](super::ws::WsListener) serve `wss://` and
//!   [`TcpMessageListener`](super::byte_stream::TcpMessageListener) serve `tls://`; the TLS
//!   handshake runs on its own task within the listener's `handshake_timeout` and
//!   `max_handshakes`, so a slow client never delays the others.
//!
//! [`rustls`] is re-exported, so a custom config needs no version-matched rustls of your
//! own.
//!
//! # Why the platform's roots
//!
//! [`ClientTls::platform`] reads the operating system's trust store (rustls-native-certs):
//! it trusts what the machine's other programs trust, including a CA an administrator
//! added, and it follows the system's updates rather than this crate's releases. The
//! alternative, a copy of Mozilla's roots compiled in (webpki-roots), works on a machine
//! with no trust store at all (a bare container), but ignores local CAs and ages with the
//! binary; such a program can pass its own roots with [`ClientTls::from_roots`].
//!
//! ```no_run
//! use bunite_rpc::transport::tls::{ClientTls, ServerTls};
//! use bunite_rpc::transport::{ws, ListenerConfig};
//! use bunite_rpc::Connection;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = ServerTls::from_pem_files("cert.pem", "key.pem")?;
//! let listener =
//!     ws::WsListener::bind_with("0.0.0.0:443", "/rpc", ListenerConfig::default().tls(tls)).await?;
//! # drop(listener);
//! // A client trusting one CA (a self-signed server's certificate, say).
//! let roots = ClientTls::from_ca_pem_file("ca.pem")?;
//! let transport = ws::WsConnector::new().tls(roots).connect("wss://example.test/rpc").await?;
//! let conn = Connection::new(transport);
//! # drop(conn);
//! # Ok(())
//! # }
//! ```

use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub use tokio_rustls::rustls;

use super::byte_stream::TcpTransport;
use super::socket::{self, Socket};
use super::TransportError;

/// What a client trusts: a rustls client config. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

/// The certificate a server presents: a rustls server config. Cheap to clone.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl ClientTls {
    /// Trusts the platform's roots (read once per process; see the module docs for why).
    /// Fails if the platform has none.
    pub fn platform() -> io::Result<Self> {
        static ROOTS: OnceLock<Result<Arc<rustls::RootCertStore>, String>> = OnceLock::new();
        let roots = ROOTS.get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map(ToString::to_string);
                return Err(format!(
                    "no trusted root certificates found on this platform{}; give the client a CA file \
                     (--ca FILE, ClientTls::from_ca_pem_file)",
                    why.map(|w| format!(" ({w})")).unwrap_or_default()
                ));
            }
            Ok(Arc::new(roots))
        });
        match roots {
            Ok(roots) => Self::from_roots(rustls::RootCertStore::clone(roots)),
            Err(e) => Err(io::Error::new(io::ErrorKind::NotFound, e.clone())),
        }
    }

    /// Trusts only the certificates of a PEM file (e.g. a private CA, or a self-signed
    /// server's own certificate).
    pub fn from_ca_pem_file(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let pem = std::fs::read(path)
            .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
        Self::from_ca_pem(&pem).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }

    /// Trusts only the certificates of PEM text.
    pub fn from_ca_pem(pem: &[u8]) -> io::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| invalid(format!("bad PEM certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| invalid(format!("unusable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(invalid("no certificate in the CA file"));
        }
        Self::from_roots(roots)
    }

    /// Trusts these roots.
    pub fn from_roots(roots: rustls::RootCertStore) -> io::Result<Self> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::from_config(Arc::new(config)))
    }

    /// Uses a rustls client config as it is (client certificates, ALPN, a custom verifier).
    pub fn from_config(config: Arc<rustls::ClientConfig>) -> Self {
        ClientTls {
            connector: TlsConnector::from(config),
        }
    }

    /// Runs the client handshake on `tcp`, checking the certificate against `host`.
    pub(crate) async fn connect(&self, host: &str, tcp: TcpStream) -> io::Result<Socket> {
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
            .map_err(|e| invalid(format!("{host:?} is not a TLS server name: {e}")))?;
        match self.connector.connect(name, tcp).await {
            Ok(stream) => Ok(Socket::tls(tokio_rustls::TlsStream::Client(stream))),
            Err(e) => Err(handshake_failed(host, e)),
        }
    }
}

/// A failed client handshake, said so that the user knows what to change.
fn handshake_failed(host: &str, e: io::Error) -> io::Error {
    let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    let hint = match rustls_error {
        Some(rustls::Error::InvalidCertificate(_)) => {
            "; the server's certificate is not trusted: give the client the CA that signed it \
             (--ca FILE, ClientTls::from_ca_pem_file)"
        }
        Some(rustls::Error::InvalidMessage(_)) | None if e.kind() == io::ErrorKind::InvalidData => {
            "; is the server speaking TLS on this port?"
        }
        _ => "",
    };
    io::Error::new(
        e.kind(),
        format!("TLS handshake with {host} failed: {e}{hint}"),
    )
}

impl ServerTls {
    /// A certificate chain and its private key, from PEM files.
    pub fn from_pem_files(cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> io::Result<Self> {
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", p.display())))
        };
        Self::from_pem(&read(cert_chain.as_ref())?, &read(key.as_ref())?)
    }

    /// A certificate chain and its private key, as PEM text.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> io::Result<Self> {
        let certs = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("bad PEM certificate: {e}")))?;
        if certs.is_empty() {
            return Err(invalid("no certificate in the certificate file"));
        }
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| invalid(format!("bad PEM private key: {e}")))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(format!("certificate and key do not fit: {e}")))?;
        Ok(Self::from_config(Arc::new(config)))
    }

    /// Uses a rustls server config as it is (client authentication, ALPN, several
    /// certificates).
    pub fn from_config(config: Arc<rustls::ServerConfig>) -> Self {
        ServerTls {
            acceptor: TlsAcceptor::from(config),
        }
    }

    /// Runs the server handshake on an accepted socket.
    pub(crate) async fn accept(&self, tcp: TcpStream) -> io::Result<Socket> {
        let stream = self.acceptor.accept(tcp).await?;
        Ok(Socket::tls(tokio_rustls::TlsStream::Server(stream)))
    }
}

/// Connects to `host:port` and opens a length-prefixed byte stream inside TLS, checking
/// the server's certificate against `host` with `tls`; within
/// [`CONNECT_TIMEOUT`](super::CONNECT_TIMEOUT).
pub async fn tcp_connect(
    host: &str,
    port: u16,
    tls: &ClientTls,
) -> Result<TcpTransport, TransportError> {
    let what = format!("{host}:{port}");
    socket::within(super::CONNECT_TIMEOUT, &what, async {
        let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
        socket::tune_tcp(&tcp, Some(super::TCP_KEEPALIVE));
        let socket = tls.connect(host, tcp).await?;
        Ok::<_, TransportError>(TcpTransport::from_socket(socket))
    })
    .await
}
