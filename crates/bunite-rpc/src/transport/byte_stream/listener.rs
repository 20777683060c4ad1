//! A TCP listener whose connections share one set of bounds ([`ListenerConfig`]), plain or
//! terminating TLS (feature `tls`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::Semaphore;

use super::{ByteStream, TcpTransport};
use crate::transport::ListenerConfig;

/// A TCP server for bunite connections, within the bounds of a [`ListenerConfig`]: at most
/// `max_connections` live transports (a transport's slot is given back when both its halves
/// are dropped and its socket is closed, after lingering for up to
/// [`LINGER`](crate::transport::LINGER) if the peer was still sending; until then
/// [`accept`](Self::accept) waits and new clients wait in the kernel's backlog), each refusing messages above `max_bytes`, and all drawing the bytes of
/// long messages from one `receive_budget`. Accepted sockets get TCP keepalive
/// (`tcp_keepalive`).
///
/// With [`ListenerConfig::tls`] (feature `tls`) it terminates TLS: the handshakes run on
/// their own tasks, at most `max_handshakes` at once and each within `handshake_timeout`,
/// and [`accept`](Self::accept) returns the connections whose handshake succeeded.
///
/// Dropping the listener stops it: from then on its port refuses connections (with TLS,
/// whose accept loop runs on a task of its own: on Linux at once, elsewhere as that task
/// ends; the handshakes under way end too).
#[derive(Debug)]
pub struct TcpMessageListener {
    local_addr: SocketAddr,
    config: ListenerConfig,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Plain {
        listener: TcpListener,
        slots: Arc<Semaphore>,
    },
    #[cfg(feature = "tls")]
    Tls(crate::transport::listen::Handshaken<(TcpTransport, SocketAddr)>),
}

impl TcpMessageListener {
    /// Binds `addr`.
    pub async fn bind(addr: impl ToSocketAddrs, config: ListenerConfig) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        #[cfg(feature = "tls")]
        if let Some(tls) = config.tls.clone() {
            let transport_config = config.clone();
            let handshaken = crate::transport::listen::Handshaken::spawn(
                listener,
                config.clone(),
                move |stream, peer, slot| {
                    let (tls, config) = (tls.clone(), transport_config.clone());
                    async move {
                        let socket = tls.accept(stream).await.map_err(|e| e.to_string())?;
                        let transport = ByteStream::from_socket(socket)
                            .with_max_bytes(config.max_bytes)
                            .with_budget(config.receive_budget.clone())
                            .with_send_budget(config.send_budget.clone())
                            .with_receive_deadline(config.receive_deadline)
                            .with_slot(slot);
                        Ok((transport, peer))
                    }
                },
            );
            return Ok(TcpMessageListener {
                local_addr,
                config,
                mode: Mode::Tls(handshaken),
            });
        }
        Ok(TcpMessageListener {
            local_addr,
            mode: Mode::Plain {
                listener,
                slots: Arc::new(Semaphore::new(config.max_connections)),
            },
            config,
        })
    }

    /// The bound address (to learn the port after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }

    /// The bounds.
    pub fn config(&self) -> &ListenerConfig {
        &self.config
    }

    /// The next connection, once a connection slot is free. Errors are those of the
    /// socket's `accept` (e.g. out of file descriptors); the listener stays usable. With
    /// TLS, failed handshakes are dropped and the listener goes on; an error means it
    /// stopped.
    ///
    /// Cancel-safe: dropped while it waits, it gives back the connection slot it took and
    /// loses no connection (one not yet accepted waits for the next `accept`).
    pub async fn accept(&self) -> io::Result<(TcpTransport, SocketAddr)> {
        match &self.mode {
            Mode::Plain { listener, slots } => {
                let slot = Arc::clone(slots)
                    .acquire_owned()
                    .await
                    .map_err(|_| io::Error::other("listener closed"))?;
                let (socket, peer) = listener.accept().await?;
                crate::transport::tune_tcp(&socket, self.config.tcp_keepalive);
                let transport = ByteStream::from_socket(socket.into())
                    .with_max_bytes(self.config.max_bytes)
                    .with_budget(self.config.receive_budget.clone())
                    .with_send_budget(self.config.send_budget.clone())
                    .with_receive_deadline(self.config.receive_deadline)
                    .with_slot(slot);
                Ok((transport, peer))
            }
            #[cfg(feature = "tls")]
            Mode::Tls(handshaken) => handshaken.next().await,
        }
    }
}
