//! The `#[cap]` attribute of bunite-rpc: a typed cap (its definition, a typed client and the
//! server dispatch) from a Rust trait. Use it through `bunite_rpc::cap`; the attribute's
//! documentation, with a complete example, is in the `bunite_rpc` crate docs.
//!
//! # Layout
//!
//! The shape of tarpc's macro crate: parse and validate into a model, then one generator
//! function per emitted item.
//!
//! - `model`: the attribute's arguments and the trait, checked and turned into a
//!   `CapModel`; `model/method.rs` reads one method's options, signature and arguments,
//!   `model/returns.rs` what it yields (a call's `Ok` type and cap shape, a stream's item).
//!   Every error is spanned at the tokens at fault and says what to write instead.
//! - `types`: syntactic helpers over `syn::Type` (`Result<T, E>`, `Exported<C>`,
//!   `Emitter<T>`, `CallContext`, `impl Future<Output = R>`).
//! - `generate`: one function per emitted item: the rewritten trait, the cap marker and its
//!   impls; `generate/client.rs` the typed client, `generate/server.rs` the server dispatch,
//!   `generate/describe.rs` the cap's self-description (`DescribeCap`).
//!
//! Generated code names the runtime only through `<crate>::__private` (default
//! `::bunite_rpc::__private`), so it compiles under `#![no_implicit_prelude]` and whatever
//! else the user's crate has in scope.
#![deny(missing_docs)]

use proc_macro::TokenStream;

mod generate;
mod model;
mod types;

