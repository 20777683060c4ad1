//! What an idle WebSocket connection keeps after a long message, counted by a heap-counting
//! allocator (dhat, in testing mode), so the figure is the live heap, not the RSS.
//!
//! tungstenite keeps its read and write buffers at their high-water mark until the
//! connection closes, and each holds one frame whole. A connection that carried one
//! message of 120 KiB each way (one frame, below the fragment size of 128 KiB messages were
//! sent in then) kept about 250 KB per end afterwards, outside every budget (the
//! listener's counts only messages being received), so a peer could make each of many
//! idle connections hold that much by sending long messages or asking for long replies.
//! Now received frames are cut into pieces of 8 KiB before tungstenite reads them, and
//! both ends write a long message around tungstenite's write buffer (a client keeps a
//! 64 KiB buffer to mask them in).
//!
//! It also holds an idle connection to its size: tungstenite's read buffer is the one
//! buffer an idle connection keeps in full.
//!
//! This binary holds one test: dhat allows one profiler per process.
#![cfg(feature = "ws")]

mod common;

use std::time::Duration;

use bunite_rpc::transport::ws::{self, WsListener};
use bunite_rpc::{Connection, Value};
use common::*;
use tokio::time::timeout;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const WAIT: Duration = Duration::from_secs(10);

/// The long message, sent each way.
const LONG: usize = 120 * 1024;

/// What the two ends of an idle connection may keep after it, over what they kept before:
/// 32 KiB each for what it received (about two 8 KiB pieces, doubled for slack), and the
/// client its 64 KiB buffer for masking long frames.
const KEPT_AT_MOST: u64 = 2 * 32 * 1024 + 64 * 1024;

/// What the two ends of an idle connection hold in all, with one cap bootstrapped and a
/// few small calls made. tungstenite's read buffers were 4 KiB an end (the client's the one
/// its handshake read into, kept for the connection's life): 29,164 bytes then; 23,020
/// with 1 KiB buffers and the client's handshake buffer let go.
const IDLE_AT_MOST: u64 = 26 * 1024;

/// Longer than every release timer of a connection (the read buffer's and the kept encode
/// buffers', 100 ms each), so what is still allocated after it is kept for good.
const SETTLE: Duration = Duration::from_millis(400);

async fn live_bytes_after_settling() -> u64 {
    tokio::time::sleep(SETTLE).await;
    dhat::HeapStats::get().curr_bytes as u64
}

#[test]
fn an_idle_connection_keeps_little_of_a_long_message() {
    let _profiler = dhat::Profiler::builder().testing().build();
    run(async {
        let l = WsListener::bind("127.0.0.1:0", ws::DEFAULT_PATH)
            .await
            .unwrap();
        let url = format!("ws://{}/rpc", l.local_addr().unwrap());
        let unconnected = live_bytes_after_settling().await;
        let accepted = tokio::spawn(async move { timeout(WAIT, l.accept()).await });
        let client = Connection::new(ws::connect(url.as_str()).await.unwrap());
        track(&client);
        let server = Connection::new(accepted.await.unwrap().unwrap().unwrap().transport);
        track(&server);
        serve_counter(&server).await;
        let counter = client.bootstrap(&counter_def()).await.unwrap();

        // Small calls first, so that tables, channels and buffers have their idle size.
        for _ in 0..3 {
            let small = Value::Bin(vec![1; 100]);
            assert_eq!(
                counter.call_value("echo", small.clone()).await.unwrap(),
                small
            );
        }
        let idle = live_bytes_after_settling().await;
        let connection = idle.saturating_sub(unconnected);
        eprintln!("live heap: {connection} bytes for an idle connection (both ends)");
        assert!(
            connection <= IDLE_AT_MOST,
            "an idle connection with one cap bootstrapped holds {connection} bytes (both \
             ends); at most {IDLE_AT_MOST} expected"
        );

        // Below the fragment size of before (128 KiB), so it went out as one frame each way.
        let long = Value::Bin(vec![7; LONG]);
        assert_eq!(
            counter.call_value("echo", long.clone()).await.unwrap(),
            long
        );
        drop(long);
        let after = live_bytes_after_settling().await;

        // Both ends are in this process. With received frames cut at 128 KiB (so not at
        // all, here) the two ends kept 491,114 bytes more; with them cut at 8 KiB and the
        // sent frames in tungstenite's write buffers, 261,411; with the server's written
        // around it, 139,044 (the client's); with the client's too, 16,128 when its mask
        // buffer was let go after each frame, and now that it is kept, 81,664.
        let kept = after.saturating_sub(idle);
        eprintln!("live heap: {idle} bytes idle, {after} after the long message");
        assert!(
            kept <= KEPT_AT_MOST,
            "after one 120 KiB message each way the two idle ends keep {kept} bytes more \
             than before it ({idle} -> {after}); at most {KEPT_AT_MOST} expected"
        );
        drop(counter);
        assert_clean(&[&server, &client]).await;
    });
}
