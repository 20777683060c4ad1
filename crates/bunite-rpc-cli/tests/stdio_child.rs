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
    // Nothing of ours is left before the close (the child's table is the child's; it exits
    // cleanly below): no reference exported, no call pending, nothing unsent.
    let mut stats = conn.current_stats().await;
    for _ in 0..200 {
        if stats.live_caps == 2 && stats.pending_calls == 0 && stats.unsent_bytes == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        stats = conn.current_stats().await;
    }
    assert_eq!(
        (stats.live_caps, stats.pending_calls, stats.unsent_bytes),
        (2, 0, 0),
        "{stats:?}"
    );

    conn.close();
    let status = timeout(WAIT, child.wait())
        .await
        .expect("the child exits after the connection closes")
        .unwrap();
    assert!(status.success(), "{status}");
    timeout(WAIT, conn.closed()).await.unwrap();
    assert!(conn.stats().is_idle(), "{:?}", conn.stats());
    no_task_left().await;
}

/// Waits (bounded) until no task is left on the test's runtime: the connection's driver,
/// the child's pipes and the lingering reader all end.
async fn no_task_left() {
    let metrics = tokio::runtime::Handle::current().metrics();
    for _ in 0..1000 {
        if metrics.num_alive_tasks() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{} task(s) outlived the test", metrics.num_alive_tasks());
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
    no_task_left().await;
}
