//! The typed client: its struct, trait impls and one method per cap method.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Type;

use super::{doc, local, private};
use crate::model::{CapModel, Kind, Method, Ret};
use crate::types;

/// The typed client struct and its trait impls.
pub(super) fn client(m: &CapModel) -> TokenStream {
    let p = private(m);
    let (vis, marker, client, tr) = (&m.item.vis, &m.marker, &m.client, &m.item.ident);
    let text = doc(&format!(
        " A client of the peer's `{}` cap ([`{tr}`]): one method per cap method. Cheap to \
         clone; clones share one remote reference, released when the last clone is dropped.\n\n \
         Get one from [`{marker}::bootstrap`], from a method returning the cap, or with \
         [`from_client`](Self::from_client).",
        m.name
    ));
    let name = client.to_string();
    let handle = local("handle");
    quote! {
        #text
        #vis struct #client {
            handle: #p::Handle,
        }

        impl #p::Clone for #client {
            fn clone(&self) -> Self {
                #client { handle: #p::Clone::clone(&self.handle) }
            }
        }

        impl #p::Debug for #client {
            fn fmt(&self, f: &mut #p::Formatter<'_>) -> #p::FmtResult {
                f.debug_tuple(#name).field(&self.handle).finish()
            }
        }

        impl #p::CapClient for #client {
            type Cap = #marker;

            fn from_handle(#handle: #p::Handle) -> Self {
                #client { handle: #handle }
            }

            fn handle(&self) -> &#p::Handle {
                &self.handle
            }
        }
    }
}

/// The client's inherent methods: plumbing, then one per cap method.
pub(super) fn client_methods(m: &CapModel) -> TokenStream {
    let p = private(m);
    let (vis, marker, client) = (&m.item.vis, &m.marker, &m.client);
    let (c, options, deadline, key, value) = (
        local("client"),
        local("options"),
        local("deadline"),
        local("key"),
        local("value"),
    );
    let dispose = m.disposal().map(|d| {
        let text = doc(&format!(
            " Disposes the cap: calls its disposal method `{}` once (from any clone; errors \
             ignored), then releases the reference (PROTOCOL §7, §13.8).",
            d.wire
        ));
        quote! {
            #text
            #vis async fn dispose(self) {
                self.handle.dispose().await
            }
        }
    });
    let methods = m.methods.iter().map(|me| client_method(m, me));
    quote! {
        impl #client {
            /// Wraps a dynamic `Client` of this cap. The client takes this cap's definition,
            /// so disposal and returned caps work whatever it was made with.
            #vis fn from_client(#c: #p::Client) -> Self {
                <#marker as #p::Cap>::client(#c)
            }

            /// The underlying dynamic client.
            #vis fn client(&self) -> &#p::Client {
                self.handle.client()
            }

            /// Unwraps the underlying dynamic client.
            #vis fn into_client(self) -> #p::Client {
                self.handle.into_client()
            }

            /// A clone whose calls all use `options` (deadline, context map). Clones share the
            /// remote reference; only the options differ.
            #[must_use]
            #vis fn with_options(&self, #options: #p::CallOptions) -> Self {
                #client { handle: self.handle.with_options(#options) }
            }

            /// A clone whose calls each have the relative deadline `deadline` (PROTOCOL §11).
            #[must_use]
            #vis fn with_deadline(&self, #deadline: #p::Duration) -> Self {
                #client { handle: self.handle.with_deadline(#deadline) }
            }

            /// A clone whose calls carry `key = value` in their `meta.context` map.
            #[must_use]
            #vis fn with_context(
                &self,
                #key: impl #p::Into<#p::String>,
                #value: impl #p::Into<#p::String>,
            ) -> Self {
                #client { handle: self.handle.with_context(#key, #value) }
            }

            /// Releases the reference now (a `drop` frame); clones can no longer call.
            #vis fn release(self) {
                self.handle.release()
            }

            #dispose

            #(#methods)*
        }
    }
}

/// One client method.
fn client_method(m: &CapModel, me: &Method) -> TokenStream {
    let p = private(m);
    let (vis, ident, wire) = (&m.item.vis, &me.ident, &me.wire);
    if me.disposal && ident == "dispose" {
        return quote!();
    }
    let mut docs: Vec<TokenStream> = me.docs.iter().map(|a| quote!(#a)).collect();
    if !docs.is_empty() {
        docs.push(doc(""));
    }
    let what = match &me.kind {
        Kind::Call {
            ret: Ret::Value, ..
        } => "call",
        Kind::Call { .. } => "call returning caps",
        Kind::Stream { .. } => "stream",
    };
    let idem = if me.idempotent { ", idempotent" } else { "" };
    docs.push(doc(&format!(" Wire method `{wire}` ({what}{idem}).")));
    let (param, args) = match me.params() {
        Some((name, ty)) => (
            quote!(, #name: #ty),
            quote_spanned!(ty.span()=> #p::encode_params(#name)),
        ),
        None => (quote!(), quote!(#p::no_params())),
    };
    match &me.kind {
        Kind::Stream { item, .. } => {
            let call = quote_spanned!(item.span()=> self.handle.stream::<#item>(#wire, #args));
            quote! {
                #(#docs)*
                #vis fn #ident(&self #param) -> #p::TypedStream<#item> {
                    #call
                }
            }
        }
        Kind::Call { ok, ret } => {
            let client_of = |cap: &Type| -> Type {
                syn::parse2(quote_spanned!(cap.span()=> <#cap as #p::Cap>::Client))
                    .expect("a qualified path type")
            };
            let (out, call) = match ret {
                Ret::Value => (
                    ok.clone(),
                    quote_spanned!(ok.span()=> self.handle.call::<#ok>(#wire, #args)),
                ),
                Ret::Cap(cap) => (
                    client_of(cap),
                    quote_spanned!(cap.span()=> self.handle.call_cap::<#cap>(#wire, #args)),
                ),
                Ret::Array(cap) => (
                    types::replace_exported(ok, &client_of),
                    quote_spanned!(cap.span()=> self.handle.call_caps::<#cap, _>(#wire, #args)),
                ),
                Ret::Record(cap) => (
                    types::replace_exported(ok, &client_of),
                    quote_spanned!(cap.span()=> self.handle.call_cap_record::<#cap, _>(#wire, #args)),
                ),
            };
            quote! {
                #(#docs)*
                #vis async fn #ident(&self #param) -> #p::Result<#out, #p::Error> {
                    #call.await
                }
            }
        }
    }
}
