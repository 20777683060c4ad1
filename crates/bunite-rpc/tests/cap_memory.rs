//! What a typed cap's server costs the heap, counted by a heap-counting allocator (dhat, in
//! testing mode): a server made by `#[cap]` is one allocation, the server and the
//! implementation together, and dropping it frees it (its hold on itself is weak). It was
//! two (the server, and the implementation in an `Arc` of its own): every cap a handler
//! exports pays it, so a connection holding many caps held that much more for each.
//!
//! This binary holds one test: dhat allows one profiler per process.

mod common;

use std::sync::Arc;

use bunite_rpc::{cap, CapImpl, Connection, Exported, Status};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[cap(name = "test.item")]
pub trait Item {
    async fn get(&self) -> Result<u64, Status>;
}

#[cap(name = "test.maker")]
pub trait Maker {
    async fn make(&self) -> Result<Exported<ItemCap>, Status>;
}

struct Seven;

impl Item for Seven {
    async fn get(&self) -> Result<u64, Status> {
        Ok(7)
    }
}

struct MakeSevens;

impl Maker for MakeSevens {
    async fn make(&self) -> Result<Exported<ItemCap>, Status> {
        Ok(ItemCap::export(Seven))
    }
}

#[test]
fn a_typed_server_is_one_allocation_and_is_freed_with_its_last_reference() {
    let _profiler = dhat::Profiler::builder().testing().build();

    let before = dhat::HeapStats::get();
    let server: Arc<dyn CapImpl> = ItemCap::server(Seven);
    let made = dhat::HeapStats::get();
    assert_eq!(made.total_blocks - before.total_blocks, 1, "allocations");
    // The reference counts, the server's weak hold on itself, the (empty) implementation.
    assert_eq!(made.curr_bytes - before.curr_bytes, 24, "bytes");
    let second = Arc::clone(&server);
    drop(server);
    assert_eq!(dhat::HeapStats::get().curr_blocks, made.curr_blocks);
    drop(second);
    let dropped = dhat::HeapStats::get();
    assert_eq!(dropped.curr_blocks, before.curr_blocks, "freed");
    assert_eq!(dropped.curr_bytes, before.curr_bytes, "freed");

    // The server still serves, exported from a handler, and what a call holds is let go
    // (`common::run` checks both connections clean, closes them and counts their tasks).
    common::run(async {
        let (server, client) = common::pair_with(
            Connection::builder().serve_cap::<MakerCap>(MakeSevens),
            Connection::builder(),
        );
        let maker = MakerCap::bootstrap(&client).await.unwrap();
        let items = [maker.make().await.unwrap(), maker.make().await.unwrap()];
        for item in &items {
            assert_eq!(item.get().await.unwrap(), 7);
        }
        // The two reserved ids, the bootstrapped maker, the items.
        assert_eq!(server.current_stats().await.live_caps, 2 + 1 + items.len());
        drop(items);
        drop(maker);
        common::assert_clean(&[&server, &client]).await;
    });
}
