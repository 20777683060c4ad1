//! Generate: one function per emitted item, from a validated [`CapModel`].
//!
//! For `trait Counter` the expansion is:
//!
//! - the trait itself, its `async fn`s rewritten to `fn -> impl Future + Send` (as the
//!   `trait-variant` crate does) and `Send + Sync + 'static` added to its supertraits, so
//!   implementations keep writing `async fn` and the server can box their futures;
//! - `CounterCap`, the marker: `typed::Cap` (its cached definition), `typed::Serve<T>` for
//!   every `T: Counter`, and inherent `definition` / `server` / `serve` / `serve_with` /
//!   `bootstrap` / `export`;
//! - `CounterClient`, the typed client: one method per cap method, plus `from_client`,
//!   `client`, `into_client`, `with_options`, `with_deadline`, `with_context`, `release` and
//!   (with a disposal method) `dispose`;
//! - `CounterServer<T>`, the `CapImpl` that decodes params, calls the implementation and
//!   encodes what it returns; it holds the implementation itself and a `Weak` to the `Arc`
//!   it was made in (`Arc::new_cyclic`), which each handler upgrades to keep it while it
//!   runs: one allocation per served or exported cap;
//! - `DescribeCap<D>` for the marker (`generate/describe.rs`): the cap told to any describer
//!   of its types, for bindings in other languages (TypeScript).
//!
//! Every runtime name is spelled `<crate>::__private::…`; local variables use
//! `Span::mixed_site()` so they can never capture or shadow the user's names.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Ident, ReturnType, TraitItem, Type};

use crate::model::{CapModel, Kind, Ret};
use crate::types;

mod client;
mod describe;
mod server;

