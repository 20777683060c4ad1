//! `DescribeCap<D>` for the marker: the cap and each method told to any describer `D` that
//! can describe the trait's types (bindings for other languages, e.g. TypeScript).
//!
//! The bounds are on `D` (`D: DescribeType<Count>`), never on the user's types alone, so a
//! trait whose types lack, say, `ts_rs::TS` still compiles; only describing it to the
//! TypeScript generator fails.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, Expr, Lit, Meta, Type};

use super::{local, private};
use crate::model::{CapModel, Kind, Method, Ret};
use crate::types;

/// The text of `///` comments, one line each, the one leading space removed.
pub(super) fn doc_text(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter_map(|a| match &a.meta {
            Meta::NameValue(nv) if nv.path.is_ident("doc") => match &nv.value {
                Expr::Lit(l) => match &l.lit {
                    Lit::Str(s) => Some(s.value()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .map(|l| l.strip_prefix(' ').unwrap_or(&l).trim_end().to_owned())
        .collect();
    lines.join("\n").trim().to_owned()
}

/// The impl of `DescribeCap<D>` for the marker.
pub(super) fn describe(m: &CapModel) -> TokenStream {
    let p = private(m);
    let (marker, d) = (&m.marker, local("__d"));
    let t = quote!(__BuniteDescriber);
    let mut bounds: Vec<TokenStream> = Vec::new();
    let methods: Vec<TokenStream> = m
        .methods
        .iter()
        .map(|me| method(m, me, &t, &d, &mut bounds))
        .collect();
    let (name, rust, docs) = (&m.name, m.item.ident.to_string(), doc_text(&m.item.attrs));
    let version = match &m.version {
        Some(v) => quote!(#p::Some(#v)),
        None => quote!(#p::None),
    };
    quote! {
        impl<#t> #p::DescribeCap<#t> for #marker
        where
            #t: #p::Describer #(+ #bounds)*
        {
            fn describe(#d: &mut #t) {
                #p::Describer::cap(#d, #p::CapInfo {
                    name: #name,
                    version: #version,
                    rust_name: #rust,
                    docs: #docs,
                });
                #(#methods)*
            }
        }
    }
}

/// One method: describes its types (adding the bounds that needs) and tells the describer.
fn method(
    m: &CapModel,
    me: &Method,
    t: &TokenStream,
    d: &syn::Ident,
    bounds: &mut Vec<TokenStream>,
) -> TokenStream {
    let p = private(m);
    // Each use adds the describer bound it needs.
    let describe_ty = |ty: &Type, bounds: &mut Vec<TokenStream>| -> TokenStream {
        let bound = quote_spanned!(ty.span()=> #p::DescribeType<#ty>);
        bounds.push(bound.clone());
        quote!(<#t as #bound>::describe_type(#d))
    };
    let cap_name = |c: &Type, bounds: &mut Vec<TokenStream>| -> TokenStream {
        let bound = quote_spanned!(c.span()=> #p::DescribeReturn<#c>);
        bounds.push(bound.clone());
        quote!(<#t as #bound>::cap_name(#d))
    };
    let params = match me.params() {
        None => quote!(#p::Params::None),
        Some((_, ty)) if types::named(ty, "Option").is_some() => {
            let e = describe_ty(ty, bounds);
            quote!(#p::Params::Optional(#e))
        }
        Some((_, ty)) => {
            let e = describe_ty(ty, bounds);
            quote!(#p::Params::Required(#e))
        }
    };
    let (yields, credit) = match &me.kind {
        Kind::Call { ok, ret } => {
            let y = match ret {
                Ret::Value => {
                    let e = describe_ty(ok, bounds);
                    quote!(#p::Yields::Value(#e))
                }
                Ret::Cap(c) => {
                    let n = cap_name(c, bounds);
                    quote!(#p::Yields::Cap(#n))
                }
                Ret::Array(c) => {
                    let n = cap_name(c, bounds);
                    quote!(#p::Yields::CapArray(#n))
                }
                Ret::Record(c) => {
                    let n = cap_name(c, bounds);
                    quote!(#p::Yields::CapRecord(#n))
                }
            };
            (y, quote!(#p::None))
        }
        Kind::Stream { item, credit, .. } => {
            let e = describe_ty(item, bounds);
            let credit = match credit {
                Some(c) => quote!(#p::Some(#c)),
                None => quote!(#p::None),
            };
            (quote!(#p::Yields::Stream(#e)), credit)
        }
    };
    let (wire, rust, docs) = (&me.wire, me.ident.to_string(), doc_text(&me.docs));
    let rust = rust.trim_start_matches("r#").to_owned();
    let (idempotent, disposal) = (me.idempotent, me.disposal);
    let (pv, yv) = (local("__params"), local("__yields"));
    quote! {
        {
            let #pv = #params;
            let #yv = #yields;
            #p::Describer::method(
                #d,
                #p::MethodInfo {
                    name: #wire,
                    rust_name: #rust,
                    docs: #docs,
                    idempotent: #idempotent,
                    disposal: #disposal,
                    initial_credit: #credit,
                },
                #pv,
                #yv,
            );
        }
    }
}
