// Method options: unknown ones, `returns`, options on the wrong kind, credit range, names.
use bunite_rpc::typed::Stream;
use bunite_rpc::{cap, Status};

#[cap(name = "demo.Options")]
trait Options {
    #[cap(fast)]
    async fn unknown(&self) -> Result<(), Status>;

    #[cap(returns = Child)]
    async fn explicit_returns(&self) -> Result<(), Status>;

    #[cap(initial_credit = 16)]
    async fn credit_on_a_call(&self) -> Result<(), Status>;

    #[cap(stream, initial_credit = 4)]
    fn too_little_credit(&self) -> impl Stream<Item = Result<u32, Status>>;

    #[cap(stream, keep_running_on_cancel)]
    fn keep_running_stream(&self) -> impl Stream<Item = Result<u32, Status>>;

    #[cap(name = "same")]
    async fn first(&self) -> Result<(), Status>;

    #[cap(name = "same")]
    async fn second(&self) -> Result<(), Status>;

    async fn release(&self) -> Result<(), Status>;
}

fn main() {}
