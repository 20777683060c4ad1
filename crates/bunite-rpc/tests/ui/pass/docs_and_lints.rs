//! Generated items are documented and warning-free in a crate with strict lints, and the
//! runtime path can be set with `crate = "..."`.
#![deny(missing_docs, missing_debug_implementations, unused, clippy::all)]

extern crate bunite_rpc as rpc;

/// Caps of this crate.
pub mod caps {
    use rpc::{Exported, Status};
    use serde::{Deserialize, Serialize};

    /// A count.
    #[derive(Debug, Serialize, Deserialize)]
    pub struct Count {
        /// The count.
        pub count: i64,
    }

    /// A child.
    #[rpc::cap(name = "demo.Child", crate = "::rpc")]
    pub trait Child {
        /// Its name.
        async fn name(&self) -> Result<String, Status>;
        /// Closes it.
        #[cap(dispose)]
        async fn close(&self) -> Result<(), Status>;
    }

    /// A cap without methods (as the framework's `bunite.Surface`).
    #[rpc::cap(name = "demo.Empty", crate = "::rpc")]
    pub trait Empty {}

    /// A counter.
    #[rpc::cap(name = "demo.Counter", version = "2", crate = "::rpc")]
    pub trait Counter {
        /// The count.
        #[cap(idempotent)]
        async fn get(&self) -> Result<Count, Status>;
        /// A child.
        async fn child(&self, name: String) -> Result<Exported<ChildCap>, Status>;
    }
}

fn main() {
    let def = caps::CounterCap::definition();
    assert_eq!(def.version(), Some("2"));
    let _ = format!("{:?}", caps::CounterCap);
}
