//! Tracing (tarpc/tonic conventions): with a `tracing-subscriber` fmt layer listening, an
//! outbound call shows a `bunite.call` span with `otel.kind="client"`, the inbound call a
//! `bunite.call` span with `otel.kind="server"` under its `bunite.connection` span (id,
//! transport, peer), each with the method, call id and outcome code, and the time each took
//! when the span closes.

mod common;

use bunite_rpc::{Record, Value};
use common::*;
use tracing_subscriber::fmt::format::FmtSpan;

#[test]
fn an_fmt_subscriber_sees_both_ends_of_a_call_with_code_and_duration() {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_span_events(FmtSpan::CLOSE)
        .finish();
    // The process's default (this file has one test), not the thread's: on a multi-thread
    // runtime (`BUNITE_TEST_RUNTIME=multi`) the server's spans close on a worker thread.
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    run(async {
        let (server, client, counter) = counter_pair().await;
        let args = Value::Record(Record::new().with("delta", 1));
        counter.call_value("increment", args).await.unwrap();
        let missing = counter.call_value("nope", Value::Undefined).await;
        assert!(missing.is_err());
        drop(counter);
        assert_clean(&[&server, &client]).await;
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let find = |kind: &str, method: &str| {
        lines
            .iter()
            .find(|l| {
                l.contains(&format!("otel.kind=\"{kind}\""))
                    && l.contains(&format!("rpc.method={method}"))
                    && l.contains("close")
            })
            .unwrap_or_else(|| panic!("no {kind} span for {method} in:\n{text}"))
    };
    let client_span = find("client", "increment");
    for field in [
        "bunite.call",
        "rpc.system=\"bunite\"",
        "rpc.call_id=",
        "rpc.code=\"ok\"",
        "time.busy=",
        "time.idle=",
    ] {
        assert!(
            client_span.contains(field),
            "{field} missing: {client_span}"
        );
    }
    let server_span = find("server", "increment");
    let transport = format!("transport=\"{}\"", transport_kind().name());
    for field in [
        "bunite.connection{connection.id=",
        transport.as_str(),
        "rpc.service=test.counter",
        "rpc.call_id=",
        "rpc.code=\"ok\"",
        "time.busy=",
    ] {
        assert!(
            server_span.contains(field),
            "{field} missing: {server_span}"
        );
    }
    let failed = find("client", "nope");
    assert!(failed.contains("rpc.code=\"not_found\""), "{failed}");
}
