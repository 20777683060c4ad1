//! The I/O side of a connection: the reader and writer tasks, and the tasks that run
//! handlers and server streams. Everything here awaits; nothing here decides (the session
//! does).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bunite_wire::{Decoder, FrameDecodeError};
use futures::{FutureExt, StreamExt};
use tokio::time::Instant;

use super::Shared;
use crate::context::{CallContext, CallScope, CURRENT_CALL};
use crate::handler::Returned;
use crate::schema::MethodKind;
use crate::session::streams::Credit;
use crate::session::Invocation;
use crate::status::{reason, Status};
use crate::transport::{
    MessageSink, MessageSinkExt, MessageSource, MessageSourceExt, TransportError,
};

/// Runs one handler: signals it at its deadline, drops it on cancel, catches panics, and
/// reports the outcome to the session.
pub(super) async fn invoke(shared: Arc<Shared>, inv: Invocation) {
    let scope = CallScope {
        connection: shared.id,
        call_id: inv.call_id,
        deadline: inv.deadline.map(|d| Instant::now() + d),
    };
    let ctx = CallContext::new(Arc::clone(&shared), &inv, scope.deadline);
    if inv.kind == MethodKind::Stream {
        return run_stream(shared, inv, scope, ctx).await;
    }
    let fut = inv.imp.call(&inv.method, inv.args, ctx);
    let signal = inv.signal.clone();
    let deadline = async move {
        match inv.signal_after {
            Some(after) => {
                tokio::time::sleep(after).await;
                signal.cancel();
                std::future::pending::<()>().await
            }
            None => std::future::pending::<()>().await,
        }
    };
    let run = CURRENT_CALL.scope(scope, AssertUnwindSafe(fut).catch_unwind());
    // Biased: once aborted, the handler is not polled again.
    let outcome: Option<Result<Returned, Status>> = tokio::select! {
        biased;
        _ = inv.abort.cancelled() => None,
        r = run => Some(r.unwrap_or_else(|_| Err(Status::internal("handler panicked")))),
        _ = deadline => None,
    };
    if let Some(result) = outcome {
        shared.with(|s| s.finish_call(inv.call_id, result, Instant::now()));
    }
}

/// Drives one server stream: waits for credit before pulling each value from the source,
/// stops at once on cancel (even while waiting for credit), catches panics.
async fn run_stream(shared: Arc<Shared>, inv: Invocation, scope: CallScope, ctx: CallContext) {
    let id = inv.call_id;
    let opened = CURRENT_CALL.sync_scope(scope, || {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            inv.imp.stream(&inv.method, inv.args, ctx)
        }))
    });
    let mut source = match opened {
        Ok(Ok(source)) => source,
        Ok(Err(status)) => return shared.with(|s| s.stream_error(id, status)),
        Err(_) => {
            return shared.with(|s| s.stream_error(id, Status::internal("stream handler panicked")))
        }
    };
    loop {
        loop {
            match shared.with(|s| s.stream_credit(id)) {
                Credit::Ready => break,
                Credit::Gone => return,
                Credit::Wait(wake) => tokio::select! {
                    _ = wake.notified() => {}
                    _ = inv.abort.cancelled() => return,
                },
            }
        }
        shared
            .cfg
            .backlog
            .wait_below(shared.cfg.limits.max_unsent_bytes)
            .await;
        let next = CURRENT_CALL.scope(scope, AssertUnwindSafe(source.next()).catch_unwind());
        let item = tokio::select! {
            item = next => item,
            _ = inv.abort.cancelled() => return,
        };
        match item {
            Ok(Some(Ok(value))) => {
                if !shared.with(|s| s.stream_next(id, value)) {
                    return;
                }
            }
            Ok(Some(Err(status))) => return shared.with(|s| s.stream_error(id, status)),
            Ok(None) => return shared.with(|s| s.stream_end(id)),
            Err(_) => {
                return shared
                    .with(|s| s.stream_error(id, Status::internal("stream source panicked")))
            }
        }
    }
}

/// How long the writer keeps trying to deliver its last frames (a goaway) once the
/// connection has shut down, before it gives up on a transport that does not drain.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

pub(super) async fn write_loop<S: MessageSink>(shared: Arc<Shared>, mut sink: S) {
    write_batches(&shared, &mut sink).await;
    shared.finished.cancel();
}

async fn write_batches<S: MessageSink>(shared: &Arc<Shared>, sink: &mut S) {
    loop {
        let (batch, closing) = shared.with(|s| s.take_outbox());
        let wrote = !batch.is_empty();
        let written = async {
            for msg in batch {
                let len = msg.len();
                sink.feed(msg).await?;
                shared.cfg.backlog.written(len);
            }
            if wrote {
                sink.flush().await?;
            }
            Ok::<(), TransportError>(())
        };
        let result = if closing {
            tokio::time::timeout(CLOSE_GRACE, written)
                .await
                .unwrap_or(Err(TransportError::Closed))
        } else {
            written.await
        };
        if let Err(e) = result {
            return fail_transport(shared, e);
        }
        if closing && !wrote {
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
            return;
        }
        if !wrote {
            shared.wake_writer.notified().await;
        }
    }
}

fn fail_transport(shared: &Arc<Shared>, e: TransportError) {
    shared.with(|s| s.transport_closed(&format!("transport closed: {}", e.report())));
}

pub(super) async fn read_loop<S: MessageSource>(shared: Arc<Shared>, mut source: S) {
    let limits = &shared.cfg.limits;
    let max = limits.max_bytes;
    let mut decoder = Decoder::new(limits.wire());
    loop {
        let msg = tokio::select! {
            _ = shared.stop.cancelled() => return,
            msg = async {
                // Backpressure: a peer that does not read our answers stops being read.
                shared.cfg.backlog.wait_below(limits.max_unsent_bytes).await;
                source.recv().await
            } => msg,
        };
        let bytes = match msg {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return shared.with(|s| s.transport_closed("transport closed")),
            Err(TransportError::TooLarge { len, max }) => {
                let message = format!("message of {len} bytes exceeds maxBytes {max}");
                return oversize(&shared, message);
            }
            Err(e @ TransportError::TextForLength { .. }) => {
                return oversize(&shared, e.to_string())
            }
            Err(TransportError::Protocol(m)) => {
                return shared.with(|s| s.protocol_error(Status::invalid_argument(m)))
            }
            Err(e) => return fail_transport(&shared, e),
        };
        if bytes.len() > max {
            let message = format!("message of {} bytes exceeds maxBytes {max}", bytes.len());
            return oversize(&shared, message);
        }
        match decoder.decode_frame(&bytes) {
            Ok(frame) => shared.with(|s| s.on_frame(frame, Instant::now())),
            Err(e) => {
                let message = match &e {
                    FrameDecodeError::Frame(bunite_wire::FrameError::UnknownOp(_)) => {
                        "unknown opcode".to_owned()
                    }
                    other => other.to_string(),
                };
                return shared.with(|s| s.protocol_error(Status::invalid_argument(message)));
            }
        }
    }
}

fn oversize(shared: &Arc<Shared>, message: String) {
    let status = Status::resource_exhausted(message, reason::MAX_FRAME_BYTES);
    shared.with(|s| s.protocol_error(status));
}
