// Stream methods: shapes that are not streams, emitters in the wrong place.
use bunite_rpc::typed::{Emitter, Stream};
use bunite_rpc::{cap, Status};

#[cap(name = "demo.Streams")]
trait Streams {
    #[cap(stream)]
    async fn async_without_emitter(&self) -> Result<u32, Status>;

    #[cap(stream)]
    fn no_result_items(&self) -> impl Stream<Item = u32>;

    async fn emitter_on_a_call(&self, out: Emitter<u32>) -> Result<(), Status>;

    #[cap(stream)]
    async fn emitter_returning_a_value(&self, out: Emitter<u32>) -> Result<u32, Status>;

    #[cap(stream)]
    async fn untyped_emitter(&self, out: bunite_rpc::emitter::Emitter) -> Result<(), Status>;
}

fn main() {}
