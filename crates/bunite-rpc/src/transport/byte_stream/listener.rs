//! A TCP listener whose connections share one set of bounds ([`ListenerConfig`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::Semaphore;

use super::{ByteStream, TcpTransport};
use crate::transport::ListenerConfig;

/// A TCP server for bunite connections, within the bounds of a [`ListenerConfig`]: at most
/// `max_connections` live transports (a transport's slot is given back when both its halves
/// are dropped; until then [`accept`](Self::accept) waits and new clients wait in the
/// kernel's backlog), each refusing messages above `max_bytes`, and all drawing the bytes of
/// long messages from one `receive_budget`.
#[derive(Debug)]
pub struct TcpMessageListener {
    listener: TcpListener,
    config: ListenerConfig,
    slots: Arc<Semaphore>,
}

impl TcpMessageListener {
    /// Binds `addr`.
    pub async fn bind(addr: impl ToSocketAddrs, config: ListenerConfig) -> io::Result<Self> {
        Ok(TcpMessageListener {
            listener: TcpListener::bind(addr).await?,
            slots: Arc::new(Semaphore::new(config.max_connections)),
            config,
        })
    }

    /// The bound address (to learn the port after binding port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bounds.
    pub fn config(&self) -> &ListenerConfig {
        &self.config
    }

    /// The next connection, once a connection slot is free. Errors are those of the
    /// socket's `accept` (e.g. out of file descriptors); the listener stays usable.
    pub async fn accept(&self) -> io::Result<(TcpTransport, SocketAddr)> {
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| io::Error::other("listener closed"))?;
        let (socket, peer) = self.listener.accept().await?;
        let transport = ByteStream::tcp(socket)
            .with_max_bytes(self.config.max_bytes)
            .with_budget(self.config.receive_budget.clone())
            .with_slot(slot);
        Ok((transport, peer))
    }
}
