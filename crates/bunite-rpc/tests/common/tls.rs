//! One self-signed certificate for `localhost` per test run, the listener's and the
//! client's sides of it, and the handshake of a raw peer that trusts it (feature `tls`).

use std::sync::{Arc, OnceLock};

use bunite_rpc::transport::tls::{rustls, ClientTls, ServerTls};
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The certificate and its key, PEM, made once per test run.
pub fn certificate() -> &'static (String, String) {
    static CERT: OnceLock<(String, String)> = OnceLock::new();
    CERT.get_or_init(|| {
        let names = vec!["localhost".to_owned()];
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        (certified.cert.pem(), certified.key_pair.serialize_pem())
    })
}

/// What a listener serves.
pub fn server() -> ServerTls {
    let (cert, key) = certificate();
    ServerTls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap()
}

/// What a well-behaved client trusts.
pub fn roots() -> ClientTls {
    ClientTls::from_ca_pem(certificate().0.as_bytes()).unwrap()
}

/// The client handshake of a raw peer on `tcp`, as `localhost`.
pub async fn connect(tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut store = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(certificate().0.as_bytes()) {
            store.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
        Arc::new(config)
    });
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
}
