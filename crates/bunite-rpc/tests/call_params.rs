//! What a typed call's params value costs the heap, counted by a heap-counting allocator
//! (dhat, in testing mode). A generated client's params were boxed on their own (an
//! `Outgoing`) and the box went into the call's request, a second allocation; the request
//! now holds the params value itself, so a call with a struct of params allocates no more
//! than a call without params.
//!
//! This binary holds one test: dhat allows one profiler per process.

mod common;

use bunite_rpc::{cap, Connection, Status};
use serde::{Deserialize, Serialize};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[derive(Debug, Serialize, Deserialize)]
pub struct Pair {
    pub a: u64,
    pub b: u64,
}

#[cap(name = "test.params")]
pub trait Params {
    async fn one(&self) -> Result<u64, Status>;
    async fn add(&self, p: Pair) -> Result<u64, Status>;
}

struct Sums;

impl Params for Sums {
    async fn one(&self) -> Result<u64, Status> {
        Ok(1)
    }

    async fn add(&self, p: Pair) -> Result<u64, Status> {
        Ok(p.a + p.b)
    }
}

/// Calls made in each measured round.
const CALLS: u64 = 400;

#[test]
fn a_typed_call_keeps_its_params_in_its_request() {
    let _profiler = dhat::Profiler::builder().testing().build();
    common::run_on_one_thread(async {
        let (server, client) = common::pair_with(
            Connection::builder().serve_cap::<ParamsCap>(Sums),
            Connection::builder(),
        );
        let params = ParamsCap::bootstrap(&client).await.unwrap();
        // Warm up: tables, shape rings (the struct's keys learned), channel blocks and
        // buffers reach their steady size.
        for i in 0..CALLS {
            assert_eq!(params.one().await.unwrap(), 1);
            assert_eq!(params.add(Pair { a: i, b: 2 }).await.unwrap(), i + 2);
        }

        let without = common::blocks_allocated_by(async {
            for _ in 0..CALLS {
                assert_eq!(params.one().await.unwrap(), 1);
            }
        })
        .await;
        let with = common::blocks_allocated_by(async {
            for i in 0..CALLS {
                assert_eq!(params.add(Pair { a: i, b: 2 }).await.unwrap(), i + 2);
            }
        })
        .await;

        // Before: one more a call (the params' own box); now none, with a quarter of the
        // calls' worth of slack for the runtime.
        let more = with.saturating_sub(without);
        assert!(
            more <= CALLS / 4,
            "{with} allocations for {CALLS} calls with params against {without} without"
        );
        drop(params);
        common::assert_clean(&[&server, &client]).await;
    });
}
