//! A tour of bunite-rpc over the in-memory transport: bootstrap, calls, errors, a policy
//! denial, a sub-cap, revocation, and the connection's leak counters.
//!
//! Run with: `cargo run -p bunite-rpc --example demo`

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bunite_rpc::dynamic::DynCap;
use bunite_rpc::transport::memory;
use bunite_rpc::{
    CallContext, CapDef, Connection, MethodDef, Policy, Record, Returns, Status, Value,
};

fn counter_def() -> Arc<CapDef> {
    CapDef::builder("demo.Counter")
        .version("1")
        .method(MethodDef::call("get").idempotent())
        .method(MethodDef::call("increment"))
        .method(MethodDef::call("child").returns(Returns::Cap(child_def().into())))
        .build()
}

fn child_def() -> Arc<CapDef> {
    CapDef::builder("demo.Child")
        .method(MethodDef::call("name"))
        .method(MethodDef::call("close"))
        .disposal("close")
        .build()
}

fn counter_impl() -> Arc<dyn bunite_rpc::CapImpl> {
    let count = Arc::new(AtomicI64::new(0));
    let (c1, c2) = (count.clone(), count);
    DynCap::new()
        .call("get", move |_, _| {
            let n = c1.load(Ordering::SeqCst);
            async move { Ok(Value::from(n)) }
        })
        .call("increment", move |args: Value, _| {
            // The delta is the peer's: one that does not fit, or would take the count past
            // i64, is refused rather than wrapped.
            let delta = args
                .as_record()
                .and_then(|r| r.get("delta"))
                .map_or(Some(1), |d| {
                    d.as_integer().and_then(|d| i64::try_from(d).ok())
                });
            let add = move |count: i64| delta.and_then(|d| count.checked_add(d));
            let counted = c2.fetch_update(Ordering::SeqCst, Ordering::SeqCst, add);
            async move {
                match counted.ok().and_then(add) {
                    Some(n) => Ok(Value::from(n)),
                    None => Err(Status::invalid_argument("increment: delta out of range")),
                }
            }
        })
        .call("child", |args: Value, ctx: CallContext| async move {
            let name = args
                .as_record()
                .and_then(|r| r.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("anon")
                .to_owned();
            let imp = DynCap::new()
                .call("name", move |_, _| {
                    let name = name.clone();
                    async move { Ok(Value::from(name)) }
                })
                .call("close", |_, _| async { Ok(Value::Undefined) })
                .build();
            Ok(ctx.export(child_def(), imp))
        })
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (a, b) = memory::pair();
    let server = Connection::builder()
        .policy(Policy::new(|name, _attestation| name != "demo.Secret"))
        .connect(a);
    let client = Connection::new(b);

    server.serve(counter_def(), counter_impl()).await?.detach();
    let secret = CapDef::builder("demo.Secret")
        .method(MethodDef::call("get"))
        .build();
    server.serve(secret.clone(), counter_impl()).await?.detach();

    let counter = client.bootstrap(&counter_def()).await?;
    println!("bootstrap  demo.Counter v1 -> cap-id {}", counter.id());

    let n: i64 = counter
        .call("increment", &Record::new().with("delta", 5))
        .await?;
    println!("call       increment {{delta: 5}} -> {n}");

    let e = counter
        .call_value("nope", Value::Undefined)
        .await
        .unwrap_err();
    println!("error      nope -> {e}");

    let e = client.bootstrap(&secret).await.unwrap_err();
    println!("policy     bootstrap demo.Secret -> {e}");

    let child = counter
        .call_cap("child", Value::Record(Record::new().with("name", "ada")))
        .await?;
    let name: String = child.call("name", &()).await?;
    println!(
        "sub-cap    child {{name: ada}} -> cap-id {} named {name}",
        child.id()
    );
    child.dispose().await;
    println!("dispose    child -> close() ran, reference dropped");

    server.unserve("demo.Counter").await;
    let e = loop {
        match counter.call_value("get", Value::Undefined).await {
            Err(e) => break e,
            Ok(_) => tokio::task::yield_now().await,
        }
    };
    println!("revoke     unserve demo.Counter, then get -> {e}");

    drop(counter);
    client.close();
    server.closed().await;
    // Nothing leaked: `live_caps` counts the reserved ids 0 and 1 (see `Stats`).
    println!(
        "close      server stats after close (live_caps: the reserved ids 0 and 1): {:?}",
        server.stats()
    );
    Ok(())
}
