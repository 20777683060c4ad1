// A cap return naming a type that is not a cap marker.
use bunite_rpc::{cap, Exported, Status};

struct NotACap;

#[cap(name = "demo.Parent")]
trait Parent {
    async fn child(&self) -> Result<Exported<NotACap>, Status>;
}

fn main() {}
