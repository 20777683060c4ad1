//! The hidden `serve-stdio` subcommand: the child side of `transport::byte_stream::spawn_child`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::byte_stream;
use bunite_rpc::{CapDef, Connection, MethodDef, Record, Value};

/// Serves a `test.counter` (`get`, `increment {delta?}`, `echo`) until the connection
/// closes.
pub fn run() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let served = rt.block_on(async {
        let conn = Connection::builder()
            .origin("bunite-rpc serve-stdio")
            .serve(counter_def(), counter_impl())
            .try_connect(byte_stream::stdio())?;
        // Resolves once the last frames (a goaway) were written.
        conn.closed().await;
        Ok::<_, bunite_rpc::Status>(())
    });
    // Tokio reads stdin on a blocking thread that cannot be interrupted: don't wait
    // for it.
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(served?)
}

fn counter_def() -> Arc<CapDef> {
    CapDef::builder("test.counter")
        .method(MethodDef::call("get").idempotent())
        .method(MethodDef::call("increment"))
        .method(MethodDef::call("echo"))
        .build()
}

fn counter_impl() -> Arc<dyn bunite_rpc::CapImpl> {
    let count = Arc::new(AtomicI64::new(0));
    let (c1, c2) = (Arc::clone(&count), count);
    DynCap::new()
        .call("get", move |_, _| {
            let n = c1.load(Ordering::SeqCst);
            async move { Ok(Value::Record(Record::new().with("count", n))) }
        })
        .call("increment", move |args: Value, _| {
            let delta = args
                .as_record()
                .and_then(|r| r.get("delta"))
                .and_then(Value::as_integer)
                .unwrap_or(1) as i64;
            let n = c2.fetch_add(delta, Ordering::SeqCst) + delta;
            async move { Ok(Value::Record(Record::new().with("count", n))) }
        })
        .call("echo", |args, _| async move { Ok(args) })
        .build()
}
