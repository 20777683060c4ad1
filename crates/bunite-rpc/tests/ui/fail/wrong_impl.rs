// Serving a type that does not implement the cap's trait.
use bunite_rpc::{cap, Connection, Status};

#[cap(name = "demo.Counter")]
trait Counter {
    async fn get(&self) -> Result<u32, Status>;
}

struct NotACounter;

fn serve(conn: &Connection) {
    let _ = conn.serve_cap::<CounterCap>(NotACounter);
}

fn main() {
    let _ = serve;
}
