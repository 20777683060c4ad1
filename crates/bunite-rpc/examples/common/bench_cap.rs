//! The cap of the call-path examples (`roundtrips`, `pipelined`) and of the `allocs` bench:
//! the comparison benchmark's `add(a, b)`, answered at once.

use bunite_rpc::{cap, Status};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct AddArgs {
    pub a: u64,
    pub b: u64,
}

#[cap(name = "bench.rpc")]
pub trait Bench {
    async fn add(&self, args: AddArgs) -> Result<u64, Status>;
}

pub struct Server;

impl Bench for Server {
    async fn add(&self, args: AddArgs) -> Result<u64, Status> {
        Ok(args.a + args.b)
    }
}
