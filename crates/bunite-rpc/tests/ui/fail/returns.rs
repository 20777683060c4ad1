// Returns that are not `Result<T, Status>`, and cap returns in unsupported places.
use bunite_rpc::{cap, Exported, Status};
use std::collections::HashMap;

#[cap(name = "demo.Child")]
trait Child {
    async fn name(&self) -> Result<String, Status>;
}

type R<T> = Result<T, Status>;

#[cap(name = "demo.Returns")]
trait Returns {
    async fn nothing(&self);
    async fn plain(&self) -> u32;
    fn not_async(&self) -> Result<u32, Status>;
    fn forgot_stream(&self) -> impl futures::Stream<Item = Result<u32, Status>>;
    async fn optional_cap(&self) -> Result<Option<Exported<ChildCap>>, Status>;
    async fn int_keys(&self) -> Result<HashMap<u32, Exported<ChildCap>>, Status>;
    async fn alias_cap(&self) -> R<Exported<ChildCap>>;
}

fn main() {}
