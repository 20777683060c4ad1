// A cap return naming the trait itself (or `Self`) instead of its marker type.
use bunite_rpc::{cap, Exported, Status};

#[cap(name = "demo.Tree")]
trait Tree {
    async fn subs(&self) -> Result<Vec<Exported<Self>>, Status>;
}

fn main() {}
