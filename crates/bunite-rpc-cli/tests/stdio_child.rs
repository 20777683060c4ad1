//! The byte-stream transport over a child process's stdio: spawn `bunite-rpc serve-stdio`,
//! call its counter, close, and check the child exits.

use std::time::Duration;

use bunite_rpc::transport::byte_stream::spawn_child;
use bunite_rpc::{CapDef, Connection, MethodDef, Record, Value};
use tokio::process::Command;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn counter_def() -> std::sync::Arc<CapDef> {
    CapDef::builder("test.counter")
        .method(MethodDef::call("get").idempotent())
        .method(MethodDef::call("increment"))
        .method(MethodDef::call("echo"))
        .build()
}

#[tokio::test]
async fn a_counter_served_by_a_child_over_its_stdio() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bunite-rpc"));
    cmd.arg("serve-stdio");
    let (mut child, transport) = spawn_child(cmd).expect("spawn serve-stdio");
    let conn = Connection::new(transport);

    let counter = timeout(WAIT, conn.bootstrap(&counter_def()))
        .await
        .expect("bootstrap timed out")
        .expect("bootstrap");
    let r = counter
        .call_value("increment", Value::Record(Record::new().with("delta", 4)))
        .await
        .unwrap();
    assert_eq!(r, Value::Record(Record::new().with("count", 4)));
    let r = counter.call_value("echo", Value::from("over stdio")).await;
    assert_eq!(r.unwrap(), Value::from("over stdio"));
    let hello = conn.peer_hello().expect("the child's hello");
    assert_eq!(hello.origin, "bunite-rpc serve-stdio");
    drop(counter);

    conn.close();
    let status = timeout(WAIT, child.wait())
        .await
        .expect("the child exits after the connection closes")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn the_child_exits_when_its_stdin_closes() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bunite-rpc"));
    cmd.arg("serve-stdio");
    let (mut child, transport) = spawn_child(cmd).expect("spawn serve-stdio");
    // Dropping the transport closes the child's stdin without a goaway.
    drop(transport);
    let status = timeout(WAIT, child.wait())
        .await
        .expect("the child exits at the end of stdin")
        .unwrap();
    assert!(status.success(), "{status}");
}