/// Turns a trait into a bunite cap: its wire definition, a typed client, and the server
/// dispatch of any implementation of the trait.
///
/// This crate cannot depend on the runtime it generates code for, so the sketch below is not
/// compiled here; `bunite_rpc::cap`, this macro as the runtime re-exports it, starts with an
/// example that compiles and runs, and the `bunite_rpc` crate docs have a longer one.
///
/// ```text
/// use bunite_rpc::typed::{Emitter, Stream};
/// use bunite_rpc::{cap, CallContext, Exported, Status};
///
/// #[cap(name = "demo.Counter", version = "1")]
/// pub trait Counter {
///     #[cap(idempotent)]
///     async fn get(&self) -> Result<u64, Status>;
///     async fn add(&self, by: u64, ctx: CallContext) -> Result<u64, Status>;
///     async fn child(&self, name: String) -> Result<Exported<ChildCap>, Status>;
///     #[cap(stream, initial_credit = 64)]
///     fn ticks(&self, n: u64) -> impl Stream<Item = Result<u64, Status>> + Send + 'static;
///     #[cap(stream)]
///     async fn watch(&self, out: Emitter<u64>) -> Result<(), Status>;
/// }
/// ```
///
/// The `bunite_rpc` crate docs have a complete example that compiles and runs.
///
/// # Arguments of the attribute
///
/// - `name = "demo.Counter"` (required): the cap's wire name, its registry key.
/// - `version = "1"`: the version sent at bootstrap and checked by the server.
/// - `crate = "::path::to::bunite_rpc"`: where the runtime is, when the dependency is renamed
///   (default `::bunite_rpc`).
///
/// # Methods
///
/// Every method takes `&self` (one implementation serves concurrent calls), then, in any
/// order:
///
/// - at most one **params** argument of any serde type: the call's single `args` value. A
///   method without one sends `args` undefined (`Option<P>` accepts both). Several values go
///   in one struct.
/// - at most one `CallContext` (by value): the server context of the call (cancellation,
///   deadline, context map, the connection). Clients do not pass it.
/// - for an emitter-style stream, one `bunite_rpc::typed::Emitter<T>`.
///
/// A **call** method is an `async fn` (or returns `impl Future<Output = …> + Send`) returning
/// `Result<T, E>`: `T` any serde type, `E` any `Into<Status>`. Its client method returns
/// `Result<T, Status>`. An alias such as `type R<T> = Result<T, Status>` works for values;
/// a one-argument alias must be named `Result`.
///
/// A call returning **caps** says so in its `Ok` type, naming another cap's marker (or its
/// own): `Exported<ChildCap>` (one cap), `Vec<Exported<ChildCap>>` or `VecDeque<…>` (an
/// array), `BTreeMap<String, Exported<ChildCap>>`, `HashMap<String, …>` or
/// `Vec<(String, Exported<ChildCap>)>` (a record; the `Vec` keeps the server's order). The
/// client method returns the same container of `ChildClient`s. Handlers make an
/// `Exported<ChildCap>` with `ChildCap::export(imp)`.
///
/// A **stream** method (`#[cap(stream)]`) is either a plain `fn` returning a stream of
/// `Result<T, E>` (`impl Stream<Item = Result<T, Status>> + Send + 'static`, a `BoxStream`,
/// …; the macro adds `Send + 'static` to an `impl Stream` that lacks them, and the
/// implementation must spell them), or an `async fn` taking an `Emitter<T>` and returning
/// `Result<(), E>`: it sends values while the client grants credit, and is dropped when the
/// client cancels. Its client method returns a `TypedStream<T>`; dropping it cancels.
///
/// Params that do not decode fail `invalid_argument` (a result error for a call, a
/// `stream error` for a stream); results that do not encode fail `internal`.
///
/// Implementations write `async fn`: the macro rewrites the trait's `async fn`s to
/// `fn … -> impl Future<Output = …> + Send` (as the `trait-variant` crate does) and adds
/// `Send + Sync + 'static` supertraits, so a future that is not `Send` is reported at the
/// implementation. Methods may have default bodies.
///
/// # Options of a method: `#[cap(…)]` on it
///
/// - `name = "wireName"`: the wire name (default: the Rust name in lowerCamelCase,
///   `make_child` → `makeChild`, as bunite's TypeScript caps spell them).
/// - `idempotent`: the server ignores the call's deadline (PROTOCOL §11).
/// - `keep_running_on_cancel` (calls): a cancelled handler keeps running (its result is
///   still dropped) instead of being dropped at once.
/// - `stream`: a stream method; `initial_credit = N` (8..=1024, default 32) its initial
///   credit.
/// - `dispose`: the cap's disposal method, a call without params returning no caps. It runs
///   when a client disposes of the cap and at shutdown.
///
/// # Generated items, for `trait Counter`
///
/// - `CounterCap`, the marker type naming the cap: `CounterCap::definition()` (built once),
///   `serve(&conn, imp)`, `serve_with(&conn, imp, if_exists)`, `bootstrap(&conn)`,
///   `export(imp)`, `server(imp)` (the `CapImpl` for the dynamic API). It implements
///   `bunite_rpc::typed::Cap` and `Serve<T>` for every `T: Counter`.
/// - `CounterClient`, the typed client (`Clone + Send + Sync`): one method per cap method,
///   `with_options` / `with_deadline` / `with_context` (per-call options, on a clone),
///   `client()` / `into_client()` / `from_client()` (the dynamic `Client`), `release()`, and
///   `dispose()` when the cap has a disposal method (a disposal method whose Rust name is
///   `dispose` is called through it). Trait methods cannot take these names; rename the Rust
///   method and keep the wire name with `name = "…"`.
/// - `CounterServer<T>`, the `CapImpl` of an implementation.
///
/// Generated code names the runtime only through `::bunite_rpc::__private`, so it compiles
/// whatever the user's crate has in scope, `#![no_implicit_prelude]` included.
#[proc_macro_attribute]
pub fn cap(args: TokenStream, input: TokenStream) -> TokenStream {
    let args = proc_macro2::TokenStream::from(args);
    let input = proc_macro2::TokenStream::from(input);
    match model::parse(args, input.clone()) {
        Ok(model) => generate::expand(&model).into(),
        Err(failed) => {
            // Keep the trait (with our method attributes removed) so the user's impls and
            // uses of it do not add a cascade of unrelated errors to ours.
            let item = failed.item.map(|i| quote::quote!(#i)).unwrap_or(input);
            let error = failed.error.to_compile_error();
            quote::quote!(#error #item).into()
        }
    }
}
