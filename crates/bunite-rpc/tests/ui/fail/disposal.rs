// The disposal method: one call without params that returns no caps.
use bunite_rpc::typed::Stream;
use bunite_rpc::{cap, Exported, Status};

#[cap(name = "demo.Disposal")]
trait Disposal {
    #[cap(dispose)]
    async fn close(&self, reason: String) -> Result<(), Status>;

    #[cap(dispose)]
    async fn close_again(&self) -> Result<(), Status>;

    #[cap(dispose)]
    async fn close_with_caps(&self) -> Result<Exported<DisposalCap>, Status>;

    #[cap(stream, dispose)]
    fn close_stream(&self) -> impl Stream<Item = Result<u32, Status>>;
}

fn main() {}
