//! How the server commands (`interop-server`, `demo`) stop: on Ctrl-C or SIGTERM, through
//! [`ConnectionSet::serve_with_shutdown`]: the listeners are closed, every connection
//! drains (new calls refused `unavailable` `peer_closing`, the calls in progress answered,
//! for up to [`GRACE`]), each closes with a goaway, and the command exits 0. A second
//! signal closes every connection at once.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bunite_rpc::ConnectionSet;
use tokio::task::JoinHandle;

/// How long the calls in progress may take to finish once the server is asked to stop.
pub const GRACE: Duration = Duration::from_secs(10);

/// Completes on Ctrl-C (SIGINT) or, on Unix, SIGTERM. A signal whose handler cannot be
/// installed never completes (the other still stops the server).
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// The accept loops' task as the future [`ConnectionSet::serve_with_shutdown`] drops to
/// stop accepting: dropping it aborts the task, which drops the listeners.
struct AbortOnDrop(JoinHandle<()>);

impl Future for AbortOnDrop {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves until `stop` completes, then stops gracefully within `grace` (see the module
/// docs); `stopping` runs as the stop begins. Returns how many connections were open then,
/// or `None` if `stop` completed a second time and every connection was closed at once.
pub async fn serve_until<S, F>(
    connections: &ConnectionSet,
    accepting: JoinHandle<()>,
    stop: impl Fn() -> S,
    grace: Duration,
    stopping: F,
) -> Option<usize>
where
    S: Future<Output = ()>,
    F: FnOnce(),
{
    let (began, stopped) = tokio::sync::oneshot::channel::<()>();
    let first = stop();
    let signal = async move {
        first.await;
        stopping();
        let _ = began.send(());
    };
    let graceful = connections.serve_with_shutdown(AbortOnDrop(accepting), signal, grace);
    let again = async {
        if stopped.await.is_err() {
            // The accept loops ended first: the stop began without a signal.
            std::future::pending::<()>().await;
        }
        stop().await;
    };
    tokio::select! {
        n = graceful => Some(n),
        () = again => {
            connections.close();
            connections.closed().await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bunite_rpc::transport::memory;
    use bunite_rpc::{Code, Connection, Value};
    use tokio::sync::Notify;

    use super::*;

    /// An interop server's connection in `set` (the accept loop's work), the client's end
    /// and the client's `interop.counter`.
    async fn served(set: &ConnectionSet) -> (Connection, Connection, bunite_rpc::Client) {
        let (a, b) = memory::pair();
        let server = crate::interop_server::builder(Default::default()).connect(a);
        set.insert(&server);
        let client = Connection::new(b);
        let counter = client
            .bootstrap_name("interop.counter", None)
            .await
            .unwrap();
        (server, client, counter)
    }

    fn slow(ms: i64) -> Value {
        Value::Record([("ms".to_owned(), ms.into())].into_iter().collect())
    }

    /// A stop lets the call in progress finish and answer, refuses a new one, stops the
    /// accept loop, then closes the connection.
    #[tokio::test]
    async fn a_stop_lets_the_running_call_finish_refuses_new_ones_then_closes() {
        let set = ConnectionSet::new();
        let (server, client, counter) = served(&set).await;
        let accepting = tokio::spawn(std::future::pending::<()>());
        let accept_abort = accepting.abort_handle();
        let slow_call = tokio::spawn({
            let counter = counter.clone();
            async move { counter.call_value("slow", slow(300)).await }
        });
        while server.stats().active_calls == 0 {
            tokio::task::yield_now().await;
        }
        let signal = Arc::new(Notify::new());
        signal.notify_one();
        let began = Arc::new(Notify::new());
        let stop = {
            let (set, signal, began) = (set.clone(), signal.clone(), began.clone());
            tokio::spawn(async move {
                let stop = || {
                    let signal = signal.clone();
                    async move { signal.notified().await }
                };
                serve_until(&set, accepting, stop, GRACE, move || began.notify_one()).await
            })
        };
        began.notified().await;
        let refused = loop {
            match counter.call_value("get", Value::Undefined).await {
                Ok(_) => tokio::task::yield_now().await,
                Err(e) => break e,
            }
        };
        assert_eq!(refused.code(), Code::Unavailable);
        assert_eq!(refused.status().reason(), Some("peer_closing"));
        let done = slow_call.await.unwrap().expect("the running call finished");
        assert_eq!(done, Value::from("done"));
        assert_eq!(stop.await.unwrap(), Some(1));
        assert!(accept_abort.is_finished(), "the accept loop was stopped");
        assert!(server.is_closed() && set.is_empty());
        client.closed().await;
        assert!(server.stats().is_idle(), "{:?}", server.stats());
        assert!(client.stats().is_idle(), "{:?}", client.stats());
    }

    /// A second signal closes every connection at once, cutting the running call short.
    #[tokio::test]
    async fn a_second_signal_closes_at_once() {
        let set = ConnectionSet::new();
        let (server, client, counter) = served(&set).await;
        let slow_call = tokio::spawn({
            let counter = counter.clone();
            async move { counter.call_value("slow", slow(60_000)).await }
        });
        while server.stats().active_calls == 0 {
            tokio::task::yield_now().await;
        }
        let accepting = tokio::spawn(std::future::pending::<()>());
        // Each signal completes at once: the first starts the stop, the second ends it.
        let stopped = tokio::time::timeout(
            Duration::from_secs(10),
            serve_until(&set, accepting, || async {}, GRACE, || {}),
        )
        .await
        .expect("closed at once");
        assert_eq!(stopped, None);
        let cut = slow_call.await.unwrap().unwrap_err();
        assert_eq!(cut.code(), Code::Unavailable);
        assert!(server.is_closed() && set.is_empty());
        drop(counter);
        client.closed().await;
        assert!(client.stats().is_idle(), "{:?}", client.stats());
    }
}
