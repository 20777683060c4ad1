// The attribute's arguments: a missing name, an unknown argument, not on a trait.
use bunite_rpc::{cap, Status};

#[cap(version = "1")]
trait Nameless {
    async fn get(&self) -> Result<u32, Status>;
}

#[cap(name = "demo.Flavoured", flavour = "vanilla")]
trait Flavoured {
    async fn get(&self) -> Result<u32, Status>;
}

#[cap(name = "demo.NotATrait")]
struct NotATrait;

fn main() {}
