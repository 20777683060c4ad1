//! Generated code names everything through `::bunite_rpc::__private`: it compiles with no
//! prelude, next to user items that shadow common names, and with user parameters named like
//! the generated code's locals.
#![no_implicit_prelude]
#![deny(warnings)]

#[allow(dead_code)]
struct Arc;
#[allow(dead_code)]
struct Box;
#[allow(dead_code)]
struct Ok;
#[allow(dead_code)]
enum Option {
    Some,
}
#[allow(dead_code)]
type Value = ();
#[allow(dead_code)]
mod __private {}

/// An alias of `Result`: fine for values (the macro resolves it through `MethodResult`).
type R<T> = ::std::result::Result<T, ::bunite_rpc::Status>;
/// A one-argument alias named `Result` (shadowing the std one for the generated code too):
/// read as `Result<T, _>`, so caps are recognised.
type Result<T> = ::std::result::Result<T, ::bunite_rpc::Status>;

/// A cap with every kind of method.
#[::bunite_rpc::cap(name = "hygiene.Counter", version = "1")]
pub trait Counter {
    /// A call without params.
    #[cap(idempotent)]
    async fn get(&self) -> ::std::result::Result<u32, ::bunite_rpc::Status>;

    /// Params named like the generated locals.
    async fn add(&self, _args: u32, _ctx: ::bunite_rpc::CallContext) -> R<u32>;

    /// A default body.
    async fn twice(&self, __params: u32) -> R<u32> {
        ::std::result::Result::Ok(__params * 2)
    }

    /// A raw value.
    async fn echo(&self, _imp: ::bunite_rpc::Value) -> R<::bunite_rpc::Value>;

    /// A sub-cap of its own kind, arrays and records of them.
    async fn child(&self) -> Result<::bunite_rpc::Exported<CounterCap>>;
    async fn kids(&self) -> Result<::std::vec::Vec<::bunite_rpc::Exported<CounterCap>>>;
    async fn named(
        &self,
    ) -> Result<::std::collections::BTreeMap<::std::string::String, ::bunite_rpc::Exported<CounterCap>>>;

    /// A stream.
    #[cap(stream, initial_credit = 16)]
    fn ticks(&self, n: u32) -> impl ::bunite_rpc::typed::Stream<Item = R<u32>>;

    /// An emitter-style stream.
    #[cap(stream)]
    async fn watch(&self, __emitter: ::bunite_rpc::typed::Emitter<u32>) -> R<()>;

    /// The disposal method, named like the client's `dispose`.
    #[cap(dispose, keep_running_on_cancel)]
    async fn dispose(&self) -> R<()>;
}

struct Imp;

impl Counter for Imp {
    async fn get(&self) -> R<u32> {
        ::std::result::Result::Ok(1)
    }

    async fn add(&self, a: u32, _ctx: ::bunite_rpc::CallContext) -> R<u32> {
        ::std::result::Result::Ok(a + 1)
    }

    async fn echo(&self, v: ::bunite_rpc::Value) -> R<::bunite_rpc::Value> {
        ::std::result::Result::Ok(v)
    }

    async fn child(&self) -> R<::bunite_rpc::Exported<CounterCap>> {
        ::std::result::Result::Ok(CounterCap::export(Imp))
    }

    async fn kids(&self) -> R<::std::vec::Vec<::bunite_rpc::Exported<CounterCap>>> {
        ::std::result::Result::Ok(::std::vec![CounterCap::export(Imp)])
    }

    async fn named(
        &self,
    ) -> R<::std::collections::BTreeMap<::std::string::String, ::bunite_rpc::Exported<CounterCap>>>
    {
        ::std::result::Result::Ok(::std::collections::BTreeMap::new())
    }

    fn ticks(&self, n: u32) -> impl ::bunite_rpc::typed::Stream<Item = R<u32>> + ::std::marker::Send + 'static {
        ::futures::stream::iter(::std::iter::Iterator::map(0..n, ::std::result::Result::Ok))
    }

    async fn watch(&self, mut out: ::bunite_rpc::typed::Emitter<u32>) -> R<()> {
        out.send(1).await
    }

    async fn dispose(&self) -> R<()> {
        ::std::result::Result::Ok(())
    }
}

async fn use_it(conn: &::bunite_rpc::Connection) -> R<()> {
    let _handle = CounterCap::serve(conn, Imp).await?;
    let c: CounterClient = CounterCap::bootstrap(conn).await?;
    let _: u32 = c.get().await?;
    let _: u32 = c.add(1).await?;
    let _: u32 = c.twice(2).await?;
    let _: CounterClient = c.child().await?;
    let _: ::std::vec::Vec<CounterClient> = c.kids().await?;
    let _: ::bunite_rpc::TypedStream<u32> = c.ticks(3);
    let _: ::bunite_rpc::TypedStream<u32> = c.watch();
    c.with_deadline(::std::time::Duration::from_secs(1)).dispose().await;
    ::std::result::Result::Ok(())
}

fn main() {
    let _ = use_it;
}