/// The whole expansion.
pub(crate) fn expand(m: &CapModel) -> TokenStream {
    let items = [
        trait_item(m),
        marker(m),
        cap_impls(m),
        marker_methods(m),
        client::client(m),
        client::client_methods(m),
        server::server(m),
        describe::describe(m),
    ];
    quote!(#(#items)*)
}

/// `<crate>::__private`.
fn private(m: &CapModel) -> TokenStream {
    let krate = &m.krate;
    quote!(#krate::__private)
}

fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// The name of the generic implementation type in generated impls.
fn impl_param() -> Ident {
    format_ident!("__BuniteImpl")
}

fn doc(text: &str) -> TokenStream {
    quote!(#[doc = #text])
}

/// The trait, with `async fn` rewritten to `fn -> impl Future<Output = R> + Send`, `Send` /
/// `'static` added to returned `impl Trait`s that lack them, and `Send + Sync + 'static`
/// supertraits.
fn trait_item(m: &CapModel) -> TokenStream {
    let p = private(m);
    let mut item = m.item.clone();
    if item.colon_token.is_none() {
        item.colon_token = Some(Default::default());
    }
    item.supertraits.push(syn::parse_quote!(#p::Send));
    item.supertraits.push(syn::parse_quote!(#p::Sync));
    item.supertraits.push(syn::parse_quote!('static));
    for ti in &mut item.items {
        let TraitItem::Fn(f) = ti else { continue };
        let is_stream = m
            .methods
            .iter()
            .any(|me| me.ident == f.sig.ident && matches!(me.kind, Kind::Stream { .. }));
        let ReturnType::Type(_, ty) = &mut f.sig.output else {
            continue;
        };
        if f.sig.asyncness.take().is_some() {
            let span = ty.span();
            let out: Type =
                syn::parse2(quote_spanned!(span=> impl #p::Future<Output = #ty> + #p::Send))
                    .expect("an impl Future type");
            **ty = out;
            if let Some(body) = f.default.take() {
                f.default = Some(syn::parse_quote_spanned!(body.span()=> { async move #body }));
            }
        } else if let Type::ImplTrait(it) = &mut **ty {
            let (send, stat) = types::impl_has_send_static(&Type::ImplTrait(it.clone()));
            if !send {
                it.bounds.push(syn::parse_quote!(#p::Send));
            }
            if is_stream && !stat {
                it.bounds.push(syn::parse_quote!('static));
            }
        }
    }
    let (marker, client, server) = (&m.marker, &m.client, &m.server);
    let note = format!(
        " `#[bunite_rpc::cap]` generates the marker [`{marker}`] (definition, serve, bootstrap, \
         export), the typed client [`{client}`] and the server dispatch [`{server}`]."
    );
    let sep = if item.attrs.iter().any(|a| a.path().is_ident("doc")) {
        doc("")
    } else {
        quote!()
    };
    let note = doc(&note);
    quote!(#sep #note #item)
}

/// The unit struct that names the cap at the type level.
fn marker(m: &CapModel) -> TokenStream {
    let p = private(m);
    let (vis, marker, tr) = (&m.item.vis, &m.marker, &m.item.ident);
    let version = m
        .version
        .as_ref()
        .map(|v| format!(" version \"{v}\""))
        .unwrap_or_default();
    let text = doc(&format!(
        " The cap `{}`{version}, declared by [`{tr}`]: its definition, and how to serve, \
         bootstrap and export it.\n\n Clients of it are [`{}`]s.",
        m.name, m.client
    ));
    let name = marker.to_string();
    quote! {
        #text
        #vis struct #marker;

        impl #p::Clone for #marker {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl #p::Copy for #marker {}
        impl #p::Default for #marker {
            fn default() -> Self {
                #marker
            }
        }
        impl #p::Debug for #marker {
            fn fmt(&self, f: &mut #p::Formatter<'_>) -> #p::FmtResult {
                f.write_str(#name)
            }
        }
    }
}

/// `Cap` (with the cached definition) and `Serve<T>` for the marker.
fn cap_impls(m: &CapModel) -> TokenStream {
    let p = private(m);
    let (marker, client, server, tr) = (&m.marker, &m.client, &m.server, &m.item.ident);
    let def = definition(m);
    let t = impl_param();
    let imp = local("imp");
    quote! {
        impl #p::Cap for #marker {
            type Client = #client;

            fn definition() -> #p::Arc<#p::CapDef> {
                static DEF: #p::OnceLock<#p::Arc<#p::CapDef>> = #p::OnceLock::new();
                #p::Clone::clone(DEF.get_or_init(|| #def))
            }
        }

        impl<#t: #tr> #p::Serve<#t> for #marker {
            fn server(#imp: #t) -> #p::Arc<dyn #p::CapImpl> {
                #p::Arc::new_cyclic(|me| #server {
                    me: #p::Clone::clone(me),
                    imp: #imp,
                })
            }
        }
    }
}

/// The `CapDef` builder expression.
fn definition(m: &CapModel) -> TokenStream {
    let p = private(m);
    let name = &m.name;
    let version = m.version.as_ref().map(|v| quote!(.version(#v)));
    let methods = m.methods.iter().map(|me| {
        let wire = &me.wire;
        let base = match &me.kind {
            Kind::Call { .. } => quote!(#p::MethodDef::call(#wire)),
            Kind::Stream { .. } => quote!(#p::MethodDef::stream(#wire)),
        };
        let idem = me.idempotent.then(|| quote!(.idempotent()));
        let keep = me.keep_running.then(|| quote!(.keep_running_on_cancel()));
        let credit = match &me.kind {
            Kind::Stream {
                credit: Some(c), ..
            } => Some(quote!(.initial_credit(#c))),
            _ => None,
        };
        let returns = match &me.kind {
            Kind::Call { ret, .. } => returns(m, ret),
            Kind::Stream { .. } => None,
        };
        quote!(.method(#base #idem #keep #credit #returns))
    });
    let disposal = m.disposal().map(|d| {
        let wire = &d.wire;
        quote!(.disposal(#wire))
    });
    quote! {
        #p::CapDef::builder(#name) #version #(#methods)* #disposal .build()
    }
}

/// `.returns(Returns::Cap(CapDefRef::Lazy(<C as Cap>::definition)))` and friends. `Lazy`, so
/// a cap may return itself and the definitions form cycles.
fn returns(m: &CapModel, ret: &Ret) -> Option<TokenStream> {
    let p = private(m);
    let (variant, cap) = match ret {
        Ret::Value => return None,
        Ret::Cap(c) => (quote!(Cap), c),
        Ret::Array(c) => (quote!(CapArray), c),
        Ret::Record(c) => (quote!(CapRecord), c),
    };
    let def = quote_spanned!(cap.span()=> <#cap as #p::Cap>::definition);
    Some(quote!(.returns(#p::Returns::#variant(#p::CapDefRef::Lazy(#def)))))
}

/// Inherent helpers on the marker, so users need no trait in scope.
fn marker_methods(m: &CapModel) -> TokenStream {
    let p = private(m);
    let (vis, marker, client, tr) = (&m.item.vis, &m.marker, &m.client, &m.item.ident);
    let (conn, imp, if_exists) = (local("conn"), local("imp"), local("if_exists"));
    let name = &m.name;
    let d_def = doc(&format!(
        " The definition of `{name}` (built once, then shared)."
    ));
    let d_server = doc(&format!(
        " The `CapImpl` of a [`{tr}`] implementation, for the dynamic API \
         (`Connection::serve`, `ConnectionBuilder::runtime`)."
    ));
    let d_serve = doc(&format!(
        " Serves `imp` as `{name}` on `conn`; fails `already_exists` if the name is taken. \
         Dropping the returned handle unserves it."
    ));
    let d_serve_with = doc(" Serves `imp` with an explicit collision rule (PROTOCOL §8).");
    let d_boot = doc(&format!(
        " Bootstraps the peer's `{name}` on `conn` (sending the version, if any) and returns its \
         typed client [`{client}`]."
    ));
    let d_export = doc(
        " Exports `imp` to return from a cap-returning handler: a handler returning \
         `Exported<Self>` (or a `Vec` or map of them) sends it as a new cap.",
    );
    quote! {
        impl #marker {
            #d_def
            #vis fn definition() -> #p::Arc<#p::CapDef> {
                <Self as #p::Cap>::definition()
            }

            #d_server
            #vis fn server(#imp: impl #tr) -> #p::Arc<dyn #p::CapImpl> {
                <Self as #p::Serve<_>>::server(#imp)
            }

            #d_serve
            #vis async fn serve(
                #conn: &#p::Connection,
                #imp: impl #tr,
            ) -> #p::Result<#p::ServeHandle, #p::Status> {
                #conn.serve_cap::<Self>(#imp).await
            }

            #d_serve_with
            #vis async fn serve_with(
                #conn: &#p::Connection,
                #imp: impl #tr,
                #if_exists: #p::IfExists,
            ) -> #p::Result<#p::ServeHandle, #p::Status> {
                #conn.serve_cap_with::<Self>(#imp, #if_exists).await
            }

            #d_boot
            #vis async fn bootstrap(
                #conn: &#p::Connection,
            ) -> #p::Result<#client, #p::Error> {
                #conn.bootstrap_cap::<Self>().await
            }

            #d_export
            #vis fn export(#imp: impl #tr) -> #p::Exported<Self> {
                #p::Exported::new(#imp)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    #[test]
    fn the_expansion_is_rust() {
        let model = crate::model::parse(
            quote!(name = "demo.Counter"),
            quote! {
                pub trait Counter {
                    async fn get(&self, ctx: CallContext) -> Result<u64, Status>;
                    async fn child(&self) -> Result<Vec<Exported<CounterCap>>, Status>;
                    #[cap(stream)]
                    async fn watch(&self, p: u32, out: Emitter<u64>) -> Result<(), Status>;
                    async fn with_default(&self) -> Result<u64, Status> {
                        Ok(1)
                    }
                }
            },
        )
        .map_err(|f| f.error.to_string())
        .unwrap();
        let out = super::expand(&model);
        let file: syn::File = syn::parse2(out.clone()).unwrap();
        assert_eq!(file.items.len(), 18, "{out}");
        let text = out.to_string();
        // The trait's async fns are now `fn -> impl Future + Send`, default bodies async blocks.
        assert!(
            text.contains("fn get (& self , ctx : CallContext) -> impl"),
            "{text}"
        );
        assert!(text.contains("async move"), "{text}");
    }
}
