//! The server dispatch: a `CapImpl` over any implementation of the trait.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Ident;

use super::{doc, impl_param, local, private};
use crate::model::{Arg, CapModel, Kind, Method, Ret};

/// The server struct and its `CapImpl`.
pub(super) fn server(m: &CapModel) -> TokenStream {
    let p = private(m);
    let (vis, marker, server, tr) = (&m.item.vis, &m.marker, &m.server, &m.item.ident);
    let t = impl_param();
    let text = doc(&format!(
        " Serves a [`{tr}`] implementation: the `CapImpl` made by [`{marker}::server`]. It \
         decodes each call's params (failing `invalid_argument`), runs the method and encodes \
         what it returns."
    ));
    let name = server.to_string();
    let (method, args, ctx, imp) = (
        local("_method"),
        local("_args"),
        local("_ctx"),
        local("_imp"),
    );
    let calls: Vec<_> = m
        .methods
        .iter()
        .filter(|me| matches!(me.kind, Kind::Call { .. }))
        .map(|me| call_arm(m, me))
        .collect();
    let streams: Vec<_> = m
        .methods
        .iter()
        .filter(|me| matches!(me.kind, Kind::Stream { .. }))
        .map(|me| stream_arm(m, me))
        .collect();
    let call_body = if calls.is_empty() {
        quote!(#p::no_call_handler(#method))
    } else {
        quote! {
            let #imp = #p::owned(&self.me);
            match #method {
                #(#calls)*
                _ => #p::no_call_handler(#method),
            }
        }
    };
    // `open_stream` is what the runtime calls: typed values, serialized straight into
    // their frames. `stream` gives the same values as `Value`s, for callers of the trait.
    let stream_fn = (!streams.is_empty()).then(|| {
        quote! {
            fn stream(
                &self,
                #method: &str,
                #args: #p::Payload,
                #ctx: #p::CallContext,
            ) -> #p::Result<#p::ValueStream, #p::Status> {
                #p::stream_values(#p::CapImpl::open_stream(self, #method, #args, #ctx))
            }

            fn open_stream(
                &self,
                #method: &str,
                #args: #p::Payload,
                #ctx: #p::CallContext,
            ) -> #p::Result<#p::OutgoingStream, #p::Status> {
                match #method {
                    #(#streams)*
                    _ => #p::Err(#p::no_handler(#method)),
                }
            }
        }
    });
    quote! {
        #text
        #vis struct #server<#t> {
            /// The `Arc` this server was made in (`Arc::new_cyclic`): each handler holds
            /// the implementation through it, in one allocation with the server.
            me: #p::Weak<#server<#t>>,
            imp: #t,
        }

        impl<#t> #p::Debug for #server<#t> {
            fn fmt(&self, f: &mut #p::Formatter<'_>) -> #p::FmtResult {
                f.debug_struct(#name).finish_non_exhaustive()
            }
        }

        impl<#t: #tr> #p::CapImpl for #server<#t> {
            fn call(
                &self,
                #method: &str,
                #args: #p::Payload,
                #ctx: #p::CallContext,
            ) -> #p::BoxFuture<#p::Result<#p::Returned, #p::Status>> {
                #call_body
            }

            #stream_fn
        }
    }
}

/// Decodes the params (if any) and lists the handler's arguments in declared order.
fn handler_args(m: &CapModel, me: &Method) -> (TokenStream, Vec<Ident>) {
    let p = private(m);
    let (args, params, ctx, emitter) = (
        local("_args"),
        local("__params"),
        local("_ctx"),
        local("__emitter"),
    );
    let decode = me.params().map(|(_, ty)| {
        let call = quote_spanned!(ty.span()=> #p::decode_params::<#ty>(#args));
        quote!(let #params = #call?;)
    });
    let list = me
        .args
        .iter()
        .map(|a| match a {
            Arg::Params { .. } => params.clone(),
            Arg::Context => ctx.clone(),
            Arg::Emitter => emitter.clone(),
        })
        .collect();
    (quote!(#decode), list)
}

/// One arm of `CapImpl::call`.
fn call_arm(m: &CapModel, me: &Method) -> TokenStream {
    let p = private(m);
    let (ident, wire, imp) = (&me.ident, &me.wire, local("_imp"));
    let (decode, list) = handler_args(m, me);
    let Kind::Call { ok, ret } = &me.kind else {
        return quote!();
    };
    let reply = match ret {
        Ret::Value => quote_spanned!(ok.span()=> #p::reply_value),
        Ret::Cap(cap) => quote_spanned!(cap.span()=> #p::reply_cap::<#cap, _>),
        Ret::Array(cap) => quote_spanned!(cap.span()=> #p::reply_caps::<#cap, _, _>),
        Ret::Record(cap) => quote_spanned!(cap.span()=> #p::reply_record::<#cap, _, _, _>),
    };
    quote! {
        #wire => #p::call_future(async move {
            let #imp = #imp?;
            #decode
            #reply(#imp.imp.#ident(#(#list),*).await)
        }),
    }
}

/// One arm of `CapImpl::open_stream`.
fn stream_arm(m: &CapModel, me: &Method) -> TokenStream {
    let p = private(m);
    let (ident, wire, imp, emitter) = (&me.ident, &me.wire, local("_imp"), local("__emitter"));
    let (decode, list) = handler_args(m, me);
    let Kind::Stream {
        item,
        emitter: is_emitter,
        ..
    } = &me.kind
    else {
        return quote!();
    };
    let body = if *is_emitter {
        let reply = quote_spanned!(item.span()=> #p::reply_emitter::<#item, _, _, _>);
        quote! {
            let #imp = #p::owned(&self.me)?;
            #p::Ok(#reply(move |#emitter| async move {
                #imp.imp.#ident(#(#list),*).await
            }))
        }
    } else {
        let reply = quote_spanned!(item.span()=> #p::reply_stream::<#item, _, _>);
        quote!(#p::Ok(#reply(self.imp.#ident(#(#list),*))))
    };
    quote! {
        #wire => {
            #decode
            #body
        }
    }
}
