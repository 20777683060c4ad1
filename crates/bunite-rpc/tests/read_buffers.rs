//! The byte stream's read buffers are reused, not allocated afresh for every large message.
//!
//! Its own test binary: it counts every heap allocation of the process with dhat's
//! allocator (in testing mode), which must see nothing but this test.
#![cfg(feature = "byte-stream")]

use bunite_rpc::transport::byte_stream::ByteStream;
use bunite_rpc::transport::{MessageSourceExt, Transport};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn framed(bodies: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in bodies {
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
    }
    out
}

#[test]
fn large_messages_read_back_to_back_reuse_the_allocations_of_those_already_handled() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Twenty 64 KiB messages, all there at once: each read brings one and the start of
        // the next, so every read that needs room finds its buffer shared with the message
        // before, which is still being handled (as the connection's driver holds it).
        let bodies: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 64 * 1024]).collect();
        let data = std::io::Cursor::new(framed(&bodies));
        let (_, mut source) = ByteStream::new(data, tokio::io::sink()).split();
        let mut held = None;
        let mut read = async |i: usize| {
            let msg = source.recv().await.unwrap().expect("a message");
            assert_eq!(&msg[..], &bodies[i][..], "message {i}");
            // The one before is handled and let go only now.
            held = Some(msg);
        };
        for i in 0..4 {
            read(i).await;
        }
        let before = dhat::HeapStats::get();
        for i in 4..20 {
            read(i).await;
        }
        let after = dhat::HeapStats::get();
        let (blocks, bytes) = (
            after.total_blocks - before.total_blocks,
            after.total_bytes - before.total_bytes,
        );
        // Before the allocations were reused: a fresh 66 KiB buffer for each message (16
        // blocks, over a MiB).
        assert!(
            bytes < 64 * 1024,
            "{blocks} allocations of {bytes} bytes for 16 messages"
        );
    });
}
