// Params and results must be serde types; the errors point at them in the trait.
use bunite_rpc::{cap, Status};

struct Opaque;

#[cap(name = "demo.Serde")]
trait Serde {
    async fn take(&self, p: Opaque) -> Result<(), Status>;
    async fn give(&self) -> Result<Opaque, Status>;
}

fn main() {}
