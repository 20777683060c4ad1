// Unsupported signatures: receivers, generic methods, several params, borrowed params.
use bunite_rpc::{cap, CallContext, Status};

#[cap(name = "demo.Signatures")]
trait Signatures {
    async fn mutable(&mut self) -> Result<(), Status>;
    async fn owned(self) -> Result<(), Status>;
    async fn no_receiver() -> Result<(), Status>;
    async fn generic<T: serde::Serialize>(&self, t: T) -> Result<(), Status>;
    async fn two_params(&self, a: u32, b: u32) -> Result<(), Status>;
    async fn borrowed(&self, name: &str) -> Result<(), Status>;
    async fn context_by_ref(&self, ctx: &CallContext) -> Result<(), Status>;
    async fn two_contexts(&self, a: CallContext, b: CallContext) -> Result<(), Status>;
}

fn main() {}
