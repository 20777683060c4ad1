// What a cap trait cannot be: generic, holding types or consts.
use bunite_rpc::{cap, Status};

#[cap(name = "demo.Generic")]
trait Generic<T> {
    async fn get(&self) -> Result<u32, Status>;
}

#[cap(name = "demo.Items")]
trait Items {
    type Output;
    const LIMIT: usize;
    async fn get(&self) -> Result<u32, Status>;
}

fn main() {}
