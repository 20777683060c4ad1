//! Run with: `cargo run -p bunite-rpc --example observer`
//!
//! Observer events (PROTOCOL §15): the serving side reports each bootstrap, call (with its
//! duration and result), stream, revocation and off-path error to any subscriber.

use std::sync::{Arc, Mutex};

use bunite_rpc::events::Event;
use bunite_rpc::transport::memory;
use bunite_rpc::{cap, Connection, Status};

/// The params of `div`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(crate = "bunite_rpc::serde")]
pub struct Div {
    a: i64,
    b: i64,
}

/// A calculator.
#[cap(name = "demo.Calc")]
pub trait Calc {
    /// `a / b`.
    async fn div(&self, args: Div) -> Result<i64, Status>;
}

struct Impl;

impl Calc for Impl {
    async fn div(&self, Div { a, b }: Div) -> Result<i64, Status> {
        a.checked_div(b)
            .ok_or_else(|| Status::invalid_argument("division by zero"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (a, b) = memory::pair();
    let server = Connection::builder().serve_cap::<CalcCap>(Impl).connect(a);
    let client = Connection::new(b);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let subscription = server.subscribe(move |event| {
        let line = match event {
            Event::Bootstrap(b) => format!("bootstrap {} → {:?}", b.name, b.result),
            Event::Call(c) => format!(
                "call {} #{} → {:?} in {:?}",
                c.method, c.call_id.0, c.result, c.duration
            ),
            other => format!("{other:?}"),
        };
        log.lock().unwrap().push(line);
    });

    let calc = CalcCap::bootstrap(&client).await?;
    println!("7 / 2 = {}", calc.div(Div { a: 7, b: 2 }).await?);
    println!(
        "7 / 0 → {}",
        calc.div(Div { a: 7, b: 0 }).await.unwrap_err()
    );

    server.unsubscribe(subscription);
    client.close();
    server.closed().await;
    for line in seen.lock().unwrap().iter() {
        println!("event: {line}");
    }
    Ok(())
}
