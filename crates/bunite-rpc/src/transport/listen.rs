//! The accept loop of the listeners whose connections need a handshake (WebSocket, TLS):
//! accepted sockets are handed to their own handshake task, so a slow or silent client
//! never delays the others, within the bounds of a [`ListenerConfig`]: live connections
//! (`max_connections`), handshakes in progress (`max_handshakes`) and the time each may
//! take (`handshake_timeout`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::ListenerConfig;

/// How many handshaken sockets wait for `accept` before handshakes pause.
const ACCEPT_QUEUE: usize = 64;

/// Sockets whose handshakes succeeded, from a background accept loop that stops when this
/// is dropped, with the handshakes it started (their sockets are closed).
///
/// The loop owns the listening socket only as far as it accepts on it: this handle shares
/// it, so that a drop stops it listening at once. Aborting the loop alone left the socket
/// open until the runtime next ran the task, and the kernel went on accepting into its
/// backlog meanwhile (a server whose stop had returned still took connections, and one
/// restarted on its port could not bind).
#[derive(Debug)]
pub(crate) struct Handshaken<T> {
    accepted: tokio::sync::Mutex<mpsc::Receiver<T>>,
    listener: Arc<TcpListener>,
    task: JoinHandle<()>,
}

impl<T> Drop for Handshaken<T> {
    fn drop(&mut self) {
        self.task.abort();
        // Closed first, so that a loop still running (on another worker, before the abort
        // lands) sees that nobody takes sockets when the shutdown fails its `accept`, and
        // ends without a warning.
        self.accepted.get_mut().close();
        // A shutdown of a listening socket stops it listening (Linux: pending connections
        // are reset, new ones refused, `accept` fails); the descriptor itself is closed
        // with the task. Where a platform does not support it, the socket is closed with
        // the task as before. A syscall, never a wait.
        let _ = socket2::SockRef::from(&*self.listener).shutdown(std::net::Shutdown::Read);
    }
}

impl<T: Send + 'static> Handshaken<T> {
    /// Accepts on `listener`; `handshake` turns each socket (with its peer address and
    /// its connection slot, to be given back when the connection ends) into a `T`, or
    /// says why not.
    pub(crate) fn spawn<F, Fut>(listener: TcpListener, config: ListenerConfig, handshake: F) -> Self
    where
        F: Fn(TcpStream, SocketAddr, OwnedSemaphorePermit) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let listener = Arc::new(listener);
        let task = tokio::spawn(accept_loop(
            Arc::clone(&listener),
            config,
            Arc::new(handshake),
            tx,
        ));
        Handshaken {
            accepted: tokio::sync::Mutex::new(rx),
            listener,
            task,
        }
    }

    /// The next socket whose handshake succeeded; an error once the loop stopped.
    pub(crate) async fn next(&self) -> io::Result<T> {
        self.accepted
            .lock()
            .await
            .recv()
            .await
            .ok_or_else(|| io::Error::other("the listener stopped"))
    }
}

/// Accepts TCP connections (one per free connection slot) and hands each to its own
/// handshake task (one per free handshake permit).
async fn accept_loop<T, F, Fut>(
    listener: Arc<TcpListener>,
    config: ListenerConfig,
    handshake: Arc<F>,
    tx: mpsc::Sender<T>,
) where
    T: Send + 'static,
    F: Fn(TcpStream, SocketAddr, OwnedSemaphorePermit) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let handshakes = Arc::new(Semaphore::new(config.max_handshakes));
    loop {
        let (Ok(slot), Ok(permit)) = (
            Arc::clone(&slots).acquire_owned().await,
            Arc::clone(&handshakes).acquire_owned().await,
        ) else {
            return;
        };
        let (stream, peer_addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            // The handle was dropped: its shutdown of the socket is what failed `accept`.
            Err(_) if tx.is_closed() => return,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("listener accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if tx.is_closed() {
            return;
        }
        super::tune_tcp(&stream, config.tcp_keepalive);
        let (tx, handshake, timeout) =
            (tx.clone(), Arc::clone(&handshake), config.handshake_timeout);
        tokio::spawn(async move {
            let handshaken = tokio::time::timeout(timeout, handshake(stream, peer_addr, slot));
            let outcome = tokio::select! {
                outcome = handshaken => outcome,
                // The listener was dropped (a server stopping): nobody will take the
                // socket, so the handshake ends now rather than at its timeout.
                () = tx.closed() => return,
            };
            match outcome {
                // The handshake permit is held until the socket is handed over, so sockets
                // waiting for `accept` count toward the bound too.
                Ok(Ok(accepted)) => {
                    let _ = tx.send(accepted).await;
                    drop(permit);
                }
                Ok(Err(e)) => tracing::debug!(%peer_addr, "handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer_addr, "handshake timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::Layer;

    use super::*;

    /// Counts the events at `WARN` or above.
    struct Warnings(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> Layer<S> for Warnings {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            if *event.metadata().level() <= tracing::Level::WARN {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// A loop whose handle is gone (its receiver closed, as `Handshaken::drop` does before
    /// shutting the socket) ends when the shutdown fails its `accept`, without a warning:
    /// it logged "listener accept failed" and went on retrying every 100 ms.
    #[test]
    fn a_loop_whose_handle_is_gone_ends_quietly_when_accept_fails() {
        let warnings = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(Warnings(Arc::clone(&warnings)));
        let _guard = tracing::subscriber::set_default(subscriber);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
            let (tx, mut rx) = mpsc::channel::<()>(1);
            rx.close();
            let handshake = |_: TcpStream, _: SocketAddr, _: OwnedSemaphorePermit| async {
                Err::<(), _>("never reached".to_owned())
            };
            let task = tokio::spawn(accept_loop(
                Arc::clone(&listener),
                ListenerConfig::default(),
                Arc::new(handshake),
                tx,
            ));
            // Let the loop reach its `accept`, then stop the socket listening.
            tokio::task::yield_now().await;
            socket2::SockRef::from(&*listener)
                .shutdown(std::net::Shutdown::Read)
                .unwrap();
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the loop ended")
                .unwrap();
        });
        assert_eq!(warnings.load(Ordering::SeqCst), 0, "no warning logged");
    }
}
