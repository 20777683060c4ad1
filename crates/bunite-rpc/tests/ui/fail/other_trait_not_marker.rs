// A cap return naming another cap's trait instead of its marker type (`ChildCap`).
use bunite_rpc::{cap, Exported, Status};

#[cap(name = "demo.Child")]
trait Child {
    async fn name(&self) -> Result<String, Status>;
}

#[cap(name = "demo.Parent")]
trait Parent {
    async fn child(&self) -> Result<Exported<Child>, Status>;
}

fn main() {}
