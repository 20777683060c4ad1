// An implementation whose future is not `Send`: the error points at the impl.
use std::rc::Rc;

use bunite_rpc::{cap, Status};

#[cap(name = "demo.Counter")]
trait Counter {
    async fn get(&self) -> Result<u32, Status>;
}

struct Imp;

impl Counter for Imp {
    async fn get(&self) -> Result<u32, Status> {
        let local = Rc::new(1);
        tokio::task::yield_now().await;
        Ok(*local)
    }
}

fn main() {}
