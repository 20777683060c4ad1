//! The `#[cap]` attribute of bunite-rpc: a typed cap (its definition, a typed client and the
//! server dispatch) from a Rust trait. Use it through `bunite_rpc::cap`; the attribute's
//! documentation, with a complete example, is in the `bunite_rpc` crate docs.
//!
//! # Layout
//!
//! The shape of tarpc's macro crate: parse and validate into a model, then one generator
//! function per emitted item.
//!
//! - `model` (private): the attribute arguments, the method attributes and the
//!   trait's signatures, checked and turned into a `CapModel`. Every error is spanned at the
//!   tokens at fault and says what to write instead.
//! - `types` (private): syntactic helpers over `syn::Type` (`Result<T, E>`, `Exported<C>`,
//!   `Emitter<T>`, `CallContext`).
//! - `generate` (private): the emitted items: the rewritten trait, the cap marker, the typed
//!   client and the server dispatch.
//!
//! Generated code names the runtime only through `<crate>::__private` (default
//! `::bunite_rpc::__private`), so it compiles under `#![no_implicit_prelude]` and whatever
//! else the user's crate has in scope.
#![deny(missing_docs)]

use proc_macro::TokenStream;

mod generate;
mod model;
mod types;

/// Turns a trait into a bunite cap: see `bunite_rpc::cap` for the full documentation.
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
