//! What a typed call's method name costs the heap, counted by a heap-counting allocator
//! (dhat, in testing mode). Names up to 22 bytes are kept inline; a longer one was copied
//! into an allocation of its own per call on both sides: the client copied the generated
//! client's `'static` name into each call's request, and the server copied the name it
//! decoded from each call. The client now borrows the name, and the server's decoder
//! shares the last long name it made with the calls that name it again, so a long name
//! costs no allocation per call on either side.
//!
//! This binary holds one test: dhat allows one profiler per process.

mod common;

use bunite_rpc::{cap, Connection, Status};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[cap(name = "test.names")]
pub trait Names {
    async fn inc(&self, n: u64) -> Result<u64, Status>;
    /// Its wire name is `incrementUnderAVeryLongName`: 27 bytes, past the 22 kept inline.
    async fn increment_under_a_very_long_name(&self, n: u64) -> Result<u64, Status>;
}

struct Incr;

impl Names for Incr {
    async fn inc(&self, n: u64) -> Result<u64, Status> {
        Ok(n + 1)
    }

    async fn increment_under_a_very_long_name(&self, n: u64) -> Result<u64, Status> {
        Ok(n + 1)
    }
}

/// Calls made in each measured round.
const CALLS: u64 = 400;

#[test]
fn a_typed_call_does_not_copy_its_method_name() {
    let _profiler = dhat::Profiler::builder().testing().build();
    common::run_on_one_thread(async {
        let (server, client) = common::pair_with(
            Connection::builder().serve_cap::<NamesCap>(Incr),
            Connection::builder(),
        );
        let names = NamesCap::bootstrap(&client).await.unwrap();
        // Warm up: tables, shape rings, channel blocks and buffers reach their steady size.
        for i in 0..CALLS {
            assert_eq!(names.inc(i).await.unwrap(), i + 1);
            assert_eq!(
                names.increment_under_a_very_long_name(i).await.unwrap(),
                i + 1
            );
        }

        let short = common::blocks_allocated_by(async {
            for i in 0..CALLS {
                assert_eq!(names.inc(i).await.unwrap(), i + 1);
            }
        })
        .await;
        let long = common::blocks_allocated_by(async {
            for i in 0..CALLS {
                assert_eq!(
                    names.increment_under_a_very_long_name(i).await.unwrap(),
                    i + 1
                );
            }
        })
        .await;

        // Before: two more a call (the client's copy and the server's); now none, with a
        // quarter of the calls' worth of slack for the runtime.
        let more = long.saturating_sub(short);
        assert!(
            more <= CALLS / 4,
            "{long} allocations for {CALLS} calls of a long name against {short} of a short one"
        );
        drop(names);
        common::assert_clean(&[&server, &client]).await;
    });
}
