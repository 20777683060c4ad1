//! Run with: `cargo run -p bunite-rpc --example cancellation`
//!
//! Explicit cancellation: a `CancellationToken` in the call's options sends `cancel` to
//! the server, whose handler sees its own token fire; the call fails `cancelled` at once.

use std::time::Duration;

use bunite_rpc::transport::memory;
use bunite_rpc::{dynamic::DynCap, CapDef, MethodDef};
use bunite_rpc::{CallContext, CallOptions, CancellationToken, Code, Connection, Status, Value};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let def = CapDef::builder("demo.Slow")
        .method(MethodDef::call("work"))
        .build();
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel();
    let stopped_tx = std::sync::Mutex::new(Some(stopped_tx));
    let imp = DynCap::new().call("work", move |_args: Value, ctx: CallContext| {
        let stopped = stopped_tx.lock().unwrap().take();
        let cancelled = ctx.cancellation_token();
        async move {
            // A long job that stops when the caller cancels.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => Ok(Value::from("done")),
                () = cancelled.cancelled() => {
                    if let Some(tx) = stopped {
                        let _ = tx.send(());
                    }
                    Err(Status::new(Code::Cancelled, "stopped early"))
                }
            }
        }
    });

    let (a, b) = memory::pair();
    let server = Connection::new(a);
    server.serve(def.clone(), imp.build()).await?.detach();
    let client = Connection::new(b);
    let slow = client.bootstrap(&def).await?;

    let token = CancellationToken::new();
    let opts = CallOptions {
        cancel: Some(token.clone()),
        ..CallOptions::default()
    };
    let call = tokio::spawn(async move { slow.call_with("work", Value::Undefined, opts).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    token.cancel();

    let error = call.await?.unwrap_err();
    println!("the call: {error}");
    // The handler's future ends one way or the other: it sees its token, or the server
    // drops it; either way its sender is gone.
    let how = match stopped_rx.await {
        Ok(()) => "it saw its cancellation token",
        Err(_) => "the server dropped it",
    };
    println!("the handler stopped: {how}");
    client.close();
    Ok(())
}
